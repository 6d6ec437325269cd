//! Job history: one record per job in the store, written when the job starts and again when
//! it ends, so that it survives restarts. A job still `running` when the server starts again
//! was cut off by a crash; it is marked `interrupted`.

use crate::store::{Change, Store, StoreError, Ticket};
use edge_proto::{ErrorCode, Event, Format};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// Jobs by id (ids sort by start time), the value a JSON [`JobRecord`].
pub(crate) const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

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
    let value = serde_json::to_vec(record).expect("a job record always serializes");
    store.submit(
        PutRecord {
            job: record.job.clone(),
            value,
        },
        sync,
    )
}

/// A job record to write, as a change for the store's writer.
struct PutRecord {
    job: String,
    value: Vec<u8>,
}

impl Change for PutRecord {
    type Output = ();

    fn apply(&mut self, txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut table = txn
            .open_table(JOBS)
            .map_err(StoreError::redb("open jobs table"))?;
        table
            .insert(self.job.as_str(), self.value.as_slice())
            .map_err(StoreError::redb("write job"))?;
        Ok(())
    }
}

/// One job's record.
pub fn get(store: &Store, job: &str) -> Result<Option<JobRecord>, StoreError> {
    let txn = store.read()?;
    let table = txn
        .open_table(JOBS)
        .map_err(StoreError::redb("open jobs table"))?;
    let value = table.get(job).map_err(StoreError::redb("read job"))?;
    value.map(|v| decode(job, v.value())).transpose()
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
        let record = decode(key.value(), value.value())?;
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
    let txn = store.write()?;
    let mut marked = 0;
    {
        let mut table = txn
            .open_table(JOBS)
            .map_err(StoreError::redb("open jobs table"))?;
        let mut running = Vec::new();
        for entry in table.iter().map_err(StoreError::redb("list jobs"))? {
            let (key, value) = entry.map_err(StoreError::redb("list jobs"))?;
            let record = decode(key.value(), value.value())?;
            if record.outcome == "running" {
                running.push(record);
            }
        }
        for mut record in running {
            record.outcome = "interrupted".into();
            record.message = Some("the server stopped without a shutdown while this job ran; records reported as committed are stored".into());
            let value = serde_json::to_vec(&record).expect("a job record always serializes");
            table
                .insert(record.job.as_str(), value.as_slice())
                .map_err(StoreError::redb("write job"))?;
            marked += 1;
        }
    }
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(marked)
}

fn decode(key: &str, bytes: &[u8]) -> Result<JobRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
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
}
