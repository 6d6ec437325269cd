//! Checking a token: its `kid` names a key of this server, the signature verifies with that
//! key's own algorithm, and the claims are there and of the right types.

use super::keys::load_keys;
use super::{unix_now, AuthError, Claims, Grant, KeyError, MAX_TOKEN_BYTES, REQUIRED_CLAIMS};
use crate::config::AuthConfig;
use edge_tasks::revocations::MAX_JTI_BYTES;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::path::Path;

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
        let kid = header.kid.ok_or_else(|| {
            AuthError::Malformed(
                "the header has no `kid` (`edge token keys` lists this server's key ids)".into(),
            )
        })?;
        let key = self.keys.get(&kid).ok_or(AuthError::UnknownKey(kid))?;
        if header.alg != key.algorithm {
            return Err(AuthError::BadSignature);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway;
        // `nbf` is optional; when a token has one, it is checked.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation)
            .map_err(refusal)?;
        let claims = claims_of(data.claims)?;
        Ok(Grant {
            sub: claims.sub,
            jti: claims.jti,
            exp: claims.exp,
            iat: claims.iat,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
        })
    }
}

/// What a refusal for a missing claim adds: the whole list, so one refusal says all.
fn required() -> String {
    let names: Vec<String> = REQUIRED_CLAIMS.iter().map(|c| format!("`{c}`")).collect();
    format!("every token needs {}", names.join(", "))
}

/// Reads the claims: the required ones must be there, and every known one present must be of
/// its type (numbers are whole seconds since the epoch).
fn claims_of(value: serde_json::Value) -> Result<Claims, AuthError> {
    const NUMBERS: [&str; 3] = ["exp", "iat", "nbf"];
    const STRINGS: [&str; 5] = ["sub", "jti", "iss", "aud", "scope"];
    for name in REQUIRED_CLAIMS {
        if value.get(name).is_none_or(serde_json::Value::is_null) {
            return Err(AuthError::Claims(format!(
                "`{name}` is missing ({})",
                required()
            )));
        }
    }
    for name in NUMBERS {
        if value.get(name).is_some_and(|v| !v.is_u64()) {
            return Err(AuthError::Claims(format!(
                "`{name}` must be a whole number of seconds since the epoch"
            )));
        }
    }
    for name in STRINGS {
        if value.get(name).is_some_and(|v| !v.is_string()) {
            return Err(AuthError::Claims(format!("`{name}` must be a string")));
        }
    }
    let claims: Claims =
        serde_json::from_value(value).map_err(|e| AuthError::Claims(e.to_string()))?;
    if claims.sub.trim().is_empty() {
        return Err(AuthError::Claims("`sub` is empty".into()));
    }
    if claims.jti.trim().is_empty() || claims.jti.len() > MAX_JTI_BYTES {
        return Err(AuthError::Claims(format!(
            "`jti` must have 1 to {MAX_JTI_BYTES} bytes (a unique id, so that the token can be revoked)"
        )));
    }
    Ok(claims)
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
            AuthError::Claims(format!("`{claim}` is missing ({})", required()))
        }
        // Only `exp` and `nbf` are checked this way.
        ErrorKind::InvalidClaimFormat(claim) => AuthError::Claims(format!(
            "`{claim}` must be a whole number of seconds since the epoch"
        )),
        ErrorKind::Json(e) => AuthError::Claims(e.to_string()),
        _ => AuthError::Malformed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::KeyPair;
    use serde_json::json;
    use std::time::Duration;

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
    fn the_required_claims_suffice_and_each_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyPair::load_or_generate(dir.path()).unwrap();
        let verifier = Verifier::load(&AuthConfig::default(), dir.path()).unwrap();
        let now = unix_now();
        let minimal = json!({
            "sub": "ext", "exp": now + 60, "iss": "edge", "aud": "edge", "jti": "ext-1",
        });
        let grant = verifier
            .verify(Some(&keys.sign(&minimal).unwrap()))
            .unwrap();
        assert_eq!((grant.sub.as_str(), grant.jti.as_str()), ("ext", "ext-1"));
        assert!(!grant.allows("ports:read"), "no `scope`: no scopes");
        for claim in REQUIRED_CLAIMS {
            let mut spoiled = minimal.clone();
            spoiled.as_object_mut().unwrap().remove(claim);
            let err = verifier
                .verify(Some(&keys.sign(&spoiled).unwrap()))
                .unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(&format!("`{claim}` is missing"))
                    && message.contains("every token needs `sub`, `exp`, `iss`, `aud`, `jti`"),
                "{claim}: {message}"
            );
        }
        for (claim, value, says) in [
            ("iat", json!(1.5), "whole number"),
            ("nbf", json!("soon"), "whole number"),
            ("scope", json!(["ports:read"]), "must be a string"),
            ("jti", json!(""), "1 to 256 bytes"),
            ("jti", json!("x".repeat(257)), "1 to 256 bytes"),
            ("sub", json!(" "), "`sub` is empty"),
        ] {
            let mut spoiled = minimal.clone();
            spoiled[claim] = value;
            let err = verifier
                .verify(Some(&keys.sign(&spoiled).unwrap()))
                .unwrap_err();
            assert!(err.to_string().contains(says), "{claim}: {err}");
        }
    }
}
