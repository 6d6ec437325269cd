//! Resuming jobs: which resumable jobs run on this node (so that a resume takes one over at
//! once), claiming a job's cursor for a resume, and leaving the cursor as the job ends.
//!
//! The fencing itself is in the store (the cursor's epoch, see `edge_tasks::resume`): a job
//! taken over from another node learns it at its next commit. On this node it is told at
//! once: its body stops with `taken_over`, and the resume waits until it has ended, so that
//! its last events and its history entry come before the resumed job's.

use crate::auth::Grant;
use crate::jobs::Refusal;
use crate::service::Service;
use edge_proto::{ErrorCode, Event, JobHeader};
use edge_tasks::pipeline::{JobSpec, Resume};
use edge_tasks::resume::{self, Claimant, Cursor, Origin, Outcome};
use edge_tasks::{Plugin, Task};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a resume waits for the job it takes over to end on this node.
const TAKE_OVER_WAIT: Duration = Duration::from_secs(10);

/// The resumable jobs running on this node.
#[derive(Debug, Default)]
pub(crate) struct Attached {
    jobs: Mutex<HashMap<String, Entry>>,
}

/// One running job.
#[derive(Debug)]
struct Entry {
    /// Cancelled when a resume takes the job over.
    taken: CancellationToken,
    /// Turns `true` once the job ended.
    ended: watch::Receiver<bool>,
    /// Which run of the job it is (its cursor's epoch).
    epoch: u64,
}

/// A running job's place in [`Attached`]: dropped when the job ended.
#[derive(Debug)]
pub(crate) struct Attachment {
    attached: Arc<Attached>,
    job: String,
    epoch: u64,
    ended: watch::Sender<bool>,
    /// Cancelled when a resume takes the job over.
    pub taken: CancellationToken,
}

impl Attached {
    /// Registers job `job` (run `epoch`) as running here, until the returned guard drops.
    pub(crate) fn attach(self: &Arc<Self>, job: &str, epoch: u64) -> Attachment {
        let taken = CancellationToken::new();
        let (ended, watching) = watch::channel(false);
        let entry = Entry {
            taken: taken.clone(),
            ended: watching,
            epoch,
        };
        self.lock().insert(job.to_owned(), entry);
        Attachment {
            attached: self.clone(),
            job: job.to_owned(),
            epoch,
            ended,
            taken,
        }
    }

    /// Tells job `job`, if it runs here under an older run than `epoch`, that it was taken
    /// over, and waits (a while) until it has ended.
    async fn take_over(&self, job: &str, epoch: u64) {
        let running = self
            .lock()
            .get(job)
            .filter(|a| a.epoch < epoch)
            .map(|a| (a.taken.clone(), a.ended.clone()));
        let Some((taken, mut ended)) = running else {
            return;
        };
        debug!(job, "a resume takes over the job attached on this node");
        taken.cancel();
        let waited = tokio::time::timeout(TAKE_OVER_WAIT, ended.wait_for(|ended| *ended)).await;
        if waited.is_err() {
            warn!(job, "the job taken over did not end within 10 s; the resume goes on (its commits are refused)");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let _ = self.ended.send(true);
        let mut jobs = self.attached.lock();
        if jobs.get(&self.job).is_some_and(|a| a.epoch == self.epoch) {
            jobs.remove(&self.job);
        }
    }
}

/// Claims job `job` for a resume by `grant`, and takes it over from the client attached to
/// it on this node, if any. `header` is the resume's header: its task, and its declared
/// digest if it gives one, must be the job's.
pub(crate) async fn claim(
    service: &Service,
    job: &str,
    grant: &Grant,
    header: &JobHeader,
) -> Result<Cursor, Refusal> {
    // The header is checked against the job before the claim: a resume that is refused
    // takes nothing over.
    let found = inspect(service, job, grant).await?;
    check_header(&found.origin, header)?;
    let cursor = as_claimant(service, job, grant, resume::claim).await?;
    service
        .attached
        .take_over(&cursor.origin.job, cursor.epoch)
        .await;
    Ok(cursor)
}

/// Job `job`'s cursor, where it stands, if `grant` may resume it (nothing is taken over).
pub(crate) async fn inspect(
    service: &Service,
    job: &str,
    grant: &Grant,
) -> Result<Cursor, Refusal> {
    as_claimant(service, job, grant, resume::inspect).await
}

/// Runs `asks` (`resume::claim` or `resume::inspect`) for job `job` as `grant`, off the
/// async runtime.
async fn as_claimant(
    service: &Service,
    job: &str,
    grant: &Grant,
    asks: fn(&edge_tasks::Store, &str, Claimant<'_>) -> Result<Cursor, resume::ClaimError>,
) -> Result<Cursor, Refusal> {
    let store = service.store.clone();
    let (wanted, sub, admin) = (job.to_owned(), grant.sub.clone(), grant.is_admin());
    let window = service.resume_window;
    let answer = blocking(move || {
        let claimant = Claimant {
            sub: &sub,
            admin,
            window,
        };
        asks(&store, &wanted, claimant)
    })
    .await?;
    answer.map_err(|e| Refusal::new(e.code(), e.to_string()))
}

/// Runs `work` (a store's blocking call) off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, format!("the resume stopped: {e}")))
}

/// A resume's header, with what the job started with: its task, parameters, format, name,
/// size and declared digest (the header's own are not used: the job goes on as it started).
pub(crate) fn as_started(mut header: JobHeader, origin: &Origin) -> JobHeader {
    header.task = origin.task.clone();
    header.params = origin.params.clone();
    header.format = origin.format;
    header.name = origin.name.clone();
    header.size = origin.size;
    header.sha256 = origin.sha256.clone();
    header.atomic = origin.atomic;
    header
}

/// The cursor job `spec` keeps, if it can be resumed (its body is the client's upload, cut
/// into records, or taken whole by a task that makes whole units of it durable): the one a
/// resume claimed, or a new one.
pub(crate) fn cursor(
    service: &Service,
    spec: &JobSpec,
    (plugin, task): (&Plugin, &dyn Task),
    grant: &Grant,
    params: &Map<String, Value>,
    transport: &str,
    claimed: Option<Cursor>,
) -> Option<Resume> {
    let cursor = match claimed {
        Some(cursor) => cursor,
        None if spec.source.is_some() || spec.unchanged => return None,
        None if plugin.reads_raw() && task.raw_unit().is_none() => return None,
        None => Cursor::start(Origin {
            job: spec.job.clone(),
            sub: grant.sub.clone(),
            task: plugin.name.to_owned(),
            params: params.clone(),
            format: spec.format,
            name: spec.name.clone(),
            size: spec.size,
            sha256: spec.sha256.clone(),
            atomic: spec.atomic,
            transport: transport.to_owned(),
        }),
    };
    Some(Resume {
        store: service.store.clone(),
        cursor,
    })
}

/// A resume's header must name the job's task (or none: `edge-client resume` does not know
/// it), and may not declare another digest.
fn check_header(origin: &Origin, header: &JobHeader) -> Result<(), Refusal> {
    if !header.task.is_empty() && header.task != origin.task {
        return Err(Refusal::new(
            ErrorCode::BadHeader,
            format!(
                "job {} runs task `{}`, not `{}`: resume it with the same task",
                origin.job, origin.task, header.task
            ),
        ));
    }
    if let (Some(declared), Some(first)) = (&header.sha256, &origin.sha256) {
        if !declared.eq_ignore_ascii_case(first) {
            return Err(Refusal::new(
                ErrorCode::DigestMismatch,
                format!(
                    "job {} was started for a body whose SHA-256 is {first}, and this resume declares {declared}: it is another file; send it as a new job",
                    origin.job
                ),
            ));
        }
    }
    Ok(())
}

/// Keeps or drops a job's cursor by how it ended (`last`: its final event): submitted to the
/// store's writer at once; the future resolves when it is written (a failure is logged).
pub(crate) fn end(
    service: &Service,
    job: &str,
    epoch: u64,
    last: &Event,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let outcome = match last {
        Event::Failed { code, .. } if *code == ErrorCode::TakenOver => None,
        Event::Failed { code, .. } if resume::resumable(*code) => Some(Outcome::Stopped),
        _ => Some(Outcome::Ended),
    };
    let ticket = outcome.map(|outcome| resume::end(&service.store, job, epoch, outcome));
    async move {
        let Some(ticket) = ticket else { return };
        if let Err(e) = ticket.answer().await {
            warn!("cannot update the job's cursor as it ends: {e}");
        }
    }
}
