//! The task-plugin trait: what a plugin implements to receive a job's records.
//!
//! A task is a synchronous sink (it runs on a blocking thread, never on the async runtime).
//! The pipeline hands it records one at a time, asks it to commit every few thousand records
//! or every few milliseconds, and reports records as committed only after the commit
//! returned. At the end it asks for a summary. A task with a store commits in the
//! background ([`Task::start_commit`], [`Task::finish_commit`]) so that decoding goes on
//! while its batch is written; a simple task implements [`Task::commit`] alone.

use crate::reads::Reads;
use crate::record::{Record, Rejection};
use crate::resume::Save;
use crate::store::Store;
use crate::table::Storage;
use edge_proto::{ErrorCode, Format, Summary};
use serde_json::{Map, Value};

/// A failure that ends the job (the store could not commit, a bug).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The store failed; nothing since the last successful commit is durable.
    #[error("store error: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The task refuses the job (a digest that does not match, a quota passed): the job fails
    /// with `code`, and [`Task::abandon`] drops what the task staged for it.
    #[error("{message}")]
    Refused {
        /// Why, as a stable code (e.g. `digest_mismatch`, `limit_exceeded`).
        code: ErrorCode,
        /// Why, for a person: what was expected, what came, and what to do.
        message: String,
    },
}

impl TaskError {
    /// The code the job fails with.
    pub fn code(&self) -> ErrorCode {
        match self {
            TaskError::Store(e) => e.code(),
            TaskError::Refused { code, .. } => *code,
        }
    }
}

/// Invalid task parameters (the header's `params`, or HTTP query parameters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

/// Starts one job's task from its parameters (the header's `params`).
pub type Create =
    fn(params: &Map<String, Value>, context: &Context) -> Result<Box<dyn Task>, ParamError>;

/// One job's plugin instance.
pub trait Task: Send {
    /// Takes one record. `Ok` means accepted: it becomes durable at the next successful
    /// [`Task::commit`]. `Err` rejects this record only; the job goes on.
    fn record(&mut self, record: &Record<'_>) -> Result<(), Rejection>;

    /// Makes every record accepted so far durable. Only after this returns `Ok` are those
    /// records reported as committed. The default keeps nothing (for tasks without a store).
    fn commit(&mut self) -> Result<(), TaskError> {
        Ok(())
    }

    /// Starts making every record accepted so far durable, and returns without waiting when
    /// the task can commit in the background (through [`crate::Store::submit`]), so that the
    /// job decodes its next records meanwhile. [`Task::finish_commit`] tells when it is done.
    /// The pipeline never starts a commit before the previous one finished.
    ///
    /// `cursor` is where the job will stand once these records are durable (see
    /// [`crate::resume`]). A task that writes to the store writes it in the same transaction
    /// as the records ([`Save::apply`], with its state after them) and returns `None`; so a
    /// resumed job applies every record exactly once. A task that returns the cursor has it
    /// written by the pipeline, with [`Task::state`], once its own commit returned: right for
    /// a task that writes nothing (`stats`). The default commits at once and returns it.
    fn start_commit(&mut self, cursor: Option<Save>) -> Result<Option<Save>, TaskError> {
        self.commit()?;
        Ok(cursor)
    }

    /// The task's running state after every record accepted so far, for a job that may be
    /// resumed: what [`Task::restore`] needs to go on as if the job had not stopped (`stats`:
    /// its running figures). Asked when a commit starts. The default has none.
    fn state(&self) -> Option<Value> {
        None
    }

    /// Restores the state [`Task::state`] gave (or the task's own commits wrote into the
    /// cursor), in a task just created for a resumed job, before any record. The default
    /// keeps nothing, and refuses a state it cannot have given.
    fn restore(&mut self, state: &Value) -> Result<(), TaskError> {
        Err(TaskError::Refused {
            code: ErrorCode::NotResumable,
            message: format!(
                "this task keeps no state, yet the job's cursor holds one ({})",
                crate::record::shorten(&state.to_string())
            ),
        })
    }

    /// The outcome of the commit started last: `Some(Ok)` once the records accepted before
    /// it are durable (or when no commit is running), `None` while it still runs (only when
    /// `wait` is false; with `wait` it blocks until done).
    fn finish_commit(&mut self, wait: bool) -> Option<Result<(), TaskError>> {
        let _ = wait;
        Some(Ok(()))
    }

    /// Bytes the task holds for its next commit, so that the pipeline can bound a job's
    /// memory (see [`crate::pipeline::Settings::batch`]). The default holds nothing.
    fn pending_bytes(&self) -> usize {
        0
    }

    /// Takes the next bytes of a body the task reads as it is ([`Format::Raw`]): they become
    /// durable (staged, not yet visible) at the next commit, and visible at [`Task::finish`].
    /// `Err` fails the job. Only a plugin whose formats are `[Raw]` is handed bytes; the
    /// default refuses them.
    fn bytes(&mut self, bytes: &[u8]) -> Result<(), TaskError> {
        let _ = bytes;
        Err(TaskError::Refused {
            code: ErrorCode::Internal,
            message: "this task reads records, not a raw body".into(),
        })
    }

    /// Called once when the upload ended and everything accepted is committed, before
    /// `done`: a task that makes its job visible all at once (`blobs`) does it here, durably,
    /// and returns how many records that made visible (counted as records and committed).
    /// `Err` fails the job (and [`Task::abandon`] follows). The default has nothing to do.
    fn finish(&mut self) -> Result<u64, TaskError> {
        Ok(0)
    }

    /// For a task that takes a raw body ([`Task::bytes`]) and can go on after a cut: the unit
    /// it makes durable at each commit (`blobs`: its storage chunks). The pipeline then hands
    /// it the body in whole units (each piece ends at a multiple of the unit in the body,
    /// only the last may be short), and each commit must make durable every byte handed so
    /// far, with the cursor it is given ([`Task::start_commit`]); so a resumed job goes on at
    /// a unit's end. `None` (the default): the raw body cannot be resumed.
    fn raw_unit(&self) -> Option<usize> {
        None
    }

    /// Called once when the job fails for good, before what is pending is committed: a task
    /// drops here what must not outlive a failed job (`blobs`: the staged chunks). Not called
    /// for a job that keeps its cursor to be resumed (cut off, or taken over by a resume):
    /// what it staged is the resume's. Records other tasks committed stay committed. The
    /// default keeps everything.
    fn abandon(&mut self) {}

    /// The answer to the record [`Task::record`] just accepted, for a task that answers
    /// records (`primes`): the pipeline asks right after each accepted record and sends it at
    /// once as a `result` event with the record's index. Its fields must not be named `event`
    /// or `index`. The default answers nothing.
    fn answer(&mut self) -> Option<Map<String, Value>> {
        None
    }

    /// Running figures to send to the client as a `task` event, if the task has any. Called
    /// when the pipeline sends progress (a few times per second).
    fn progress(&self) -> Option<Value> {
        None
    }

    /// The end-of-job summary, called once after the last successful commit.
    fn summary(&self) -> Summary;
}

/// Everything a plugin may use to build a task or answer a read.
#[derive(Debug, Clone)]
pub struct Context {
    /// The store (redb). Cheap to clone.
    pub store: Store,
    /// The limits plugins enforce, from the server's `[limits]`.
    pub limits: TaskLimits,
    /// The job the task runs for (and who runs it), so that what it changes can be traced
    /// back to it (`ports` keeps the versions a job replaced). `None` outside a job.
    pub job: Option<JobRef>,
    /// What the transport says of the job's body (its file name, size, content type).
    pub upload: UploadInfo,
}

/// What the transport says of a job's body, before any byte of it: the file name (`edge/1`'s
/// `name`, HTTP's `?name=`), the size it announced, the HTTP `Content-Type`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadInfo {
    /// The file name, if the client gave one.
    pub name: Option<String>,
    /// The body's size, if the client announced it.
    pub size: Option<u64>,
    /// The HTTP `Content-Type` of the body, if any (for a task that stores bodies as they
    /// are; a task of records takes its format from it instead).
    pub content_type: Option<String>,
}

impl Context {
    /// A context on `store` with the default limits, outside any job.
    pub fn new(store: Store) -> Context {
        Context {
            store,
            limits: TaskLimits::default(),
            job: None,
            upload: UploadInfo::default(),
        }
    }

    /// This context for the job `job`.
    pub fn for_job(mut self, job: JobRef) -> Context {
        self.job = Some(job);
        self
    }

    /// This context for a body the transport described as `upload`.
    pub fn with_upload(mut self, upload: UploadInfo) -> Context {
        self.upload = upload;
        self
    }
}

/// A job, as what it changed is recorded: its id and its token's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    /// The job id (ids sort by start time).
    pub id: String,
    /// Who ran it (the token's `sub`).
    pub sub: String,
}

/// Undoes what job `job` changed, as the job (or command) `by`: see [`Plugin::revert`].
pub type Revert = fn(context: &Context, job: &str, by: &JobRef) -> Result<Value, RevertError>;

/// Why a revert could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevertError {
    /// The job changed nothing this plugin kept track of (or its record of it was pruned).
    #[error("{0}")]
    NothingToRevert(String),
    /// The store failed; what was reverted before the failure stays reverted.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The limits plugins enforce: how large a request may be, how much they may store, how much
/// history they keep (the server's `limits.max_prime_n`, `limits.blob_bytes_per_sub` and
/// `[ports.history_keep]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskLimits {
    /// The largest `n` the `primes` task answers (`limits.max_prime_n`).
    pub max_prime_n: u64,
    /// The versions of each port that `ports` keeps (`[ports.history_keep]`).
    pub ports_history: HistoryKeep,
    /// The bytes of blobs one token subject may keep stored (`limits.blob_bytes_per_sub`;
    /// 0: no limit).
    pub blob_bytes_per_sub: u64,
}

/// How much of a change history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryKeep {
    /// The newest versions kept per item (0: no count limit).
    pub versions: u64,
    /// Versions replaced longer ago than this many days go (0: no age limit).
    pub days: u64,
}

impl Default for TaskLimits {
    fn default() -> Self {
        TaskLimits {
            max_prime_n: crate::primes::DEFAULT_MAX_N,
            ports_history: HistoryKeep {
                versions: 20,
                days: 0,
            },
            blob_bytes_per_sub: crate::blobs::DEFAULT_BYTES_PER_SUB,
        }
    }
}

impl TaskLimits {
    /// These limits with `max_prime_n` set.
    pub fn with_max_prime_n(self, max_prime_n: u64) -> TaskLimits {
        TaskLimits {
            max_prime_n,
            ..self
        }
    }

    /// These limits with the blob quota per token subject set (0: no limit).
    pub fn with_blob_bytes_per_sub(self, blob_bytes_per_sub: u64) -> TaskLimits {
        TaskLimits {
            blob_bytes_per_sub,
            ..self
        }
    }

    /// These limits with the ports history's retention set.
    pub fn with_ports_history(self, ports_history: HistoryKeep) -> TaskLimits {
        TaskLimits {
            ports_history,
            ..self
        }
    }
}

/// Prunes what a plugin keeps beyond its retention, in bounded transactions, until nothing
/// is due or `stop` says so; returns how many entries went. Run hourly by the server.
pub type Prune = fn(
    context: &Context,
    now: std::time::SystemTime,
    stop: &dyn Fn() -> bool,
) -> Result<u64, crate::store::StoreError>;

/// A task plugin: its description, and how to start one job of it.
#[derive(Debug, Clone, Copy)]
pub struct Plugin {
    /// The name clients use in `task`, e.g. `ports`.
    pub name: &'static str,
    /// One sentence on what the task does with records.
    pub description: &'static str,
    /// The formats the task accepts; the first is the default when sniffing cannot decide.
    /// A task that stores bodies as they are has `[Format::Raw]` alone: it is handed every
    /// body that way ([`Task::bytes`]), whatever format the client names.
    pub formats: &'static [Format],
    /// The record schema the task expects, as a JSON Schema document (for `GET /v1/tasks`).
    pub schema: &'static str,
    /// The CSV columns the task reads, for a task whose records are named fields (`ports`):
    /// a CSV upload whose header names any other column fails at once (`syntax_error` at
    /// the header, naming the unknown and the known columns) instead of every row being
    /// refused. `None`: any header is decoded.
    pub csv_columns: Option<&'static [&'static str]>,
    /// Starts one job's instance. `params` are the job's task parameters.
    pub create: Create,
    /// What the plugin keeps in the store: its tables (created when the store opens, copied
    /// into every backup) and their layout version. [`Storage::NONE`] for a task that keeps
    /// nothing.
    pub storage: Storage,
    /// Its read endpoints (`GET /v1/<name>/{key}`, `GET /v1/<name>?...`, and the read
    /// commands `edge <name> get|list`, `edge-client <name> get|list`), if it has any.
    pub reads: Option<Reads>,
    /// How to undo one of its jobs (`POST /v1/jobs/{id}/revert`, `edge <name> revert --job`),
    /// if it can: restore what the job replaced and remove what it inserted, leaving alone
    /// (and listing) what a later job changed again. Returns a JSON report.
    pub revert: Option<Revert>,
    /// How to prune what it keeps beyond its retention, if it keeps anything that grows
    /// (`ports`: its change history).
    pub prune: Option<Prune>,
}

impl Plugin {
    /// Whether the task reads this format.
    pub fn accepts(&self, format: Format) -> bool {
        self.formats.contains(&format)
    }

    /// Whether the task takes bodies as they are ([`Format::Raw`]), not cut into records.
    pub fn reads_raw(&self) -> bool {
        self.accepts(Format::Raw)
    }
}
