//! The web page (`web/` at the repository root, embedded in the binary): `GET /` and its
//! assets, served without a token, under a strict Content-Security-Policy. The page itself
//! calls the API with the token its user gives it.

use super::respond::refuse_method;
use super::Stream;
use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use std::sync::LazyLock;

/// What the page may do: its own scripts, styles and images (and images it fetched, as
/// `blob:` URLs), requests to this origin only; no inline code, no framing, no forms posted
/// anywhere.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// One file of the page.
#[derive(Debug)]
pub(crate) struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The page's files, by path.
pub(crate) const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/app.js"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../web/app.css"),
    },
    Asset {
        path: "/icon.svg",
        content_type: "image/svg+xml; charset=utf-8",
        body: include_bytes!("../../../web/icon.svg"),
    },
    Asset {
        path: "/file.svg",
        content_type: "image/svg+xml; charset=utf-8",
        body: include_bytes!("../../../web/file.svg"),
    },
];

/// Each asset's entity tag (a strong one: a SHA-256 of its bytes), computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = ring::digest::digest(&ring::digest::SHA256, asset.body);
            let hex: String = digest.as_ref()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("\"{hex}\"")
        })
        .collect()
});

/// The page's file at `path`, if it is one.
pub(crate) fn find(path: &str) -> Option<usize> {
    ASSETS.iter().position(|asset| asset.path == path)
}

/// Answers a request for the page's file `index` (of [`ASSETS`]): `GET` and `HEAD`, `304`
/// when `If-None-Match` names its tag, `405` for other methods.
pub(super) async fn serve(stream: &mut Stream, method: &Method, index: usize, headers: &HeaderMap) {
    if method != Method::GET && method != Method::HEAD {
        return refuse_method(stream, method, "GET, HEAD").await;
    }
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = headers
        .get_all("if-none-match")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|tags| matches(tags, etag));
    let response = Response::builder()
        .header("etag", etag)
        .header("cache-control", "no-cache")
        .header("content-security-policy", CONTENT_SECURITY_POLICY)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("cross-origin-opener-policy", "same-origin")
        .header("content-type", asset.content_type);
    let (response, body) = if fresh {
        (response.status(StatusCode::NOT_MODIFIED), None)
    } else {
        let response = response
            .status(StatusCode::OK)
            .header("content-length", asset.body.len());
        (response, (!stream.head).then_some(asset.body))
    };
    let response = response
        .body(())
        .expect("a response of static parts is valid");
    if stream.send_response(response).await.is_err() {
        return;
    }
    if let Some(body) = body {
        if stream.send_data(Bytes::from_static(body)).await.is_err() {
            return;
        }
    }
    if stream.finish().await.is_ok() {
        stream.linger().await;
    }
}

/// Whether an `If-None-Match` value names `etag` (or is `*`); weak tags compare by their
/// opaque part (RFC 9110 §13.1.2: weak comparison).
fn matches(tags: &str, etag: &str) -> bool {
    tags.split(',')
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_path_a_type_with_charset_and_a_tag() {
        assert_eq!(find("/"), Some(0));
        assert!(find("/app.js").is_some() && find("/app.css").is_some());
        assert_eq!(find("/nothing.js"), None);
        for (asset, etag) in ASSETS.iter().zip(ETAGS.iter()) {
            assert!(asset.content_type.ends_with("; charset=utf-8"), "{asset:?}");
            assert!(!asset.body.is_empty());
            assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34);
        }
        let unique: std::collections::HashSet<_> = ETAGS.iter().collect();
        assert_eq!(unique.len(), ASSETS.len());
    }

    #[test]
    fn if_none_match_compares_tags() {
        let etag = "\"abc\"";
        assert!(matches("\"abc\"", etag));
        assert!(matches("\"x\", W/\"abc\"", etag));
        assert!(matches("*", etag));
        assert!(!matches("\"abcd\"", etag));
        assert!(!matches("", etag));
    }

    #[test]
    fn the_page_loads_nothing_inline_and_nothing_from_elsewhere() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!html.contains("<script>"), "inline scripts break the CSP");
        assert!(!html.contains("style="), "inline styles break the CSP");
        assert!(!html.contains("<style"), "inline styles break the CSP");
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.body).unwrap();
            for needle in ["http://", "https://"] {
                for (at, _) in text.match_indices(needle) {
                    // Only the SVG namespace names another origin, and it is not fetched.
                    assert!(
                        text[at..].starts_with("http://www.w3.org/2000/svg"),
                        "{} loads from elsewhere: {}",
                        asset.path,
                        &text[at..(at + 40).min(text.len())]
                    );
                }
            }
        }
    }
}
