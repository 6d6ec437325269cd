//! Job history: one record per job in the store, written when the job starts and again when
//! it ends, so that it survives restarts. A job still `running` when the server starts again
//! was cut off by a crash; it is marked `interrupted`.
//!
//! The history is pruned (see [`Retention`]): [`prune_periodically`] deletes, in the
//! background and a bounded batch per write transaction, the records of jobs that ended too
//! long ago or are too many. A running job's record is never pruned.

use crate::store::{Change, Kind, Pg, PgFuture, PgTransaction, Store, StoreError, Ticket};
use crate::table::{Encoded, Stored};
use edge_proto::{ErrorCode, Event, Format};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::{Duration, SystemTime};

/// Jobs by id (ids sort by start time), the value a JSON [`JobRecord`].
pub(crate) const JOBS: TableDefinition<&str, StoredJob> = TableDefinition::new("jobs");

/// A job record as the store holds it (its JSON), decoded when read.
pub type StoredJob<'a> = Stored<'a, JobRecord>;

impl Encoded for JobRecord {
    const TYPE_NAME: &'static str = "edge::history::JobRecord";

    fn decode(bytes: &[u8]) -> Result<JobRecord, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A record's stored form.
fn encode(record: &JobRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a job record always serializes")
}

/// The largest page [`list`] returns.
pub const MAX_PAGE: usize = 1000;

/// What the history keeps of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job id.
    pub job: String,
    /// Who ran it (the token's subject), once tokens are verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The task.
    pub task: String,
    /// How it came: `edge/1` or `h3`.
    pub transport: String,
    /// The format, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// The file name the client gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When it started (RFC 3339, UTC).
    pub started: String,
    /// When it ended (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Body bytes read.
    pub bytes: u64,
    /// Records decoded.
    pub records: u64,
    /// Records committed.
    pub committed: u64,
    /// Records reported as errors.
    pub errors: u64,
    /// `running`, `done`, `failed`, `rejected` or `interrupted`.
    pub outcome: String,
    /// Why it failed or was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// Why, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Where the body came from when it was not the upload's (a server file, a URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<serde_json::Value>,
}

impl JobRecord {
    /// A job that is starting now.
    pub fn start(
        job: &str,
        sub: Option<&str>,
        task: &str,
        transport: &str,
        format: Option<Format>,
        name: Option<String>,
    ) -> JobRecord {
        JobRecord {
            job: job.to_owned(),
            sub: sub.map(str::to_owned),
            task: task.to_owned(),
            transport: transport.to_owned(),
            format,
            name,
            started: now(),
            finished: None,
            bytes: 0,
            records: 0,
            committed: 0,
            errors: 0,
            outcome: "running".into(),
            code: None,
            message: None,
            source: None,
        }
    }

    /// The record once the job ended with `last` (its final event).
    pub fn end(mut self, format: Option<Format>, last: &Event) -> JobRecord {
        self.finished = Some(now());
        self.format = format.or(self.format);
        self.outcome = last.name().to_owned();
        match last {
            Event::Done {
                bytes,
                records,
                committed,
                errors,
                ..
            } => {
                (self.bytes, self.records, self.committed, self.errors) =
                    (*bytes, *records, *committed, *errors);
            }
            Event::Failed {
                code,
                message,
                committed,
                bytes,
                records,
                errors,
                ..
            } => {
                (self.bytes, self.records, self.committed, self.errors) =
                    (*bytes, *records, *committed, *errors);
                self.code = Some(*code);
                self.message = Some(message.clone());
            }
            Event::Rejected { code, message, .. } => {
                self.code = Some(*code);
                self.message = Some(message.clone());
            }
            _ => {}
        }
        self
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// How a history write reaches the disk: [`Sync::Now`] for a job's end; for its start,
/// [`Sync::WithNextCommit`] (durable with the job's first records or any later write: a crash
/// before then loses only the start of a job that had stored nothing, and saves one fsync per
/// job).
pub use crate::store::Sync;

/// Hands a job's record (written or overwritten) to the store's writer, so it shares a commit
/// with whatever other jobs are writing. The ticket answers once it is committed: await it
/// with [`Ticket::answer`] from async code, or [`Ticket::wait`] on a thread.
pub fn submit(store: &Store, record: &JobRecord, sync: Sync) -> Ticket<()> {
    let value = encode(record);
    store.submit(
        PutRecord {
            job: record.job.clone(),
            value,
            node: store.node().to_owned(),
            running: record.outcome == "running",
            ended: record.ended_secs(),
        },
        sync,
    )
}

/// A job record to write, as a change for the store's writer.
struct PutRecord {
    job: String,
    value: Vec<u8>,
    /// For PostgreSQL's columns: the node that runs the job, whether it runs, when it ended.
    node: String,
    running: bool,
    ended: Option<i64>,
}

impl Change for PutRecord {
    type Output = ();

    fn apply(&mut self, txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut table = txn
            .open_table(JOBS)
            .map_err(StoreError::redb("open jobs table"))?;
        table
            .insert(self.job.as_str(), StoredJob::from_encoded(&self.value))
            .map_err(StoreError::redb("write job"))?;
        Ok(())
    }

    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, ()> {
        Box::pin(async move {
            let record = std::str::from_utf8(&self.value).expect("a record is encoded as JSON");
            txn.execute(
                "INSERT INTO jobs (job, node, running, ended, record)
                 VALUES ($1, $2, $3, $4, $5::text::json)
                 ON CONFLICT (job) DO UPDATE SET running = EXCLUDED.running,
                     ended = EXCLUDED.ended, record = EXCLUDED.record",
                &[&self.job, &self.node, &self.running, &self.ended, &record],
            )
            .await
            .map_err(txn.failed("write a job's record"))?;
            Ok(())
        })
    }
}

/// One job's record.
pub fn get(store: &Store, job: &str) -> Result<Option<JobRecord>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        let job = job.to_owned();
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let row = client
                .query_opt("SELECT record::text FROM jobs WHERE job = $1", &[&job])
                .await
                .map_err(pg.query("read a job's record"))?;
            row.map(|row| decode_json(&job, row.get(0))).transpose()
        });
    }
    let txn = store.read()?;
    let table = txn
        .open_table(JOBS)
        .map_err(StoreError::redb("open jobs table"))?;
    let value = table.get(job).map_err(StoreError::redb("read job"))?;
    value.map(|v| v.value().decode(job)).transpose()
}

/// A page of job records, most recent first, strictly before the job id `before`; only
/// `sub`'s jobs when `sub` is given.
pub fn list(
    store: &Store,
    before: Option<&str>,
    limit: usize,
    sub: Option<&str>,
) -> Result<(Vec<JobRecord>, Option<String>), StoreError> {
    let limit = limit.clamp(1, MAX_PAGE);
    if let Kind::Postgres(pg) = store.kind() {
        return list_postgres(pg, before, limit, sub);
    }
    let txn = store.read()?;
    let table = txn
        .open_table(JOBS)
        .map_err(StoreError::redb("open jobs table"))?;
    let range = match before {
        Some(before) => table.range::<&str>(..before),
        None => table.range::<&str>(..),
    }
    .map_err(StoreError::redb("list jobs"))?;
    let mut records = Vec::new();
    for entry in range.rev() {
        let (key, value) = entry.map_err(StoreError::redb("list jobs"))?;
        let record = value.value().decode(key.value())?;
        if sub.is_some_and(|sub| record.sub.as_deref() != Some(sub)) {
            continue;
        }
        if records.len() == limit {
            let next = records.last().map(|r: &JobRecord| r.job.clone());
            return Ok((records, next));
        }
        records.push(record);
    }
    Ok((records, None))
}

/// Marks every job still `running` as `interrupted` (call before serving: such jobs were cut
/// off when the server last stopped without a shutdown). Returns how many.
pub fn mark_interrupted(store: &Store) -> Result<u64, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return mark_interrupted_postgres(pg, store.node());
    }
    let txn = store.write()?;
    let mut marked = 0;
    {
        let mut table = txn
            .open_table(JOBS)
            .map_err(StoreError::redb("open jobs table"))?;
        let mut running = Vec::new();
        for entry in table.iter().map_err(StoreError::redb("list jobs"))? {
            let (key, value) = entry.map_err(StoreError::redb("list jobs"))?;
            let record = value.value().decode(key.value())?;
            if record.outcome == "running" {
                running.push(record);
            }
        }
        for mut record in running {
            record.interrupt();
            let value = encode(&record);
            table
                .insert(record.job.as_str(), StoredJob::from_encoded(&value))
                .map_err(StoreError::redb("write job"))?;
            marked += 1;
        }
    }
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(marked)
}

/// [`list`] in a PostgreSQL store.
fn list_postgres(
    pg: &Pg,
    before: Option<&str>,
    limit: usize,
    sub: Option<&str>,
) -> Result<(Vec<JobRecord>, Option<String>), StoreError> {
    let (before, sub) = (before.map(str::to_owned), sub.map(str::to_owned));
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let rows = client
            .query(
                "SELECT job, record::text FROM jobs
                 WHERE ($1::text IS NULL OR job < $1) AND ($2::text IS NULL OR record->>'sub' = $2)
                 ORDER BY job DESC LIMIT $3",
                &[&before, &sub, &(limit as i64 + 1)],
            )
            .await
            .map_err(pg.query("list jobs"))?;
        let mut records = rows
            .iter()
            .map(|row| decode_json(row.get(0), row.get(1)))
            .collect::<Result<Vec<JobRecord>, StoreError>>()?;
        let next = (records.len() > limit).then(|| {
            records.truncate(limit);
            records.last().map(|r| r.job.clone())
        });
        Ok((records, next.flatten()))
    })
}

/// [`mark_interrupted`] in a PostgreSQL store: the jobs `node` was running (other nodes' jobs
/// run on).
fn mark_interrupted_postgres(pg: &Pg, node: &str) -> Result<u64, StoreError> {
    let node = node.to_owned();
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let rows = client
            .query(
                "SELECT job, record::text FROM jobs WHERE running AND node = $1",
                &[&node],
            )
            .await
            .map_err(pg.query("list running jobs"))?;
        for row in &rows {
            let mut record = decode_json(row.get(0), row.get(1))?;
            record.interrupt();
            let value = String::from_utf8(encode(&record)).expect("JSON is UTF-8");
            client
                .execute(
                    "UPDATE jobs SET running = false, ended = $2, record = $3::text::json
                     WHERE job = $1",
                    &[&record.job, &record.ended_secs(), &value],
                )
                .await
                .map_err(pg.query("mark a job interrupted"))?;
        }
        Ok(rows.len() as u64)
    })
}

/// A record read back as JSON text from PostgreSQL.
fn decode_json(job: &str, json: &str) -> Result<JobRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        key: job.to_owned(),
        message: e.to_string(),
    })
}

/// How much history to keep: a record goes once its job ended more than `max_age` ago, or
/// once more than `max_count` newer records exist, whichever comes first. A running job's
/// record always stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep the records of jobs that ended at most this long ago (`None`: no age limit).
    pub max_age: Option<Duration>,
    /// Keep at most this many records, the most recent (`None`: no count limit).
    pub max_count: Option<u64>,
}

impl Retention {
    /// From the config's `jobs.history_keep_days` and `jobs.history_keep_count` (0: no limit).
    pub fn new(keep_days: u64, keep_count: u64) -> Retention {
        Retention {
            max_age: (keep_days > 0).then(|| Duration::from_secs(keep_days.saturating_mul(86_400))),
            max_count: (keep_count > 0).then_some(keep_count),
        }
    }

    /// Whether it keeps everything.
    pub fn keeps_all(&self) -> bool {
        self.max_age.is_none() && self.max_count.is_none()
    }
}

/// Records deleted per write transaction, at most: a prune never holds the store's writer
/// (and the jobs committing through it) for long.
pub const PRUNE_BATCH: usize = 1000;

/// How often the server prunes the history (it also prunes when it starts).
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// What one batch of pruning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Records deleted.
    pub deleted: u64,
    /// The batch was full: more may be due.
    pub more: bool,
}

/// Hands one batch of pruning to the store's writer: deletes, oldest first, at most `batch`
/// records that `retention` no longer keeps as of `now`. It never waits for the disk
/// ([`Sync::WithNextCommit`]): a crash before the next durable commit only means the records
/// are pruned again.
pub fn prune_batch(
    store: &Store,
    retention: Retention,
    now: SystemTime,
    batch: usize,
) -> Ticket<Pruned> {
    store.submit(
        PruneBatch {
            retention,
            now,
            batch: batch.max(1),
        },
        Sync::WithNextCommit,
    )
}

/// Prunes until nothing more is due, one batch per write transaction; returns how many
/// records went. Between batches the writer commits the jobs' changes queued meanwhile.
pub async fn prune(
    store: &Store,
    retention: Retention,
    now: SystemTime,
) -> Result<u64, StoreError> {
    prune_until(store, retention, now, std::future::pending()).await
}

/// Prunes now, then every [`PRUNE_INTERVAL`], until `stop` completes (it stops between two
/// batches). For the server's lifetime: failures are logged, and the next round tries again.
pub async fn prune_periodically(
    store: Store,
    retention: Retention,
    stop: impl Future<Output = ()>,
) {
    if retention.keeps_all() {
        return;
    }
    let mut stop = std::pin::pin!(stop);
    loop {
        match prune_until(&store, retention, SystemTime::now(), stop.as_mut()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "job history pruned"),
            Err(e) => tracing::warn!("cannot prune the job history: {e}"),
        }
        tokio::select! {
            biased;
            () = stop.as_mut() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

/// Prunes batch after batch until one is not full or `stop` completes.
async fn prune_until(
    store: &Store,
    retention: Retention,
    now: SystemTime,
    stop: impl Future<Output = ()>,
) -> Result<u64, StoreError> {
    let mut stop = std::pin::pin!(stop);
    let mut deleted = 0;
    loop {
        let ticket = prune_batch(store, retention, now, PRUNE_BATCH);
        let pruned = tokio::select! {
            biased;
            () = stop.as_mut() => return Ok(deleted),
            pruned = ticket.answer() => pruned?,
        };
        deleted += pruned.deleted;
        if !pruned.more {
            return Ok(deleted);
        }
    }
}

/// One batch of pruning, as a change for the store's writer.
struct PruneBatch {
    retention: Retention,
    now: SystemTime,
    batch: usize,
}

impl Change for PruneBatch {
    type Output = Pruned;

    fn apply(&mut self, txn: &redb::WriteTransaction) -> Result<Pruned, StoreError> {
        let mut table = txn
            .open_table(JOBS)
            .map_err(StoreError::redb("open jobs table"))?;
        let total = table.len().map_err(StoreError::redb("count jobs"))?;
        // Records beyond the count limit, oldest first (ids sort by start time).
        let mut excess = self
            .retention
            .max_count
            .map_or(0, |keep| total.saturating_sub(keep));
        let cutoff = self
            .retention
            .max_age
            .and_then(|age| self.now.checked_sub(age));
        // Running jobs are passed over; bounding the scan keeps a batch short even then.
        let scan_limit = self.batch.saturating_mul(2);
        let mut doomed = Vec::new();
        for entry in table
            .iter()
            .map_err(StoreError::redb("list jobs"))?
            .take(scan_limit)
        {
            let (key, value) = entry.map_err(StoreError::redb("list jobs"))?;
            let record = value.value().decode(key.value())?;
            if record.outcome == "running" {
                continue;
            }
            let aged = cutoff.is_some_and(|cutoff| record.ended().is_some_and(|t| t < cutoff));
            if excess == 0 && !aged {
                // The records after this one are newer: nothing more is due.
                break;
            }
            excess = excess.saturating_sub(1);
            doomed.push(record.job);
            if doomed.len() == self.batch {
                break;
            }
        }
        for job in &doomed {
            table
                .remove(job.as_str())
                .map_err(StoreError::redb("delete job"))?;
        }
        Ok(Pruned {
            deleted: doomed.len() as u64,
            more: doomed.len() == self.batch,
        })
    }

    /// Deletes, oldest first, up to a batch of ended jobs that ended before the cutoff or
    /// come after the newest `max_count` records.
    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, Pruned> {
        Box::pin(async move {
            let cutoff: Option<i64> = self
                .retention
                .max_age
                .and_then(|age| self.now.checked_sub(age))
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_secs()).ok());
            // The newest record beyond the count limit: it and every older one go.
            let beyond: Option<String> = match self.retention.max_count {
                Some(keep) => txn
                    .query_opt(
                        "SELECT job FROM jobs ORDER BY job DESC OFFSET $1 LIMIT 1",
                        &[&i64::try_from(keep).unwrap_or(i64::MAX)],
                    )
                    .await
                    .map_err(txn.failed("find the history's count limit"))?
                    .map(|row| row.get(0)),
                None => None,
            };
            if cutoff.is_none() && beyond.is_none() {
                return Ok(Pruned {
                    deleted: 0,
                    more: false,
                });
            }
            let batch = i64::try_from(self.batch).unwrap_or(i64::MAX);
            let deleted = txn
                .execute(
                    "DELETE FROM jobs WHERE job IN (
                        SELECT job FROM jobs WHERE NOT running
                          AND (ended < $1 OR job <= $2)
                        ORDER BY job LIMIT $3)",
                    &[&cutoff, &beyond, &batch],
                )
                .await
                .map_err(txn.failed("prune the job history"))?;
            Ok(Pruned {
                deleted,
                more: deleted == self.batch as u64,
            })
        })
    }
}

impl JobRecord {
    /// Marks a job found running when its server starts: it was cut off.
    pub(crate) fn interrupt(&mut self) {
        self.outcome = "interrupted".into();
        self.message = Some("the server stopped without a shutdown while this job ran; records reported as committed are stored".into());
    }

    /// When the job ended, in seconds since the epoch (`None` while it runs).
    fn ended_secs(&self) -> Option<i64> {
        if self.outcome == "running" {
            return None;
        }
        let ended = self.ended()?;
        let secs = ended.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        i64::try_from(secs).ok()
    }

    /// When the job ended (when it started, for a record without an end, such as an
    /// interrupted job's); `None` if the time does not parse.
    fn ended(&self) -> Option<SystemTime> {
        let at = self.finished.as_deref().unwrap_or(&self.started);
        humantime::parse_rfc3339(at).ok()
    }
}

/// Reverts job `job` through its task's plugin (see [`crate::task::Plugin::revert`]), as
/// `by`: the job must exist, have ended, and be of a task that can revert.
pub fn revert(
    context: &crate::Context,
    job: &str,
    by: &crate::task::JobRef,
) -> Result<serde_json::Value, crate::reads::ReadError> {
    use crate::reads::ReadError;
    let record =
        get(&context.store, job)?.ok_or_else(|| ReadError::NotFound(format!("no job `{job}`")))?;
    if record.outcome == "running" {
        return Err(ReadError::Conflict(format!(
            "job `{job}` is still running: revert it once it has ended"
        )));
    }
    let revert = context
        .store
        .registry()
        .find(&record.task)
        .and_then(|plugin| plugin.revert)
        .ok_or_else(|| {
            ReadError::Conflict(format!(
                "job `{job}` ran task `{}`, which keeps nothing to revert",
                record.task
            ))
        })?;
    let report = revert(context, job, by).map_err(|e| match e {
        crate::task::RevertError::NothingToRevert(message) => ReadError::Conflict(message),
        crate::task::RevertError::Store(e) => ReadError::Store(e),
    })?;
    // The revert is a job of its own (transport `revert`), so that the job history lists it
    // and it can be reverted in turn.
    let mut reverting = JobRecord::start(
        &by.id,
        Some(&by.sub),
        &record.task,
        "revert",
        None,
        Some(format!("revert of {job}")),
    );
    let changed = ["restored", "removed"]
        .iter()
        .filter_map(|field| report[*field].as_u64())
        .sum();
    reverting.finished = Some(now());
    reverting.outcome = "done".into();
    (reverting.records, reverting.committed) = (changed, changed);
    submit(&context.store, &reverting, Sync::Now).wait()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use serde_json::json;

    #[test]
    fn records_survive_reopening_and_list_most_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        {
            let store = Store::open(&path, &StoreOptions::default()).unwrap();
            for i in 0..5 {
                let record = JobRecord::start(
                    &format!("j{i}"),
                    Some(if i % 2 == 0 { "even" } else { "odd" }),
                    "ports",
                    "edge/1",
                    Some(Format::Json),
                    None,
                );
                submit(&store, &record, Sync::WithNextCommit)
                    .wait()
                    .unwrap();
                if i < 4 {
                    let done = Event::Done {
                        job: format!("j{i}"),
                        bytes: 10,
                        records: 2,
                        committed: 2,
                        errors: 0,
                        duration_ms: 1,
                        summary: json!({}),
                        first_errors: Vec::new(),
                        unchanged: false,
                        sha256: None,
                    };
                    submit(&store, &record.end(None, &done), Sync::Now)
                        .wait()
                        .unwrap();
                }
            }
        }
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(mark_interrupted(&store).unwrap(), 1);
        let (page, next) = list(&store, None, 3, None).unwrap();
        let ids: Vec<&str> = page.iter().map(|r| r.job.as_str()).collect();
        assert_eq!(ids, ["j4", "j3", "j2"]);
        assert_eq!(next.as_deref(), Some("j2"));
        let (rest, next) = list(&store, Some("j2"), 3, None).unwrap();
        assert_eq!(
            rest.iter().map(|r| r.job.as_str()).collect::<Vec<_>>(),
            ["j1", "j0"]
        );
        assert_eq!(next, None);
        let interrupted = get(&store, "j4").unwrap().unwrap();
        assert_eq!(interrupted.outcome, "interrupted");
        let done = get(&store, "j0").unwrap().unwrap();
        assert_eq!((done.outcome.as_str(), done.committed), ("done", 2));
        assert!(done.finished.is_some());
        assert_eq!(get(&store, "nope").unwrap(), None);
        let (odd, _) = list(&store, None, 10, Some("odd")).unwrap();
        assert_eq!(
            odd.iter().map(|r| r.job.as_str()).collect::<Vec<_>>(),
            ["j3", "j1"]
        );
    }

    /// A record of job `id` that ended (or, running, started) `ago` before `now`.
    fn old_record(id: &str, now: SystemTime, ago: Duration, running: bool) -> JobRecord {
        let at = humantime::format_rfc3339_millis(now - ago).to_string();
        let mut record = JobRecord::start(id, None, "ports", "edge/1", None, None);
        record.started = at.clone();
        if !running {
            record.outcome = "done".into();
            record.finished = Some(at);
        }
        record
    }

    fn ids(store: &Store) -> Vec<String> {
        let (page, _) = list(store, None, MAX_PAGE, None).unwrap();
        let mut ids: Vec<String> = page.into_iter().map(|r| r.job).collect();
        ids.reverse();
        ids
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn pruning_goes_by_age_then_count_and_spares_running_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        let now = SystemTime::now();
        for i in 0..10 {
            let ago = if i < 6 {
                10 * DAY
            } else {
                Duration::from_secs(3600)
            };
            let record = old_record(&format!("j{i:02}"), now, ago, i == 1);
            submit(&store, &record, Sync::Now).wait().unwrap();
        }

        let by_age = Retention {
            max_age: Some(7 * DAY),
            max_count: None,
        };
        let pruned = prune_batch(&store, by_age, now, 100).wait().unwrap();
        assert_eq!(
            pruned,
            Pruned {
                deleted: 5,
                more: false
            }
        );
        assert_eq!(
            ids(&store),
            ["j01", "j06", "j07", "j08", "j09"],
            "the running j01 stays"
        );

        // Two kept: the running job counts, so only the newest finished one stays with it.
        let by_count = Retention::new(0, 2);
        let pruned = prune_batch(&store, by_count, now, 100).wait().unwrap();
        assert_eq!(
            pruned,
            Pruned {
                deleted: 3,
                more: false
            }
        );
        assert_eq!(ids(&store), ["j01", "j09"]);

        let nothing_due = prune_batch(&store, Retention::new(7, 2), now, 100)
            .wait()
            .unwrap();
        assert_eq!(
            nothing_due,
            Pruned {
                deleted: 0,
                more: false
            }
        );
        assert!(Retention::new(0, 0).keeps_all());
    }

    #[test]
    fn pruning_deletes_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        let now = SystemTime::now();
        for i in 0..25 {
            let record = old_record(&format!("j{i:02}"), now, 100 * DAY, false);
            submit(&store, &record, Sync::WithNextCommit)
                .wait()
                .unwrap();
        }
        let keep_3 = Retention::new(30, 3);
        let batches: Vec<Pruned> = (0..3)
            .map(|_| prune_batch(&store, keep_3, now, 10).wait().unwrap())
            .collect();
        assert_eq!(
            batches,
            [
                Pruned {
                    deleted: 10,
                    more: true
                },
                Pruned {
                    deleted: 10,
                    more: true
                },
                Pruned {
                    deleted: 5,
                    more: false
                },
            ],
            "all 25 are older than 30 days"
        );
        assert!(ids(&store).is_empty());
    }

    #[tokio::test]
    async fn prune_goes_on_until_nothing_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        let now = SystemTime::now();
        let count = PRUNE_BATCH * 2 + 7;
        for i in 0..count {
            let record = old_record(&format!("j{i:05}"), now, DAY, false);
            submit(&store, &record, Sync::WithNextCommit)
                .answer()
                .await
                .unwrap();
        }
        let deleted = prune(&store, Retention::new(0, 5), now).await.unwrap();
        assert_eq!(deleted, count as u64 - 5);
        assert_eq!(
            ids(&store),
            ["j02002", "j02003", "j02004", "j02005", "j02006"]
        );
    }
}
