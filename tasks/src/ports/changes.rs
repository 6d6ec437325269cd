//! What each job changed in the `ports` table, so that a user can see how a port changed,
//! which upload changed it, and undo a bad upload.
//!
//! Two tables, written in the same transaction as the ports themselves:
//! - [`VERSIONS`], `(code, job) -> Version`: the version of port `code` that `job` replaced
//!   (updated or, for a revert, removed), with who ran the job and when. An `unchanged` record
//!   and an insert write none. Job ids sort by start time, so a port's versions are in the
//!   order jobs started; [`read_history`] walks them newest first.
//! - [`JOB_CHANGES`], `(job, part) -> codes`: the ports `job` changed, one entry per
//!   transaction it wrote (each code marked inserted or replaced), so that [`revert`] finds
//!   them without scanning the history, and an import of new ports costs one entry per commit,
//!   not one per port.
//!
//! A job that writes one key twice keeps the version it replaced first: reverting it restores
//! what was there before the job.

use super::codec;
use super::{Port, PORTS};
use crate::reads::{Page, PageRequest, ReadError};
use crate::store::{Change, Kind, PgFuture, PgTransaction, Store, StoreError, Sync};
use crate::table::{Encoded, Stored};
use crate::task::{Context, JobRef, RevertError};
use crate::time::{ms_of, now_ms, rfc3339};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde_json::{json, Value};
use std::ops::Bound;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The versions jobs replaced: `(code, job) -> Version`.
pub(crate) const VERSIONS: TableDefinition<(&str, &str), StoredVersion> =
    TableDefinition::new("ports_history");

/// The ports each job changed: `(job, part) -> codes` (see [`ChangedCodes`]).
pub(crate) const JOB_CHANGES: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("ports_job_changes");

/// Later changes a revert's report lists by code (it counts them all).
const LEFT_ALONE_LISTED: usize = 100;

/// A version of a port that a job replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// When the job replaced it (milliseconds since the epoch).
    pub time_ms: u64,
    /// Who ran the job (its token's `sub`).
    pub sub: String,
    /// The port's binary form before the job ([`codec`]).
    pub replaced: Vec<u8>,
}

/// A [`Version`] as the store holds it.
pub type StoredVersion<'a> = Stored<'a, Version>;

impl Version {
    /// Its stored form: the time (8 bytes, little-endian), the sub's length (2) and bytes,
    /// then the replaced port's binary form.
    fn encode(time_ms: u64, sub: &str, replaced: &[u8]) -> Vec<u8> {
        let sub = &sub.as_bytes()[..sub.len().min(usize::from(u16::MAX))];
        let mut bytes = Vec::with_capacity(10 + sub.len() + replaced.len());
        bytes.extend_from_slice(&time_ms.to_le_bytes());
        bytes.extend_from_slice(&(sub.len() as u16).to_le_bytes());
        bytes.extend_from_slice(sub);
        bytes.extend_from_slice(replaced);
        bytes
    }

    /// The replaced port.
    pub fn port(&self) -> Result<Port, String> {
        codec::decode(&self.replaced).map_err(|e| e.to_string())
    }
}

impl Encoded for Version {
    const TYPE_NAME: &'static str = "edge::ports::Version";

    fn decode(bytes: &[u8]) -> Result<Version, String> {
        let short = || "a port version shorter than its header".to_owned();
        let time = bytes.get(..8).ok_or_else(short)?;
        let len = bytes.get(8..10).ok_or_else(short)?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let sub = bytes.get(10..10 + len).ok_or_else(short)?;
        Ok(Version {
            time_ms: u64::from_le_bytes(time.try_into().map_err(|_| short())?),
            sub: String::from_utf8_lossy(sub).into_owned(),
            replaced: bytes[10 + len..].to_vec(),
        })
    }
}

/// The start of a [`Version`]'s stored form, before the replaced port's bytes (what the
/// PostgreSQL store prepends to each replaced value).
pub(super) fn version_prefix(time_ms: u64, sub: &str) -> Vec<u8> {
    Version::encode(time_ms, sub, &[])
}

/// A [`JOB_CHANGES`] entry being made: codes in [`ChangedCodes`] form.
#[derive(Debug, Default)]
pub(super) struct CodeList(Vec<u8>);

impl CodeList {
    /// Adds `code`, which the job inserted (`new`) or replaced.
    pub(super) fn push(&mut self, code: &str, new: bool) -> Result<(), StoreError> {
        let len = u8::try_from(code.len()).map_err(|_| StoreError::Corrupt {
            key: code.to_owned(),
            message: "a port key longer than 255 bytes".into(),
        })?;
        self.0
            .extend_from_slice(&[if new { b'I' } else { b'R' }, len]);
        self.0.extend_from_slice(code.as_bytes());
        Ok(())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The codes of one [`JOB_CHANGES`] entry, back to back: for each, a mark (`I` inserted, `R`
/// replaced: a [`VERSIONS`] entry holds what it was), its length (one byte: keys are at most
/// 64 bytes) and its bytes.
struct ChangedCodes<'a>(&'a [u8]);

impl<'a> Iterator for ChangedCodes<'a> {
    /// The code, and whether the job inserted it.
    type Item = Result<(&'a str, bool), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&[mark, len], rest) = self.0.split_first_chunk::<2>()?;
        let corrupt = |message: &str| StoreError::Corrupt {
            key: "ports_job_changes".into(),
            message: message.into(),
        };
        let Some((code, rest)) = rest.split_at_checked(usize::from(len)) else {
            self.0 = &[];
            return Some(Err(corrupt("a code runs past the entry's end")));
        };
        self.0 = rest;
        Some(match std::str::from_utf8(code) {
            Ok(code) => Ok((code, mark == b'I')),
            Err(_) => Err(corrupt("a code that is not UTF-8")),
        })
    }
}

/// Where a job's changes are recorded while one transaction of it is written: the history,
/// and the codes it changed, kept until [`Recorder::finish`] writes them as one entry.
pub(super) struct Recorder<'txn> {
    job: &'txn JobRef,
    time_ms: u64,
    versions: redb::Table<'txn, (&'static str, &'static str), StoredVersion<'static>>,
    changes: redb::Table<'txn, (&'static str, u64), &'static [u8]>,
    /// The codes changed in this transaction ([`ChangedCodes`]).
    codes: Vec<u8>,
    /// Where the last code in `codes` starts (a batch is sorted: a key written twice in it
    /// comes twice in a row, and is listed once).
    last: Option<usize>,
}

impl<'txn> Recorder<'txn> {
    /// Opens the tables in `txn` for `job`'s changes, made now.
    pub(super) fn open(txn: &'txn WriteTransaction, job: &'txn JobRef) -> Result<Self, StoreError> {
        Ok(Recorder {
            job,
            time_ms: now_ms(),
            versions: txn
                .open_table(VERSIONS)
                .map_err(StoreError::redb("open ports history"))?,
            changes: txn
                .open_table(JOB_CHANGES)
                .map_err(StoreError::redb("open ports job changes"))?,
            codes: Vec::new(),
            last: None,
        })
    }

    /// Records that the job wrote `code`, which held `replaced` before (`None`: it was new).
    pub(super) fn changed(
        &mut self,
        code: &str,
        replaced: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let len = u8::try_from(code.len()).map_err(|_| StoreError::Corrupt {
            key: code.to_owned(),
            message: "a port key longer than 255 bytes".into(),
        })?;
        // Written again in this transaction (a batch is sorted, so right after): its first
        // write is recorded, with what it replaced or that it was new.
        if self
            .last
            .is_some_and(|at| self.codes.get(at + 2..) == Some(code.as_bytes()))
        {
            return Ok(());
        }
        self.last = Some(self.codes.len());
        self.codes
            .extend_from_slice(&[if replaced.is_some() { b'R' } else { b'I' }, len]);
        self.codes.extend_from_slice(code.as_bytes());
        let Some(replaced) = replaced else {
            return Ok(());
        };
        let key = (code, self.job.id.as_str());
        let version = Version::encode(self.time_ms, &self.job.sub, replaced);
        let first = self
            .versions
            .insert(key, StoredVersion::from_encoded(&version))
            .map_err(StoreError::redb("record a port version"))?
            .map(|earlier| earlier.value().bytes().to_vec());
        // A key the job wrote in an earlier transaction keeps the version it replaced first.
        if let Some(first) = first {
            self.versions
                .insert(key, StoredVersion::from_encoded(&first))
                .map_err(StoreError::redb("record a port version"))?;
        }
        Ok(())
    }

    /// Writes the codes changed in this transaction as the job's next [`JOB_CHANGES`] entry.
    pub(super) fn finish(mut self) -> Result<(), StoreError> {
        if self.codes.is_empty() {
            return Ok(());
        }
        let job = self.job.id.as_str();
        let last = self
            .changes
            .range::<(&str, u64)>((job, 0)..=(job, u64::MAX))
            .map_err(StoreError::redb("read ports job changes"))?
            .next_back()
            .transpose()
            .map_err(StoreError::redb("read ports job changes"))?
            .map(|(key, _)| key.value().1);
        let part = last.map_or(0, |last| last + 1);
        self.changes
            .insert((job, part), self.codes.as_slice())
            .map_err(StoreError::redb("record port changes"))?;
        Ok(())
    }
}

/// `GET /v1/ports/{code}/history?limit=&after=`: the versions jobs replaced, newest first,
/// as `{"job","sub","time","was","replaced"}` (`was`: the replaced port's name).
pub(super) fn read_history(
    context: &Context,
    code: &str,
    request: &PageRequest<'_>,
) -> Result<Page, ReadError> {
    if let Kind::Postgres(pg) = context.store.kind() {
        let rows = super::postgres::history_page(pg, code, request.after, request.limit + 1)?;
        return history_items(context, code, request.limit, rows);
    }
    let txn = context.store.read()?;
    let versions = txn
        .open_table(VERSIONS)
        .map_err(StoreError::redb("open ports history"))?;
    let upper = match request.after {
        Some(after) => Bound::Excluded((code, after)),
        None => Bound::Included((code, "\u{10ffff}")),
    };
    let range = versions
        .range::<(&str, &str)>((Bound::Included((code, "")), upper))
        .map_err(StoreError::redb("read ports history"))?;
    let mut rows = Vec::new();
    for entry in range.rev().take(request.limit + 1) {
        let (key, value) = entry.map_err(StoreError::redb("read ports history"))?;
        rows.push((key.value().1.to_owned(), value.value().bytes().to_vec()));
    }
    history_items(context, code, request.limit, rows)
}

/// [`read_history`]'s page from `(job, stored version)` rows, newest first (one more than a
/// page when more follow).
fn history_items(
    context: &Context,
    code: &str,
    limit: usize,
    rows: Vec<(String, Vec<u8>)>,
) -> Result<Page, ReadError> {
    let mut items = Vec::new();
    let mut next = None;
    for (job, bytes) in rows {
        if items.len() == limit {
            next = items
                .last()
                .and_then(|item: &Value| item["job"].as_str().map(str::to_owned));
            break;
        }
        let version = Version::decode(&bytes).map_err(|message| StoreError::Corrupt {
            key: format!("{code} (history of job {job})"),
            message,
        })?;
        let replaced = version.port().map_err(|message| StoreError::Corrupt {
            key: format!("{code} (history of job {job})"),
            message,
        })?;
        items.push(json!({
            "job": job,
            "sub": version.sub,
            "time": rfc3339(version.time_ms),
            "was": replaced.name,
            "replaced": replaced,
        }));
    }
    if items.is_empty() && super::get(&context.store, code)?.is_none() {
        return Err(ReadError::NotFound(format!(
            "no port `{code}` and no history of one"
        )));
    }
    Ok(Page { items, next })
}

/// Undoes job `job` (see [`crate::task::Plugin::revert`]) as `by`: every port it inserted is
/// removed and every port it updated gets back the version it replaced, unless a later job
/// changed that port again: those are left alone and listed. The revert is itself recorded as
/// `by`'s changes, so it can be reverted in turn. Runs through the store's writer, one
/// transaction per transaction of the job.
pub(super) fn revert(context: &Context, job: &str, by: &JobRef) -> Result<Value, RevertError> {
    let store = &context.store;
    let mut report = Reverted::default();
    let mut part = 0;
    while let Some(codes) = changed_by(store, job, part)? {
        let done = store
            .submit(
                RevertPart {
                    job: job.to_owned(),
                    by: by.clone(),
                    codes,
                },
                Sync::Now,
            )
            .wait()?;
        report.add(done);
        part += 1;
    }
    if part == 0 {
        return Err(RevertError::NothingToRevert(format!(
            "job `{job}` changed no port (no record of it in the ports history)"
        )));
    }
    Ok(json!({
        "job": job,
        "reverted_by": by.id,
        "restored": report.restored,
        "removed": report.removed,
        "left_alone": report.left_alone,
        "left_alone_codes": report.listed,
        "pruned": report.pruned,
    }))
}

/// The [`JOB_CHANGES`] entry `part` of job `job`, if it has one.
fn changed_by(store: &Store, job: &str, part: u64) -> Result<Option<Vec<u8>>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return super::postgres::changed_by(pg, job, part);
    }
    let txn = store.read()?;
    let changes = txn
        .open_table(JOB_CHANGES)
        .map_err(StoreError::redb("open ports job changes"))?;
    let codes = changes
        .get((job, part))
        .map_err(StoreError::redb("read ports job changes"))?;
    Ok(codes.map(|codes| codes.value().to_vec()))
}

/// What a revert did.
#[derive(Debug, Default, Clone, PartialEq)]
struct Reverted {
    restored: u64,
    /// Ports the job replaced whose replaced version was pruned: left as they are.
    pruned: u64,
    removed: u64,
    left_alone: u64,
    /// The first [`LEFT_ALONE_LISTED`] ports left alone: `{"code","changed_by":[jobs]}`.
    listed: Vec<Value>,
}

impl Reverted {
    fn add(&mut self, part: Reverted) {
        self.restored += part.restored;
        self.pruned += part.pruned;
        self.removed += part.removed;
        self.left_alone += part.left_alone;
        let room = LEFT_ALONE_LISTED.saturating_sub(self.listed.len());
        self.listed.extend(part.listed.into_iter().take(room));
    }
}

/// One transaction of a revert: the codes of one [`JOB_CHANGES`] entry of `job`.
struct RevertPart {
    job: String,
    by: JobRef,
    codes: Vec<u8>,
}

impl Change for RevertPart {
    type Output = Reverted;

    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, Reverted> {
        Box::pin(self.apply_pg(txn))
    }

    fn apply(&mut self, txn: &WriteTransaction) -> Result<Reverted, StoreError> {
        let mut done = Reverted::default();
        let mut recorder = Recorder::open(txn, &self.by)?;
        let mut ports = txn
            .open_table(PORTS)
            .map_err(StoreError::redb("open ports table"))?;
        for changed in ChangedCodes(&self.codes) {
            let (code, inserted) = changed?;
            let (later, left_by_job) = later_jobs(&recorder.versions, code, &self.job)?;
            if later == [self.by.id.as_str()] {
                // Written twice by the job: undone at its first change, in this revert.
                continue;
            }
            // What the job wrote is what the first later job replaced; a port that holds it
            // again (the later changes were reverted) is the job's to undo.
            let current = ports
                .get(code)
                .map_err(StoreError::redb("read port"))?
                .map(|port| port.value().bytes().to_vec());
            if left_by_job.is_some_and(|left| current.as_deref() != Some(left.as_slice())) {
                done.left_alone += 1;
                if done.listed.len() < LEFT_ALONE_LISTED {
                    done.listed.push(json!({"code": code, "changed_by": later}));
                }
                continue;
            }
            let replaced = match inserted {
                true => None,
                false => {
                    let version = recorder
                        .versions
                        .get((code, self.job.as_str()))
                        .map_err(StoreError::redb("read ports history"))?
                        .map(|v| v.value().decode(code))
                        .transpose()?;
                    if version.is_none() {
                        // The version it replaced was pruned ([ports.history_keep]): there is
                        // nothing to restore, and removing the port would lose it.
                        done.pruned += 1;
                        continue;
                    }
                    version
                }
            };
            match replaced {
                Some(version) => {
                    let port = super::StoredPort::from_encoded(&version.replaced);
                    ports
                        .insert(code, port)
                        .map_err(StoreError::redb("restore port"))?;
                    done.restored += 1;
                }
                None => {
                    ports
                        .remove(code)
                        .map_err(StoreError::redb("remove port"))?;
                    done.removed += 1;
                }
            }
            recorder.changed(code, current.as_deref())?;
        }
        recorder.finish()?;
        Ok(done)
    }
}

impl RevertPart {
    /// [`Change::apply_postgres`] for a revert: the same steps as with redb, a few statements
    /// per code, the port's row locked while it is judged and restored.
    async fn apply_pg(&self, txn: &PgTransaction<'_>) -> Result<Reverted, StoreError> {
        use super::postgres as pg;
        let mut done = Reverted::default();
        let time_ms = now_ms();
        let prefix = version_prefix(time_ms, &self.by.sub);
        let mut codes = CodeList::default();
        let mut recorded = std::collections::HashSet::new();
        for changed in ChangedCodes(&self.codes) {
            let (code, inserted) = changed?;
            let (later, left_by_job) = pg::later_jobs(txn, code, &self.job).await?;
            if later == [self.by.id.as_str()] {
                continue;
            }
            let current = pg::lock_port(txn, code).await?;
            if left_by_job.is_some_and(|left| current.as_deref() != Some(left.as_slice())) {
                done.left_alone += 1;
                if done.listed.len() < LEFT_ALONE_LISTED {
                    done.listed.push(json!({"code": code, "changed_by": later}));
                }
                continue;
            }
            let replaced =
                match inserted {
                    true => None,
                    false => match pg::version(txn, code, &self.job).await? {
                        Some(bytes) => Some(Version::decode(&bytes).map_err(|message| {
                            StoreError::Corrupt {
                                key: code.to_owned(),
                                message,
                            }
                        })?),
                        None => {
                            done.pruned += 1;
                            continue;
                        }
                    },
                };
            match replaced {
                Some(version) => {
                    pg::put_port(txn, code, &version.replaced).await?;
                    done.restored += 1;
                }
                None => {
                    pg::remove_port(txn, code).await?;
                    done.removed += 1;
                }
            }
            if recorded.insert(code.to_owned()) {
                codes.push(code, current.is_none())?;
                if let Some(current) = &current {
                    pg::record_version(txn, code, &self.by.id, time_ms, &prefix, current).await?;
                }
            }
        }
        if !codes.is_empty() {
            pg::record_codes(txn, &self.by.id, codes.bytes()).await?;
        }
        Ok(done)
    }
}

/// How many port changes every job's change lists hold, together (inserts and replacements;
/// a port written twice in one commit counts once): the crash test checks it against the
/// ports a sequence of imports stored, since both are written in one transaction.
pub fn count_changes(store: &Store) -> Result<u64, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        let mut count = 0;
        let mut after: Option<(String, i64)> = None;
        loop {
            let page = super::postgres::change_lists(pg, after.clone())?;
            let Some((job, part, _)) = page.last() else {
                return Ok(count);
            };
            after = Some((job.clone(), *part));
            for (_, _, codes) in &page {
                for code in ChangedCodes(codes) {
                    code?;
                    count += 1;
                }
            }
        }
    }
    let txn = store.read()?;
    let table = txn
        .open_table(JOB_CHANGES)
        .map_err(StoreError::redb("open ports job changes"))?;
    let mut count = 0;
    for entry in table
        .iter()
        .map_err(StoreError::redb("read ports job changes"))?
    {
        let (_, codes) = entry.map_err(StoreError::redb("read ports job changes"))?;
        for code in ChangedCodes(codes.value()) {
            code?;
            count += 1;
        }
    }
    Ok(count)
}

/// Entries one prune transaction deletes at most.
pub const PRUNE_BATCH: usize = 1000;

/// Prunes the history beyond `[ports.history_keep]` (the newest `versions` per port, those
/// replaced within `days`) and the change lists of jobs the job history no longer has (a job
/// without a record cannot be reverted), [`PRUNE_BATCH`] entries per transaction.
pub(super) fn prune(
    context: &Context,
    now: SystemTime,
    stop: &dyn Fn() -> bool,
) -> Result<u64, StoreError> {
    let keep = context.limits.ports_history;
    let store = &context.store;
    let cutoff_ms = (keep.days > 0).then(|| {
        let age = Duration::from_secs(keep.days.saturating_mul(86_400));
        ms_of(now.checked_sub(age).unwrap_or(UNIX_EPOCH))
    });
    if let Kind::Postgres(pg) = store.kind() {
        let mut deleted = 0;
        while (keep.versions > 0 || cutoff_ms.is_some()) && !stop() {
            let gone = super::postgres::prune_versions(pg, keep.versions, cutoff_ms, PRUNE_BATCH)?;
            deleted += gone;
            if gone < PRUNE_BATCH as u64 {
                break;
            }
        }
        while !stop() {
            let gone = super::postgres::prune_orphaned_changes(pg, PRUNE_BATCH)?;
            deleted += gone;
            if gone < PRUNE_BATCH as u64 {
                break;
            }
        }
        return Ok(deleted);
    }
    let mut deleted = 0;
    let mut after: Option<String> = None;
    while (keep.versions > 0 || cutoff_ms.is_some()) && !stop() {
        let (doomed, next) = doomed_versions(store, after.as_deref(), keep.versions, cutoff_ms)?;
        if !doomed.is_empty() {
            deleted += store.submit(Delete::Versions(doomed), Sync::Now).wait()?;
        }
        match next {
            Some(code) => after = Some(code),
            None => break,
        }
    }
    let mut after: Option<String> = None;
    while !stop() {
        let (doomed, next) = orphaned_changes(store, after.as_deref())?;
        if !doomed.is_empty() {
            deleted += store.submit(Delete::Changes(doomed), Sync::Now).wait()?;
        }
        match next {
            Some(job) => after = Some(job),
            None => break,
        }
    }
    Ok(deleted)
}

/// The versions past the retention among the ports after `after`, whole ports at a time,
/// until about [`PRUNE_BATCH`]; and the last port looked at when more follow.
#[allow(clippy::type_complexity)]
fn doomed_versions(
    store: &Store,
    after: Option<&str>,
    versions: u64,
    cutoff_ms: Option<u64>,
) -> Result<(Vec<(String, String)>, Option<String>), StoreError> {
    let txn = store.read()?;
    let table = txn
        .open_table(VERSIONS)
        .map_err(StoreError::redb("open ports history"))?;
    let lower = match after {
        Some(after) => Bound::Excluded((after, "\u{10ffff}")),
        None => Bound::Unbounded,
    };
    let mut doomed = Vec::new();
    // One port's versions, oldest first: (job, time).
    let mut group: Vec<(String, u64)> = Vec::new();
    let mut code = String::new();
    let judge = |code: &str, group: &mut Vec<(String, u64)>, doomed: &mut Vec<(String, String)>| {
        let over = match versions {
            0 => 0,
            keep => group
                .len()
                .saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX)),
        };
        for (i, (job, time)) in group.drain(..).enumerate() {
            if i < over || cutoff_ms.is_some_and(|cutoff| time < cutoff) {
                doomed.push((code.to_owned(), job));
            }
        }
    };
    let range = table
        .range::<(&str, &str)>((lower, Bound::Unbounded))
        .map_err(StoreError::redb("read ports history"))?;
    for entry in range {
        let (key, value) = entry.map_err(StoreError::redb("read ports history"))?;
        let (entry_code, job) = key.value();
        if entry_code != code {
            judge(&code, &mut group, &mut doomed);
            if doomed.len() >= PRUNE_BATCH {
                return Ok((doomed, Some(code)));
            }
            code = entry_code.to_owned();
        }
        let time = value.value().decode(entry_code)?.time_ms;
        group.push((job.to_owned(), time));
    }
    judge(&code, &mut group, &mut doomed);
    Ok((doomed, None))
}

/// The change lists of jobs after `after` that the job history no longer has, until about
/// [`PRUNE_BATCH`]; and the last job looked at when more follow.
#[allow(clippy::type_complexity)]
fn orphaned_changes(
    store: &Store,
    after: Option<&str>,
) -> Result<(Vec<(String, u64)>, Option<String>), StoreError> {
    let txn = store.read()?;
    let table = txn
        .open_table(JOB_CHANGES)
        .map_err(StoreError::redb("open ports job changes"))?;
    let lower = match after {
        Some(after) => Bound::Excluded((after, u64::MAX)),
        None => Bound::Unbounded,
    };
    let mut doomed = Vec::new();
    let mut job = String::new();
    let mut orphaned = false;
    let range = table
        .range::<(&str, u64)>((lower, Bound::Unbounded))
        .map_err(StoreError::redb("read ports job changes"))?;
    for entry in range {
        let (key, _) = entry.map_err(StoreError::redb("read ports job changes"))?;
        let (entry_job, part) = key.value();
        if entry_job != job {
            if doomed.len() >= PRUNE_BATCH {
                return Ok((doomed, Some(job)));
            }
            job = entry_job.to_owned();
            orphaned = crate::history::get(store, &job)?.is_none();
        }
        if orphaned {
            doomed.push((job.clone(), part));
        }
    }
    Ok((doomed, None))
}

/// Entries a prune deletes in one transaction.
enum Delete {
    /// History entries `(code, job)`.
    Versions(Vec<(String, String)>),
    /// Change lists `(job, part)`.
    Changes(Vec<(String, u64)>),
}

impl Change for Delete {
    type Output = u64;

    fn apply(&mut self, txn: &WriteTransaction) -> Result<u64, StoreError> {
        let mut deleted = 0;
        match self {
            Delete::Versions(keys) => {
                let mut table = txn
                    .open_table(VERSIONS)
                    .map_err(StoreError::redb("open ports history"))?;
                for (code, job) in keys.iter() {
                    let gone = table
                        .remove((code.as_str(), job.as_str()))
                        .map_err(StoreError::redb("prune ports history"))?;
                    deleted += u64::from(gone.is_some());
                }
            }
            Delete::Changes(keys) => {
                let mut table = txn
                    .open_table(JOB_CHANGES)
                    .map_err(StoreError::redb("open ports job changes"))?;
                for (job, part) in keys.iter() {
                    let gone = table
                        .remove((job.as_str(), *part))
                        .map_err(StoreError::redb("prune ports job changes"))?;
                    deleted += u64::from(gone.is_some());
                }
            }
        }
        Ok(deleted)
    }
}

/// The jobs after `job` that replaced a version of `code`, and what the first of them
/// replaced: the port as `job` left it (`None`: no later job changed it).
fn later_jobs(
    versions: &redb::Table<'_, (&'static str, &'static str), StoredVersion<'static>>,
    code: &str,
    job: &str,
) -> Result<(Vec<String>, Option<Vec<u8>>), StoreError> {
    let range = versions
        .range::<(&str, &str)>((
            Bound::Excluded((code, job)),
            Bound::Included((code, "\u{10ffff}")),
        ))
        .map_err(StoreError::redb("read ports history"))?;
    let mut jobs = Vec::new();
    let mut left_by_job = None;
    for entry in range {
        let (key, value) = entry.map_err(StoreError::redb("read ports history"))?;
        if left_by_job.is_none() {
            left_by_job = Some(value.value().decode(code)?.replaced);
        }
        jobs.push(key.value().1.to_owned());
    }
    Ok((jobs, left_by_job))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::record::{Body, Record};
    use crate::store::StoreOptions;

    fn job(id: &str, sub: &str) -> JobRef {
        JobRef {
            id: id.into(),
            sub: sub.into(),
        }
    }

    /// Runs job `id` of `sub` storing `(code, name)` ports.
    fn upload(store: &Store, id: &str, sub: &str, ports: &[(&str, &str)]) {
        let context = Context::new(store.clone()).for_job(job(id, sub));
        let mut task = (super::super::PLUGIN.create)(&serde_json::Map::new(), &context).unwrap();
        for (i, (code, name)) in ports.iter().enumerate() {
            let body = format!(r#"{{"name":"{name}"}}"#);
            let record = Record {
                index: i as u64,
                offset: 0,
                end: 0,
                key: Some(code),
                body: Body::Json(body.as_bytes()),
            };
            task.record(&record).unwrap();
        }
        task.commit().unwrap();
    }

    fn name(store: &Store, code: &str) -> Option<String> {
        super::super::get(store, code).unwrap().map(|p| p.name)
    }

    /// A page of `code`'s history through the plugin's read endpoint.
    fn page(store: &Store, code: &str, params: &[(&str, &str)]) -> Result<Value, ReadError> {
        let reads = super::super::PLUGIN.reads.unwrap();
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        reads.read_history(&Context::new(store.clone()), code, &params)
    }

    fn history(store: &Store, code: &str) -> Vec<(String, String, String)> {
        page(store, code, &[("limit", "100")]).unwrap()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                let field = |f: &str| item[f].as_str().unwrap().to_owned();
                (field("job"), field("sub"), field("was"))
            })
            .collect()
    }

    #[test]
    fn updates_keep_what_they_replaced_and_a_revert_undoes_a_job_but_not_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &StoreOptions::default()).unwrap();
        upload(
            &store,
            "j1",
            "alice",
            &[("X", "x1"), ("Y", "y1"), ("Z", "z1")],
        );
        // Job 2 updates X (twice: the first replaced version is kept) and Y, inserts W and
        // leaves Z as it was.
        upload(
            &store,
            "j2",
            "bob",
            &[
                ("X", "x2"),
                ("Y", "y2"),
                ("Z", "z1"),
                ("W", "w2"),
                ("X", "x2b"),
            ],
        );
        upload(&store, "j3", "carol", &[("Y", "y3")]);
        // The same file again adds nothing.
        upload(&store, "j4", "carol", &[("Y", "y3")]);

        assert_eq!(
            history(&store, "X"),
            [("j2".into(), "bob".into(), "x1".into())]
        );
        assert_eq!(
            history(&store, "Y"),
            [
                ("j3".into(), "carol".into(), "y2".into()),
                ("j2".into(), "bob".into(), "y1".into())
            ]
        );
        assert!(
            history(&store, "Z").is_empty(),
            "unchanged writes no history"
        );
        assert!(
            history(&store, "W").is_empty(),
            "an insert replaced nothing"
        );

        let context = Context::new(store.clone());
        let report = revert(&context, "j2", &job("r1", "admin")).unwrap();
        assert_eq!(report["restored"], 1, "{report}");
        assert_eq!(report["removed"], 1, "{report}");
        assert_eq!(report["left_alone"], 1, "{report}");
        assert_eq!(
            report["left_alone_codes"],
            json!([{"code": "Y", "changed_by": ["j3"]}])
        );
        assert_eq!(name(&store, "X").as_deref(), Some("x1"));
        assert_eq!(name(&store, "W"), None);
        assert_eq!(
            name(&store, "Y").as_deref(),
            Some("y3"),
            "a later change stays"
        );
        assert_eq!(name(&store, "Z").as_deref(), Some("z1"));
        // The revert is a change like any other: in the history, and revertible.
        assert_eq!(
            history(&store, "X")[0],
            ("r1".into(), "admin".into(), "x2b".into())
        );
        assert_eq!(
            history(&store, "W"),
            [("r1".into(), "admin".into(), "w2".into())]
        );
        revert(&context, "r1", &job("r2", "admin")).unwrap();
        assert_eq!(name(&store, "X").as_deref(), Some("x2b"));
        assert_eq!(name(&store, "W").as_deref(), Some("w2"));

        assert!(matches!(
            revert(&context, "nonesuch", &job("r3", "admin")),
            Err(RevertError::NothingToRevert(_))
        ));
    }

    #[test]
    fn a_job_that_writes_a_key_in_two_commits_is_undone_to_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &StoreOptions::default()).unwrap();
        upload(&store, "j1", "alice", &[("Y", "y1")]);
        let context = Context::new(store.clone()).for_job(job("j2", "bob"));
        let mut task = (super::super::PLUGIN.create)(&serde_json::Map::new(), &context).unwrap();
        for (code, name) in [
            ("X", "x-first"),
            ("Y", "y-first"),
            ("X", "x-again"),
            ("Y", "y-again"),
        ] {
            let body = format!(r#"{{"name":"{name}"}}"#);
            let record = Record {
                index: 0,
                offset: 0,
                end: 0,
                key: Some(code),
                body: Body::Json(body.as_bytes()),
            };
            task.record(&record).unwrap();
            // Each record in a commit of its own: the job's changes span four transactions.
            task.commit().unwrap();
        }
        assert_eq!(name(&store, "X").as_deref(), Some("x-again"));
        assert_eq!(
            history(&store, "Y"),
            [("j2".into(), "bob".into(), "y1".into())]
        );

        let report = revert(&Context::new(store.clone()), "j2", &job("r1", "admin")).unwrap();
        assert_eq!(
            (
                &report["removed"],
                &report["restored"],
                &report["left_alone"]
            ),
            (&json!(1), &json!(1), &json!(0)),
            "{report}"
        );
        assert_eq!(
            name(&store, "X"),
            None,
            "inserted by the job, then updated by it"
        );
        assert_eq!(name(&store, "Y").as_deref(), Some("y1"));
    }

    /// Runs job `id` as [`upload`] does, with a record in the job history.
    fn recorded_upload(store: &Store, id: &str, ports: &[(&str, &str)]) {
        let record = crate::history::JobRecord::start(id, Some("me"), "ports", "h3", None, None);
        crate::history::submit(store, &record, Sync::Now)
            .wait()
            .unwrap();
        upload(store, id, "me", ports);
    }

    fn count<K: redb::Key + 'static, V: redb::Value + 'static>(
        store: &Store,
        table: TableDefinition<K, V>,
    ) -> u64 {
        use redb::ReadableTableMetadata;
        store
            .read()
            .unwrap()
            .open_table(table)
            .unwrap()
            .len()
            .unwrap()
    }

    #[test]
    fn pruning_keeps_the_newest_versions_and_the_changes_of_jobs_still_on_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &StoreOptions::default()).unwrap();
        for i in 1..=5 {
            recorded_upload(
                &store,
                &format!("j{i}"),
                &[("X", &format!("x{i}")), ("Y", "y")],
            );
        }
        // A job the job history no longer has (pruned by jobs.history_keep_*).
        upload(&store, "j6", "me", &[("Z", "z")]);
        assert_eq!(count(&store, VERSIONS), 4);
        assert_eq!(count(&store, JOB_CHANGES), 6);

        let mut context = Context::new(store.clone());
        context.limits = context.limits.with_ports_history(crate::task::HistoryKeep {
            versions: 2,
            days: 0,
        });
        let deleted = prune(&context, SystemTime::now(), &|| false).unwrap();
        assert_eq!(deleted, 2 + 1, "two versions, the orphaned change list");
        let jobs: Vec<String> = history(&store, "X").into_iter().map(|v| v.0).collect();
        assert_eq!(jobs, ["j5", "j4"]);
        assert_eq!(count(&store, JOB_CHANGES), 5);
        assert_eq!(prune(&context, SystemTime::now(), &|| false).unwrap(), 0);

        // By age: a day later, with one day kept, every version goes.
        context.limits = context.limits.with_ports_history(crate::task::HistoryKeep {
            versions: 0,
            days: 1,
        });
        let later = SystemTime::now() + Duration::from_secs(2 * 86_400);
        assert_eq!(prune(&context, later, &|| false).unwrap(), 2);
        assert!(history(&store, "X").is_empty());

        // A job whose replaced version was pruned leaves the port as it is.
        let report = revert(&context, "j5", &job("r1", "admin")).unwrap();
        assert_eq!(
            (&report["pruned"], &report["restored"]),
            (&json!(1), &json!(0)),
            "{report}"
        );
        assert_eq!(name(&store, "X").as_deref(), Some("x5"));
    }

    #[test]
    fn a_key_written_twice_in_one_commit_and_changed_later_is_left_alone_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &StoreOptions::default()).unwrap();
        upload(&store, "j1", "me", &[("X", "x1")]);
        upload(&store, "j2", "me", &[("X", "x2"), ("X", "x2b")]);
        upload(&store, "j3", "me", &[("X", "x3")]);
        let report = revert(&Context::new(store.clone()), "j2", &job("r1", "me")).unwrap();
        assert_eq!(report["left_alone"], 1, "{report}");
        assert_eq!(report["restored"], 0, "{report}");
        assert_eq!(name(&store, "X").as_deref(), Some("x3"));
    }

    #[test]
    fn a_history_is_paged_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb"), &StoreOptions::default()).unwrap();
        for i in 0..5 {
            upload(&store, &format!("j{i}"), "me", &[("X", &format!("v{i}"))]);
        }
        let jobs = |p: &Value| -> Vec<String> {
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["job"].as_str().unwrap().to_owned())
                .collect()
        };
        let first = page(&store, "X", &[("limit", "2")]).unwrap();
        assert_eq!(jobs(&first), ["j4", "j3"]);
        assert_eq!(first["next"], "j3");
        let second = page(&store, "X", &[("limit", "2"), ("after", "j3")]).unwrap();
        assert_eq!(jobs(&second), ["j2", "j1"]);
        let third = page(&store, "X", &[("limit", "2"), ("after", "j1")]).unwrap();
        assert!(jobs(&third).is_empty() && third["next"].is_null());
        assert!(matches!(
            page(&store, "NOPE", &[]),
            Err(ReadError::NotFound(_))
        ));
        assert!(matches!(
            page(&store, "X", &[("country", "x")]),
            Err(ReadError::BadParams(_))
        ));
    }
}
