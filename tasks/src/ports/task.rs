//! One `ports` job: records checked and encoded into a batch as they arrive; the batch sorted
//! and handed to the store's writer at each commit, and counted once that commit returned.

use super::arriving::ArrivingPort;
use super::changes::Recorder;
use super::csv::csv_to_json;
use super::model::{validate, Port};
use super::{codec, StoredPort, MAX_KEY_BYTES, PORTS};
use crate::record::{Body, Record, Rejection};
use crate::resume::Save;
use crate::store::{
    Change, Interrupt, Part, PgFuture, PgTransaction, Store, StoreError, Sync, Ticket,
};
use crate::task::{Context, JobRef, ParamError, Task, TaskError};
use edge_proto::{ErrorCode, Summary};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

pub(super) fn create(
    params: &Map<String, Value>,
    context: &Context,
) -> Result<Box<dyn Task>, ParamError> {
    if let Some(name) = params.keys().next() {
        return Err(ParamError(format!(
            "task `ports` takes no parameters (got `{name}`)"
        )));
    }
    Ok(Box::new(PortsTask {
        store: context.store.clone(),
        job: context.job.clone().map(Arc::new),
        batch: Batch::default(),
        in_flight: None,
        spare: None,
        totals: Counts::default(),
    }))
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    inserted: u64,
    updated: u64,
    unchanged: u64,
}

/// One `ports` job.
struct PortsTask {
    store: Store,
    /// The job, whose changes are recorded ([`super::changes`]); `None` outside a job.
    job: Option<Arc<JobRef>>,
    /// Accepted records not yet handed to the store.
    batch: Batch,
    /// The commit running in the store, if any: its parts' tickets (one with redb; a big
    /// batch in PostgreSQL is written in parts at once), their answers so far, and the batch.
    in_flight: Option<InFlight>,
    /// The last written batch, emptied, to fill next: two buffers take turns, so a long job
    /// allocates its batches once.
    spare: Option<Batch>,
    /// Counts of committed batches.
    totals: Counts,
}

impl Task for PortsTask {
    fn record(&mut self, record: &Record<'_>) -> Result<(), Rejection> {
        let from_csv;
        let bytes = match record.body {
            Body::Json(bytes) => bytes,
            Body::Csv(row) => {
                from_csv = csv_to_json(&row)?;
                from_csv.as_slice()
            }
            Body::Text(_) => return Err(Rejection::invalid("a port record must be a JSON object")),
        };
        // The record is checked as UTF-8 once, in one pass; parsing it as `str` then skips
        // serde_json's check of every string on its own.
        let fast = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| serde_json::from_str::<ArrivingPort<'_>>(text).ok());
        if let Some(port) = fast {
            return self.batch.push(record.key, &port.fields());
        }
        let port = parse(bytes).map_err(|r| {
            let key = record
                .key
                .map(str::to_owned)
                .or_else(|| key_of_bad_record(bytes));
            r.with_key(key)
        })?;
        self.batch.push(record.key, &port.fields())
    }

    fn commit(&mut self) -> Result<(), TaskError> {
        self.start_commit(None)?;
        self.finish_commit(true).unwrap_or(Ok(()))
    }

    /// Hands the batch to the store, with the job's cursor in the transaction that ends it
    /// (see [`SharedBatch::cursor`]).
    fn start_commit(&mut self, cursor: Option<Save>) -> Result<Option<Save>, TaskError> {
        // One commit at a time per job: its batches land in upload order.
        if let Some(Err(e)) = self.finish_commit(true) {
            return Err(e);
        }
        if self.batch.is_empty() {
            return Ok(cursor);
        }
        let next = self.spare.take().unwrap_or_default();
        let mut batch = std::mem::replace(&mut self.batch, next);
        batch.sort();
        let batch = Arc::new(batch);
        let ranges = parts(&self.store, &batch);
        // One part writes the cursor itself; parts written at once (PostgreSQL) have it
        // written once all of them are durable.
        let mut cursor = cursor.map(|save| (save, self.totals));
        let after = match ranges.len() {
            1 => None,
            _ => cursor.take(),
        };
        let tickets = ranges
            .into_iter()
            .map(|range| {
                let mut part = SharedBatch::new(batch.clone(), self.job.clone(), range);
                part.cursor = cursor.take();
                self.store.submit(part, Sync::Now)
            })
            .collect();
        self.in_flight = Some(InFlight {
            tickets,
            answers: Vec::new(),
            batch,
            after,
            cursor_write: None,
            after_failed: None,
        });
        Ok(None)
    }

    /// The counts so far; the batch's own are added in its transaction, where the cursor
    /// is written (see [`SharedBatch::cursor`]).
    fn state(&self) -> Option<Value> {
        Some(self.totals.to_json())
    }

    fn restore(&mut self, state: &Value) -> Result<(), TaskError> {
        self.totals = Counts::from_json(state).ok_or_else(|| TaskError::Refused {
            code: ErrorCode::NotResumable,
            message: format!("the job's cursor holds no counts of ports: {state}"),
        })?;
        Ok(())
    }

    fn finish_commit(&mut self, wait: bool) -> Option<Result<(), TaskError>> {
        let Some(in_flight) = &mut self.in_flight else {
            return Some(Ok(()));
        };
        // Without `wait`, a commit still running gives `None` here.
        while let Some(ticket) = in_flight.tickets.last_mut() {
            let answer = match wait {
                true => None,
                false => Some(ticket.try_wait()?),
            };
            let ticket = in_flight.tickets.pop()?;
            in_flight
                .answers
                .push(answer.unwrap_or_else(|| ticket.wait()));
        }
        // Parts written at once: their cursor once all of them are durable.
        if let Some((save, before)) = in_flight.after.take() {
            match sum(std::mem::take(&mut in_flight.answers)) {
                Ok(counts) => {
                    let state = before.plus(counts).to_json();
                    let save = save.with_task(Some(state));
                    in_flight.cursor_write = Some(self.store.submit(save, Sync::Now));
                    in_flight.answers.push(Ok(counts));
                }
                Err(e) => in_flight.after_failed = Some(e),
            }
        }
        if let Some(ticket) = &mut in_flight.cursor_write {
            let written = match wait {
                true => None,
                false => Some(ticket.try_wait()?),
            };
            let ticket = in_flight.cursor_write.take()?;
            if let Err(e) = written.unwrap_or_else(|| ticket.wait()) {
                in_flight.after_failed = Some(TaskError::from(e));
            }
        }
        let InFlight {
            answers,
            batch,
            after_failed,
            ..
        } = self.in_flight.take()?;
        // The store dropped its handles before answering.
        if let Ok(mut batch) = Arc::try_unwrap(batch) {
            batch.clear();
            self.spare = Some(batch);
        }
        // Every part is counted once all are durable; a part that failed fails the commit
        // (parts that committed stay, unreported: they are records upserted by key).
        if let Some(failed) = after_failed {
            return Some(Err(failed));
        }
        match sum(answers) {
            Ok(counts) => {
                self.totals = self.totals.plus(counts);
                Some(Ok(()))
            }
            Err(e) => Some(Err(e)),
        }
    }

    fn pending_bytes(&self) -> usize {
        self.batch.bytes.len()
    }

    fn summary(&self) -> Summary {
        self.totals.to_json()
    }
}

impl Counts {
    fn to_json(self) -> Value {
        json!({
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
        })
    }

    fn from_json(value: &Value) -> Option<Counts> {
        let count = |name: &str| value.get(name).and_then(Value::as_u64);
        Some(Counts {
            inserted: count("inserted")?,
            updated: count("updated")?,
            unchanged: count("unchanged")?,
        })
    }

    fn plus(self, other: Counts) -> Counts {
        Counts {
            inserted: self.inserted + other.inserted,
            updated: self.updated + other.updated,
            unchanged: self.unchanged + other.unchanged,
        }
    }
}

/// Parses one record, telling syntax errors from wrong shapes.
pub(super) fn parse(bytes: &[u8]) -> Result<Port, Rejection> {
    let e = match serde_json::from_slice::<Port>(bytes) {
        Ok(port) => return Ok(port),
        Err(e) => e,
    };
    if e.is_syntax() || e.is_eof() {
        return Err(Rejection {
            key: None,
            code: ErrorCode::InvalidJson,
            message: crate::record::json_reason(&e, bytes),
        });
    }
    // Bad records are rare: parse again, tracking the path, so the message names the field.
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let message = match serde_path_to_error::deserialize::<_, Port>(&mut deserializer) {
        Err(e) if e.path().to_string() != "." => format!("field `{}`: {}", e.path(), e.inner()),
        _ => e.to_string(),
    };
    Err(Rejection::invalid(message))
}

/// The `unlocs[0]` of a record that did not parse as a port, if it has one (for the error).
fn key_of_bad_record(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Unlocs {
        #[serde(default)]
        unlocs: Vec<String>,
    }
    let parsed: Unlocs = serde_json::from_slice(bytes).ok()?;
    parsed.unlocs.into_iter().next()
}

/// Accepted ports waiting for a commit, kept in one buffer: every key and encoded value back
/// to back, and where each one is. A batch of many thousand records is a few allocations.
#[derive(Debug, Default)]
struct Batch {
    /// Keys and values, back to back.
    bytes: Vec<u8>,
    /// Where each record is in `bytes`, in upload order (until sorted).
    entries: Vec<Entry>,
}

/// One record of a [`Batch`]: its key at `bytes[start..start + key_len]`, its value right
/// after it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: usize,
    key_len: usize,
    value_len: usize,
}

impl Batch {
    /// Checks a parsed port and its key (the record's, or else `unlocs[0]`), then appends
    /// both.
    fn push<S: AsRef<str>>(
        &mut self,
        key: Option<&str>,
        port: &codec::Fields<'_, S>,
    ) -> Result<(), Rejection> {
        let key = match key {
            Some(key) => key,
            None => port.unlocs.first().map(AsRef::as_ref).ok_or_else(|| {
                Rejection::invalid(
                    "missing key: a record outside a top-level object needs `unlocs[0]`",
                )
            })?,
        };
        let with_key = |r: Rejection| r.with_key(Some(key.to_owned()));
        if key.trim().is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(with_key(Rejection::invalid(format!(
                "the key must be 1 to {MAX_KEY_BYTES} bytes long"
            ))));
        }
        validate(port.name, port.coordinates).map_err(|m| with_key(Rejection::invalid(m)))?;
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key.as_bytes());
        codec::encode_fields(port, &mut self.bytes);
        self.entries.push(Entry {
            start,
            key_len: key.len(),
            value_len: self.bytes.len() - start - key.len(),
        });
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the batch, keeping its buffers.
    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    fn key(&self, entry: &Entry) -> &str {
        let key = &self.bytes[entry.start..entry.start + entry.key_len];
        std::str::from_utf8(key).expect("keys are pushed as str")
    }

    fn value(&self, entry: &Entry) -> &[u8] {
        let start = entry.start + entry.key_len;
        &self.bytes[start..start + entry.value_len]
    }

    /// Sorts by key: sorted inserts touch far fewer B-tree pages. Repeats of one key stay in
    /// upload order (their place in the buffer breaks the tie), so the last one wins.
    fn sort(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_unstable_by(|a, b| self.key(a).cmp(self.key(b)).then(a.start.cmp(&b.start)));
        self.entries = entries;
    }
}

/// A commit under way: see [`PortsTask::in_flight`].
struct InFlight {
    tickets: Vec<Ticket<Counts>>,
    answers: Vec<Result<Counts, StoreError>>,
    batch: Arc<Batch>,
    /// The cursor to write once every part is durable (parts written at once), with the
    /// job's counts before the batch; then its write under way, or why it failed.
    after: Option<(Save, Counts)>,
    cursor_write: Option<Ticket<()>>,
    after_failed: Option<TaskError>,
}

/// The counts of a commit's parts, or the first part's failure.
fn sum(answers: Vec<Result<Counts, StoreError>>) -> Result<Counts, TaskError> {
    let mut total = Counts::default();
    for answer in answers {
        total = total.plus(answer?);
    }
    Ok(total)
}

/// Entries from which a PostgreSQL batch is split into parts written at once, each in a
/// transaction of its own on a connection of its own: one PostgreSQL backend inserts about
/// 150,000 ports a second on the machine of docs/BENCHMARKS.md, and a job's batches go one
/// after the other, so a big batch is shared by two.
const PARTS_FROM: usize = 4096;

/// How many parts a PostgreSQL batch is written in.
const PARTS: usize = 2;

/// The entry ranges a batch is committed in: the whole batch with redb (its one writer
/// writes it, in parts of its own when small changes wait); with PostgreSQL, from
/// [`PARTS_FROM`] entries on, [`PARTS`] ranges of keys, cut between two keys (a key's repeats
/// stay in one part). The parts' keys differ, and each locks its rows in key order: they
/// never wait for each other.
fn parts(store: &Store, batch: &Batch) -> Vec<std::ops::Range<usize>> {
    let len = batch.entries.len();
    if !matches!(store.kind(), crate::store::Kind::Postgres(_)) || len < PARTS_FROM {
        return std::iter::once(0..len).collect();
    }
    let mut ranges = Vec::with_capacity(PARTS);
    let mut start = 0;
    for part in 1..PARTS {
        let mut cut = (len * part / PARTS).max(start);
        while cut > start
            && cut < len
            && batch.key(&batch.entries[cut]) == batch.key(&batch.entries[cut - 1])
        {
            cut += 1;
        }
        if cut > start && cut < len {
            ranges.push(start..cut);
            start = cut;
        }
    }
    ranges.push(start..len);
    ranges
}

/// A batch (or, with PostgreSQL, a part of it: `range`) shared with the store while it is
/// written, with how far the writer got when it writes it in parts.
struct SharedBatch {
    batch: Arc<Batch>,
    /// The entries it writes.
    range: std::ops::Range<usize>,
    /// The job that writes it, whose changes are recorded.
    job: Option<Arc<JobRef>>,
    /// The first entry not yet written.
    next: usize,
    /// The counts of the entries written so far.
    counts: Counts,
    /// The job's cursor after this batch, and the job's counts before the batch (the
    /// cursor holds them with the batch's added): written in the transaction that ends the
    /// batch. A batch the writer cuts into parts (small changes waiting) commits its first
    /// parts without it: a crash between two parts leaves records after the cursor, which
    /// a resume writes again (the same values: the store ends the same; those records count
    /// as `unchanged` in the summary).
    cursor: Option<(Save, Counts)>,
}

impl SharedBatch {
    fn new(
        batch: Arc<Batch>,
        job: Option<Arc<JobRef>>,
        range: std::ops::Range<usize>,
    ) -> SharedBatch {
        SharedBatch {
            next: range.start,
            batch,
            range,
            job,
            counts: Counts::default(),
            cursor: None,
        }
    }

    /// The job's counts once this batch is written, for its cursor.
    fn counts_after(&self) -> Option<(&Save, Value)> {
        let (save, before) = self.cursor.as_ref()?;
        Some((save, before.plus(self.counts).to_json()))
    }

    /// Writes entries from `next` on, until all are written or `stop` says so (asked every
    /// [`CHECK_EVERY`] entries).
    fn write(
        &mut self,
        txn: &redb::WriteTransaction,
        mut stop: impl FnMut() -> bool,
    ) -> Result<(), StoreError> {
        /// Entries written between two questions to `stop`.
        const CHECK_EVERY: usize = 64;
        let batch = &self.batch;
        let mut table = txn
            .open_table(PORTS)
            .map_err(StoreError::redb("open ports table"))?;
        let mut recorder = match &self.job {
            Some(job) => Some(Recorder::open(txn, job)?),
            None => None,
        };
        for (n, entry) in batch.entries[self.next..self.range.end].iter().enumerate() {
            if n > 0 && n % CHECK_EVERY == 0 && stop() {
                break;
            }
            let (key, value) = (batch.key(entry), batch.value(entry));
            let old = table
                .insert(key, StoredPort::from_encoded(value))
                .map_err(StoreError::redb("write port"))?;
            let replaced = match &old {
                None => {
                    self.counts.inserted += 1;
                    None
                }
                Some(old) if old.value() == StoredPort::from_encoded(value) => {
                    self.counts.unchanged += 1;
                    self.next += 1;
                    continue;
                }
                Some(old) => {
                    self.counts.updated += 1;
                    Some(old.value().bytes())
                }
            };
            if let Some(recorder) = &mut recorder {
                recorder.changed(key, replaced)?;
            }
            self.next += 1;
        }
        match recorder {
            Some(recorder) => recorder.finish(),
            None => Ok(()),
        }
    }
}

/// A sorted batch's entries in rounds in which each key comes once: round `n` holds the
/// `n`-th entry of every key that has one, in key order.
fn rounds(batch: &Batch, range: std::ops::Range<usize>) -> Vec<Vec<Entry>> {
    let mut rounds: Vec<Vec<Entry>> = Vec::new();
    let mut repeat = 0;
    let mut last: Option<&str> = None;
    for entry in &batch.entries[range] {
        let key = batch.key(entry);
        repeat = if last == Some(key) { repeat + 1 } else { 0 };
        last = Some(key);
        if rounds.len() == repeat {
            rounds.push(Vec::new());
        }
        rounds[repeat].push(*entry);
    }
    rounds
}

impl Change for SharedBatch {
    type Output = Counts;

    /// Writes the whole batch; the counts hold only once the writer's commit returned.
    fn apply(&mut self, txn: &redb::WriteTransaction) -> Result<Counts, StoreError> {
        // A group that failed elsewhere runs this again from the start.
        self.next = self.range.start;
        self.counts = Counts::default();
        self.write(txn, || false)?;
        if let Some((save, state)) = self.counts_after() {
            save.apply(txn, Some(&state))?;
        }
        Ok(self.counts)
    }

    /// Writes the batch with `COPY` and one upsert per round: the first time each key comes
    /// in the batch, then the second, and so on (repeats are rare), so that the counts are
    /// those of writing the records one by one, as with redb. A job's changes are recorded as
    /// with redb: the version each key's first change in the transaction replaced, and the
    /// codes changed, as one change list.
    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, Counts> {
        Box::pin(async move {
            let batch = &self.batch;
            let mut counts = Counts::default();
            let Some(job) = &self.job else {
                for round in rounds(batch, self.range.clone()) {
                    let rows = round.iter().map(|e| (batch.key(e), batch.value(e)));
                    let (inserted, updated) = super::postgres::upsert(txn, rows).await?;
                    counts.inserted += inserted;
                    counts.updated += updated;
                    counts.unchanged += round.len() as u64 - inserted - updated;
                }
                if let Some((save, before)) = &self.cursor {
                    let state = before.plus(counts).to_json();
                    save.apply_postgres(txn, Some(&state)).await?;
                }
                return Ok(counts);
            };
            let time_ms = crate::time::now_ms();
            let prefix = super::changes::version_prefix(time_ms, &job.sub);
            let mut recorded: std::collections::HashSet<String> = Default::default();
            let mut codes = super::changes::CodeList::default();
            for round in rounds(batch, self.range.clone()) {
                let rows = round.iter().map(|e| (batch.key(e), batch.value(e)));
                // Rounds after the first are rare and small: they pass what was recorded.
                let before: Vec<String> = recorded.iter().cloned().collect();
                let changed =
                    super::postgres::upsert_recorded(txn, rows, &job.id, &prefix, time_ms, &before)
                        .await?;
                let (inserted, updated) = (changed.inserted.len(), changed.updated.len());
                counts.inserted += inserted as u64;
                counts.updated += updated as u64;
                counts.unchanged += (round.len() - inserted - updated) as u64;
                for (key, new) in changed
                    .inserted
                    .into_iter()
                    .map(|k| (k, true))
                    .chain(changed.updated.into_iter().map(|k| (k, false)))
                {
                    if !recorded.contains(&key) {
                        codes.push(&key, new)?;
                        recorded.insert(key);
                    }
                }
            }
            if !codes.is_empty() {
                super::postgres::record_codes(txn, &job.id, codes.bytes()).await?;
            }
            if let Some((save, before)) = &self.cursor {
                let state = before.plus(counts).to_json();
                save.apply_postgres(txn, Some(&state)).await?;
            }
            Ok(counts)
        })
    }

    fn weight(&self) -> usize {
        self.batch.bytes.len()
    }

    /// Writes the batch in key order, a part at a time: each part's keys come after the last
    /// one's, so writing a batch in parts rewrites no more B-tree pages than writing it at once.
    /// The last part writes the job's cursor.
    fn apply_part(
        &mut self,
        txn: &redb::WriteTransaction,
        interrupt: &mut Interrupt<'_>,
    ) -> Result<Part<Counts>, StoreError> {
        self.write(txn, || interrupt.requested())?;
        if self.next < self.range.end {
            return Ok(Part::More);
        }
        if let Some((save, state)) = self.counts_after() {
            save.apply(txn, Some(&state))?;
        }
        Ok(Part::Done(self.counts))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use redb::ReadableDatabase;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        (dir, store)
    }

    /// A sorted batch of `(key, name)` ports.
    fn batch(ports: &[(String, String)]) -> Arc<Batch> {
        let mut batch = Batch::default();
        for (key, name) in ports {
            let port = parse(format!(r#"{{"name":"{name}"}}"#).as_bytes()).unwrap();
            batch.push(Some(key), &port.fields()).unwrap();
        }
        batch.sort();
        Arc::new(batch)
    }

    fn contents(store: &Store) -> Vec<(String, Vec<u8>)> {
        let txn = store.database().unwrap().begin_read().unwrap();
        let table = txn.open_table(PORTS).unwrap();
        redb::ReadableTable::iter(&table)
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().to_owned(), v.value().bytes().to_vec())
            })
            .collect()
    }

    /// Writes `batch` in one transaction.
    fn write_whole(store: &Store, batch: &Arc<Batch>) -> Counts {
        let txn = store.write().unwrap();
        let counts = SharedBatch::new(batch.clone(), None, 0..batch.entries.len())
            .apply(&txn)
            .unwrap();
        txn.commit().unwrap();
        counts
    }

    #[test]
    fn a_batch_written_in_parts_counts_and_stores_what_it_does_at_once() {
        let key = |i: u32| format!("K{i:05}");
        let before: Vec<_> = (0..1000).map(|i| (key(i), format!("p{i}"))).collect();
        // 250 unchanged, 250 updated, 1,000 new, and one key three times (the last one wins).
        let mut next: Vec<_> = (500..2000)
            .map(|i| (key(i), format!("p{}", if i < 750 { i } else { i + 1 })))
            .collect();
        next.push((key(1500), "first repeat".into()));
        next.push((key(1500), "last repeat".into()));
        let (before, next) = (batch(&before), batch(&next));

        let (_whole_dir, whole) = store();
        write_whole(&whole, &before);
        let at_once = write_whole(&whole, &next);

        let (_parts_dir, parted) = store();
        write_whole(&parted, &before);
        let len = next.entries.len();
        let mut change = SharedBatch::new(next, None, 0..len);
        let mut parts = 0;
        let in_parts = loop {
            // Interrupted whenever it asks: each part writes the fewest entries it may.
            let mut txn = parted.write().unwrap();
            let part = change
                .apply_part(&txn, &mut Interrupt::new(&mut || true))
                .unwrap();
            txn.set_durability(redb::Durability::None).unwrap();
            txn.commit().unwrap();
            parts += 1;
            if let Part::Done(counts) = part {
                break counts;
            }
        };
        assert!(parts > 10, "{parts} parts");
        assert_eq!(
            at_once,
            Counts {
                inserted: 1000,
                updated: 252,
                unchanged: 250
            }
        );
        assert_eq!(in_parts, at_once);
        assert_eq!(contents(&parted), contents(&whole));
    }
}
