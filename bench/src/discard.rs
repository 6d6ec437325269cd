//! `edge-bench discard`: an HTTP/3 server that reads every request body and drops it, then
//! answers `200` with `{"bytes":N}`; and answers `GET /bytes/{n}` with `n` bytes from memory.
//! It shows what curl alone can push and pull over QUIC on this machine: the HTTP/3 upload
//! and download rows are compared with it.
//!
//! Same stack as the server (quinn, h3 0.0.8, rustls with ring, TLS 1.3) and the same
//! flow-control windows as edge's defaults (1 MiB per stream, 4 MiB per connection), with
//! the dev certificate edge generated in the certs dir.

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

/// Serves until killed.
pub fn discard_main(certs_dir: &Path) -> anyhow::Result<()> {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(certs_dir))
}

async fn serve(certs_dir: &Path) -> anyhow::Result<()> {
    let cert_path = certs_dir.join("server.pem");
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("cannot read {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot read {}", cert_path.display()))?;
    let key_path = certs_dir.join("server.key");
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("cannot read {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    crypto.alpn_protocols = vec![b"h3".to_vec()];
    crypto.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(crypto)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(quinn::VarInt::from_u32(1024 * 1024))
        .receive_window(quinn::VarInt::from_u32(4 * 1024 * 1024))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(16));
    config.transport_config(Arc::new(transport));
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("a literal socket address");
    let endpoint = quinn::Endpoint::server(config, listen).context("cannot bind")?;
    let addr = endpoint.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY}{addr}")?;
        out.flush()?;
    }
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            if let Ok(connection) = incoming.await {
                connection_loop(connection).await;
            }
        });
    }
    Ok(())
}

async fn connection_loop(connection: quinn::Connection) {
    let Ok(mut h3) = h3::server::builder()
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await
    else {
        return;
    };
    while let Ok(Some(resolver)) = h3.accept().await {
        tokio::spawn(async move {
            let Ok((request, mut stream)) = resolver.resolve_request().await else {
                return;
            };
            if let Some(size) = request
                .uri()
                .path()
                .strip_prefix("/bytes/")
                .and_then(|n| n.parse::<u64>().ok())
            {
                return send_bytes(&mut stream, size).await;
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

/// `GET /bytes/{n}`: `n` bytes from memory (one 1 MiB buffer sent again and again), so that
/// a download from edge is compared with what curl alone can pull over QUIC.
async fn send_bytes<S: h3::quic::BidiStream<Bytes>>(
    stream: &mut h3::server::RequestStream<S, Bytes>,
    size: u64,
) {
    const PIECE: usize = 1024 * 1024;
    let piece = Bytes::from((0..PIECE).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let response = http::Response::builder()
        .status(http::StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .header("content-length", size)
        .body(())
        .expect("a static response");
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
