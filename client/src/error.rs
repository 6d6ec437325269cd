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
    #[error("the certificate of {server} is not trusted: {}", advice(.reason, .detail, .ca.as_deref()))]
    NotTrusted {
        /// The server.
        server: String,
        /// What the handshake said.
        detail: String,
        /// Why, from the error the certificate verifier returned.
        reason: Untrusted,
        /// The CA file the client trusted (`--ca`), if one was given.
        ca: Option<PathBuf>,
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
    /// The job was cancelled and the server did not confirm its end in time.
    #[error("cancelled; the server did not confirm the job's end, {committed} records were committed by its last count")]
    Cancelled {
        /// The last committed count the server sent.
        committed: u64,
    },
    /// No token was given.
    #[error("no token: pass --token or set EDGE_TOKEN (mint one on the server with `edge token issue --sub NAME --scope \"ports:write stats:write ports:read jobs:read\"`)")]
    NoToken,
    /// The token's `exp` has passed (read without verifying the token).
    #[error("the token expired at {at} ({ago} ago): mint a new one (`edge token issue`) and pass it with --token or EDGE_TOKEN")]
    TokenExpired {
        /// When it expired (RFC 3339).
        at: String,
        /// How long ago.
        ago: String,
    },
    /// A resume's file does not start with the bytes the server received for the job.
    #[error("{name} does not start with the {offset} bytes the server received for job {job} (their SHA-256 differs): it is another file, or it changed; nothing was sent (digest_mismatch). Resume with the original file, or send this one as a new job")]
    PrefixMismatch {
        /// The file.
        name: String,
        /// The job.
        job: String,
        /// The bytes the server holds.
        offset: u64,
    },
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
                presented: presented.iter().map(|name| plain_name(name)).collect(),
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

/// A name as the verifier reports it (`DnsName("localhost")`, `IpAddress(127.0.0.1)`), as a
/// person writes it (`localhost`, `127.0.0.1`).
fn plain_name(name: &str) -> String {
    let inner = ["DnsName(", "IpAddress(", "UniformResourceIdentifier("]
        .iter()
        .find_map(|kind| name.strip_prefix(kind)?.strip_suffix(')'));
    match inner {
        Some(inner) => inner.trim_matches('"').to_owned(),
        None => name.to_owned(),
    }
}

/// What is wrong with the certificate, and what to do about it.
fn advice(reason: &Untrusted, detail: &str, ca: Option<&std::path::Path>) -> String {
    match (reason, ca) {
        (Untrusted::UnknownIssuer, None) => "it is not signed by a CA this system trusts: pass --ca certs/ca.pem (the dev CA `edge serve` generated) or set EDGE_CA".into(),
        (Untrusted::UnknownIssuer, Some(ca)) => format!(
            "it is not signed by the CA in {}: pass the CA of this server (its certs/ca.pem for a dev certificate)",
            ca.display()
        ),
        (Untrusted::BadSignature, Some(ca)) => format!(
            "its signature does not verify with the CA in {} (a CA of the same name but another key, e.g. one generated again): pass this server's current certs/ca.pem",
            ca.display()
        ),
        (Untrusted::NameMismatch { expected, presented }, _) if presented.is_empty() => format!(
            "it is not for `{expected}`: connect with a name it holds (`edge certs show` on the server lists them), or add this one to the dev certificate with `edge certs dev --name {expected}` on the server"
        ),
        (Untrusted::NameMismatch { expected, presented }, _) => format!(
            "it is for {} but not for `{expected}`: connect with one of those names in --server, or add `{expected}` to the dev certificate with `edge certs dev --name {expected}` on the server (a running server picks it up)",
            presented.join(", ")
        ),
        (Untrusted::Expired, _) => "it has expired: renew it on the server (`edge certs dev` for the dev certificate)".into(),
        (Untrusted::NotValidYet, _) => "it is not valid yet: check this machine's clock".into(),
        (Untrusted::Revoked, _) => "it has been revoked: the server needs a new certificate".into(),
        (_, None) => format!("{detail}; for a dev certificate pass --ca certs/ca.pem or set EDGE_CA"),
        (_, Some(ca)) => format!("{detail} (trusting the CA in {})", ca.display()),
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
