//! The job header: the first line of every `edge/1` upload stream.
//!
//! One JSON object on one line, terminated by `\n`, at most [`MAX_HEADER_BYTES`] including the
//! newline. The raw file bytes follow it directly; FIN ends the upload.

use crate::{ErrorCode, Format, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest header, newline included, that a server reads before refusing the job.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What a client says about a job before sending its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobHeader {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The bearer token (a JWT) that authorises the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The task plugin to run, e.g. `ports` or `stats`.
    pub task: String,
    /// The upload format; the server sniffs it from the first bytes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// The file name, for the job history and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The upload size in bytes, if known, for progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Task parameters.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// Where the server reads the body from instead of this stream: `file:<dir>/<path>` (a
    /// file in a folder the server allows) or an `https://` URL. The stream then ends after
    /// the header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For a URL `source`: ask the origin whether it changed since the last fetch whose job
    /// was done; if not, the job ends `done` at once with `unchanged`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub if_changed: bool,
    /// The whole body's SHA-256, 64 lowercase hex digits: the server checks it as the bytes
    /// arrive; a mismatch fails the job `digest_mismatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Resume job `J` where its last commit ended, instead of starting a new job: the
    /// server answers `accepted` then `resumed{offset,...}`, and the client sends the body
    /// from `offset` on (not from its start). The job keeps its task, parameters, format and
    /// name; `task` must be the job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
    /// All or nothing: nothing of the job is kept unless all of it is (its records are held
    /// until the body ended and `sha256`, if declared, matched, then committed at once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub atomic: bool,
}

/// Why a header line was refused. [`HeaderError::code`] gives the code for the `rejected` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// No newline within [`MAX_HEADER_BYTES`].
    #[error("job header is longer than {MAX_HEADER_BYTES} bytes (it must be one JSON line ending in a newline)")]
    TooLarge,
    /// The stream ended before the header's newline.
    #[error("upload stream ended before the job header's terminating newline")]
    Unterminated,
    /// The line is not a JSON object with the expected fields.
    #[error("job header is not valid: {0}")]
    Invalid(String),
    /// The `format` field names no known format.
    #[error("unknown format `{0}` in job header (expected one of: json, ndjson, lines)")]
    UnknownFormat(String),
    /// `v` is not [`PROTOCOL_VERSION`].
    #[error("job header has protocol version {0}; this server speaks version {PROTOCOL_VERSION}")]
    UnsupportedVersion(u32),
}

impl HeaderError {
    /// The stable code a `rejected` event carries for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            HeaderError::TooLarge => ErrorCode::HeaderTooLarge,
            HeaderError::Unterminated | HeaderError::Invalid(_) => ErrorCode::BadHeader,
            HeaderError::UnknownFormat(_) => ErrorCode::UnknownFormat,
            HeaderError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
        }
    }
}

impl JobHeader {
    /// A version-1 header for `task` with every optional field empty.
    pub fn new(task: impl Into<String>) -> JobHeader {
        JobHeader {
            v: PROTOCOL_VERSION,
            token: None,
            task: task.into(),
            format: None,
            name: None,
            size: None,
            params: Map::new(),
            source: None,
            if_changed: false,
            sha256: None,
            resume: None,
            atomic: false,
        }
    }

    /// The header as it goes on the wire: compact JSON and a trailing `\n`.
    pub fn encode(&self) -> Vec<u8> {
        let mut line =
            serde_json::to_vec(self).expect("a header of strings and numbers always serializes");
        line.push(b'\n');
        line
    }

    /// Parses one header line (with or without its trailing newline, `\r\n` accepted).
    pub fn parse_line(line: &[u8]) -> Result<JobHeader, HeaderError> {
        if line.len() > MAX_HEADER_BYTES {
            return Err(HeaderError::TooLarge);
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let value: Value =
            serde_json::from_slice(line).map_err(|e| HeaderError::Invalid(e.to_string()))?;
        let Value::Object(mut fields) = value else {
            return Err(HeaderError::Invalid("expected a JSON object".into()));
        };
        // Check the version and the format by hand first, so that these get their own codes.
        match fields.get("v") {
            Some(Value::Number(n)) if n.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {}
            Some(Value::Number(n)) => {
                let v = n
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(u32::MAX);
                return Err(HeaderError::UnsupportedVersion(v));
            }
            Some(_) => return Err(HeaderError::Invalid("`v` must be a number".into())),
            None => return Err(HeaderError::Invalid("missing field `v`".into())),
        }
        if let Some(Value::String(f)) = fields.get("format") {
            if f.parse::<Format>().is_err() {
                return Err(HeaderError::UnknownFormat(f.clone()));
            }
            let canonical = f.parse::<Format>().map(Format::as_str).unwrap_or("json");
            fields.insert("format".into(), Value::String(canonical.into()));
        }
        serde_json::from_value(Value::Object(fields))
            .map_err(|e| HeaderError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut h = JobHeader::new("ports");
        h.token = Some("t".into());
        h.format = Some(Format::Ndjson);
        h.name = Some("ports.ndjson".into());
        h.size = Some(42);
        h.params.insert("column".into(), Value::String("x".into()));
        let line = h.encode();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(JobHeader::parse_line(&line).unwrap(), h);
    }

    #[test]
    fn minimal_header() {
        let h = JobHeader::parse_line(b"{\"v\":1,\"task\":\"stats\"}\r\n").unwrap();
        assert_eq!(h, JobHeader::new("stats"));
    }

    #[test]
    fn refusals_carry_their_codes() {
        let cases: [(&[u8], ErrorCode); 6] = [
            (b"not json", ErrorCode::BadHeader),
            (b"[1]", ErrorCode::BadHeader),
            (
                b"{\"v\":2,\"task\":\"ports\"}",
                ErrorCode::UnsupportedVersion,
            ),
            (
                b"{\"v\":1,\"task\":\"ports\",\"format\":\"xml\"}",
                ErrorCode::UnknownFormat,
            ),
            (
                b"{\"v\":1,\"task\":\"ports\",\"fromat\":\"json\"}",
                ErrorCode::BadHeader,
            ),
            (b"{\"v\":1}", ErrorCode::BadHeader),
        ];
        for (line, code) in cases {
            let err = JobHeader::parse_line(line).unwrap_err();
            assert_eq!(err.code(), code, "{}: {err}", String::from_utf8_lossy(line));
        }
        let unknown =
            JobHeader::parse_line(b"{\"v\":1,\"task\":\"ports\",\"fromat\":\"json\"}").unwrap_err();
        assert!(unknown.to_string().contains("fromat"), "{unknown}");
    }

    #[test]
    fn too_large() {
        let big = vec![b' '; MAX_HEADER_BYTES + 1];
        assert_eq!(JobHeader::parse_line(&big), Err(HeaderError::TooLarge));
    }
}
