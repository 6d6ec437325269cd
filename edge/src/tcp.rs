//! HTTP/1.1 and HTTP/2 over TCP + TLS, on the same port number as QUIC: for clients without
//! HTTP/3 (most curl builds), networks that block UDP, and browsers, which always start over
//! TCP. The same router answers as over HTTP/3 (`http3::route`): jobs, the read API,
//! `/healthz`, plugins' routes. Every response says where HTTP/3 is (`Alt-Svc`).
//!
//! TLS 1.3 and 1.2 (modern suites only, rustls' defaults), ALPN `h2` and `http/1.1`, the
//! server's certificate (reloaded with it). A connection counts toward the same caps as
//! QUIC's before any TLS work, gets [`HANDSHAKE_TIMEOUT`] to finish its TLS handshake, over
//! HTTP/1.1 [`HEADER_TIMEOUT`] to send a request head, and is closed unless a request with a
//! valid token arrives within `auth.auth_timeout_secs` (as over QUIC).

use crate::connections::Connections;
use crate::http3::{route, Connection, TcpExchange, TcpFrame};
use crate::service::Service;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

/// How long a TCP connection has to finish its TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP/1.1 client has to send a request head.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Response body frames waiting for the client, at most (per request).
const BODY_FRAMES: usize = 8;

/// The TCP side of the server: a listener, its TLS configuration, and what its responses say
/// of HTTP/3.
#[derive(Debug)]
pub(crate) struct TcpServer {
    pub listener: TcpListener,
    pub tls: Arc<rustls::ServerConfig>,
    /// `h3=":PORT"; ma=86400`.
    pub alt_svc: HeaderValue,
}

impl TcpServer {
    /// Serves connections until the server drains, then lets running requests end. TCP
    /// connections count toward the same caps as QUIC's (`transport.max_connections`,
    /// `transport.max_connections_per_ip`), checked before any TLS work.
    pub(crate) async fn serve(
        self,
        service: Arc<Service>,
        caps: Arc<Connections>,
        shutdown: Shutdown,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.draining() => break,
                accepted = self.listener.accept() => accepted,
            };
            let (socket, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    debug!("TCP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match caps.admit_ip(remote.ip()) {
                Ok(slot) => slot,
                Err(reason) => {
                    debug!(%remote, "TCP connection refused: {reason}");
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let (acceptor, service, shutdown, alt_svc) = (
                acceptor.clone(),
                service.clone(),
                shutdown.clone(),
                self.alt_svc.clone(),
            );
            let span = tracing::debug_span!("tcp", %remote);
            connections.spawn(
                async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await;
                    let tls = match handshake {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => return debug!("TLS handshake failed: {e}"),
                        Err(_) => return debug!("TLS handshake timed out"),
                    };
                    let transport = match tls.get_ref().1.alpn_protocol() {
                        Some(b"h2") => "h2",
                        _ => "http/1.1",
                    };
                    let peer = remote.ip();
                    serve_connection(tls, transport, service, shutdown, alt_svc, peer).await;
                    drop(slot);
                }
                .instrument(span),
            );
        }
        connections.close();
        connections.wait().await;
    }
}

/// Serves one TLS connection's requests (HTTP/2 or HTTP/1.1, as the client speaks) until it
/// ends, or gracefully once the server drains.
async fn serve_connection(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    transport: &'static str,
    service: Arc<Service>,
    shutdown: Shutdown,
    alt_svc: HeaderValue,
    peer: std::net::IpAddr,
) {
    let authorised = CancellationToken::new();
    let auth_timeout = service.auth_timeout;
    let connection = Connection {
        service,
        window: None,
        authorised: authorised.clone(),
        shutdown: shutdown.clone(),
        peer,
    };
    let handler = hyper::service::service_fn(move |request| {
        serve_request(request, connection.clone(), transport, alt_svc.clone())
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    // Frames of up to 256 KiB: an upload's body costs fewer frames (the default is 16 KiB).
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(16 * 1024)
        .max_frame_size(256 * 1024);
    let served = builder.serve_connection(TokioIo::new(tls), handler);
    tokio::pin!(served);
    tokio::select! {
        result = served.as_mut() => {
            if let Err(e) = result {
                debug!("TCP connection ended: {e}");
            }
        }
        _ = shutdown.draining() => {
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
        // As over QUIC: a connection that brought no valid token in time is closed.
        () = unauthorised_for(auth_timeout, &authorised) => {
            debug!("no valid token within {auth_timeout:?}: connection closed");
        }
    }
}

/// Ends after `timeout` unless `authorised` is cancelled first (then never).
async fn unauthorised_for(timeout: Duration, authorised: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(timeout) => {}
        () = authorised.cancelled() => std::future::pending().await,
    }
}

/// Hands one request to the router, and turns what the router sends into hyper's response.
async fn serve_request(
    request: Request<Incoming>,
    connection: Connection,
    transport: &'static str,
    alt_svc: HeaderValue,
) -> Result<Response<ChannelBody>, Infallible> {
    let (parts, body) = request.into_parts();
    let head = parts.method == http::Method::HEAD;
    let (head_sender, head_receiver) = oneshot::channel();
    let (frames, frames_receiver) = mpsc::channel(BODY_FRAMES);
    let exchange = TcpExchange {
        head: Some(head_sender),
        body: Some(frames),
        request: body,
        early: None,
    };
    let stream = crate::http3::Stream::tcp(exchange, head, transport);
    tokio::spawn(route(Request::from_parts(parts, ()), stream, connection).in_current_span());
    let response = head_receiver.await.unwrap_or_else(|_| {
        // The router ended without an answer (a bug): say so rather than hang.
        Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(())
            .expect("a response of static parts is valid")
    });
    let (mut parts, ()) = response.into_parts();
    parts.headers.insert("alt-svc", alt_svc);
    Ok(Response::from_parts(parts, ChannelBody(frames_receiver)))
}

/// A response body fed by the router through a bounded channel: a slow client holds the
/// router back instead of piling up frames.
pub(crate) struct ChannelBody(mpsc::Receiver<TcpFrame>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}

/// Binds TCP on `addr` (the QUIC socket's address and port).
pub(crate) fn bind(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The rustls configuration for TCP: TLS 1.3 and 1.2 (rustls' modern suites), ALPN `h2` and
/// `http/1.1`, the server's certificate.
pub(crate) fn tls_config(
    certificates: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
