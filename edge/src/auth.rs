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

use crate::config::{AuthConfig, KeyAlgorithm, KeyConfig};
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
    /// Its `jti` is on the deny-list (`edge token revoke`).
    #[error("the token has been revoked; ask for a new one")]
    Revoked,
    /// The deny-list could not be read, so the token is not accepted.
    #[error("the server cannot check the token right now: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The stable code for refusals.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Revoked => ErrorCode::TokenRevoked,
            AuthError::Unavailable(_) => ErrorCode::Internal,
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
    /// The token id (empty when the token has none).
    pub jti: String,
    /// When the token expires (seconds since the epoch).
    pub exp: u64,
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
    /// Tokens whose signature and claims were verified, by their exact text: a client that
    /// sends the same token with every job pays for one signature check, not one per job.
    /// Only expiry is checked again (revocation is checked by the caller every time). At most
    /// [`VERIFIED_CACHE`] entries; it is emptied when full.
    verified: std::sync::Mutex<HashMap<String, Grant>>,
}

/// Verified tokens remembered, at most.
const VERIFIED_CACHE: usize = 256;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier for `config`: its configured keys or, when there are none, the generated
    /// pair's verifying key in `certs_dir` (generating the pair on first start).
    pub fn load(config: &AuthConfig, certs_dir: &Path) -> Result<Verifier, KeyError> {
        let keys = load_keys(config, certs_dir)?
            .into_iter()
            .map(|key| {
                let verify = VerifyKey {
                    algorithm: key.algorithm,
                    key: key.decoding,
                };
                (key.kid, verify)
            })
            .collect();
        Ok(Verifier {
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway_secs,
            verified: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The ids of the keys this verifier accepts.
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
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
        if let Some(grant) = self.remembered(token) {
            return Ok(grant);
        }
        let grant = self.verify_signed(token)?;
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_CACHE {
                verified.clear();
            }
            verified.insert(token.to_owned(), grant.clone());
        }
        Ok(grant)
    }

    /// A token verified before and not expired since (with the same leeway as a full check).
    fn remembered(&self, token: &str) -> Option<Grant> {
        let verified = self.verified.lock().ok()?;
        let grant = verified.get(token)?;
        (unix_now() <= grant.exp.saturating_add(self.leeway)).then(|| grant.clone())
    }

    /// Checks a token's signature and claims.
    fn verify_signed(&self, token: &str) -> Result<Grant, AuthError> {
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
            exp: claims.exp,
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

/// A key as configured or generated: how it verifies and, where its private half is at hand,
/// how it signs.
struct LoadedKey {
    kid: String,
    algorithm: Algorithm,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
}

/// The keys of `config` (or the generated pair when none are configured), in config order.
fn load_keys(config: &AuthConfig, certs_dir: &Path) -> Result<Vec<LoadedKey>, KeyError> {
    if config.keys.is_empty() {
        let pair = KeyPair::load_or_generate(certs_dir)?;
        let decoding =
            DecodingKey::from_ed_pem(pair.verify_pem.as_bytes()).map_err(|e| KeyError::File {
                path: certs_dir.join(VERIFY_KEY_FILE),
                message: e.to_string(),
            })?;
        let encoding = pair.encoding_key().ok();
        return Ok(vec![LoadedKey {
            kid: pair.kid,
            algorithm: Algorithm::EdDSA,
            decoding,
            encoding,
        }]);
    }
    let mut keys: Vec<LoadedKey> = Vec::with_capacity(config.keys.len());
    for key in &config.keys {
        if keys.iter().any(|k| k.kid == key.kid) {
            return Err(config_error(
                key,
                "two keys have this kid; kids must be unique",
            ));
        }
        keys.push(load_key(key)?);
    }
    Ok(keys)
}

fn load_key(config: &KeyConfig) -> Result<LoadedKey, KeyError> {
    if config.kid.trim().is_empty() {
        return Err(config_error(config, "`kid` must not be empty"));
    }
    match config.algorithm {
        KeyAlgorithm::EdDSA => {
            if config.secret_file.is_some() || config.secret_env.is_some() {
                return Err(config_error(
                    config,
                    "an EdDSA key has `public_key` (and `private_key` where tokens are minted), not a secret",
                ));
            }
            let public = config.public_key.as_deref().ok_or_else(|| {
                config_error(
                    config,
                    "an EdDSA key needs `public_key` (a PEM file; `edge token keygen` makes one)",
                )
            })?;
            let decoding = DecodingKey::from_ed_pem(read_file(public)?.as_bytes())
                .map_err(|e| file_error(public, &e.to_string()))?;
            let encoding = match &config.private_key {
                Some(path) => Some(
                    EncodingKey::from_ed_pem(read_file(path)?.as_bytes())
                        .map_err(|e| file_error(path, &e.to_string()))?,
                ),
                None => None,
            };
            Ok(LoadedKey {
                kid: config.kid.clone(),
                algorithm: Algorithm::EdDSA,
                decoding,
                encoding,
            })
        }
        KeyAlgorithm::HS256 => {
            let secret = hs256_secret(config)?;
            Ok(LoadedKey {
                kid: config.kid.clone(),
                algorithm: Algorithm::HS256,
                decoding: DecodingKey::from_secret(&secret),
                encoding: Some(EncodingKey::from_secret(&secret)),
            })
        }
    }
}

/// The smallest HS256 secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Reads an HS256 key's secret from its file or environment variable (trailing line ends
/// trimmed). The secret itself never appears in an error or a log.
fn hs256_secret(config: &KeyConfig) -> Result<Vec<u8>, KeyError> {
    if config.public_key.is_some() || config.private_key.is_some() {
        return Err(config_error(
            config,
            "an HS256 key has `secret_file` or `secret_env`, not PEM keys",
        ));
    }
    let mut secret = match (&config.secret_file, &config.secret_env) {
        (Some(path), None) => std::fs::read(path).map_err(|e| file_error(path, &e.to_string()))?,
        (None, Some(var)) => match std::env::var_os(var) {
            Some(value) => value.into_encoded_bytes(),
            None => {
                return Err(config_error(
                    config,
                    &format!("the environment variable `{var}` (secret_env) is not set"),
                ))
            }
        },
        _ => {
            return Err(config_error(
                config,
                "an HS256 key needs exactly one of `secret_file` and `secret_env`",
            ))
        }
    };
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(config_error(
            config,
            &format!(
                "the HS256 secret has {} bytes; use at least {MIN_SECRET_BYTES} random bytes \
                 (e.g. `head -c 48 /dev/urandom | base64`)",
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

fn config_error(config: &KeyConfig, message: &str) -> KeyError {
    KeyError::Config {
        kid: config.kid.clone(),
        message: message.to_owned(),
    }
}

fn file_error(path: &Path, message: &str) -> KeyError {
    KeyError::File {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

fn read_file(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|e| file_error(path, &e.to_string()))
}

/// A key that mints tokens.
pub struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    key: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key `edge token issue` signs with: the one named `kid`, else the first configured
    /// key that can sign, else the generated pair in `certs_dir` (generated if missing).
    pub fn load(
        config: &AuthConfig,
        certs_dir: &Path,
        kid: Option<&str>,
    ) -> Result<SigningKey, KeyError> {
        let keys = load_keys(config, certs_dir)?;
        let known: Vec<String> = keys.iter().map(|k| k.kid.clone()).collect();
        let key = match kid {
            Some(kid) => keys.into_iter().find(|k| k.kid == kid).ok_or_else(|| {
                KeyError::Crypto(format!(
                    "no key `{kid}`; the keys are: {}",
                    known.join(", ")
                ))
            })?,
            None => keys
                .into_iter()
                .find(|k| k.encoding.is_some())
                .ok_or_else(|| {
                    KeyError::Crypto(format!(
                        "no key here can sign (keys: {}): mint tokens where a signing key is \
                         ({SIGNING_KEY_FILE}, a configured `private_key`, or an HS256 secret)",
                        known.join(", ")
                    ))
                })?,
        };
        let Some(encoding) = key.encoding else {
            return Err(KeyError::Crypto(format!(
                "key `{}` has no private half here: mint tokens where its signing key is \
                 ({SIGNING_KEY_FILE} or the configured `private_key`)",
                key.kid
            )));
        };
        Ok(SigningKey {
            kid: key.kid,
            algorithm: key.algorithm,
            key: encoding,
        })
    }

    /// The key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Mints a token for `sub` with `scope`, valid for `ttl`, with a random `jti`.
    pub fn issue(
        &self,
        config: &AuthConfig,
        sub: &str,
        scope: &str,
        ttl: Duration,
        audience: Option<&str>,
    ) -> Result<String, KeyError> {
        let now = unix_now();
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

    /// Signs any claims with this key (its algorithm, its `kid`).
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| KeyError::Crypto(e.to_string()))
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

/// The generated signing key pair in a certs dir.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The key id (from the verifying key).
    pub kid: String,
    /// PKCS#8 PEM of the signing key (empty when only the verifying key is here).
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
        let verify_pem = read_file(&verify)?;
        let signing_pem = if signing.is_file() {
            read_file(&signing)?
        } else {
            String::new()
        };
        Ok(KeyPair {
            kid: kid_of(&verify_pem),
            signing_pem,
            verify_pem,
        })
    }

    /// Writes a new pair to `<prefix>.pem` (signing, 0600) and `<prefix>.pub.pem` (verifying),
    /// refusing to overwrite either; returns the pair.
    pub fn generate_at(prefix: &Path) -> Result<KeyPair, KeyError> {
        let signing = with_suffix(prefix, ".pem");
        let verify = with_suffix(prefix, ".pub.pem");
        for path in [&signing, &verify] {
            if path.exists() {
                return Err(file_error(path, "already exists; pick another name"));
            }
        }
        let dir = prefix.parent().unwrap_or(Path::new("."));
        generate(dir, &signing, &verify)?;
        let verify_pem = read_file(&verify)?;
        Ok(KeyPair {
            kid: kid_of(&verify_pem),
            signing_pem: read_file(&signing)?,
            verify_pem,
        })
    }

    fn encoding_key(&self) -> Result<EncodingKey, KeyError> {
        if self.signing_pem.is_empty() {
            return Err(KeyError::Crypto(format!(
                "this certs dir has no {SIGNING_KEY_FILE}: mint tokens where the signing key is"
            )));
        }
        EncodingKey::from_ed_pem(self.signing_pem.as_bytes())
            .map_err(|e| KeyError::Crypto(e.to_string()))
    }

    /// This pair as a [`SigningKey`].
    pub fn signing_key(&self) -> Result<SigningKey, KeyError> {
        Ok(SigningKey {
            kid: self.kid.clone(),
            algorithm: Algorithm::EdDSA,
            key: self.encoding_key()?,
        })
    }

    /// Mints a token (see [`SigningKey::issue`]).
    pub fn issue(
        &self,
        config: &AuthConfig,
        sub: &str,
        scope: &str,
        ttl: Duration,
        audience: Option<&str>,
    ) -> Result<String, KeyError> {
        self.signing_key()?.issue(config, sub, scope, ttl, audience)
    }

    /// Signs any claims with this key (EdDSA, this key's `kid`).
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        self.signing_key()?.sign(claims)
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn generate(dir: &Path, signing: &Path, verify: &Path) -> Result<(), KeyError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| KeyError::Crypto(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, &e.to_string()))?;
    write_key(signing, pair.serialize_pem().as_bytes(), true)?;
    write_key(verify, pair.public_key_pem().as_bytes(), false)
}

fn write_key(path: &Path, contents: &[u8], secret: bool) -> Result<(), KeyError> {
    crate::tls::write_pem(path, contents, secret).map_err(|e| file_error(path, &e.to_string()))
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
    fn a_token_seen_before_skips_the_signature_check_but_not_its_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyPair::load_or_generate(dir.path()).unwrap();
        let config = AuthConfig::default();
        let verifier = Verifier::load(&config, dir.path()).unwrap();
        let token = keys
            .issue(
                &config,
                "alice",
                "ports:write",
                Duration::from_secs(60),
                None,
            )
            .unwrap();
        let first = verifier.verify(Some(&token)).unwrap();
        assert_eq!(verifier.verify(Some(&token)).unwrap(), first);
        // A token differing in one byte is checked in full, and fails.
        let at = token.rfind('.').unwrap() + 10;
        let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
        assert!(verifier.verify(Some(&forged)).is_err());
        // Once the remembered grant has expired (beyond the leeway), the full check says so.
        verifier
            .verified
            .lock()
            .unwrap()
            .get_mut(&token)
            .unwrap()
            .exp = unix_now() - config.leeway_secs - 1;
        assert!(verifier.remembered(&token).is_none());
        // (The token itself is still valid for a minute, so the full check passes again.)
        assert_eq!(verifier.verify(Some(&token)).unwrap(), first);
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

    fn hs256(kid: &str, file: Option<&Path>, env: Option<&str>) -> KeyConfig {
        KeyConfig {
            kid: kid.into(),
            algorithm: KeyAlgorithm::HS256,
            public_key: None,
            private_key: None,
            secret_file: file.map(Path::to_owned),
            secret_env: env.map(str::to_owned),
        }
    }

    fn load_err(keys: Vec<KeyConfig>) -> String {
        let config = AuthConfig {
            keys,
            ..AuthConfig::default()
        };
        Verifier::load(&config, Path::new("/nonexistent"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn configured_keys_are_checked_and_secrets_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "tiny-secret-1234\n").unwrap();
        let err = load_err(vec![hs256("ci", Some(&short), None)]);
        assert!(
            err.contains("16 bytes") && err.contains("at least 32"),
            "{err}"
        );
        assert!(
            !err.contains("tiny-secret"),
            "the secret is never shown: {err}"
        );

        let err = load_err(vec![hs256("ci", None, Some("EDGE_TEST_UNSET_SECRET_VAR"))]);
        assert!(err.contains("EDGE_TEST_UNSET_SECRET_VAR"), "{err}");
        let err = load_err(vec![hs256("ci", None, None)]);
        assert!(err.contains("exactly one"), "{err}");

        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef0123456789abcdef").unwrap();
        let err = load_err(vec![
            hs256("same", Some(&good), None),
            hs256("same", Some(&good), None),
        ]);
        assert!(err.contains("`same`") && err.contains("unique"), "{err}");

        let err = load_err(vec![KeyConfig {
            algorithm: KeyAlgorithm::EdDSA,
            ..hs256("ed", None, None)
        }]);
        assert!(err.contains("public_key"), "{err}");

        let config = AuthConfig {
            keys: vec![hs256("ci", Some(&good), None)],
            ..AuthConfig::default()
        };
        let verifier = Verifier::load(&config, Path::new("/nonexistent")).unwrap();
        assert_eq!(verifier.kids(), ["ci"]);
        let signer = SigningKey::load(&config, Path::new("/nonexistent"), None).unwrap();
        assert!(!format!("{signer:?} {verifier:?}").contains("0123456789abcdef"));
        let token = signer
            .issue(
                &config,
                "ci-bot",
                "stats:write",
                Duration::from_secs(60),
                None,
            )
            .unwrap();
        let grant = verifier.verify(Some(&token)).unwrap();
        assert_eq!(grant.sub, "ci-bot");
        assert_eq!(unverified_id(&token).map(|(jti, _)| jti), Some(grant.jti));
    }

    #[test]
    fn a_verify_only_key_cannot_mint_and_says_where_to() {
        let dir = tempfile::tempdir().unwrap();
        let pair = KeyPair::generate_at(&dir.path().join("k")).unwrap();
        let config = AuthConfig {
            keys: vec![KeyConfig {
                kid: "pub-only".into(),
                algorithm: KeyAlgorithm::EdDSA,
                public_key: Some(dir.path().join("k.pub.pem")),
                private_key: None,
                secret_file: None,
                secret_env: None,
            }],
            ..AuthConfig::default()
        };
        let err = SigningKey::load(&config, dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("can sign"), "{err}");
        let err = SigningKey::load(&config, dir.path(), Some("nope")).unwrap_err();
        assert!(err.to_string().contains("pub-only"), "{err}");
        assert!(
            KeyPair::generate_at(&dir.path().join("k")).is_err(),
            "never overwrites"
        );
        assert!(pair.kid.starts_with("ed25519-"));
    }
}
