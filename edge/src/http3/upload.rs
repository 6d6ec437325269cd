//! Uploads: the request read into a job's settings, its body streamed into the job and the
//! job's events streamed back as the response body.

use super::exchange::{RecvHalf, SendHalf};
use super::respond::refuse_job;
use super::resumable::{answer_part, whole_only, Part};
use super::routes::parse_query;
use super::Stream;
use crate::auth::Grant;
use crate::jobs::{self, Body, Broken, Either, Notify, Pumped, Refusal};
use crate::limits::Admission;
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::window::ConnectionWindow;
use bytes::Bytes;
use edge_proto::{ErrorCode, Event, Format};
use edge_tasks::pipeline::{JobSpec, Resume};
use edge_tasks::task::UploadInfo;
use edge_tasks::{Plugin, Task};
use http::{Request, Response, StatusCode};
use serde_json::{Map, Value};
use std::sync::Arc;
use tracing::{debug, Instrument};

/// An upload: checks the request, answers 200 with NDJSON, and runs the job while the body
/// arrives.
pub(super) async fn upload(
    request: Request<()>,
    mut stream: Stream,
    task: String,
    grant: Grant,
    service: Arc<Service>,
    window: Option<Arc<ConnectionWindow>>,
    shutdown: Shutdown,
) {
    // A task that stores bodies as they are keeps the Content-Type; others read a format
    // in it.
    let raw = service
        .store
        .registry()
        .find(&task)
        .is_some_and(|plugin| plugin.reads_raw());
    let upload = match UploadRequest::read(&request, raw) {
        Ok(upload) => upload,
        Err(refusal) => return refuse_job(&mut stream, &service, refusal).await,
    };
    // A body the server reads itself (`?source=`) instead of the request's.
    let source = match &upload.source {
        Some(spec) => match service
            .sources
            .open(spec, &grant, &service.store, upload.if_changed)
            .await
        {
            Ok(opened) => Some(opened),
            Err(refusal) => return refuse_job(&mut stream, &service, refusal).await,
        },
        None => None,
    };
    let (info, format, size) = match &source {
        Some(opened) => (
            opened.upload_info(upload.name.clone()),
            upload.format.or(opened.format),
            opened.size,
        ),
        None => (
            UploadInfo {
                name: upload.name.clone(),
                size: upload.size,
                content_type: upload.content_type.clone(),
            },
            upload.format,
            upload.size,
        ),
    };
    let job = jobs::new_job_id(service.store.slot());
    if let Some(reference) = &upload.reference {
        service.feeds.refer(&grant.sub, reference, &job);
    }
    let name = info.name.clone();
    let started = jobs::start_task(&job, &task, format, &upload.params, info, &grant, &service)
        .and_then(|started| {
            check_size(upload.size, service.limits.max_upload_bytes())?;
            Ok((started, service.limits.admit(&grant.sub)?))
        });
    // The admission is held until the job's final event.
    let ((plugin, job_task), admission) = match started {
        Ok(started) => started,
        Err(refusal) => return refuse_job(&mut stream, &service, refusal).await,
    };
    let spec = JobSpec {
        job,
        upload_stream: None,
        task: plugin.name.to_owned(),
        format,
        name,
        size,
        source: source.as_ref().map(|opened| opened.record.clone()),
        unchanged: source.as_ref().is_some_and(|opened| opened.unchanged),
        sha256: upload.sha256,
        atomic: upload.atomic,
    };
    let resume = crate::resumes::cursor(
        &service,
        &spec,
        (plugin, job_task.as_ref()),
        &grant,
        &upload.params,
        stream.transport,
        None,
    );
    let part = (!upload.completes).then_some(Part::Creation);
    if part.is_some() {
        let whole = if spec.atomic {
            Some(whole_only(super::resumable::ATOMIC_WHOLE))
        } else if resume.is_none() {
            Some(whole_only(&format!(
                "a job of task `{}` on this body cannot be resumed",
                plugin.name
            )))
        } else {
            None
        };
        if let Some(refusal) = whole {
            return refuse_job(&mut stream, &service, refusal).await;
        }
    }
    let job = Serving {
        spec,
        plugin,
        task: job_task,
        grant,
        admission,
        resume,
        declared: upload.size,
        part,
    };
    serve(
        stream,
        job,
        source.map(|opened| opened.body),
        service,
        window,
        shutdown,
    )
    .await
}

/// A job that starts (or goes on) on an HTTP request.
pub(super) struct Serving {
    pub spec: JobSpec,
    pub plugin: &'static Plugin,
    pub task: Box<dyn Task>,
    pub grant: Grant,
    /// Its place in its subject's limits, held until its final event.
    pub admission: Admission,
    /// Its cursor, when it can be resumed.
    pub resume: Option<Resume>,
    /// The request body's content-length.
    pub declared: Option<u64>,
    /// The request sends a part of the body (`Upload-Complete: ?0`): the answer comes once
    /// it is in, and says where the rest starts.
    pub part: Option<Part>,
}

/// Answers 200 with the job's events as NDJSON (and, for a job that can be resumed, its
/// upload resource in `Location`), and runs the job on the request body (or on `source`,
/// a body the server reads itself) while it arrives.
pub(super) async fn serve(
    mut stream: Stream,
    job: Serving,
    source: Option<crate::sources::SourceBody>,
    service: Arc<Service>,
    window: Option<Arc<ConnectionWindow>>,
    shutdown: Shutdown,
) {
    let Serving {
        spec,
        plugin,
        task,
        grant,
        admission,
        resume,
        declared,
        part,
    } = job;
    stream.take_body().await;
    if part.is_none() {
        let mut response = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/x-ndjson");
        if resume.is_some() {
            response = response.header("location", super::resumable::location(&spec.job));
        }
        let response = response
            .body(())
            .expect("a response of static parts is valid");
        if stream.send_response(response).await.is_err() {
            return;
        }
    }
    let span = tracing::info_span!("job", job = %spec.job, task = plugin.name, sub = %grant.sub);
    debug!(parent: &span, sub = %grant.sub, transport = stream.transport, "HTTP upload accepted");
    let transport = stream.transport;
    let (send, recv) = stream.split();
    let mut request = RequestBody {
        recv,
        declared,
        received: 0,
        malformed: false,
        window,
        partial: part.is_some(),
    };
    let answer = ResponseBody {
        send,
        part: part.map(|part| PartAnswer {
            part,
            job: spec.job.clone(),
            store: service.store.clone(),
            last: None,
        }),
    };
    let mut body = match source {
        Some(source) => Either::Source(source),
        None => Either::Upload(&mut request),
    };
    let run = jobs::run(
        transport,
        &grant.sub,
        admission,
        spec,
        plugin,
        task,
        &mut body,
        Bytes::new(),
        answer,
        service,
        shutdown,
        resume,
    );
    let ended = run.instrument(span).await;
    if matches!(body, Either::Source(_)) {
        // The request's own body (none, usually) is not the job's.
        request.recv.linger().await;
    } else if ended.pumped == Pumped::Unfinished {
        // The job ended before the body did: a body longer than its content-length is
        // stopped at once, any other is read to its end (bounded) so the client reads the
        // final event instead of a stream error.
        if request.malformed {
            request.recv.stop_malformed().await;
        } else {
            request.recv.linger().await;
        }
    }
}

/// `413` when the content-length announces more than `limits.max_upload_bytes`, before the
/// job starts (without one, the job fails `limit_exceeded` where the body passes it).
pub(super) fn check_size(size: Option<u64>, max: Option<u64>) -> Result<(), Refusal> {
    match (size, max) {
        (Some(size), Some(max)) if size > max => Err(Refusal {
            code: ErrorCode::LimitExceeded,
            message: format!(
                "the upload announces {size} bytes; one job may send at most {max} (limits.max_upload_bytes)"
            ),
            retry_after: None,
        }),
        _ => Ok(()),
    }
}

/// What an upload request says about its job.
#[derive(Debug)]
struct UploadRequest {
    format: Option<Format>,
    name: Option<String>,
    size: Option<u64>,
    /// The Content-Type, for a task that stores bodies as they are (`raw`).
    content_type: Option<String>,
    params: Map<String, Value>,
    /// The client's reference for the job (`?ref=`), to watch it by before the response.
    reference: Option<String>,
    /// Where the server reads the body from instead (`?source=`).
    source: Option<String>,
    /// For a URL source: only if it changed since the last fetch (`?if_changed=true`).
    if_changed: bool,
    /// The body's SHA-256 the client declared (`Repr-Digest: sha-256=:...:`, RFC 9530).
    sha256: Option<String>,
    /// All or nothing (`?atomic=true`).
    atomic: bool,
    /// The request sends the whole body (`Upload-Complete: ?1`, or no such field), not a
    /// part of it.
    completes: bool,
}

impl UploadRequest {
    /// The job a request asks for; `raw`: for a task that takes bodies as they are, whose
    /// Content-Type names no format.
    fn read(request: &Request<()>, raw: bool) -> Result<UploadRequest, Refusal> {
        let headers = request.headers();
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
        let mut upload = UploadRequest {
            format: None,
            name: None,
            size: None,
            content_type: raw.then(|| content_type.map(str::to_owned)).flatten(),
            params: Map::new(),
            reference: None,
            source: None,
            if_changed: false,
            sha256: declared_digest(headers)?,
            atomic: false,
            completes: super::resumable::completes(headers)?,
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
                "ref" => upload.reference = Some(check_reference(value)?),
                "source" => upload.source = Some(value),
                "if_changed" => upload.if_changed = flag("if_changed", &value)?,
                "atomic" => upload.atomic = flag("atomic", &value)?,
                _ => {
                    let value = serde_json::from_str(&value).unwrap_or(Value::String(value));
                    upload.params.insert(key, value);
                }
            }
        }
        if upload.atomic && upload.source.is_some() {
            return Err(Refusal::atomic_with_source(ErrorCode::BadParams));
        }
        if upload.format.is_none() && !raw {
            upload.format = format_of_content_type(content_type)?;
        }
        upload.size = content_length(headers)?;
        Ok(upload)
    }
}

/// A request's `content-length`, if it has one.
pub(super) fn content_length(headers: &http::HeaderMap) -> Result<Option<u64>, Refusal> {
    let Some(value) = headers.get("content-length") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::BadParams,
                "content-length is not a number".into(),
            )
        })
}

/// A query parameter that is true or false (`name` alone is true).
fn flag(name: &str, value: &str) -> Result<bool, Refusal> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Refusal {
            code: ErrorCode::BadParams,
            message: format!("`{name}` is true or false"),
            retry_after: None,
        }),
    }
}

/// The SHA-256 a request declares for its body, RFC 9530: `Repr-Digest` (or
/// `Content-Digest`) `sha-256=:<base64>:`, other algorithms ignored.
pub(super) fn declared_digest(headers: &http::HeaderMap) -> Result<Option<String>, Refusal> {
    use base64::Engine as _;
    let value = ["repr-digest", "content-digest"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok());
    let Some(value) = value else {
        return Ok(None);
    };
    let sha256 = value.split(',').find_map(|member| {
        let (algorithm, digest) = member.trim().split_once('=')?;
        algorithm
            .eq_ignore_ascii_case("sha-256")
            .then_some(digest.trim())
    });
    let Some(digest) = sha256 else {
        return Ok(None);
    };
    let bytes = digest
        .strip_prefix(':')
        .and_then(|d| d.strip_suffix(':'))
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .filter(|bytes| bytes.len() == 32)
        .ok_or_else(|| Refusal {
            code: ErrorCode::BadParams,
            message: "Repr-Digest's sha-256 is not `:<base64 of 32 bytes>:` (RFC 9530)".into(),
            retry_after: None,
        })?;
    Ok(Some(bytes.iter().map(|b| format!("{b:02x}")).collect()))
}

/// A client's reference for its job: 8 to 64 of `A-Z a-z 0-9 _ -`.
fn check_reference(reference: String) -> Result<String, Refusal> {
    let valid = (8..=64).contains(&reference.len())
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        return Ok(reference);
    }
    Err(Refusal {
        code: ErrorCode::BadParams,
        message: "`ref` must be 8 to 64 characters of A-Z, a-z, 0-9, `_` and `-` (a random id \
                  of the client's, to follow the job at /v1/jobs/ref:<ref>/events)"
            .into(),
        retry_after: None,
    })
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

/// A request body as a job body, checked against its content-length.
struct RequestBody {
    recv: RecvHalf,
    declared: Option<u64>,
    received: u64,
    /// Set when the body and its content-length disagree (RFC 9114 §4.1.2): the job fails
    /// `upload_aborted`, and a body still coming is stopped with H3_MESSAGE_ERROR.
    malformed: bool,
    /// What the body reads counts toward its QUIC connection's window (HTTP/3).
    window: Option<Arc<ConnectionWindow>>,
    /// The body is a part of the job's (`Upload-Complete: ?0`): its end stops the job,
    /// which waits for the rest.
    partial: bool,
}

impl Body for RequestBody {
    async fn chunk(&mut self) -> Result<Option<Bytes>, Broken> {
        self.read().await.map_err(Broken::aborted)
    }
}

impl RequestBody {
    /// The next chunk of the request body, or why it broke off.
    async fn read(&mut self) -> Result<Option<Bytes>, String> {
        match self.recv.recv_data().await {
            Ok(Some(chunk)) => {
                self.received += chunk.len() as u64;
                if let Some(window) = &self.window {
                    window.consumed(chunk.len());
                }
                match self.declared {
                    Some(declared) if self.received > declared => {
                        self.malformed = true;
                        Err(format!(
                            "the body is longer than its content-length ({declared} bytes)"
                        ))
                    }
                    _ => Ok(Some(chunk)),
                }
            }
            Ok(None) => match self.declared {
                Some(declared) if declared != self.received => {
                    self.malformed = true;
                    Err(format!(
                    "the body ended after {} of the {declared} bytes its content-length announced",
                    self.received
                    ))
                }
                _ if self.partial => Err(
                    "the request sent a part of the body (`Upload-Complete: ?0`): the job waits for the rest (PATCH its upload resource)".into(),
                ),
                _ => Ok(None),
            },
            Err(e) => Err(format!("the request body broke off: {e}")),
        }
    }
}

/// The response body: one event per line, finished cleanly after the final event (also
/// when the request was malformed: the `failed` event says so, and a reset could make the
/// client discard it). For a request that sent a part of the body, one answer instead,
/// once the job stopped.
struct ResponseBody {
    send: SendHalf,
    part: Option<PartAnswer>,
}

/// What the answer to a part needs: the job, its store, and its last event so far.
struct PartAnswer {
    part: Part,
    job: String,
    store: edge_tasks::Store,
    last: Option<Bytes>,
}

impl Notify for ResponseBody {
    async fn send(&mut self, line: Bytes) -> bool {
        match &mut self.part {
            Some(part) => {
                part.last = Some(line);
                true
            }
            None => self.send.send_data(line).await.is_ok(),
        }
    }

    async fn close(mut self) {
        match self.part.take() {
            Some(part) => {
                let last = part.last.and_then(|line| Event::from_line(&line).ok());
                answer_part(&mut self.send, part.part, &part.job, &part.store, last).await
            }
            None => self.send.finish().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            super::super::respond::status_of(refusal.code),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
