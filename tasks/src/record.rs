//! Records as decoders hand them to tasks, and the faults a decoder or task reports for one.

use edge_proto::ErrorCode;

/// One decoded record, borrowed from the decoder's buffer for the duration of one call.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Index of the record in the upload, from 0. Bad records count too, so indexes match
    /// what a user sees when counting entries in the file.
    pub index: u64,
    /// Byte offset of the record's first byte in the upload body (for a top-level JSON object,
    /// the offset of the entry's key).
    pub offset: u64,
    /// Byte offset just after the record's last byte in the upload body (for a line, after its
    /// line terminator; for a JSON entry, after its value's last byte). A CSV row's terminator
    /// is the byte that ends it: `\n`, or the `\r` of a `\r\n` (its `\n` is a blank line
    /// before the next row). For a record cut off by the end of the body, the body's length.
    pub end: u64,
    /// The record's key when the format carries one (the key of a top-level JSON object entry).
    pub key: Option<&'a str>,
    /// The record's bytes.
    pub body: Body<'a>,
}

/// The bytes of one record, as the format framed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// One complete JSON value (not yet parsed or validated beyond its framing).
    Json(&'a [u8]),
    /// One line of text, without its line terminator (`\n` or `\r\n`), valid UTF-8.
    Text(&'a str),
    /// One CSV row, with the header's column names.
    Csv(CsvRow<'a>),
}

/// One CSV row: its fields (unescaped) under the header's column names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvRow<'a> {
    columns: &'a [String],
    text: &'a str,
    ends: &'a [usize],
}

impl<'a> CsvRow<'a> {
    /// A row of `text` cut at `ends` (each field's end), under `columns`.
    pub fn new(columns: &'a [String], text: &'a str, ends: &'a [usize]) -> CsvRow<'a> {
        CsvRow {
            columns,
            text,
            ends,
        }
    }

    /// The header's column names.
    pub fn columns(&self) -> &'a [String] {
        self.columns
    }

    /// The fields, in column order.
    pub fn values(&self) -> impl Iterator<Item = &'a str> + 'a {
        let (text, ends) = (self.text, self.ends);
        ends.iter().enumerate().map(move |(i, &end)| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            text.get(start..end).unwrap_or("")
        })
    }

    /// `(column, value)` pairs, in column order.
    pub fn fields(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.columns.iter().map(String::as_str).zip(self.values())
    }

    /// The value of the column named `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields()
            .find(|(column, _)| *column == name)
            .map(|(_, v)| v)
    }
}

/// A record that could not be stored: reported to the client as a `record_error` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFault {
    /// Index of the record in the upload (see [`Record::index`]).
    pub index: u64,
    /// Byte offset of the record's start in the upload body.
    pub offset: u64,
    /// Byte offset just after the record's last byte in the upload body (see [`Record::end`]).
    pub end: u64,
    /// The record's key, if it could be read.
    pub key: Option<String>,
    /// What is wrong, as a stable code.
    pub code: ErrorCode,
    /// What is wrong, for a person; names the field where there is one.
    pub message: String,
}

/// Why a task refused one record. The pipeline adds the index and offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The record's key, if the task could read one (e.g. `unlocs[0]` of an array record).
    pub key: Option<String>,
    /// What is wrong, as a stable code (usually [`ErrorCode::InvalidRecord`] or
    /// [`ErrorCode::InvalidJson`]).
    pub code: ErrorCode,
    /// What is wrong, naming the field.
    pub message: String,
}

impl Rejection {
    /// A record that is valid JSON but wrong for the task.
    pub fn invalid(message: impl Into<String>) -> Rejection {
        Rejection {
            key: None,
            code: ErrorCode::InvalidRecord,
            message: message.into(),
        }
    }

    /// Attaches the record's key.
    pub fn with_key(mut self, key: Option<String>) -> Rejection {
        self.key = key;
        self
    }
}

/// A serde_json error on `bytes` as a reason for a person. serde_json reports a lone UTF-16
/// surrogate escape (`"\ud800"`) as "unexpected end of hex escape" or "lone leading
/// surrogate", which names the escape, not the problem: the reason says what is wrong.
pub fn json_reason(e: &serde_json::Error, bytes: &[u8]) -> String {
    let text = e.to_string();
    let surrogate_escape = bytes.windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && matches!(w[2], b'd' | b'D')
            && w[3].is_ascii_hexdigit()
            && {
                let nibble = (w[3] as char).to_digit(16).unwrap_or(0);
                nibble >= 8
            }
    });
    if text.contains("surrogate") || (surrogate_escape && text.contains("hex escape")) {
        format!(
            "a \\u escape in the range \\ud800-\\udfff must be half of a surrogate pair; \
             a lone surrogate is not a character ({text})"
        )
    } else {
        text
    }
}
/// One JSON value from a record's bytes, or the record's `invalid_json` rejection.
pub(crate) fn json_value(bytes: &[u8]) -> Result<serde_json::Value, Rejection> {
    serde_json::from_slice(bytes).map_err(|e| Rejection {
        key: None,
        code: ErrorCode::InvalidJson,
        message: json_reason(&e, bytes),
    })
}

/// What a JSON value that is not the number a task wanted is, for its message: `the string
/// "abc"`, `a boolean`, `null`, `an array`, `an object` (a number as it is written).
pub(crate) fn found(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the string \"{}\"", shorten(s)),
        Value::Bool(_) => "a boolean".into(),
        Value::Null => "null".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// At most the first 40 characters of `text`, for messages that quote a record.
pub(crate) fn shorten(text: &str) -> &str {
    match text.char_indices().nth(40) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}
