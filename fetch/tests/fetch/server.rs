//! A test origin on 127.0.0.1 (an ephemeral port): HTTPS with a certificate from a CA made
//! for the test (rcgen), HTTP/2 and HTTP/1.1 (or HTTP/1.1 only), or plain HTTP. Each test
//! gives it a route: what to answer to each request, including answers that stall or
//! trickle. It records every request it sees; dropping it ends its tasks.

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How the origin speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TLS, ALPN h2 and http/1.1.
    Https,
    /// TLS, ALPN http/1.1 only.
    HttpsH1,
    /// No TLS.
    Http,
}

/// A request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The origin's own address, for absolute URLs to itself.
    pub local: SocketAddr,
    pub path_and_query: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
}

/// What the origin answers.
pub enum Reply {
    /// A status, headers and pieces of body sent `gap` apart; then the body ends, or stays
    /// open forever if `stall`.
    Body {
        status: u16,
        headers: Vec<(String, String)>,
        pieces: Vec<Bytes>,
        gap: Duration,
        stall: bool,
    },
    /// No answer at all (the head never comes).
    StallHead,
}

impl Reply {
    /// A whole body with its Content-Length.
    pub fn full(status: u16, body: impl Into<Bytes>) -> Reply {
        let body = body.into();
        Reply::Body {
            status,
            headers: vec![("content-length".into(), body.len().to_string())],
            pieces: vec![body],
            gap: Duration::ZERO,
            stall: false,
        }
    }

    /// A body in pieces, without a Content-Length (chunked over HTTP/1.1).
    pub fn pieces(status: u16, pieces: Vec<Bytes>, gap: Duration) -> Reply {
        Reply::Body {
            status,
            headers: Vec::new(),
            pieces,
            gap,
            stall: false,
        }
    }

    /// A redirect.
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::full(status, "").header("location", location)
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Body { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }

    /// The body stays open after its pieces.
    pub fn then_stall(mut self) -> Reply {
        if let Reply::Body { stall, .. } = &mut self {
            *stall = true;
        }
        self
    }
}

type Route = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A running test origin.
pub struct Origin {
    pub addr: SocketAddr,
    transport: Transport,
    /// The CA that signed its certificate (for `Policy::extra_roots`).
    pub ca: CertificateDer<'static>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Aborting it drops the connection tasks it holds.
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Origin {
    /// Starts an origin with `route` on 127.0.0.1.
    pub async fn start(
        transport: Transport,
        route: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        let (ca, tls) = certificates(transport);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let route: Route = Arc::new(route);
        let accept = tokio::spawn(accept(listener, tls, route, seen.clone()));
        Origin {
            addr,
            transport,
            ca,
            seen,
            accept,
        }
    }

    /// `https://127.0.0.1:port{path}` (`http://` for plain HTTP).
    pub fn url(&self, path: &str) -> String {
        let scheme = match self.transport {
            Transport::Http => "http",
            Transport::Https | Transport::HttpsH1 => "https",
        };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

async fn accept(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    route: Route,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let mut connections = JoinSet::new();
    let Ok(local) = listener.local_addr() else {
        return;
    };
    while let Ok((socket, _)) = listener.accept().await {
        let (tls, route, seen) = (tls.clone(), route.clone(), seen.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let (route, seen) = (route.clone(), seen.clone());
                async move { Ok::<_, Infallible>(answer(local, request, &route, &seen).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(tls) => {
                    let Ok(stream) = tokio_rustls::TlsAcceptor::from(tls).accept(socket).await
                    else {
                        return;
                    };
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                }
            }
        });
    }
}

async fn answer(
    local: SocketAddr,
    request: http::Request<Incoming>,
    route: &Route,
    seen: &Mutex<Vec<Seen>>,
) -> http::Response<Channel> {
    let request = Seen {
        local,
        path_and_query: request
            .uri()
            .path_and_query()
            .map_or("/".into(), |p| p.to_string()),
        version: request.version(),
        headers: request.headers().clone(),
    };
    seen.lock().expect("not poisoned").push(request.clone());
    match route(&request) {
        Reply::StallHead => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            http::Response::new(Channel::closed())
        }
        Reply::Body {
            status,
            headers,
            pieces,
            gap,
            stall,
        } => {
            let (sender, body) = Channel::new();
            tokio::spawn(async move {
                for (i, piece) in pieces.into_iter().enumerate() {
                    if i > 0 && !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                    if sender.send(piece).await.is_err() {
                        return;
                    }
                }
                if stall {
                    sender.closed().await;
                }
            });
            let mut response = http::Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(body).expect("a test response")
        }
    }
}

/// A response body fed by a channel.
pub struct Channel(mpsc::Receiver<Bytes>);

impl Channel {
    fn new() -> (mpsc::Sender<Bytes>, Channel) {
        let (sender, receiver) = mpsc::channel(1);
        (sender, Channel(receiver))
    }

    fn closed() -> Channel {
        Channel::new().1
    }
}

impl hyper::body::Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|piece| piece.map(|p| Ok(Frame::data(p))))
    }
}

/// A CA, and the server configuration with a certificate it signed for 127.0.0.1, ::1 and
/// localhost (none for plain HTTP).
fn certificates(
    transport: Transport,
) -> (CertificateDer<'static>, Option<Arc<rustls::ServerConfig>>) {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "edge-fetch test CA");
    let ca_key = KeyPair::generate().expect("a key");
    let ca = ca_params.self_signed(&ca_key).expect("a CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let key = KeyPair::generate().expect("a key");
    let cert = CertificateParams::new(names)
        .expect("names")
        .signed_by(&key, &issuer)
        .expect("a certificate");
    let ca_der = ca.der().clone();
    if transport == Transport::Http {
        return (ca_der, None);
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("a server config");
    config.alpn_protocols = match transport {
        Transport::HttpsH1 => vec![b"http/1.1".to_vec()],
        _ => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    (ca_der, Some(Arc::new(config)))
}
