//! A response body as it streams in: decoded (gzip, deflate, br) piece by piece, never whole,
//! under the policy's size cap and its idle and total timeouts.

use crate::client::Connection;
use crate::error::{FetchError, Timeout};
use crate::timing::Deadline;
use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder};
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body as _, Incoming};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, ReadBuf};

/// The most a decoded piece holds.
const PIECE_BYTES: usize = 64 * 1024;

/// The body of a fetched response, read with [`Body::chunk`].
pub struct Body {
    source: Source,
    read: u64,
    max: u64,
    idle: Duration,
    deadline: Deadline,
    /// Keeps the connection up while the body is read; ends it when the body is dropped.
    _connection: Option<Connection>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("read", &self.read)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

enum Source {
    /// Nothing (more) to read.
    Done,
    /// After an error: reading on is an error too.
    Failed,
    /// No content coding: the wire's pieces as they arrive.
    Plain(Wire),
    /// Decoded through a decompressor.
    Decoded(Pin<Box<dyn AsyncRead + Send>>),
}

/// A content coding of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
}

impl Coding {
    /// The coding a `Content-Encoding` value names, if it is one `Body` decodes.
    pub(crate) fn parse(value: Option<&str>) -> Result<Coding, FetchError> {
        let Some(value) = value.map(str::trim) else {
            return Ok(Coding::Identity);
        };
        match value.to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(Coding::Identity),
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "deflate" => Ok(Coding::Deflate),
            "br" => Ok(Coding::Brotli),
            _ => Err(FetchError::Encoding {
                encoding: value.to_owned(),
            }),
        }
    }
}

/// What a body is read under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max: u64,
    pub(crate) idle: Duration,
    pub(crate) deadline: Deadline,
}

impl Body {
    /// A body with nothing in it (a 304).
    pub(crate) fn empty() -> Body {
        Body {
            source: Source::Done,
            read: 0,
            max: 0,
            idle: Duration::ZERO,
            deadline: Deadline::start(Duration::ZERO),
            _connection: None,
        }
    }

    /// The body of a response, decoded from `coding`.
    pub(crate) fn new(
        incoming: Incoming,
        coding: Coding,
        limits: Limits,
        connection: Connection,
    ) -> Body {
        let wire = Wire {
            incoming,
            piece: Bytes::new(),
        };
        let source = match coding {
            Coding::Identity => Source::Plain(wire),
            Coding::Gzip => Source::Decoded(Box::pin(GzipDecoder::new(wire))),
            Coding::Deflate => Source::Decoded(Box::pin(ZlibDecoder::new(wire))),
            Coding::Brotli => Source::Decoded(Box::pin(BrotliDecoder::new(wire))),
        };
        Body {
            source,
            read: 0,
            max: limits.max,
            idle: limits.idle,
            deadline: limits.deadline,
            _connection: Some(connection),
        }
    }

    /// The next piece of the decoded body, `None` at its end. Fails when the body grows past
    /// the policy's `max_bytes` (before handing out any byte past it), when no piece comes
    /// within the idle timeout, when the fetch's total timeout passes, or when the body
    /// cannot be read or decoded. After an error, the body stays failed.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        let result = self.next().await;
        match &result {
            Ok(None) => self.finish(Source::Done),
            Err(_) => self.finish(Source::Failed),
            Ok(Some(_)) => {}
        }
        result
    }

    /// The number of decoded bytes handed out so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    async fn next(&mut self) -> Result<Option<Bytes>, FetchError> {
        let room = match self.max {
            0 => PIECE_BYTES,
            max => usize::try_from(max.saturating_sub(self.read))
                .unwrap_or(usize::MAX)
                .saturating_add(1)
                .min(PIECE_BYTES),
        };
        let (idle, deadline) = (self.idle, self.deadline);
        let piece = match &mut self.source {
            Source::Done => return Ok(None),
            Source::Failed => {
                return Err(FetchError::Body {
                    source: io::Error::other("the body already failed"),
                })
            }
            Source::Plain(wire) => deadline.run(Timeout::Idle, idle, wire.piece()).await?,
            Source::Decoded(reader) => {
                deadline
                    .run(Timeout::Idle, idle, decoded_piece(reader.as_mut(), room))
                    .await?
            }
        };
        let piece = piece.map_err(|source| FetchError::Body { source })?;
        let Some(piece) = piece else {
            return Ok(None);
        };
        let read = self.read + piece.len() as u64;
        if self.max > 0 && read > self.max {
            return Err(FetchError::TooLarge { max: self.max });
        }
        self.read = read;
        Ok(Some(piece))
    }

    fn finish(&mut self, end: Source) {
        self.source = end;
        self._connection = None;
    }
}

/// Reads at most `room` decoded bytes (what one read gives, not waiting to fill them), `None`
/// at the end.
async fn decoded_piece(
    mut reader: Pin<&mut (dyn AsyncRead + Send)>,
    room: usize,
) -> io::Result<Option<Bytes>> {
    let mut buffer = BytesMut::with_capacity(room);
    let n = reader
        .as_mut()
        .take(room as u64)
        .read_buf(&mut buffer)
        .await?;
    Ok((n > 0).then(|| buffer.freeze()))
}

/// The body's bytes as they come off the connection, as a buffered reader for the decoders.
struct Wire {
    incoming: Incoming,
    /// What is left of the last data frame.
    piece: Bytes,
}

impl Wire {
    /// The next non-empty data piece, `None` at the end.
    async fn piece(&mut self) -> io::Result<Option<Bytes>> {
        if self.piece.is_empty() {
            std::future::poll_fn(|cx| self.poll_piece(cx)).await?;
        }
        let piece = std::mem::take(&mut self.piece);
        Ok((!piece.is_empty()).then_some(piece))
    }

    /// Fills `piece` from the next data frame unless it holds something; leaves it empty at
    /// the end.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.piece.is_empty() {
            match ready!(Pin::new(&mut self.incoming).poll_frame(cx)) {
                None => break,
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.piece = data;
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_piece(cx))?;
        let n = this.piece.len().min(buf.remaining());
        buf.put_slice(&this.piece[..n]);
        this.piece.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncBufRead for Wire {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        ready!(this.poll_piece(cx))?;
        Poll::Ready(Ok(&this.piece))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        self.get_mut().piece.advance(amt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codings() {
        assert_eq!(Coding::parse(None).ok(), Some(Coding::Identity));
        assert_eq!(Coding::parse(Some("GZIP")).ok(), Some(Coding::Gzip));
        assert_eq!(Coding::parse(Some("x-gzip")).ok(), Some(Coding::Gzip));
        assert_eq!(Coding::parse(Some("deflate")).ok(), Some(Coding::Deflate));
        assert_eq!(Coding::parse(Some(" br ")).ok(), Some(Coding::Brotli));
        assert_eq!(Coding::parse(Some("identity")).ok(), Some(Coding::Identity));
        for unknown in ["zstd", "gzip, br", "compress"] {
            assert!(
                matches!(
                    Coding::parse(Some(unknown)),
                    Err(FetchError::Encoding { .. })
                ),
                "{unknown}"
            );
        }
    }
}
