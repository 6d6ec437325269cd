//! `raw`: the body as it is. Nothing is framed: each chunk is handed on as it arrived, for a
//! task that stores files (`blobs`). It buffers nothing, so any body size is fine.

use super::{Decoder, Item, Sink, SyntaxError};
use edge_proto::Format;
use std::ops::ControlFlow;

/// Hands every chunk on as [`Item::Bytes`].
#[derive(Debug, Default)]
pub struct RawDecoder {
    offset: u64,
}

impl RawDecoder {
    /// A decoder at the body's first byte.
    pub fn new() -> RawDecoder {
        RawDecoder::default()
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
        Ok(sink(Item::Bytes {
            offset,
            bytes: chunk,
        }))
    }

    fn finish(&mut self, _sink: &mut Sink<'_>) -> Result<ControlFlow<()>, SyntaxError> {
        Ok(ControlFlow::Continue(()))
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
    }
}
