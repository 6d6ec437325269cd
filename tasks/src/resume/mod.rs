//! Resuming a job that was cut off, at its last commit.
//!
//! Every job that decodes records keeps a [`Cursor`] in the store: where its body stands just
//! after the last committed record (byte offset, record counts), what the decoder needs to go
//! on from there, the task's running state, and the state of the SHA-256 over the bytes so
//! far. The cursor is written in the same transaction as each batch of records ([`Save`]), so
//! after any interruption the records before it are in the store and none after it are:
//! resuming there applies every record exactly once.
//!
//! A job that stops for a reason that resuming can get past (the connection was lost, the
//! server shut down or crashed, the store was away) keeps its cursor for
//! `jobs.resume_window`; a job that ended `done`, or failed for a reason resuming would meet
//! again, drops it. Each resume raises the cursor's epoch ([`claim`]): a write of an older
//! epoch is refused ([`StoreError::TakenOver`]), so a client that resumes a job still attached
//! to another takes it over, and two writers never interleave.

pub mod blake3;
pub mod sha256;

use crate::decode::Checkpoint;
use crate::store::{Kind, PgFuture, PgTransaction, Store, StoreError, Sync};
use crate::writer::{Change, Ticket};
use edge_proto::{ErrorCode, ErrorSample, Format};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha256::SavedSha256;
use std::time::Duration;

/// Job id -> its [`Cursor`] as JSON.
pub(crate) const CURSORS: TableDefinition<&str, &[u8]> = TableDefinition::new("job_cursors");

/// How long a stopped job stays resumable unless configured (`jobs.resume_window`).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// What a resume needs to start a job's task again as it first started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    /// The job id.
    pub job: String,
    /// The token subject that started it: only it (or an admin) may resume it.
    pub sub: String,
    /// The task.
    pub task: String,
    /// The task's parameters.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// The format the client named, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// The file name the client gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The body size the client announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The whole body's SHA-256 as the client declared it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// All or nothing ([`crate::pipeline::JobSpec::atomic`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub atomic: bool,
    /// How it came (`edge/1`, `http/3`, ...), for the history.
    pub transport: String,
}

/// Where a job stands after its last commit: see the module's documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The job as it started.
    pub origin: Origin,
    /// Raised by every resume; a write of an older epoch is refused.
    pub epoch: u64,
    /// The format the body is decoded as, once chosen (given or sniffed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Where the decoder stands: the byte offset just after the last committed record (the
    /// body goes on there), the records before it, and what the format needs to go on.
    pub decoder: Checkpoint,
    /// Records committed before the offset.
    pub committed: u64,
    /// Records reported as errors before the offset.
    pub errors: u64,
    /// The first few record errors, for the final event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_errors: Vec<ErrorSample>,
    /// The SHA-256 of the body's bytes before the offset.
    pub sha256: SavedSha256,
    /// The task's running state after the records before the offset ([`crate::Task::state`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Value>,
    /// When the job stopped (ms since the epoch); `None` while it runs (or when the server
    /// that ran it died: then [`Cursor::updated_ms`] counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_ms: Option<u64>,
    /// When the cursor was last written (ms since the epoch).
    pub updated_ms: u64,
}

impl Cursor {
    /// The cursor of a job that read nothing yet.
    pub fn start(origin: Origin) -> Cursor {
        Cursor {
            epoch: 1,
            format: origin.format,
            decoder: Checkpoint {
                offset: 0,
                index: 0,
                state: crate::decode::ResumeState::Start,
            },
            committed: 0,
            errors: 0,
            first_errors: Vec::new(),
            sha256: sha256::Sha256::new().save(),
            task: None,
            stopped_ms: None,
            updated_ms: crate::time::now_ms(),
            origin,
        }
    }

    /// The byte offset the body goes on at.
    pub fn offset(&self) -> u64 {
        self.decoder.offset
    }

    /// When the job was last heard of: when it stopped, or its last commit.
    fn last_seen_ms(&self) -> u64 {
        self.stopped_ms.unwrap_or(self.updated_ms)
    }

    /// The cursor as it is stored: JSON text (redb keeps its bytes).
    fn encode(&self) -> String {
        serde_json::to_string(self)
            .expect("a cursor of strings, numbers and JSON always serializes")
    }

    fn decode(job: &str, bytes: &[u8]) -> Result<Cursor, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            key: format!("job_cursors/{job}"),
            message: e.to_string(),
        })
    }
}

/// A cursor to write with a batch, in the batch's transaction: a task that writes to the
/// store calls [`Save::apply`] (redb) or [`Save::apply_postgres`] in its change, with its
/// state after the batch; it is also a [`Change`] of its own for a task that writes nothing.
#[derive(Debug, Clone)]
pub struct Save {
    cursor: Cursor,
}

impl Save {
    /// A write of `cursor`.
    pub fn new(cursor: Cursor) -> Save {
        Save { cursor }
    }

    /// The cursor it writes.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Sets the task's state after the batch (a task whose state is only known once its
    /// batch is written, such as counts of inserted and updated records).
    pub fn with_task(mut self, state: Option<Value>) -> Save {
        self.cursor.task = state;
        self
    }

    /// The fence of this cursor's run of the job: for the task's writes between commits.
    pub fn fence(&self) -> Fence {
        Fence {
            job: self.cursor.origin.job.clone(),
            epoch: self.cursor.epoch,
        }
    }

    /// Writes the cursor in `txn`, with the task's state `task` if given (else the one it
    /// holds). Refused with [`StoreError::TakenOver`] when the stored cursor's epoch is not
    /// this one's (the job was resumed elsewhere, or expired).
    pub fn apply(&self, txn: &WriteTransaction, task: Option<&Value>) -> Result<(), StoreError> {
        let job = self.cursor.origin.job.as_str();
        let mut table = txn
            .open_table(CURSORS)
            .map_err(StoreError::redb("open job_cursors table"))?;
        self.fence().check_in(&table)?;
        let text = self.encoded(task);
        table
            .insert(job, text.as_bytes())
            .map_err(StoreError::redb("write cursor"))?;
        Ok(())
    }

    /// [`Save::apply`] in a transaction of the PostgreSQL store.
    pub async fn apply_postgres(
        &self,
        txn: &PgTransaction<'_>,
        task: Option<&Value>,
    ) -> Result<(), StoreError> {
        let job = self.cursor.origin.job.as_str();
        let epoch = self.cursor.epoch as i64;
        let text = self.encoded(task);
        let written = txn
            .execute(
                "UPDATE job_cursors SET cursor = $3::text::json, seen = $4
                 WHERE job = $1 AND epoch = $2",
                &[&job, &epoch, &text, &(crate::time::now_ms() as i64)],
            )
            .await
            .map_err(txn.failed("write a job's cursor"))?;
        if written != 1 {
            return Err(StoreError::TakenOver {
                job: job.to_owned(),
            });
        }
        Ok(())
    }

    fn encoded(&self, task: Option<&Value>) -> String {
        let mut cursor = self.cursor.clone();
        if let Some(task) = task {
            cursor.task = Some(task.clone());
        }
        cursor.updated_ms = crate::time::now_ms();
        cursor.encode()
    }
}

impl Change for Save {
    type Output = ();

    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        Save::apply(self, txn, None)
    }

    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, ()> {
        Box::pin(async move { Save::apply_postgres(self, txn, None).await })
    }
}

/// One run of a job (its cursor's epoch), for a write the task makes between two commits
/// (`blobs` stages chunks as they fill): checked in the write's transaction, and refused with
/// [`StoreError::TakenOver`] once a resume took the job over, as a cursor write is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    job: String,
    epoch: u64,
}

impl Fence {
    /// Checks in `txn` that the job is still at this run.
    pub fn check(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let table = txn
            .open_table(CURSORS)
            .map_err(StoreError::redb("open job_cursors table"))?;
        self.check_in(&table)
    }

    fn check_in(
        &self,
        table: &redb::Table<'_, &'static str, &'static [u8]>,
    ) -> Result<(), StoreError> {
        let job = self.job.as_str();
        let epoch = match stored(table, job)? {
            Some(bytes) => Some(stored_epoch(job, &bytes)?),
            None => None,
        };
        if epoch != Some(self.epoch) {
            return Err(StoreError::TakenOver {
                job: job.to_owned(),
            });
        }
        Ok(())
    }

    /// [`Fence::check`] in a transaction of the PostgreSQL store (the row is held until the
    /// transaction ends, so a resume's claim waits for it).
    pub async fn check_postgres(&self, txn: &PgTransaction<'_>) -> Result<(), StoreError> {
        let found = txn
            .query_opt(
                "SELECT 1 FROM job_cursors WHERE job = $1 AND epoch = $2 FOR SHARE",
                &[&self.job, &(self.epoch as i64)],
            )
            .await
            .map_err(txn.failed("check a job's cursor"))?;
        match found {
            Some(_) => Ok(()),
            None => Err(StoreError::TakenOver {
                job: self.job.clone(),
            }),
        }
    }
}

/// The epoch of a stored cursor, read alone (each commit checks it).
fn stored_epoch(job: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    #[derive(Deserialize)]
    struct Epoch {
        epoch: u64,
    }
    let read: Epoch = serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("job_cursors/{job}"),
        message: e.to_string(),
    })?;
    Ok(read.epoch)
}

/// The stored bytes of job `job`'s cursor, if any.
fn stored(
    table: &redb::Table<'_, &'static str, &'static [u8]>,
    job: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let found = table.get(job).map_err(StoreError::redb("read cursor"))?;
    Ok(found.map(|value| value.value().to_vec()))
}

/// Stores the cursor of a job that starts, before its body is read: through the store's
/// writer, durable with the job's first commit (a job cut off before it has nothing to
/// resume anyway).
pub fn begin(store: &Store, cursor: &Cursor) -> Ticket<()> {
    store.submit(Begin(cursor.clone()), Sync::WithNextCommit)
}

/// The first write of a job's cursor: see [`begin`].
struct Begin(Cursor);

impl Change for Begin {
    type Output = ();

    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut table = txn
            .open_table(CURSORS)
            .map_err(StoreError::redb("open job_cursors table"))?;
        table
            .insert(self.0.origin.job.as_str(), self.0.encode().as_bytes())
            .map_err(StoreError::redb("write cursor"))?;
        Ok(())
    }

    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, ()> {
        Box::pin(async move {
            let cursor = &self.0;
            let text = cursor.encode();
            txn.execute(
                "INSERT INTO job_cursors (job, epoch, seen, cursor)
                 VALUES ($1, $2, $3, $4::text::json)",
                &[
                    &cursor.origin.job,
                    &(cursor.epoch as i64),
                    &(cursor.last_seen_ms() as i64),
                    &text,
                ],
            )
            .await
            .map_err(txn.failed("store a job's cursor"))?;
            Ok(())
        })
    }
}

/// The cursor of job `job`, if it has one.
pub fn load(store: &Store, job: &str) -> Result<Option<Cursor>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        let job = job.to_owned();
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let row = client
                .query_opt(
                    "SELECT cursor::text FROM job_cursors WHERE job = $1",
                    &[&job],
                )
                .await
                .map_err(pg.query("read a job's cursor"))?;
            row.map(|row| Cursor::decode(&job, row.get::<_, &str>(0).as_bytes()))
                .transpose()
        });
    }
    let txn = store.read()?;
    let table = txn
        .open_table(CURSORS)
        .map_err(StoreError::redb("open job_cursors table"))?;
    let value = table.get(job).map_err(StoreError::redb("read cursor"))?;
    value.map(|v| Cursor::decode(job, v.value())).transpose()
}

/// Who asks to resume a job, and when.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    /// The token's subject.
    pub sub: &'a str,
    /// Whether the token is an admin's (it may resume anybody's job).
    pub admin: bool,
    /// How long a stopped job stays resumable.
    pub window: Duration,
}

/// Why a job cannot be resumed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// No cursor: the job never was, ended `done`, failed for good, or its window passed.
    #[error("job {job} cannot be resumed: no job of that id has state on this server (it ended, or stopped longer than jobs.resume_window = {window} ago, or never was); send the whole file again as a new job")]
    Expired {
        /// The job.
        job: String,
        /// The window, for a person (`24h`).
        window: String,
    },
    /// Another subject's job.
    #[error("job {job} was started by another token subject; only that subject (or an admin) may resume it")]
    Forbidden {
        /// The job.
        job: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<edge_pg::PgError> for ClaimError {
    fn from(e: edge_pg::PgError) -> ClaimError {
        ClaimError::Store(StoreError::Postgres(e))
    }
}

impl ClaimError {
    /// The code a refused resume carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClaimError::Expired { .. } => ErrorCode::ResumeExpired,
            ClaimError::Forbidden { .. } => ErrorCode::Forbidden,
            ClaimError::Store(e) => e.code(),
        }
    }
}

/// Takes job `job` over for a resume: checks who asks and the window, raises the epoch
/// (so that the writer attached so far, if any, is refused from now on) and marks the job
/// running again, in one transaction. Returns the cursor to go on from.
pub fn claim(store: &Store, job: &str, claimant: Claimant<'_>) -> Result<Cursor, ClaimError> {
    let rules = Rules::of(claimant);
    if let Kind::Postgres(pg) = store.kind() {
        let job = job.to_owned();
        return pg.block(|pg| async move {
            let mut client = pg.client().await?;
            let txn = client.transaction().await.map_err(pg.query("begin"))?;
            let row = txn
                .query_opt(
                    "SELECT cursor::text FROM job_cursors WHERE job = $1 FOR UPDATE",
                    &[&job],
                )
                .await
                .map_err(pg.query("read a job's cursor"))?;
            let Some(row) = row else {
                return Err(rules.expired(&job));
            };
            let mut cursor = Cursor::decode(&job, row.get::<_, &str>(0).as_bytes())?;
            rules.take(&job, &mut cursor)?;
            let text = cursor.encode();
            txn.execute(
                "UPDATE job_cursors SET epoch = $2, seen = $3, cursor = $4::text::json
                 WHERE job = $1",
                &[&job, &(cursor.epoch as i64), &(rules.now as i64), &text],
            )
            .await
            .map_err(pg.query("take a job's cursor"))?;
            txn.commit().await.map_err(pg.query("commit"))?;
            Ok(cursor)
        });
    }
    let txn = store.write()?;
    let cursor = {
        let mut table = txn
            .open_table(CURSORS)
            .map_err(StoreError::redb("open job_cursors table"))?;
        let Some(found) = stored(&table, job)? else {
            return Err(rules.expired(job));
        };
        let mut cursor = Cursor::decode(job, &found)?;
        rules.take(job, &mut cursor)?;
        table
            .insert(job, cursor.encode().as_bytes())
            .map_err(StoreError::redb("write cursor"))?;
        cursor
    };
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(cursor)
}

/// What a claim checks: who asks, and the window, at `now`.
struct Rules {
    sub: String,
    admin: bool,
    window: Duration,
    now: u64,
}

/// Job `job`'s cursor, where it stands, if `claimant` may resume it: the checks of [`claim`],
/// without taking the job (for a client that asks where to go on from).
pub fn inspect(store: &Store, job: &str, claimant: Claimant<'_>) -> Result<Cursor, ClaimError> {
    let rules = Rules::of(claimant);
    let cursor = load(store, job)?.ok_or_else(|| rules.expired(job))?;
    rules.allow(job, &cursor)?;
    Ok(cursor)
}

impl Rules {
    fn of(claimant: Claimant<'_>) -> Rules {
        Rules {
            sub: claimant.sub.to_owned(),
            admin: claimant.admin,
            window: claimant.window,
            now: crate::time::now_ms(),
        }
    }

    fn expired(&self, job: &str) -> ClaimError {
        ClaimError::Expired {
            job: job.to_owned(),
            window: humantime::format_duration(self.window).to_string(),
        }
    }

    /// Whether the claimant may resume the job of `cursor` now.
    fn allow(&self, job: &str, cursor: &Cursor) -> Result<(), ClaimError> {
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        if self.now.saturating_sub(cursor.last_seen_ms()) > window_ms {
            return Err(self.expired(job));
        }
        if cursor.origin.sub != self.sub && !self.admin {
            return Err(ClaimError::Forbidden {
                job: job.to_owned(),
            });
        }
        Ok(())
    }

    /// Checks the claim of `cursor`, and takes it: a new epoch, running again.
    fn take(&self, job: &str, cursor: &mut Cursor) -> Result<(), ClaimError> {
        self.allow(job, cursor)?;
        cursor.epoch += 1;
        cursor.stopped_ms = None;
        cursor.updated_ms = self.now;
        Ok(())
    }
}

/// How a job that ends leaves its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Resumable: the cursor stays, its window starts now.
    Stopped,
    /// Ended for good (`done`, or a failure resuming would meet again): the cursor goes.
    Ended,
}

/// Whether a job that failed with `code` may be resumed: it was cut off (the connection,
/// the server, the store), not refused by what it read.
pub fn resumable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::UploadAborted
            | ErrorCode::Shutdown
            | ErrorCode::TooSlow
            | ErrorCode::StoreUnavailable
            | ErrorCode::StoreError
            | ErrorCode::Internal
    )
}

/// Whether a job that failed with `code` leaves what it stored to a resume: it was cut off
/// ([`resumable`]), or taken over by a resume that goes on from its cursor.
pub fn goes_on(code: ErrorCode) -> bool {
    resumable(code) || code == ErrorCode::TakenOver
}

/// Records how job `job` (at `epoch`) ended: keeps its cursor with the window started, or
/// drops it. Does nothing when the job was taken over (another epoch holds the cursor).
/// Through the store's writer (so that a job's end never waits for another job's big batch
/// to be written), durable with the next commit.
pub fn end(store: &Store, job: &str, epoch: u64, outcome: Outcome) -> Ticket<()> {
    let end = End {
        job: job.to_owned(),
        epoch,
        outcome,
        now: crate::time::now_ms(),
    };
    store.submit(end, Sync::WithNextCommit)
}

/// A job's end, for its cursor: see [`end`].
struct End {
    job: String,
    epoch: u64,
    outcome: Outcome,
    now: u64,
}

impl Change for End {
    type Output = ();

    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let job = self.job.as_str();
        let mut table = txn
            .open_table(CURSORS)
            .map_err(StoreError::redb("open job_cursors table"))?;
        let Some(found) = stored(&table, job)? else {
            return Ok(());
        };
        let mut cursor = Cursor::decode(job, &found)?;
        if cursor.epoch != self.epoch {
            return Ok(());
        }
        match self.outcome {
            Outcome::Ended => {
                table.remove(job).map_err(StoreError::redb("drop cursor"))?;
            }
            Outcome::Stopped => {
                cursor.stopped_ms = Some(self.now);
                table
                    .insert(job, cursor.encode().as_bytes())
                    .map_err(StoreError::redb("write cursor"))?;
            }
        }
        Ok(())
    }

    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, ()> {
        Box::pin(async move {
            let (job, epoch, now) = (&self.job, self.epoch as i64, self.now as i64);
            match self.outcome {
                Outcome::Ended => txn
                    .execute(
                        "DELETE FROM job_cursors WHERE job = $1 AND epoch = $2",
                        &[job, &epoch],
                    )
                    .await
                    .map_err(txn.failed("drop a job's cursor"))?,
                Outcome::Stopped => txn
                    .execute(
                        "UPDATE job_cursors SET seen = $3,
                             cursor = (cursor::jsonb
                                 || jsonb_build_object('stopped_ms', $3::bigint))::json
                         WHERE job = $1 AND epoch = $2",
                        &[job, &epoch, &now],
                    )
                    .await
                    .map_err(txn.failed("keep a job's cursor"))?,
            };
            Ok(())
        })
    }
}

/// Drops the cursors of jobs last heard of longer than `window` ago; returns how many went.
/// Run hourly by the server (a resume checks the window itself, to the millisecond).
pub fn expire(store: &Store, window: Duration) -> Result<u64, StoreError> {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    let before = crate::time::now_ms().saturating_sub(window_ms);
    if let Kind::Postgres(pg) = store.kind() {
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let gone = client
                .execute(
                    "DELETE FROM job_cursors WHERE seen < $1",
                    &[&(before as i64)],
                )
                .await
                .map_err(pg.query("expire job cursors"))?;
            Ok(gone)
        });
    }
    let txn = store.write()?;
    let gone = {
        let mut table = txn
            .open_table(CURSORS)
            .map_err(StoreError::redb("open job_cursors table"))?;
        let mut old = Vec::new();
        for entry in table.iter().map_err(StoreError::redb("list cursors"))? {
            let (job, value) = entry.map_err(StoreError::redb("list cursors"))?;
            let seen = Cursor::decode(job.value(), value.value())
                .map(|c| c.last_seen_ms())
                .unwrap_or(0);
            if seen < before {
                old.push(job.value().to_owned());
            }
        }
        for job in &old {
            table
                .remove(job.as_str())
                .map_err(StoreError::redb("drop cursor"))?;
        }
        old.len() as u64
    };
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(gone)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    fn origin(job: &str) -> Origin {
        Origin {
            job: job.into(),
            sub: "alice".into(),
            task: "stats".into(),
            params: Map::new(),
            format: None,
            name: None,
            size: None,
            sha256: None,
            atomic: false,
            transport: "edge/1".into(),
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        (dir, store)
    }

    const WINDOW: Duration = Duration::from_secs(3600);

    fn alice() -> Claimant<'static> {
        Claimant {
            sub: "alice",
            admin: false,
            window: WINDOW,
        }
    }

    #[test]
    fn a_resume_raises_the_epoch_and_fences_the_writer_before_it() {
        let (_dir, store) = store();
        let cursor = Cursor::start(origin("j1"));
        begin(&store, &cursor).wait().unwrap();
        let first = Save::new(cursor.clone());
        store
            .submit(first.clone(), crate::store::Sync::Now)
            .wait()
            .unwrap();
        let claimed = claim(&store, "j1", alice()).unwrap();
        assert_eq!(claimed.epoch, 2);
        let refused = store.submit(first, crate::store::Sync::Now).wait();
        assert!(
            matches!(refused, Err(StoreError::TakenOver { .. })),
            "{refused:?}"
        );
        store
            .submit(Save::new(claimed), crate::store::Sync::Now)
            .wait()
            .unwrap();
    }

    #[test]
    fn only_the_same_subject_or_an_admin_resumes() {
        let (_dir, store) = store();
        begin(&store, &Cursor::start(origin("j1"))).wait().unwrap();
        let bob = Claimant {
            sub: "bob",
            admin: false,
            window: WINDOW,
        };
        assert_eq!(
            claim(&store, "j1", bob).unwrap_err().code(),
            ErrorCode::Forbidden
        );
        let admin = Claimant { admin: true, ..bob };
        assert_eq!(claim(&store, "j1", admin).unwrap().epoch, 2);
    }

    #[test]
    fn an_ended_or_unknown_or_old_job_is_expired() {
        let (_dir, store) = store();
        assert_eq!(
            claim(&store, "nope", alice()).unwrap_err().code(),
            ErrorCode::ResumeExpired
        );
        begin(&store, &Cursor::start(origin("done")))
            .wait()
            .unwrap();
        end(&store, "done", 1, Outcome::Ended).wait().unwrap();
        assert_eq!(
            claim(&store, "done", alice()).unwrap_err().code(),
            ErrorCode::ResumeExpired
        );
        let mut old = Cursor::start(origin("old"));
        old.updated_ms -= 2 * 3600 * 1000;
        begin(&store, &old).wait().unwrap();
        let refused = claim(&store, "old", alice()).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::ResumeExpired);
        assert!(refused.to_string().contains("1h"), "{refused}");
        begin(&store, &Cursor::start(origin("new"))).wait().unwrap();
        assert_eq!(expire(&store, WINDOW).unwrap(), 1);
        assert!(load(&store, "old").unwrap().is_none());
        assert!(load(&store, "new").unwrap().is_some());
    }

    #[test]
    fn a_stopped_job_keeps_its_cursor_unless_taken_over() {
        let (_dir, store) = store();
        begin(&store, &Cursor::start(origin("j1"))).wait().unwrap();
        end(&store, "j1", 1, Outcome::Stopped).wait().unwrap();
        assert!(load(&store, "j1").unwrap().unwrap().stopped_ms.is_some());
        let claimed = claim(&store, "j1", alice()).unwrap();
        assert_eq!(claimed.stopped_ms, None);
        // The writer of epoch 1 ends late: the resumed job's cursor stays.
        end(&store, "j1", 1, Outcome::Ended).wait().unwrap();
        assert_eq!(load(&store, "j1").unwrap().unwrap().epoch, 2);
    }
}
