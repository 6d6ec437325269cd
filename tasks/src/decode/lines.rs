//! `lines`: one text value per line (e.g. a list of numbers); blank lines are skipped.

use super::lines_split::{Line, LineSplitter};
use super::ndjson::too_large;
use super::{Checkpoint, Decoder, Item, Limits, ResumeState, Sink, SyntaxError};
use crate::record::{Body, Record, RecordFault};
use edge_proto::{ErrorCode, Format};
use std::ops::ControlFlow;

/// The `lines` decoder.
#[derive(Debug)]
pub struct LinesDecoder {
    lines: LineSplitter,
    max_bytes: usize,
}

impl LinesDecoder {
    /// A decoder with the given limits.
    pub fn new(limits: Limits) -> LinesDecoder {
        LinesDecoder {
            lines: LineSplitter::new(limits.max_record_bytes),
            max_bytes: limits.max_record_bytes,
        }
    }

    /// A decoder that goes on at `offset`, just after a line, whose next record is the
    /// `index`-th.
    pub fn resume(limits: Limits, offset: u64, index: u64) -> LinesDecoder {
        LinesDecoder {
            lines: LineSplitter::resume(limits.max_record_bytes, offset, index),
            max_bytes: limits.max_record_bytes,
        }
    }
}

impl Decoder for LinesDecoder {
    fn format(&self) -> Format {
        Format::Lines
    }

    fn feed(&mut self, chunk: &[u8], sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        let max_bytes = self.max_bytes;
        Ok(self
            .lines
            .feed(chunk, &mut |line| sink(item(line, max_bytes))))
    }

    fn finish(&mut self, sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        let max_bytes = self.max_bytes;
        Ok(self.lines.finish(&mut |line| sink(item(line, max_bytes))))
    }

    fn checkpoint(&self) -> Checkpoint {
        let (offset, index) = self.lines.position();
        let state = if index == 0 {
            ResumeState::Start
        } else {
            ResumeState::Lines
        };
        Checkpoint {
            offset,
            index,
            state,
        }
    }
}

fn item(line: Line<'_>, max_bytes: usize) -> Item<'_> {
    match line {
        Line::TooLarge { offset, end, index } => {
            Item::Fault(too_large(index, offset, end, max_bytes))
        }
        Line::Complete {
            bytes,
            offset,
            end,
            index,
            ..
        } => match std::str::from_utf8(bytes) {
            Ok(text) => Item::Record(Record {
                index,
                offset,
                end,
                key: None,
                body: Body::Text(text),
            }),
            Err(e) => Item::Fault(RecordFault {
                index,
                offset,
                end,
                key: None,
                code: ErrorCode::InvalidUtf8,
                message: format!(
                    "the line is not valid UTF-8 (at byte {} of the line)",
                    e.valid_up_to()
                ),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{collect, split_everywhere};

    #[test]
    fn one_value_per_line() {
        let input = b"1\r\n\n 2.5 \n-3e2\nabc\n\xff\xfe\n42";
        let items = collect(&mut LinesDecoder::new(Limits::default()), &[input]);
        assert_eq!(
            items,
            vec![
                "record 0 @0..3 text 1",
                "record 1 @5..10 text 2.5",
                "record 2 @10..15 text -3e2",
                "record 3 @15..19 text abc",
                "fault 4 @19..22 invalid_utf8",
                "record 5 @22..24 text 42",
            ]
        );
    }

    #[test]
    fn every_split_gives_the_same_items() {
        split_everywhere(
            || {
                Box::new(LinesDecoder::new(Limits {
                    max_record_bytes: 8,
                    max_depth: 64,
                }))
            },
            b"\xEF\xBB\xBF1\n22\r\n\n0123456789\n\xc3\xa9\nlast",
        );
    }
}
