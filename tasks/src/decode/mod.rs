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
//! - [`sniff`]: guesses the format from the first bytes when the client did not name one.

pub mod json;
pub mod lines;
pub mod ndjson;
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
    match format {
        Format::Json => Box::new(json::JsonDecoder::new(limits)),
        Format::Ndjson => Box::new(ndjson::NdjsonDecoder::new(limits)),
        Format::Lines => Box::new(lines::LinesDecoder::new(limits)),
    }
}
