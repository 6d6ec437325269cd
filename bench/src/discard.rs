//! `edge-bench discard`: a server that reads every upload and drops it: over HTTP/3 it
//! answers `200` with `{"bytes":N}`, over `edge/1` `accepted` then `done`. It answers
//! `GET /bytes/{n}` with `n` bytes from memory, and with `--file-bytes N` serves such bytes
//! as blob `N` (`/v1/tasks`, `/v1/blobs/N`, with their digest). It shows what a client alone
//! can push and pull over QUIC on this machine: the upload and download rows into and from
//! edge are compared with it, client for client.
//!
//! Same stack as the server (quinn, h3 0.0.8, rustls with ring, TLS 1.3) and the same
//! flow-control windows as edge's defaults (16 MiB per stream; 8 MiB per connection, the most
//! edge grows a connection's window to), with the dev certificate edge generated in the certs
//! dir.

use anyhow::Context as _;
use bytes::{Buf, Bytes};
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The ready line's prefix, followed by the address.
pub const READY: &str = "discard listening on ";

/// A file the discard server serves from memory as blob `{size}` (`GET /v1/blobs/{size}`),
/// so that `edge-client blobs get` downloads from it as from edge: its bytes are one 1 MiB
/// pattern again and again, and its digest is worked out before the server says it is ready.
#[derive(Debug, Clone)]
struct Served {
    size: u64,
    digest: String,
}

/// The 1 MiB pattern every served byte comes from.
fn pattern() -> Bytes {
    Bytes::from((0..PIECE).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

const PIECE: usize = 1024 * 1024;

/// Serves until killed; `file_bytes`: the size of the blob it serves, if any.
pub fn discard_main(certs_dir: &Path, file_bytes: Option<u64>) -> anyhow::Result<()> {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = file_bytes.map(|size| {
        let piece = pattern();
        let mut hasher = blake3::Hasher::new();
        let mut left = size;
        while left > 0 {
            let n = left.min(PIECE as u64) as usize;
            hasher.update(&piece[..n]);
            left -= n as u64;
        }
        Served {
            size,
            digest: hasher.finalize().to_hex().to_string(),
        }
    });
    runtime.block_on(serve(certs_dir, served))
}

async fn serve(certs_dir: &Path, served: Option<Served>) -> anyhow::Result<()> {
    let cert_path = certs_dir.join("server.pem");
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("cannot read {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot read {}", cert_path.display()))?;
    let key_path = certs_dir.join("server.key");
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("cannot read {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tcp_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())?;
    tcp_tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    crypto.alpn_protocols = vec![b"h3".to_vec(), edge_proto::ALPN_EDGE.to_vec()];
    crypto.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(crypto)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    // edge's default windows: `transport.stream_receive_window` 16 MiB, and a connection's
    // window as far as edge lets it grow (`transport.connection_receive_window_max`, 8 MiB).
    transport
        .stream_receive_window(quinn::VarInt::from_u32(16 * 1024 * 1024))
        .receive_window(quinn::VarInt::from_u32(8 * 1024 * 1024))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(16))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(16));
    config.transport_config(Arc::new(transport));
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("a literal socket address");
    // TCP on the UDP port too, as edge does (another port when that one is taken on TCP).
    let mut tries = 0;
    let (endpoint, tcp) = loop {
        tries += 1;
        let endpoint = quinn::Endpoint::server(config.clone(), listen).context("cannot bind")?;
        match tokio::net::TcpListener::bind(endpoint.local_addr()?).await {
            Ok(tcp) => break (endpoint, tcp),
            Err(e) if tries > 16 => return Err(e).context("cannot bind TCP beside UDP"),
            Err(_) => continue,
        }
    };
    tokio::spawn(tcp_loop(tcp, Arc::new(tcp_tls)));
    let addr = endpoint.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY}{addr}")?;
        out.flush()?;
    }
    while let Some(incoming) = endpoint.accept().await {
        let served = served.clone();
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            let alpn = connection
                .handshake_data()
                .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|data| data.protocol);
            if alpn.as_deref() == Some(edge_proto::ALPN_EDGE) {
                edge1_loop(connection).await;
            } else {
                connection_loop(connection, served).await;
            }
        });
    }
    Ok(())
}

/// `edge/1`: every upload stream is read to its end and dropped; its notification stream
/// says `accepted` once the header is read and `done` (one record, the bytes counted) at the
/// end, so that `edge-client upload` sends into it as into edge.
async fn edge1_loop(connection: quinn::Connection) {
    while let Ok(mut upload) = connection.accept_uni().await {
        let connection = connection.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let upload_stream = u64::from(upload.id());
            let mut head = Vec::new();
            let mut body = 0u64;
            while !head.contains(&b'\n') {
                match upload.read_chunk(64 * 1024, true).await {
                    Ok(Some(chunk)) => head.extend_from_slice(&chunk.bytes),
                    _ => return,
                }
            }
            let Some(end) = head.iter().position(|&b| b == b'\n') else {
                return;
            };
            body += (head.len() - end - 1) as u64;
            let Ok(header) = serde_json::from_slice::<edge_proto::JobHeader>(&head[..end]) else {
                return;
            };
            let Ok(mut notify) = connection.open_uni().await else {
                return;
            };
            let job = format!("discard-{upload_stream}");
            let accepted = edge_proto::Event::Accepted {
                job: job.clone(),
                upload_stream: Some(upload_stream),
                task: header.task.clone(),
                format: header.format.unwrap_or(edge_proto::Format::Raw),
                name: header.name.clone(),
                size: header.size,
                source: None,
            };
            if notify.write_all(&accepted.to_line()).await.is_err() {
                return;
            }
            loop {
                match upload.read_chunk(1024 * 1024, false).await {
                    Ok(Some(chunk)) => body += chunk.bytes.len() as u64,
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            let done = edge_proto::Event::Done {
                job,
                bytes: body,
                records: 1,
                committed: 1,
                errors: 0,
                duration_ms: started.elapsed().as_millis() as u64,
                summary: serde_json::json!({ "bytes": body }),
                first_errors: Vec::new(),
                unchanged: false,
                sha256: None,
            };
            let _ = notify.write_all(&done.to_line()).await;
            let _ = notify.finish();
            let _ = notify.stopped().await;
        });
    }
}

async fn connection_loop(connection: quinn::Connection, served: Option<Served>) {
    let Ok(mut h3) = h3::server::builder()
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await
    else {
        return;
    };
    while let Ok(Some(resolver)) = h3.accept().await {
        let served = served.clone();
        tokio::spawn(async move {
            let Ok((request, mut stream)) = resolver.resolve_request().await else {
                return;
            };
            let path = request.uri().path();
            if let Some(size) = path
                .strip_prefix("/bytes/")
                .and_then(|n| n.parse::<u64>().ok())
            {
                return send_bytes(&mut stream, size, None).await;
            }
            if let Some(served) = served {
                if path == "/v1/tasks" {
                    return send_tasks(&mut stream).await;
                }
                if path == format!("/v1/blobs/{}", served.size) {
                    return send_bytes(&mut stream, served.size, Some(&served.digest)).await;
                }
            }
            let mut bytes = 0u64;
            while let Ok(Some(chunk)) = stream.recv_data().await {
                bytes += chunk.remaining() as u64;
            }
            let response = http::Response::builder()
                .status(http::StatusCode::OK)
                .header("content-type", "application/json")
                .body(())
                .expect("a static response");
            if stream.send_response(response).await.is_ok() {
                let body = format!("{{\"bytes\":{bytes}}}\n");
                let _ = stream.send_data(Bytes::from(body)).await;
                let _ = stream.finish().await;
            }
        });
    }
}

/// `GET /bytes/{n}` (and the served blob, with its digest as `ETag`): `n` bytes from memory
/// (one 1 MiB buffer sent again and again), so that a download from edge is compared with
/// what the client alone can pull over QUIC.
async fn send_bytes<S: h3::quic::BidiStream<Bytes>>(
    stream: &mut h3::server::RequestStream<S, Bytes>,
    size: u64,
    digest: Option<&str>,
) {
    let piece = pattern();
    let mut response = http::Response::builder()
        .status(http::StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .header("content-length", size);
    if let Some(digest) = digest {
        response = response.header("etag", format!("\"{digest}\""));
    }
    let response = response.body(()).expect("a static response");
    if stream.send_response(response).await.is_err() {
        return;
    }
    let mut left = size;
    while left > 0 {
        let n = left.min(PIECE as u64) as usize;
        if stream.send_data(piece.slice(..n)).await.is_err() {
            return;
        }
        left -= n as u64;
    }
    let _ = stream.finish().await;
}

/// `GET /v1/tasks`: one task, `blobs`, whose items are files (what `edge-client blobs get`
/// asks before it downloads).
async fn send_tasks<S: h3::quic::BidiStream<Bytes>>(
    stream: &mut h3::server::RequestStream<S, Bytes>,
) {
    let reads = edge_proto::reads::ReadsInfo {
        scope: "blobs:read".into(),
        item: "blob".into(),
        filters: std::borrow::Cow::Borrowed(&[]),
        max_page: 1,
        columns: std::borrow::Cow::Borrowed(&[]),
        history: false,
        content: true,
        delete: false,
    };
    let body =
        serde_json::json!({"tasks": [{"name": "blobs", "formats": ["raw"], "reads": reads}]});
    let response = http::Response::builder()
        .status(http::StatusCode::OK)
        .header("content-type", "application/json")
        .body(())
        .expect("a static response");
    if stream.send_response(response).await.is_ok() {
        let _ = stream.send_data(Bytes::from(body.to_string())).await;
        let _ = stream.finish().await;
    }
}

/// HTTP/2 and HTTP/1.1 over TCP + TLS: every request body is read to its end and dropped,
/// answered `200 {"bytes":N}` (what curl alone can push over TCP).
async fn tcp_loop(listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    while let Ok((socket, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(socket).await else {
                return;
            };
            let service = hyper::service::service_fn(
                |request: http::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt;
                    let mut body = request.into_body();
                    let mut bytes = 0u64;
                    while let Some(Ok(frame)) = body.frame().await {
                        bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                    }
                    let answer =
                        http_body_util::Full::new(Bytes::from(format!("{{\"bytes\":{bytes}}}\n")));
                    Ok::<_, std::convert::Infallible>(http::Response::new(answer))
                },
            );
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}
