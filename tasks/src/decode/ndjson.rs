//! `ndjson`: one JSON value per line; blank lines are skipped.
//!
//! The decoder frames lines and checks nesting depth; the task parses each value.

use super::lines_split::{Line, LineSplitter};
use super::{Checkpoint, Decoder, Item, Limits, ResumeState, Sink, SyntaxError};
use crate::record::{Body, Record, RecordFault};
use edge_proto::{ErrorCode, Format};
use std::ops::ControlFlow;

/// The `ndjson` decoder.
#[derive(Debug)]
pub struct NdjsonDecoder {
    lines: LineSplitter,
    limits: Limits,
}

impl NdjsonDecoder {
    /// A decoder with the given limits.
    pub fn new(limits: Limits) -> NdjsonDecoder {
        NdjsonDecoder {
            lines: LineSplitter::new(limits.max_record_bytes),
            limits,
        }
    }

    /// A decoder that goes on at `offset`, just after a line, whose next record is the
    /// `index`-th.
    pub fn resume(limits: Limits, offset: u64, index: u64) -> NdjsonDecoder {
        NdjsonDecoder {
            lines: LineSplitter::resume(limits.max_record_bytes, offset, index),
            limits,
        }
    }
}

impl Decoder for NdjsonDecoder {
    fn format(&self) -> Format {
        Format::Ndjson
    }

    fn feed(&mut self, chunk: &[u8], sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        let (max_depth, max_bytes) = (self.limits.max_depth, self.limits.max_record_bytes);
        Ok(self
            .lines
            .feed(chunk, &mut |line| sink(item(line, max_depth, max_bytes))))
    }

    fn finish(&mut self, sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        let (max_depth, max_bytes) = (self.limits.max_depth, self.limits.max_record_bytes);
        Ok(self
            .lines
            .finish(&mut |line| sink(item(line, max_depth, max_bytes))))
    }

    fn checkpoint(&self) -> Checkpoint {
        let (offset, index) = self.lines.position();
        let state = if index == 0 {
            ResumeState::Start
        } else {
            ResumeState::Ndjson
        };
        Checkpoint {
            offset,
            index,
            state,
        }
    }
}

/// Turns one line into a record, or a fault when it is too large, too deep, or cut off.
fn item(line: Line<'_>, max_depth: usize, max_bytes: usize) -> Item<'_> {
    match line {
        Line::TooLarge { offset, end, index } => {
            Item::Fault(too_large(index, offset, end, max_bytes))
        }
        Line::Complete {
            bytes,
            offset,
            end,
            index,
            unterminated,
        } => match shape(bytes) {
            Shape { depth, .. } if depth > max_depth => Item::Fault(RecordFault {
                index,
                offset,
                end,
                key: None,
                code: ErrorCode::TooDeep,
                message: format!("the record nests deeper than {max_depth} levels"),
            }),
            Shape {
                balanced: false, ..
            } if unterminated => Item::Fault(RecordFault {
                index,
                offset,
                end,
                key: None,
                code: ErrorCode::IncompleteRecord,
                message: "the upload ended inside this record; it was not stored".into(),
            }),
            _ => Item::Record(Record {
                index,
                offset,
                end,
                key: None,
                body: Body::Json(bytes),
            }),
        },
    }
}

/// The fault for a record over the size cap, from `offset` to `end`.
pub(crate) fn too_large(index: u64, offset: u64, end: u64, max_bytes: usize) -> RecordFault {
    RecordFault {
        index,
        offset,
        end,
        key: None,
        code: ErrorCode::RecordTooLarge,
        message: format!("the record is larger than the {max_bytes}-byte limit (jobs.max_record_bytes); it was skipped"),
    }
}

/// What a cheap scan of a JSON value's brackets and strings tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// The deepest nesting of arrays and objects.
    pub depth: usize,
    /// Every bracket and string is closed.
    pub balanced: bool,
}

/// Scans brackets outside strings.
pub(crate) fn shape(bytes: &[u8]) -> Shape {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    let mut broken = false;
    for &b in bytes {
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
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => broken = true,
            },
            _ => {}
        }
    }
    Shape {
        depth: deepest,
        balanced: depth == 0 && !in_string && !broken,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decode::tests::{collect, split_everywhere};

    #[test]
    fn values_per_line() {
        let input = b"\xEF\xBB\xBF{\"a\":1}\r\n\n  [1,2]  \n\"s\"\n{\"b\":\n";
        let items = collect(&mut NdjsonDecoder::new(Limits::default()), &[input]);
        assert_eq!(
            items,
            vec![
                "record 0 @3..12 json {\"a\":1}",
                "record 1 @15..23 json [1,2]",
                "record 2 @23..27 json \"s\"",
                "record 3 @27..33 json {\"b\":",
            ]
        );
    }

    #[test]
    fn a_cut_off_last_line_is_incomplete() {
        let items = collect(
            &mut NdjsonDecoder::new(Limits::default()),
            &[b"{\"a\":1}\n{\"b\":[1"],
        );
        assert_eq!(items[1], "fault 1 @8..15 incomplete_record");
        let items = collect(
            &mut NdjsonDecoder::new(Limits::default()),
            &[b"{\"a\":1}\n{\"b\":1}"],
        );
        assert_eq!(items[1], "record 1 @8..15 json {\"b\":1}");
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_record_bytes: 16,
            max_depth: 3,
        };
        let input = b"[[[1]]]\n[[[[1]]]]\n[\"0123456789abcdef\"]\n{}\n";
        let items = collect(&mut NdjsonDecoder::new(limits), &[input]);
        assert_eq!(
            items,
            vec![
                "record 0 @0..8 json [[[1]]]",
                "fault 1 @8..18 too_deep",
                "fault 2 @18..39 record_too_large",
                "record 3 @39..42 json {}"
            ]
        );
    }

    #[test]
    fn every_split_gives_the_same_items() {
        let input = b"\xEF\xBB\xBF{\"a\":\"x\\\"}\"}\r\n\n[1,[2]]\n  \n\"tail\"";
        split_everywhere(
            || {
                Box::new(NdjsonDecoder::new(Limits {
                    max_record_bytes: 12,
                    max_depth: 64,
                }))
            },
            input,
        );
    }
}
