//! A guard around h3-quinn's receive streams.
//!
//! h3 0.0.8 buffers a whole non-DATA frame before it checks the frame's size, so a peer that
//! declares a 1 GiB HEADERS (or unknown) frame on a request or control stream would grow
//! server memory by whatever it sends. The guard reads each frame header (type and length,
//! RFC 9114 §7.1) as the bytes pass by, and closes the connection with H3_EXCESSIVE_LOAD
//! (§8.1) as soon as a frame other than DATA declares more than [`MAX_FRAME`] bytes — before
//! its payload is buffered. DATA frames (request bodies) pass at any size: h3 streams them.
//!
//! It also checks the pseudo-headers of each request's first HEADERS frame (RFC 9114 §4.3,
//! which h3 0.0.8 does not: `h3fields`), aborting a malformed request's stream with
//! H3_MESSAGE_ERROR before h3 sees it; and it holds the [`Gate`] that refuses request streams
//! at or above the GOAWAY id (RFC 9114 §5.2).

use crate::h3fields::{self, Malformed};
use bytes::{Buf, Bytes};
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tracing::{debug, warn};

/// The largest non-DATA frame accepted (a HEADERS frame is at most 16 KiB by our
/// `max_field_section_size`; h3 answers 431 above that, and this leaves it room to).
pub(crate) const MAX_FRAME: u64 = 64 * 1024;

/// H3_EXCESSIVE_LOAD (RFC 9114 §8.1).
const H3_EXCESSIVE_LOAD: u64 = 0x107;

/// H3_REQUEST_REJECTED (RFC 9114 §8.1).
const H3_REQUEST_REJECTED: u64 = 0x10b;

/// H3_MESSAGE_ERROR (RFC 9114 §8.1).
const H3_MESSAGE_ERROR: u64 = 0x10e;

/// HTTP/3 frame type DATA.
const DATA: u64 = 0x0;

/// HTTP/3 frame type HEADERS.
const HEADERS: u64 = 0x1;

/// Client-initiated bidirectional stream ids go up in steps of 4 (RFC 9000 §2.1).
const NEXT_REQUEST: u64 = 4;

/// Which request streams a connection still takes: all until [`Gate::close`], then only those
/// below the GOAWAY id it returned.
#[derive(Debug)]
pub(crate) struct Gate {
    /// The id above the last request stream accepted (0 before the first).
    next: AtomicU64,
    /// The GOAWAY id once sent; `u64::MAX` until then.
    goaway: AtomicU64,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            next: AtomicU64::new(0),
            goaway: AtomicU64::new(u64::MAX),
        }
    }

    /// Closes the gate and returns the GOAWAY id: the id above the last request accepted.
    /// Every request below it was handed to h3 and is answered; every one at or above it is
    /// refused with H3_REQUEST_REJECTED, unprocessed, so a client may retry it elsewhere.
    pub(crate) fn close(&self) -> u64 {
        let id = self.next.load(Ordering::SeqCst);
        self.goaway.fetch_min(id, Ordering::SeqCst);
        self.goaway.load(Ordering::SeqCst)
    }

    /// Admits a request stream (recording it) or says it comes too late.
    fn admit(&self, id: u64) -> bool {
        if id >= self.goaway.load(Ordering::SeqCst) {
            return false;
        }
        self.next.fetch_max(id + NEXT_REQUEST, Ordering::SeqCst);
        true
    }
}

/// Unidirectional stream type: control (RFC 9114 §6.2.1).
const CONTROL_STREAM: u64 = 0x0;

/// h3-quinn's connection (or its stream opener, `O`), handing out guarded streams.
pub(crate) struct Streams<O> {
    inner: O,
    quic: quinn::Connection,
    gate: Arc<Gate>,
}

/// A guarded h3-quinn connection, for h3's server.
pub(crate) type Connection = Streams<h3_quinn::Connection>;

impl Connection {
    /// Wraps a QUIC connection for h3.
    pub(crate) fn new(quic: quinn::Connection) -> Connection {
        Streams {
            inner: h3_quinn::Connection::new(quic.clone()),
            quic,
            gate: Arc::new(Gate::new()),
        }
    }

    /// The gate of this connection's request streams.
    pub(crate) fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }
}

impl<B: Buf> quic::Connection<B> for Connection {
    type RecvStream = Guarded<h3_quinn::RecvStream>;
    type OpenStreams = Streams<h3_quinn::OpenStreams>;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        let stream = ready!(quic::Connection::<B>::poll_accept_recv(&mut self.inner, cx))?;
        Poll::Ready(Ok(Guarded::uni(stream, self.quic.clone())))
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        loop {
            let mut stream = ready!(quic::Connection::<B>::poll_accept_bidi(&mut self.inner, cx))?;
            let id = quic::RecvStream::recv_id(&stream).into_inner();
            if self.gate.admit(id) {
                return Poll::Ready(Ok(Guarded::bidi(stream, self.quic.clone())));
            }
            // After GOAWAY: refused unprocessed (RFC 9114 §5.2), before h3 sees it.
            debug!(stream = id, "request after GOAWAY refused");
            stream.abort(H3_REQUEST_REJECTED);
        }
    }

    fn opener(&self) -> Self::OpenStreams {
        Streams {
            inner: quic::Connection::<B>::opener(&self.inner),
            quic: self.quic.clone(),
            gate: self.gate.clone(),
        }
    }
}

/// Opening streams (h3 needs it; the server opens only its control and QPACK streams).
impl<B, O> quic::OpenStreams<B> for Streams<O>
where
    B: Buf,
    O: quic::OpenStreams<
        B,
        BidiStream = h3_quinn::BidiStream<B>,
        SendStream = h3_quinn::SendStream<B>,
    >,
{
    type BidiStream = Guarded<h3_quinn::BidiStream<B>>;
    type SendStream = h3_quinn::SendStream<B>;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        let stream = ready!(self.inner.poll_open_bidi(cx))?;
        Poll::Ready(Ok(Guarded::bidi(stream, self.quic.clone())))
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        self.inner.poll_open_send(cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.inner.close(code, reason)
    }
}

/// A stream whose received frames are watched.
pub(crate) struct Guarded<S> {
    inner: S,
    watch: FrameWatch,
    quic: quinn::Connection,
    /// The inner stream's last read was left pending. h3 may return buffered data while a
    /// read is in flight, and h3-quinn's `stop_sending` then finds no stream and panics; a
    /// stop asked for meanwhile waits in `stop` until the read is back.
    reading: bool,
    /// A STOP_SENDING code to send once the read in flight is back.
    stop: Option<u64>,
    /// The code of the STOP_SENDING sent: later reads end at once with it, without reading
    /// the stopped stream (h3 would take its end for a frame cut short, a connection error).
    stopped: Option<u64>,
}

impl<S> Guarded<S> {
    fn new(inner: S, watch: FrameWatch, quic: quinn::Connection) -> Guarded<S> {
        Guarded {
            inner,
            watch,
            quic,
            reading: false,
            stop: None,
            stopped: None,
        }
    }

    fn uni(inner: S, quic: quinn::Connection) -> Guarded<S> {
        Guarded::new(inner, FrameWatch::uni(), quic)
    }

    fn bidi(inner: S, quic: quinn::Connection) -> Guarded<S> {
        Guarded::new(inner, FrameWatch::request(), quic)
    }
}

/// Ends a stream in both directions it has, with an error code.
pub(crate) trait Abort {
    fn abort(&mut self, code: u64);
}

impl Abort for h3_quinn::RecvStream {
    fn abort(&mut self, code: u64) {
        quic::RecvStream::stop_sending(self, code);
    }
}

impl<B: Buf> Abort for h3_quinn::BidiStream<B> {
    fn abort(&mut self, code: u64) {
        quic::RecvStream::stop_sending(self, code);
        quic::SendStream::<B>::reset(self, code);
    }
}

impl<S: quic::RecvStream<Buf = Bytes> + Abort> quic::RecvStream for Guarded<S> {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        if let Some(error_code) = self.stopped {
            return Poll::Ready(Err(StreamErrorIncoming::StreamTerminated { error_code }));
        }
        let polled = self.inner.poll_data(cx);
        self.reading = polled.is_pending();
        if !self.reading {
            if let Some(code) = self.stop.take() {
                self.inner.stop_sending(code);
                self.stopped = Some(code);
            }
        }
        let data = ready!(polled)?;
        if let Some(bytes) = &data {
            match self.watch.feed(bytes) {
                Ok(()) => {}
                Err(Verdict::Malformed(malformed)) => {
                    // RFC 9114 §4.1.2: a stream error of type H3_MESSAGE_ERROR.
                    debug!("malformed request: {malformed}");
                    self.inner.abort(H3_MESSAGE_ERROR);
                    return Poll::Ready(Err(StreamErrorIncoming::StreamTerminated {
                        error_code: H3_MESSAGE_ERROR,
                    }));
                }
                Err(Verdict::Excess(excess)) => {
                    warn!(
                        frame_type = excess.frame_type,
                        declared = excess.length,
                        "peer declared an oversized HTTP/3 frame; closing the connection"
                    );
                    self.quic.close(
                        quinn::VarInt::from_u32(H3_EXCESSIVE_LOAD as u32),
                        b"frame too large",
                    );
                    return Poll::Ready(Err(StreamErrorIncoming::ConnectionErrorIncoming {
                        connection_error: ConnectionErrorIncoming::ApplicationClose {
                            error_code: H3_EXCESSIVE_LOAD,
                        },
                    }));
                }
            }
        }
        Poll::Ready(Ok(data))
    }

    fn stop_sending(&mut self, error_code: u64) {
        match self.reading {
            true => self.stop = Some(error_code),
            false => {
                self.inner.stop_sending(error_code);
                self.stopped = Some(error_code);
            }
        }
    }

    fn recv_id(&self) -> StreamId {
        self.inner.recv_id()
    }
}

impl<B: Buf, S: quic::SendStream<B>> quic::SendStream<B> for Guarded<S> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.inner.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.inner.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.inner.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.inner.reset(reset_code)
    }

    fn send_id(&self) -> StreamId {
        self.inner.send_id()
    }
}

impl<B: Buf> quic::BidiStream<B> for Guarded<h3_quinn::BidiStream<B>> {
    type SendStream = h3_quinn::SendStream<B>;
    type RecvStream = Guarded<h3_quinn::RecvStream>;

    fn split(self) -> (Self::SendStream, Self::RecvStream) {
        let (send, recv) = self.inner.split();
        (send, Guarded::new(recv, self.watch, self.quic))
    }
}

/// A frame that declared too many bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Excess {
    /// The frame's type.
    pub frame_type: u64,
    /// The length it declared.
    pub length: u64,
}

/// What stops a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A non-DATA frame declared too many bytes: the connection closes.
    Excess(Excess),
    /// A request's field section breaks RFC 9114 §4.3: the stream is aborted.
    Malformed(Malformed),
}

/// Follows the frame headers of one stream as its bytes arrive, in pieces of any size.
#[derive(Debug, Clone)]
pub(crate) struct FrameWatch {
    state: Watch,
    varint: Varint,
    /// A request stream's first HEADERS payload while it arrives (at most [`MAX_FRAME`]
    /// bytes); `None` when there is none to check (any more).
    headers: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// The first varint of a unidirectional stream: its type.
    StreamType,
    /// A frame's type.
    FrameType,
    /// A frame's length, after its type.
    FrameLength { frame_type: u64 },
    /// Inside a frame's payload.
    Payload { remaining: u64 },
    /// Inside a request's first HEADERS payload, which is kept to be checked.
    Headers { remaining: u64 },
    /// A stream that carries no frames we guard (QPACK, unknown types): pass everything.
    Ignore,
}

impl FrameWatch {
    /// A unidirectional stream: a stream type, then (for the control stream) frames.
    pub(crate) fn uni() -> FrameWatch {
        FrameWatch {
            state: Watch::StreamType,
            varint: Varint::default(),
            headers: None,
        }
    }

    /// A request stream: frames from the first byte.
    pub(crate) fn request() -> FrameWatch {
        FrameWatch {
            state: Watch::FrameType,
            varint: Varint::default(),
            headers: Some(Vec::new()),
        }
    }

    /// Follows `bytes`; fails on the first oversized non-DATA frame header, or a malformed
    /// request field section.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Verdict> {
        while !bytes.is_empty() {
            match self.state {
                Watch::Ignore => return Ok(()),
                Watch::Headers { remaining } => {
                    let take = remaining.min(bytes.len() as u64);
                    let (payload, rest) = bytes.split_at(take as usize);
                    bytes = rest;
                    let kept = self.headers.as_mut().expect("kept while in Headers");
                    kept.extend_from_slice(payload);
                    self.state = match remaining - take {
                        0 => {
                            let section = self.headers.take().expect("kept while in Headers");
                            h3fields::check_request(&section).map_err(Verdict::Malformed)?;
                            Watch::FrameType
                        }
                        left => Watch::Headers { remaining: left },
                    };
                }
                Watch::Payload { remaining } => {
                    let take = remaining.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.state = match remaining - take {
                        0 => Watch::FrameType,
                        left => Watch::Payload { remaining: left },
                    };
                }
                Watch::StreamType | Watch::FrameType | Watch::FrameLength { .. } => {
                    let (used, value) = self.varint.feed(bytes);
                    bytes = &bytes[used..];
                    let Some(value) = value else { continue };
                    self.state = match self.state {
                        Watch::StreamType if value == CONTROL_STREAM => Watch::FrameType,
                        Watch::StreamType => Watch::Ignore,
                        Watch::FrameType => Watch::FrameLength { frame_type: value },
                        Watch::FrameLength { frame_type } => {
                            if frame_type != DATA && value > MAX_FRAME {
                                return Err(Verdict::Excess(Excess {
                                    frame_type,
                                    length: value,
                                }));
                            }
                            match (value, frame_type == HEADERS && self.headers.is_some()) {
                                (0, true) => {
                                    self.headers = None;
                                    h3fields::check_request(&[]).map_err(Verdict::Malformed)?;
                                    Watch::FrameType
                                }
                                (0, false) => Watch::FrameType,
                                (n, true) => Watch::Headers { remaining: n },
                                (n, false) => Watch::Payload { remaining: n },
                            }
                        }
                        other => other,
                    };
                }
            }
        }
        Ok(())
    }
}

/// A QUIC variable-length integer (RFC 9000 §16) read a byte at a time.
#[derive(Debug, Clone, Copy, Default)]
struct Varint {
    value: u64,
    /// Bytes still to read; 0 before the first byte.
    left: u8,
}

impl Varint {
    /// Reads from `bytes`; returns how many bytes it used and the value once complete.
    fn feed(&mut self, bytes: &[u8]) -> (usize, Option<u64>) {
        for (i, &b) in bytes.iter().enumerate() {
            if self.left == 0 {
                self.left = 1 << (b >> 6);
                self.value = u64::from(b & 0x3f);
            } else {
                self.value = (self.value << 8) | u64::from(b);
            }
            self.left -= 1;
            if self.left == 0 {
                let value = self.value;
                *self = Varint::default();
                return (i + 1, Some(value));
            }
        }
        (bytes.len(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_wire::{frame_header, varint};

    fn frame(frame_type: u64, payload_len: u64, payload: &[u8]) -> Vec<u8> {
        [frame_header(frame_type, payload_len), payload.to_vec()].concat()
    }

    /// Feeds `bytes` in pieces of `piece` bytes.
    fn feed(watch: &mut FrameWatch, bytes: &[u8], piece: usize) -> Result<(), Verdict> {
        bytes
            .chunks(piece.max(1))
            .try_for_each(|chunk| watch.feed(chunk))
    }

    #[test]
    fn normal_requests_pass_however_they_are_cut() {
        let section = crate::h3fields::tests::section(&[
            (":method", "PUT"),
            (":scheme", "https"),
            (":path", "/v1/jobs/stats"),
            ("x-pad", &"x".repeat(260)),
        ]);
        let headers = frame(0x1, section.len() as u64, &section);
        let body = frame(DATA, 5_000_000, &[]);
        for piece in [1, 2, 3, 7, 1000] {
            let mut watch = FrameWatch::request();
            feed(&mut watch, &headers, piece).unwrap();
            feed(&mut watch, &body, piece).unwrap();
            assert_eq!(
                watch.state,
                Watch::Payload {
                    remaining: 5_000_000
                }
            );
        }
    }

    #[test]
    fn an_oversized_non_data_frame_is_caught_at_its_header() {
        for frame_type in [0x1, 0x21, 0x7] {
            let header = frame(frame_type, 1 << 30, &[]);
            for piece in [1, 3, 100] {
                let mut watch = FrameWatch::request();
                let err = feed(&mut watch, &header, piece).unwrap_err();
                assert_eq!(
                    err,
                    Verdict::Excess(Excess {
                        frame_type,
                        length: 1 << 30
                    })
                );
            }
        }
        // After a normal frame too.
        let mut watch = FrameWatch::request();
        let section = crate::h3fields::tests::section(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
        ]);
        let bytes = [
            frame(0x1, section.len() as u64, &section),
            frame(DATA, 2, b"hi"),
            frame(0x21, MAX_FRAME + 1, &[]),
        ]
        .concat();
        assert!(feed(&mut watch, &bytes, 1).is_err());
    }

    #[test]
    fn a_malformed_first_headers_frame_is_caught_however_it_is_cut() {
        let section = crate::h3fields::tests::section(&[
            (":method", "GET"),
            ("accept", "*/*"),
            (":scheme", "https"),
            (":path", "/"),
        ]);
        for piece in [1, 5, 1000] {
            let mut watch = FrameWatch::request();
            let bytes = frame(0x1, section.len() as u64, &section);
            assert!(matches!(
                feed(&mut watch, &bytes, piece),
                Err(Verdict::Malformed(Malformed::PseudoAfterRegular))
            ));
        }
        // Only the first HEADERS frame is a request's header section (later ones: trailers).
        let good = crate::h3fields::tests::section(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/"),
        ]);
        let mut watch = FrameWatch::request();
        let bytes = [
            frame(0x1, good.len() as u64, &good),
            frame(0x1, section.len() as u64, &section),
        ]
        .concat();
        assert_eq!(feed(&mut watch, &bytes, 3), Ok(()));
    }

    #[test]
    fn control_streams_are_watched_and_others_ignored() {
        let settings = frame(0x4, 6, &[1, 2, 3, 4, 5, 6]);
        let huge = frame(0x21, 1 << 40, &[]);
        let mut control = FrameWatch::uni();
        assert!(feed(
            &mut control,
            &[varint(CONTROL_STREAM), settings, huge.clone()].concat(),
            2
        )
        .is_err());
        let mut qpack = FrameWatch::uni();
        assert!(feed(&mut qpack, &[varint(0x2), huge].concat(), 2).is_ok());
    }
}
