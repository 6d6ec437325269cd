//! `csv`: comma-separated values (RFC 4180 quoting) whose first row names the columns.
//!
//! Framing is [`csv_core`]'s: incremental, with no buffer but ours. A row is held in one buffer
//! that grows up to [`Limits::max_record_bytes`]; the rest of a longer row is read without
//! being kept, and the row is reported as `record_too_large`. Blank lines are skipped; `\n`,
//! `\r\n` and `\r` all end a row. A row whose field count differs from the header's, or whose
//! bytes are not UTF-8, is reported and the job goes on. The header itself must be readable:
//! an unreadable header (too large, not UTF-8, a column named twice) fails the job, and so does
//! one naming a column the task does not read, when the task says which it reads
//! ([`CsvDecoder::reading`]).
//!
//! csv_core accepts a quoted field left open at the end of the input as if it were closed; this
//! decoder counts quotes and reports such a last row as `incomplete_record` instead.

use super::bom::Bom;
use super::{Checkpoint, Decoder, Item, Limits, ResumeState, Sink, SyntaxError};
use crate::record::{Body, CsvRow, Record, RecordFault};
use csv_core::{ReadRecordResult, Reader};
use edge_proto::{ErrorCode, Format};
use std::ops::ControlFlow;

/// The most fields one row may have.
pub const MAX_FIELDS: usize = 4096;

/// The `csv` decoder.
#[derive(Debug)]
pub struct CsvDecoder {
    reader: Reader,
    limits: Limits,
    bom: Bom,
    /// The current row's field bytes (unescaped), and how much of it is used.
    out: Vec<u8>,
    out_len: usize,
    /// The current row's field ends, and how many are used.
    ends: Vec<usize>,
    ends_len: usize,
    /// The header's column names, once read.
    columns: Option<Vec<String>>,
    /// The only columns the task reads, when it says.
    known: Option<&'static [&'static str]>,
    /// Body bytes before the next unread byte.
    consumed: u64,
    /// Where the current row started, while one is being read.
    row_start: Option<u64>,
    /// Whether the current row has an odd number of `"` so far (a quoted field is open).
    open_quote: bool,
    /// The current row passed a limit: the rest of it is read and dropped.
    oversized: Option<Oversized>,
    /// The next data row's index.
    index: u64,
    /// Where the last item handed out ends (see [`Decoder::checkpoint`]).
    last_end: u64,
}

#[derive(Debug, Clone, Copy)]
enum Oversized {
    Bytes,
    Fields,
}

impl CsvDecoder {
    /// A decoder with the given limits.
    pub fn new(limits: Limits) -> CsvDecoder {
        // csv_core strips a BOM from its first input, but only if that input holds all three
        // bytes, so the result would depend on how the body is chunked. The body's BOM is
        // handled here (`bom`); one empty read first turns csv_core's own check off.
        let mut reader = Reader::new();
        let _ = reader.read_record(&[], &mut [], &mut []);
        CsvDecoder {
            reader,
            limits,
            bom: Bom::default(),
            out: vec![0; 4096.min(limits.max_record_bytes.max(1))],
            out_len: 0,
            ends: vec![0; 64],
            ends_len: 0,
            columns: None,
            known: None,
            consumed: 0,
            row_start: None,
            open_quote: false,
            oversized: None,
            index: 0,
            last_end: 0,
        }
    }

    /// A decoder that goes on at `offset`, just after a row (after its `\n` or `\r`), under
    /// `header`, whose next row is the `index`-th; it reads only `known` columns, if given.
    /// Fails, saying why, on a header that [`CsvDecoder::reading`] would have refused.
    ///
    /// csv_core needs nothing carried over: after a row it waits for the next, and a `\n`
    /// after a row's `\r` never reaches it (it is skipped as a blank line, here as there).
    pub fn resume(
        limits: Limits,
        known: Option<&'static [&'static str]>,
        header: Vec<String>,
        offset: u64,
        index: u64,
    ) -> Result<CsvDecoder, String> {
        let header = columns(header.iter().map(String::as_str), known)?;
        Ok(CsvDecoder {
            bom: Bom::resolved(),
            columns: Some(header),
            consumed: offset,
            index,
            last_end: offset,
            ..CsvDecoder::new(limits).reading(known)
        })
    }

    /// Only these columns may appear in the header (any subset, in any order).
    pub fn reading(mut self, known: Option<&'static [&'static str]>) -> CsvDecoder {
        self.known = known;
        self
    }

    /// Reads rows from `input`; `at_end` when `input` is the empty end-of-body marker.
    fn read(
        &mut self,
        mut input: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<ControlFlow<()>, SyntaxError> {
        let at_end = input.is_empty();
        loop {
            if self.row_start.is_none() {
                // Blank lines between rows: skipped (csv_core skips them too), so that a row's
                // offset is its first byte.
                let skip = input
                    .iter()
                    .position(|&b| b != b'\n' && b != b'\r')
                    .unwrap_or(input.len());
                self.consumed += skip as u64;
                input = &input[skip..];
                if input.is_empty() && !at_end {
                    return Ok(ControlFlow::Continue(()));
                }
                if !input.is_empty() {
                    self.row_start = Some(self.consumed);
                    self.open_quote = false;
                }
            }
            if at_end && self.row_start.is_some() && self.open_quote {
                return Ok(self.incomplete(sink));
            }
            let (result, read, written, ended) = self.reader.read_record(
                input,
                &mut self.out[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            let quotes = input[..read].iter().filter(|&&b| b == b'"').count();
            self.open_quote ^= quotes % 2 == 1;
            input = &input[read..];
            self.consumed += read as u64;
            self.out_len += written;
            self.ends_len += ended;
            match result {
                ReadRecordResult::InputEmpty => return Ok(ControlFlow::Continue(())),
                ReadRecordResult::End => return Ok(ControlFlow::Continue(())),
                ReadRecordResult::OutputFull => self.grow_out(),
                ReadRecordResult::OutputEndsFull => self.grow_ends(),
                ReadRecordResult::Record => {
                    let flow = self.row(sink)?;
                    self.out_len = 0;
                    self.ends_len = 0;
                    self.row_start = None;
                    self.oversized = None;
                    if flow.is_break() {
                        return Ok(flow);
                    }
                }
            }
        }
    }

    fn grow_out(&mut self) {
        if self.out.len() < self.limits.max_record_bytes {
            let size = (self.out.len() * 2).min(self.limits.max_record_bytes);
            self.out.resize(size, 0);
        } else {
            self.oversized.get_or_insert(Oversized::Bytes);
            self.out_len = 0;
        }
    }

    fn grow_ends(&mut self) {
        if self.ends.len() < MAX_FIELDS {
            let size = (self.ends.len() * 2).min(MAX_FIELDS);
            self.ends.resize(size, 0);
        } else {
            self.oversized.get_or_insert(Oversized::Fields);
            self.ends_len = 0;
        }
    }

    /// Hands on one complete row: the header, a data row, or a fault.
    fn row(&mut self, sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        let offset = self.row_start.unwrap_or(self.consumed);
        let Some(columns) = &self.columns else {
            self.columns = Some(self.header(offset)?);
            return Ok(ControlFlow::Continue(()));
        };
        let index = self.index;
        self.index += 1;
        // csv_core has just read the row's terminator byte (or the body's end).
        let end = self.consumed;
        self.last_end = end;
        let fault = |code, message: String| {
            Item::Fault(RecordFault {
                index,
                offset,
                end,
                key: None,
                code,
                message,
            })
        };
        let item = match self.oversized {
            Some(Oversized::Bytes) => fault(
                ErrorCode::RecordTooLarge,
                format!(
                    "the row is larger than {} bytes (jobs.max_record_bytes); it was skipped",
                    self.limits.max_record_bytes
                ),
            ),
            Some(Oversized::Fields) => fault(
                ErrorCode::RecordTooLarge,
                format!("the row has more than {MAX_FIELDS} fields; it was skipped"),
            ),
            None => match std::str::from_utf8(&self.out[..self.out_len]) {
                Err(e) => fault(
                    ErrorCode::InvalidUtf8,
                    format!(
                        "the row is not valid UTF-8 (byte {} of its fields)",
                        e.valid_up_to()
                    ),
                ),
                Ok(_) if self.ends_len != columns.len() => fault(
                    ErrorCode::InvalidRecord,
                    format!(
                        "the row has {} fields; the header has {} ({})",
                        self.ends_len,
                        columns.len(),
                        columns.join(", ")
                    ),
                ),
                Ok(text) => Item::Record(Record {
                    index,
                    offset,
                    end,
                    key: None,
                    body: Body::Csv(CsvRow::new(columns, text, &self.ends[..self.ends_len])),
                }),
            },
        };
        Ok(sink(item))
    }

    /// Reads the header row's column names.
    fn header(&self, offset: u64) -> Result<Vec<String>, SyntaxError> {
        let fail = |message: String| SyntaxError { offset, message };
        if self.oversized.is_some() {
            return Err(fail(format!(
                "the CSV header row is larger than {} bytes or has more than {MAX_FIELDS} columns",
                self.limits.max_record_bytes
            )));
        }
        let text = std::str::from_utf8(&self.out[..self.out_len])
            .map_err(|_| fail("the CSV header row is not valid UTF-8".into()))?;
        let row = CsvRow::new(&[], text, &self.ends[..self.ends_len]);
        columns(row.values().map(str::trim), self.known).map_err(fail)
    }

    /// The body ended inside a quoted field: the last row is reported, not stored.
    fn incomplete(&mut self, sink: &mut Sink<'_>) -> ControlFlow<()> {
        let offset = self.row_start.take().unwrap_or(self.consumed);
        if self.columns.is_none() {
            // Only a header, cut off: nothing to report per record.
            return ControlFlow::Continue(());
        }
        let index = self.index;
        self.index += 1;
        self.last_end = self.consumed;
        sink(Item::Fault(RecordFault {
            index,
            offset,
            end: self.last_end,
            key: None,
            code: ErrorCode::IncompleteRecord,
            message: "the upload ended inside a quoted field of this row; it was not stored".into(),
        }))
    }
}

impl Decoder for CsvDecoder {
    fn format(&self) -> Format {
        Format::Csv
    }

    fn feed(&mut self, chunk: &[u8], sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        let (skip, held, bom) = self.bom.take(chunk);
        self.consumed += bom as u64;
        if !held.is_empty() && self.read(held, sink)?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
        let rest = &chunk[skip..];
        if rest.is_empty() {
            return Ok(ControlFlow::Continue(()));
        }
        self.read(rest, sink)
    }

    fn finish(&mut self, sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        let held = self.bom.finish();
        if !held.is_empty() && self.read(held, sink)?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
        self.read(&[], sink)
    }

    fn checkpoint(&self) -> Checkpoint {
        let state = match &self.columns {
            Some(header) if self.index > 0 => ResumeState::Csv {
                header: header.clone(),
            },
            _ => ResumeState::Start,
        };
        Checkpoint {
            offset: self.last_end,
            index: self.index,
            state,
        }
    }
}

/// The header's column names (trimmed), checked: each has a name, none appears twice, and, when
/// the task says which columns it reads (`known`), each is one of them. The error says what is
/// wrong.
fn columns<'a>(
    names: impl Iterator<Item = &'a str>,
    known: Option<&[&str]>,
) -> Result<Vec<String>, String> {
    let mut columns: Vec<String> = Vec::new();
    for name in names {
        if name.is_empty() {
            return Err(format!(
                "column {} of the CSV header has no name",
                columns.len() + 1
            ));
        }
        if columns.iter().any(|c| c == name) {
            return Err(format!("column `{name}` appears twice in the CSV header"));
        }
        columns.push(name.to_owned());
    }
    if let Some(known) = known {
        let unknown: Vec<String> = columns
            .iter()
            .filter(|c| !known.contains(&c.as_str()))
            .map(|c| format!("`{c}`"))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "the CSV header names {} the task does not read: {}; its columns are {} \
                 (any of them, in any order)",
                if unknown.len() == 1 {
                    "a column"
                } else {
                    "columns"
                },
                unknown.join(", "),
                known.join(", ")
            ));
        }
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{collect, describe, split_everywhere};
    use crate::decode::{Checkpoint, ResumeError};

    fn decoder() -> Box<dyn Decoder> {
        Box::new(CsvDecoder::new(Limits::default()))
    }

    #[test]
    fn rows_with_quotes_offsets_and_indexes() {
        let input = b"name,coordinates\r\nAjman,\"55.5,25.4\"\r\n\r\n\"Say \"\"hi\"\"\",\n";
        assert_eq!(
            collect(decoder().as_mut(), &[input]),
            [
                "record 0 @18..36 csv name=Ajman|coordinates=55.5,25.4",
                "record 1 @39..53 csv name=Say \"hi\"|coordinates=",
            ]
        );
        split_everywhere(decoder, input);
    }

    #[test]
    fn a_bom_and_a_last_row_without_a_line_end() {
        let input = b"\xEF\xBB\xBFa,b\n1,2";
        assert_eq!(
            collect(decoder().as_mut(), &[input]),
            ["record 0 @7..10 csv a=1|b=2"]
        );
        split_everywhere(decoder, input);
    }

    #[test]
    fn bad_rows_are_faults_and_the_rest_goes_on() {
        let input = b"a,b\n1\n1,2,3\n\xff,1\nok,1\n";
        assert_eq!(
            collect(decoder().as_mut(), &[input]),
            [
                "fault 0 @4..6 invalid_record",
                "fault 1 @6..12 invalid_record",
                "fault 2 @12..16 invalid_utf8",
                "record 3 @16..21 csv a=ok|b=1",
            ]
        );
        split_everywhere(decoder, input);
    }

    #[test]
    fn an_unterminated_quote_at_the_end_is_incomplete() {
        let input = b"a,b\n1,2\n3,\"open field\n";
        assert_eq!(
            collect(decoder().as_mut(), &[input]),
            [
                "record 0 @4..8 csv a=1|b=2",
                "fault 1 @8..22 incomplete_record"
            ]
        );
        split_everywhere(decoder, input);
    }

    #[test]
    fn rows_past_the_cap_are_skipped_unbuffered() {
        let limits = Limits {
            max_record_bytes: 16,
            ..Limits::default()
        };
        let make = || -> Box<dyn Decoder> { Box::new(CsvDecoder::new(limits)) };
        let long = format!(
            "a,b\n{},1\nx,\"{}\"\ny,2\n",
            "z".repeat(100),
            "q\n".repeat(50)
        );
        let mut decoder = make();
        assert_eq!(
            collect(decoder.as_mut(), &[long.as_bytes()]),
            [
                "fault 0 @4..107 record_too_large",
                "fault 1 @107..212 record_too_large",
                "record 2 @212..216 csv a=y|b=2",
            ]
        );
        split_everywhere(make, long.as_bytes());
    }

    #[test]
    fn an_unreadable_header_fails_the_job() {
        for (input, says) in [
            (&b"a,a\n1,2\n"[..], "appears twice"),
            (&b"a,,c\n"[..], "no name"),
            (&b"\xff\n"[..], "UTF-8"),
        ] {
            let mut decoder = CsvDecoder::new(Limits::default());
            let mut sink = |_: Item<'_>| ControlFlow::Continue(());
            let err = decoder
                .feed(input, &mut sink)
                .and_then(|_| decoder.finish(&mut sink))
                .unwrap_err();
            assert!(err.message.contains(says), "{}", err.message);
            assert_eq!(err.offset, 0);
        }
    }

    #[test]
    fn a_header_naming_columns_the_task_does_not_read_fails_the_job_once() {
        const KNOWN: &[&str] = &["name", "unlocs", "lon", "lat"];
        let input = b"name,colour,unlocs,size\nA,red,XXAAA,1\nB,blue,XXBBB,2\n";
        let mut decoder = CsvDecoder::new(Limits::default()).reading(Some(KNOWN));
        let mut items = 0;
        let mut sink = |_: Item<'_>| {
            items += 1;
            ControlFlow::Continue(())
        };
        let err = decoder.feed(input, &mut sink).unwrap_err();
        assert_eq!(items, 0, "no row is handed on");
        assert_eq!(err.offset, 0);
        assert!(
            err.message.contains("`colour`, `size`")
                && err.message.contains("name, unlocs, lon, lat")
                && !err.message.contains("`name`"),
            "{}",
            err.message
        );
        // Known columns, any subset in any order, decode as before.
        let mut decoder = CsvDecoder::new(Limits::default()).reading(Some(KNOWN));
        assert_eq!(
            collect(&mut decoder, &[&b"unlocs,name\nXXAAA,A\n"[..]]),
            ["record 0 @12..20 csv unlocs=XXAAA|name=A"]
        );
    }

    #[test]
    fn a_resumed_decoder_keeps_the_header() {
        let input = b"name,lat\r\nA,1\r\nB,2\r\nC,\"3\"\n";
        let whole = collect(decoder().as_mut(), &[input]);
        assert_eq!(
            whole,
            [
                "record 0 @10..14 csv name=A|lat=1",
                "record 1 @15..19 csv name=B|lat=2",
                "record 2 @20..26 csv name=C|lat=3",
            ]
        );
        // Stopped in the middle of row 1, just after row 0's `\r`: the `\n` is still to come.
        let mut first = CsvDecoder::new(Limits::default());
        let mut items = Vec::new();
        let flow = first.feed(&input[..17], &mut |item| {
            items.push(describe(&item));
            ControlFlow::Continue(())
        });
        assert_eq!(flow, Ok(ControlFlow::Continue(())));
        let checkpoint = first.checkpoint();
        assert_eq!(
            checkpoint,
            Checkpoint {
                offset: 14,
                index: 1,
                state: ResumeState::Csv {
                    header: vec!["name".into(), "lat".into()]
                },
            }
        );
        let mut resumed =
            crate::decode::resume(Format::Csv, Limits::default(), None, &checkpoint).unwrap();
        items.extend(collect(resumed.as_mut(), &[&input[14..]]));
        assert_eq!(items, whole);
    }

    #[test]
    fn resume_refuses_a_header_the_task_does_not_read() {
        const KNOWN: &[&str] = &["name", "lat"];
        let checkpoint = |header: &[&str]| Checkpoint {
            offset: 14,
            index: 1,
            state: ResumeState::Csv {
                header: header.iter().map(|c| c.to_string()).collect(),
            },
        };
        let resume = |header: &[&str]| {
            crate::decode::resume(
                Format::Csv,
                Limits::default(),
                Some(KNOWN),
                &checkpoint(header),
            )
            .err()
        };
        assert_eq!(resume(&["lat", "name"]), None);
        let Some(ResumeError::CsvHeader(message)) = resume(&["name", "colour"]) else {
            panic!("a column the task does not read")
        };
        assert!(message.contains("`colour`"), "{message}");
        let Some(ResumeError::CsvHeader(message)) = resume(&["name", "name"]) else {
            panic!("a column named twice")
        };
        assert!(message.contains("twice"), "{message}");
    }

    #[test]
    fn empty_and_header_only_bodies_have_no_records() {
        for input in [&b""[..], b"\n\n", b"a,b\n", b"a,b"] {
            assert!(
                collect(decoder().as_mut(), &[input]).is_empty(),
                "{input:?}"
            );
        }
    }
}
