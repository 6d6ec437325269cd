//! Incremental decoders: they cut an upload's bytes into records as the bytes arrive.
//!
//! A decoder is push-based and transport-free: the pipeline feeds it chunks of any size, in
//! order, and it calls a sink once per record (or per bad record) with a borrowed [`Record`].
//! Memory is bounded by [`Limits::max_record_bytes`]: a decoder buffers at most one partial
//! record, and skips (without buffering) the rest of a record that passes the cap.
//!
//! Any split of the same bytes into chunks yields the same items (see the property tests).
//!
//! # Layout
//! - [`json`]: a top-level object of records (key = record id) or a top-level array of records.
//! - [`ndjson`]: one JSON value per line.
//! - [`lines`]: one text value per line.
//! - [`csv`]: comma-separated values under a header row.
//! - [`raw`]: the body as it is, not cut into records (for a task that stores files).
//! - [`sniff`]: guesses the format from the first bytes when the client did not name one.

mod bom;
pub mod csv;
pub mod json;
pub mod lines;
mod lines_split;
pub mod ndjson;
pub mod raw;
pub mod sniff;

use crate::record::{Record, RecordFault};
use edge_proto::Format;
use std::ops::ControlFlow;

/// What a decoder hands to its sink.
#[derive(Debug)]
pub enum Item<'a> {
    /// A well-framed record.
    Record(Record<'a>),
    /// A record the decoder could not frame or read (too large, too deep, invalid UTF-8,
    /// a syntax error inside one line, or cut off by the end of the upload).
    Fault(RecordFault),
    /// The next bytes of a body that is not cut into records ([`Format::Raw`]), starting at
    /// `offset` of the body.
    Bytes {
        /// Where these bytes start in the body.
        offset: u64,
        /// The bytes, as they arrived.
        bytes: &'a [u8],
    },
}

/// The sink a decoder pushes items into. `ControlFlow::Break` stops decoding: the decoder
/// returns at once and must not be fed again.
pub type Sink<'s> = dyn FnMut(Item<'_>) -> ControlFlow<()> + 's;

/// Size limits a decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest record (or line), in bytes, a decoder will buffer.
    pub max_record_bytes: usize,
    /// The deepest nesting of arrays and objects inside one record.
    pub max_depth: usize,
}

impl Limits {
    /// The default record cap: 1 MiB.
    pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
    /// The default nesting cap: 64.
    pub const DEFAULT_MAX_DEPTH: usize = 64;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: Limits::DEFAULT_MAX_RECORD_BYTES,
            max_depth: Limits::DEFAULT_MAX_DEPTH,
        }
    }
}

/// The document's framing is broken and nothing after `offset` can be read: the job fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error at byte {offset}: {message}")]
pub struct SyntaxError {
    /// Byte offset of the offending byte in the upload body.
    pub offset: u64,
    /// What was expected and what was found.
    pub message: String,
}

/// A push-based, incremental decoder for one upload.
pub trait Decoder: Send {
    /// The format this decoder reads.
    fn format(&self) -> Format;

    /// Feeds the next chunk of the upload body. Calls `sink` for every record that the bytes
    /// so far complete. Returns `Break` if the sink asked to stop.
    fn feed(&mut self, chunk: &[u8], sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError>;

    /// Ends the upload: flushes a last record that needs no terminator (e.g. a final line
    /// without `\n`), reports a record cut off by the end as
    /// [`edge_proto::ErrorCode::IncompleteRecord`], and checks that the document is complete.
    fn finish(&mut self, sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError>;
}

/// A decoder for `format` with the given limits.
pub fn decoder(format: Format, limits: Limits) -> Box<dyn Decoder> {
    decoder_reading(format, limits, None)
}

/// A decoder for `format` with the given limits, for a task that reads only `csv_columns`
/// from a CSV upload (see [`crate::Plugin::csv_columns`]).
pub fn decoder_reading(
    format: Format,
    limits: Limits,
    csv_columns: Option<&'static [&'static str]>,
) -> Box<dyn Decoder> {
    match format {
        Format::Json => Box::new(json::JsonDecoder::new(limits)),
        Format::Ndjson => Box::new(ndjson::NdjsonDecoder::new(limits)),
        Format::Lines => Box::new(lines::LinesDecoder::new(limits)),
        Format::Csv => Box::new(csv::CsvDecoder::new(limits).reading(csv_columns)),
        Format::Raw => Box::new(raw::RawDecoder::new()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Helpers for the decoders' tests: items as comparable strings, and the check that any
    //! split of an input gives the same items.

    use super::*;
    use crate::record::Body;
    use proptest::prelude::*;

    /// Feeds `chunks` then finishes; returns every item (and a final syntax error) as a line.
    pub(crate) fn collect(decoder: &mut dyn Decoder, chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut sink = |item: Item<'_>| {
            out.push(describe(&item));
            ControlFlow::Continue(())
        };
        let mut result = Ok(ControlFlow::Continue(()));
        for chunk in chunks {
            result = decoder.feed(chunk, &mut sink);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = decoder.finish(&mut sink);
        }
        if let Err(e) = result {
            out.push(format!("syntax @{}", e.offset));
        }
        out
    }

    fn describe(item: &Item<'_>) -> String {
        match item {
            Item::Record(r) => {
                let key = r.key.map(|k| format!("key={k} ")).unwrap_or_default();
                let body = match r.body {
                    Body::Json(b) => format!("json {}", String::from_utf8_lossy(b)),
                    Body::Text(t) => format!("text {t}"),
                    Body::Csv(row) => {
                        let fields: Vec<String> =
                            row.fields().map(|(c, v)| format!("{c}={v}")).collect();
                        format!("csv {}", fields.join("|"))
                    }
                };
                format!("record {} @{} {key}{body}", r.index, r.offset)
            }
            Item::Fault(f) => {
                let key = f
                    .key
                    .as_ref()
                    .map(|k| format!("key={k} "))
                    .unwrap_or_default();
                format!("fault {} @{} {key}{}", f.index, f.offset, f.code)
            }
            Item::Bytes { offset, bytes } => format!("bytes @{offset} {}", bytes.len()),
        }
    }

    /// Checks that every two-chunk split and the one-byte split give the same items as the
    /// whole input.
    pub(crate) fn split_everywhere(make: impl Fn() -> Box<dyn Decoder>, input: &[u8]) {
        let whole = collect(make().as_mut(), &[input]);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(collect(make().as_mut(), &[a, b]), whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            collect(make().as_mut(), &bytes),
            whole,
            "one byte at a time"
        );
    }

    /// Cuts `input` at the given (sorted, deduplicated) points.
    fn cut<'a>(input: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut last = 0;
        for &p in points {
            chunks.push(&input[last..p]);
            last = p;
        }
        chunks.push(&input[last..]);
        chunks
    }

    /// Inputs made of JSON-ish pieces, valid and not, so that splits land everywhere that
    /// matters: inside strings, escapes, keys, numbers, line ends and a BOM.
    fn pieces() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"{"[..]),
            Just(&b"}"[..]),
            Just(&b"["[..]),
            Just(&b"]"[..]),
            Just(&b","[..]),
            Just(&b":"[..]),
            Just(&b"\"key\""[..]),
            Just(&b"\"a\\\"b\""[..]),
            Just(&b"\"}]\""[..]),
            Just(&b"12.5"[..]),
            Just(&b"-3"[..]),
            Just(&b"true"[..]),
            Just(&b" "[..]),
            Just(&b"\n"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\xEF\xBB\xBF"[..]),
            Just(&b"\xff"[..]),
            Just(&b"x"[..]),
            Just(&b"{\"k\":[1,{\"a\":null}]}"[..]),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|ps| ps.concat())
    }

    fn points(len: usize) -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::btree_set(0..=len, 0..8).prop_map(|s| s.into_iter().collect())
    }

    fn any_split_is_the_same(
        make: fn() -> Box<dyn Decoder>,
    ) -> impl Fn((Vec<u8>, Vec<usize>)) -> Result<(), TestCaseError> {
        move |(input, points)| {
            let whole = collect(make().as_mut(), &[&input]);
            let split = collect(make().as_mut(), &cut(&input, &points));
            prop_assert_eq!(split, whole);
            Ok(())
        }
    }

    fn input_and_points() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
        pieces().prop_flat_map(|input| {
            let len = input.len();
            (Just(input), points(len))
        })
    }

    const SMALL: Limits = Limits {
        max_record_bytes: 24,
        max_depth: 3,
    };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn json_any_split(case in input_and_points()) {
            any_split_is_the_same(|| Box::new(json::JsonDecoder::new(SMALL)))(case)?;
        }

        #[test]
        fn json_wrapped_any_split(case in pieces().prop_flat_map(|p| {
            let input = [b"{\"a\":".as_slice(), &p, b",\"z\":1}"].concat();
            let len = input.len();
            (Just(input), points(len))
        })) {
            any_split_is_the_same(|| Box::new(json::JsonDecoder::new(SMALL)))(case)?;
        }

        #[test]
        fn ndjson_any_split(case in input_and_points()) {
            any_split_is_the_same(|| Box::new(ndjson::NdjsonDecoder::new(SMALL)))(case)?;
        }

        #[test]
        fn lines_any_split(case in input_and_points()) {
            any_split_is_the_same(|| Box::new(lines::LinesDecoder::new(SMALL)))(case)?;
        }

        #[test]
        fn csv_any_split(case in csv_pieces().prop_flat_map(|input| {
            let len = input.len();
            (Just(input), points(len))
        })) {
            any_split_is_the_same(|| Box::new(csv::CsvDecoder::new(SMALL)))(case)?;
        }
    }

    /// CSV-ish pieces: fields, quotes (escaped and not), commas, every line end, a BOM,
    /// invalid UTF-8 and long fields.
    fn csv_pieces() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"a"[..]),
            Just(&b"name"[..]),
            Just(&b","[..]),
            Just(&b"\""[..]),
            Just(&b"\"\""[..]),
            Just(&b"\"x,y\""[..]),
            Just(&b"\n"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\r"[..]),
            Just(&b" "[..]),
            Just(&b"\xEF\xBB\xBF"[..]),
            Just(&b"\xff"[..]),
            Just(&b"0123456789012345678901234567"[..]),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|ps| ps.concat())
    }
}
