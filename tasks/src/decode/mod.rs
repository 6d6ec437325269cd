//! Incremental decoders: they cut an upload's bytes into records as the bytes arrive.
//!
//! A decoder is push-based and transport-free: the pipeline feeds it chunks of any size, in
//! order, and it calls a sink once per record (or per bad record) with a borrowed [`Record`].
//! Memory is bounded by [`Limits::max_record_bytes`]: a decoder buffers at most one partial
//! record, and skips (without buffering) the rest of a record that passes the cap.
//!
//! Any split of the same bytes into chunks yields the same items (see the property tests).
//!
//! Each item says where it ends ([`Record::end`]), inside the chunk being fed when it is handed
//! out. A decoder's [`Decoder::checkpoint`] is where it stands just after the last item it
//! handed out; [`resume`] builds a decoder that goes on from there, so that an interrupted
//! upload can resume at a record boundary.
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

    /// Where this decoder stands just after the last item it handed out (not where it reads
    /// now: it may hold part of a record after that point). [`resume`] starts a decoder there.
    fn checkpoint(&self) -> Checkpoint;
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

/// Where a decoder stands just after the last item it handed out: enough to start a new decoder
/// there ([`resume`]) and feed it the rest of the body from [`Checkpoint::offset`] on.
///
/// Every item's [`Record::end`] is such a point: a line's end is after its `\n`, a CSV row's
/// after its terminator byte (`\n`, or `\r` for `\r\n` and a lone `\r`: a `\n` after it is a
/// blank line to the next row), a JSON entry's after its value's last byte.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// Byte offset in the body just after the last item (0 before any).
    pub offset: u64,
    /// Items handed out so far: the next item's index.
    pub index: u64,
    /// What the format needs to go on from there.
    pub state: ResumeState,
}

/// What a format needs, besides the offset and the index, to go on after an item. Small and
/// without buffered bytes: it is stored with every commit. A byte-order mark is settled before
/// any item, so a resumed decoder never looks for one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum ResumeState {
    /// Nothing handed out yet (offset 0): a fresh decoder of any format. A checkpoint before
    /// the first item is always this, whatever the format.
    Start,
    /// `json`: after a value of the top-level container, before its `,` or closing bracket.
    Json {
        /// The top-level container: an object (entries with keys) or an array.
        container: json::Container,
    },
    /// `ndjson`: at the start of a line; nothing else is needed.
    Ndjson,
    /// `lines`: at the start of a line; nothing else is needed.
    Lines,
    /// `csv`: at the start of a row (blank lines, and a `\n` after a row's `\r`, are skipped
    /// there anyway), under the header read at the start of the body.
    Csv {
        /// The header's column names.
        header: Vec<String>,
    },
    /// `raw`: the offset is all.
    Raw,
}

impl ResumeState {
    /// The format this state belongs to, if any ([`ResumeState::Start`] fits every format).
    pub fn format(&self) -> Option<Format> {
        match self {
            ResumeState::Start => None,
            ResumeState::Json { .. } => Some(Format::Json),
            ResumeState::Ndjson => Some(Format::Ndjson),
            ResumeState::Lines => Some(Format::Lines),
            ResumeState::Csv { .. } => Some(Format::Csv),
            ResumeState::Raw => Some(Format::Raw),
        }
    }

    /// The state's name, as serde writes it.
    fn name(&self) -> &'static str {
        match self {
            ResumeState::Start => "start",
            ResumeState::Json { .. } => "json",
            ResumeState::Ndjson => "ndjson",
            ResumeState::Lines => "lines",
            ResumeState::Csv { .. } => "csv",
            ResumeState::Raw => "raw",
        }
    }
}

/// Why a decoder cannot be resumed from a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The checkpoint was taken by a decoder of another format than the one asked for.
    #[error("the checkpoint is of a {found} upload; it cannot resume a {asked} upload")]
    OtherFormat {
        /// The checkpoint's format.
        found: Format,
        /// The format asked for.
        asked: Format,
    },
    /// The checkpoint contradicts itself: `start` away from the body's first byte, or a
    /// format's state with no item before it.
    #[error("the checkpoint is inconsistent: {state} at byte {offset}, after {index} items")]
    Inconsistent {
        /// The state's name.
        state: &'static str,
        /// The checkpoint's offset.
        offset: u64,
        /// The checkpoint's index.
        index: u64,
    },
    /// The checkpoint's CSV header is one the decoder would have refused (a column with no
    /// name or named twice, or one the task does not read).
    #[error("the checkpoint's CSV header cannot be used: {0}")]
    CsvHeader(String),
}

/// A decoder for `format` that goes on from `checkpoint`: fed the body's bytes from
/// `checkpoint.offset` on, then finished, it hands out exactly the items (indexes, offsets,
/// ends, keys, bodies, faults, syntax errors) that the decoder which took the checkpoint would
/// have handed out after it. `limits` and `csv_columns` must be the ones that decoder had.
pub fn resume(
    format: Format,
    limits: Limits,
    csv_columns: Option<&'static [&'static str]>,
    checkpoint: &Checkpoint,
) -> Result<Box<dyn Decoder>, ResumeError> {
    let Checkpoint {
        offset,
        index,
        state,
    } = checkpoint;
    let (offset, index) = (*offset, *index);
    if let Some(found) = state.format() {
        if found != format {
            return Err(ResumeError::OtherFormat {
                found,
                asked: format,
            });
        }
    }
    // Before the first item there is only `Start`, and after one never.
    let consistent = match state {
        ResumeState::Start => offset == 0 && index == 0,
        _ => index > 0,
    };
    if !consistent {
        return Err(ResumeError::Inconsistent {
            state: state.name(),
            offset,
            index,
        });
    }
    Ok(match state {
        ResumeState::Start => decoder_reading(format, limits, csv_columns),
        ResumeState::Json { container } => {
            Box::new(json::JsonDecoder::resume(limits, *container, offset, index))
        }
        ResumeState::Ndjson => Box::new(ndjson::NdjsonDecoder::resume(limits, offset, index)),
        ResumeState::Lines => Box::new(lines::LinesDecoder::resume(limits, offset, index)),
        ResumeState::Csv { header } => Box::new(
            csv::CsvDecoder::resume(limits, csv_columns, header.clone(), offset, index)
                .map_err(ResumeError::CsvHeader)?,
        ),
        ResumeState::Raw => Box::new(raw::RawDecoder::resume(offset, index)),
    })
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

    /// One item as a comparable line: its kind, index, span, key and body (or fault code).
    pub(crate) fn describe(item: &Item<'_>) -> String {
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
                format!("record {} @{}..{} {key}{body}", r.index, r.offset, r.end)
            }
            Item::Fault(f) => {
                let key = f
                    .key
                    .as_ref()
                    .map(|k| format!("key={k} "))
                    .unwrap_or_default();
                format!("fault {} @{}..{} {key}{}", f.index, f.offset, f.end, f.code)
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

    /// Where an item starts and ends in the body.
    fn span(item: &Item<'_>) -> (u64, u64) {
        match item {
            Item::Record(r) => (r.offset, r.end),
            Item::Fault(f) => (f.offset, f.end),
            Item::Bytes { offset, bytes } => (*offset, offset + bytes.len() as u64),
        }
    }

    /// A case for the resume property: an input, where to cut it, where to cut what follows
    /// the checkpoint, and after how many chunks to take the checkpoint.
    type ResumeCase = (Vec<u8>, Vec<usize>, Vec<usize>, prop::sample::Index);

    fn resume_case(input: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = ResumeCase> {
        input.prop_flat_map(|input| {
            let len = input.len();
            (
                Just(input),
                points(len),
                points(len),
                any::<prop::sample::Index>(),
            )
        })
    }

    /// Checks that a decoder stopped after any chunk, checkpointed (through serde, as it will be
    /// stored), resumed and fed the rest of the body cut anywhere, hands out exactly the items
    /// that decoding the whole body at once does, the final syntax error included.
    fn resume_anywhere_is_the_same(
        format: Format,
    ) -> impl Fn(ResumeCase) -> Result<(), TestCaseError> {
        move |(input, points, later, stop)| {
            let whole = collect(decoder(format, SMALL).as_mut(), &[&input]);
            let chunks = cut(&input, &points);
            let mut first = decoder(format, SMALL);
            let (mut items, mut ends) = (Vec::new(), Vec::new());
            {
                let mut sink = |item: Item<'_>| {
                    items.push(describe(&item));
                    ends.push(span(&item).1);
                    ControlFlow::Continue(())
                };
                for chunk in &chunks[..stop.index(chunks.len() + 1)] {
                    // After a syntax error the checkpoint stays before it: the resumed
                    // decoder must meet the same error.
                    if first.feed(chunk, &mut sink).is_err() {
                        break;
                    }
                }
            }
            let checkpoint = first.checkpoint();
            prop_assert_eq!(checkpoint.index, items.len() as u64);
            prop_assert_eq!(checkpoint.offset, ends.last().copied().unwrap_or(0));
            prop_assert_eq!(
                checkpoint.state == ResumeState::Start,
                checkpoint.index == 0
            );
            let stored = serde_json::to_string(&checkpoint).map_err(fail)?;
            let checkpoint: Checkpoint = serde_json::from_str(&stored).map_err(fail)?;
            let mut resumed = resume(format, SMALL, None, &checkpoint).map_err(fail)?;
            let at = usize::try_from(checkpoint.offset).map_err(fail)?;
            let later: Vec<usize> = later.iter().filter(|&&p| p >= at).map(|p| p - at).collect();
            items.extend(collect(resumed.as_mut(), &cut(&input[at..], &later)));
            prop_assert_eq!(items, whole, "checkpoint {}", stored);
            Ok(())
        }
    }

    fn fail(e: impl std::fmt::Display) -> TestCaseError {
        TestCaseError::fail(e.to_string())
    }

    /// Checks rule 1 of [`Record::end`] that the pipeline relies on: an item handed out while
    /// a chunk is fed ends inside that chunk or at its start, never before it, and never
    /// before its own offset; an item handed out by `finish` ends at most at the body's end.
    fn ends_lie_in_their_chunk(
        format: Format,
    ) -> impl Fn((Vec<u8>, Vec<usize>)) -> Result<(), TestCaseError> {
        move |(input, points)| {
            let mut decoder = decoder(format, SMALL);
            let mut spans = Vec::new();
            let mut start = 0u64;
            for chunk in cut(&input, &points) {
                let stop = start + chunk.len() as u64;
                let result = decoder.feed(chunk, &mut |item| {
                    spans.push(span(&item));
                    ControlFlow::Continue(())
                });
                for (offset, end) in spans.drain(..) {
                    prop_assert!(offset <= end, "ends at {end}, before its offset {offset}");
                    prop_assert!(
                        start <= end && end <= stop,
                        "ends at {end}, outside the chunk {start}..{stop}"
                    );
                }
                if result.is_err() {
                    return Ok(());
                }
                start = stop;
            }
            let _ = decoder.finish(&mut |item| {
                spans.push(span(&item));
                ControlFlow::Continue(())
            });
            for (offset, end) in spans {
                prop_assert!(offset <= end && end <= start, "{offset}..{end} of {start}");
            }
            Ok(())
        }
    }

    /// JSON pieces inside an object entry, then another entry: records of a top-level object
    /// around whatever the pieces are.
    fn wrapped(pieces: Vec<u8>) -> Vec<u8> {
        [b"{\"a\":".as_slice(), &pieces, b",\"z\":1}"].concat()
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
        fn json_wrapped_any_split(case in pieces().prop_map(wrapped).prop_flat_map(|input| {
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

        #[test]
        fn json_resume_anywhere(case in resume_case(pieces())) {
            resume_anywhere_is_the_same(Format::Json)(case)?;
        }

        #[test]
        fn json_wrapped_resume_anywhere(case in resume_case(pieces().prop_map(wrapped))) {
            resume_anywhere_is_the_same(Format::Json)(case)?;
        }

        #[test]
        fn ndjson_resume_anywhere(case in resume_case(pieces())) {
            resume_anywhere_is_the_same(Format::Ndjson)(case)?;
        }

        #[test]
        fn lines_resume_anywhere(case in resume_case(pieces())) {
            resume_anywhere_is_the_same(Format::Lines)(case)?;
        }

        #[test]
        fn csv_resume_anywhere(case in resume_case(csv_pieces())) {
            resume_anywhere_is_the_same(Format::Csv)(case)?;
        }

        #[test]
        fn json_ends_lie_in_their_chunk(case in input_and_points()) {
            ends_lie_in_their_chunk(Format::Json)(case)?;
        }

        #[test]
        fn json_wrapped_ends_lie_in_their_chunk(case in pieces().prop_map(wrapped).prop_flat_map(|input| {
            let len = input.len();
            (Just(input), points(len))
        })) {
            ends_lie_in_their_chunk(Format::Json)(case)?;
        }

        #[test]
        fn ndjson_ends_lie_in_their_chunk(case in input_and_points()) {
            ends_lie_in_their_chunk(Format::Ndjson)(case)?;
        }

        #[test]
        fn lines_ends_lie_in_their_chunk(case in input_and_points()) {
            ends_lie_in_their_chunk(Format::Lines)(case)?;
        }

        #[test]
        fn csv_ends_lie_in_their_chunk(case in csv_pieces().prop_flat_map(|input| {
            let len = input.len();
            (Just(input), points(len))
        })) {
            ends_lie_in_their_chunk(Format::Csv)(case)?;
        }

        #[test]
        fn raw_ends_lie_in_their_chunk(case in input_and_points()) {
            ends_lie_in_their_chunk(Format::Raw)(case)?;
        }
    }

    #[test]
    fn resume_refuses_a_checkpoint_of_another_format() {
        let mut ndjson = decoder(Format::Ndjson, Limits::default());
        let flow = ndjson.feed(b"1\n2\n", &mut |_| ControlFlow::Continue(()));
        assert_eq!(flow, Ok(ControlFlow::Continue(())));
        let checkpoint = ndjson.checkpoint();
        assert_eq!(checkpoint.state, ResumeState::Ndjson);
        let err = resume(Format::Json, Limits::default(), None, &checkpoint)
            .err()
            .expect("an ndjson checkpoint does not resume json");
        assert_eq!(
            err,
            ResumeError::OtherFormat {
                found: Format::Ndjson,
                asked: Format::Json
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("ndjson") && message.contains("json upload"),
            "{message}"
        );
        // `Start` fits every format.
        let start = Checkpoint {
            offset: 0,
            index: 0,
            state: ResumeState::Start,
        };
        for format in Format::ALL {
            let resumed = resume(format, Limits::default(), None, &start).expect("a fresh decoder");
            assert_eq!(resumed.format(), format);
        }
    }

    #[test]
    fn resume_refuses_an_inconsistent_checkpoint() {
        for (offset, index, state) in [
            (5, 1, ResumeState::Start),
            (0, 1, ResumeState::Start),
            (5, 0, ResumeState::Lines),
        ] {
            let checkpoint = Checkpoint {
                offset,
                index,
                state,
            };
            let err = resume(Format::Lines, Limits::default(), None, &checkpoint).err();
            assert!(
                matches!(err, Some(ResumeError::Inconsistent { .. })),
                "{checkpoint:?}: {err:?}"
            );
        }
    }

    #[test]
    fn a_checkpoint_survives_serde() {
        let checkpoints = [
            Checkpoint {
                offset: 0,
                index: 0,
                state: ResumeState::Start,
            },
            Checkpoint {
                offset: 120,
                index: 3,
                state: ResumeState::Json {
                    container: json::Container::Object,
                },
            },
            Checkpoint {
                offset: 7,
                index: 1,
                state: ResumeState::Csv {
                    header: vec!["name".into(), "lat".into()],
                },
            },
            Checkpoint {
                offset: 9,
                index: 2,
                state: ResumeState::Lines,
            },
        ];
        for checkpoint in checkpoints {
            let stored = serde_json::to_string(&checkpoint).expect("serializable");
            let back: Checkpoint = serde_json::from_str(&stored).expect("readable");
            assert_eq!(back, checkpoint, "{stored}");
        }
        let stored = serde_json::to_value(Checkpoint {
            offset: 120,
            index: 3,
            state: ResumeState::Json {
                container: json::Container::Array,
            },
        })
        .expect("serializable");
        assert_eq!(
            stored,
            serde_json::json!({
                "offset": 120,
                "index": 3,
                "state": {"format": "json", "container": "array"}
            })
        );
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
