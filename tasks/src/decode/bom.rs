//! The UTF-8 byte-order mark at the start of a body: skipped, even when it arrives split
//! across chunks.

/// EF BB BF.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// Tracks a possible BOM at the start of the body.
#[derive(Debug, Default, Clone)]
pub(crate) struct Bom {
    /// BOM bytes matched so far.
    seen: usize,
    /// The start of the body is behind us.
    done: bool,
}

impl Bom {
    /// A body whose start is behind us: no BOM is looked for (a resumed decoder's).
    pub(crate) fn resolved() -> Bom {
        Bom {
            seen: 0,
            done: true,
        }
    }

    /// Looks at the next chunk. Returns how many of its leading bytes to skip (a BOM, or bytes
    /// that may still be one), bytes held back from earlier chunks that turned out not to be
    /// a BOM (to be decoded before the rest of this chunk), and how many body bytes a BOM
    /// completed in this call took (3 once, else 0: what offsets must count).
    pub(crate) fn take(&mut self, chunk: &[u8]) -> (usize, &'static [u8], usize) {
        if self.done {
            return (0, &[], 0);
        }
        for (i, &byte) in chunk.iter().enumerate() {
            if byte == BOM[self.seen] {
                self.seen += 1;
                if self.seen == BOM.len() {
                    self.done = true;
                    return (i + 1, &[], BOM.len());
                }
            } else {
                // Every byte matched so far (from earlier chunks and this one's first `i`) was
                // content after all: hand them back, and skip this chunk's share of them.
                self.done = true;
                return (i, &BOM[..self.seen], 0);
            }
        }
        (chunk.len(), &[], 0)
    }

    /// At the end of the body: bytes held back as a possible BOM that never completed.
    pub(crate) fn finish(&mut self) -> &'static [u8] {
        if self.done {
            return &[];
        }
        self.done = true;
        &BOM[..self.seen]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` and returns the bytes that are content.
    fn content(chunks: &[&[u8]]) -> Vec<u8> {
        let mut bom = Bom::default();
        let mut out = Vec::new();
        for chunk in chunks {
            let (skip, held, _) = bom.take(chunk);
            out.extend_from_slice(held);
            out.extend_from_slice(&chunk[skip..]);
        }
        out.extend_from_slice(bom.finish());
        out
    }

    #[test]
    fn a_bom_is_skipped_however_it_is_split() {
        assert_eq!(content(&[b"\xEF\xBB\xBF{}"]), b"{}");
        assert_eq!(content(&[b"\xEF", b"\xBB", b"\xBF", b"{}"]), b"{}");
        assert_eq!(content(&[b"\xEF\xBB", b"\xBF{}"]), b"{}");
    }

    #[test]
    fn a_partial_bom_is_content() {
        assert_eq!(content(&[b"\xEF\xBBx"]), b"\xEF\xBBx");
        assert_eq!(content(&[b"\xEF", b"x"]), b"\xEFx");
        assert_eq!(content(&[b"\xEF"]), b"\xEF");
        assert_eq!(content(&[b"{}", b"\xEF\xBB\xBF"]), b"{}\xEF\xBB\xBF");
        assert_eq!(content(&[]), b"");
    }
}
