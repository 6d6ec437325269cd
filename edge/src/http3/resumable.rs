//! Resumable uploads over HTTP, after the IETF draft "Resumable Uploads for HTTP"
//! (draft-ietf-httpbis-resumable-upload-09): every job whose body can be resumed has an
//! upload resource, `/v1/uploads/{job}`, which its response names in `Location`.
//!
//! - `HEAD` answers `Upload-Offset`: where the body goes on (the byte after the job's last
//!   committed record, which may be before the last byte the server received: what came
//!   after it was not kept), with `Upload-Complete: ?0` while the job can go on.
//! - `PATCH` with `Upload-Offset` (which must be that offset: else `409` with the draft's
//!   `mismatching-upload-offset` problem) and `Upload-Complete: ?1` sends the rest of the
//!   body: the job goes on (the same events as an upload, `resumed` after `accepted`).
//! - A request with `Upload-Complete: ?0` (the upload's creation, or a `PATCH`) sends a part
//!   of the body: the job takes it, commits what it decoded, and stops to wait for the rest;
//!   the answer (`201 Created` for the creation, `204 No Content` for an append) comes once
//!   the part is in, with `Upload-Offset` where the rest starts. That is the end of the last
//!   whole record: bytes of a record the part cut through are not kept, and are sent again.
//! - `DELETE` cancels the job: what it committed stays, and it can no longer be resumed.
//! - `GET` answers the same as `HEAD`, with a JSON body: for a person, and for a client that
//!   checks its file's first bytes (`prefix_sha256`) before it sends the rest.

use super::exchange::SendHalf;
use super::respond::{refuse_job, send, status_of, whole};
use super::upload::{check_size, content_length, declared_digest, serve, Serving};
use super::Stream;
use crate::auth::Grant;
use crate::jobs::{self, Refusal};
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::window::ConnectionWindow;
use edge_proto::{ErrorCode, Event, JobHeader};
use edge_tasks::history::{self, JobRecord};
use edge_tasks::pipeline::{JobSpec, Resume};
use edge_tasks::resume::sha256::Sha256;
use edge_tasks::resume::{self, Cursor, Outcome};
use edge_tasks::task::UploadInfo;
use http::{Request, StatusCode};
use serde_json::json;
use std::sync::Arc;

/// The problem type of an `Upload-Offset` that is not the resource's (the draft's §4.4).
const MISMATCHING_OFFSET: &str =
    "https://iana.org/assignments/http-problem-types#mismatching-upload-offset";

/// The upload resource of job `job`.
pub(super) fn location(job: &str) -> String {
    format!("/v1/uploads/{job}")
}

/// `HEAD` (and `GET`) `/v1/uploads/{job}`: where the body goes on.
pub(super) async fn offset(stream: &mut Stream, service: &Service, job: String, grant: &Grant) {
    let cursor = match crate::resumes::inspect(service, &job, grant).await {
        Ok(cursor) => cursor,
        Err(refusal) => return refuse_job(stream, service, refusal).await,
    };
    let mut headers = vec![
        ("upload-offset", cursor.offset().to_string()),
        ("upload-complete", "?0".to_owned()),
        ("cache-control", "no-store".to_owned()),
    ];
    if let Some(size) = cursor.origin.size {
        headers.push(("upload-length", size.to_string()));
    }
    if stream.head {
        return send(stream, StatusCode::NO_CONTENT, &headers, None).await;
    }
    let prefix = Sha256::restore(&cursor.sha256).map(|sha256| sha256.hex());
    let body = json!({
        "job": cursor.origin.job,
        "task": cursor.origin.task,
        "offset": cursor.offset(),
        "prefix_sha256": prefix,
        "records": cursor.decoder.index,
        "committed": cursor.committed,
        "size": cursor.origin.size,
    });
    send(
        stream,
        StatusCode::OK,
        &headers,
        Some(("application/json", &body)),
    )
    .await
}

/// `PATCH /v1/uploads/{job}`: the rest of the body, from `Upload-Offset` on.
pub(super) async fn append(
    request: Request<()>,
    mut stream: Stream,
    job: String,
    grant: Grant,
    service: Arc<Service>,
    window: Option<Arc<ConnectionWindow>>,
    shutdown: Shutdown,
) {
    match start(&request, &job, &grant, &service).await {
        Ok(Appended::Job(job)) => serve(stream, *job, None, service, window, shutdown).await,
        Ok(Appended::Mismatch { expected, provided }) => {
            mismatch(&mut stream, expected, provided).await
        }
        Err(refusal) => refuse_job(&mut stream, &service, refusal).await,
    }
}

/// What a `PATCH` starts.
enum Appended {
    /// The job, going on from its cursor.
    Job(Box<Serving>),
    /// The client's offset is not the resource's.
    Mismatch { expected: u64, provided: u64 },
}

/// Reads a `PATCH`'s offset and digest, claims the job and starts its task again.
async fn start(
    request: &Request<()>,
    job: &str,
    grant: &Grant,
    service: &Service,
) -> Result<Appended, Refusal> {
    let headers = request.headers();
    let provided = upload_offset(headers)?;
    let part = (!completes(headers)?).then_some(Part::Append);
    let mut header = JobHeader::new("");
    header.sha256 = declared_digest(headers)?;
    // The job is taken over first: a request still attached to it (its client gone, its
    // last bytes still being read) stops, so the offset is final, and a client that was
    // behind it asks again and finds the same.
    let cursor = crate::resumes::claim(service, job, grant, &header).await?;
    if part.is_some() && cursor.origin.atomic {
        return Err(whole_only(ATOMIC_WHOLE));
    }
    if cursor.offset() != provided {
        return Ok(Appended::Mismatch {
            expected: cursor.offset(),
            provided,
        });
    }
    let declared = content_length(headers)?;
    let origin = &cursor.origin;
    let upload = UploadInfo {
        name: origin.name.clone(),
        size: origin.size,
        content_type: None,
    };
    let (plugin, task) = jobs::start_task(
        job,
        &origin.task,
        origin.format,
        &origin.params,
        upload,
        grant,
        service,
    )?;
    check_size(
        origin.size,
        service.limits.max_upload_bytes().map(|max| max + provided),
    )?;
    let admission = service.limits.admit(&grant.sub)?;
    let spec = JobSpec {
        job: job.to_owned(),
        upload_stream: None,
        task: plugin.name.to_owned(),
        format: origin.format,
        name: origin.name.clone(),
        size: origin.size,
        source: None,
        unchanged: false,
        sha256: origin.sha256.clone(),
        atomic: origin.atomic,
    };
    let resume = Resume {
        store: service.store.clone(),
        cursor,
    };
    Ok(Appended::Job(Box::new(Serving {
        spec,
        plugin,
        task,
        grant: grant.clone(),
        admission,
        resume: Some(resume),
        declared,
        part,
    })))
}

/// `DELETE /v1/uploads/{job}`: the job ends `cancelled` and cannot be resumed; what it
/// committed stays.
pub(super) async fn cancel(stream: &mut Stream, service: &Service, job: String, grant: &Grant) {
    let cancelled = async {
        let cursor = crate::resumes::claim(service, &job, grant, &JobHeader::new("")).await?;
        resume::end(&service.store, &job, cursor.epoch, Outcome::Ended)
            .answer()
            .await
            .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        Ok::<_, Refusal>(cursor)
    };
    match cancelled.await {
        Ok(cursor) => {
            remember_cancelled(service, &cursor).await;
            send(stream, StatusCode::NO_CONTENT, &[], None).await
        }
        Err(refusal) => refuse_job(stream, service, refusal).await,
    }
}

/// The job history says the job was cancelled, with what it had committed.
async fn remember_cancelled(service: &Service, cursor: &Cursor) {
    let origin = &cursor.origin;
    let record = JobRecord::start(
        &origin.job,
        Some(&origin.sub),
        &origin.task,
        &origin.transport,
        cursor.format,
        origin.name.clone(),
    );
    let last = Event::Failed {
        job: origin.job.clone(),
        code: ErrorCode::Cancelled,
        message: "the upload was cancelled (DELETE of its upload resource); records committed before it are kept".into(),
        committed: cursor.committed,
        bytes: cursor.offset(),
        records: cursor.decoder.index,
        errors: cursor.errors,
        offset: None,
        first_errors: cursor.first_errors.clone(),
    };
    let record = record.end(cursor.format, &last);
    if let Err(e) = history::submit(&service.store, &record, history::Sync::Now)
        .answer()
        .await
    {
        tracing::warn!("cannot write the job history: {e}");
    }
}

/// The `Upload-Offset` an append says it starts at.
fn upload_offset(headers: &http::HeaderMap) -> Result<u64, Refusal> {
    let value = headers.get("upload-offset").ok_or_else(|| {
        Refusal::new(
            ErrorCode::BadParams,
            "an append needs `Upload-Offset: N`, the byte it starts at (HEAD the upload resource for it)".into(),
        )
    })?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            Refusal::new(
                ErrorCode::BadParams,
                "`Upload-Offset` is not a whole number of bytes".into(),
            )
        })
}

/// Whether a request completes its upload: `Upload-Complete: ?1` (or no such field), not
/// `?0` (it sends a part of it).
pub(super) fn completes(headers: &http::HeaderMap) -> Result<bool, Refusal> {
    match headers
        .get("upload-complete")
        .map(|v| v.to_str().map(str::trim))
    {
        None | Some(Ok("?1")) => Ok(true),
        Some(Ok("?0")) => Ok(false),
        Some(_) => Err(Refusal::new(
            ErrorCode::BadParams,
            "`Upload-Complete` is `?1` or `?0` (a structured boolean)".into(),
        )),
    }
}

/// `409` with the draft's problem: the offset the resource expects, and the one given.
async fn mismatch(stream: &mut Stream, expected: u64, provided: u64) {
    let message = format!(
        "the upload goes on at byte {expected}, not {provided}: send the body from byte {expected} (HEAD the upload resource for its offset)"
    );
    let problem = json!({
        "type": MISMATCHING_OFFSET,
        "title": "offset from request does not match offset of resource",
        "expected-offset": expected,
        "provided-offset": provided,
        "error": {"code": ErrorCode::OffsetMismatch.as_str(), "message": message},
    });
    let headers = [("upload-offset", expected.to_string())];
    let body = Some(("application/problem+json", &problem));
    send(stream, StatusCode::CONFLICT, &headers, body).await
}

/// A request that sends a part of its job's body (`Upload-Complete: ?0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// The request that creates the upload: answered `201 Created`.
    Creation,
    /// An append: answered `204 No Content`.
    Append,
}

/// Why an atomic job takes no part of a body.
pub(super) const ATOMIC_WHOLE: &str = "an atomic job keeps nothing before its end";

/// Why a job whose body cannot be resumed takes no part of it.
pub(super) fn whole_only(why: &str) -> Refusal {
    Refusal::new(
        ErrorCode::BadParams,
        format!("{why}, so its body is sent whole: send it without `Upload-Complete: ?0`"),
    )
}

/// Answers a request that sent a part of job `job`'s body, once the job stopped (`last`: its
/// final event): where the rest starts, or why the job cannot go on.
pub(super) async fn answer_part(
    send: &mut SendHalf,
    part: Part,
    job: &str,
    store: &edge_tasks::Store,
    last: Option<Event>,
) {
    let (status, headers, body) = match &last {
        Some(Event::Failed { code, .. }) if resume::resumable(*code) => {
            let (store, wanted) = (store.clone(), job.to_owned());
            let cursor = tokio::task::spawn_blocking(move || resume::load(&store, &wanted)).await;
            match cursor {
                Ok(Ok(Some(cursor))) => waiting(part, &cursor),
                Ok(Ok(None)) => failure(ErrorCode::Internal, "the job's cursor is gone", &last),
                Ok(Err(e)) => failure(e.code(), &e.to_string(), &last),
                Err(e) => failure(ErrorCode::Internal, &e.to_string(), &last),
            }
        }
        Some(Event::Failed { code, message, .. } | Event::Rejected { code, message, .. }) => {
            failure(*code, message, &last)
        }
        Some(event) => (StatusCode::OK, Vec::new(), Some(json!({ "event": event }))),
        None => failure(
            ErrorCode::Internal,
            "the job ended without a final event",
            &last,
        ),
    };
    let body = body.as_ref().map(|body| ("application/json", body));
    let (response, body) = whole(status, &headers, body);
    if send.send_response(response).await.is_err() {
        return;
    }
    if let Some(bytes) = body {
        let _ = send.send_data(bytes).await;
    }
    send.finish().await;
}

/// The answer to a part that is in: where the rest of the body starts.
fn waiting(
    part: Part,
    cursor: &Cursor,
) -> (
    StatusCode,
    Vec<(&'static str, String)>,
    Option<serde_json::Value>,
) {
    let headers = vec![
        ("location", location(&cursor.origin.job)),
        ("upload-offset", cursor.offset().to_string()),
        ("upload-complete", "?0".to_owned()),
    ];
    match part {
        Part::Append => (StatusCode::NO_CONTENT, headers, None),
        Part::Creation => {
            let body = json!({
                "job": cursor.origin.job,
                "offset": cursor.offset(),
                "committed": cursor.committed,
                "location": location(&cursor.origin.job),
            });
            (StatusCode::CREATED, headers, Some(body))
        }
    }
}

/// The answer to a part whose job failed for good.
fn failure(
    code: ErrorCode,
    message: &str,
    last: &Option<Event>,
) -> (
    StatusCode,
    Vec<(&'static str, String)>,
    Option<serde_json::Value>,
) {
    let body = json!({
        "error": {"code": code.as_str(), "message": message},
        "event": last,
    });
    (status_of(code), Vec::new(), Some(body))
}
