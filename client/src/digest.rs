//! A file's SHA-256, with the hash's state kept every few MiB on the way: the digest a job
//! declares (`sha256`), and what a resume checks the server's prefix digest against
//! (`resumed`'s `prefix_sha256`) without hashing the whole prefix again.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek};

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
                let take = bytes
                    .len()
                    .min(usize::try_from(to_state).unwrap_or(usize::MAX));
                context.update(&bytes[..take]);
                hashed += take as u64;
                bytes = &bytes[take..];
                if hashed.is_multiple_of(PrefixHashes::EVERY) {
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

/// Reads the body's bytes from `at` up to `offset` into `hash` (the hash of the bytes before
/// `at`) and returns the hash of the first `offset` bytes in hex; a body that ends first is
/// an error.
async fn hash_to(
    body: &mut (dyn AsyncRead + Send + Unpin),
    mut hash: ring::digest::Context,
    at: u64,
    offset: u64,
    buf: &mut [u8],
) -> std::io::Result<String> {
    let mut left = offset.saturating_sub(at);
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = body.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("it is shorter than the {offset} bytes the server already has"),
            ));
        }
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hex(hash.finish().as_ref()))
}

/// A body that can be read again from a byte of its own (a file): a resume goes to the
/// state nearest the server's offset instead of reading the body from its start.
pub trait SeekableBody: AsyncRead + AsyncSeek + Send + Unpin {}

impl<T: AsyncRead + AsyncSeek + Send + Unpin> SeekableBody for T {}

/// A body that keeps itself what a resume needs (standard input: the bytes since the last
/// commit, and the hash of those before).
pub trait HeldBody: AsyncRead + Send + Unpin {
    /// Goes to byte `offset` (the server's) and returns the SHA-256 of the bytes before it,
    /// or why it cannot (it no longer holds them).
    fn go_to(&mut self, offset: u64) -> std::io::Result<String>;
}

/// A job's body, as [`crate::UploadJob`] holds it.
pub enum Body {
    /// Read once, from its start (a generated body).
    Stream(Box<dyn AsyncRead + Send + Unpin>),
    /// A file, with its SHA-256 states ([`PrefixHashes::of_file`]).
    Seekable(Box<dyn SeekableBody>, Arc<PrefixHashes>),
    /// A body that holds what a resume needs itself (standard input).
    Held(Box<dyn HeldBody>),
}

impl AsyncRead for Body {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Body::Stream(body) => std::pin::Pin::new(body).poll_read(cx, buf),
            Body::Seekable(body, _) => std::pin::Pin::new(body).poll_read(cx, buf),
            Body::Held(body) => std::pin::Pin::new(body).poll_read(cx, buf),
        }
    }
}

/// Goes past the first `offset` bytes of a resumed body (which the server has already) and
/// returns their SHA-256 in hex: a seekable body goes to the state nearest `offset` and
/// hashes from there (nothing before it is read); another is read from its start.
pub(crate) async fn resume_body(
    body: &mut Body,
    offset: u64,
    buf: &mut [u8],
) -> std::io::Result<String> {
    match body {
        Body::Stream(body) => {
            let hash = ring::digest::Context::new(&ring::digest::SHA256);
            hash_to(body.as_mut(), hash, 0, offset, buf).await
        }
        Body::Held(body) => body.go_to(offset),
        Body::Seekable(body, known) => {
            let (start, hash) = known.before(offset);
            tokio::io::AsyncSeekExt::seek(body, std::io::SeekFrom::Start(start)).await?;
            hash_to(body.as_mut(), hash, start, offset, buf).await
        }
    }
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
        assert_eq!(
            digest,
            hex(ring::digest::digest(&ring::digest::SHA256, &data).as_ref())
        );
        let every = PrefixHashes::EVERY as usize;
        // A file goes to the state nearest the offset, then on from the offset; a stream
        // is read from its start.
        for offset in [0, 1, every - 1, every, every + 1, 2 * every, len - 1, len] {
            let expected =
                hex(ring::digest::digest(&ring::digest::SHA256, &data[..offset]).as_ref());
            let file = tokio::fs::File::open(&path).await.unwrap();
            let stream = std::io::Cursor::new(data.clone());
            for mut body in [
                Body::Seekable(Box::new(file), known.clone()),
                Body::Stream(Box::new(stream)),
            ] {
                let seekable = matches!(body, Body::Seekable(..));
                let got = resume_body(&mut body, offset as u64, &mut [0u8; 65536])
                    .await
                    .unwrap();
                assert_eq!(got, expected, "offset {offset}, states {seekable}");
                let mut rest = Vec::new();
                body.read_to_end(&mut rest).await.unwrap();
                assert_eq!(rest, &data[offset..], "the rest is left to send");
            }
        }
        let mut short = Body::Stream(Box::new(std::io::Cursor::new(data[..10].to_vec())));
        assert!(resume_body(&mut short, 11, &mut [0u8; 4]).await.is_err());
    }
}
