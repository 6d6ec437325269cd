//! The token gate: every job and every API request carries a JWT, verified here against
//! explicitly configured keys, and its scopes decide what it may do.
//!
//! Tokens are EdDSA (Ed25519) by default. The first start generates a signing key pair in the
//! certs dir (`jwt-signing.pem`, mode 0600, and `jwt-verify.pem`); the server itself needs only
//! the verifying key. Instead, `[auth] keys` may name keys explicitly: Ed25519 public keys
//! (several at once while keys rotate) and HS256 secrets (>= 32 bytes, from a file or the
//! environment, never logged). Every key has a `kid`, and a token naming a `kid` the server
//! does not know is refused: no key is tried that the token did not name, and the algorithm
//! must be the key's own (no `none`, no HS256 presented to an EdDSA key).
//!
//! Tokens may be minted anywhere with any JWT library: the claims they need are
//! [`REQUIRED_CLAIMS`] (docs/PROTOCOL.md, "Tokens").
//!
//! # Layout
//! - `verify`: [`Verifier`], checking a token's signature and claims.
//! - `keys`: the keys: configured (`[auth] keys`) or the generated pair ([`KeyPair`]).
//! - `keyfile`: Ed25519 key files in the standard PEM forms (and edge's old one).
//! - `mint`: [`SigningKey`], minting tokens (`edge token issue`).
//! - `denylist`: [`DenyList`], revoked token ids (and subjects) in memory, with the store as
//!   its durable copy.
//! - `password`: users' password hashes (Argon2id).

mod denylist;
mod keyfile;
mod keys;
mod mint;
pub mod password;
mod verify;

pub(crate) use denylist::follow as follow_deny_list;
pub(crate) use denylist::keep as keep_deny_list;
pub use denylist::{DenyList, MAX_REVOKED};
pub use keys::{KeyPair, MIN_SECRET_BYTES};
pub use mint::{Issued, SigningKey};
pub use verify::Verifier;

use edge_proto::ErrorCode;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The signing key's file in the certs dir.
pub const SIGNING_KEY_FILE: &str = "jwt-signing.pem";
/// The verifying key's file in the certs dir.
pub const VERIFY_KEY_FILE: &str = "jwt-verify.pem";

/// The scope that allows everything, and every user's jobs.
pub const ADMIN_SCOPE: &str = "admin";
/// The scope of `GET /v1/jobs...` (the holder's own jobs).
pub const JOBS_READ_SCOPE: &str = "jobs:read";
/// The scope a job needs, beside its task's, to read its body from a file on the server or a
/// URL (`source=`), and to list the files it may read.
pub const SOURCES_READ_SCOPE: &str = "sources:read";

/// The scope that runs `task`'s jobs: `<task>:write`.
pub fn write_scope(task: &str) -> String {
    format!("{task}:write")
}

/// The scope that deletes `task`'s items one by one: `<task>:delete`.
pub fn delete_scope(task: &str) -> String {
    format!("{task}:delete")
}

/// Every scope a server with the plugins of `registry` checks: each task's `<task>:write`,
/// the read scope each task with read endpoints names, `<task>:delete` for a task whose
/// items can be deleted, [`JOBS_READ_SCOPE`] and [`ADMIN_SCOPE`]. A token's other scopes
/// allow nothing.
pub fn known_scopes(registry: &edge_tasks::Registry) -> Vec<String> {
    let mut scopes = Vec::new();
    for plugin in registry.plugins() {
        scopes.push(write_scope(plugin.name));
        if let Some(reads) = &plugin.reads {
            scopes.push(reads.scope.to_owned());
            if reads.delete.is_some() {
                scopes.push(delete_scope(plugin.name));
            }
        }
    }
    scopes.push(JOBS_READ_SCOPE.to_owned());
    scopes.push(SOURCES_READ_SCOPE.to_owned());
    scopes.push(ADMIN_SCOPE.to_owned());
    scopes
}

/// The claims every token must carry, wherever it was minted: who (`sub`), until when
/// (`exp`), for which server (`iss`, `aud`) and its id (`jti`, so that it can be revoked).
/// `nbf`, `iat` and `scope` are optional (no `scope`: no scopes).
pub const REQUIRED_CLAIMS: [&str; 5] = ["sub", "exp", "iss", "aud", "jti"];

/// Why a token was refused. [`AuthError::code`] gives the stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token at all.
    #[error("no token: send one (edge/1: the header's `token`; HTTP/3: `Authorization: Bearer <token>`); mint one with `edge token issue`")]
    Missing,
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Not a JWT, or not one this server can read.
    #[error("the token is not a valid JWT: {0}")]
    Malformed(String),
    /// Its `kid` names no key of this server.
    #[error("the token's key id `{0}` is not a key of this server")]
    UnknownKey(String),
    /// The signature does not verify, or the algorithm is not the key's.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// Past its `exp` (plus leeway).
    #[error("the token has expired; mint a new one")]
    Expired,
    /// Before its `nbf` (minus leeway).
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// A claim is missing or wrong.
    #[error("the token's claims are not accepted: {0}")]
    Claims(String),
    /// Its `jti` is on the deny-list (`edge token revoke`).
    #[error("the token has been revoked; sign in again, or ask for a new one")]
    Revoked,
}

impl AuthError {
    /// The stable code for refusals.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Revoked => ErrorCode::TokenRevoked,
            _ => ErrorCode::Unauthorized,
        }
    }
}

/// A key problem at start-up or when minting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("cannot use the token key {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Key generation or signing failed.
    #[error("token key error: {0}")]
    Crypto(String),
    /// A configured key (`[auth] keys`) cannot work.
    #[error("auth key `{kid}`: {message}")]
    Config {
        /// The key's id.
        kid: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// The claims of an edge token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who.
    pub sub: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issued at (0 when the token has none).
    #[serde(default)]
    pub iat: u64,
    /// Not before (0 when the token has none).
    #[serde(default)]
    pub nbf: u64,
    /// A unique id, for revocation.
    pub jti: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Space-separated scopes, e.g. `ports:write ports:read`.
    #[serde(default)]
    pub scope: String,
}

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The subject.
    pub sub: String,
    /// The token id.
    pub jti: String,
    /// When the token expires (seconds since the epoch).
    pub exp: u64,
    /// When it was issued (seconds since the epoch; 0 when it does not say).
    pub iat: u64,
    scopes: Vec<String>,
}

impl Grant {
    /// What the server allows jobs it starts itself (a watched folder's): `scopes`, as `sub`.
    pub(crate) fn internal(sub: &str, scopes: Vec<String>) -> Grant {
        Grant {
            sub: sub.to_owned(),
            jti: String::new(),
            exp: u64::MAX,
            iat: 0,
            scopes,
        }
    }

    /// Whether the token holds `scope` (or `admin`).
    pub fn allows(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == ADMIN_SCOPE)
    }

    /// Whether the token is an administrator's.
    pub fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == ADMIN_SCOPE)
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `jti` and `exp` a token claims, read without verifying it (for `edge token revoke`,
/// which accepts a whole token as well as an id).
pub fn unverified_id(token: &str) -> Option<(String, Option<u64>)> {
    use base64::Engine as _;
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let jti = claims.get("jti")?.as_str()?.to_owned();
    Some((jti, claims.get("exp").and_then(serde_json::Value::as_u64)))
}
