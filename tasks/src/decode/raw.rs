//! `raw`: the body as it is. Nothing is framed: each chunk is handed on as it arrived, for a
//! task that stores files (`blobs`). It buffers nothing, so any body size is fine; or, for a
//! task that makes whole units durable (a resumable `blobs` job: its storage chunks), it hands
//! out whole units only, holding back at most one unit's bytes until the rest of it came.

use super::{Checkpoint, Decoder, Item, ResumeState, Sink, SyntaxError};
use edge_proto::Format;
use std::ops::ControlFlow;

/// Hands every chunk on as [`Item::Bytes`].
#[derive(Debug, Default)]
pub struct RawDecoder {
    /// Where the next chunk starts.
    offset: u64,
    /// How many items (non-empty chunks) were handed out.
    index: u64,
    /// The unit items come in, as body offsets that are its multiples (0: chunks as they
    /// came).
    unit: usize,
    /// The bytes of the unit not yet whole.
    held: Vec<u8>,
}

impl RawDecoder {
    /// A decoder at the body's first byte.
    pub fn new() -> RawDecoder {
        RawDecoder::default()
    }

    /// A decoder that goes on at `offset`, after `index` items.
    pub fn resume(offset: u64, index: u64) -> RawDecoder {
        RawDecoder {
            offset,
            index,
            ..RawDecoder::default()
        }
    }

    /// This decoder, handing out only whole units of `unit` bytes (each item ends at a
    /// multiple of `unit` in the body), and the rest at the end; so its checkpoint, the end of
    /// what it handed out, is always at a unit's end.
    pub fn in_units(self, unit: usize) -> RawDecoder {
        RawDecoder { unit, ..self }
    }

    /// Hands out `bytes`, which start where the last item ended.
    fn hand(&mut self, bytes: &[u8], sink: &mut Sink<'_>) -> ControlFlow<()> {
        let offset = self.offset;
        self.offset += bytes.len() as u64;
        self.index += 1;
        sink(Item::Bytes { offset, bytes })
    }

    /// [`Decoder::feed`] in units: fills the held unit first, then hands out the whole
    /// units of `chunk` as they are, and holds the rest.
    fn feed_units(&mut self, mut chunk: &[u8], sink: &mut Sink<'_>) -> ControlFlow<()> {
        let unit = self.unit;
        if !self.held.is_empty() {
            let take = (unit - self.held.len()).min(chunk.len());
            self.held.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.held.len() < unit {
                return ControlFlow::Continue(());
            }
            let held = std::mem::take(&mut self.held);
            let flow = self.hand(&held, sink);
            self.held = held;
            self.held.clear();
            flow?;
        }
        let whole = chunk.len() / unit * unit;
        if whole > 0 {
            self.hand(&chunk[..whole], sink)?;
        }
        let rest = &chunk[whole..];
        if !rest.is_empty() {
            self.held.reserve_exact(unit);
            self.held.extend_from_slice(rest);
        }
        ControlFlow::Continue(())
    }
}

impl Decoder for RawDecoder {
    fn format(&self) -> Format {
        Format::Raw
    }

    fn feed(&mut self, chunk: &[u8], sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        if chunk.is_empty() {
            return Ok(ControlFlow::Continue(()));
        }
        if self.unit > 0 {
            return Ok(self.feed_units(chunk, sink));
        }
        Ok(self.hand(chunk, sink))
    }

    fn finish(&mut self, sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        if self.held.is_empty() {
            return Ok(ControlFlow::Continue(()));
        }
        let held = std::mem::take(&mut self.held);
        Ok(self.hand(&held, sink))
    }

    /// The checkpoint is where the next item starts: after every byte fed (in units: but
    /// the held ones).
    fn checkpoint(&self) -> Checkpoint {
        let state = if self.index == 0 {
            ResumeState::Start
        } else {
            ResumeState::Raw
        };
        Checkpoint {
            offset: self.offset,
            index: self.index,
            state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_pass_through_with_their_offsets() {
        let mut decoder = RawDecoder::new();
        let mut seen = Vec::new();
        for chunk in [&b"ab"[..], b"", b"cde"] {
            let flow = decoder
                .feed(chunk, &mut |item| {
                    if let Item::Bytes { offset, bytes } = item {
                        seen.push((offset, bytes.to_vec()));
                    }
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(flow, ControlFlow::Continue(()));
        }
        assert_eq!(seen, vec![(0, b"ab".to_vec()), (2, b"cde".to_vec())]);
        assert_eq!(
            decoder.checkpoint(),
            Checkpoint {
                offset: 5,
                index: 2,
                state: ResumeState::Raw
            }
        );
    }

    #[test]
    fn in_units_items_end_at_multiples_of_the_unit() {
        let body: Vec<u8> = (0..100u8).collect();
        for split in [1, 3, 4, 9, 10, 11, 64] {
            let mut decoder = RawDecoder::new().in_units(10);
            let mut seen = Vec::new();
            let mut sink = |item: Item<'_>| {
                if let Item::Bytes { offset, bytes } = item {
                    seen.push((offset, bytes.to_vec()));
                }
                ControlFlow::Continue(())
            };
            for chunk in body[..97].chunks(split) {
                assert_eq!(
                    decoder.feed(chunk, &mut sink),
                    Ok(ControlFlow::Continue(()))
                );
                let checkpoint = decoder.checkpoint();
                assert_eq!(checkpoint.offset % 10, 0, "split {split}");
            }
            assert_eq!(decoder.finish(&mut sink), Ok(ControlFlow::Continue(())));
            let ends: Vec<u64> = seen.iter().map(|(o, b)| o + b.len() as u64).collect();
            assert!(ends[..ends.len() - 1].iter().all(|end| end % 10 == 0));
            assert_eq!(ends.last(), Some(&97));
            let joined: Vec<u8> = seen.into_iter().flat_map(|(_, b)| b).collect();
            assert_eq!(joined, body[..97], "split {split}");
        }
    }

    #[test]
    fn a_resumed_decoder_goes_on_at_its_offset() {
        let checkpoint = Checkpoint {
            offset: 5,
            index: 2,
            state: ResumeState::Raw,
        };
        let mut decoder =
            crate::decode::resume(Format::Raw, Default::default(), None, &checkpoint).unwrap();
        let mut seen = Vec::new();
        let flow = decoder.feed(b"fg", &mut |item| {
            if let Item::Bytes { offset, bytes } = item {
                seen.push((offset, bytes.to_vec()));
            }
            ControlFlow::Continue(())
        });
        assert_eq!(flow, Ok(ControlFlow::Continue(())));
        assert_eq!(seen, vec![(5, b"fg".to_vec())]);
        assert_eq!(decoder.checkpoint().offset, 7);
    }
}
