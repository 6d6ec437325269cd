//! The read API over HTTP/3, or over HTTP/2 on TCP when UDP gets no answer (`GET
//! /v1/ports/...`, `/v1/jobs/...`, `/v1/tasks`, a stored file's bytes, `DELETE` of an item):
//! what the `edge-client <task>`, `jobs` and `tasks` commands call.

use crate::connect::{self, ClientConfig, Server};
use crate::error::ClientError;
use bytes::{Buf, Bytes};
use serde_json::Value;

/// The largest response body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A connection to the server's read API.
pub struct Api {
    transport: Transport,
    server: Server,
    token: Option<String>,
}

enum Transport {
    H3 {
        connection: quinn::Connection,
        requests: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    },
    Tcp(crate::tcp::TcpClient),
}

/// A response's body, over either transport.
enum ResponseStream {
    H3(Box<H3Stream>),
    Tcp(hyper::body::Incoming),
}

impl ResponseStream {
    /// The next piece of the body, `None` at its end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        match self {
            ResponseStream::H3(stream) => Ok(stream
                .recv_data()
                .await
                .map_err(lost)?
                .map(|mut data| data.copy_to_bytes(data.remaining()))),
            ResponseStream::Tcp(body) => {
                use http_body_util::BodyExt;
                loop {
                    match body.frame().await {
                        None => return Ok(None),
                        Some(Err(e)) => return Err(ClientError::ConnectionLost(e.to_string())),
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                return Ok(Some(data));
                            }
                        }
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// A JSON answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Answer {
    /// The error message of a refusal (`{"error":{"code","message"}}`), else the raw body.
    pub fn error_message(&self) -> String {
        let error = &self.body["error"];
        match (error["code"].as_str(), error["message"].as_str()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            _ => format!("status {}: {}", self.status, self.body),
        }
    }
}

impl Api {
    /// Connects with ALPN `h3`, verifying the server's certificate; when UDP gets no answer,
    /// over HTTP/2 on TCP instead (as [`crate::Client::connect`] does).
    pub async fn connect(config: &ClientConfig) -> Result<Api, ClientError> {
        let (connection, server) = match connect::open(config, edge_proto::ALPN_H3).await {
            Ok(opened) => opened,
            Err(quic @ ClientError::Unreachable { .. }) => {
                let tcp = crate::tcp::connect(config).await.map_err(|_| quic)?;
                return Ok(Api {
                    server: tcp.server().clone(),
                    transport: Transport::Tcp(tcp),
                    token: config.token.clone(),
                });
            }
            Err(e) => return Err(e),
        };
        let (mut driver, requests) = h3::client::new(h3_quinn::Connection::new(connection.clone()))
            .await
            .map_err(|e| ClientError::Protocol(format!("HTTP/3 setup failed: {e}")))?;
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        Ok(Api {
            transport: Transport::H3 {
                connection,
                requests,
            },
            server,
            token: config.token.clone(),
        })
    }

    /// `GET path` (with its query), read as JSON.
    pub async fn get(&mut self, path: &str) -> Result<Answer, ClientError> {
        self.json(http::Method::GET, path).await
    }

    /// `POST path` without a body (an action, e.g. `/v1/jobs/{id}/revert`), answered as JSON.
    pub async fn post(&mut self, path: &str) -> Result<Answer, ClientError> {
        self.json(http::Method::POST, path).await
    }

    /// `DELETE path`, answered as JSON.
    pub async fn delete(&mut self, path: &str) -> Result<Answer, ClientError> {
        self.json(http::Method::DELETE, path).await
    }

    /// `GET path` of a stored file, its bytes handed to `save` as they arrive: `Ok(Ok(etag))`
    /// (the entity tag, unquoted: the file's digest) once all came, `Ok(Err(answer))` for a
    /// refusal.
    pub async fn download(
        &mut self,
        path: &str,
        save: &mut (dyn FnMut(&[u8]) -> Result<(), String> + Send),
    ) -> Result<Result<String, Answer>, ClientError> {
        let (response, mut stream) = self.send(http::Method::GET, path).await?;
        let status = response.status().as_u16();
        if status != 200 {
            return Ok(Err(read_answer(status, &mut stream).await?));
        }
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned())
            .ok_or_else(|| ClientError::Protocol("the file came without an ETag".into()))?;
        while let Some(bytes) = stream.chunk().await? {
            save(&bytes).map_err(ClientError::Protocol)?;
        }
        Ok(Ok(etag))
    }

    /// `GET path` of a stream of NDJSON lines (a job's events), each line handed to `line` as
    /// it arrives, until the server ends it: `Ok(Ok(()))`, or `Ok(Err(answer))` for a refusal.
    pub async fn follow(
        &mut self,
        path: &str,
        line: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<Result<(), Answer>, ClientError> {
        let (response, mut stream) = self.send(http::Method::GET, path).await?;
        let status = response.status().as_u16();
        if status != 200 {
            return Ok(Err(read_answer(status, &mut stream).await?));
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.chunk().await? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                line(&pending[..end]);
                pending.drain(..=end);
            }
            if pending.len() > MAX_BODY {
                return Err(ClientError::Protocol(
                    "an event line is longer than 16 MiB".into(),
                ));
            }
        }
        Ok(Ok(()))
    }

    /// Sends a request without a body; returns its response head and stream.
    async fn send(
        &mut self,
        method: http::Method,
        path: &str,
    ) -> Result<(http::Response<()>, ResponseStream), ClientError> {
        let uri = format!("https://{}{path}", self.server);
        let mut request = http::Request::builder().method(method).uri(uri);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let bad = |e: http::Error| ClientError::Protocol(format!("bad request `{path}`: {e}"));
        match &mut self.transport {
            Transport::H3 { requests, .. } => {
                let request = request.body(()).map_err(bad)?;
                let mut stream = requests.send_request(request).await.map_err(lost)?;
                stream.finish().await.map_err(lost)?;
                let response = stream.recv_response().await.map_err(lost)?;
                Ok((response, ResponseStream::H3(Box::new(stream))))
            }
            Transport::Tcp(tcp) => {
                let request = request
                    .body(crate::tcp::ChannelBody::empty())
                    .map_err(bad)?;
                let response = tcp
                    .sender()
                    .send_request(request)
                    .await
                    .map_err(|e| ClientError::ConnectionLost(e.to_string()))?;
                let (parts, body) = response.into_parts();
                Ok((
                    http::Response::from_parts(parts, ()),
                    ResponseStream::Tcp(body),
                ))
            }
        }
    }

    /// A request without a body, answered as JSON.
    async fn json(&mut self, method: http::Method, path: &str) -> Result<Answer, ClientError> {
        let (response, mut stream) = self.send(method, path).await?;
        read_answer(response.status().as_u16(), &mut stream).await
    }

    /// Closes the connection (code 0) once the server has been told.
    pub async fn close(self) {
        if let Transport::H3 { connection, .. } = &self.transport {
            connect::close(connection).await;
        }
    }
}

type H3Stream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

fn lost(e: h3::error::StreamError) -> ClientError {
    ClientError::ConnectionLost(e.to_string())
}

/// A JSON response body (at most [`MAX_BODY`]).
async fn read_answer(status: u16, stream: &mut ResponseStream) -> Result<Answer, ClientError> {
    let mut body = Vec::new();
    while let Some(chunk) = stream.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ClientError::Protocol(
                "the response is larger than 16 MiB".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let body = serde_json::from_slice(&body)
        .map_err(|e| ClientError::Protocol(format!("the server's answer is not JSON: {e}")))?;
    Ok(Answer { status, body })
}
