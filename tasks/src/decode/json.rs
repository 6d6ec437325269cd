//! `json`: one document, either a top-level object whose values are records (the key is the
//! record id, as in `ports.json`) or a top-level array of records.
//!
//! A framing state machine finds where each top-level entry starts and ends, across chunks,
//! tracking strings, escapes and a bracket stack. It does not parse the records (the task
//! does, and reports bad ones one by one); it only fails the job when the framing itself is
//! broken — a mismatched bracket, a missing `:` or `,`, bytes after the document — because
//! nothing after that point can be cut into records reliably.

use super::bom::Bom;
use super::ndjson::too_large;
use super::{Checkpoint, Decoder, Item, Limits, ResumeState, Sink, SyntaxError};
use crate::record::{Body, Record, RecordFault};
use edge_proto::{ErrorCode, Format};
use std::ops::ControlFlow;

/// The bytes that end a string's run of plain bytes: its closing quote, or a backslash that
/// escapes the next byte.
const STRING_END: [bool; 256] = byte_set(b"\"\\");
/// The bytes that matter inside a value outside strings: a quote that opens a string, or a
/// bracket that opens or closes a container. Whitespace, numbers, `:` and `,` are skipped.
const STRUCTURE: [bool; 256] = byte_set(b"\"{}[]");

const fn byte_set(bytes: &[u8]) -> [bool; 256] {
    let mut set = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        set[bytes[i] as usize] = true;
        i += 1;
    }
    set
}

/// The position of the first byte of `bytes` that is in `set`. Strings and the gaps between
/// them in records are a few to a few dozen bytes: a plain walk over a table beats `memchr`'s
/// set-up there (decode-only stage, 1M records: 0.30 s of CPU with `memchr2` for strings and a
/// `match` per byte outside them, 0.24 s with this; eight bytes at a time did 0.27 s).
fn find(set: &[bool; 256], bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| set[usize::from(b)])
}

/// Where the framing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level `{` or `[`.
    Start,
    /// In the object: a key or (if `first`) the closing `}`.
    KeyOrEnd { first: bool },
    /// Inside a key string.
    Key,
    /// After a key: the `:`.
    Colon,
    /// A value, or (in an array, if `first`) the closing `]`.
    ValueStart { first: bool },
    /// Inside an object, array or string value.
    Value,
    /// Inside a number, `true`, `false` or `null`.
    Scalar,
    /// After a value: `,` or the closing bracket.
    AfterValue,
    /// After the closing bracket: only whitespace.
    Done,
}

/// The top-level container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    /// `{...}`: each entry's key is its record's key.
    Object,
    /// `[...]`: records without keys.
    Array,
}

/// The `json` decoder.
#[derive(Debug)]
pub struct JsonDecoder {
    bom: Bom,
    limits: Limits,
    state: State,
    container: Container,
    /// Absolute offset of the first byte of the chunk being scanned.
    offset: u64,
    /// The next record's index.
    index: u64,
    /// Where the last item handed out ends (see [`Decoder::checkpoint`]).
    last_end: u64,
    /// The current record: where it starts, its raw key (quotes included) and decoded key.
    record_offset: u64,
    raw_key: Vec<u8>,
    key: Option<String>,
    /// Why the current record's key is unusable, once known.
    fault: Option<(ErrorCode, String)>,
    /// The current record passed the size cap / the nesting cap (known for sure only at its
    /// end, whatever the chunking).
    too_large: bool,
    too_deep: bool,
    /// The current value's bytes from earlier chunks (empty while it fits in one chunk).
    value: Vec<u8>,
    /// The current value's length so far, buffered or not.
    value_len: usize,
    /// Nesting inside the current value, and the kind of each level (bit set = object).
    depth: usize,
    kinds: u64,
    in_string: bool,
    escaped: bool,
}

impl JsonDecoder {
    /// A decoder with the given limits (nesting is checked up to 64 levels at most).
    pub fn new(limits: Limits) -> JsonDecoder {
        JsonDecoder {
            bom: Bom::default(),
            limits,
            state: State::Start,
            container: Container::Object,
            offset: 0,
            index: 0,
            last_end: 0,
            record_offset: 0,
            raw_key: Vec::new(),
            key: None,
            fault: None,
            too_large: false,
            too_deep: false,
            value: Vec::new(),
            value_len: 0,
            depth: 0,
            kinds: 0,
            in_string: false,
            escaped: false,
        }
    }

    /// A decoder that goes on after an item that ended at `offset`, a value of the top-level
    /// `container`; the next item is the `index`-th.
    pub fn resume(limits: Limits, container: Container, offset: u64, index: u64) -> JsonDecoder {
        JsonDecoder {
            bom: Bom::resolved(),
            state: State::AfterValue,
            container,
            offset,
            index,
            last_end: offset,
            ..JsonDecoder::new(limits)
        }
    }

    fn max_depth(&self) -> usize {
        self.limits.max_depth.min(64)
    }

    /// Scans one stretch of content bytes.
    fn scan(&mut self, chunk: &[u8], sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        let mut i = 0;
        // Where the current value started in this chunk, if it did.
        let mut value_start = matches!(self.state, State::Value | State::Scalar).then_some(0);
        while i < chunk.len() {
            let b = chunk[i];
            match self.state {
                State::Start => match b {
                    b'{' => {
                        self.container = Container::Object;
                        self.state = State::KeyOrEnd { first: true };
                    }
                    b'[' => {
                        self.container = Container::Array;
                        self.state = State::ValueStart { first: true };
                    }
                    b if b.is_ascii_whitespace() => {}
                    _ => return Err(self.syntax(i, "expected a top-level object or array", b)),
                },
                State::KeyOrEnd { first } => match b {
                    b'"' => {
                        self.record_offset = self.offset + i as u64;
                        self.raw_key.clear();
                        self.raw_key.push(b'"');
                        self.escaped = false;
                        self.state = State::Key;
                    }
                    b'}' if first => self.state = State::Done,
                    b'}' => {
                        return Err(self.syntax(i, "expected a key after `,` (trailing comma)", b))
                    }
                    b if b.is_ascii_whitespace() => {}
                    _ => return Err(self.syntax(i, "expected a key string or `}`", b)),
                },
                State::Key => {
                    let end = self.scan_key(&chunk[i..]);
                    i += end;
                    continue;
                }
                State::Colon => match b {
                    b':' => self.state = State::ValueStart { first: false },
                    b if b.is_ascii_whitespace() => {}
                    _ => return Err(self.syntax(i, "expected `:` after the key", b)),
                },
                State::ValueStart { first } => match b {
                    b if b.is_ascii_whitespace() => {}
                    b']' if first && self.container == Container::Array => self.state = State::Done,
                    b',' | b':' | b']' | b'}' => {
                        let what = if first {
                            "expected a value or `]`"
                        } else {
                            "expected a value"
                        };
                        return Err(self.syntax(i, what, b));
                    }
                    _ => {
                        if self.container == Container::Array {
                            self.record_offset = self.offset + i as u64;
                        }
                        value_start = Some(i);
                        self.begin_value(b);
                        if self.state == State::Value {
                            i += 1;
                            continue;
                        }
                    }
                },
                State::Value => {
                    let start = value_start.unwrap_or(0);
                    match self.scan_value(chunk, i)? {
                        Some(end) => {
                            let flow = self.end_value(chunk, start, end + 1, sink);
                            value_start = None;
                            i = end + 1;
                            if flow.is_break() {
                                return Ok(flow);
                            }
                            continue;
                        }
                        None => break,
                    }
                }
                State::Scalar => {
                    if matches!(b, b',' | b']' | b'}') || b.is_ascii_whitespace() {
                        let start = value_start.unwrap_or(0);
                        let flow = self.end_value(chunk, start, i, sink);
                        value_start = None;
                        if flow.is_break() {
                            return Ok(flow);
                        }
                        continue; // the delimiter is read again after the value
                    }
                }
                State::AfterValue => match (b, self.container) {
                    (b',', Container::Object) => self.state = State::KeyOrEnd { first: false },
                    (b',', Container::Array) => self.state = State::ValueStart { first: false },
                    (b'}', Container::Object) | (b']', Container::Array) => {
                        self.state = State::Done
                    }
                    (b, _) if b.is_ascii_whitespace() => {}
                    (b, Container::Object) => {
                        return Err(self.syntax(i, "expected `,` or `}` after a value", b))
                    }
                    (b, Container::Array) => {
                        return Err(self.syntax(i, "expected `,` or `]` after a value", b))
                    }
                },
                State::Done => {
                    if !b.is_ascii_whitespace() {
                        return Err(self.syntax(
                            i,
                            "expected nothing after the end of the document",
                            b,
                        ));
                    }
                }
            }
            i += 1;
        }
        // The chunk ends inside a value: keep its bytes (up to the cap).
        if let Some(start) = value_start {
            self.keep(&chunk[start..]);
        }
        self.offset += chunk.len() as u64;
        Ok(ControlFlow::Continue(()))
    }

    /// Reads key bytes up to and including the closing quote; returns how many were read.
    fn scan_key(&mut self, bytes: &[u8]) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            if self.escaped {
                self.escaped = false;
                i += 1;
                continue;
            }
            match find(&STRING_END, &bytes[i..]) {
                None => break,
                Some(at) if bytes[i + at] == b'\\' => {
                    self.escaped = true;
                    i += at + 1;
                }
                Some(at) => {
                    let end = i + at + 1;
                    self.push_key(&bytes[..end]);
                    self.decode_key();
                    self.state = State::Colon;
                    return end;
                }
            }
        }
        self.push_key(bytes);
        bytes.len()
    }

    fn push_key(&mut self, part: &[u8]) {
        if self.fault.is_some() {
            return;
        }
        if self.raw_key.len() + part.len() > self.limits.max_record_bytes {
            self.fault = Some((ErrorCode::RecordTooLarge, String::new()));
            self.raw_key = Vec::new();
        } else {
            self.raw_key.extend_from_slice(part);
        }
    }

    fn decode_key(&mut self) {
        if self.fault.is_some() {
            return;
        }
        let raw = &self.raw_key;
        let decoded = if raw.contains(&b'\\') {
            serde_json::from_slice::<String>(raw).map_err(|e| {
                (
                    ErrorCode::InvalidJson,
                    format!(
                        "the key is not a valid JSON string: {}",
                        crate::record::json_reason(&e, raw)
                    ),
                )
            })
        } else {
            std::str::from_utf8(&raw[1..raw.len() - 1])
                .map(str::to_owned)
                .map_err(|_| {
                    (
                        ErrorCode::InvalidUtf8,
                        "the key is not valid UTF-8".to_owned(),
                    )
                })
        };
        match decoded {
            Ok(key) => self.key = Some(key),
            Err(fault) => self.fault = Some(fault),
        }
    }

    /// Starts a value at its first byte `b`.
    fn begin_value(&mut self, b: u8) {
        self.value.clear();
        self.value_len = 0;
        self.in_string = false;
        self.escaped = false;
        self.depth = 0;
        match b {
            b'{' | b'[' => {
                self.open(b);
                self.state = State::Value;
            }
            b'"' => {
                self.in_string = true;
                self.state = State::Value;
            }
            _ => self.state = State::Scalar,
        }
    }

    fn open(&mut self, b: u8) {
        self.depth += 1;
        if self.depth <= 64 {
            let bit = 1u64 << (self.depth - 1);
            if b == b'{' {
                self.kinds |= bit;
            } else {
                self.kinds &= !bit;
            }
        }
        if self.depth > self.max_depth() {
            self.too_deep = true;
        }
    }

    /// Scans a value from `from`; returns the index of its last byte if it ends in `chunk`.
    fn scan_value(&mut self, chunk: &[u8], from: usize) -> Result<Option<usize>, SyntaxError> {
        let mut i = from;
        while i < chunk.len() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                match find(&STRING_END, &chunk[i..]) {
                    None => return Ok(None),
                    Some(at) if chunk[i + at] == b'\\' => {
                        self.escaped = true;
                        i += at + 1;
                    }
                    Some(at) => {
                        self.in_string = false;
                        i += at;
                        if self.depth == 0 {
                            return Ok(Some(i));
                        }
                        i += 1;
                    }
                }
                continue;
            }
            match find(&STRUCTURE, &chunk[i..]) {
                Some(at) => i += at,
                None => return Ok(None),
            }
            match chunk[i] {
                b'"' => self.in_string = true,
                b @ (b'{' | b'[') => self.open(b),
                b @ (b'}' | b']') => {
                    if self.depth <= 64 {
                        let is_object = self.kinds & (1u64 << (self.depth - 1)) != 0;
                        if is_object != (b == b'}') {
                            let want = if is_object { "`}`" } else { "`]`" };
                            return Err(self.syntax(
                                i,
                                &format!("mismatched bracket: expected {want}"),
                                b,
                            ));
                        }
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Ok(Some(i));
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Ok(None)
    }

    /// Keeps bytes of a value that goes on past this chunk, or drops them past the cap.
    fn keep(&mut self, part: &[u8]) {
        self.value_len += part.len();
        if self.value_len > self.limits.max_record_bytes {
            self.too_large = true;
            self.value = Vec::new();
        } else if self.fault.is_none() && !self.too_deep {
            self.value.extend_from_slice(part);
        }
    }

    /// The value ended at `chunk[end]` (exclusive): hands on the record or its fault.
    fn end_value(
        &mut self,
        chunk: &[u8],
        start: usize,
        end: usize,
        sink: &mut Sink<'_>,
    ) -> ControlFlow<()> {
        let part = &chunk[start..end];
        let index = self.index;
        self.index += 1;
        self.last_end = self.offset + end as u64;
        self.state = State::AfterValue;
        if self.value_len + part.len() > self.limits.max_record_bytes {
            self.too_large = true;
        }
        // One fault per record, chosen the same way whatever the chunking: the key's first.
        let fault = self.fault.take().or_else(|| {
            if self.too_large {
                Some((ErrorCode::RecordTooLarge, String::new()))
            } else if self.too_deep {
                let max = self.max_depth();
                Some((
                    ErrorCode::TooDeep,
                    format!("the record nests deeper than {max} levels"),
                ))
            } else {
                None
            }
        });
        self.too_large = false;
        self.too_deep = false;
        let flow = match fault {
            Some((code, message)) => sink(Item::Fault(self.fault_for(index, code, message))),
            None if self.value.is_empty() => sink(Item::Record(Record {
                index,
                offset: self.record_offset,
                end: self.last_end,
                key: self.key.as_deref(),
                body: Body::Json(part),
            })),
            None => {
                self.value.extend_from_slice(part);
                sink(Item::Record(Record {
                    index,
                    offset: self.record_offset,
                    end: self.last_end,
                    key: self.key.as_deref(),
                    body: Body::Json(&self.value),
                }))
            }
        };
        self.key = None;
        self.value.clear();
        self.value_len = 0;
        flow
    }

    /// The fault for the record that just ended (at `last_end`).
    fn fault_for(&self, index: u64, code: ErrorCode, message: String) -> RecordFault {
        let mut fault = match code {
            ErrorCode::RecordTooLarge => too_large(
                index,
                self.record_offset,
                self.last_end,
                self.limits.max_record_bytes,
            ),
            _ => RecordFault {
                index,
                offset: self.record_offset,
                end: self.last_end,
                key: None,
                code,
                message,
            },
        };
        fault.key = self.key.clone();
        fault
    }

    fn syntax(&self, i: usize, expected: &str, found: u8) -> SyntaxError {
        let found = if found.is_ascii_graphic() {
            format!("`{}`", found as char)
        } else {
            format!("byte 0x{found:02x}")
        };
        SyntaxError {
            offset: self.offset + i as u64,
            message: format!("{expected}, found {found}"),
        }
    }

    /// Whether a record has begun and not ended.
    fn in_record(&self) -> bool {
        match self.state {
            State::Key | State::Colon | State::Value | State::Scalar => true,
            State::ValueStart { .. } => self.container == Container::Object,
            _ => false,
        }
    }
}

impl Decoder for JsonDecoder {
    fn format(&self) -> Format {
        Format::Json
    }

    fn feed(&mut self, chunk: &[u8], sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        let (skip, held, bom) = self.bom.take(chunk);
        if !held.is_empty() && self.scan(held, sink)?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
        self.offset += bom as u64;
        self.scan(&chunk[skip..], sink)
    }

    fn finish(&mut self, sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        let held = self.bom.finish();
        if self.scan(held, sink)?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
        match self.state {
            State::Start | State::Done => return Ok(ControlFlow::Continue(())),
            _ => {}
        }
        if self.in_record() {
            let index = self.index;
            self.index += 1;
            self.last_end = self.offset;
            let fault = RecordFault {
                index,
                offset: self.record_offset,
                end: self.last_end,
                key: self.key.clone(),
                code: ErrorCode::IncompleteRecord,
                message: "the upload ended inside this record; it was not stored".into(),
            };
            if sink(Item::Fault(fault)).is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        let what = match self.container {
            Container::Object => "object",
            Container::Array => "array",
        };
        Err(SyntaxError {
            offset: self.offset,
            message: format!("the upload ended before the top-level {what} was closed"),
        })
    }

    fn checkpoint(&self) -> Checkpoint {
        let state = if self.index == 0 {
            ResumeState::Start
        } else {
            ResumeState::Json {
                container: self.container,
            }
        };
        Checkpoint {
            offset: self.last_end,
            index: self.index,
            state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{collect, describe, split_everywhere};
    use crate::decode::Checkpoint;

    fn decode(input: &[u8]) -> Vec<String> {
        collect(&mut JsonDecoder::new(Limits::default()), &[input])
    }

    #[test]
    fn an_object_of_records() {
        let input = br#" {"A": {"name":"x","c":[1,{"d":"}]"}]}, "B\"q" : 7 ,"C":"s\\" , "D":null}"#;
        assert_eq!(
            decode(input),
            vec![
                r#"record 0 @2..38 key=A json {"name":"x","c":[1,{"d":"}]"}]}"#,
                r#"record 1 @40..50 key=B"q json 7"#,
                r#"record 2 @52..61 key=C json "s\\""#,
                r#"record 3 @64..72 key=D json null"#,
            ]
        );
    }

    #[test]
    fn an_array_of_records() {
        let input = b"\xEF\xBB\xBF[ {\"a\":[]}, 1.5e3,\"x\" ,[[]] ,true]\r\n";
        assert_eq!(
            decode(input),
            vec![
                "record 0 @5..13 json {\"a\":[]}",
                "record 1 @15..20 json 1.5e3",
                "record 2 @21..24 json \"x\"",
                "record 3 @26..30 json [[]]",
                "record 4 @32..36 json true",
            ]
        );
    }

    #[test]
    fn empty_documents() {
        assert_eq!(decode(b""), Vec::<String>::new());
        assert_eq!(decode(b"  \n"), Vec::<String>::new());
        assert_eq!(decode(b"{}"), Vec::<String>::new());
        assert_eq!(decode(b"[ ]"), Vec::<String>::new());
    }

    #[test]
    fn broken_framing_is_a_syntax_error_with_its_offset() {
        let cases: [(&[u8], &str); 9] = [
            (b"42", "syntax @0"),
            (b"{\"a\" 1}", "syntax @5"),
            (b"{\"a\":1 \"b\":2}", "syntax @7"),
            (b"{\"a\":[1}", "syntax @7"),
            (b"{\"a\":1,}", "syntax @7"),
            (b"[1,]", "syntax @3"),
            (b"{\"a\":1} x", "syntax @8"),
            (b"{1:2}", "syntax @1"),
            (b"[1}", "syntax @2"),
        ];
        for (input, want) in cases {
            let items = decode(input);
            assert_eq!(
                items.last().map(String::as_str),
                Some(want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn records_before_a_syntax_error_are_kept() {
        assert_eq!(
            decode(b"[1,2 3]"),
            vec![
                "record 0 @1..2 json 1",
                "record 1 @3..4 json 2",
                "syntax @5"
            ]
        );
    }

    #[test]
    fn truncated_documents() {
        assert_eq!(
            decode(b"{\"A\":{\"n\":1},\"B\":{\"n\":"),
            vec![
                "record 0 @1..12 key=A json {\"n\":1}",
                "fault 1 @13..22 key=B incomplete_record",
                "syntax @22"
            ]
        );
        assert_eq!(
            decode(b"[1,2"),
            vec![
                "record 0 @1..2 json 1",
                "fault 1 @3..4 incomplete_record",
                "syntax @4"
            ]
        );
        assert_eq!(
            decode(b"{\"A\":1,"),
            vec!["record 0 @1..6 key=A json 1", "syntax @7"]
        );
        assert_eq!(
            decode(b"{\"A"),
            vec!["fault 0 @1..3 incomplete_record", "syntax @3"]
        );
    }

    #[test]
    fn limits_skip_one_record_and_go_on() {
        let limits = Limits {
            max_record_bytes: 16,
            max_depth: 3,
        };
        let input = br#"{"a":[[[1]]],"b":[[[[1]]]],"c":"0123456789abcdefgh","d":2}"#;
        let items = collect(&mut JsonDecoder::new(limits), &[input]);
        assert_eq!(
            items,
            vec![
                "record 0 @1..12 key=a json [[[1]]]",
                "fault 1 @13..26 key=b too_deep",
                "fault 2 @27..51 key=c record_too_large",
                "record 3 @52..57 key=d json 2",
            ]
        );
    }

    #[test]
    fn bad_keys_are_record_faults() {
        let items = decode(b"{\"\\x\":1,\"\xff\":2,\"ok\":3}");
        assert_eq!(
            items,
            vec![
                "fault 0 @1..7 invalid_json",
                "fault 1 @8..13 invalid_utf8",
                "record 2 @14..20 key=ok json 3"
            ]
        );
    }

    #[test]
    fn the_real_ports_file() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/ports.json");
        let input = std::fs::read(path).unwrap();
        let mut decoder = JsonDecoder::new(Limits::default());
        let mut keys = Vec::new();
        let mut first_name = None;
        let mut sink = |item: Item<'_>| {
            let Item::Record(record) = item else {
                panic!("{item:?}")
            };
            if first_name.is_none() {
                let Body::Json(body) = record.body else {
                    panic!()
                };
                let v: serde_json::Value = serde_json::from_slice(body).unwrap();
                first_name = Some(v["name"].as_str().unwrap().to_owned());
            }
            keys.push(record.key.unwrap().to_owned());
            ControlFlow::Continue(())
        };
        for chunk in input.chunks(4093) {
            assert!(decoder.feed(chunk, &mut sink).unwrap().is_continue());
        }
        assert!(decoder.finish(&mut sink).unwrap().is_continue());
        assert_eq!(keys.len(), 1634);
        assert_eq!(keys[0], "AEAJM");
        assert_eq!(first_name.as_deref(), Some("Ajman"));
    }

    #[test]
    fn resuming_the_real_ports_file_midway() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/ports.json");
        let input = std::fs::read(path).unwrap();
        let whole = collect(&mut JsonDecoder::new(Limits::default()), &[&input]);
        assert_eq!(whole.len(), 1634);
        // Stop inside the body, with part of a record held after the last one handed out.
        let chunks: Vec<&[u8]> = input.chunks(4093).collect();
        let mut first = JsonDecoder::new(Limits::default());
        let mut items = Vec::new();
        for chunk in &chunks[..chunks.len() / 2] {
            let flow = first.feed(chunk, &mut |item| {
                items.push(describe(&item));
                ControlFlow::Continue(())
            });
            assert_eq!(flow, Ok(ControlFlow::Continue(())));
        }
        let checkpoint = first.checkpoint();
        assert_eq!(checkpoint.index, items.len() as u64);
        assert!(checkpoint.index > 100, "{checkpoint:?}");
        assert_eq!(
            checkpoint.state,
            ResumeState::Json {
                container: Container::Object
            }
        );
        // The checkpoint is just after a value: the entry's `,` comes next.
        let at = usize::try_from(checkpoint.offset).unwrap();
        assert!(at < input.len() / 2 && at > input.len() / 4, "{at}");
        assert_eq!(input[..at].last(), Some(&b'}'));
        assert_eq!(input[at..].trim_ascii_start().first(), Some(&b','));
        // Resumed from its stored form, fed the rest in other chunks.
        let stored = serde_json::to_string(&checkpoint).unwrap();
        let checkpoint: Checkpoint = serde_json::from_str(&stored).unwrap();
        let mut resumed = super::super::resume(Format::Json, Limits::default(), None, &checkpoint)
            .expect("a json checkpoint");
        let rest: Vec<&[u8]> = input[at..].chunks(1000).collect();
        items.extend(collect(resumed.as_mut(), &rest));
        assert_eq!(items, whole);
    }

    #[test]
    fn every_split_gives_the_same_items() {
        let limits = Limits {
            max_record_bytes: 24,
            max_depth: 3,
        };
        let input = "\u{feff}{\"k\\\"1\": {\"a\":\"}\\\\\",\"b\":[1,2]}, \"k2\":-1.5e3 ,\"k3\":[[[[0]]]],\"k4\":\"0123456789012345678901234567\", \"k5\":true}";
        split_everywhere(|| Box::new(JsonDecoder::new(limits)), input.as_bytes());
        split_everywhere(
            || Box::new(JsonDecoder::new(limits)),
            b"[1,{\"a\":[]},\"x\", null ,[2 ]",
        );
    }
}
