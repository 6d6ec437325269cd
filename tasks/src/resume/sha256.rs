//! A SHA-256 whose state can be saved and restored, so that a resumed job goes on hashing its
//! body where the last commit left it.
//!
//! The compression function is `sha2`'s (with SHA-NI or the assembly it picks at run time);
//! this file only keeps what is around it: the eight state words, the bytes of a block not yet
//! full, the length so far, and the padding at the end (FIPS 180-4, 5.1.1).

use serde::{Deserialize, Serialize};

const BLOCK: usize = 64;

/// The initial hash value H(0) of SHA-256.
const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A SHA-256 under way.
#[derive(Clone, PartialEq, Eq)]
pub struct Sha256 {
    state: [u32; 8],
    /// Bytes of the current block not yet compressed (`len % 64` of them).
    block: [u8; BLOCK],
    /// Bytes hashed so far.
    len: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256::new()
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sha256({} bytes)", self.len)
    }
}

impl Sha256 {
    /// A hash of nothing yet.
    pub fn new() -> Sha256 {
        Sha256 {
            state: H0,
            block: [0; BLOCK],
            len: 0,
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hashes the next bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        let held = (self.len % BLOCK as u64) as usize;
        self.len += bytes.len() as u64;
        if held > 0 {
            let take = (BLOCK - held).min(bytes.len());
            self.block[held..held + take].copy_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if held + take < BLOCK {
                return;
            }
            let block = self.block;
            self.compress(&block);
        }
        let whole = bytes.len() / BLOCK * BLOCK;
        if whole > 0 {
            self.compress(&bytes[..whole]);
        }
        let rest = &bytes[whole..];
        self.block[..rest.len()].copy_from_slice(rest);
    }

    /// Compresses whole blocks (`bytes.len()` is a multiple of 64).
    // sha2 0.10 takes its blocks as generic-array 0.14 arrays, which that crate now marks
    // deprecated in favour of its 1.x; sha2 0.11 moves on with it.
    #[allow(deprecated)]
    fn compress(&mut self, bytes: &[u8]) {
        for block in bytes.chunks_exact(BLOCK) {
            let block = *sha2::digest::generic_array::GenericArray::from_slice(block);
            sha2::compress256(&mut self.state, &[block]);
        }
    }

    /// The digest of the bytes so far (the hash itself can go on).
    pub fn digest(&self) -> [u8; 32] {
        let mut last = self.clone();
        let bits = self.len.wrapping_mul(8);
        last.update(&[0x80]);
        let zeros = (BLOCK as u64 + 56 - last.len % BLOCK as u64) % BLOCK as u64;
        last.update(&[0; BLOCK][..zeros as usize]);
        last.update(&bits.to_be_bytes());
        let mut out = [0; 32];
        for (word, bytes) in last.state.iter().zip(out.chunks_exact_mut(4)) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// The digest as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        hex(&self.digest())
    }

    /// The state, to store: hex of the eight words, the held bytes, and the length.
    pub fn save(&self) -> SavedSha256 {
        let held = (self.len % BLOCK as u64) as usize;
        let mut words = Vec::with_capacity(32);
        for word in self.state {
            words.extend_from_slice(&word.to_be_bytes());
        }
        SavedSha256 {
            state: hex(&words),
            held: hex(&self.block[..held]),
            len: self.len,
        }
    }

    /// A hash restored from a saved state, or `None` if the state is damaged.
    pub fn restore(saved: &SavedSha256) -> Option<Sha256> {
        let words = unhex(&saved.state)?;
        let held = unhex(&saved.held)?;
        if words.len() != 32 || held.len() as u64 != saved.len % BLOCK as u64 {
            return None;
        }
        let mut state = [0u32; 8];
        for (word, bytes) in state.iter_mut().zip(words.chunks_exact(4)) {
            *word = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        let mut block = [0; BLOCK];
        block[..held.len()].copy_from_slice(&held);
        Some(Sha256 {
            state,
            block,
            len: saved.len,
        })
    }
}

/// A [`Sha256`]'s state as it is stored with a job's cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSha256 {
    /// The eight state words, big-endian, in hex.
    pub state: String,
    /// The bytes of the block not yet full, in hex.
    pub held: String,
    /// Bytes hashed.
    pub len: u64,
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reference(bytes: &[u8]) -> String {
        hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
    }

    #[test]
    fn known_digests() {
        assert_eq!(
            Sha256::new().hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut abc = Sha256::new();
        abc.update(b"abc");
        assert_eq!(
            abc.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn any_split_and_any_save_point_gives_the_reference_digest() {
        let input: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 1000] {
            let bytes = &input[..len];
            let expected = reference(bytes);
            for at in 0..=len {
                let mut first = Sha256::new();
                first.update(&bytes[..at]);
                let saved = serde_json::to_string(&first.save()).unwrap();
                let mut second = Sha256::restore(&serde_json::from_str(&saved).unwrap()).unwrap();
                second.update(&bytes[at..]);
                assert_eq!(second.hex(), expected, "len {len}, saved at {at}");
            }
        }
    }

    #[test]
    fn a_damaged_state_is_refused() {
        let mut hash = Sha256::new();
        hash.update(b"abc");
        let mut saved = hash.save();
        saved.len += 1;
        assert!(Sha256::restore(&saved).is_none());
        let mut saved = hash.save();
        saved.state.pop();
        assert!(Sha256::restore(&saved).is_none());
    }
}
