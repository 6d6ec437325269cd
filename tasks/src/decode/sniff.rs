//! Guesses an upload's format from its first bytes, for clients that do not name one.
//!
//! After a UTF-8 BOM and whitespace: `[` is `json`; `{` is `ndjson` when the first line holds
//! one complete value and the next non-blank line starts another `{`, else `json` (a
//! pretty-printed or one-line document). Otherwise the first line decides: one JSON string
//! (`"..."`) is `ndjson`; a line with a comma is `csv` (its header row); anything else is
//! `lines`.

use edge_proto::Format;

/// The most bytes sniffing looks at; at this length it always decides.
pub const SNIFF_LIMIT: usize = 64 * 1024;

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// The format.
    Format(Format),
    /// Not enough bytes yet to tell.
    NeedMore,
    /// The body is empty (or only whitespace).
    Empty,
}

/// Looks at the body's first bytes; `at_eof` says no more will come.
pub fn sniff(prefix: &[u8], at_eof: bool) -> Sniff {
    let must_decide = at_eof || prefix.len() >= SNIFF_LIMIT;
    let body = prefix
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(prefix);
    let Some(start) = body.iter().position(|b| !b.is_ascii_whitespace()) else {
        return if must_decide {
            Sniff::Empty
        } else {
            Sniff::NeedMore
        };
    };
    let body = &body[start..];
    match body[0] {
        b'[' => Sniff::Format(Format::Json),
        b'{' => sniff_object(body, must_decide),
        _ => sniff_line(body, must_decide),
    }
}

/// The first line decides: a JSON string is `ndjson`, a comma makes it a CSV header, else
/// `lines`.
fn sniff_line(body: &[u8], must_decide: bool) -> Sniff {
    let line = match body.iter().position(|&b| b == b'\n') {
        Some(end) => &body[..end],
        None if must_decide => body,
        None => return Sniff::NeedMore,
    };
    let line = line.trim_ascii();
    if line.starts_with(b"\"") && serde_json::from_slice::<String>(line).is_ok() {
        return Sniff::Format(Format::Ndjson);
    }
    if line.contains(&b',') {
        Sniff::Format(Format::Csv)
    } else if line.starts_with(b"\"") {
        Sniff::Format(Format::Ndjson)
    } else {
        Sniff::Format(Format::Lines)
    }
}

/// `{...}` then a newline then `{`: NDJSON; anything else: a JSON document.
fn sniff_object(body: &[u8], must_decide: bool) -> Sniff {
    let undecided = if must_decide {
        Sniff::Format(Format::Json)
    } else {
        Sniff::NeedMore
    };
    let end = match first_value_end(body) {
        FirstValue::Ends(end) => end,
        // A pretty-printed document: the first line ends inside the value.
        FirstValue::LineEnds => return Sniff::Format(Format::Json),
        FirstValue::Unknown => return undecided,
    };
    let after = &body[end + 1..];
    let Some(newline) = after.iter().position(|&b| b == b'\n') else {
        // The line goes on (or the body ends) after the first value.
        return if after.iter().all(u8::is_ascii_whitespace) {
            undecided
        } else {
            Sniff::Format(Format::Json)
        };
    };
    if !after[..newline].iter().all(u8::is_ascii_whitespace) {
        return Sniff::Format(Format::Json);
    }
    match after[newline..].iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Sniff::Format(Format::Ndjson),
        Some(_) => Sniff::Format(Format::Json),
        None => undecided,
    }
}

/// Where the object at `body[0]` ends.
enum FirstValue {
    /// At this index, on the first line.
    Ends(usize),
    /// Not on the first line.
    LineEnds,
    /// Not within the bytes so far.
    Unknown,
}

fn first_value_end(body: &[u8]) -> FirstValue {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'\n' => return FirstValue::LineEnds,
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return FirstValue::Ends(i);
                }
            }
            _ => {}
        }
    }
    FirstValue::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules() {
        let f = |bytes: &[u8], eof| sniff(bytes, eof);
        assert_eq!(f(b"", true), Sniff::Empty);
        assert_eq!(f(b" \n", false), Sniff::NeedMore);
        assert_eq!(
            f(b"\xEF\xBB\xBF  [1,2]", false),
            Sniff::Format(Format::Json)
        );
        assert_eq!(f(b"{\n  \"AEAJM\": {", false), Sniff::Format(Format::Json));
        assert_eq!(
            f(b"{\"a\":1}\n{\"a\":2}\n", false),
            Sniff::Format(Format::Ndjson)
        );
        assert_eq!(
            f(b"{\"a\":\"}\\\"\"}\r\n\n{", false),
            Sniff::Format(Format::Ndjson)
        );
        assert_eq!(f(b"{\"a\":1}\n", false), Sniff::NeedMore);
        assert_eq!(f(b"{\"a\":1}\n", true), Sniff::Format(Format::Json));
        assert_eq!(f(b"{\"a\":{\"b\":1}}", true), Sniff::Format(Format::Json));
        assert_eq!(f(b"{\"a\":1", false), Sniff::NeedMore);
        assert_eq!(f(b"{\"a\":1}, {", false), Sniff::Format(Format::Json));
        assert_eq!(f(b"\"x\"\n", false), Sniff::Format(Format::Ndjson));
        assert_eq!(f(b"\"a, b\"\r\n", false), Sniff::Format(Format::Ndjson));
        assert_eq!(f(b"12\n13\n", false), Sniff::Format(Format::Lines));
        assert_eq!(f(b"-1.5", true), Sniff::Format(Format::Lines));
        assert_eq!(f(b"-1.5", false), Sniff::NeedMore);
        assert_eq!(f(b"hello\n", false), Sniff::Format(Format::Lines));
        assert_eq!(f(b"name,lon,lat\r\n", false), Sniff::Format(Format::Csv));
        assert_eq!(f(b"\"name\",\"lon\"\n", false), Sniff::Format(Format::Csv));
        assert_eq!(f(b"a,b", true), Sniff::Format(Format::Csv));
    }

    #[test]
    fn decides_at_the_limit() {
        let mut long = b"{\"a\":\"".to_vec();
        long.resize(SNIFF_LIMIT, b'x');
        assert_eq!(sniff(&long, false), Sniff::Format(Format::Json));
    }

    #[test]
    fn the_real_ports_file_is_json() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/ports.json");
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(sniff(&bytes[..4096], false), Sniff::Format(Format::Json));
    }
}
