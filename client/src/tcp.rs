//! Jobs over TCP (HTTP/2, `PUT /v1/jobs/{task}`) for when QUIC cannot reach the server: UDP
//! blocked on the way, or `--tcp`. The same job, body and events as over `edge/1`; the body
//! is streamed through a fixed buffer and a bounded channel, so memory stays small.

use crate::connect::{self, ClientConfig, Server};
use crate::error::ClientError;
use crate::upload::{JobResult, UploadJob};
use bytes::Bytes;
use edge_proto::{ErrorCode, Event};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The read buffer for a body (the server takes HTTP/2 frames of up to 256 KiB).
const BUFFER_BYTES: usize = 256 * 1024;

/// An HTTP/2 connection to the server's TCP port.
#[derive(Debug, Clone)]
pub(crate) struct TcpClient {
    sender: hyper::client::conn::http2::SendRequest<ChannelBody>,
    server: Server,
}

/// Connects over TCP + TLS (ALPN `h2`) to the server's port.
pub(crate) async fn connect(config: &ClientConfig) -> Result<TcpClient, ClientError> {
    let server = Server::parse(&config.server)?;
    let addr = connect::resolve(&server).await?;
    let (crypto, refusal) = connect::tls_config(&server, config.ca.as_deref(), b"h2")?;
    let unreachable = |detail: String| ClientError::Unreachable {
        server: server.to_string(),
        detail,
    };
    let socket = tokio::time::timeout(
        connect::CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| {
        unreachable(format!(
            "no answer within {} s on TCP port {}",
            connect::CONNECT_TIMEOUT.as_secs(),
            server.port
        ))
    })?
    .map_err(|e| unreachable(format!("TCP port {}: {e}", server.port)))?;
    let _ = socket.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(server.host.clone())
        .map_err(|_| ClientError::BadServer(config.server.clone()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(crypto))
        .connect(name, socket)
        .await
        .map_err(|e| connect::handshake_error(&server, &e, refusal.get(), config.ca.as_deref()))?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(format!("HTTP/2 setup failed: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("the TCP connection ended: {e}");
        }
    });
    Ok(TcpClient { sender, server })
}

impl TcpClient {
    /// The server it is connected to.
    pub(crate) fn server(&self) -> &Server {
        &self.server
    }

    /// A handle to send requests on the connection.
    pub(crate) fn sender(&self) -> hyper::client::conn::http2::SendRequest<ChannelBody> {
        self.sender.clone()
    }

    /// Uploads one job (`PUT /v1/jobs/{task}`, the header's fields in the query), calling
    /// `on_event` for every event of the response; until `cancel` (then the request is
    /// dropped: the server ends the job, keeping what it committed).
    pub(crate) async fn upload(
        &self,
        mut job: UploadJob,
        token: Option<&str>,
        cancel: &CancellationToken,
        on_event: &mut (dyn FnMut(&Event, &[u8]) + Send),
    ) -> Result<JobResult, ClientError> {
        let asked = match job.header.resume.clone() {
            Some(resumed) => self.resume_request(&mut job, &resumed, token).await?,
            None => Asked::Request(Box::new(self.upload_request(&job, token))),
        };
        let request = match asked {
            Asked::Request(request) => *request,
            // Refused before anything was sent (nothing to go on with).
            Asked::Refused(refused) => {
                on_event(&refused, &refused.to_line());
                return Ok(JobResult {
                    last: *refused,
                    bytes_sent: 0,
                });
            }
        };
        let header = &job.header;
        let (frames, receiver) = mpsc::channel(4);
        let request = request
            .body(ChannelBody(receiver))
            .map_err(|e| ClientError::Protocol(format!("bad request: {e}")))?;
        let name = header.name.clone().unwrap_or_else(|| "the upload".into());
        let sent = tokio::spawn(async move {
            let mut buf = vec![0u8; BUFFER_BYTES];
            let mut sent = 0u64;
            loop {
                match job.body.read(&mut buf).await {
                    Ok(0) => return Ok(sent),
                    Ok(n) => {
                        let frame = Frame::data(Bytes::copy_from_slice(&buf[..n]));
                        if frames.send(Ok(frame)).await.is_err() {
                            // The server stopped reading: its final event says why.
                            return Ok(sent);
                        }
                        sent += n as u64;
                    }
                    Err(source) => {
                        let _ = frames
                            .send(Err(std::io::Error::other("the input broke off")))
                            .await;
                        return Err(ClientError::Input { name, source });
                    }
                }
            }
        });
        let mut sender = self.sender.clone();
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ClientError::ConnectionLost(e.to_string()))?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            if status != 200 {
                // The refusal stands for a `rejected` event, shown as one.
                let refused = refusal(status, &mut body).await?;
                on_event(&refused, &refused.to_line());
                return Ok(refused);
            }
            read_events(&mut body, on_event).await
        };
        let last = tokio::select! {
            last = exchange => last,
            _ = cancel.cancelled() => Err(ClientError::Cancelled { committed: 0 }),
        };
        let bytes_sent = match sent.await {
            Ok(Ok(sent)) => sent,
            Ok(Err(e @ ClientError::Input { .. })) => return Err(e),
            _ => 0,
        };
        Ok(JobResult {
            last: last?,
            bytes_sent,
        })
    }

    /// A new job's request: `PUT /v1/jobs/{task}`, the header's fields in the query.
    fn upload_request(&self, job: &UploadJob, token: Option<&str>) -> http::request::Builder {
        let header = &job.header;
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(format) = header.format {
                query.append_pair("format", format.as_str());
            }
            if let Some(name) = &header.name {
                query.append_pair("name", name);
            }
            if let Some(source) = &header.source {
                query.append_pair("source", source);
            }
            if header.if_changed {
                query.append_pair("if_changed", "true");
            }
            if header.atomic {
                query.append_pair("atomic", "true");
            }
            for (key, value) in &header.params {
                let value = match value {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                query.append_pair(key, &value);
            }
            query.finish()
        };
        let uri = format!("https://{}/v1/jobs/{}?{query}", self.server, header.task);
        let mut request = http::Request::put(uri);
        if let Some(token) = header.token.as_deref().or(token) {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(size) = header.size {
            request = request.header("content-length", size);
        }
        if let Some(sha256) = &header.sha256 {
            request = request.header("repr-digest", repr_digest(sha256));
        }
        request
    }

    /// The request that goes on with job `id` (the resumable-uploads draft): its upload
    /// resource asked for its offset and the digest of the bytes before it, the body's first
    /// bytes checked against that and skipped, then `PATCH` with the rest.
    async fn resume_request(
        &self,
        job: &mut UploadJob,
        id: &str,
        token: Option<&str>,
    ) -> Result<Asked, ClientError> {
        let token = job.header.token.clone().or(token.map(str::to_owned));
        let uri = format!("https://{}/v1/uploads/{id}", self.server);
        let mut asked = http::Request::get(&uri);
        if let Some(token) = &token {
            asked = asked.header("authorization", format!("Bearer {token}"));
        }
        let asked = asked
            .body(ChannelBody::empty())
            .map_err(|e| ClientError::Protocol(format!("bad request: {e}")))?;
        let response = self
            .sender()
            .send_request(asked)
            .await
            .map_err(|e| ClientError::ConnectionLost(e.to_string()))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        if status != 200 {
            return Ok(Asked::Refused(Box::new(refusal(status, &mut body).await?)));
        }
        let bytes = body
            .collect()
            .await
            .map_err(|e| ClientError::ConnectionLost(e.to_string()))?
            .to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("the upload resource is not JSON: {e}")))?;
        let (Some(offset), Some(prefix)) =
            (answer["offset"].as_u64(), answer["prefix_sha256"].as_str())
        else {
            return Err(ClientError::Protocol(format!(
                "the upload resource does not say its offset and digest: {answer}"
            )));
        };
        let name = job
            .header
            .name
            .clone()
            .unwrap_or_else(|| "the upload".into());
        let mut buf = vec![0u8; BUFFER_BYTES];
        let digest = crate::digest::resume_body(&mut job.body, offset, &mut buf)
            .await
            .map_err(|source| ClientError::Input {
                name: name.clone(),
                source,
            })?;
        if digest != prefix {
            return Err(ClientError::PrefixMismatch {
                name,
                job: id.to_owned(),
                offset,
            });
        }
        let mut request = http::Request::patch(uri)
            .header("upload-offset", offset)
            .header("upload-complete", "?1");
        if let Some(token) = &token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(size) = job.header.size {
            request = request.header("content-length", size.saturating_sub(offset));
        }
        if let Some(sha256) = &job.header.sha256 {
            request = request.header("repr-digest", repr_digest(sha256));
        }
        Ok(Asked::Request(Box::new(request)))
    }
}

/// What a job's request is.
enum Asked {
    /// The request to send, its body to come.
    Request(Box<http::request::Builder>),
    /// The server refused already (a resume with nothing to go on with), as the `rejected`
    /// event it stands for.
    Refused(Box<Event>),
}

/// The job's events, one NDJSON line each, up to its final event.
async fn read_events(
    body: &mut Incoming,
    on_event: &mut (dyn FnMut(&Event, &[u8]) + Send),
) -> Result<Event, ClientError> {
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::ConnectionLost(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            // The line goes on with its newline, as over edge/1.
            let line: Vec<u8> = pending.drain(..=end).collect();
            let event = Event::from_line(&line[..line.len() - 1])
                .map_err(|e| ClientError::Protocol(format!("an event is not JSON: {e}")))?;
            on_event(&event, &line);
            if event.is_final() {
                return Ok(event);
            }
        }
    }
    Err(ClientError::Protocol(
        "the response ended without a final event".into(),
    ))
}

/// A refused upload (`{"error":{"code","message"}}`) as the `rejected` event it stands for.
async fn refusal(status: u16, body: &mut Incoming) -> Result<Event, ClientError> {
    let bytes = body
        .collect()
        .await
        .map_err(|e| ClientError::ConnectionLost(e.to_string()))?
        .to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let error = &answer["error"];
    Ok(Event::Rejected {
        code: serde_json::from_value(error["code"].clone()).unwrap_or(ErrorCode::Other),
        message: error["message"]
            .as_str()
            .map_or_else(|| format!("status {status}"), str::to_owned),
        committed: 0,
        upload_stream: None,
        retry_after: error["retry_after"].as_u64(),
    })
}

/// A request body fed through a bounded channel.
#[derive(Debug)]
pub(crate) struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl ChannelBody {
    /// No body.
    pub(crate) fn empty() -> ChannelBody {
        ChannelBody(mpsc::channel(1).1)
    }
}

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

/// `Repr-Digest` (RFC 9530) for a SHA-256 in hex: `sha-256=:<base64>:`.
fn repr_digest(hex: &str) -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}
