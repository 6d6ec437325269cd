//! Standard input as a job's body, holding the bytes the job may need again: all of them
//! until the server commits (a job refused with `rate_limited` is sent again from its first
//! byte), then those after the last committed offset the server told (`committed`'s
//! `offset`), with the SHA-256 of those before: a cut job resumes from them, as a file does
//! from its start. At most [`HOLD_BYTES`] are held; past that the job can no longer be
//! resumed (nor sent again), and what was held is let go.

use edge_client::HeldBody;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncRead;

/// The most bytes of standard input held: what a job has in flight and not yet committed
/// (the QUIC windows, the server's batch) is a few to twenty-odd MiB.
pub(crate) const HOLD_BYTES: usize = 32 * 1024 * 1024;

/// Standard input, shared by the attempts of one job.
pub(crate) struct Held {
    state: Mutex<State>,
}

struct State {
    stdin: tokio::io::Stdin,
    /// The bytes from `from` on, read and not yet known committed.
    held: Vec<u8>,
    from: u64,
    /// The SHA-256 of the bytes before `from`.
    before: ring::digest::Context,
    /// Where the reader is (a byte of the body).
    at: u64,
    /// Still holding (not past [`HOLD_BYTES`]).
    holding: bool,
    /// An attempt is over: the reader gives nothing until the next one starts.
    frozen: bool,
}

impl Held {
    pub(crate) fn new() -> Held {
        Held {
            state: Mutex::new(State {
                stdin: tokio::io::stdin(),
                held: Vec::new(),
                from: 0,
                before: ring::digest::Context::new(&ring::digest::SHA256),
                at: 0,
                holding: true,
                frozen: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain buffers and flags: a panic while locked leaves them usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new attempt reads from the first byte (a job refused before any commit).
    pub(crate) fn rewind(&self) {
        let mut state = self.lock();
        state.at = state.from;
        state.frozen = false;
    }

    /// Ends an attempt; whether it can be sent again from its first byte.
    pub(crate) fn freeze(&self) -> bool {
        let mut state = self.lock();
        state.frozen = true;
        state.holding && state.from == 0
    }

    /// Whether a cut job can go on from what is held.
    pub(crate) fn can_resume(&self) -> bool {
        self.lock().holding
    }

    /// The server committed the bytes before `offset`: they are let go (hashed).
    pub(crate) fn committed(&self, offset: u64) {
        let mut state = self.lock();
        let state = &mut *state;
        if !state.holding || offset <= state.from {
            return;
        }
        let done = usize::try_from(offset - state.from)
            .unwrap_or(usize::MAX)
            .min(state.held.len());
        state.before.update(&state.held[..done]);
        state.held.drain(..done);
        state.from += done as u64;
    }
}

/// A reader of [`Held`] standard input, for one attempt.
pub(crate) struct HeldReader(pub Arc<Held>);

impl AsyncRead for HeldReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut state = self.0.lock();
        let state = &mut *state;
        if state.frozen {
            return std::task::Poll::Ready(Ok(()));
        }
        let end = state.from + state.held.len() as u64;
        if state.at < end {
            let start = usize::try_from(state.at.saturating_sub(state.from)).unwrap_or(0);
            let n = buf.remaining().min(state.held.len() - start);
            buf.put_slice(&state.held[start..start + n]);
            state.at += n as u64;
            return std::task::Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut state.stdin).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        state.at += new.len() as u64;
        if state.holding {
            if state.held.len() + new.len() > HOLD_BYTES {
                state.holding = false;
                state.held = Vec::new();
            } else {
                state.held.extend_from_slice(new);
            }
        }
        polled
    }
}

impl HeldBody for HeldReader {
    fn go_to(&mut self, offset: u64) -> std::io::Result<String> {
        let mut state = self.0.lock();
        let end = state.from + state.held.len() as u64;
        if !state.holding || offset < state.from || offset > end {
            return Err(std::io::Error::other(format!(
                "standard input cannot be read again, and the client no longer holds byte {offset} (it holds at most {} MiB since the last commit): send it again as a new job",
                HOLD_BYTES / (1024 * 1024)
            )));
        }
        let mut hash = state.before.clone();
        let upto = usize::try_from(offset - state.from).unwrap_or(0);
        hash.update(&state.held[..upto]);
        state.at = offset;
        state.frozen = false;
        Ok(edge_client::digest::hex(hash.finish().as_ref()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sha256(bytes: &[u8]) -> String {
        edge_client::digest::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
    }

    #[test]
    fn a_resume_goes_on_from_the_held_bytes_with_the_hash_of_those_before() {
        let held = Arc::new(Held::new());
        held.lock().held = b"abcdefgh".to_vec();
        held.committed(3);
        {
            let state = held.lock();
            assert_eq!((state.from, state.held.as_slice()), (3, &b"defgh"[..]));
        }
        let mut reader = HeldReader(held.clone());
        assert_eq!(reader.go_to(5).unwrap(), sha256(b"abcde"));
        assert_eq!(reader.go_to(3).unwrap(), sha256(b"abc"));
        assert_eq!(reader.go_to(8).unwrap(), sha256(b"abcdefgh"));
        // Let go of: the bytes before the last commit, and what was never read.
        assert!(reader.go_to(2).is_err());
        assert!(reader.go_to(9).is_err());
        assert!(held.can_resume());
        assert!(
            !held.freeze(),
            "past a commit, a refused job is not sent again whole"
        );
    }
}
