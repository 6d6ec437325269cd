//! The check every decoder fuzz target runs (see `fuzz_targets/` and `README.md`).
//!
//! The first input byte chooses small limits and a split point; the rest is the upload body.
//! The body is decoded whole, in two chunks, and (when short) one byte at a time, and every
//! run must hand on the same items: the same records (index, offset, end, key, body) and the
//! same faults (index, offset, end, key, code, message), then the same final syntax error, if
//! any. On top of that every run must keep the decoders' documented promises:
//! - no record is larger than `max_record_bytes`;
//! - items are numbered 0, 1, 2, ... in order, with offsets that only grow;
//! - an item ends at or after its offset, and at most at the body's end;
//! - a record's offset points at its first byte in the body: its body starts there (lines,
//!   ndjson, elements of a JSON array) or its key's opening quote does (entries of a JSON
//!   object);
//! - a `lines` record is valid UTF-8 (it is a `&str`) without surrounding whitespace;
//! - a `csv` record has one value per column of the header.

use edge_proto::Format;
use edge_tasks::decode::{decoder, Item, Limits, SyntaxError};
use edge_tasks::record::{Body, RecordFault};
use std::ops::ControlFlow;

/// Record caps the first byte's low nibble picks from: around the powers of two, and small
/// enough that the fuzzer reaches them.
const RECORD_CAPS: [usize; 16] = [
    64, 65, 100, 127, 128, 129, 200, 255, 256, 257, 512, 1000, 1024, 2048, 4095, 4096,
];

/// Nesting caps the first byte's high nibble picks from, around the json decoder's
/// 64-level bracket stack.
const DEPTH_CAPS: [usize; 16] = [1, 2, 3, 4, 5, 8, 16, 32, 62, 63, 64, 65, 66, 68, 69, 70];

/// Inputs at most this long are also decoded one byte at a time.
const BYTE_BY_BYTE_MAX: usize = 4096;

/// One item as an owned, comparable value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    /// A record.
    Record {
        /// Its index.
        index: u64,
        /// Its offset.
        offset: u64,
        /// Where it ends.
        end: u64,
        /// Its key, if the format carries one.
        key: Option<String>,
        /// Its bytes (JSON), text (lines) or fields (CSV).
        body: OwnedBody,
    },
    /// A bad record.
    Fault(RecordFault),
    /// The final syntax error.
    Syntax(SyntaxError),
    /// Bytes of a raw body ([`Item::Bytes`]).
    Bytes {
        /// Where they start.
        offset: u64,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

/// A record's body, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedBody {
    /// [`Body::Json`].
    Json(Vec<u8>),
    /// [`Body::Text`].
    Text(String),
    /// [`Body::Csv`]: the header's columns and the row's (unescaped) values.
    Csv {
        /// The header's column names.
        columns: Vec<String>,
        /// The row's values, in column order.
        values: Vec<String>,
    },
    /// A body of a kind this crate does not know yet, as its debug form.
    Other(String),
}

impl OwnedBody {
    /// The record's bytes as they are in the body (JSON and text bodies are slices of it).
    fn raw(&self) -> Option<&[u8]> {
        match self {
            OwnedBody::Json(b) => Some(b),
            OwnedBody::Text(t) => Some(t.as_bytes()),
            OwnedBody::Csv { .. } | OwnedBody::Other(_) => None,
        }
    }

    /// How many bytes the decoder held for the record.
    fn held(&self) -> usize {
        match self {
            OwnedBody::Json(b) => b.len(),
            OwnedBody::Text(t) => t.len(),
            OwnedBody::Csv { values, .. } => values.iter().map(String::len).sum(),
            OwnedBody::Other(_) => 0,
        }
    }
}

/// The limits and split point chosen by the first byte.
pub fn choose(first: u8, len: usize) -> (Limits, usize) {
    let limits = Limits {
        max_record_bytes: RECORD_CAPS[usize::from(first & 0x0f)],
        max_depth: DEPTH_CAPS[usize::from(first >> 4)],
    };
    // Mixed with the length so that each limit sees every split point as inputs grow.
    let split = (usize::from(first).wrapping_mul(0x9e37) ^ len) % (len + 1);
    (limits, split)
}

/// Feeds `chunks` to a new decoder, then finishes; returns every item (and a final syntax
/// error) in order. Mirrors `collect()` in the decoders' own tests.
pub fn collect(format: Format, limits: Limits, chunks: &[&[u8]]) -> Vec<Owned> {
    let mut decoder = decoder(format, limits);
    let mut out = Vec::new();
    let mut sink = |item: Item<'_>| {
        out.push(match item {
            Item::Record(r) => Owned::Record {
                index: r.index,
                offset: r.offset,
                end: r.end,
                key: r.key.map(str::to_owned),
                body: match r.body {
                    Body::Json(b) => OwnedBody::Json(b.to_vec()),
                    Body::Text(t) => OwnedBody::Text(t.to_owned()),
                    Body::Csv(row) => OwnedBody::Csv {
                        columns: row.columns().to_vec(),
                        values: row.values().map(str::to_owned).collect(),
                    },
                    // A body kind added later, compared by its debug form.
                    #[allow(unreachable_patterns)]
                    other => OwnedBody::Other(format!("{other:?}")),
                },
            },
            Item::Fault(f) => Owned::Fault(f),
            Item::Bytes { offset, bytes } => Owned::Bytes {
                offset,
                bytes: bytes.to_vec(),
            },
        });
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
    match result {
        Ok(flow) => assert!(flow.is_continue(), "the sink never breaks"),
        Err(e) => out.push(Owned::Syntax(e)),
    }
    out
}

/// The whole check, for one target's format.
pub fn check(format: Format, data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let (limits, split) = choose(first, body.len());

    let whole = collect(format, limits, &[body]);
    check_promises(format, limits, body, &whole);

    let (a, b) = body.split_at(split);
    let halves = collect(format, limits, &[a, b]);
    assert_eq!(
        halves, whole,
        "split at {split} differs from whole ({limits:?})"
    );

    if body.len() <= BYTE_BY_BYTE_MAX {
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        let one_by_one = collect(format, limits, &bytes);
        assert_eq!(
            one_by_one, whole,
            "one byte at a time differs from whole ({limits:?})"
        );
    }
}

/// The promises a decoder keeps whatever its input.
fn check_promises(format: Format, limits: Limits, body: &[u8], items: &[Owned]) {
    let mut next_index = 0u64;
    let mut last_offset = None::<u64>;
    for (at, item) in items.iter().enumerate() {
        let (index, offset, end) = match item {
            Owned::Record {
                index,
                offset,
                end,
                key,
                body: record,
            } => {
                assert!(
                    record.held() <= limits.max_record_bytes,
                    "record {index} has {} bytes, over the {}-byte cap",
                    record.held(),
                    limits.max_record_bytes
                );
                let start = usize::try_from(*offset).expect("offset fits");
                assert!(
                    start < body.len(),
                    "record {index} at {offset} is past the end"
                );
                let at_offset = &body[start..];
                match (format, key, record.raw()) {
                    (Format::Json, Some(_), _) => assert_eq!(
                        at_offset.first(),
                        Some(&b'"'),
                        "record {index}: its offset {offset} is not its key's quote"
                    ),
                    (_, _, Some(raw)) => assert!(
                        at_offset.starts_with(raw),
                        "record {index}: its body is not at its offset {offset}"
                    ),
                    (_, _, None) => {}
                }
                if let OwnedBody::Csv { columns, values } = record {
                    assert_eq!(
                        columns.len(),
                        values.len(),
                        "record {index}: a row with as many values as columns"
                    );
                }
                if let OwnedBody::Text(text) = record {
                    assert_eq!(text.trim_ascii(), text, "record {index} is not trimmed");
                    assert!(!text.is_empty(), "record {index} is blank");
                }
                (*index, *offset, *end)
            }
            Owned::Fault(fault) => {
                assert!(
                    fault.offset <= body.len() as u64,
                    "fault {} at {} is past the end",
                    fault.index,
                    fault.offset
                );
                assert!(
                    !fault.message.is_empty(),
                    "fault {} ({}) has no message",
                    fault.index,
                    fault.code
                );
                (fault.index, fault.offset, fault.end)
            }
            Owned::Bytes { offset, bytes } => {
                let start = usize::try_from(*offset).expect("offset fits");
                assert!(
                    body[start..].starts_with(bytes),
                    "raw bytes at {offset} are not the body's"
                );
                continue;
            }
            Owned::Syntax(e) => {
                assert_eq!(at, items.len() - 1, "a syntax error is the last item");
                assert!(
                    e.offset <= body.len() as u64,
                    "syntax error at {} is past the end",
                    e.offset
                );
                continue;
            }
        };
        assert!(
            offset <= end && end <= body.len() as u64,
            "item {index} at {offset} ends at {end}, before it or past the body's end"
        );
        assert_eq!(index, next_index, "items are numbered in order");
        next_index += 1;
        if let Some(last) = last_offset {
            assert!(
                offset > last,
                "item {index} at {offset} is not after {last}"
            );
        }
        last_offset = Some(offset);
    }
}
