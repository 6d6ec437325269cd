//! Runs one job: pulls the upload's chunks from a [`Source`], decodes them into records, hands
//! them to the task, commits in groups (by count and by time) and emits the notification
//! events. Synchronous and transport-free: the server runs it on a blocking thread, the tests
//! and benchmarks run it directly.
//!
//! The job reads the time from [`Settings::clock`] (commit and progress intervals, its
//! duration), so tests move a [`ManualClock`] instead of waiting.

use crate::decode::sniff::{sniff, Sniff, SNIFF_LIMIT};
use crate::decode::{self, Checkpoint, Decoder, Item, Limits, ResumeState, SyntaxError};
use crate::record::{Record, RecordFault};
use crate::resume::sha256::Sha256;
use crate::resume::{Cursor, Save};
use crate::store::Store;
use crate::task::{Plugin, Task, TaskError};
use crate::writer::Ticket;
use bytes::Bytes;
use edge_proto::{ErrorCode, ErrorSample, Event, Format, FIRST_ERRORS};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a job commits and reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Start a commit once this many accepted records wait (and no commit is running), as
    /// soon as the chunk that brought them is decoded (the job's cursor goes after the last
    /// record decoded).
    pub commit_records: usize,
    /// Start a commit once the oldest uncommitted record waited this long (and no commit is
    /// running).
    pub commit_interval: Duration,
    /// What a job may hold for its next commit, in the task's bytes
    /// ([`Task::pending_bytes`]): beyond its share, the job waits for the running commit and
    /// starts the next before it decodes on. While the store writes one batch, the next one
    /// grows up to the share, so a slow store gets fewer, bigger commits.
    pub batch: BatchBudget,
    /// Send `progress` and `committed` at most this often.
    pub progress_interval: Duration,
    /// Decoder limits.
    pub limits: Limits,
    /// Record errors sent one by one; later ones are only counted.
    pub max_error_events: u64,
    /// A job whose first this many records are all bad fails with `too_many_errors` (0: never).
    pub max_leading_errors: u64,
    /// From record `max_leading_errors` on, a job fails with `too_many_errors` once more than
    /// this share of its records are bad (1.0: never).
    pub max_error_rate: f64,
    /// Told how long each successful commit took (e.g. for a latency histogram).
    pub on_commit: CommitObserver,
    /// Where the job reads the time (commit and progress intervals, durations): the real
    /// clock, or a [`ManualClock`] in tests.
    pub clock: Clock,
    /// What an atomic job ([`JobSpec::atomic`]) may hold until its end, in the task's bytes
    /// ([`Task::pending_bytes`]) and its held answers; past it the job fails
    /// `limit_exceeded`.
    pub atomic_max_bytes: usize,
}

/// Where a job reads the time. [`Clock::real`] (the default) is [`Instant::now`]; a test hands
/// in a [`ManualClock`]'s, so time-based commits are tested without waiting for them.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<dyn Fn() -> Instant + Send + Sync>>);

impl Clock {
    /// The real clock.
    pub fn real() -> Clock {
        Clock(None)
    }

    /// A clock that reads the time from `now`.
    pub fn new(now: impl Fn() -> Instant + Send + Sync + 'static) -> Clock {
        Clock(Some(Arc::new(now)))
    }

    /// The time now.
    pub fn now(&self) -> Instant {
        match &self.0 {
            Some(now) => now(),
            None => Instant::now(),
        }
    }

    /// The time since `earlier` (zero if the clock reads earlier still).
    fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Clock(custom)"
        } else {
            "Clock(real)"
        })
    }
}

impl PartialEq for Clock {
    /// Clocks are equal when both are real or both read the same function.
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// A clock that stands still until told to move ([`ManualClock::advance`]): for tests of
/// time-based behaviour. Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    elapsed_nanos: Arc<AtomicU64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl ManualClock {
    /// A clock that reads the instant it was made until it is advanced.
    pub fn new() -> ManualClock {
        ManualClock {
            start: Instant::now(),
            elapsed_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the time on by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.elapsed_nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    /// The time now.
    pub fn now(&self) -> Instant {
        self.start + Duration::from_nanos(self.elapsed_nanos.load(Ordering::SeqCst))
    }

    /// This clock, for [`Settings::clock`].
    pub fn clock(&self) -> Clock {
        let me = self.clone();
        Clock::new(move || me.now())
    }
}

/// A callback told the duration of every successful commit.
#[derive(Clone, Default)]
pub struct CommitObserver(Option<std::sync::Arc<dyn Fn(Duration) + Send + Sync>>);

impl CommitObserver {
    /// Calls `observe` after every successful commit.
    pub fn new(observe: impl Fn(Duration) + Send + Sync + 'static) -> CommitObserver {
        CommitObserver(Some(std::sync::Arc::new(observe)))
    }

    fn observe(&self, took: Duration) {
        if let Some(observe) = &self.0 {
            observe(took);
        }
    }
}

impl std::fmt::Debug for CommitObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "CommitObserver(set)"
        } else {
            "CommitObserver(none)"
        })
    }
}

impl PartialEq for CommitObserver {
    /// Observers are equal when both are unset or both are the same callback.
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            commit_records: 10_000,
            commit_interval: Duration::from_millis(100),
            batch: BatchBudget::new(12 * 1024 * 1024),
            progress_interval: Duration::from_millis(100),
            limits: Limits::default(),
            max_error_events: 1_000,
            max_leading_errors: 1_000,
            max_error_rate: 0.5,
            on_commit: CommitObserver::default(),
            clock: Clock::real(),
            atomic_max_bytes: DEFAULT_ATOMIC_MAX_BYTES,
        }
    }
}

/// What an atomic job may hold unless configured: 256 MiB.
pub const DEFAULT_ATOMIC_MAX_BYTES: usize = 256 * 1024 * 1024;

/// The memory for the batches of every running job, shared: a job alone may fill its batch
/// up to the whole budget, and `n` jobs get `1/n` of it each (at least [`MIN_BATCH_SHARE`]).
/// A job holds at most twice its share (the batch being written and the next), so all
/// batches together stay near twice the budget however many jobs run. Clones share the count.
#[derive(Debug, Clone)]
pub struct BatchBudget {
    bytes: usize,
    running: Arc<AtomicUsize>,
}

/// The smallest share of the [`BatchBudget`] a job gets.
pub const MIN_BATCH_SHARE: usize = 256 * 1024;

impl BatchBudget {
    /// A budget of `bytes`, shared by the jobs that run with (clones of) it.
    pub fn new(bytes: usize) -> BatchBudget {
        BatchBudget {
            bytes,
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The whole budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Counts a job in until the share is dropped.
    fn join(&self) -> BatchShare {
        self.running.fetch_add(1, Ordering::Relaxed);
        BatchShare {
            budget: self.clone(),
        }
    }
}

impl PartialEq for BatchBudget {
    /// Budgets are equal when they are the same size and shared by the same jobs.
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes && Arc::ptr_eq(&self.running, &other.running)
    }
}

/// One running job's part of a [`BatchBudget`].
#[derive(Debug)]
struct BatchShare {
    budget: BatchBudget,
}

impl BatchShare {
    /// What the job may hold now.
    fn bytes(&self) -> usize {
        let running = self.budget.running.load(Ordering::Relaxed).max(1);
        (self.budget.bytes / running).max(MIN_BATCH_SHARE)
    }
}

impl Drop for BatchShare {
    fn drop(&mut self) {
        self.budget.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a [`Source`] hands the pipeline next.
#[derive(Debug)]
pub enum Input {
    /// More body bytes.
    Chunk(Bytes),
    /// Nothing arrived within the wait; the upload goes on.
    Idle,
    /// The upload ended normally (FIN).
    End,
    /// The upload stopped early: the job fails with this code.
    Aborted {
        /// Why, as a stable code (e.g. `upload_aborted`, `shutdown`).
        code: ErrorCode,
        /// Why, for a person.
        message: String,
    },
}

/// Where the pipeline gets the upload's bytes.
pub trait Source {
    /// Waits at most `wait` for the next input; returns [`Input::Idle`] when nothing came.
    fn next(&mut self, wait: Duration) -> Input;
}

/// What the job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// The job id.
    pub job: String,
    /// The client's upload stream id (`edge/1`).
    pub upload_stream: Option<u64>,
    /// The task's name.
    pub task: String,
    /// The format named by the client; sniffed when `None`.
    pub format: Option<Format>,
    /// The file name, if the client gave one.
    pub name: Option<String>,
    /// The body size, if the client gave it.
    pub size: Option<u64>,
    /// Where the body comes from when it is not the upload's, for the `accepted` event.
    pub source: Option<serde_json::Value>,
    /// The source has not changed since its last fetch: the job ends `done` at once, reading
    /// nothing, with `unchanged`.
    pub unchanged: bool,
    /// The whole body's SHA-256 as the client declared it (64 lowercase hex digits): the
    /// body is hashed as it arrives, a mismatch fails the job `digest_mismatch` before its
    /// last commit, and `done` carries the digest.
    pub sha256: Option<String>,
    /// All or nothing: the job commits nothing until its body ended and its digest (if
    /// declared) matched, then everything in one commit; a job that fails keeps nothing.
    /// Its records are held until then, up to [`Settings::atomic_max_bytes`].
    pub atomic: bool,
}

/// What a job did, for logs and job history.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Body bytes read.
    pub bytes: u64,
    /// Records decoded (good and bad).
    pub records: u64,
    /// Records committed.
    pub committed: u64,
    /// Records reported as errors.
    pub errors: u64,
    /// The format used, once known.
    pub format: Option<Format>,
    /// The final event: `done`, `failed` or `rejected`.
    pub last: Event,
}

/// A job that keeps a cursor in the store ([`crate::resume`]): where, and from which cursor it
/// starts (a new job's, or one a resume claimed).
#[derive(Debug, Clone)]
pub struct Resume {
    /// The store the cursor is written to, with each commit.
    pub store: Store,
    /// The cursor the job starts from: [`Cursor::start`] for a new job, the one
    /// [`crate::resume::claim`] returned for a resumed one (the body then goes on at its
    /// offset).
    pub cursor: Cursor,
}

impl Resume {
    /// Whether the job goes on from an earlier run of it.
    fn resumed(&self) -> bool {
        self.cursor.epoch > 1
    }
}

/// Runs the job to its end and returns its report. Every event, the final one included, goes
/// to `emit` in order.
pub fn run(
    spec: &JobSpec,
    plugin: &Plugin,
    task: Box<dyn Task>,
    source: &mut dyn Source,
    settings: &Settings,
    emit: &mut dyn FnMut(Event),
) -> Report {
    run_resumable(spec, plugin, task, source, settings, emit, None)
}

/// [`run`] for a job that keeps a cursor with each commit, so that it can be resumed where
/// its last commit ended; with a claimed cursor, it goes on there: the source's bytes are the
/// body's from the cursor's offset on.
pub fn run_resumable(
    spec: &JobSpec,
    plugin: &Plugin,
    task: Box<dyn Task>,
    source: &mut dyn Source,
    settings: &Settings,
    emit: &mut dyn FnMut(Event),
    resume: Option<Resume>,
) -> Report {
    let mut job = Job::new(spec, task, settings, emit);
    if spec.unchanged {
        let format = spec.format.or(plugin.formats.first().copied());
        job.accept(format.unwrap_or(Format::Raw));
        return job.unchanged();
    }
    if plugin.reads_raw() {
        return job.raw(resume, source);
    }
    job.resume = resume;
    if let Some(resume) = job.resume.clone().filter(Resume::resumed) {
        job.announce = true;
        if let Some(format) = resume.cursor.format.filter(|_| resume.cursor.offset() > 0) {
            return job.go_on(plugin, format, &resume.cursor, source);
        }
    }
    let (format, prefix, ended) = match choose_format(spec, plugin, source, settings) {
        Chosen::Format {
            format,
            prefix,
            ended,
        } => (format, prefix, ended),
        Chosen::Aborted {
            code,
            message,
            bytes,
            guess,
        } => {
            // Every event stream starts with `accepted` (it carries `upload_stream`, which
            // clients pair streams by), so even a job that stopped while sniffing sends one.
            job.bytes = bytes;
            job.accept(guess);
            return job.fail(code, message, None);
        }
    };
    if !plugin.accepts(format) {
        return job.reject(
            ErrorCode::UnknownFormat,
            unaccepted(plugin, format, spec.format.is_none()),
        );
    }
    job.accept(format);
    let mut decoder = decode::decoder_reading(format, settings.limits, plugin.csv_columns);
    job.drive(decoder.as_mut(), prefix, ended, source)
}

/// How far a job's cursor may be written, once known: see [`Job::boundary`].
#[derive(Debug, Clone)]
struct Boundary {
    /// The decoder's checkpoint after the last item taken.
    checkpoint: Checkpoint,
    /// The SHA-256 of the body up to the checkpoint's offset.
    sha256: Sha256,
}

fn unaccepted(plugin: &Plugin, format: Format, sniffed: bool) -> String {
    let accepted = plugin
        .formats
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if sniffed {
        format!(
            "the upload looks like {format}; task `{}` accepts {accepted} (pass the format explicitly if the guess is wrong)",
            plugin.name
        )
    } else {
        format!(
            "task `{}` does not accept format {format}; it accepts {accepted}",
            plugin.name
        )
    }
}

/// The outcome of choosing a format.
enum Chosen {
    /// The format, the bytes read to choose it (to be decoded first), and whether the upload
    /// already ended.
    Format {
        format: Format,
        prefix: Vec<Bytes>,
        ended: bool,
    },
    /// The upload stopped before the format could be chosen; `guess` is what its bytes so
    /// far look like (a format the task accepts).
    Aborted {
        code: ErrorCode,
        message: String,
        bytes: u64,
        guess: Format,
    },
}

/// The client's format, or one sniffed from the first bytes: it holds at most
/// [`SNIFF_LIMIT`] bytes plus the chunk that crosses it, then decides.
fn choose_format(
    spec: &JobSpec,
    plugin: &Plugin,
    source: &mut dyn Source,
    settings: &Settings,
) -> Chosen {
    let mut chunks = Vec::new();
    if let Some(format) = spec.format {
        return Chosen::Format {
            format,
            prefix: chunks,
            ended: false,
        };
    }
    let default = plugin.formats.first().copied().unwrap_or(Format::Json);
    let mut prefix = Vec::new();
    loop {
        let at_eof = match source.next(settings.commit_interval) {
            Input::Chunk(chunk) => {
                let room = SNIFF_LIMIT.saturating_sub(prefix.len());
                prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
                chunks.push(chunk);
                false
            }
            Input::Idle => continue,
            Input::End => true,
            Input::Aborted { code, message } => {
                let bytes = chunks.iter().map(|c| c.len() as u64).sum();
                let guess = match sniff(&prefix, true) {
                    Sniff::Format(format) if plugin.accepts(format) => format,
                    _ => default,
                };
                return Chosen::Aborted {
                    code,
                    message,
                    bytes,
                    guess,
                };
            }
        };
        // Whitespace-only prefixes stay `Empty` at the limit: decide then, or the chunks
        // held here would grow with the upload.
        let undecided = !at_eof && prefix.len() < SNIFF_LIMIT;
        let format = match sniff(&prefix, at_eof) {
            Sniff::Format(format) => format,
            Sniff::NeedMore | Sniff::Empty if undecided => continue,
            Sniff::NeedMore | Sniff::Empty => default,
        };
        return Chosen::Format {
            format,
            prefix: chunks,
            ended: at_eof,
        };
    }
}

/// One running job's state.
struct Job<'a> {
    spec: &'a JobSpec,
    task: Box<dyn Task>,
    settings: &'a Settings,
    emit: &'a mut dyn FnMut(Event),
    started: Instant,
    format: Option<Format>,
    bytes: u64,
    records: u64,
    errors: u64,
    /// Items taken from the decoder in this run (records, faults, pieces of a raw body).
    items: u64,
    /// Accepted records not yet in a commit.
    pending: u64,
    /// Records in the commit that is running (0: none is).
    in_flight: u64,
    /// When the running commit started.
    commit_started: Option<Instant>,
    /// The job's part of the batch memory.
    share: BatchShare,
    committed: u64,
    /// When the oldest record not yet in a commit was accepted.
    pending_since: Option<Instant>,
    /// The last time progress was sent, and the committed count last sent.
    progress_sent: Instant,
    committed_sent: u64,
    /// The committed offset last sent, for a raw body (whose commits count no record).
    offset_sent: u64,
    /// Too many bad records: why, and the offset of the record that tipped it.
    too_many_errors: Option<(String, u64)>,
    /// The first few record errors, for the final event.
    first_errors: Vec<ErrorSample>,
    /// The body is raw ([`Format::Raw`]): what is pending and in flight are parts of it,
    /// not records, and nothing counts as committed before [`Task::finish`].
    raw: bool,
    /// The task refused the job while taking bytes.
    refused: Option<crate::TaskError>,
    /// The body's SHA-256 so far (to the end of the last chunk read).
    sha256: Sha256,
    /// Where `sha256` has got to; and where the last item taken ends.
    hashed_to: u64,
    last_end: u64,
    /// The SHA-256 up to `last_end`, saved before the rest of that chunk was hashed.
    hashed_at_last_end: Sha256,
    /// The decoder's checkpoint after the last item taken (as of the last chunk).
    checkpoint: Checkpoint,
    /// An item ended before bytes already hashed (only at the end of the body): the cursor
    /// can no longer be written.
    boundary_lost: bool,
    /// The job keeps a cursor with each commit.
    resume: Option<Resume>,
    /// The job goes on from an earlier run: `resumed` follows `accepted`.
    announce: bool,
    /// The offset the running commit's records end at, and the last committed one's.
    in_flight_offset: u64,
    committed_offset: u64,
    /// The cursor write of the running commit, when the pipeline writes it for the task.
    cursor_write: Option<Ticket<()>>,
    /// All or nothing ([`JobSpec::atomic`]; a raw body is published at its end anyway).
    atomic: bool,
    /// An atomic job's answers, held until its end, and their size.
    held: Vec<Event>,
    held_bytes: usize,
    /// An atomic job held more than it may: why.
    too_big: Option<String>,
}

impl<'a> Job<'a> {
    fn new(
        spec: &'a JobSpec,
        task: Box<dyn Task>,
        settings: &'a Settings,
        emit: &'a mut dyn FnMut(Event),
    ) -> Self {
        let now = settings.clock.now();
        Job {
            spec,
            task,
            settings,
            emit,
            started: now,
            format: None,
            bytes: 0,
            records: 0,
            errors: 0,
            items: 0,
            pending: 0,
            in_flight: 0,
            commit_started: None,
            share: settings.batch.join(),
            committed: 0,
            pending_since: None,
            progress_sent: now,
            committed_sent: 0,
            offset_sent: 0,
            too_many_errors: None,
            first_errors: Vec::new(),
            raw: false,
            refused: None,
            sha256: Sha256::new(),
            hashed_to: 0,
            last_end: 0,
            hashed_at_last_end: Sha256::new(),
            checkpoint: Checkpoint {
                offset: 0,
                index: 0,
                state: ResumeState::Start,
            },
            boundary_lost: false,
            resume: None,
            announce: false,
            in_flight_offset: 0,
            committed_offset: 0,
            cursor_write: None,
            atomic: spec.atomic,
            held: Vec::new(),
            held_bytes: 0,
            too_big: None,
        }
    }

    /// Goes on with a resumed job from `cursor`: restores the counts, the SHA-256, the
    /// task's state and the decoder, then decodes the body from the cursor's offset.
    fn go_on(
        mut self,
        plugin: &Plugin,
        format: Format,
        cursor: &Cursor,
        source: &mut dyn Source,
    ) -> Report {
        let restored = self.restore(cursor).and_then(|()| {
            decode::resume(
                format,
                self.settings.limits,
                plugin.csv_columns,
                &cursor.decoder,
            )
            .map_err(|e| e.to_string())
        });
        // `resumed` (after `accepted`) says where the restored job stands.
        self.announce = restored.is_ok();
        self.accept(format);
        match restored {
            Ok(mut decoder) => self.drive(decoder.as_mut(), Vec::new(), false, source),
            Err(message) => {
                let message = format!(
                    "job {} cannot go on from its cursor: {message}",
                    self.spec.job
                );
                self.reject(ErrorCode::NotResumable, message)
            }
        }
    }

    /// Runs a job whose body the task takes as it is ([`Task::bytes`]). It keeps its cursor
    /// when the task makes whole units durable ([`Task::raw_unit`]): the body is then handed
    /// over in those units, and a resumed job goes on at the cursor's.
    fn raw(mut self, resume: Option<Resume>, source: &mut dyn Source) -> Report {
        self.raw = true;
        self.atomic = false;
        let Some(unit) = self.task.raw_unit() else {
            if resume.as_ref().is_some_and(Resume::resumed) {
                let message = format!(
                    "job {} cannot go on: its task takes this body as a whole (send it again as a new job)",
                    self.spec.job
                );
                return self.reject(ErrorCode::NotResumable, message);
            }
            self.accept(Format::Raw);
            let mut decoder = decode::raw::RawDecoder::new();
            return self.drive(&mut decoder, Vec::new(), false, source);
        };
        self.resume = resume;
        let mut decoder = decode::raw::RawDecoder::new();
        if let Some(resume) = self.resume.clone().filter(Resume::resumed) {
            let cursor = &resume.cursor;
            if cursor.offset() > 0 {
                if let Err(message) = self.restore(cursor) {
                    let message = format!(
                        "job {} cannot go on from its cursor: {message}",
                        self.spec.job
                    );
                    return self.reject(ErrorCode::NotResumable, message);
                }
                decoder = decode::raw::RawDecoder::resume(cursor.offset(), cursor.decoder.index);
            }
            self.announce = true;
        }
        self.accept(Format::Raw);
        let mut decoder = decoder.in_units(unit);
        self.drive(&mut decoder, Vec::new(), false, source)
    }

    /// Takes a resumed job's counts, SHA-256 and task state from its cursor.
    fn restore(&mut self, cursor: &Cursor) -> Result<(), String> {
        let offset = cursor.offset();
        let sha256 = Sha256::restore(&cursor.sha256)
            .filter(|sha256| sha256.len() == offset)
            .ok_or("its SHA-256 state is damaged")?;
        if let Some(state) = &cursor.task {
            self.task.restore(state).map_err(|e| e.to_string())?;
        }
        self.bytes = offset;
        // A raw body's items are its pieces, not records.
        self.records = if self.raw { 0 } else { cursor.decoder.index };
        self.committed = cursor.committed;
        self.committed_sent = cursor.committed;
        self.offset_sent = offset;
        self.errors = cursor.errors;
        self.first_errors = cursor.first_errors.clone();
        self.hashed_to = offset;
        self.last_end = offset;
        self.hashed_at_last_end = sha256.clone();
        self.sha256 = sha256;
        self.checkpoint = cursor.decoder.clone();
        self.in_flight_offset = offset;
        self.committed_offset = offset;
        Ok(())
    }

    fn accept(&mut self, format: Format) {
        self.format = Some(format);
        (self.emit)(Event::Accepted {
            job: self.spec.job.clone(),
            upload_stream: self.spec.upload_stream,
            task: self.spec.task.clone(),
            format,
            name: self.spec.name.clone(),
            size: self.spec.size,
            source: self.spec.source.clone(),
        });
        if self.announce {
            self.announce = false;
            (self.emit)(Event::Resumed {
                job: self.spec.job.clone(),
                offset: self.bytes,
                records: self.records,
                committed: self.committed,
                prefix_sha256: self.sha256.hex(),
            });
        }
    }

    /// Feeds the prefix, then every further chunk, to the decoder until the upload ends.
    fn drive(
        mut self,
        decoder: &mut dyn Decoder,
        prefix: Vec<Bytes>,
        ended: bool,
        source: &mut dyn Source,
    ) -> Report {
        for chunk in prefix {
            if let Some(report) = self.feed(decoder, &chunk) {
                return report;
            }
        }
        if ended {
            return self.end(decoder);
        }
        loop {
            let wait = self.wait();
            match source.next(wait) {
                Input::Chunk(chunk) => {
                    if let Some(report) = self.feed(decoder, &chunk) {
                        return report;
                    }
                }
                Input::Idle => {
                    if let Some(report) = self.tick() {
                        return report;
                    }
                }
                Input::End => return self.end(decoder),
                Input::Aborted { code, message } => return self.fail(code, message, None),
            }
        }
    }

    /// How long to wait for input before a time-based commit or progress is due, or (while a
    /// commit runs) before looking whether it finished.
    fn wait(&self) -> Duration {
        if self.in_flight > 0 {
            return Duration::from_millis(5);
        }
        match self.pending_since {
            Some(since) => self
                .settings
                .commit_interval
                .saturating_sub(self.settings.clock.since(since))
                .max(Duration::from_millis(1)),
            None => self.settings.commit_interval.max(Duration::from_millis(1)),
        }
    }

    /// Decodes one chunk; returns the final report if the job ended.
    fn feed(&mut self, decoder: &mut dyn Decoder, chunk: &[u8]) -> Option<Report> {
        let start = self.bytes;
        self.bytes += chunk.len() as u64;
        let items = self.items;
        let fed = decoder.feed(chunk, &mut |item| self.take(item, chunk, start));
        // The SHA-256 at the last item's end is kept before the chunk's rest is hashed.
        if self.hashed_to == self.last_end {
            self.hashed_at_last_end = self.sha256.clone();
        }
        let hashed = usize::try_from(self.hashed_to - start).unwrap_or(chunk.len());
        self.sha256.update(chunk.get(hashed..).unwrap_or_default());
        self.hashed_to = self.bytes;
        if self.items != items {
            self.checkpoint = decoder.checkpoint();
        }
        self.after_decoding(fed)
    }

    /// Hashes the body up to `end`, the end of an item taken from `chunk` (which starts at
    /// `start`), so that the SHA-256 at the last item's end is known for the cursor.
    fn hash_to(&mut self, end: u64, chunk: &[u8], start: u64) {
        if end < self.hashed_to {
            self.boundary_lost = true;
            return;
        }
        let from = usize::try_from(self.hashed_to - start).ok();
        let to = usize::try_from(end - start.min(end)).ok();
        match from.zip(to).and_then(|(from, to)| chunk.get(from..to)) {
            Some(bytes) => {
                self.sha256.update(bytes);
                self.hashed_to = end;
            }
            None => self.boundary_lost = true,
        }
        self.last_end = end;
    }

    /// Where a cursor written now would stand: the decoder's checkpoint after the last item,
    /// and the SHA-256 up to it; `None` when it cannot be written (no cursor kept, or the
    /// checkpoint is not at the last item's end).
    fn boundary(&self) -> Option<Boundary> {
        if self.resume.is_none() || self.boundary_lost || self.checkpoint.offset != self.last_end {
            return None;
        }
        let sha256 = match self.hashed_to == self.last_end {
            true => self.sha256.clone(),
            false => self.hashed_at_last_end.clone(),
        };
        Some(Boundary {
            checkpoint: self.checkpoint.clone(),
            sha256,
        })
    }

    /// The cursor to write with a commit of every pending record.
    fn cursor(&self) -> Option<Save> {
        let resume = self.resume.as_ref()?;
        let boundary = self.boundary()?;
        let mut cursor = resume.cursor.clone();
        cursor.format = self.format;
        cursor.decoder = boundary.checkpoint;
        // A raw body's pieces count as no record before its end.
        cursor.committed = match self.raw {
            true => self.committed,
            false => self.committed + self.pending,
        };
        cursor.errors = self.errors;
        cursor.first_errors = self.first_errors.clone();
        cursor.sha256 = boundary.sha256.save();
        cursor.task = None;
        Some(Save::new(cursor))
    }

    /// Ends the upload: flushes the decoder, commits, sends `done`.
    fn end(mut self, decoder: &mut dyn Decoder) -> Report {
        let end = self.bytes;
        let items = self.items;
        let finished = decoder.finish(&mut |item| self.take(item, &[], end));
        if self.items != items {
            self.checkpoint = decoder.checkpoint();
        }
        if let Some(report) = self.after_decoding(finished) {
            return report;
        }
        let sha256 = Some(self.sha256.hex());
        if let (Some(declared), Some(actual)) = (&self.spec.sha256, &sha256) {
            if declared != actual {
                let message = format!(
                    "the body's SHA-256 is {actual}, not the {declared} the client declared: \
                     it changed or was damaged on the way; records committed before the end are \
                     kept, the rest is not"
                );
                return self.fail(ErrorCode::DigestMismatch, message, None);
            }
        }
        // An atomic job's answers go out once its digest matched, its records in one commit.
        for answer in std::mem::take(&mut self.held) {
            (self.emit)(answer);
        }
        if let Err(failure) = self.commit_all() {
            return self.fail(failure.code, failure.message, None);
        }
        match self.task.finish() {
            Ok(records) => {
                self.records += records;
                self.committed += records;
            }
            Err(e) => return self.fail(e.code(), e.to_string(), None),
        }
        self.send_progress(true);
        let last = Event::Done {
            job: self.spec.job.clone(),
            bytes: self.bytes,
            records: self.records,
            committed: self.committed,
            errors: self.errors,
            duration_ms: millis(self.settings.clock.since(self.started)),
            summary: self.task.summary(),
            first_errors: std::mem::take(&mut self.first_errors),
            unchanged: false,
            sha256,
        };
        self.finish_in_place(last)
    }

    /// Handles what a `feed` or `finish` returned: a syntax error or a store failure ends the
    /// job; otherwise time-based work is done.
    fn after_decoding(&mut self, result: Result<ControlFlow<()>, SyntaxError>) -> Option<Report> {
        if let Some(refused) = self.refused.take() {
            return Some(self.fail_in_place(refused.code(), refused.to_string(), None));
        }
        if let Some(why) = self.too_big.take() {
            return Some(self.fail_in_place(ErrorCode::LimitExceeded, why, None));
        }
        if let Some((message, offset)) = self.too_many_errors.take() {
            return Some(self.fail_in_place(ErrorCode::TooManyErrors, message, Some(offset)));
        }
        match result {
            Err(e) => {
                Some(self.fail_in_place(ErrorCode::SyntaxError, e.to_string(), Some(e.offset)))
            }
            Ok(_) => self.tick(),
        }
    }

    /// Collects a finished commit, starts the next if one is due, and sends progress.
    fn tick(&mut self) -> Option<Report> {
        if let Err(failure) = self.advance() {
            return Some(self.fail_in_place(failure.code, failure.message, None));
        }
        self.send_progress(false);
        None
    }

    /// Takes one decoded item, from `chunk` (which starts at `start`).
    fn take(&mut self, item: Item<'_>, chunk: &[u8], start: u64) -> ControlFlow<()> {
        let end = match &item {
            Item::Record(record) => record.end,
            Item::Fault(fault) => fault.end,
            Item::Bytes { offset, bytes } => offset + bytes.len() as u64,
        };
        self.hash_to(end, chunk, start);
        self.items += 1;
        match item {
            Item::Record(record) => {
                self.records += 1;
                self.take_record(&record)
            }
            Item::Fault(fault) => {
                self.records += 1;
                self.report(fault)
            }
            Item::Bytes { bytes, .. } => self.take_bytes(bytes),
        }
    }

    /// Hands the next bytes of a raw body to the task; they go into the next commit (which
    /// [`Job::tick`] starts by time or once the job's batch is full).
    fn take_bytes(&mut self, bytes: &[u8]) -> ControlFlow<()> {
        if let Err(refused) = self.task.bytes(bytes) {
            self.refused = Some(refused);
            return ControlFlow::Break(());
        }
        self.pending += 1;
        if self.pending_since.is_none() {
            self.pending_since = Some(self.settings.clock.now());
        }
        ControlFlow::Continue(())
    }

    fn take_record(&mut self, record: &Record<'_>) -> ControlFlow<()> {
        match self.task.record(record) {
            Ok(()) => {
                if let Some(fields) = self.task.answer() {
                    let answer = Event::Result {
                        index: record.index,
                        fields,
                    };
                    match self.atomic {
                        true => self.hold(answer),
                        false => (self.emit)(answer),
                    }
                }
                if self.atomic {
                    self.pending += 1;
                    return self.check_atomic_size();
                }
                self.pending += 1;
                if self.pending_since.is_none() {
                    self.pending_since = Some(self.settings.clock.now());
                }
                // A commit that is due starts once the chunk is decoded ([`Job::tick`]), when
                // the decoder's checkpoint (where the cursor goes) is known.
            }
            Err(rejection) => {
                return self.report(RecordFault {
                    index: record.index,
                    offset: record.offset,
                    end: record.end,
                    key: rejection.key.or_else(|| record.key.map(str::to_owned)),
                    code: rejection.code,
                    message: rejection.message,
                })
            }
        }
        ControlFlow::Continue(())
    }

    /// Holds an atomic job's answer until its end.
    fn hold(&mut self, answer: Event) {
        self.held_bytes += answer.to_line().len();
        self.held.push(answer);
    }

    /// Stops an atomic job that holds more than it may.
    fn check_atomic_size(&mut self) -> ControlFlow<()> {
        let held = self.task.pending_bytes() + self.held_bytes;
        let max = self.settings.atomic_max_bytes;
        if held <= max {
            return ControlFlow::Continue(());
        }
        self.too_big = Some(format!(
            "an atomic job holds its records until it ends, at most {} MiB of them              (jobs.atomic_max_mib), and this one passed it at record {}; nothing of it was              kept: send it without atomic=true (each commit is then kept), or raise the limit",
            max / (1024 * 1024),
            self.records.saturating_sub(1)
        ));
        ControlFlow::Break(())
    }

    /// Reports a bad record (one by one up to the cap, then only counted); stops decoding
    /// when there are too many.
    fn report(&mut self, fault: RecordFault) -> ControlFlow<()> {
        self.errors += 1;
        let sample = ErrorSample {
            index: fault.index,
            offset: fault.offset,
            key: fault.key,
            code: fault.code,
            message: fault.message,
        };
        if let Some(why) = self.too_many(&sample) {
            self.too_many_errors = Some((why, sample.offset));
        }
        if self.first_errors.len() < FIRST_ERRORS {
            self.first_errors.push(sample.clone());
        }
        if self.errors <= self.settings.max_error_events {
            (self.emit)(Event::RecordError {
                index: sample.index,
                offset: sample.offset,
                key: sample.key,
                code: sample.code,
                message: sample.message,
            });
        }
        match self.too_many_errors {
            Some(_) => ControlFlow::Break(()),
            None => ControlFlow::Continue(()),
        }
    }

    /// Whether the errors so far (the last one being `last`) are too many to go on.
    fn too_many(&self, last: &ErrorSample) -> Option<String> {
        let leading = self.settings.max_leading_errors;
        if leading == 0 || self.records < leading {
            return None;
        }
        let hint = "is it the right file, format and task?";
        if self.errors == self.records && self.records == leading {
            return Some(format!(
                "the first {leading} records were all bad (the last, record {} at byte {}: {}: {}); \
                 {hint} (stopped at record {})",
                last.index, last.offset, last.code, last.message, last.index
            ));
        }
        let rate = self.errors as f64 / self.records as f64;
        if rate > self.settings.max_error_rate {
            return Some(format!(
                "{} of {} records were bad, more than the {}% allowed (jobs.max_error_rate); \
                 {hint} (stopped at record {}; the good records before it are committed)",
                self.errors,
                self.records,
                self.settings.max_error_rate * 100.0,
                last.index
            ));
        }
        None
    }

    /// Collects the running commit if it finished, starts the next one if it is due (and none
    /// runs), and waits for the running one first if the job's batch is full.
    fn advance(&mut self) -> Result<(), CommitFailure> {
        // An atomic job commits once, at its end.
        if self.atomic {
            return Ok(());
        }
        self.collect(false)?;
        if self.pending == 0 {
            return Ok(());
        }
        let full = self.task.pending_bytes() >= self.share.bytes();
        if self.in_flight > 0 {
            if !full {
                return Ok(());
            }
            self.collect(true)?;
        } else if !full && !self.due() {
            return Ok(());
        }
        self.start_commit()
    }

    /// Whether the records waiting should go into a commit now.
    fn due(&self) -> bool {
        self.pending >= self.settings.commit_records as u64
            || self.pending_since.is_some_and(|since| {
                self.settings.clock.since(since) >= self.settings.commit_interval
            })
    }

    /// Hands every pending record to a commit (no commit may be running), with the cursor
    /// after them.
    fn start_commit(&mut self) -> Result<(), CommitFailure> {
        self.commit_started = Some(self.settings.clock.now());
        let cursor = self.cursor();
        let offset = cursor
            .as_ref()
            .map_or(self.last_end, |c| c.cursor().offset());
        let left = self
            .task
            .start_commit(cursor)
            .map_err(CommitFailure::from)?;
        if let (Some(save), Some(resume)) = (left, &self.resume) {
            let save = save.with_task(self.task.state());
            self.cursor_write = Some(resume.store.submit(save, crate::store::Sync::Now));
        }
        self.in_flight = std::mem::take(&mut self.pending);
        self.in_flight_offset = offset;
        self.pending_since = None;
        // A task that committed at once is counted at once.
        self.collect(false)
    }

    /// Counts the running commit's records as committed once the task says it returned,
    /// and the cursor with them (waiting for both with `wait`).
    fn collect(&mut self, wait: bool) -> Result<(), CommitFailure> {
        if self.in_flight == 0 {
            return Ok(());
        }
        if let Some(ticket) = &mut self.cursor_write {
            let written = match wait {
                true => None,
                false => match ticket.try_wait() {
                    Some(written) => Some(written),
                    None => return Ok(()),
                },
            };
            let ticket = self.cursor_write.take().expect("looked at just above");
            let written = written.unwrap_or_else(|| ticket.wait());
            if let Err(e) = written {
                self.in_flight = 0;
                return Err(CommitFailure::from(TaskError::Store(e)));
            }
        }
        let Some(result) = self.task.finish_commit(wait) else {
            return Ok(());
        };
        let records = std::mem::take(&mut self.in_flight);
        result.map_err(CommitFailure::from)?;
        self.committed_offset = self.in_flight_offset;
        if let Some(started) = self.commit_started.take() {
            self.settings
                .on_commit
                .observe(self.settings.clock.since(started));
        }
        if !self.raw {
            self.committed += records;
        }
        Ok(())
    }

    /// Commits everything accepted: waits for the running commit, then commits the rest.
    fn commit_all(&mut self) -> Result<(), CommitFailure> {
        self.collect(true)?;
        if self.pending > 0 {
            self.start_commit()?;
            self.collect(true)?;
        }
        self.pending_since = None;
        Ok(())
    }

    /// Sends `progress` (and the task's figures) and `committed` if the interval has passed,
    /// or always when `last`.
    fn send_progress(&mut self, last: bool) {
        let now = self.settings.clock.now();
        if !last
            && now.saturating_duration_since(self.progress_sent) < self.settings.progress_interval
        {
            return;
        }
        self.progress_sent = now;
        (self.emit)(Event::Progress {
            bytes: self.bytes,
            records: self.records,
            errors: self.errors,
        });
        if let Some(data) = self.task.progress() {
            (self.emit)(Event::Task {
                task: self.spec.task.clone(),
                data,
            });
        }
        // A raw body's commits count no record: `committed` says how far its bytes are kept.
        let kept = self.raw && self.committed_offset != self.offset_sent;
        if self.committed != self.committed_sent || kept {
            self.committed_sent = self.committed;
            self.offset_sent = self.committed_offset;
            (self.emit)(Event::Committed {
                records: self.committed,
                offset: self.committed_offset,
            });
        }
    }

    /// Fails the job: commits what is pending (unless the store itself failed), then sends
    /// `failed`.
    fn fail(mut self, code: ErrorCode, message: String, offset: Option<u64>) -> Report {
        let last = self.failure(code, message, offset);
        self.finish_in_place(last)
    }

    /// Like [`Job::fail`] but borrowing, for use inside the decoding loop.
    fn fail_in_place(&mut self, code: ErrorCode, message: String, offset: Option<u64>) -> Report {
        let last = self.failure(code, message, offset);
        self.finish_in_place(last)
    }

    fn failure(&mut self, code: ErrorCode, mut message: String, offset: Option<u64>) -> Event {
        // What a job that can be resumed stored stays for the resume.
        if self.resume.is_none() || !crate::resume::goes_on(code) {
            self.task.abandon();
        }
        let store_failed = matches!(
            code,
            ErrorCode::StoreError | ErrorCode::StoreUnavailable | ErrorCode::TakenOver
        );
        // A body that is not the one declared is not trusted past the last commit; an
        // atomic job that fails keeps nothing.
        let keep_pending = !store_failed && code != ErrorCode::DigestMismatch && !self.atomic;
        if keep_pending {
            if let Err(store) = self.commit_all() {
                message = format!("{message}; and the last commit failed: {}", store.message);
            }
        }
        self.send_progress(true);
        Event::Failed {
            job: self.spec.job.clone(),
            code,
            message,
            committed: self.committed,
            bytes: self.bytes,
            records: self.records,
            errors: self.errors,
            offset,
            first_errors: std::mem::take(&mut self.first_errors),
        }
    }

    /// Ends a job whose source had not changed: `done`, nothing read.
    fn unchanged(mut self) -> Report {
        self.task.abandon();
        let last = Event::Done {
            job: self.spec.job.clone(),
            bytes: 0,
            records: 0,
            committed: 0,
            errors: 0,
            duration_ms: millis(self.settings.clock.since(self.started)),
            summary: serde_json::Value::Null,
            first_errors: Vec::new(),
            unchanged: true,
            sha256: None,
        };
        self.finish_in_place(last)
    }

    fn reject(mut self, code: ErrorCode, message: String) -> Report {
        let last = Event::Rejected {
            code,
            message,
            committed: 0,
            upload_stream: self.spec.upload_stream,
            retry_after: None,
        };
        self.finish_in_place(last)
    }

    fn finish_in_place(&mut self, last: Event) -> Report {
        (self.emit)(last.clone());
        Report {
            bytes: self.bytes,
            records: self.records,
            committed: self.committed,
            errors: self.errors,
            format: self.format,
            last,
        }
    }
}

/// Bytes as lowercase hex.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A commit that failed: the job fails with `store_unavailable` when the store was away (a
/// PostgreSQL server down), else `store_error`.
#[derive(Debug)]
struct CommitFailure {
    code: ErrorCode,
    message: String,
}

impl From<TaskError> for CommitFailure {
    fn from(e: TaskError) -> CommitFailure {
        let code = match &e {
            TaskError::Store(_) => e.code(),
            TaskError::Refused { .. } => ErrorCode::StoreError,
        };
        CommitFailure {
            code,
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Rejection;
    use crate::store::StoreOptions;
    use crate::{ports, registry, stats, Context, Store, TaskError};
    use std::collections::VecDeque;

    /// A source that hands out prepared inputs, then `End`.
    struct Script(VecDeque<Input>);

    impl Source for Script {
        fn next(&mut self, _wait: Duration) -> Input {
            self.0.pop_front().unwrap_or(Input::End)
        }
    }

    /// A script whose idle pauses last 2 ms of real time, however long the pipeline would
    /// wait: the real store's writer commits meanwhile.
    struct Paced(Script);

    impl Source for Paced {
        fn next(&mut self, wait: Duration) -> Input {
            let input = self.0.next(wait);
            if matches!(input, Input::Idle) {
                std::thread::sleep(wait.min(Duration::from_millis(2)));
            }
            input
        }
    }

    /// One step of a [`Timed`] upload.
    enum Step {
        /// These bytes arrive.
        Send(&'static [u8]),
        /// Nothing arrives for this long.
        Pause(Duration),
    }

    /// An upload on a [`ManualClock`]: a pause moves the clock on instead of taking time. Like
    /// a real source, it waits at most as long as the job asks, then says `Idle`. `step` counts
    /// the steps begun, so a test can tell during which one an event came.
    struct Timed {
        steps: VecDeque<Step>,
        clock: ManualClock,
        step: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl Source for Timed {
        fn next(&mut self, wait: Duration) -> Input {
            let Some(step) = self.steps.pop_front() else {
                self.step.set(self.step.get() + 1);
                return Input::End;
            };
            match step {
                Step::Send(bytes) => {
                    self.step.set(self.step.get() + 1);
                    Input::Chunk(Bytes::from_static(bytes))
                }
                Step::Pause(pause) => {
                    if pause > wait {
                        // The rest of the pause is still to come.
                        self.steps.push_front(Step::Pause(pause - wait));
                    } else {
                        self.step.set(self.step.get() + 1);
                    }
                    self.clock.advance(pause.min(wait));
                    Input::Idle
                }
            }
        }
    }

    fn chunks(body: &[u8], size: usize) -> Script {
        Script(
            body.chunks(size)
                .map(|c| Input::Chunk(Bytes::copy_from_slice(c)))
                .collect(),
        )
    }

    fn spec(task: &str, format: Option<Format>) -> JobSpec {
        JobSpec {
            job: "j".into(),
            upload_stream: Some(2),
            task: task.into(),
            format,
            name: None,
            size: None,
            source: None,
            unchanged: false,
            sha256: None,
            atomic: false,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        (dir, store)
    }

    fn run_job(
        task: &str,
        format: Option<Format>,
        source: &mut dyn Source,
        store: &Store,
        settings: &Settings,
    ) -> (Report, Vec<Event>) {
        let plugin = registry::find(task).unwrap();
        let task_box = (plugin.create)(&Default::default(), &Context::new(store.clone())).unwrap();
        let mut events = Vec::new();
        let report = run(
            &spec(task, format),
            plugin,
            task_box,
            source,
            settings,
            &mut |e| events.push(e),
        );
        (report, events)
    }

    fn ndjson_ports(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("{{\"name\":\"p{i}\",\"unlocs\":[\"K{i:05}\"]}}\n"))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn the_real_file_in_odd_chunks_then_again_unchanged() {
        let (_dir, store) = store();
        let body = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/ports.json"),
        )
        .unwrap();
        let settings = Settings::default();
        let (report, events) = run_job("ports", None, &mut chunks(&body, 777), &store, &settings);
        assert!(matches!(
            events[0],
            Event::Accepted {
                format: Format::Json,
                upload_stream: Some(2),
                ..
            }
        ));
        assert_eq!(
            (report.records, report.committed, report.errors),
            (1634, 1634, 0)
        );
        let Event::Done { summary, .. } = &report.last else {
            panic!("{:?}", report.last)
        };
        assert_eq!(summary["inserted"], 1634);
        let (report, _) = run_job("ports", None, &mut chunks(&body, 4096), &store, &settings);
        let Event::Done { summary, .. } = &report.last else {
            panic!("{:?}", report.last)
        };
        assert_eq!(summary["unchanged"], 1634);
        let ajman = ports::get(&store, "AEAJM").unwrap().unwrap();
        assert_eq!(ajman.coordinates, Some([55.5136433, 25.4052165]));
    }

    #[test]
    fn running_jobs_share_the_batch_budget() {
        let budget = BatchBudget::new(4 * 1024 * 1024);
        let first = budget.join();
        assert_eq!(first.bytes(), 4 * 1024 * 1024);
        let second = budget.clone().join();
        assert_eq!((first.bytes(), second.bytes()), (2 << 20, 2 << 20));
        let many: Vec<BatchShare> = (0..30).map(|_| budget.join()).collect();
        assert_eq!(first.bytes(), MIN_BATCH_SHARE);
        drop(many);
        drop(second);
        assert_eq!(first.bytes(), 4 * 1024 * 1024);
    }

    #[test]
    fn commits_come_in_groups_and_only_grow() {
        let (_dir, store) = store();
        // Commits by count only: a group starts once 100 records wait.
        let settings = Settings {
            commit_records: 100,
            commit_interval: Duration::from_secs(3600),
            progress_interval: Duration::ZERO,
            ..Settings::default()
        };
        // A pause after each chunk (as a network upload has) lets commits return meanwhile.
        let paced = ndjson_ports(1_050)
            .chunks(1000)
            .flat_map(|c| [Input::Chunk(Bytes::copy_from_slice(c)), Input::Idle])
            .collect();
        let (report, events) = run_job(
            "ports",
            Some(Format::Ndjson),
            &mut Paced(Script(paced)),
            &store,
            &settings,
        );
        let committed: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Committed { records, .. } => Some(*records),
                _ => None,
            })
            .collect();
        // A commit starts once 100 records wait; while one runs, the next batch grows, so
        // every step but the last is at least 100 records.
        assert!(committed.len() >= 2, "{committed:?}");
        assert!(committed[0] >= 100, "{committed:?}");
        assert!(
            committed
                .windows(2)
                .all(|w| w[1] >= w[0] + 100 || (w[1] == 1_050 && w[1] > w[0])),
            "{committed:?}"
        );
        assert_eq!(committed.last(), Some(&1_050));
        assert!(matches!(
            report.last,
            Event::Done {
                committed: 1_050,
                ..
            }
        ));
        // The final `committed` comes before `done`.
        let last_two: Vec<&str> = events.iter().rev().take(2).map(Event::name).collect();
        assert_eq!(last_two, ["done", "committed"]);
    }

    #[test]
    fn an_aborted_upload_keeps_what_came_before() {
        let (_dir, store) = store();
        let mut source = chunks(&ndjson_ports(500), 4096);
        source.0.push_back(Input::Aborted {
            code: ErrorCode::UploadAborted,
            message: "reset".into(),
        });
        let (report, _) = run_job(
            "ports",
            Some(Format::Ndjson),
            &mut source,
            &store,
            &Settings::default(),
        );
        let Event::Failed {
            code, committed, ..
        } = report.last
        else {
            panic!("{:?}", report.last)
        };
        assert_eq!((code, committed), (ErrorCode::UploadAborted, 500));
        assert_eq!(ports::count(&store).unwrap(), 500);
    }

    #[test]
    fn a_syntax_error_fails_the_job_and_keeps_the_records_before_it() {
        let (_dir, store) = store();
        let body = br#"{"A":{"name":"a"},"B":{"name":"b"} "C":{"name":"c"}}"#;
        let (report, _) = run_job(
            "ports",
            None,
            &mut chunks(body, 7),
            &store,
            &Settings::default(),
        );
        let Event::Failed {
            code,
            committed,
            offset,
            ..
        } = report.last
        else {
            panic!("{:?}", report.last)
        };
        assert_eq!(
            (code, committed, offset),
            (ErrorCode::SyntaxError, 2, Some(35))
        );
        assert_eq!(ports::count(&store).unwrap(), 2);
    }

    #[test]
    fn a_sniffed_format_the_task_does_not_read_is_refused() {
        let (_dir, store) = store();
        let (report, events) = run_job(
            "ports",
            None,
            &mut chunks(b"hello\n", 3),
            &store,
            &Settings::default(),
        );
        assert_eq!(events.len(), 1);
        let Event::Rejected { code, message, .. } = report.last else {
            panic!("{:?}", report.last)
        };
        assert_eq!(code, ErrorCode::UnknownFormat);
        assert!(
            message.contains("lines") && message.contains("json"),
            "{message}"
        );
    }

    #[test]
    fn record_errors_beyond_the_cap_are_counted_not_sent() {
        let (_dir, store) = store();
        let settings = Settings {
            max_error_events: 5,
            ..Settings::default()
        };
        let body: String = (0..20).map(|i| format!("x{i}\n")).collect();
        let (report, events) = run_job(
            "stats",
            Some(Format::Lines),
            &mut chunks(body.as_bytes(), 5),
            &store,
            &settings,
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::RecordError { .. }))
                .count(),
            5
        );
        assert!(
            matches!(
                report.last,
                Event::Done {
                    errors: 20,
                    records: 20,
                    committed: 0,
                    ..
                }
            ),
            "{:?}",
            report.last
        );
    }

    #[test]
    fn a_job_of_only_bad_records_stops_with_too_many_errors_and_exact_counts() {
        let (_dir, store) = store();
        let settings = Settings {
            max_error_events: 10,
            max_leading_errors: 100,
            ..Settings::default()
        };
        let body: String = (0..5_000).map(|i| format!("x{i}\n")).collect();
        let (report, events) = run_job(
            "stats",
            Some(Format::Lines),
            &mut chunks(body.as_bytes(), 777),
            &store,
            &settings,
        );
        let sent = events
            .iter()
            .filter(|e| matches!(e, Event::RecordError { .. }))
            .count();
        assert_eq!(sent, 10, "record errors past the cap are only counted");
        let Event::Failed {
            code,
            records,
            errors,
            offset,
            first_errors,
            message,
            ..
        } = &report.last
        else {
            panic!("{:?}", report.last)
        };
        assert_eq!(*code, ErrorCode::TooManyErrors, "{message}");
        assert_eq!((*records, *errors), (100, 100), "it stopped at record 100");
        assert_eq!(*offset, Some(body.find("x99\n").unwrap() as u64));
        assert!(
            message.contains("first 100 records were all bad"),
            "{message}"
        );
        assert_eq!(first_errors.len(), FIRST_ERRORS);
        assert_eq!(first_errors[0].offset, 0);
        assert_eq!(first_errors[1].offset, 3);
    }

    #[test]
    fn a_high_error_rate_stops_the_job_but_a_few_bad_records_do_not() {
        let (_dir, store) = store();
        let settings = Settings {
            max_leading_errors: 100,
            max_error_rate: 0.5,
            ..Settings::default()
        };
        // One bad line in three: goes on to the end.
        let mostly_good: String = (0..3_000)
            .map(|i| {
                if i % 3 == 0 {
                    "bad\n".to_owned()
                } else {
                    format!("{i}\n")
                }
            })
            .collect();
        let (report, _) = run_job(
            "stats",
            Some(Format::Lines),
            &mut chunks(mostly_good.as_bytes(), 4096),
            &store,
            &settings,
        );
        let Event::Done {
            records,
            errors,
            first_errors,
            ..
        } = &report.last
        else {
            panic!("{:?}", report.last)
        };
        assert_eq!((*records, *errors), (3_000, 1_000));
        assert_eq!(
            first_errors.len(),
            FIRST_ERRORS,
            "the summary keeps the first errors"
        );
        // Two bad lines in three: stops once past the rate, with the good ones committed.
        let mostly_bad: String = (0..3_000)
            .map(|i| {
                if i % 3 == 0 {
                    format!("{i}\n")
                } else {
                    "bad\n".to_owned()
                }
            })
            .collect();
        let (report, _) = run_job(
            "stats",
            Some(Format::Lines),
            &mut chunks(mostly_bad.as_bytes(), 4096),
            &store,
            &settings,
        );
        let Event::Failed {
            code,
            records,
            errors,
            committed,
            message,
            ..
        } = &report.last
        else {
            panic!("{:?}", report.last)
        };
        assert_eq!(*code, ErrorCode::TooManyErrors, "{message}");
        assert!(*records >= 100 && *records < 3_000, "{records}");
        assert_eq!(
            *committed + *errors,
            *records,
            "every record is stored or reported"
        );
        assert!(message.contains("max_error_rate"), "{message}");
    }

    #[test]
    fn csv_ports_are_stored_and_bad_rows_are_reported_by_field() {
        let (_dir, store) = store();
        let csv = "\u{feff}name,country,unlocs,alias,lon,lat\r\n\
                   Ajman,United Arab Emirates,AEAJM,,55.5136433,25.4052165\r\n\
                   \"Abu Dhabi, port\",United Arab Emirates,AEAUH;AEAUX,Zayed;Mina,54.37,24.47\r\n\
                   Nowhere,X,XXNOW,,12,95\r\n\
                   Wordy,X,XXWRD,,east,1\r\n\
                   ,X,XXEMP,,1,1\r\n\
                   Short,X\r\n";
        let (report, events) = run_job(
            "ports",
            None,
            &mut chunks(csv.as_bytes(), 7),
            &store,
            &Settings::default(),
        );
        assert!(
            matches!(
                events.first(),
                Some(Event::Accepted {
                    format: Format::Csv,
                    ..
                })
            ),
            "a CSV upload is sniffed: {:?}",
            events.first()
        );
        let errors: Vec<(u64, u64, Option<String>, String)> = events
            .iter()
            .filter_map(|e| match e {
                Event::RecordError {
                    index,
                    offset,
                    key,
                    message,
                    ..
                } => Some((*index, *offset, key.clone(), message.clone())),
                _ => None,
            })
            .collect();
        let offset_of = |needle: &str| csv.find(needle).unwrap() as u64;
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert_eq!(errors[0].0, 2);
        assert_eq!(errors[0].1, offset_of("Nowhere"));
        assert_eq!(errors[0].2.as_deref(), Some("XXNOW"));
        assert!(errors[0].3.contains("latitude 95"), "{}", errors[0].3);
        assert_eq!(errors[1].1, offset_of("Wordy"));
        assert!(
            errors[1].3.contains("field `lon`") && errors[1].3.contains("east"),
            "{}",
            errors[1].3
        );
        assert!(errors[2].3.contains("name"), "{}", errors[2].3);
        assert!(
            errors[3].3.contains("2 fields; the header has 6"),
            "{}",
            errors[3].3
        );
        assert!(
            matches!(
                report.last,
                Event::Done {
                    records: 6,
                    committed: 2,
                    errors: 4,
                    ..
                }
            ),
            "{:?}",
            report.last
        );
        let abu = crate::ports::get(&store, "AEAUH").unwrap().unwrap();
        assert_eq!(abu.name, "Abu Dhabi, port");
        assert_eq!(abu.unlocs, ["AEAUH", "AEAUX"]);
        assert_eq!(abu.alias, ["Zayed", "Mina"]);
        assert_eq!(abu.coordinates, Some([54.37, 24.47]));
        let ajman = crate::ports::get(&store, "AEAJM").unwrap().unwrap();
        assert_eq!(ajman.coordinates, Some([55.5136433, 25.4052165]));
        assert!(ajman.alias.is_empty());
    }

    #[test]
    fn csv_stats_read_the_named_column() {
        let (_dir, store) = store();
        let csv = "day,price\n1,10\n2,20\n3,NaN\n4,30\n";
        let plugin = registry::find("stats").unwrap();
        let mut params = serde_json::Map::new();
        params.insert("column".into(), "price".into());
        let task = (plugin.create)(&params, &Context::new(store.clone())).unwrap();
        let mut events = Vec::new();
        let report = run(
            &spec("stats", Some(Format::Csv)),
            plugin,
            task,
            &mut chunks(csv.as_bytes(), 3),
            &Settings::default(),
            &mut |e| events.push(e),
        );
        let Event::Done {
            summary,
            errors,
            first_errors,
            ..
        } = &report.last
        else {
            panic!("{:?}", report.last)
        };
        assert_eq!(summary["count"], 3);
        assert_eq!(summary["mean"], 20.0);
        assert_eq!(*errors, 1);
        assert!(
            first_errors[0].message.contains("column `price`"),
            "{:?}",
            first_errors
        );
        // Without the parameter, a CSV of several columns says how to pick one.
        let (report, _) = run_job(
            "stats",
            Some(Format::Csv),
            &mut chunks(csv.as_bytes(), 64),
            &store,
            &Settings::default(),
        );
        let Event::Done { first_errors, .. } = &report.last else {
            panic!("{:?}", report.last)
        };
        assert!(
            first_errors[0].message.contains("column=NAME"),
            "{first_errors:?}"
        );
    }

    /// A task whose store fails on the second commit.
    struct FailingStore {
        commits: u32,
    }

    impl Task for FailingStore {
        fn record(&mut self, _record: &Record<'_>) -> Result<(), Rejection> {
            Ok(())
        }
        fn commit(&mut self) -> Result<(), TaskError> {
            self.commits += 1;
            if self.commits == 2 {
                let io = std::io::Error::other("disk full");
                return Err(TaskError::Store(crate::StoreError::Redb {
                    operation: "commit",
                    source: redb::Error::Io(io),
                }));
            }
            Ok(())
        }
        fn summary(&self) -> edge_proto::Summary {
            serde_json::Value::Null
        }
    }

    #[test]
    fn a_failed_commit_ends_the_job_without_counting_its_batch() {
        let settings = Settings {
            commit_records: 10,
            ..Settings::default()
        };
        let body: String = (0..35).map(|i| format!("{i}\n")).collect();
        let mut events = Vec::new();
        let report = run(
            &spec("stats", Some(Format::Lines)),
            &stats::PLUGIN,
            Box::new(FailingStore { commits: 0 }),
            // Commits start after a chunk: the first 20 bytes are the first 10 records.
            &mut chunks(body.as_bytes(), 20),
            &settings,
            &mut |e| events.push(e),
        );
        let Event::Failed {
            code,
            committed,
            message,
            ..
        } = &report.last
        else {
            panic!("{:?}", report.last)
        };
        assert_eq!((*code, *committed), (ErrorCode::StoreError, 10));
        assert!(message.contains("disk full"), "{message}");
        assert!(!events
            .iter()
            .any(|e| matches!(e, Event::Committed { records, .. } if *records > 10)));
    }

    #[test]
    fn a_slow_upload_commits_once_the_interval_has_passed_on_the_jobs_clock() {
        let (_dir, store) = store();
        let clock = ManualClock::new();
        let minute = Duration::from_secs(60);
        let settings = Settings {
            commit_interval: 60 * minute,
            progress_interval: minute,
            clock: clock.clock(),
            ..Settings::default()
        };
        let step = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut source = Timed {
            steps: VecDeque::from([
                Step::Send(b"1\n2\n"),
                Step::Pause(59 * minute),
                Step::Pause(minute),
                Step::Send(b"3\n"),
            ]),
            clock: clock.clone(),
            step: step.clone(),
        };
        // Each event with the step (1-based; 5 is the end) during which it came.
        let mut events = Vec::new();
        let plugin = registry::find("stats").unwrap();
        let context = Context::new(store.clone());
        let task = (plugin.create)(&Default::default(), &context).unwrap();
        let report = run(
            &spec("stats", Some(Format::Lines)),
            plugin,
            task,
            &mut source,
            &settings,
            &mut |e| events.push((step.get(), e)),
        );
        let during = |step: usize| -> Vec<&Event> {
            events
                .iter()
                .filter(|(s, _)| *s == step)
                .map(|(_, e)| e)
                .collect()
        };
        assert!(
            !during(1).iter().any(|e| e.name() == "progress"),
            "progress waits its interval: {events:?}"
        );
        let names: Vec<&str> = during(2).iter().map(|e| e.name()).collect();
        assert!(
            names.contains(&"progress") && !names.contains(&"committed"),
            "59 minutes: progress, but no commit yet: {events:?}"
        );
        assert!(
            during(3)
                .iter()
                .any(|e| matches!(e, Event::Committed { records: 2, .. })),
            "the hour is up: the two records are committed before the upload goes on: {events:?}"
        );
        assert!(
            matches!(
                report.last,
                Event::Done {
                    committed: 3,
                    duration_ms: 3_600_000,
                    ..
                }
            ),
            "{:?}",
            report.last
        );
    }

    fn real_ports() -> serde_json::Map<String, serde_json::Value> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/ports.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Every (key, port) of the store, walking `list` pages.
    fn all_ports(store: &Store) -> Vec<(String, ports::Port)> {
        let mut all = Vec::new();
        let mut after = None::<String>;
        loop {
            let query = ports::ListQuery {
                country: None,
                after: after.as_deref(),
                limit: 100,
            };
            let page = ports::list(store, &query).unwrap();
            all.extend(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return all,
            }
        }
    }

    fn committed_of(report: &Report) -> u64 {
        match report.last {
            Event::Done { committed, .. } => committed,
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_same_ports_as_an_array_and_as_ndjson_give_the_same_store() {
        let values: Vec<serde_json::Value> = real_ports().into_values().collect();
        let array = serde_json::to_vec_pretty(&values).unwrap();
        let ndjson: Vec<u8> = values
            .iter()
            .flat_map(|v| {
                let mut line = serde_json::to_vec(v).unwrap();
                line.push(b'\n');
                line
            })
            .collect();
        let settings = Settings::default();
        let (_a, array_store) = store();
        let (report, events) = run_job(
            "ports",
            None,
            &mut chunks(&array, 1000),
            &array_store,
            &settings,
        );
        assert!(matches!(
            events[0],
            Event::Accepted {
                format: Format::Json,
                ..
            }
        ));
        assert_eq!(committed_of(&report), 1634);
        let (_n, ndjson_store) = store();
        let (report, events) = run_job(
            "ports",
            None,
            &mut chunks(&ndjson, 999),
            &ndjson_store,
            &settings,
        );
        assert!(matches!(
            events[0],
            Event::Accepted {
                format: Format::Ndjson,
                ..
            }
        ));
        assert_eq!(committed_of(&report), 1634);
        let from_array = all_ports(&array_store);
        // Eight ports share their `unlocs[0]` with another: the later one wins the key.
        assert_eq!(from_array.len(), 1626);
        assert_eq!(from_array, all_ports(&ndjson_store));
    }

    #[test]
    fn a_bad_record_in_the_middle_is_reported_once_and_the_rest_stored() {
        let (_dir, store) = store();
        let mut body = ndjson_ports(100);
        let bad = b"{\"name\":\"\",\"unlocs\":[\"BAD\"]}\n";
        let at = body
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(49)
            .map(|(i, _)| i + 1)
            .unwrap();
        body.splice(at..at, bad.iter().copied());
        let (report, events) = run_job(
            "ports",
            Some(Format::Ndjson),
            &mut chunks(&body, 333),
            &store,
            &Settings::default(),
        );
        let errors: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::RecordError { .. }))
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let Event::RecordError {
            index,
            offset,
            key,
            code,
            message,
        } = errors[0]
        else {
            unreachable!()
        };
        assert_eq!(
            (*index, *offset, key.as_deref(), *code),
            (50, at as u64, Some("BAD"), ErrorCode::InvalidRecord)
        );
        assert!(message.contains("name"), "{message}");
        assert!(matches!(
            report.last,
            Event::Done {
                records: 101,
                committed: 100,
                errors: 1,
                ..
            }
        ));
        assert_eq!(ports::count(&store).unwrap(), 100);
    }

    #[test]
    fn stats_of_a_sniffed_series() {
        let (_dir, store) = store();
        let body: String = (1..=1000).map(|i| format!("{i}\n")).collect();
        let settings = Settings {
            progress_interval: Duration::ZERO,
            ..Settings::default()
        };
        let (report, events) = run_job(
            "stats",
            None,
            &mut chunks(body.as_bytes(), 100),
            &store,
            &settings,
        );
        assert!(matches!(
            events[0],
            Event::Accepted {
                format: Format::Lines,
                ..
            }
        ));
        assert!(events.iter().any(|e| matches!(e, Event::Task { .. })));
        let Event::Done { summary, .. } = &report.last else {
            panic!("{:?}", report.last)
        };
        assert_eq!(summary["count"], 1000);
        assert_eq!(summary["min"], 1.0);
        assert_eq!(summary["max"], 1000.0);
        let variance = summary["variance"].as_f64().unwrap();
        assert!((summary["mean"].as_f64().unwrap() - 500.5).abs() < 1e-9);
        assert!((variance / (1000.0 * 1001.0 / 12.0) - 1.0).abs() < 1e-9);
    }

    /// Counts the chunks handed out, so a test can see how far the upload had got.
    struct Counted {
        script: Script,
        pulled: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl Source for Counted {
        fn next(&mut self, wait: Duration) -> Input {
            self.pulled.set(self.pulled.get() + 1);
            self.script.next(wait)
        }
    }

    #[test]
    fn sniffing_decides_at_the_limit_even_on_whitespace() {
        let (_dir, store) = store();
        let mut body = vec![b' '; 4 * SNIFF_LIMIT];
        body.extend_from_slice(br#"{"A":{"name":"a"}}"#);
        let pulled = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut source = Counted {
            script: chunks(&body, 4096),
            pulled: pulled.clone(),
        };
        let plugin = registry::find("ports").unwrap();
        let task = (plugin.create)(&Default::default(), &Context::new(store.clone())).unwrap();
        let mut accepted_after = None;
        let report = run(
            &spec("ports", None),
            plugin,
            task,
            &mut source,
            &Settings::default(),
            &mut |e| {
                if matches!(e, Event::Accepted { .. }) {
                    accepted_after = Some(pulled.get());
                }
            },
        );
        // 64 KiB of whitespace is 16 chunks: the format is chosen then, not at the end.
        assert_eq!(accepted_after, Some(SNIFF_LIMIT / 4096));
        assert_eq!(committed_of(&report), 1);
    }

    #[test]
    fn an_upload_that_stops_while_sniffing_is_accepted_then_failed() {
        let (_dir, store) = store();
        let mut source = Script(VecDeque::from([
            Input::Chunk(Bytes::from_static(b"{\"name\":")),
            Input::Aborted {
                code: ErrorCode::Shutdown,
                message: "the server is shutting down".into(),
            },
        ]));
        let (report, events) = run_job("ports", None, &mut source, &store, &Settings::default());
        assert!(
            matches!(
                events[0],
                Event::Accepted {
                    format: Format::Json,
                    upload_stream: Some(2),
                    ..
                }
            ),
            "{events:?}"
        );
        assert!(
            matches!(
                report.last,
                Event::Failed {
                    code: ErrorCode::Shutdown,
                    committed: 0,
                    bytes: 8,
                    ..
                }
            ),
            "{:?}",
            report.last
        );
        assert_eq!(events.last(), Some(&report.last));
    }
}
