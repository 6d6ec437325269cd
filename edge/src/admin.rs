//! The optional admin listener: plain HTTP/1.1 on TCP (Prometheus cannot scrape HTTP/3), bound
//! to 127.0.0.1 unless configured otherwise. `GET /metrics` (Prometheus text), `GET /healthz`.
//! Nothing else: the job and read API are on the main port (HTTP/3, or HTTP/2 and HTTP/1.1
//! over TCP), behind tokens.
//!
//! Each request is read with a size cap and a timeout, answered (with a timeout too), and the
//! connection closed. At most `admin.max_connections` connections are served at once: the
//! listener accepts the next one only when one of them has ended, so a flood of connections
//! waits in the kernel's backlog instead of each taking a task and a socket.

use crate::service::Service;
use crate::shutdown::Shutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// The largest request head read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound admin listener.
#[derive(Debug)]
pub(crate) struct Admin {
    listener: TcpListener,
    /// One permit per connection served at once.
    slots: Arc<Semaphore>,
}

impl Admin {
    /// Binds `addr`, to serve at most `max_connections` connections at once. Must be called
    /// inside a tokio runtime.
    pub(crate) fn bind(addr: SocketAddr, max_connections: usize) -> std::io::Result<Admin> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Admin {
            listener: TcpListener::from_std(listener)?,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers requests until the task is dropped; `/healthz` says `draining` once the
    /// server drains.
    pub(crate) async fn serve(self, service: Arc<Service>, shutdown: Shutdown) {
        loop {
            // A slot first, then the connection (as mini-redis does): at the cap, no accept.
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                return;
            };
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let service = service.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        answer(stream, service, shutdown).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    warn!("admin listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn answer(mut stream: TcpStream, service: Arc<Service>, shutdown: Shutdown) {
    let Ok(Some(path)) = tokio::time::timeout(READ_TIMEOUT, read_path(&mut stream))
        .await
        .unwrap_or(Ok(None))
    else {
        return;
    };
    let (status, content_type, body) = match path.as_str() {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            service.metrics.render(),
        ),
        "/healthz" => {
            let (healthy, body) = service.health(&shutdown);
            let status = if healthy {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "application/json", format!("{body}\n"))
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: the admin listener serves GET /metrics and GET /healthz\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let sent = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!("admin response not sent: {e}"),
        Err(_) => debug!("admin response not taken within {WRITE_TIMEOUT:?}"),
    }
}

/// Reads the request head; returns the path of a `GET` (or `None` for anything else).
async fn read_path(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST_BYTES {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => {
            let path = target.split('?').next().unwrap_or(target);
            Ok(Some(path.to_owned()))
        }
        _ => Ok(None),
    }
}
