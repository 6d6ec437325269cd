//! Minting tokens (`edge token issue`): with a configured key that can sign, or the
//! generated pair's signing key.

use super::keys::{load_keys, KeyPair};
use super::{unix_now, Claims, KeyError, SIGNING_KEY_FILE};
use crate::config::AuthConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// A token just minted, with what it says.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The token (a JWT).
    pub token: String,
    /// The key it is signed with.
    pub kid: String,
    /// Its claims.
    pub claims: Claims,
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
        if config.keys.is_empty() {
            // The generated pair, whose own error says what is wrong with its signing key.
            let pair = KeyPair::load_or_generate(certs_dir)?;
            if let Some(kid) = kid.filter(|kid| *kid != pair.kid) {
                return Err(KeyError::Crypto(format!(
                    "no key `{kid}`; the keys are: {}",
                    pair.kid
                )));
            }
            return pair.signing_key();
        }
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
        Ok(self.mint(config, sub, scope, ttl, audience)?.token)
    }

    /// [`SigningKey::issue`], with the claims the token carries.
    pub fn mint(
        &self,
        config: &AuthConfig,
        sub: &str,
        scope: &str,
        ttl: Duration,
        audience: Option<&str>,
    ) -> Result<Issued, KeyError> {
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
        let token = self.sign(&claims)?;
        Ok(Issued {
            token,
            kid: self.kid.clone(),
            claims,
        })
    }

    /// Signs any claims with this key (its algorithm, its `kid`).
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| KeyError::Crypto(e.to_string()))
    }
}

impl KeyPair {
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

fn random_id() -> Result<String, KeyError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Crypto("no randomness".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
