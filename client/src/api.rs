//! The read API over HTTP/3 (`GET /v1/ports/...`, `/v1/jobs/...`, `/v1/tasks`): what the
//! `edge-client ports`, `jobs` and `tasks` commands call.

use crate::connect::{self, ClientConfig, Server};
use crate::error::ClientError;
use bytes::{Buf, Bytes};
use serde_json::Value;

/// The largest response body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// An HTTP/3 connection to the server's read API.
pub struct Api {
    connection: quinn::Connection,
    requests: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    server: Server,
    token: Option<String>,
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
    /// Connects with ALPN `h3`, verifying the server's certificate.
    pub async fn connect(config: &ClientConfig) -> Result<Api, ClientError> {
        let (connection, server) = connect::open(config, edge_proto::ALPN_H3).await?;
        let (mut driver, requests) = h3::client::new(h3_quinn::Connection::new(connection.clone()))
            .await
            .map_err(|e| ClientError::Protocol(format!("HTTP/3 setup failed: {e}")))?;
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        Ok(Api {
            connection,
            requests,
            server,
            token: config.token.clone(),
        })
    }

    /// `GET path` (with its query), read as JSON.
    pub async fn get(&mut self, path: &str) -> Result<Answer, ClientError> {
        let uri = format!("https://{}{path}", self.server);
        let mut request = http::Request::get(uri);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(())
            .map_err(|e| ClientError::Protocol(format!("bad request `{path}`: {e}")))?;
        let lost = |e: h3::error::StreamError| ClientError::ConnectionLost(e.to_string());
        let mut stream = self.requests.send_request(request).await.map_err(lost)?;
        stream.finish().await.map_err(lost)?;
        let response = stream.recv_response().await.map_err(lost)?;
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.map_err(lost)? {
            if body.len() + chunk.remaining() > MAX_BODY {
                return Err(ClientError::Protocol(
                    "the response is larger than 16 MiB".into(),
                ));
            }
            let bytes = chunk.copy_to_bytes(chunk.remaining());
            body.extend_from_slice(&bytes);
        }
        let body = serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("the server's answer is not JSON: {e}")))?;
        Ok(Answer {
            status: response.status().as_u16(),
            body,
        })
    }

    /// Closes the connection (code 0) once the server has been told.
    pub async fn close(self) {
        connect::close(&self.connection).await;
    }
}
