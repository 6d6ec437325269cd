//! One hop: a connection to the target's checked addresses (TCP, TLS with the URL's host as
//! the server name, HTTP/2 or HTTP/1.1 as ALPN chose), one GET, its response head.

use crate::error::{FetchError, Timeout};
use crate::policy::Policy;
use crate::target::{self, Target};
use crate::timing::Deadline;
use crate::Conditional;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use url::Url;

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("edge-fetch/", env!("CARGO_PKG_VERSION"));

/// The encodings `Body` decodes.
const ACCEPT_ENCODING: &str = "gzip, deflate, br";

/// The task driving a connection: ended (aborted) when dropped, so that a body dropped early
/// or a redirect leaves nothing behind.
#[derive(Debug)]
pub(crate) struct Connection(JoinHandle<()>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A request sender on either HTTP version.
enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// One exchange: resolves and checks the URL's host, connects to the checked addresses and
/// sends one GET; returns where it went, the response head (its body still on the wire) and
/// the connection it arrives on.
pub(crate) async fn get(
    url: Url,
    policy: &Policy,
    tls: &Arc<rustls::ClientConfig>,
    conditional: Option<&Conditional>,
    deadline: &Deadline,
) -> Result<(Target, http::Response<Incoming>, Connection), FetchError> {
    let (target, sender, connection) = deadline
        .run(Timeout::Connect, policy.connect_timeout, async {
            let target = target::resolve(url, policy).await?;
            let (sender, connection) = connect(&target, tls, policy.connect_timeout).await?;
            Ok::<_, FetchError>((target, sender, connection))
        })
        .await??;
    let request = request(&target, &sender, conditional)?;
    let response = deadline
        .run(
            Timeout::FirstByte,
            policy.first_byte_timeout,
            send(sender, request),
        )
        .await?
        .map_err(|source| FetchError::Http {
            host: target.host.clone(),
            source,
        })?;
    Ok((target, response, connection))
}

/// TCP to the first of the target's addresses that answers, then TLS and the HTTP handshake.
async fn connect(
    target: &Target,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<(Sender, Connection), FetchError> {
    let (socket, addr) = tcp(target, timeout).await?;
    if !target.tls {
        return handshake(target, socket, false).await;
    }
    let name = server_name(target)?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, socket)
        .await
        .map_err(|source| FetchError::Tls {
            host: target.host.clone(),
            source,
        })?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    tracing::debug!(%addr, h2, "TLS connected");
    handshake(target, stream, h2).await
}

/// TCP to the first address that answers. With several addresses, each try gets an equal
/// share of the connect timeout, so that one that swallows packets leaves time for the next.
async fn tcp(target: &Target, timeout: Duration) -> Result<(TcpStream, SocketAddr), FetchError> {
    let share = u32::try_from(target.addrs.len())
        .ok()
        .filter(|n| *n > 1 && !timeout.is_zero())
        .map(|n| timeout / n);
    let mut last = None;
    for &addr in &target.addrs {
        let attempt = async {
            match share {
                Some(share) => tokio::time::timeout(share, TcpStream::connect(addr))
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
                None => TcpStream::connect(addr).await,
            }
        };
        match attempt.await {
            Ok(socket) => {
                let _ = socket.set_nodelay(true);
                return Ok((socket, addr));
            }
            Err(source) => {
                tracing::debug!(%addr, "connect failed: {source}");
                last = Some(FetchError::Connect {
                    host: target.host.clone(),
                    addr,
                    source,
                });
            }
        }
    }
    Err(last.unwrap_or_else(|| FetchError::NoAddress {
        host: target.host.clone(),
    }))
}

/// The name the certificate must be valid for: the URL's host, a name or an address.
fn server_name(target: &Target) -> Result<ServerName<'static>, FetchError> {
    let name = match target.url.host() {
        Some(url::Host::Ipv4(v4)) => ServerName::IpAddress(std::net::IpAddr::V4(v4).into()),
        Some(url::Host::Ipv6(v6)) => ServerName::IpAddress(std::net::IpAddr::V6(v6).into()),
        _ => ServerName::try_from(target.host.clone()).map_err(|e| FetchError::Tls {
            host: target.host.clone(),
            source: std::io::Error::other(e),
        })?,
    };
    Ok(name)
}

async fn handshake<T>(target: &Target, io: T, h2: bool) -> Result<(Sender, Connection), FetchError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let fail = |source| FetchError::Http {
        host: target.host.clone(),
        source,
    };
    if h2 {
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(fail)?;
        Ok((Sender::H2(sender), drive(connection)))
    } else {
        let (sender, connection) = http1::handshake(io).await.map_err(fail)?;
        Ok((Sender::H1(sender), drive(connection)))
    }
}

fn drive<C>(connection: C) -> Connection
where
    C: std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    Connection(tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("fetch connection ended: {e}");
        }
    }))
}

/// The GET: no credentials, no cookies; conditional headers if asked.
fn request(
    target: &Target,
    sender: &Sender,
    conditional: Option<&Conditional>,
) -> Result<http::Request<Empty<Bytes>>, FetchError> {
    let url = &target.url;
    let uri = match sender {
        // HTTP/2 takes the scheme and authority from the URI (:scheme, :authority).
        Sender::H2(_) => url.as_str().to_owned(),
        // HTTP/1.1: origin form and a Host header.
        Sender::H1(_) => match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        },
    };
    let bad = |why: String| FetchError::BadUrl {
        url: url.to_string(),
        why,
    };
    let mut request = http::Request::get(uri)
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::ACCEPT, "*/*")
        .header(header::ACCEPT_ENCODING, ACCEPT_ENCODING);
    if let Sender::H1(_) = sender {
        let host = url.host_str().unwrap_or(&target.host);
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        request = request.header(header::HOST, authority);
    }
    if let Some(conditional) = conditional {
        let value = |text: &str| {
            HeaderValue::from_str(text).map_err(|_| bad(format!("a bad validator: {text:?}")))
        };
        if let Some(etag) = &conditional.etag {
            request = request.header(header::IF_NONE_MATCH, value(etag)?);
        }
        if let Some(date) = &conditional.last_modified {
            request = request.header(header::IF_MODIFIED_SINCE, value(date)?);
        }
    }
    request
        .body(Empty::new())
        .map_err(|e| bad(format!("it makes no request: {e}")))
}

async fn send(
    sender: Sender,
    request: http::Request<Empty<Bytes>>,
) -> Result<http::Response<Incoming>, hyper::Error> {
    match sender {
        Sender::H1(mut sender) => {
            sender.ready().await?;
            sender.send_request(request).await
        }
        Sender::H2(mut sender) => {
            sender.ready().await?;
            sender.send_request(request).await
        }
    }
}
