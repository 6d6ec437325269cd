//! HTTP/3 on the same UDP port as `edge/1` (ALPN `h3`): uploads as jobs, with the job's
//! events streamed back as the response body while the request body is still arriving, and
//! a JSON read API.
//!
//! | request | answer |
//! |---|---|
//! | `PUT` or `POST /v1/jobs/{task}` | `200`, `application/x-ndjson`: the job's events |
//! | `GET /v1/ports/{code}` | the port, or `404` |
//! | `GET /v1/ports?country=&limit=&after=` | `{"items":[{"key","port"}],"next"}` |
//! | `GET /v1/jobs?limit=&before=` | job history, most recent first |
//! | `GET /v1/jobs/{id}` | one job's record, or `404` |
//! | `GET /v1/tasks` | every task with its formats and record schema |
//! | `GET /healthz` | `200 {"status":"ok"}`, `503` while draining |
//!
//! Refusals are plain statuses with `{"error":{"code","message"}}`.

use crate::auth::Grant;
use crate::jobs::{self, Body, Notify, Pumped, Refusal};
use crate::server::{IntoVarInt, Service};
use bytes::{Buf, Bytes};
use edge_proto::{AppCode, ErrorCode, Format};
use edge_tasks::pipeline::JobSpec;
use edge_tasks::{history, ports, registry, Store, StoreError};
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, Instrument};

/// The largest request header block accepted (RFC 9114 §4.2.2, SETTINGS_MAX_FIELD_SECTION_SIZE).
const MAX_FIELD_SECTION: u64 = 16 * 1024;

type Resolver = h3::server::RequestResolver<Guarded, Bytes>;
type Stream = h3::server::RequestStream<GuardedBidi, Bytes>;
type Guarded = crate::h3guard::Connection;
type GuardedBidi = crate::h3guard::Guarded<h3_quinn::BidiStream<Bytes>>;
type SendHalf = h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = h3::server::RequestStream<crate::h3guard::Guarded<h3_quinn::RecvStream>, Bytes>;

/// Runs one HTTP/3 connection until the client closes it or the server shuts down.
pub(crate) async fn serve(
    connection: quinn::Connection,
    service: Arc<Service>,
    authorised: CancellationToken,
    shutdown: CancellationToken,
) {
    debug!("h3 connection");
    let built = h3::server::builder()
        .max_field_section_size(MAX_FIELD_SECTION)
        .build(crate::h3guard::Connection::new(connection.clone()))
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(e) => {
            debug!("h3 setup failed: {e}");
            return;
        }
    };
    let requests = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // GOAWAY: no new requests; those running finish.
                let _ = h3.shutdown(0).await;
                break;
            }
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    requests.spawn(handle(resolver, service.clone(), authorised.clone(), shutdown.clone()).in_current_span());
                }
                Ok(None) => break,
                Err(e) => {
                    debug!("h3 connection ended: {e}");
                    break;
                }
            },
        }
    }
    requests.close();
    requests.wait().await;
    if shutdown.is_cancelled() {
        connection.close(AppCode::Shutdown.into_varint(), b"server shutting down");
    }
}

async fn handle(
    resolver: Resolver,
    service: Arc<Service>,
    authorised: CancellationToken,
    shutdown: CancellationToken,
) {
    let (request, mut stream) = match resolver.resolve_request().await {
        Ok(resolved) => resolved,
        Err(e) => {
            debug!("unreadable request: {e}");
            return;
        }
    };
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    debug!(%method, %path, "request");
    if (&method, segments.as_slice()) == (&Method::GET, ["healthz"].as_slice()) {
        let (healthy, body) = service.health(&shutdown);
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return respond(&mut stream, status, &body).await;
    }
    // Everything but the health check needs a valid token, checked before any body byte.
    let grant = match service.authorize(bearer(&request)) {
        Ok(grant) => grant,
        Err(e) => return refuse_job(&mut stream, &service, e.into()).await,
    };
    authorised.cancel();
    let read_scope = match segments.as_slice() {
        ["v1", "ports", ..] => Some("ports:read"),
        ["v1", "jobs", ..] if method == Method::GET => Some("jobs:read"),
        _ => None,
    };
    if let Some(scope) = read_scope.filter(|scope| !grant.allows(scope)) {
        let message = format!(
            "the token of `{}` does not hold the scope `{scope}`",
            grant.sub
        );
        service.metrics.rejected(ErrorCode::Forbidden);
        return refuse(&mut stream, StatusCode::FORBIDDEN, "forbidden", &message).await;
    }
    match (method, segments.as_slice()) {
        (Method::GET, ["v1", "tasks"]) => respond(&mut stream, StatusCode::OK, &tasks()).await,
        (Method::GET, ["v1", "ports", code]) => {
            let code = percent_decode(code);
            read_port(&mut stream, &service, code).await
        }
        (Method::GET, ["v1", "ports"]) => {
            list_ports(&mut stream, &service, request.uri().query()).await
        }
        (Method::GET, ["v1", "jobs"]) => {
            list_jobs(&mut stream, &service, request.uri().query(), &grant).await
        }
        (Method::GET, ["v1", "jobs", id]) => {
            let id = percent_decode(id);
            read_job(&mut stream, &service, id, &grant).await
        }
        (Method::PUT | Method::POST, ["v1", "jobs", task]) => {
            let task = percent_decode(task);
            upload(request, stream, task, grant, service, shutdown).await
        }
        (_, ["v1", "jobs", _]) => {
            refuse(
                &mut stream,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use PUT or POST to upload a job",
            )
            .await
        }
        _ => {
            refuse(
                &mut stream,
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no such resource: {path}"),
            )
            .await
        }
    }
}

/// Every task with its description, formats and record schema.
fn tasks() -> Value {
    let tasks: Vec<Value> = registry::PLUGINS
        .iter()
        .map(|plugin| {
            json!({
                "name": plugin.name,
                "description": plugin.description,
                "formats": plugin.formats.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                "schema": serde_json::from_str::<Value>(plugin.schema).unwrap_or(Value::Null),
            })
        })
        .collect();
    json!({ "tasks": tasks })
}

async fn read_port(stream: &mut Stream, service: &Service, code: String) {
    let not_found = format!("no port `{code}`");
    let lookup = move |store: &Store| Ok(ports::get(store, &code)?.map(|port| json!(port)));
    answer(stream, service, not_found, lookup).await
}

async fn list_ports(stream: &mut Stream, service: &Service, query: Option<&str>) {
    let (mut country, mut after, mut limit) = (None, None, 100);
    for (key, value) in parse_query(query) {
        let parsed = match key.as_str() {
            "country" => {
                country = Some(value);
                Ok(())
            }
            "after" => {
                after = Some(value);
                Ok(())
            }
            "limit" => parse_limit(&value, ports::MAX_PAGE).map(|n| limit = n),
            other => Err(format!(
                "unknown parameter `{other}` (use country, limit, after)"
            )),
        };
        if let Err(message) = parsed {
            return refuse(stream, StatusCode::BAD_REQUEST, "bad_params", &message).await;
        }
    }
    let list = move |store: &Store| {
        let query = ports::ListQuery {
            country: country.as_deref(),
            after: after.as_deref(),
            limit,
        };
        let page = ports::list(store, &query)?;
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|(key, port)| json!({"key": key, "port": port}))
            .collect();
        Ok(Some(json!({"items": items, "next": page.next})))
    };
    answer(stream, service, String::new(), list).await
}

async fn read_job(stream: &mut Stream, service: &Service, id: String, grant: &Grant) {
    let not_found = format!("no job `{id}`");
    // Others' jobs do not exist for a token that is not an administrator's.
    let sub = (!grant.is_admin()).then(|| grant.sub.clone());
    let lookup = move |store: &Store| {
        let record = history::get(store, &id)?;
        let visible = record.filter(|r| sub.is_none() || r.sub == sub);
        Ok(visible.map(|record| json!(record)))
    };
    answer(stream, service, not_found, lookup).await
}

async fn list_jobs(stream: &mut Stream, service: &Service, query: Option<&str>, grant: &Grant) {
    let sub = (!grant.is_admin()).then(|| grant.sub.clone());
    let (mut before, mut limit) = (None, 100);
    for (key, value) in parse_query(query) {
        let parsed = match key.as_str() {
            "before" => {
                before = Some(value);
                Ok(())
            }
            "limit" => parse_limit(&value, history::MAX_PAGE).map(|n| limit = n),
            other => Err(format!("unknown parameter `{other}` (use limit, before)")),
        };
        if let Err(message) = parsed {
            return refuse(stream, StatusCode::BAD_REQUEST, "bad_params", &message).await;
        }
    }
    let list = move |store: &Store| {
        let (items, next) = history::list(store, before.as_deref(), limit, sub.as_deref())?;
        Ok(Some(json!({"items": items, "next": next})))
    };
    answer(stream, service, String::new(), list).await
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(request: &Request<()>) -> Option<&str> {
    let value = request.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// A page size from 1 to `max`.
fn parse_limit(value: &str, max: usize) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("`limit` must be a number from 1 to {max}")),
    }
}

/// Answers with what `read` finds in the store (run off the async runtime): `200` with it,
/// `404` with `not_found` when it finds nothing, `500` when the store fails.
async fn answer<F>(stream: &mut Stream, service: &Service, not_found: String, read: F)
where
    F: FnOnce(&Store) -> Result<Option<Value>, StoreError> + Send + 'static,
{
    let store = service.store.clone();
    match tokio::task::spawn_blocking(move || read(&store)).await {
        Ok(Ok(Some(body))) => respond(stream, StatusCode::OK, &body).await,
        Ok(Ok(None)) => refuse(stream, StatusCode::NOT_FOUND, "not_found", &not_found).await,
        Ok(Err(e)) => {
            refuse(
                stream,
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                &e.to_string(),
            )
            .await
        }
        Err(_) => {
            refuse(
                stream,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the read failed",
            )
            .await
        }
    }
}

/// An upload: checks the request, answers 200 with NDJSON, and runs the job while the body
/// arrives.
async fn upload(
    request: Request<()>,
    mut stream: Stream,
    task: String,
    grant: Grant,
    service: Arc<Service>,
    shutdown: CancellationToken,
) {
    let upload = match UploadRequest::read(&request) {
        Ok(upload) => upload,
        Err(refusal) => return refuse_job(&mut stream, &service, refusal).await,
    };
    let started = jobs::start_task(&task, upload.format, &upload.params, &grant, &service)
        .and_then(|started| Ok((started, service.limits.admit(&grant.sub)?)));
    // The admission is held until the job ends.
    let ((plugin, job_task), _admission) = match started {
        Ok(started) => started,
        Err(refusal) => return refuse_job(&mut stream, &service, refusal).await,
    };
    let response = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(())
        .expect("a response of static parts is valid");
    if stream.send_response(response).await.is_err() {
        return;
    }
    let spec = JobSpec {
        job: jobs::new_job_id(),
        upload_stream: None,
        task: plugin.name.to_owned(),
        format: upload.format,
        name: upload.name,
        size: upload.size,
    };
    let span = tracing::info_span!("job", job = %spec.job, task = plugin.name, sub = %grant.sub);
    debug!(parent: &span, sub = %grant.sub, "HTTP/3 upload accepted");
    let (send, recv) = stream.split();
    let malformed = Arc::new(AtomicBool::new(false));
    let mut body = RequestBody {
        recv,
        declared: upload.size,
        received: 0,
        malformed: malformed.clone(),
    };
    let run = jobs::run(
        "h3",
        &grant.sub,
        spec,
        plugin,
        job_task,
        &mut body,
        Bytes::new(),
        ResponseBody { send, malformed },
        service,
        shutdown,
    );
    let ended = run.instrument(span).await;
    if ended.pumped == Pumped::Unfinished {
        // The job ended before the body did: no recv_data is pending, so stopping is safe.
        body.recv.stop_sending(h3::error::Code::H3_NO_ERROR);
    }
}

/// What an upload request says about its job.
#[derive(Debug)]
struct UploadRequest {
    format: Option<Format>,
    name: Option<String>,
    size: Option<u64>,
    params: Map<String, Value>,
}

impl UploadRequest {
    fn read(request: &Request<()>) -> Result<UploadRequest, Refusal> {
        let headers = request.headers();
        let mut upload = UploadRequest {
            format: None,
            name: None,
            size: None,
            params: Map::new(),
        };
        for (key, value) in parse_query(request.uri().query()) {
            match key.as_str() {
                "format" => {
                    upload.format = Some(
                        value
                            .parse::<Format>()
                            .map_err(|e| unknown_format(e.to_string()))?,
                    )
                }
                "name" => upload.name = Some(value),
                _ => {
                    let value = serde_json::from_str(&value).unwrap_or(Value::String(value));
                    upload.params.insert(key, value);
                }
            }
        }
        if upload.format.is_none() {
            upload.format =
                format_of_content_type(headers.get("content-type").and_then(|v| v.to_str().ok()))?;
        }
        if let Some(length) = headers.get("content-length") {
            let length = length
                .to_str()
                .ok()
                .and_then(|l| l.parse().ok())
                .ok_or_else(|| Refusal {
                    code: ErrorCode::BadParams,
                    message: "content-length is not a number".into(),
                    retry_after: None,
                })?;
            upload.size = Some(length);
        }
        Ok(upload)
    }
}

/// The format a Content-Type names; `None` (sniff) for types that name none.
fn format_of_content_type(content_type: Option<&str>) -> Result<Option<Format>, Refusal> {
    let Some(content_type) = content_type else {
        return Ok(None);
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Some(Format::Json)),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => {
            Ok(Some(Format::Ndjson))
        }
        "text/plain" => Ok(Some(Format::Lines)),
        "text/csv" | "application/csv" => Ok(Some(Format::Csv)),
        "" | "application/octet-stream" | "application/x-www-form-urlencoded" => Ok(None),
        other => Err(unknown_format(format!(
            "content-type `{other}` names no format this server reads (json, ndjson, lines, csv); pass ?format="
        ))),
    }
}

fn unknown_format(message: String) -> Refusal {
    Refusal {
        code: ErrorCode::UnknownFormat,
        message,
        retry_after: None,
    }
}

/// The HTTP status for a refusal code.
fn status_of(code: ErrorCode) -> StatusCode {
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

async fn refuse_job(stream: &mut Stream, service: &Service, refusal: Refusal) {
    service.metrics.rejected(refusal.code);
    info!(code = %refusal.code, "HTTP/3 request refused: {}", refusal.message);
    let mut error = json!({"error": {"code": refusal.code.as_str(), "message": refusal.message}});
    if let Some(seconds) = refusal.retry_after {
        error["error"]["retry_after"] = json!(seconds);
    }
    send_json(stream, status_of(refusal.code), &error, refusal.retry_after).await;
    // The body is not wanted; nothing is reading it, so stopping is safe.
    stream.stop_sending(h3::error::Code::H3_NO_ERROR);
}

async fn refuse(stream: &mut Stream, status: StatusCode, code: &str, message: &str) {
    respond(
        stream,
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
    .await;
}

/// Sends a whole JSON response and finishes the stream.
async fn respond(stream: &mut Stream, status: StatusCode, body: &Value) {
    send_json(stream, status, body, None).await
}

/// Sends a whole JSON response (with `retry-after` when given) and finishes the stream.
async fn send_json(
    stream: &mut Stream,
    status: StatusCode,
    body: &Value,
    retry_after: Option<u64>,
) {
    let mut bytes = serde_json::to_vec(body).expect("JSON values always serialize");
    bytes.push(b'\n');
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", bytes.len());
    if let Some(seconds) = retry_after {
        response = response.header("retry-after", seconds);
    }
    let response = response
        .body(())
        .expect("a response of static parts is valid");
    if stream.send_response(response).await.is_ok()
        && stream.send_data(Bytes::from(bytes)).await.is_ok()
    {
        let _ = stream.finish().await;
    }
}

/// A request body as a job body, checked against its content-length.
struct RequestBody {
    recv: RecvHalf,
    declared: Option<u64>,
    received: u64,
    /// Set when the body and its content-length disagree: the response then ends with
    /// H3_MESSAGE_ERROR instead of a clean finish (RFC 9114 §4.1.2).
    malformed: Arc<AtomicBool>,
}

impl Body for RequestBody {
    async fn chunk(&mut self) -> Result<Option<Bytes>, String> {
        match self.recv.recv_data().await {
            Ok(Some(mut data)) => {
                let chunk = data.copy_to_bytes(data.remaining());
                self.received += chunk.len() as u64;
                match self.declared {
                    Some(declared) if self.received > declared => {
                        self.malformed.store(true, Ordering::Relaxed);
                        Err(format!(
                            "the body is longer than its content-length ({declared} bytes)"
                        ))
                    }
                    _ => Ok(Some(chunk)),
                }
            }
            Ok(None) => match self.declared {
                Some(declared) if declared != self.received => {
                    self.malformed.store(true, Ordering::Relaxed);
                    Err(format!(
                    "the body ended after {} of the {declared} bytes its content-length announced",
                    self.received
                    ))
                }
                _ => Ok(None),
            },
            Err(e) => Err(format!("the request body broke off: {e}")),
        }
    }
}

/// The response body: one event per line.
struct ResponseBody {
    send: SendHalf,
    malformed: Arc<AtomicBool>,
}

impl Notify for ResponseBody {
    async fn send(&mut self, line: Bytes) -> bool {
        self.send.send_data(line).await.is_ok()
    }

    async fn close(mut self) {
        if self.malformed.load(Ordering::Relaxed) {
            self.send.stop_stream(h3::error::Code::H3_MESSAGE_ERROR);
        } else {
            let _ = self.send.finish().await;
        }
    }
}

/// `key=value` pairs of a query string, percent-decoded (`+` is a space).
fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&key.replace('+', " ")),
                percent_decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded() {
        let pairs = parse_query(Some("country=United+Arab%20Emirates&limit=5&after=&x"));
        assert_eq!(
            pairs,
            vec![
                ("country".into(), "United Arab Emirates".into()),
                ("limit".into(), "5".into()),
                ("after".into(), "".into()),
                ("x".into(), "".into()),
            ]
        );
        assert_eq!(percent_decode("a%2Fb%zz%"), "a/b%zz%");
        assert!(parse_query(None).is_empty());
    }

    #[test]
    fn content_types_name_formats() {
        assert_eq!(
            format_of_content_type(Some("application/json; charset=utf-8")),
            Ok(Some(Format::Json))
        );
        assert_eq!(
            format_of_content_type(Some("application/x-ndjson")),
            Ok(Some(Format::Ndjson))
        );
        assert_eq!(
            format_of_content_type(Some("text/plain")),
            Ok(Some(Format::Lines))
        );
        assert_eq!(
            format_of_content_type(Some("application/octet-stream")),
            Ok(None)
        );
        assert_eq!(format_of_content_type(None), Ok(None));
        let refusal = format_of_content_type(Some("image/png")).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::UnknownFormat);
        assert_eq!(status_of(refusal.code), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

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
