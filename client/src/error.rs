//! What can go wrong on the client side; every message says what to do.

use std::path::PathBuf;

/// A client failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `--server` is not `https://host:port`, `host:port` or `host`.
    #[error("invalid server address `{0}`: use https://HOST:PORT, e.g. https://localhost:4433")]
    BadServer(String),
    /// The server's host name did not resolve.
    #[error("cannot resolve `{host}`: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file could not be read.
    #[error("cannot use the CA file {path}: {message}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The server's certificate did not verify.
    #[error("the certificate of {server} is not trusted ({detail}): pass --ca certs/ca.pem (the dev CA `edge serve` generated) or set EDGE_CA")]
    NotTrusted {
        /// The server.
        server: String,
        /// What the handshake said.
        detail: String,
        /// Why, from the error the certificate verifier returned.
        reason: Untrusted,
    },
    /// No answer, or the handshake failed for another reason.
    #[error("could not connect to {server}: {detail} (is `edge serve` running there? check --server / EDGE_SERVER)")]
    Unreachable {
        /// The server.
        server: String,
        /// Why.
        detail: String,
    },
    /// The connection broke while jobs were running.
    #[error("the connection to the server was lost: {0}")]
    ConnectionLost(String),
    /// The server sent something that is not `edge/1`.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The input could not be read.
    #[error("cannot read {name}: {source}")]
    Input {
        /// The file (or `-`).
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why the server's certificate was not trusted: the verifier's [`rustls::Error`], classified.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Untrusted {
    /// Not issued by a CA the client trusts: the wrong `--ca`, or none for a dev certificate.
    UnknownIssuer,
    /// The certificate is not for the host the client connected to.
    NameMismatch {
        /// The name the client asked for (the host of `--server`).
        expected: String,
        /// The names the certificate holds (empty when rustls did not say).
        presented: Vec<String>,
    },
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet (or this machine's clock is behind).
    NotValidYet,
    /// The certificate was revoked.
    Revoked,
    /// A signature (on the certificate or the handshake) is wrong or uses an algorithm the
    /// client does not support; e.g. the certificate was signed by another CA of the same name
    /// as the trusted one (a dev CA generated again).
    BadSignature,
    /// Anything else the verifier refused (a malformed certificate, a wrong key usage...).
    Other,
}

impl From<&rustls::Error> for Untrusted {
    fn from(error: &rustls::Error) -> Untrusted {
        use rustls::CertificateError as E;
        let rustls::Error::InvalidCertificate(error) = error else {
            return Untrusted::Other;
        };
        match error {
            E::UnknownIssuer => Untrusted::UnknownIssuer,
            E::NotValidForName => Untrusted::NameMismatch {
                expected: String::new(),
                presented: Vec::new(),
            },
            E::NotValidForNameContext {
                expected,
                presented,
            } => Untrusted::NameMismatch {
                expected: expected.to_str().into_owned(),
                presented: presented.clone(),
            },
            E::Expired | E::ExpiredContext { .. } => Untrusted::Expired,
            E::NotValidYet | E::NotValidYetContext { .. } => Untrusted::NotValidYet,
            E::Revoked => Untrusted::Revoked,
            #[allow(deprecated)]
            E::BadSignature
            | E::UnsupportedSignatureAlgorithm
            | E::UnsupportedSignatureAlgorithmContext { .. }
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => Untrusted::BadSignature,
            _ => Untrusted::Other,
        }
    }
}

impl ClientError {
    /// Whether the error means no connection could be made (exit code 3).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            ClientError::BadServer(_)
                | ClientError::Resolve { .. }
                | ClientError::Ca { .. }
                | ClientError::NotTrusted { .. }
                | ClientError::Unreachable { .. }
        )
    }
}

/// The message for a lost connection, from quinn's reason.
pub(crate) fn lost(e: &quinn::ConnectionError) -> ClientError {
    if let quinn::ConnectionError::ApplicationClosed(close) = e {
        if close.error_code.into_inner() == u64::from(edge_proto::AppCode::Shutdown.value()) {
            return ClientError::ConnectionLost(
                "the server is shutting down; retry once it is back".into(),
            );
        }
    }
    ClientError::ConnectionLost(e.to_string())
}
