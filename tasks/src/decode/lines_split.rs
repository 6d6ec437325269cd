//! Cuts a byte stream into lines, for the line-based formats (`ndjson`, `lines`), holding at
//! most one partial line of at most the record cap.

use super::bom::Bom;
use memchr::memchr;
use std::ops::ControlFlow;

/// One line, as the splitter hands it on.
#[derive(Debug)]
pub(crate) enum Line<'a> {
    /// A non-blank line, without its `\n` / `\r\n` and surrounding ASCII whitespace.
    Complete {
        /// The line's bytes.
        bytes: &'a [u8],
        /// Byte offset of the line's first byte.
        offset: u64,
        /// Byte offset just after the line's `\n` (after its last byte, for a last line
        /// without one).
        end: u64,
        /// Index of the record, counting non-blank lines from 0.
        index: u64,
        /// The line had no terminator: it was cut off by the end of the body.
        unterminated: bool,
    },
    /// A line longer than the cap; its bytes were skipped.
    TooLarge {
        /// Byte offset of the line's first byte.
        offset: u64,
        /// Byte offset just after the line's `\n` (or the body's end).
        end: u64,
        /// Index of the record.
        index: u64,
    },
}

/// The line-cutting state carried across chunks.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    bom: Bom,
    max: usize,
    /// The current partial line (empty when skipping).
    buf: Vec<u8>,
    /// Absolute offset of the next byte.
    offset: u64,
    /// Absolute offset where the current line starts.
    line_start: u64,
    /// The current line passed the cap: its bytes are dropped until its end.
    skipping: bool,
    /// The next record's index.
    index: u64,
    /// Where the last line handed out ends: a line's start, where a splitter can resume.
    last_end: u64,
}

impl LineSplitter {
    /// A splitter whose lines hold at most `max` bytes.
    pub(crate) fn new(max: usize) -> LineSplitter {
        LineSplitter {
            bom: Bom::default(),
            max,
            buf: Vec::new(),
            offset: 0,
            line_start: 0,
            skipping: false,
            index: 0,
            last_end: 0,
        }
    }

    /// A splitter that goes on at `offset`, the start of a line (just after the `index`-th
    /// record's line), past the body's BOM.
    pub(crate) fn resume(max: usize, offset: u64, index: u64) -> LineSplitter {
        LineSplitter {
            bom: Bom::resolved(),
            offset,
            line_start: offset,
            index,
            last_end: offset,
            ..LineSplitter::new(max)
        }
    }

    /// Where the last line handed out ends, and the next record's index.
    pub(crate) fn position(&self) -> (u64, u64) {
        (self.last_end, self.index)
    }

    /// Takes the next chunk of the body: skips a leading BOM, then cuts lines.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        on_line: &mut dyn FnMut(Line<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let (skip, held, bom) = self.bom.take(chunk);
        if bom > 0 {
            // A BOM is not content, but it counts in offsets.
            self.offset += bom as u64;
            if self.buf.is_empty() && !self.skipping {
                self.line_start = self.offset;
            }
        }
        if !held.is_empty() {
            self.split(held, on_line)?;
        }
        self.split(&chunk[skip..], on_line)
    }

    /// Cuts `bytes` into lines and hands every complete one to `on_line`.
    fn split(
        &mut self,
        mut bytes: &[u8],
        on_line: &mut dyn FnMut(Line<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        while !bytes.is_empty() {
            if self.buf.is_empty() && !self.skipping {
                // Whitespace before a line's first byte (blank lines included) is not part of
                // it: a record's offset is its first byte, and indentation does not count
                // against the record cap.
                let blank = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
                self.offset += blank as u64;
                self.line_start = self.offset;
                bytes = &bytes[blank..];
                if bytes.is_empty() {
                    break;
                }
            }
            let Some(end) = memchr(b'\n', bytes) else {
                self.hold(bytes);
                self.offset += bytes.len() as u64;
                return ControlFlow::Continue(());
            };
            let (line, rest) = (&bytes[..end], &bytes[end + 1..]);
            self.offset += end as u64 + 1;
            let flow = if self.buf.is_empty() && !self.skipping {
                // The whole line is in this chunk: no copy.
                if line.len() > self.max {
                    self.too_large(on_line)
                } else {
                    self.emit(line, false, on_line)
                }
            } else {
                self.hold(line);
                let held = std::mem::take(&mut self.buf);
                let flow = if self.skipping {
                    self.too_large(on_line)
                } else {
                    self.emit(&held, false, on_line)
                };
                self.buf = held;
                self.buf.clear();
                flow
            };
            self.skipping = false;
            self.line_start = self.offset;
            flow?;
            bytes = rest;
        }
        ControlFlow::Continue(())
    }

    /// Ends the body: a last line without a terminator is handed on, marked unterminated.
    pub(crate) fn finish(
        &mut self,
        on_line: &mut dyn FnMut(Line<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let flow = if self.skipping {
            self.too_large(on_line)
        } else if !self.buf.is_empty() {
            let held = std::mem::take(&mut self.buf);
            self.emit(&held, true, on_line)
        } else {
            ControlFlow::Continue(())
        };
        self.skipping = false;
        self.line_start = self.offset;
        flow
    }

    /// Keeps part of the current line, or starts skipping it when it passes the cap.
    fn hold(&mut self, part: &[u8]) {
        if self.skipping {
            return;
        }
        if self.buf.len() + part.len() > self.max {
            self.skipping = true;
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(part);
        }
    }

    fn emit(
        &mut self,
        line: &[u8],
        unterminated: bool,
        on_line: &mut dyn FnMut(Line<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        // Leading whitespace never reaches here: `split` skips it at the start of each line.
        let trimmed = line.trim_ascii_end();
        if trimmed.is_empty() {
            return ControlFlow::Continue(());
        }
        let index = self.next_index();
        on_line(Line::Complete {
            bytes: trimmed,
            offset: self.line_start,
            end: self.offset,
            index,
            unterminated,
        })
    }

    fn too_large(
        &mut self,
        on_line: &mut dyn FnMut(Line<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let index = self.next_index();
        on_line(Line::TooLarge {
            offset: self.line_start,
            end: self.offset,
            index,
        })
    }

    /// Counts a line handed out now, which ends at the current offset: the checkpoint's two
    /// integers.
    fn next_index(&mut self) -> u64 {
        let index = self.index;
        self.index += 1;
        self.last_end = self.offset;
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut splitter = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut collect = |line: Line<'_>| {
            out.push(match line {
                Line::Complete {
                    bytes,
                    offset,
                    end,
                    index,
                    unterminated,
                } => {
                    format!(
                        "{index}@{offset}..{end}:{}{}",
                        String::from_utf8_lossy(bytes),
                        if unterminated { "$" } else { "" }
                    )
                }
                Line::TooLarge { offset, end, index } => {
                    format!("{index}@{offset}..{end}:too large")
                }
            });
            ControlFlow::Continue(())
        };
        for chunk in chunks {
            let _ = splitter.feed(chunk, &mut collect);
        }
        let _ = splitter.finish(&mut collect);
        out
    }

    #[test]
    fn lines_offsets_and_indexes() {
        let want = vec!["0@0..3:a", "1@5..9:b c", "2@15..16:d$"];
        assert_eq!(lines(&[b"a\r\n\n\nb c\n  \t\n  d"], 100), want);
        assert_eq!(
            lines(&[b"a\r", b"\n\n", b"\nb", b" c\n  \t\n  d"], 100),
            want
        );
    }

    #[test]
    fn long_lines_are_skipped_unbuffered() {
        let want = vec!["0@0..3:ab", "1@3..10:too large", "2@10..13:cd"];
        assert_eq!(lines(&[b"ab\n123456\ncd\n"], 5), want);
        assert_eq!(lines(&[b"ab\n12", b"34", b"56\ncd\n"], 5), want);
        assert_eq!(
            lines(&[b"ab\n123456"], 5),
            vec!["0@0..3:ab", "1@3..9:too large"]
        );
    }
}
