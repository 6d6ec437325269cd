//! `raw`: the body as it is. Nothing is framed: each chunk is handed on as it arrived, for a
//! task that stores files (`blobs`). It buffers nothing, so any body size is fine.

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
}

impl RawDecoder {
    /// A decoder at the body's first byte.
    pub fn new() -> RawDecoder {
        RawDecoder::default()
    }

    /// A decoder that goes on at `offset`, after `index` items.
    pub fn resume(offset: u64, index: u64) -> RawDecoder {
        RawDecoder { offset, index }
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
        let offset = self.offset;
        self.offset += chunk.len() as u64;
        self.index += 1;
        Ok(sink(Item::Bytes {
            offset,
            bytes: chunk,
        }))
    }

    fn finish(&mut self, _sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        Ok(ControlFlow::Continue(()))
    }

    /// Every byte fed so far was handed out: the checkpoint is where the next chunk starts.
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
