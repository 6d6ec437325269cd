//! One `edge/1` job, from its upload stream to its notification stream.
//!
//! The upload's header is read and checked here; then three parts run side by side, joined by
//! bounded channels so that a slow store slows the upload (QUIC flow control) instead of
//! buffering it:
//!
//! ```text
//! upload stream --pump--> [chunks, 8] --pipeline (blocking thread)--> [events, 64] --notifier--> notification stream
//! ```

use crate::server::{IntoVarInt, Service};
use bytes::{Bytes, BytesMut};
use edge_proto::header::MAX_HEADER_BYTES;
use edge_proto::{AppCode, ErrorCode, Event, HeaderError, JobHeader};
use edge_tasks::pipeline::{self, Input, JobSpec, Report, Source};
use edge_tasks::{registry, Context, Plugin, Task};
use quinn::{Connection, RecvStream, SendStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

/// Chunks waiting between the upload stream and the pipeline.
const CHUNK_QUEUE: usize = 8;
/// The largest chunk read from the upload stream at once.
const CHUNK_BYTES: usize = 64 * 1024;
/// Events waiting between the pipeline and the notification stream.
const EVENT_QUEUE: usize = 64;
/// How long a finished notification stream may take to be acknowledged.
const NOTIFY_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one job on `upload`, answering on a new notification stream of `connection`.
pub(crate) async fn run(
    connection: Connection,
    mut upload: RecvStream,
    service: Arc<Service>,
    shutdown: CancellationToken,
) {
    let upload_stream = u64::from(upload.id());
    let (header, leftover) = match read_header(&mut upload, service.header_timeout).await {
        Ok(read) => read,
        Err(refusal) => return reject(&connection, &mut upload, upload_stream, refusal).await,
    };
    let (plugin, task) = match start_task(&header, &service) {
        Ok(started) => started,
        Err(refusal) => return reject(&connection, &mut upload, upload_stream, refusal).await,
    };
    let job = new_job_id();
    let span = tracing::info_span!("job", %job, task = plugin.name);
    let spec = JobSpec {
        job,
        upload_stream: Some(upload_stream),
        task: plugin.name.to_owned(),
        format: header.format,
        name: header.name,
        size: header.size,
    };
    debug!(parent: &span, token = header.token.is_some(), "job header accepted");
    let running = Running {
        connection,
        upload,
        leftover,
        spec,
        plugin,
        task,
    };
    running.run(service, shutdown).instrument(span).await;
}

/// Why a job was refused before it started.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl From<HeaderError> for Refusal {
    fn from(e: HeaderError) -> Refusal {
        Refusal {
            code: e.code(),
            message: e.to_string(),
        }
    }
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
            })?;
            let Some(chunk) = chunk else {
                return Err(HeaderError::Unterminated.into());
            };
            let searched = buf.len();
            buf.extend_from_slice(&chunk.bytes);
            if let Some(at) = memchr_newline(&buf[searched..]) {
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
            })
        })
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// Finds the plugin and starts its task, or says why not.
fn start_task(
    header: &JobHeader,
    service: &Service,
) -> Result<(&'static Plugin, Box<dyn Task>), Refusal> {
    let plugin = registry::find(&header.task).ok_or_else(|| Refusal {
        code: ErrorCode::UnknownTask,
        message: format!(
            "no task `{}`; this server runs: {}",
            header.task,
            registry::names()
        ),
    })?;
    if let Some(format) = header.format {
        if !plugin.accepts(format) {
            return Err(Refusal {
                code: ErrorCode::UnknownFormat,
                message: format!(
                    "task `{}` does not accept format `{format}`; it accepts: {}",
                    plugin.name,
                    plugin
                        .formats
                        .iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let context = Context {
        store: service.store.clone(),
    };
    let task = (plugin.create)(&header.params, &context).map_err(|e| Refusal {
        code: ErrorCode::BadParams,
        message: e.0,
    })?;
    Ok((plugin, task))
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
    let event = Event::Rejected {
        code: refusal.code,
        message: refusal.message,
        committed: 0,
        upload_stream: Some(upload_stream),
    };
    if let Ok(mut notify) = connection.open_uni().await {
        if notify.write_all(&event.to_line()).await.is_ok() {
            finish(notify).await;
        }
    }
}

/// A job whose task has started.
struct Running {
    connection: Connection,
    upload: RecvStream,
    leftover: Bytes,
    spec: JobSpec,
    plugin: &'static Plugin,
    task: Box<dyn Task>,
}

impl Running {
    async fn run(mut self, service: Arc<Service>, shutdown: CancellationToken) {
        let Ok(notify) = self.connection.open_uni().await else {
            debug!("connection closed before the job started");
            return;
        };
        // Wait for a job slot: until then nothing is read, and QUIC flow control holds the upload.
        let slot = tokio::select! {
            slot = service.job_slots.acquire() => slot,
            _ = shutdown.cancelled() => {
                let _ = self.upload.stop(AppCode::Rejected.into_varint());
                let event = Event::Rejected {
                    code: ErrorCode::ShuttingDown,
                    message: "the server is shutting down; retry once it is back".into(),
                    committed: 0,
                    upload_stream: self.spec.upload_stream,
                };
                let (events, notifier) = spawn_notifier(notify);
                let _ = events.send(event).await;
                drop(events);
                let _ = notifier.await;
                return;
            }
        };
        let Ok(_slot) = slot else { return };

        let (chunks, chunk_queue) = mpsc::channel(CHUNK_QUEUE);
        let (events, notifier) = spawn_notifier(notify);
        let pipeline = {
            let events = events.clone();
            let settings = service.settings.clone();
            let handle = Handle::current();
            let (spec, plugin, task) = (self.spec.clone(), self.plugin, self.task);
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                let mut source = QueueSource {
                    queue: chunk_queue,
                    handle,
                };
                let mut emit = |event: Event| {
                    // A client that stopped reading its notifications does not stop the job.
                    let _ = events.blocking_send(event);
                };
                pipeline::run(&spec, plugin, task, &mut source, &settings, &mut emit)
            })
        };
        let pumped = pump(
            &mut self.upload,
            std::mem::take(&mut self.leftover),
            chunks,
            &shutdown,
        )
        .await;
        let report = match pipeline.await {
            Ok(report) => Some(report),
            Err(e) => {
                warn!("job pipeline crashed: {e}");
                let _ = events
                    .send(Event::Failed {
                        job: self.spec.job.clone(),
                        code: ErrorCode::Internal,
                        message: "the job stopped on an internal error; records reported as committed are stored".into(),
                        committed: 0,
                        bytes: 0,
                        records: 0,
                        errors: 0,
                        offset: None,
                    })
                    .await;
                None
            }
        };
        drop(events);
        if pumped == Pumped::Unfinished {
            let code = match report.as_ref().map(|r| &r.last) {
                Some(Event::Rejected { .. }) => AppCode::Rejected,
                _ => AppCode::JobFailed,
            };
            let _ = self.upload.stop(code.into_varint());
        }
        let _ = notifier.await;
        if let Some(report) = report {
            log_report(&report);
        }
    }
}

fn log_report(report: &Report) {
    let outcome = report.last.name();
    info!(
        outcome,
        bytes = report.bytes,
        records = report.records,
        committed = report.committed,
        errors = report.errors,
        format = report.format.map(|f| f.as_str()),
        "job ended"
    );
}

/// How the pump left the upload stream.
#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    /// Read to its end (or it broke): nothing more will come.
    Finished,
    /// The pipeline stopped first: the client may still be sending.
    Unfinished,
}

/// Moves the upload's chunks into the pipeline's queue until the upload ends, breaks, the
/// pipeline stops, or the server shuts down.
async fn pump(
    upload: &mut RecvStream,
    leftover: Bytes,
    chunks: mpsc::Sender<Input>,
    shutdown: &CancellationToken,
) -> Pumped {
    let mut next = (!leftover.is_empty()).then_some(Input::Chunk(leftover));
    loop {
        let input = match next.take() {
            Some(input) => input,
            None => tokio::select! {
                _ = shutdown.cancelled() => shutdown_input(),
                _ = chunks.closed() => return Pumped::Unfinished,
                read = upload.read_chunk(CHUNK_BYTES, true) => match read {
                    Ok(Some(chunk)) => Input::Chunk(chunk.bytes),
                    Ok(None) => Input::End,
                    Err(e) => Input::Aborted {
                        code: ErrorCode::UploadAborted,
                        message: format!("the upload stopped before its end: {e}"),
                    },
                },
            },
        };
        let more = matches!(input, Input::Chunk(_));
        let was_shutdown = matches!(
            &input,
            Input::Aborted {
                code: ErrorCode::Shutdown,
                ..
            }
        );
        let sent = tokio::select! {
            sent = chunks.send(input) => sent.is_ok(),
            _ = shutdown.cancelled(), if !was_shutdown => {
                next = Some(shutdown_input());
                continue;
            }
        };
        if !sent {
            return Pumped::Unfinished;
        }
        if !more {
            return if was_shutdown {
                Pumped::Unfinished
            } else {
                Pumped::Finished
            };
        }
    }
}

fn shutdown_input() -> Input {
    Input::Aborted {
        code: ErrorCode::Shutdown,
        message: "the server is shutting down; records committed before it are kept".into(),
    }
}

/// The pipeline's view of the chunk queue (it runs on a blocking thread).
struct QueueSource {
    queue: mpsc::Receiver<Input>,
    handle: Handle,
}

impl Source for QueueSource {
    fn next(&mut self, wait: Duration) -> Input {
        let received = self
            .handle
            .block_on(tokio::time::timeout(wait, self.queue.recv()));
        match received {
            Ok(Some(input)) => input,
            Ok(None) => Input::Aborted {
                code: ErrorCode::UploadAborted,
                message: "the upload stream closed".into(),
            },
            Err(_) => Input::Idle,
        }
    }
}

/// Starts the task that writes events, one NDJSON line each, to the notification stream.
fn spawn_notifier(notify: SendStream) -> (mpsc::Sender<Event>, tokio::task::JoinHandle<()>) {
    let (events, queue) = mpsc::channel(EVENT_QUEUE);
    let task = tokio::spawn(write_events(notify, queue).in_current_span());
    (events, task)
}

async fn write_events(mut notify: SendStream, mut queue: mpsc::Receiver<Event>) {
    let mut writable = true;
    while let Some(event) = queue.recv().await {
        // Keep draining after a write error so that the pipeline never waits on a dead client.
        if writable && notify.write_all(&event.to_line()).await.is_err() {
            debug!("notification stream closed by the client");
            writable = false;
        }
    }
    if writable {
        finish(notify).await;
    }
}

/// Finishes a stream and waits (briefly) until the client has it all, so that closing the
/// connection right after cannot lose the final event.
async fn finish(mut stream: SendStream) {
    if stream.finish().is_ok() {
        let _ = tokio::time::timeout(NOTIFY_ACK_TIMEOUT, stream.stopped()).await;
    }
}

/// A new job id: 16 hex digits, milliseconds since the epoch then a counter, so ids sort by
/// start time.
fn new_job_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xf_ffff;
    format!("{:011x}{n:05x}", millis & 0x0fff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_unique_and_sort_by_time() {
        let a = new_job_id();
        let b = new_job_id();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert!(a < b, "{a} then {b}");
    }
}
