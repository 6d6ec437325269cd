//! Responses: whole JSON answers, refusals as `{"error":{"code","message"}}`, and the HTTP
//! status of each refusal code.

use super::Stream;
use crate::jobs::Refusal;
use crate::service::Service;
use bytes::Bytes;
use edge_proto::ErrorCode;
use http::{Method, Response, StatusCode};
use serde_json::{json, Value};
use tracing::info;

/// The HTTP status for a refusal code.
pub(super) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UnknownTask => StatusCode::NOT_FOUND,
        ErrorCode::UnknownFormat => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::TokenRevoked => {
            StatusCode::UNAUTHORIZED
        }
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::ResumeExpired => StatusCode::NOT_FOUND,
        ErrorCode::NotResumable | ErrorCode::TakenOver | ErrorCode::OffsetMismatch => {
            StatusCode::CONFLICT
        }
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::LimitExceeded => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ErrorCode::ShuttingDown | ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal | ErrorCode::StoreError => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

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

/// [`respond`] with one more header.
pub(super) async fn respond_with(
    stream: &mut Stream,
    status: StatusCode,
    body: &Value,
    header: Option<(&'static str, String)>,
) {
    send_json(stream, status, body, header).await
}

/// Sends a whole JSON response (with one more header when given; without the body for
/// `HEAD`), finishes the stream, then lingers on what is left of the request body.
async fn send_json(
    stream: &mut Stream,
    status: StatusCode,
    body: &Value,
    header: Option<(&'static str, String)>,
) {
    let headers: Vec<_> = header.into_iter().collect();
    send(stream, status, &headers, Some(("application/json", body))).await
}

/// Sends a whole response: `headers`, and `body` (its content type and JSON, one line) when
/// given, without the body for `HEAD`; finishes the stream, then lingers on what is left of
/// the request body.
pub(super) async fn send(
    stream: &mut Stream,
    status: StatusCode,
    headers: &[(&'static str, String)],
    body: Option<(&'static str, &Value)>,
) {
    let (response, body) = whole(status, headers, body);
    let mut sent = stream.send_response(response).await.is_ok();
    if let (Some(bytes), false) = (body, stream.head) {
        sent = sent && stream.send_data(bytes).await.is_ok();
    }
    if sent && stream.finish().await.is_ok() {
        stream.linger().await;
    }
}

/// A whole response: its head (`headers`, and the body's content type and length) and its
/// body (`body`'s JSON, one line), if any.
pub(super) fn whole(
    status: StatusCode,
    headers: &[(&'static str, String)],
    body: Option<(&'static str, &Value)>,
) -> (Response<()>, Option<Bytes>) {
    let body = body.map(|(content_type, body)| {
        let mut bytes = serde_json::to_vec(body).expect("JSON values always serialize");
        bytes.push(b'\n');
        (content_type, Bytes::from(bytes))
    });
    let mut response = Response::builder().status(status);
    if let Some((content_type, bytes)) = &body {
        response = response
            .header("content-type", *content_type)
            .header("content-length", bytes.len());
    }
    for (name, value) in headers {
        response = response.header(*name, value);
    }
    let response = response
        .body(())
        .expect("a response of static parts is valid");
    (response, body.map(|(_, bytes)| bytes))
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
