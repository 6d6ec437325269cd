//! A file's SHA-256, with the hash's state kept every few MiB on the way: the digest a job
//! declares (`sha256`), and what a resume checks the server's prefix digest against
//! (`resumed`'s `prefix_sha256`) without hashing the whole prefix again.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The SHA-256 states of a file's first `k * EVERY` bytes, for every `k` up to its size.
#[derive(Clone)]
pub struct PrefixHashes {
    states: Vec<ring::digest::Context>,
}

impl std::fmt::Debug for PrefixHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrefixHashes({} states)", self.states.len())
    }
}

impl PrefixHashes {
    /// How far apart the states are: a resume hashes at most this much of the prefix.
    pub const EVERY: u64 = 4 * 1024 * 1024;

    /// Hashes the file at `path` whole (blocking: run it off the async runtime); returns its
    /// SHA-256 in hex and the states on the way.
    pub fn of_file(path: &Path) -> std::io::Result<(String, Arc<PrefixHashes>)> {
        let mut reader = std::fs::File::open(path)?;
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        let mut states = vec![context.clone()];
        let mut buf = vec![0u8; 1024 * 1024];
        let mut hashed = 0u64;
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let mut bytes = &buf[..n];
            while !bytes.is_empty() {
                let to_state = PrefixHashes::EVERY - hashed % PrefixHashes::EVERY;
                let take = bytes.len().min(usize::try_from(to_state).unwrap_or(usize::MAX));
                context.update(&bytes[..take]);
                hashed += take as u64;
                bytes = &bytes[take..];
                if hashed % PrefixHashes::EVERY == 0 {
                    states.push(context.clone());
                }
            }
        }
        let digest = hex(context.finish().as_ref());
        Ok((digest, Arc::new(PrefixHashes { states })))
    }

    /// The nearest state at or before `offset`: where it is, and the hash up to there.
    fn before(&self, offset: u64) -> (u64, ring::digest::Context) {
        let k = usize::try_from(offset / PrefixHashes::EVERY)
            .unwrap_or(usize::MAX)
            .min(self.states.len().saturating_sub(1));
        match self.states.get(k) {
            Some(state) => (k as u64 * PrefixHashes::EVERY, state.clone()),
            None => (0, ring::digest::Context::new(&ring::digest::SHA256)),
        }
    }
}

/// Reads the first `offset` bytes of `body` (which the server has already) and returns their
/// SHA-256 in hex: from the nearest of `known`'s states when given (the bytes before it are
/// read, not hashed), else from the first byte. A body shorter than that is an error.
pub(crate) async fn skip_prefix(
    body: &mut (dyn AsyncRead + Send + Unpin),
    offset: u64,
    known: Option<&PrefixHashes>,
    buf: &mut [u8],
) -> std::io::Result<String> {
    let (start, mut hash) = match known {
        Some(known) => known.before(offset),
        None => (0, ring::digest::Context::new(&ring::digest::SHA256)),
    };
    let short = || {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("it is shorter than the {offset} bytes the server already has"),
        )
    };
    let mut at = 0u64;
    while at < offset {
        let want = usize::try_from(offset - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = body.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(short());
        }
        let read = &buf[..n];
        // Only the bytes from the state on are hashed.
        let skip = usize::try_from(start.saturating_sub(at))
            .unwrap_or(usize::MAX)
            .min(n);
        hash.update(&read[skip..]);
        at += n as u64;
    }
    Ok(hex(hash.finish().as_ref()))
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_prefix_hashed_from_the_nearest_state_is_the_whole_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let len = 2 * PrefixHashes::EVERY as usize + 12_345;
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 7) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (digest, known) = PrefixHashes::of_file(&path).unwrap();
        assert_eq!(digest, hex(ring::digest::digest(&ring::digest::SHA256, &data).as_ref()));
        let every = PrefixHashes::EVERY as usize;
        for offset in [0, 1, every - 1, every, every + 1, 2 * every, len - 1, len] {
            let expected = hex(ring::digest::digest(&ring::digest::SHA256, &data[..offset]).as_ref());
            let mut buf = vec![0u8; 100_000];
            for known in [Some(known.as_ref()), None] {
                let mut body: &[u8] = &data;
                let got = skip_prefix(&mut body, offset as u64, known, &mut buf)
                    .await
                    .unwrap();
                assert_eq!(got, expected, "offset {offset}, states {}", known.is_some());
                assert_eq!(body.len(), len - offset, "the rest is left to send");
            }
        }
        let mut short: &[u8] = &data[..10];
        assert!(skip_prefix(&mut short, 11, None, &mut [0u8; 4]).await.is_err());
    }
}
