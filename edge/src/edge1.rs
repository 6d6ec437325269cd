//! The `edge/1` job protocol on one QUIC connection: every unidirectional stream the client
//! opens is a job (a header line, then the body), answered on a new unidirectional stream.

use crate::auth::Grant;
use crate::jobs::{self, Body, Broken, Either, Notify, Pumped, Refusal};
use crate::limits::Admission;
use crate::server::IntoVarInt;
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::sources::Opened;
use crate::window::ConnectionWindow;
use bytes::{Bytes, BytesMut};
use edge_proto::header::MAX_HEADER_BYTES;
use edge_proto::{AppCode, ErrorCode, Event, HeaderError, JobHeader};
use edge_tasks::pipeline::JobSpec;
use edge_tasks::resume::Cursor;
use edge_tasks::task::UploadInfo;
use edge_tasks::{Plugin, Task};
use quinn::{Connection, RecvStream, SendStream};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, Instrument};

/// The largest chunk read from an upload stream at once.
const CHUNK_BYTES: usize = 64 * 1024;
/// How long a finished notification stream may take to be acknowledged.
const NOTIFY_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one `edge/1` connection until the client closes it or the server shuts down.
pub(crate) async fn serve(
    connection: Connection,
    service: Arc<Service>,
    window: Arc<ConnectionWindow>,
    authorised: CancellationToken,
    shutdown: Shutdown,
) {
    debug!("edge/1 connection");
    let jobs = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.draining() => break,
            stream = connection.accept_uni() => match stream {
                Ok(upload) => {
                    let job = run_job(connection.clone(), upload, service.clone(), window.clone(), authorised.clone(), shutdown.clone());
                    jobs.spawn(job.in_current_span());
                }
                Err(e) => {
                    debug!("connection ended: {e}");
                    break;
                }
            },
            stream = connection.accept_bi() => match stream {
                Ok((mut send, mut recv)) => {
                    // `edge/1` has no bidirectional streams.
                    let _ = recv.stop(AppCode::ProtocolError.into_varint());
                    let _ = send.reset(AppCode::ProtocolError.into_varint());
                }
                Err(_) => break,
            },
        }
    }
    jobs.close();
    if !shutdown.is_draining() {
        jobs.wait().await;
        return;
    }
    // Draining: running jobs go on; new ones are refused until they have ended.
    tokio::select! {
        _ = jobs.wait() => {}
        _ = refuse_new_jobs(&connection) => {}
    }
    connection.close(AppCode::Shutdown.into_varint(), b"server shutting down");
}

/// While the server drains, answers every new upload stream with `rejected` / `shutting_down`.
async fn refuse_new_jobs(connection: &Connection) {
    while let Ok(mut upload) = connection.accept_uni().await {
        let upload_stream = u64::from(upload.id());
        let refusal = Refusal {
            code: ErrorCode::ShuttingDown,
            message: "the server is shutting down; retry once it is back".into(),
            retry_after: None,
        };
        let connection = connection.clone();
        tokio::spawn(async move { reject(&connection, &mut upload, upload_stream, refusal).await });
    }
}

/// Runs one job on `upload`, answering on a new notification stream.
async fn run_job(
    connection: Connection,
    mut upload: RecvStream,
    service: Arc<Service>,
    window: Arc<ConnectionWindow>,
    authorised: CancellationToken,
    shutdown: Shutdown,
) {
    let upload_stream = u64::from(upload.id());
    let started = start(&mut upload, &service, &authorised).await;
    let (job, header, leftover, grant, admission, plugin, task, source, claimed) = match started {
        Ok(started) => started,
        Err(refusal) => {
            service.metrics.rejected(refusal.code);
            return reject(&connection, &mut upload, upload_stream, refusal).await;
        }
    };
    let Ok(notify) = connection.open_uni().await else {
        debug!("connection closed before the job started");
        return;
    };
    let sha256 = header
        .sha256
        .as_deref()
        .and_then(|s| jobs::declared_sha256(s).ok());
    let spec = JobSpec {
        job,
        upload_stream: Some(upload_stream),
        task: plugin.name.to_owned(),
        format: header.format.or(source.as_ref().and_then(|s| s.format)),
        name: header
            .name
            .clone()
            .or_else(|| source.as_ref().map(|s| s.name.clone())),
        size: source.as_ref().map_or(header.size, |s| s.size),
        source: source.as_ref().map(|s| s.record.clone()),
        unchanged: source.as_ref().is_some_and(|s| s.unchanged),
        sha256,
        atomic: header.atomic,
    };
    let resume = crate::resumes::cursor(
        &service,
        &spec,
        (plugin, task.as_ref()),
        &grant,
        &header.params,
        "edge/1",
        claimed,
    );
    let span = tracing::info_span!("job", job = %spec.job, task = plugin.name, sub = %grant.sub);
    debug!(parent: &span, sub = %grant.sub, "job header accepted");
    let mut upload_body = Upload {
        stream: &mut upload,
        window: &window,
    };
    // A job whose body the server reads itself: the stream ends after the header (anything
    // after it is not read).
    let from_source = source.is_some();
    let leftover = if from_source { Bytes::new() } else { leftover };
    let mut body = match source {
        Some(opened) => Either::Source(opened.body),
        None => Either::Upload(&mut upload_body),
    };
    let run = jobs::run(
        "edge/1",
        &grant.sub,
        admission,
        spec,
        plugin,
        task,
        &mut body,
        leftover,
        Notification(notify),
        service,
        shutdown,
        resume,
    );
    let ended = run.instrument(span).await;
    if from_source {
        let _ = upload.stop(AppCode::NoError.into_varint());
    } else if ended.pumped == Pumped::Unfinished {
        let code = match ended.report.as_ref().map(|r| &r.last) {
            Some(Event::Rejected { .. }) | None => AppCode::Rejected,
            _ => AppCode::JobFailed,
        };
        let _ = upload.stop(code.into_varint());
    }
}

/// A job that may start: its header, the body bytes that came with it, its token's grant,
/// its plugin and task, the source its body comes from when not the stream, and the cursor
/// it goes on from when it is a resume.
type Started = (
    String,
    JobHeader,
    Bytes,
    Grant,
    Admission,
    &'static Plugin,
    Box<dyn Task>,
    Option<Opened>,
    Option<Cursor>,
);

/// Reads the header, checks the token (before any body byte is decoded), starts the task.
async fn start(
    upload: &mut RecvStream,
    service: &Service,
    authorised: &CancellationToken,
) -> Result<Started, Refusal> {
    let (header, leftover) = read_header(upload, service.header_timeout).await?;
    let grant = service.authorize(header.token.as_deref())?;
    authorised.cancel();
    if header.atomic && header.source.is_some() {
        return Err(Refusal::atomic_with_source(ErrorCode::BadHeader));
    }
    if header.resume.is_some() && header.source.is_some() {
        return Err(Refusal {
            code: ErrorCode::BadHeader,
            message: "a resume sends the rest of the body itself: drop `source` (a job whose body the server reads cannot be resumed)".into(),
            retry_after: None,
        });
    }
    let claimed = match &header.resume {
        Some(job) => Some(crate::resumes::claim(service, job, &grant, &header).await?),
        None => None,
    };
    // A resume goes on with the job as it started: its parameters, format, name and size.
    let header = match &claimed {
        Some(cursor) => crate::resumes::as_started(header, &cursor.origin),
        None => header,
    };
    let source = match &header.source {
        Some(spec) => Some(
            service
                .sources
                .open(spec, &grant, &service.store, header.if_changed)
                .await?,
        ),
        None => None,
    };
    let (info, format) = match &source {
        Some(opened) => (
            opened.upload_info(header.name.clone()),
            header.format.or(opened.format),
        ),
        None => (
            UploadInfo {
                name: header.name.clone(),
                size: header.size,
                content_type: None,
            },
            header.format,
        ),
    };
    if let Some(sha256) = &header.sha256 {
        jobs::declared_sha256(sha256)?;
    }
    let job = match &claimed {
        Some(cursor) => cursor.origin.job.clone(),
        None => jobs::new_job_id(service.store.slot()),
    };
    let (plugin, task) = jobs::start_task(
        &job,
        &header.task,
        format,
        &header.params,
        info,
        &grant,
        service,
    )?;
    let admission = service.limits.admit(&grant.sub)?;
    Ok((
        job, header, leftover, grant, admission, plugin, task, source, claimed,
    ))
}

/// Reads the header line; returns it and the body bytes that came after it in the same chunk.
async fn read_header(
    upload: &mut RecvStream,
    timeout: Duration,
) -> Result<(JobHeader, Bytes), Refusal> {
    let mut buf = BytesMut::new();
    let read = async {
        loop {
            let room = MAX_HEADER_BYTES - buf.len();
            let chunk = upload.read_chunk(room, true).await.map_err(|e| Refusal {
                code: ErrorCode::BadHeader,
                message: format!("upload stream broke while reading the job header: {e}"),
                retry_after: None,
            })?;
            let Some(chunk) = chunk else {
                return Err(HeaderError::Unterminated.into());
            };
            let searched = buf.len();
            buf.extend_from_slice(&chunk.bytes);
            if let Some(at) = buf[searched..].iter().position(|&b| b == b'\n') {
                let body = buf.split_off(searched + at + 1).freeze();
                return Ok((JobHeader::parse_line(&buf)?, body));
            }
            if buf.len() >= MAX_HEADER_BYTES {
                return Err(HeaderError::TooLarge.into());
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(Refusal {
                code: ErrorCode::BadHeader,
                message: format!(
                    "no job header within {} s of opening the stream",
                    timeout.as_secs()
                ),
                retry_after: None,
            })
        })
}

/// Refuses a job: stops its upload and sends a lone `rejected` event.
async fn reject(
    connection: &Connection,
    upload: &mut RecvStream,
    upload_stream: u64,
    refusal: Refusal,
) {
    info!(upload_stream, code = %refusal.code, "job rejected: {}", refusal.message);
    let _ = upload.stop(AppCode::Rejected.into_varint());
    if let Ok(notify) = connection.open_uni().await {
        let mut notify = Notification(notify);
        if notify
            .send(Bytes::from(refusal.event(Some(upload_stream)).to_line()))
            .await
        {
            notify.close().await;
        }
    }
}

/// An upload stream as a job body; what it reads counts toward its connection's window.
struct Upload<'a> {
    stream: &'a mut RecvStream,
    window: &'a ConnectionWindow,
}

impl Body for Upload<'_> {
    async fn chunk(&mut self) -> Result<Option<Bytes>, Broken> {
        match self.stream.read_chunk(CHUNK_BYTES, true).await {
            Ok(chunk) => Ok(chunk.map(|c| {
                self.window.consumed(c.bytes.len());
                c.bytes
            })),
            Err(quinn::ReadError::Reset(code))
                if code.into_inner() == u64::from(AppCode::Cancelled.value()) =>
            {
                Err(Broken::cancelled())
            }
            Err(e) => Err(Broken::aborted(format!(
                "the upload stopped before its end: {e}"
            ))),
        }
    }
}

/// A notification stream.
struct Notification(SendStream);

impl Notify for Notification {
    async fn send(&mut self, line: Bytes) -> bool {
        self.0.write_chunk(line).await.is_ok()
    }

    /// Finishes the stream and waits (briefly) until the client has it all, so that closing
    /// the connection right after cannot lose the final event.
    async fn close(mut self) {
        if self.0.finish().is_ok() {
            let _ = tokio::time::timeout(NOTIFY_ACK_TIMEOUT, self.0.stopped()).await;
        }
    }
}
