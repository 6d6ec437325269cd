//! What a blob is called and what it is: names checked (no path tricks), media types checked,
//! and sniffed from the first bytes when the client names none.

/// The longest blob name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// How many first bytes [`sniff`] looks at.
pub const SNIFF_BYTES: usize = 512;

/// Why a name or a media type is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Checks a name a client chose: 1 to [`MAX_NAME_BYTES`] of `A-Z a-z 0-9 . _ -`, not
/// starting with `.` (so no `..`, no hidden file, no `/`: a name is never a path).
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "is longer than 200 bytes"
    } else if name.starts_with('.') {
        "starts with `.`"
    } else if !name.bytes().all(safe) {
        "holds a character other than A-Z, a-z, 0-9, `.`, `_` and `-`"
    } else {
        return Ok(());
    };
    Err(Invalid(format!(
        "the blob name `{}` {why}; name it with letters, digits, `.`, `_` and `-`, e.g. photo-2024.jpg",
        name.escape_debug()
    )))
}

/// A name made from a file's name (the default when the client names none): every character
/// outside the safe set becomes `_`, leading dots go, and it is cut to [`MAX_NAME_BYTES`].
/// `None` when nothing is left.
pub fn name_from_file(file: &str) -> Option<String> {
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    let mut name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii() && safe(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dots = name.len() - name.trim_start_matches('.').len();
    name.drain(..dots);
    name.truncate(MAX_NAME_BYTES);
    (!name.is_empty() && name.bytes().any(|b| b != b'_')).then_some(name)
}

fn safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A media type as a client gave it, checked (`type/subtype`, optional parameters), with a
/// trailing `;base64` split off: `(type, base64)`. `image/png;base64` is how browsers and some
/// apps say that the body is the base64 text of a PNG.
pub fn check_type(given: &str) -> Result<(String, bool), Invalid> {
    let mut parts: Vec<&str> = given.split(';').map(str::trim).collect();
    let base64 = parts.len() > 1
        && parts
            .last()
            .is_some_and(|p| p.eq_ignore_ascii_case("base64"));
    if base64 {
        parts.pop();
    }
    let essence = parts.first().copied().unwrap_or("");
    let valid = essence.split_once('/').is_some_and(|(kind, sub)| {
        !kind.is_empty() && !sub.is_empty() && (kind.bytes().chain(sub.bytes()).all(token))
    }) && parts[1..].iter().all(|p| {
        p.split_once('=')
            .is_some_and(|(k, v)| !k.is_empty() && !v.is_empty())
    }) && given.len() <= 200
        && given.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if !valid {
        return Err(Invalid(format!(
            "`{}` is not a media type; give one such as image/jpeg or text/plain; charset=utf-8",
            given.escape_debug()
        )));
    }
    Ok((parts.join("; ").to_ascii_lowercase(), base64))
}

/// RFC 9110's `token` characters.
fn token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The media type of a body from its first bytes (up to [`SNIFF_BYTES`]) and its name:
/// pictures and documents by their signatures; else text by the name's extension, or
/// `text/plain` for UTF-8 without control characters; else `application/octet-stream`.
pub fn sniff(head: &[u8], name: &str) -> &'static str {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"\xFF\xD8\xFF", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1F\x8B", "application/gzip"),
        (b"BM", "image/bmp"),
    ];
    if let Some((_, kind)) = SIGNATURES.iter().find(|(sig, _)| head.starts_with(sig)) {
        return kind;
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return "image/webp";
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return match &head[8..12] {
            b"heic" | b"heix" | b"mif1" => "image/heic",
            b"avif" => "image/avif",
            _ => "video/mp4",
        };
    }
    if !looks_like_text(head) {
        return "application/octet-stream";
    }
    let extension = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("json") => "application/json",
        Some("ndjson" | "jsonl") => "application/x-ndjson",
        Some("csv") => "text/csv; charset=utf-8",
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("md") => "text/markdown; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

/// UTF-8 (a sequence cut by the end of `head` counts) without control characters other than
/// tab, line feed, form feed and carriage return.
fn looks_like_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(_) => true,
        // Cut inside a character at the end: fine.
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    valid
        && head
            .iter()
            .all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\x0C' | b'\r'))
        && !head.contains(&0x7F)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["photo.jpg", "IMG_2024-01.JPG", "a", "x..y"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            ".hidden",
            "..",
            "a b",
            "é.jpg",
            "a\\b",
        ] {
            let err = check_name(bad).unwrap_err();
            assert!(err.0.contains("letters, digits"), "{bad}: {err}");
        }
        assert!(check_name(&"a".repeat(201)).is_err());
    }

    #[test]
    fn file_names_become_safe_names() {
        assert_eq!(
            name_from_file("IMG 1234.JPG").as_deref(),
            Some("IMG_1234.JPG")
        );
        assert_eq!(name_from_file("../../x.png").as_deref(), Some("x.png"));
        assert_eq!(name_from_file("..hidden").as_deref(), Some("hidden"));
        assert_eq!(name_from_file("été.jpg").as_deref(), Some("_t_.jpg"));
        assert_eq!(name_from_file("..."), None);
        assert_eq!(name_from_file("日本"), None);
    }

    #[test]
    fn media_types_are_checked_and_base64_split_off() {
        assert_eq!(check_type("image/PNG"), Ok(("image/png".into(), false)));
        assert_eq!(
            check_type("image/png;base64"),
            Ok(("image/png".into(), true))
        );
        assert_eq!(
            check_type("text/plain; charset=utf-8"),
            Ok(("text/plain; charset=utf-8".into(), false))
        );
        for bad in [
            "png",
            "image/",
            "/png",
            "image/png; x",
            "a b/c",
            "image/png\n",
        ] {
            assert!(check_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn types_are_sniffed_from_the_first_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0\0\x10JFIF", "x"), "image/jpeg");
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0", "x.txt"), "image/png");
        assert_eq!(sniff(b"GIF89a...", "x"), "image/gif");
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 ", "x"), "image/webp");
        assert_eq!(sniff(b"%PDF-1.7\n", "x"), "application/pdf");
        assert_eq!(
            sniff(b"hello\nworld\n", "notes"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(sniff(b"{\"a\":1}", "a.json"), "application/json");
        assert_eq!(
            sniff("caf\u{e9}".as_bytes(), "x"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            sniff(&"\u{e9}".as_bytes()[..1], "x"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(sniff(b"\0\x01\x02", "x.txt"), "application/octet-stream");
        assert_eq!(sniff(b"", "empty"), "text/plain; charset=utf-8");
    }
}
