//! One request and its response, whatever carries them: an HTTP/3 request stream, or an
//! HTTP/1.1 or HTTP/2 request over TCP (served by hyper). The router and every handler speak
//! to a [`Stream`]; only this module knows the two transports.

use super::{H3Stream, RecvHalf as H3Recv, SendHalf as H3Send};
use bytes::{Buf, Bytes};
use h3::error::Code;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The most request body bytes read and dropped after an answer that came before the body
/// ended.
const LINGER_BYTES: u64 = 16 * 1024 * 1024;
/// The longest time spent reading and dropping them.
const LINGER_TIME: Duration = Duration::from_secs(10);
/// How long a stop waits for a read in flight to come back (the client is still sending).
const STOP_WAIT: Duration = Duration::from_secs(1);

/// A response body frame on its way to hyper (an error aborts the response).
pub(crate) type TcpFrame = Result<Frame<Bytes>, std::io::Error>;

/// A request's stream, with what its answer needs to know of the request.
pub(crate) struct Stream {
    inner: Inner,
    /// A `HEAD` request: answered like `GET`, without the body.
    pub head: bool,
    /// What carries it, as the job history says: `h3`, `h2` or `http/1.1`.
    pub transport: &'static str,
}

enum Inner {
    H3(Box<H3Stream>),
    Tcp(TcpExchange),
}

/// A request over TCP: where its response head and body go, and its body.
pub(crate) struct TcpExchange {
    /// The response head, for hyper (taken when sent).
    pub head: Option<oneshot::Sender<Response<()>>>,
    /// The response body's frames (dropped when finished).
    pub body: Option<mpsc::Sender<TcpFrame>>,
    /// The request body.
    pub request: Incoming,
    /// Body bytes read early (by [`Stream::take_body`]).
    pub early: Option<Bytes>,
}

/// Why a response could not go out: the client is gone.
#[derive(Debug)]
pub(crate) struct Gone;

impl Stream {
    /// An HTTP/3 request stream.
    pub(crate) fn h3(stream: H3Stream, head: bool) -> Stream {
        Stream {
            inner: Inner::H3(Box::new(stream)),
            head,
            transport: "h3",
        }
    }

    /// A request over TCP (`transport`: `h2` or `http/1.1`).
    pub(crate) fn tcp(exchange: TcpExchange, head: bool, transport: &'static str) -> Stream {
        Stream {
            inner: Inner::Tcp(exchange),
            head,
            transport,
        }
    }

    /// Sends the response head.
    pub(crate) async fn send_response(&mut self, response: Response<()>) -> Result<(), Gone> {
        match &mut self.inner {
            Inner::H3(h3) => h3.send_response(response).await.map_err(|_| Gone),
            Inner::Tcp(tcp) => match tcp.head.take() {
                Some(head) => head.send(response).map_err(|_| Gone),
                None => Err(Gone),
            },
        }
    }

    /// Sends part of the response body.
    pub(crate) async fn send_data(&mut self, data: Bytes) -> Result<(), Gone> {
        match &mut self.inner {
            Inner::H3(h3) => h3.send_data(data).await.map_err(|_| Gone),
            Inner::Tcp(tcp) => send_frame(&tcp.body, data).await,
        }
    }

    /// Ends the response body.
    pub(crate) async fn finish(&mut self) -> Result<(), Gone> {
        match &mut self.inner {
            Inner::H3(h3) => h3.finish().await.map_err(|_| Gone),
            Inner::Tcp(tcp) => {
                tcp.body = None;
                Ok(())
            }
        }
    }

    /// Aborts the response (the client sees an error, not a short body).
    pub(crate) async fn abort(&mut self) {
        match &mut self.inner {
            Inner::H3(h3) => h3.stop_stream(Code::H3_INTERNAL_ERROR),
            Inner::Tcp(tcp) => {
                if let Some(body) = tcp.body.take() {
                    let error = std::io::Error::other("the response broke off");
                    let _ = body.send(Err(error)).await;
                }
            }
        }
    }

    /// Reads and drops what is left of the request body once the response is complete (see
    /// [`RecvHalf::linger`]).
    pub(crate) async fn linger(&mut self) {
        match &mut self.inner {
            Inner::H3(h3) => linger_h3(h3).await,
            Inner::Tcp(tcp) => linger_tcp(&mut tcp.request).await,
        }
    }

    /// Says the body is welcome: over HTTP/1.1 a client that sent `Expect: 100-continue`
    /// (curl does above 1 MiB) gets `100 Continue` now instead of waiting a second for it.
    /// (hyper sends it when the body is first read: the body is read once, and what came
    /// is kept for the upload.)
    pub(crate) async fn take_body(&mut self) {
        if let Inner::Tcp(tcp) = &mut self.inner {
            let mut read = std::pin::pin!(tcp.request.frame());
            let first =
                std::future::poll_fn(|cx| match std::future::Future::poll(read.as_mut(), cx) {
                    std::task::Poll::Ready(frame) => std::task::Poll::Ready(Some(frame)),
                    std::task::Poll::Pending => std::task::Poll::Ready(None),
                })
                .await;
            if let Some(Some(Ok(frame))) = first {
                tcp.early = frame.into_data().ok();
            }
        }
    }

    /// The whole request body of a small request (a sign-in): `Err` with why when it is
    /// longer than `max` bytes, or broke off.
    pub(crate) async fn read_body(&mut self, max: usize) -> Result<Bytes, String> {
        let mut body = Vec::new();
        loop {
            let chunk = match &mut self.inner {
                Inner::H3(h3) => match h3.recv_data().await {
                    Ok(Some(mut data)) => Some(data.copy_to_bytes(data.remaining())),
                    Ok(None) => None,
                    Err(e) => return Err(e.to_string()),
                },
                Inner::Tcp(tcp) => match tcp.early.take() {
                    Some(early) => Some(early),
                    None => loop {
                        match tcp.request.frame().await {
                            None => break None,
                            Some(Err(e)) => return Err(e.to_string()),
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    break Some(data);
                                }
                            }
                        }
                    },
                },
            };
            let Some(chunk) = chunk else {
                return Ok(Bytes::from(body));
            };
            if body.len() + chunk.len() > max {
                return Err(format!("the body is longer than {max} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
    }

    /// The response's and the request body's halves, for an upload.
    pub(crate) fn split(self) -> (SendHalf, RecvHalf) {
        match self.inner {
            Inner::H3(h3) => {
                let (send, recv) = h3.split();
                (SendHalf::H3(Box::new(send)), RecvHalf::H3(Box::new(recv)))
            }
            Inner::Tcp(tcp) => (
                SendHalf::Tcp {
                    head: tcp.head,
                    body: tcp.body,
                },
                RecvHalf::Tcp(tcp.request, tcp.early),
            ),
        }
    }
}

async fn send_frame(body: &Option<mpsc::Sender<TcpFrame>>, data: Bytes) -> Result<(), Gone> {
    match body {
        Some(body) => body.send(Ok(Frame::data(data))).await.map_err(|_| Gone),
        None => Err(Gone),
    }
}

/// The response of an upload: its body (the job's events), and its head when it was not
/// sent before the split (an answer that waits for the request body's end).
pub(crate) enum SendHalf {
    H3(Box<H3Send>),
    Tcp {
        head: Option<oneshot::Sender<Response<()>>>,
        body: Option<mpsc::Sender<TcpFrame>>,
    },
}

impl SendHalf {
    /// Sends the response head.
    pub(crate) async fn send_response(&mut self, response: Response<()>) -> Result<(), Gone> {
        match self {
            SendHalf::H3(h3) => h3.send_response(response).await.map_err(|_| Gone),
            SendHalf::Tcp { head, .. } => match head.take() {
                Some(head) => head.send(response).map_err(|_| Gone),
                None => Err(Gone),
            },
        }
    }

    /// Sends part of the body.
    pub(crate) async fn send_data(&mut self, data: Bytes) -> Result<(), Gone> {
        match self {
            SendHalf::H3(h3) => h3.send_data(data).await.map_err(|_| Gone),
            SendHalf::Tcp { body, .. } => send_frame(body, data).await,
        }
    }

    /// Ends the body.
    pub(crate) async fn finish(&mut self) {
        match self {
            SendHalf::H3(h3) => {
                let _ = h3.finish().await;
            }
            SendHalf::Tcp { body, .. } => *body = None,
        }
    }
}

/// The request body of an upload.
pub(crate) enum RecvHalf {
    H3(Box<H3Recv>),
    /// The body, and bytes of it read early.
    Tcp(Incoming, Option<Bytes>),
}

impl RecvHalf {
    /// The next piece of the body: `Ok(None)` at its end, `Err` when it broke off.
    pub(crate) async fn recv_data(&mut self) -> Result<Option<Bytes>, String> {
        match self {
            RecvHalf::H3(h3) => match h3.recv_data().await {
                Ok(Some(mut data)) => Ok(Some(data.copy_to_bytes(data.remaining()))),
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
            RecvHalf::Tcp(_, early @ Some(_)) => Ok(early.take()),
            RecvHalf::Tcp(body, None) => loop {
                match body.frame().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(e.to_string()),
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data));
                        }
                        // Trailers: nothing to read.
                    }
                }
            },
        }
    }

    /// Reads and drops what is left of the body once the response is complete, like nginx's
    /// lingering close: a client still sending (`curl -T` of a large file refused early)
    /// reads the answer instead of an error. Past [`LINGER_BYTES`] or [`LINGER_TIME`] the
    /// body is stopped (HTTP/3: STOP_SENDING with H3_NO_ERROR, RFC 9114 §4.1.1; over TCP the
    /// body is dropped: HTTP/2 resets the stream, HTTP/1.1 closes the connection).
    pub(crate) async fn linger(&mut self) {
        match self {
            RecvHalf::H3(h3) => linger_h3(h3).await,
            RecvHalf::Tcp(body, _) => linger_tcp(body).await,
        }
    }

    /// Stops a body that broke its own rules (longer than its content-length): HTTP/3 with
    /// H3_MESSAGE_ERROR; over TCP the body is dropped unread.
    pub(crate) async fn stop_malformed(&mut self) {
        if let RecvHalf::H3(h3) = self {
            stop(h3, Code::H3_MESSAGE_ERROR).await;
        }
    }
}

async fn linger_h3<S: h3::quic::RecvStream>(stream: &mut h3::server::RequestStream<S, Bytes>) {
    let drain = async {
        let mut left = LINGER_BYTES;
        loop {
            match stream.recv_data().await {
                Ok(Some(data)) => match left.checked_sub(data.remaining() as u64) {
                    Some(rest) => left = rest,
                    None => return false,
                },
                // Ended, or reset by the client: nothing to stop.
                Ok(None) | Err(_) => return true,
            }
        }
    };
    let ended = tokio::time::timeout(LINGER_TIME, drain)
        .await
        .unwrap_or(false);
    if !ended {
        tracing::debug!("request body still coming after the response: stopped");
        stop(stream, Code::H3_NO_ERROR).await;
    }
}

async fn linger_tcp(body: &mut Incoming) {
    let drain = async {
        let mut left = LINGER_BYTES;
        while let Some(Ok(frame)) = body.frame().await {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            match left.checked_sub(len) {
                Some(rest) => left = rest,
                None => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// Stops a request body the client is still sending with STOP_SENDING `code`. A read may
/// still be in flight (h3 returns buffered data without waiting for it): the stop then goes
/// out once that read is back (see `h3guard::Guarded`). So the body is read on (what h3 had
/// buffered, then the read in flight) until the stop is out, when reads end with an error
/// (`Guarded` reads nothing more), for at most [`STOP_WAIT`]: a stream dropped before its
/// stop went out would be stopped with code 0.
async fn stop<S: h3::quic::RecvStream>(
    stream: &mut h3::server::RequestStream<S, Bytes>,
    code: Code,
) {
    stream.stop_sending(code);
    let until_stopped = async { while let Ok(Some(_)) = stream.recv_data().await {} };
    let _ = tokio::time::timeout(STOP_WAIT, until_stopped).await;
}
