//! A BLAKE3 whose state can be saved and restored, so that a resumed `blobs` job goes on
//! hashing its blob where the last commit left it, instead of reading back what it staged.
//!
//! `blake3::Hasher` keeps its tree to itself, so this one builds the tree from the crate's
//! own pieces (`blake3::hazmat`): the body is cut into aligned subtrees, each hashed by the
//! crate (with its SIMD), their chaining values kept on a stack with one entry per set bit
//! of the count of chunks behind them, as the BLAKE3 paper's incremental hasher does
//! (section 5.1.2). The last chunk is held back until the end, where it may be the root.

use crate::resume::sha256::hex;
use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue};
use blake3::hazmat::{HasherExt, Mode};
use blake3::{Hasher, CHUNK_LEN};
use serde::{Deserialize, Serialize};

/// A BLAKE3 under way.
#[derive(Clone, PartialEq, Eq)]
pub struct Blake3 {
    /// The chaining values of the complete subtrees so far, the largest first: one per set
    /// bit of `chunks`.
    stack: Vec<ChainingValue>,
    /// Whole chunks behind `stack`.
    chunks: u64,
    /// The bytes after them: the last chunk, held back (none only before the first byte).
    tail: Vec<u8>,
}

impl Default for Blake3 {
    fn default() -> Self {
        Blake3::new()
    }
}

impl std::fmt::Debug for Blake3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blake3({} bytes)", self.len())
    }
}

impl Blake3 {
    /// A hash of nothing yet.
    pub fn new() -> Blake3 {
        Blake3 {
            stack: Vec::new(),
            chunks: 0,
            tail: Vec::with_capacity(CHUNK_LEN),
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.chunks * CHUNK_LEN as u64 + self.tail.len() as u64
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hashes the next bytes. Large slices are hashed fastest (a subtree's chunks are hashed
    /// in parallel lanes): a `blobs` job hands over whole storage chunks.
    pub fn update(&mut self, mut bytes: &[u8]) {
        if !self.tail.is_empty() {
            let take = (CHUNK_LEN - self.tail.len()).min(bytes.len());
            self.tail.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if bytes.is_empty() {
                return;
            }
            // The held chunk is full and more follows: it is not the last.
            let cv = self.subtree(&self.tail);
            self.push(cv, 1);
            self.tail.clear();
        }
        // Whole subtrees, as large as their alignment allows, keeping at least one byte back.
        while bytes.len() > CHUNK_LEN {
            let whole = (bytes.len() as u64 - 1) / CHUNK_LEN as u64;
            let mut size = 1u64 << (63 - whole.leading_zeros());
            if self.chunks > 0 {
                size = size.min(1 << self.chunks.trailing_zeros());
            }
            let len = usize::try_from(size).expect("a subtree is within the slice") * CHUNK_LEN;
            let cv = self.subtree(&bytes[..len]);
            self.push(cv, size);
            bytes = &bytes[len..];
        }
        self.tail.extend_from_slice(bytes);
    }

    /// The chaining value of `bytes` as the subtree that starts after the chunks so far.
    fn subtree(&self, bytes: &[u8]) -> ChainingValue {
        Hasher::new()
            .set_input_offset(self.chunks * CHUNK_LEN as u64)
            .update(bytes)
            .finalize_non_root()
    }

    /// Adds a subtree of `size` chunks, merging as the count's carries say. More input
    /// follows, so no merge here is the root.
    fn push(&mut self, cv: ChainingValue, size: u64) {
        self.chunks += size;
        self.stack.push(cv);
        while self.stack.len() > self.chunks.count_ones() as usize {
            let right = self
                .stack
                .pop()
                .expect("two entries: more than the bits set");
            let left = self
                .stack
                .pop()
                .expect("two entries: more than the bits set");
            self.stack
                .push(merge_subtrees_non_root(&left, &right, Mode::Hash));
        }
    }

    /// The digest of the bytes so far (the hash itself can go on).
    pub fn digest(&self) -> blake3::Hash {
        let Some((first, rest)) = self.stack.split_first() else {
            return blake3::hash(&self.tail);
        };
        let mut right = self.subtree(&self.tail);
        for left in rest.iter().rev() {
            right = merge_subtrees_non_root(left, &right, Mode::Hash);
        }
        merge_subtrees_root(first, &right, Mode::Hash)
    }

    /// The digest as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        self.digest().to_hex().to_string()
    }

    /// The state, to store: the chaining values, the chunks behind them, the held bytes.
    pub fn save(&self) -> SavedBlake3 {
        SavedBlake3 {
            stack: self.stack.iter().map(|cv| hex(cv)).collect(),
            chunks: self.chunks,
            tail: hex(&self.tail),
        }
    }

    /// A hash restored from a saved state, or `None` if the state is damaged.
    pub fn restore(saved: &SavedBlake3) -> Option<Blake3> {
        let tail = unhex(&saved.tail)?;
        let consistent = saved.stack.len() == saved.chunks.count_ones() as usize
            && tail.len() <= CHUNK_LEN
            && (saved.chunks == 0 || !tail.is_empty());
        if !consistent {
            return None;
        }
        let stack = saved
            .stack
            .iter()
            .map(|cv| unhex(cv)?.try_into().ok())
            .collect::<Option<Vec<ChainingValue>>>()?;
        let mut restored = Blake3::new();
        restored.stack = stack;
        restored.chunks = saved.chunks;
        restored.tail.extend_from_slice(&tail);
        Some(restored)
    }
}

/// A [`Blake3`]'s state as it is stored with a job's cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedBlake3 {
    /// The chaining values of the complete subtrees, the largest first, in hex.
    pub stack: Vec<String>,
    /// The chunks (1024 bytes) they cover.
    pub chunks: u64,
    /// The bytes after them, in hex.
    pub tail: String,
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    crate::resume::sha256::unhex(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn input(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 7)) as u8)
            .collect()
    }

    #[test]
    fn any_length_gives_the_crates_digest() {
        let bytes = input(70 * CHUNK_LEN + 5);
        for len in [
            0,
            1,
            1023,
            1024,
            1025,
            2048,
            2049,
            3 * 1024,
            8 * 1024,
            8 * 1024 + 1,
        ]
        .into_iter()
        .chain([33 * 1024 - 1, 64 * 1024, 70 * 1024 + 5])
        {
            let mut hash = Blake3::new();
            hash.update(&bytes[..len]);
            assert_eq!(hash.digest(), blake3::hash(&bytes[..len]), "len {len}");
        }
    }

    #[test]
    fn any_split_and_any_save_point_gives_the_crates_digest() {
        let bytes = input(20 * CHUNK_LEN + 300);
        let expected = blake3::hash(&bytes);
        // Cuts at odd places, on chunk boundaries, and the sizes of `blobs`' storage chunks.
        let steps = [1, 7, 1023, 1024, 1025, 3000, 4096, 1024 * 1024 - 256];
        for step in steps {
            for save_at in [0, 1, 1024, 5000, 8 * 1024, 13 * 1024 + 9, bytes.len()] {
                let mut first = Blake3::new();
                let mut at = 0;
                while at < save_at {
                    let to = (at + step).min(save_at);
                    first.update(&bytes[at..to]);
                    at = to;
                }
                assert_eq!(first.digest(), blake3::hash(&bytes[..save_at]));
                let saved = serde_json::to_string(&first.save()).unwrap();
                let mut second = Blake3::restore(&serde_json::from_str(&saved).unwrap()).unwrap();
                while at < bytes.len() {
                    let to = (at + step).min(bytes.len());
                    second.update(&bytes[at..to]);
                    at = to;
                }
                assert_eq!(second.digest(), expected, "step {step}, saved at {save_at}");
            }
        }
    }

    #[test]
    fn storage_chunks_of_a_large_blob_give_the_crates_digest() {
        let chunk = 1024 * 1024 - 256;
        let bytes = input(9 * chunk + 12_345);
        let mut hash = Blake3::new();
        for piece in bytes.chunks(chunk) {
            hash.update(piece);
            let restored = Blake3::restore(&hash.save()).unwrap();
            assert_eq!(restored, hash);
        }
        assert_eq!(hash.digest(), blake3::hash(&bytes));
    }

    #[test]
    fn a_damaged_state_is_refused() {
        let mut hash = Blake3::new();
        hash.update(&input(5000));
        let mut saved = hash.save();
        saved.chunks += 1;
        assert!(Blake3::restore(&saved).is_none());
        let mut saved = hash.save();
        saved.stack[0].pop();
        assert!(Blake3::restore(&saved).is_none());
        let mut saved = hash.save();
        saved.tail.clear();
        assert!(Blake3::restore(&saved).is_none());
    }
}
