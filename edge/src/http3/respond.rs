//! Responses: whole JSON answers, refusals as `{"error":{"code","message"}}`, the HTTP
//! status of each refusal code, and lingering on a request body after its answer.

use super::Stream;
use crate::jobs::Refusal;
use crate::service::Service;
use bytes::{Buf, Bytes};
use edge_proto::ErrorCode;
use h3::error::Code;
use h3::quic::RecvStream;
use h3::server::RequestStream;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tracing::{debug, info};

/// The HTTP status for a refusal code.
pub(super) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UnknownTask => StatusCode::NOT_FOUND,
        ErrorCode::UnknownFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::TokenRevoked => {
            StatusCode::UNAUTHORIZED
        }
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::LimitExceeded => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal | ErrorCode::StoreError => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The most request body bytes read and dropped after an answer that came before the body
/// ended.
const LINGER_BYTES: u64 = 16 * 1024 * 1024;

/// The longest time spent reading and dropping them.
const LINGER_TIME: Duration = Duration::from_secs(10);
/// How long a stop waits for a read in flight to come back (the client is still sending).
const STOP_WAIT: Duration = Duration::from_secs(1);

pub(super) async fn refuse_job(stream: &mut Stream, service: &Service, refusal: Refusal) {
    service.metrics.rejected(refusal.code);
    info!(code = %refusal.code, "HTTP/3 request refused: {}", refusal.message);
    let mut error = json!({"error": {"code": refusal.code.as_str(), "message": refusal.message}});
    if let Some(seconds) = refusal.retry_after {
        error["error"]["retry_after"] = json!(seconds);
    }
    let retry_after = refusal.retry_after.map(|s| ("retry-after", s.to_string()));
    send_json(stream, status_of(refusal.code), &error, retry_after).await;
}

pub(super) async fn refuse(stream: &mut Stream, status: StatusCode, code: &str, message: &str) {
    respond(
        stream,
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
    .await;
}

/// `405` for a method the route does not take, with the methods it does in `Allow`.
pub(super) async fn refuse_method(stream: &mut Stream, method: &Method, allow: &str) {
    let message = format!("`{method}` is not allowed here; use {allow}");
    let error = json!({"error": {"code": "method_not_allowed", "message": message}});
    let allow = Some(("allow", allow.to_owned()));
    send_json(stream, StatusCode::METHOD_NOT_ALLOWED, &error, allow).await;
}

/// Sends a whole JSON response and finishes the stream.
pub(super) async fn respond(stream: &mut Stream, status: StatusCode, body: &Value) {
    send_json(stream, status, body, None).await
}

/// Sends a whole JSON response (with one more header when given; without the body for
/// `HEAD`), finishes the stream, then lingers on what is left of the request body.
async fn send_json(
    stream: &mut Stream,
    status: StatusCode,
    body: &Value,
    header: Option<(&'static str, String)>,
) {
    let mut bytes = serde_json::to_vec(body).expect("JSON values always serialize");
    bytes.push(b'\n');
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", bytes.len());
    if let Some((name, value)) = header {
        response = response.header(name, value);
    }
    let response = response
        .body(())
        .expect("a response of static parts is valid");
    let sent = stream.h3.send_response(response).await.is_ok()
        && (stream.head || stream.h3.send_data(Bytes::from(bytes)).await.is_ok())
        && stream.h3.finish().await.is_ok();
    if sent {
        linger(&mut stream.h3).await;
    }
}

/// Reads and drops what is left of a request body once the response is complete, like
/// nginx's lingering close: a client still sending (`curl -T` of a large file refused
/// early) reads the answer instead of a stream error. Past [`LINGER_BYTES`] or
/// [`LINGER_TIME`] the body is stopped with H3_NO_ERROR (RFC 9114 §4.1.1).
pub(super) async fn linger<S: RecvStream>(stream: &mut RequestStream<S, Bytes>) {
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
        debug!("request body still coming after the response: stopped");
        stop(stream, Code::H3_NO_ERROR).await;
    }
}

/// Stops a request body the client is still sending with STOP_SENDING `code`. A read may
/// still be in flight (h3 returns buffered data without waiting for it): the stop then goes
/// out once that read is back (see `h3guard::Guarded`), with the client's next bytes.
pub(super) async fn stop<S: RecvStream>(stream: &mut RequestStream<S, Bytes>, code: Code) {
    stream.stop_sending(code);
    let _ = tokio::time::timeout(STOP_WAIT, stream.recv_data()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_statuses() {
        assert_eq!(status_of(ErrorCode::UnknownTask), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorCode::BadParams), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(ErrorCode::Unauthorized), StatusCode::UNAUTHORIZED);
        assert_eq!(status_of(ErrorCode::Forbidden), StatusCode::FORBIDDEN);
        assert_eq!(
            status_of(ErrorCode::RateLimited),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
