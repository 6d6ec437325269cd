//! Redirects, followed by this crate (never by the HTTP client) so that each new URL goes
//! through the same checks as the first: which statuses redirect, and where to.

use crate::error::FetchError;
use http::header::LOCATION;
use http::{HeaderMap, StatusCode};
use url::Url;

/// Whether `status` is a redirect this crate follows: 301, 302, 303, 307, 308 (every request
/// is a GET, so 303's "then GET" changes nothing).
pub(crate) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Where a redirect from `current` leads: its `Location`, resolved against `current` if it
/// is relative. The new URL is still to be checked like the first.
pub(crate) fn location(
    current: &Url,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Url, FetchError> {
    let bad = |why: String| FetchError::BadRedirect {
        status: status.as_u16(),
        why,
    };
    let value = headers
        .get(LOCATION)
        .ok_or_else(|| bad("no Location header".into()))?;
    let text = std::str::from_utf8(value.as_bytes())
        .map_err(|_| bad("a Location that is not UTF-8".into()))?;
    current
        .join(text.trim())
        .map_err(|e| bad(format!("the Location {text:?} ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn follow(current: &str, location: &str) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(
            LOCATION,
            HeaderValue::from_str(location).expect("a test header"),
        );
        let current = Url::parse(current).expect("a test URL");
        location_of(&current, &headers)
    }

    fn location_of(current: &Url, headers: &HeaderMap) -> String {
        match location(current, StatusCode::FOUND, headers) {
            Ok(url) => url.to_string(),
            Err(e) => e.code().to_owned(),
        }
    }

    #[test]
    fn locations_resolve_against_the_current_url() {
        let here = "https://example.org/a/b?q=1";
        assert_eq!(follow(here, "c"), "https://example.org/a/c");
        assert_eq!(follow(here, "/c?x=2"), "https://example.org/c?x=2");
        assert_eq!(follow(here, "../c"), "https://example.org/c");
        assert_eq!(follow(here, "//other.example/d"), "https://other.example/d");
        assert_eq!(
            follow(here, "http://127.0.0.1:8080/"),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(follow(here, "?y"), "https://example.org/a/b?y");
        let current = Url::parse(here).expect("a test URL");
        assert_eq!(location_of(&current, &HeaderMap::new()), "bad_redirect");
    }

    #[test]
    fn redirect_statuses() {
        for code in [301, 302, 303, 307, 308] {
            assert!(is_redirect(StatusCode::from_u16(code).expect("a status")));
        }
        for code in [200, 300, 304, 305, 306, 400, 500] {
            assert!(!is_redirect(StatusCode::from_u16(code).expect("a status")));
        }
    }
}
