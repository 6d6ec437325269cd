//! One job, whatever carries it (`edge/1` or HTTP/3): find and start its task, then run three
//! parts side by side, joined by bounded channels so that a slow store slows the upload (QUIC
//! flow control) instead of buffering it:
//!
//! ```text
//! body --pump--> [chunks, 8] --pipeline (blocking thread)--> [events, 64] --notifier--> events out
//! ```
//!
//! A transport supplies the body as a [`Body`] and the way out for events as a [`Notify`].

use crate::auth::{AuthError, Grant};
use crate::limits::Admission;
use crate::metrics::{JobSeen, Metrics};
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::watch::Publisher;
use bytes::Bytes;
use edge_proto::{ErrorCode, Event, Format, HeaderError};
use edge_tasks::history::{self, JobRecord};
use edge_tasks::pipeline::{self, Input, JobSpec, Report, Resume, Source};
use edge_tasks::task::{JobRef, UploadInfo};
use edge_tasks::{Plugin, Task};
use serde_json::{Map, Value};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

/// Chunks waiting between the body and the pipeline.
const CHUNK_QUEUE: usize = 8;
/// The pump hands the pipeline chunks of up to about this many bytes, gathered from what the
/// transport has ready (QUIC delivers the body a packet, about 1.2 KB, at a time).
const GATHER_BYTES: usize = 64 * 1024;
/// Events waiting between the pipeline and the notifier.
const EVENT_QUEUE: usize = 64;
/// The notifier writes the events waiting in its queue together, up to about this many bytes.
const COALESCE_BYTES: usize = 16 * 1024;

/// A job's body, as its transport delivers it.
pub(crate) trait Body: Send {
    /// The next chunk; `Ok(None)` at the body's normal end; `Err` when the body broke off
    /// (reset, cancelled, lost connection, length mismatch).
    fn chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, Broken>> + Send;

    /// The job ended (`done`: it ended `done`), before its final event leaves: what the body
    /// keeps of a job that was done is kept now (a URL's validators), so that a client that
    /// starts its next job on that event finds it.
    fn ended(
        &mut self,
        _store: &edge_tasks::Store,
        _done: bool,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A job's body: the transport's own (`Upload`), or one the server reads from a source.
pub(crate) enum Either<A, B> {
    /// The upload.
    Upload(A),
    /// A file or URL (`sources`).
    Source(B),
}

impl<A: Body, B: Body> Body for Either<A, B> {
    async fn chunk(&mut self) -> Result<Option<Bytes>, Broken> {
        match self {
            Either::Upload(body) => body.chunk().await,
            Either::Source(body) => body.chunk().await,
        }
    }

    async fn ended(&mut self, store: &edge_tasks::Store, done: bool) {
        match self {
            Either::Upload(body) => body.ended(store, done).await,
            Either::Source(body) => body.ended(store, done).await,
        }
    }
}

impl<T: Body> Body for &mut T {
    async fn chunk(&mut self) -> Result<Option<Bytes>, Broken> {
        (**self).chunk().await
    }

    async fn ended(&mut self, store: &edge_tasks::Store, done: bool) {
        (**self).ended(store, done).await
    }
}

/// Why a body broke off: the code the job fails with, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broken {
    /// `upload_aborted`, or `cancelled` when the client said so.
    pub code: ErrorCode,
    /// What happened, for a person.
    pub message: String,
}

impl Broken {
    /// The body stopped before its end (reset, lost connection, a length mismatch).
    pub(crate) fn aborted(message: String) -> Broken {
        Broken {
            code: ErrorCode::UploadAborted,
            message,
        }
    }

    /// The client cancelled the upload (RESET_STREAM with `cancelled`, 0x30).
    pub(crate) fn cancelled() -> Broken {
        Broken {
            code: ErrorCode::Cancelled,
            message: "the client cancelled the upload; records committed before it are kept".into(),
        }
    }
}

/// Where a job's events go, one NDJSON line at a time.
pub(crate) trait Notify: Send + 'static {
    /// Sends one line; `false` once the client can no longer be reached.
    fn send(&mut self, line: Bytes) -> impl Future<Output = bool> + Send;
    /// Ends the events (after the final one) and waits briefly until the client has them.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Why a job was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The stable code.
    pub code: ErrorCode,
    /// What is wrong and what to do.
    pub message: String,
    /// For `rate_limited`: seconds to wait before trying again.
    pub retry_after: Option<u64>,
}

impl From<HeaderError> for Refusal {
    fn from(e: HeaderError) -> Refusal {
        Refusal {
            code: e.code(),
            message: e.to_string(),
            retry_after: None,
        }
    }
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Refusal {
        Refusal {
            code: e.code(),
            message: e.to_string(),
            retry_after: None,
        }
    }
}

impl Refusal {
    /// A refusal with `code` and `message` (no `retry_after`).
    pub(crate) fn new(code: ErrorCode, message: String) -> Refusal {
        Refusal {
            code,
            message,
            retry_after: None,
        }
    }

    /// `atomic` with a body the server reads itself (`code`: how the transport names a bad
    /// request).
    pub(crate) fn atomic_with_source(code: ErrorCode) -> Refusal {
        Refusal::new(
            code,
            "`atomic` is for uploads: a job whose body the server reads itself commits as it reads (drop `atomic` or `source`)".into(),
        )
    }

    /// The `rejected` event for this refusal.
    pub(crate) fn event(&self, upload_stream: Option<u64>) -> Event {
        Event::Rejected {
            code: self.code,
            message: self.message.clone(),
            committed: 0,
            upload_stream,
            retry_after: self.retry_after,
        }
    }
}

/// A declared SHA-256 as the pipeline compares it (64 lowercase hex digits), or why it is not
/// one.
pub(crate) fn declared_sha256(text: &str) -> Result<String, Refusal> {
    let valid = text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
    if valid {
        return Ok(text.to_ascii_lowercase());
    }
    Err(Refusal {
        code: ErrorCode::BadParams,
        message: format!("`{text}` is not a SHA-256: give 64 hex digits"),
        retry_after: None,
    })
}

/// Finds the plugin for `task` and starts it with `params` as job `job` on a body described
/// by `upload`, or says why not.
pub(crate) fn start_task(
    job: &str,
    task: &str,
    format: Option<Format>,
    params: &Map<String, Value>,
    upload: UploadInfo,
    grant: &Grant,
    service: &Service,
) -> Result<(&'static Plugin, Box<dyn Task>), Refusal> {
    let registry = service.store.registry();
    let plugin = registry.find(task).ok_or_else(|| Refusal {
        code: ErrorCode::UnknownTask,
        message: format!("no task `{task}`; this server runs: {}", registry.names()),
        retry_after: None,
    })?;
    let scope = crate::auth::write_scope(plugin.name);
    if !grant.allows(&scope) {
        return Err(Refusal {
            code: ErrorCode::Forbidden,
            message: format!(
                "the token of `{}` does not hold the scope `{scope}`",
                grant.sub
            ),
            retry_after: None,
        });
    }
    // A task that stores bodies as they are takes any body, whatever format it is named.
    if let Some(format) = format.filter(|_| !plugin.reads_raw()) {
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
                retry_after: None,
            });
        }
    }
    let context = service
        .context()
        .for_job(JobRef {
            id: job.to_owned(),
            sub: grant.sub.clone(),
        })
        .with_upload(upload);
    let task = (plugin.create)(params, &context).map_err(|e| Refusal {
        code: ErrorCode::BadParams,
        message: e.0,
        retry_after: None,
    })?;
    Ok((plugin, task))
}

/// How the pump left the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pumped {
    /// Read to its end, or it broke: nothing more will come.
    Finished,
    /// The job stopped first: the client may still be sending.
    Unfinished,
}

/// How a job ended, for its transport.
#[derive(Debug)]
pub(crate) struct Ended {
    /// Whether the body was read to its end.
    pub pumped: Pumped,
    /// The pipeline's report (`None` if it never started).
    pub report: Option<Report>,
}

/// Runs a started job: waits for a job slot, then pumps `body` (after `leftover`, bytes that
/// came with the header) into the pipeline and its events into `notify`, until the job ends.
/// The job's place in its subject's limits (`admission`) is given back before its final event
/// leaves, so that a client that starts its next job on that event is not refused.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<B: Body, N: Notify>(
    transport: &'static str,
    sub: &str,
    admission: Admission,
    spec: JobSpec,
    plugin: &'static Plugin,
    task: Box<dyn Task>,
    body: &mut B,
    leftover: Bytes,
    notify: N,
    service: Arc<Service>,
    shutdown: Shutdown,
    resume: Option<Resume>,
) -> Ended {
    // Wait for a job slot: until then nothing is read, and QUIC flow control holds the upload.
    // A free slot wins over draining: a job whose response began before the drain runs.
    let slot = tokio::select! {
        biased;
        slot = service.job_slots.acquire() => slot.ok(),
        _ = shutdown.draining() => None,
    };
    let (release, released) = oneshot::channel();
    let publisher = slot.is_some().then(|| service.feeds.open(&spec.job, sub));
    let (events, notifier) = spawn_notifier(notify, service.metrics.clone(), released, publisher);
    let Some(_slot) = slot else {
        drop(admission);
        let _ = release.send(());
        let refusal = Refusal {
            code: ErrorCode::ShuttingDown,
            message: "the server is shutting down; retry once it is back".into(),
            retry_after: None,
        };
        let _ = events.send(refusal.event(spec.upload_stream)).await;
        drop(events);
        let _ = notifier.await;
        return Ended {
            pumped: Pumped::Unfinished,
            report: None,
        };
    };
    let mut record = JobRecord::start(
        &spec.job,
        Some(sub),
        plugin.name,
        transport,
        spec.format,
        spec.name.clone(),
    );
    record.source = spec.source.clone();
    if resume.as_ref().is_some_and(|r| r.cursor.epoch > 1) {
        keep_start(&service, &mut record).await;
    }
    remember(&service, record.clone(), history::Sync::WithNextCommit).await;
    service.metrics.job_started(transport);
    let resume = keep_cursor(&service, resume).await;
    let attachment = resume
        .as_ref()
        .map(|r| service.attached.attach(&spec.job, r.cursor.epoch));
    let taken = attachment
        .as_ref()
        .map_or_else(CancellationToken::new, |a| a.taken.clone());
    let notice = spawn_draining_notice(&shutdown, &events, service.grace);
    let (chunks, queue) = mpsc::channel(CHUNK_QUEUE);
    let job = spec.job.clone();
    let epoch = resume.as_ref().map(|r| r.cursor.epoch);
    let pipeline = spawn_pipeline(
        spec,
        plugin,
        task,
        queue,
        events.clone(),
        service.settings.clone(),
        resume,
    );
    let max_bytes = service.limits.max_upload_bytes();
    let pace = service.pace;
    let stops = Stops {
        shutdown: &shutdown,
        taken: &taken,
    };
    let pumped = pump(body, leftover, chunks, stops, max_bytes, pace).await;
    let report = pipeline.await.ok();
    drop(admission);
    let _ = release.send(());
    notice.abort();
    match &report {
        Some(report) => service.metrics.job_finished(&report.last),
        None => service.metrics.job_finished(&Event::Unknown),
    }
    // The history is written, and the body's end kept, before the final event leaves, so
    // that a client that acts on it (asks for the job, sends the next one) finds them.
    if let Some(report) = &report {
        log_report(report);
        // A job taken over goes on elsewhere: its history is the resume's to write.
        let taken_over = matches!(
            report.last,
            Event::Failed {
                code: ErrorCode::TakenOver,
                ..
            }
        );
        // The cursor's end goes first: the history's durable commit makes it durable too.
        let cursor_ended =
            epoch.map(|epoch| crate::resumes::end(&service, &job, epoch, &report.last));
        if !taken_over {
            remember(
                &service,
                record.end(report.format, &report.last),
                history::Sync::Now,
            )
            .await;
        }
        if let Some(ended) = cursor_ended {
            ended.await;
        }
        let done = matches!(report.last, Event::Done { .. });
        body.ended(&service.store, done).await;
        let _ = events.send(report.last.clone()).await;
    }
    drop(events);
    let _ = notifier.await;
    drop(attachment);
    Ended { pumped, report }
}

/// A resumed job's record keeps when the job first started (its history is one record).
async fn keep_start(service: &Service, record: &mut JobRecord) {
    let (store, job) = (service.store.clone(), record.job.clone());
    match tokio::task::spawn_blocking(move || history::get(&store, &job)).await {
        Ok(Ok(Some(earlier))) => record.started = earlier.started,
        Ok(Ok(None)) => {}
        Ok(Err(e)) => warn!("cannot read the resumed job's history: {e}"),
        Err(e) => warn!("cannot read the resumed job's history: {e}"),
    }
}

/// The cursor a job keeps: a new job's is stored first (a job whose cursor cannot be stored
/// runs without one: it cannot be resumed, and says so in the log).
async fn keep_cursor(service: &Service, resume: Option<Resume>) -> Option<Resume> {
    let resume = resume?;
    if resume.cursor.epoch > 1 {
        return Some(resume);
    }
    let stored = edge_tasks::resume::begin(&service.store, &resume.cursor);
    match stored.answer().await {
        Ok(()) => Some(resume),
        Err(e) => {
            warn!("the job runs without a cursor (it cannot be resumed): cannot store it: {e}");
            None
        }
    }
}

/// What stops a job's body early besides its own end: the server shutting down, or a resume
/// of the job by another client (`taken`).
#[derive(Clone, Copy)]
struct Stops<'a> {
    shutdown: &'a Shutdown,
    taken: &'a CancellationToken,
}

impl Stops<'_> {
    /// Resolves once the body must stop, with the input that ends the job.
    async fn stopped(&self) -> Input {
        tokio::select! {
            _ = self.shutdown.aborted() => shutdown_input(),
            _ = self.taken.cancelled() => Input::Aborted {
                code: ErrorCode::TakenOver,
                message: "another client resumed this job: this upload is no longer attached to it; records committed before are kept".into(),
            },
        }
    }
}

/// Tells the client when the server starts draining (it keeps running until the grace period
/// ends).
fn spawn_draining_notice(
    shutdown: &Shutdown,
    events: &mpsc::Sender<Event>,
    grace: Duration,
) -> tokio::task::JoinHandle<()> {
    let (shutdown, events) = (shutdown.clone(), events.clone());
    tokio::spawn(async move {
        shutdown.draining().await;
        let notice = Event::Draining {
            grace_secs: grace.as_secs(),
        };
        let _ = events.send(notice).await;
    })
}

/// Writes a job's record to the history through the store's writer. A history that cannot be
/// written does not stop the job: the records' own commits decide its outcome.
async fn remember(service: &Service, record: JobRecord, sync: history::Sync) {
    if let Err(e) = history::submit(&service.store, &record, sync)
        .answer()
        .await
    {
        warn!("cannot write the job history: {e}");
    }
}

/// Runs the pipeline on a blocking thread; if it panics, the client still gets a final event.
fn spawn_pipeline(
    spec: JobSpec,
    plugin: &'static Plugin,
    task: Box<dyn Task>,
    queue: mpsc::Receiver<Input>,
    events: mpsc::Sender<Event>,
    settings: pipeline::Settings,
    resume: Option<Resume>,
) -> tokio::task::JoinHandle<Report> {
    let handle = Handle::current();
    let span = tracing::Span::current();
    let job = spec.job.clone();
    let emitter = events.clone();
    let blocking = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut source = QueueSource { queue, handle };
        let mut emit = |event: Event| {
            // The final event waits for the history and the body's end (`run_job` sends it
            // from the report), so that a client that acts on it finds the job's traces.
            if event.is_final() {
                return;
            }
            // A client that stopped reading its events does not stop the job.
            let _ = emitter.blocking_send(event);
        };
        pipeline::run_resumable(
            &spec,
            plugin,
            task,
            &mut source,
            &settings,
            &mut emit,
            resume,
        )
    });
    tokio::spawn(async move {
        match blocking.await {
            Ok(report) => report,
            Err(e) => {
                warn!("job pipeline crashed: {e}");
                let failed = Event::Failed {
                    job,
                    code: ErrorCode::Internal,
                    message: "the job stopped on an internal error; records reported as committed are stored".into(),
                    committed: 0,
                    bytes: 0,
                    records: 0,
                    errors: 0,
                    offset: None,
                    first_errors: Vec::new(),
                };
                Report {
                    bytes: 0,
                    records: 0,
                    committed: 0,
                    errors: 0,
                    format: None,
                    last: failed,
                }
            }
        }
    })
}

fn log_report(report: &Report) {
    info!(
        outcome = report.last.name(),
        bytes = report.bytes,
        records = report.records,
        committed = report.committed,
        errors = report.errors,
        format = report.format.map(|f| f.as_str()),
        "job ended"
    );
}

/// Moves the body's chunks into the pipeline's queue until the body ends, breaks, the
/// pipeline stops, or the server shuts down.
async fn pump<B: Body>(
    body: &mut B,
    leftover: Bytes,
    chunks: mpsc::Sender<Input>,
    stops: Stops<'_>,
    max_bytes: Option<u64>,
    pace: Pace,
) -> Pumped {
    let mut next = (!leftover.is_empty()).then_some(Input::Chunk(leftover));
    let mut received = 0u64;
    let mut watch = PaceWatch::default();
    loop {
        let input = match next.take() {
            Some(input) => input,
            None => {
                let waiting = tokio::time::Instant::now();
                let input = tokio::select! {
                    stopped = stops.stopped() => stopped,
                    _ = chunks.closed() => return Pumped::Unfinished,
                    _ = tokio::time::sleep(watch.left(pace)) => match watch.verdict(pace) {
                        Some(too_slow) => too_slow,
                        None => continue,
                    },
                    read = body.chunk() => match read {
                        Ok(Some(chunk)) => Input::Chunk(gather(body, chunk, &mut next).await),
                        Ok(None) => Input::End,
                        Err(broken) => aborted(broken),
                    },
                };
                // Only time spent waiting for the client counts against its pace (not time
                // the pipeline kept the pump waiting).
                watch.waited += waiting.elapsed();
                if let Input::Chunk(chunk) = &input {
                    watch.bytes += chunk.len() as u64;
                }
                input
            }
        };
        let input = match (input, max_bytes) {
            (Input::Chunk(chunk), Some(max)) if received + chunk.len() as u64 > max => Input::Aborted {
                code: ErrorCode::LimitExceeded,
                message: format!("the upload passed {max} bytes, the most one job may send (limits.max_upload_bytes); records before it are committed"),
            },
            (input, _) => input,
        };
        if let Input::Chunk(chunk) = &input {
            received += chunk.len() as u64;
        }
        let more = matches!(input, Input::Chunk(_));
        // The server ends these jobs while the client may still be sending.
        let was_shutdown = matches!(
            &input,
            Input::Aborted {
                code: ErrorCode::Shutdown
                    | ErrorCode::LimitExceeded
                    | ErrorCode::TooSlow
                    | ErrorCode::TakenOver,
                ..
            }
        );
        let sent = tokio::select! {
            sent = chunks.send(input) => sent.is_ok(),
            stopped = stops.stopped(), if !was_shutdown => {
                next = Some(stopped);
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

/// An upload that broke off.
fn aborted(broken: Broken) -> Input {
    Input::Aborted {
        code: broken.code,
        message: broken.message,
    }
}

/// `first` and whatever more the body has ready right now, up to [`GATHER_BYTES`], as one
/// chunk: the pipeline's thread then wakes once per 64 KiB instead of once per packet. An end
/// or error met on the way is left in `after`, to be handled next.
async fn gather<B: Body>(body: &mut B, first: Bytes, after: &mut Option<Input>) -> Bytes {
    let mut gathered: Option<bytes::BytesMut> = None;
    loop {
        let len = gathered.as_ref().map_or(first.len(), |g| g.len());
        if len >= GATHER_BYTES {
            break;
        }
        match ready_now(body.chunk()).await {
            None => break,
            Some(Ok(Some(more))) => gathered
                .get_or_insert_with(|| {
                    let mut g = bytes::BytesMut::with_capacity(GATHER_BYTES + more.len());
                    g.extend_from_slice(&first);
                    g
                })
                .extend_from_slice(&more),
            Some(Ok(None)) => {
                *after = Some(Input::End);
                break;
            }
            Some(Err(broken)) => {
                *after = Some(aborted(broken));
                break;
            }
        }
    }
    gathered.map_or(first, bytes::BytesMut::freeze)
}

/// Polls `future` once: its output if it is ready now, `None` if it would wait (it is then
/// dropped; body reads are cancel-safe, as the pump's `select!` already relies on).
async fn ready_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        std::task::Poll::Ready(output) => std::task::Poll::Ready(Some(output)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// The slowest upload the server waits for: at least `min_bytes_per_sec` over every `window`
/// of time spent waiting for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pace {
    /// The minimum rate; 0 turns the check off.
    pub min_bytes_per_sec: u64,
    /// How long the rate is measured over.
    pub window: Duration,
}

/// Time spent waiting for the client and bytes received, in the current window.
#[derive(Debug, Default)]
struct PaceWatch {
    waited: Duration,
    bytes: u64,
}

impl PaceWatch {
    /// How long until the current window is over (forever when the check is off).
    fn left(&self, pace: Pace) -> Duration {
        if pace.min_bytes_per_sec == 0 {
            return Duration::from_secs(365 * 24 * 3600);
        }
        pace.window.saturating_sub(self.waited)
    }

    /// At the end of a window: the failure if the client was too slow, else `None` and a new
    /// window begins.
    fn verdict(&mut self, pace: Pace) -> Option<Input> {
        let needed = pace
            .min_bytes_per_sec
            .saturating_mul(pace.window.as_secs().max(1));
        if self.bytes < needed {
            return Some(Input::Aborted {
                code: ErrorCode::TooSlow,
                message: format!(
                    "the upload sent {} bytes in {} s, less than the {} bytes/s the server waits for (jobs.min_upload_bytes_per_sec); records before it are committed",
                    self.bytes,
                    pace.window.as_secs(),
                    pace.min_bytes_per_sec
                ),
            });
        }
        *self = PaceWatch::default();
        None
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

/// Starts the task that writes events, one NDJSON line each; the final one once `released`
/// fires (the job has given back its place in its subject's limits).
fn spawn_notifier<N: Notify>(
    notify: N,
    metrics: Arc<Metrics>,
    released: oneshot::Receiver<()>,
    publisher: Option<Publisher>,
) -> (mpsc::Sender<Event>, tokio::task::JoinHandle<()>) {
    let (events, queue) = mpsc::channel(EVENT_QUEUE);
    let write = write_events(notify, queue, metrics, released, publisher);
    let task = tokio::spawn(write.in_current_span());
    (events, task)
}

async fn write_events<N: Notify>(
    mut notify: N,
    mut queue: mpsc::Receiver<Event>,
    metrics: Arc<Metrics>,
    released: oneshot::Receiver<()>,
    mut publisher: Option<Publisher>,
) {
    let mut reachable = true;
    let mut ended = false;
    let mut seen = JobSeen::default();
    let mut released = Some(released);
    while let Some(first) = queue.recv().await {
        // Events already waiting go out in one write (a job that answers each record sends
        // thousands a second), up to COALESCE_BYTES.
        let mut lines = Vec::new();
        let mut next = Some(first);
        while let Some(event) = next.take() {
            metrics.observe(&event, &mut seen);
            // The final event is the last one: a notice racing it (`draining`) is dropped.
            if !ended {
                ended = event.is_final();
                if ended {
                    if let Some(released) = released.take() {
                        // A dropped sender (the job's task ended) releases too.
                        let _ = released.await;
                    }
                }
                let start = lines.len();
                event.write_line(&mut lines);
                // Watchers (`GET /v1/jobs/{id}/events`) see each event as the client does.
                if let Some(publisher) = &mut publisher {
                    publisher.publish(&event, &lines[start..]);
                }
            }
            if lines.len() < COALESCE_BYTES {
                next = queue.try_recv().ok();
            }
        }
        // Keep draining after a failed send so that the pipeline never waits on a dead client.
        if reachable && !lines.is_empty() && !notify.send(Bytes::from(lines)).await {
            debug!("the client stopped reading events");
            reachable = false;
        }
    }
    if reachable {
        notify.close().await;
    }
}

/// A new job id: 16 hex digits, milliseconds since the epoch (11), the node's slot (2: see
/// [`edge_tasks::Store::slot`]; 00 with redb) and a counter (3), so ids sort by start time
/// and two nodes sharing a store never give the same one.
pub(crate) fn new_job_id(slot: u8) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xfff;
    format!("{:011x}{slot:02x}{n:03x}", millis & 0x0fff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_unique_and_sort_by_time() {
        let a = new_job_id(0);
        let b = new_job_id(0);
        assert_eq!(a.len(), 16);
        assert!(a < b, "{a} then {b}");
        let other = new_job_id(7);
        assert_eq!(&other[11..13], "07", "the node's slot: {other}");
    }
}
