//! The token gate: every job and every API request carries a JWT, verified here against
//! explicitly configured keys, and its scopes decide what it may do.
//!
//! Tokens are EdDSA (Ed25519) by default. The first start generates a signing key pair in the
//! certs dir (`jwt-signing.pem`, mode 0600, and `jwt-verify.pem`); the server itself needs only
//! the verifying key. Every key has a `kid`, and a token naming a `kid` the server does not
//! know is refused: no key is tried that the token did not name, and the algorithm must be
//! the key's own (no `none`, no HS256 presented to an EdDSA key).

use crate::config::AuthConfig;
use edge_proto::ErrorCode;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The signing key's file in the certs dir.
pub const SIGNING_KEY_FILE: &str = "jwt-signing.pem";
/// The verifying key's file in the certs dir.
pub const VERIFY_KEY_FILE: &str = "jwt-verify.pem";

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
}

impl AuthError {
    /// The stable code for refusals.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Expired => ErrorCode::TokenExpired,
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
}

/// The claims of an edge token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who.
    pub sub: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issued at.
    #[serde(default)]
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// A random id, for revocation.
    #[serde(default)]
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
    scopes: Vec<String>,
}

impl Grant {
    /// Whether the token holds `scope` (or `admin`).
    pub fn allows(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == "admin")
    }

    /// Whether the token is an administrator's.
    pub fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == "admin")
    }
}

/// One verifying key.
struct VerifyKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies tokens.
pub struct Verifier {
    keys: HashMap<String, VerifyKey>,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier for `config`: the verifying key in `certs_dir` (generating the key pair on
    /// first start).
    pub fn load(config: &AuthConfig, certs_dir: &Path) -> Result<Verifier, KeyError> {
        let pair = KeyPair::load_or_generate(certs_dir)?;
        let key =
            DecodingKey::from_ed_pem(pair.verify_pem.as_bytes()).map_err(|e| KeyError::File {
                path: certs_dir.join(VERIFY_KEY_FILE),
                message: e.to_string(),
            })?;
        let mut keys = HashMap::new();
        keys.insert(
            pair.kid,
            VerifyKey {
                algorithm: Algorithm::EdDSA,
                key,
            },
        );
        Ok(Verifier {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway_secs,
        })
    }

    /// Checks a token; returns what it allows.
    pub fn verify(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Malformed("the header has no `kid`".into()))?;
        let key = self.keys.get(&kid).ok_or(AuthError::UnknownKey(kid))?;
        if header.alg != key.algorithm {
            return Err(AuthError::BadSignature);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation)
            .map_err(refusal)?;
        let claims = claims_of(data.claims)?;
        if claims.sub.trim().is_empty() {
            return Err(AuthError::Claims("`sub` is empty".into()));
        }
        Ok(Grant {
            sub: claims.sub,
            jti: claims.jti,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
        })
    }
}

/// Reads the claims, naming the first one of the wrong type.
fn claims_of(value: serde_json::Value) -> Result<Claims, AuthError> {
    const NUMBERS: [&str; 3] = ["exp", "iat", "nbf"];
    const STRINGS: [&str; 5] = ["sub", "jti", "iss", "aud", "scope"];
    for name in NUMBERS {
        if !value[name].is_u64() {
            return Err(AuthError::Claims(format!(
                "`{name}` must be a number of seconds"
            )));
        }
    }
    for name in STRINGS {
        if !value[name].is_string() {
            return Err(AuthError::Claims(format!("`{name}` must be a string")));
        }
    }
    serde_json::from_value(value).map_err(|e| AuthError::Claims(e.to_string()))
}

fn refusal(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => AuthError::BadSignature,
        ErrorKind::InvalidAudience => AuthError::Claims("wrong audience (aud)".into()),
        ErrorKind::InvalidIssuer => AuthError::Claims("wrong issuer (iss)".into()),
        ErrorKind::MissingRequiredClaim(claim) => {
            AuthError::Claims(format!("`{claim}` is missing"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            AuthError::Claims(format!("`{claim}` has the wrong type"))
        }
        ErrorKind::Json(e) => AuthError::Claims(e.to_string()),
        _ => AuthError::Malformed(e.to_string()),
    }
}

/// The signing key pair in a certs dir.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The key id (from the verifying key).
    pub kid: String,
    /// PKCS#8 PEM of the signing key.
    signing_pem: String,
    /// SPKI PEM of the verifying key.
    pub verify_pem: String,
}

impl KeyPair {
    /// Reads the pair from `dir`, generating it if there is none.
    pub fn load_or_generate(dir: &Path) -> Result<KeyPair, KeyError> {
        let signing = dir.join(SIGNING_KEY_FILE);
        let verify = dir.join(VERIFY_KEY_FILE);
        if !verify.is_file() {
            generate(dir, &signing, &verify)?;
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| KeyError::File {
                path: path.to_owned(),
                message: e.to_string(),
            })
        };
        let verify_pem = read(&verify)?;
        let signing_pem = if signing.is_file() {
            read(&signing)?
        } else {
            String::new()
        };
        Ok(KeyPair {
            kid: kid_of(&verify_pem),
            signing_pem,
            verify_pem,
        })
    }

    /// Mints a token.
    pub fn issue(
        &self,
        config: &AuthConfig,
        sub: &str,
        scope: &str,
        ttl: Duration,
        audience: Option<&str>,
    ) -> Result<String, KeyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            sub: sub.to_owned(),
            exp: now + ttl.as_secs(),
            iat: now,
            nbf: now,
            jti: random_id()?,
            iss: config.issuer.clone(),
            aud: audience.unwrap_or(&config.audience).to_owned(),
            scope: scope.to_owned(),
        };
        self.sign(&claims)
    }

    /// Signs any claims with this key (EdDSA, this key's `kid`).
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        if self.signing_pem.is_empty() {
            return Err(KeyError::Crypto(format!(
                "this certs dir has no {SIGNING_KEY_FILE}: mint tokens where the signing key is"
            )));
        }
        let key = EncodingKey::from_ed_pem(self.signing_pem.as_bytes())
            .map_err(|e| KeyError::Crypto(e.to_string()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &key).map_err(|e| KeyError::Crypto(e.to_string()))
    }
}

fn generate(dir: &Path, signing: &Path, verify: &Path) -> Result<(), KeyError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| KeyError::Crypto(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| KeyError::File {
        path: dir.to_owned(),
        message: e.to_string(),
    })?;
    write_key(signing, pair.serialize_pem().as_bytes(), true)?;
    write_key(verify, pair.public_key_pem().as_bytes(), false)
}

fn write_key(path: &Path, contents: &[u8], secret: bool) -> Result<(), KeyError> {
    crate::tls::write_pem(path, contents, secret).map_err(|e| KeyError::File {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// `ed25519-` and 16 hex digits of the SHA-256 of the verifying key's PEM.
fn kid_of(verify_pem: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verify_pem.trim().as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("ed25519-{hex}")
}

fn random_id() -> Result<String, KeyError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Crypto("no randomness".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_pair_is_generated_once_private_and_verifies_what_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyPair::load_or_generate(dir.path()).unwrap();
        let again = KeyPair::load_or_generate(dir.path()).unwrap();
        assert_eq!(first.kid, again.kid, "the same key is reused");
        assert!(first.kid.starts_with("ed25519-"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SIGNING_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the signing key is private");
        }
        let config = AuthConfig::default();
        let token = first
            .issue(
                &config,
                "alice",
                "ports:write admin",
                Duration::from_secs(60),
                None,
            )
            .unwrap();
        let grant = Verifier::load(&config, dir.path())
            .unwrap()
            .verify(Some(&token))
            .unwrap();
        assert_eq!(grant.sub, "alice");
        assert!(grant.allows("ports:write") && grant.allows("jobs:read") && grant.is_admin());
        assert_eq!(grant.jti.len(), 32);
    }

    #[test]
    fn a_verify_key_alone_cannot_mint() {
        let dir = tempfile::tempdir().unwrap();
        KeyPair::load_or_generate(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(SIGNING_KEY_FILE)).unwrap();
        let keys = KeyPair::load_or_generate(dir.path()).unwrap();
        let err = keys
            .issue(
                &AuthConfig::default(),
                "a",
                "",
                Duration::from_secs(1),
                None,
            )
            .unwrap_err();
        assert!(err.to_string().contains(SIGNING_KEY_FILE), "{err}");
    }
}
