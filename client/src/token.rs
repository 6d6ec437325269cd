//! What the client can tell of its token before connecting: that there is one, and that it
//! has not expired. The token's `exp` is read without verifying the signature (only the
//! server can verify it); a token that cannot be read is left to the server to judge.

use crate::error::ClientError;
use base64::Engine as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The server's default clock leeway for `exp` (`auth.leeway_secs`).
const LEEWAY_SECS: u64 = 30;

/// Checks `token` as far as the client can; `now` is the current time.
pub fn check(token: Option<&str>, now: SystemTime) -> Result<(), ClientError> {
    let token = match token.map(str::trim) {
        None | Some("") => return Err(ClientError::NoToken),
        Some(token) => token,
    };
    let Some(exp) = expiry(token) else {
        return Ok(());
    };
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if exp.saturating_add(LEEWAY_SECS) < now_secs {
        let expired = UNIX_EPOCH + Duration::from_secs(exp);
        return Err(ClientError::TokenExpired {
            at: humantime::format_rfc3339_seconds(expired).to_string(),
            ago: humantime::format_duration(Duration::from_secs(now_secs - exp)).to_string(),
        });
    }
    Ok(())
}

/// The `exp` claim of a JWT, read without verifying it.
fn expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let encode = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.c2ln",
            encode(br#"{"alg":"EdDSA"}"#),
            encode(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn missing_and_expired_tokens_are_found_before_connecting() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(matches!(check(None, now), Err(ClientError::NoToken)));
        assert!(matches!(check(Some("  "), now), Err(ClientError::NoToken)));
        let expired = jwt(serde_json::json!({"sub": "me", "exp": 1_800_000_000 - 7200}));
        let err = check(Some(&expired), now).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the token expired at 2027-01-15T06:00:00Z (2h ago): mint a new one (`edge token issue`) and pass it with --token or EDGE_TOKEN"
        );
        let within_leeway = jwt(serde_json::json!({"exp": 1_800_000_000 - 10}));
        assert!(check(Some(&within_leeway), now).is_ok());
        let valid = jwt(serde_json::json!({"exp": 1_800_000_000 + 60}));
        assert!(check(Some(&valid), now).is_ok());
        // Not a JWT this client can read: the server judges it.
        assert!(check(Some("opaque"), now).is_ok());
    }
}
