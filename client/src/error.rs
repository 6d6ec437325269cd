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
        /// What rustls said.
        detail: String,
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
