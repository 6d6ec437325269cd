//! How blobs are kept: a blob's bytes in chunks of [`CHUNK_BYTES`] under a fresh id, staged
//! (invisible) while its upload runs, and published with its description under its name in
//! one transaction. So a reader sees the old version or the new one, never a part; a cut-off
//! upload leaves staged chunks that its job, or else the prune at the next start, deletes;
//! unless the job keeps a cursor to be resumed: its chunks stay until it is, or until the
//! cursor is gone.
//!
//! | table | key | value |
//! |---|---|---|
//! | `blobs` | name | [`Meta`] as JSON |
//! | `blob_chunks` | (id, chunk index) | up to [`CHUNK_BYTES`] bytes |
//! | `blob_staging` | id | [`Staged`] as JSON: an upload under way (or cut off) |
//! | `blob_usage` | token subject | bytes of its blobs |
//!
//! The same tables, with the same guarantees, in a PostgreSQL store that several nodes share:
//! each function and change below does its work in either database ([`super::postgres`]
//! holds the SQL, and says how the guarantees hold across nodes).

use super::postgres;
use crate::reads::{Content, ContentInfo, ReadError};
use crate::store::{Change, Kind, PgFuture, PgTransaction, Store, StoreError};
use crate::time::at_ms;
use bytes::Bytes;
use edge_proto::ErrorCode;
use redb::{
    ReadOnlyTable, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Mutex;

/// Blob descriptions by name.
pub(crate) const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// Blob bytes by (id, chunk index).
pub(crate) const CHUNKS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("blob_chunks");
/// Uploads under way (or cut off), by id.
pub(crate) const STAGING: TableDefinition<u64, &[u8]> = TableDefinition::new("blob_staging");
/// Stored bytes by token subject.
pub(crate) const USAGE: TableDefinition<&str, u64> = TableDefinition::new("blob_usage");

/// The size of a chunk: a little under 1 MiB, so that a chunk and its entry's overhead fill
/// one 1 MiB page of redb (whose pages come in powers of two) and the store stays within a
/// few percent of the bytes it holds.
pub const CHUNK_BYTES: usize = 1024 * 1024 - 256;

/// What is kept of a blob besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// Where its chunks are.
    pub id: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub content_type: String,
    /// The BLAKE3 digest of its bytes, in hex.
    pub digest: String,
    /// When it was stored (ms since the Unix epoch).
    pub created_ms: u64,
    /// The token subject that uploaded it.
    pub sub: String,
    /// The job that uploaded it.
    pub job: String,
}

impl Meta {
    /// The description the read API gives.
    pub(crate) fn describe(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "size": self.size,
            "content_type": self.content_type,
            "digest": self.digest,
            "created": crate::time::rfc3339(self.created_ms),
            "sub": self.sub,
            "job": self.job,
        })
    }

    pub(super) fn decode(name: &str, bytes: &[u8]) -> Result<Meta, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            key: format!("blobs/{name}"),
            message: e.to_string(),
        })
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a blob description always serializes")
    }
}

/// An upload under way, as the staging table keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Staged {
    /// The name it will be published under.
    pub name: String,
    /// Its job.
    pub job: String,
    /// Who uploads it.
    pub sub: String,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// The node running it, in a PostgreSQL store (the only one that may prune it); empty
    /// (and not written) in redb.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

impl Staged {
    pub(super) fn decode(id: u64, bytes: &[u8]) -> Result<Staged, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            key: format!("blob_staging/{id}"),
            message: e.to_string(),
        })
    }
}

/// Ids of the uploads running in this process (with how many runs of their job hold each: a
/// resume adopts the id of the run it takes over): a staged id (of this node) not among them
/// was cut off (by a crash, or a failure whose clean-up failed too) and is pruned, unless its
/// job keeps a cursor.
static LIVE: Mutex<Option<HashMap<u64, u32>>> = Mutex::new(None);

/// A fresh blob id, counted live until [`release`]d. In redb, a random one that no running
/// upload has (one process writes the file); in PostgreSQL, the next of the database's
/// sequence `blob_ids`, so that nodes sharing the database never take the same.
pub(crate) fn new_id(store: &Store) -> Result<u64, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        let id = postgres::new_id(pg)?;
        adopt(id);
        return Ok(id);
    }
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let live = live.get_or_insert_with(HashMap::new);
    let mut counter = 0u64;
    loop {
        counter += 1;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&std::process::id().to_le_bytes());
        hasher.update(&counter.to_le_bytes());
        hasher.update(&format!("{:?}", std::time::SystemTime::now()).into_bytes());
        hasher.update(&format!("{:?}", std::thread::current().id()).into_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        let id = u64::from_le_bytes(id);
        if id != 0 && !live.contains_key(&id) {
            live.insert(id, 1);
            return Ok(id);
        }
    }
}

/// Counts an id live (once more), until [`release`]d: a resumed job's, which goes on with
/// the chunks an earlier run staged.
pub(crate) fn adopt(id: u64) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    *live.get_or_insert_with(HashMap::new).entry(id).or_insert(0) += 1;
}

/// Counts an upload's id out of the live ones (once).
pub(crate) fn release(id: u64) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(live) = live.as_mut() {
        if let Some(runs) = live.get_mut(&id) {
            *runs -= 1;
            if *runs == 0 {
                live.remove(&id);
            }
        }
    }
}

fn is_live(id: u64) -> bool {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.as_ref().is_some_and(|live| live.contains_key(&id))
}

/// The staging entry of the upload `id`, if it is staged.
pub(crate) fn staged(store: &Store, id: u64) -> Result<Option<Staged>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return postgres::staged(pg, id);
    }
    let txn = store.read()?;
    let staging = txn
        .open_table(STAGING)
        .map_err(StoreError::redb("open staged blobs"))?;
    let found = staging
        .get(id)
        .map_err(StoreError::redb("read a staged blob"))?;
    found.map(|row| Staged::decode(id, row.value())).transpose()
}

/// A chunk of a blob: its index (its offset / [`CHUNK_BYTES`]) and its bytes.
pub(crate) type Chunk = (u64, Vec<u8>);

/// Writes staged chunks of an upload (with its staging entry the first time, and the job's
/// cursor after them when it keeps one: the same transaction, so a resume finds exactly the
/// chunks its cursor counts; refused, with nothing written, when a resume took the job over).
/// Once the writer is done with it, its chunks' buffers go back to the job through `recycle` (a job fills the
/// same few buffers again instead of allocating 1 MiB per chunk, which the allocator would
/// keep, spread over its per-thread arenas).
pub(crate) struct Stage {
    pub id: u64,
    pub staged: Option<Staged>,
    pub chunks: Vec<Chunk>,
    pub recycle: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    pub cursor: Option<crate::resume::Save>,
    /// Without a cursor, the run of the job the chunks must still be written by.
    pub fence: Option<crate::resume::Fence>,
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(recycle) = &self.recycle {
            for (_, buffer) in self.chunks.drain(..) {
                if recycle.try_send(buffer).is_err() {
                    break;
                }
            }
        }
    }
}

impl Change for Stage {
    type Output = ();

    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        if let Some(cursor) = &self.cursor {
            cursor.apply(txn, None)?;
        }
        if let Some(fence) = &self.fence {
            fence.check(txn)?;
        }
        if let Some(staged) = &self.staged {
            let row = serde_json::to_vec(staged).expect("a staging entry always serializes");
            txn.open_table(STAGING)
                .map_err(StoreError::redb("open staged blobs"))?
                .insert(self.id, row.as_slice())
                .map_err(StoreError::redb("stage a blob"))?;
        }
        write_chunks(txn, self.id, &self.chunks)
    }

    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, ()> {
        Box::pin(async move {
            if let Some(cursor) = &self.cursor {
                cursor.apply_postgres(txn, None).await?;
            }
            if let Some(fence) = &self.fence {
                fence.check_postgres(txn).await?;
            }
            postgres::stage(txn, self.id, self.staged.as_ref(), &self.chunks).await
        })
    }

    fn weight(&self) -> usize {
        self.chunks.iter().map(|(_, c)| c.len()).sum()
    }
}

fn write_chunks(txn: &WriteTransaction, id: u64, chunks: &[Chunk]) -> Result<(), StoreError> {
    let mut table = txn
        .open_table(CHUNKS)
        .map_err(StoreError::redb("open blob chunks"))?;
    for (index, chunk) in chunks {
        table
            .insert((id, *index), chunk.as_slice())
            .map_err(StoreError::redb("write a blob chunk"))?;
    }
    Ok(())
}

/// Deletes an id's chunks and its staging entry.
fn delete_id(txn: &WriteTransaction, id: u64) -> Result<(), StoreError> {
    txn.open_table(CHUNKS)
        .map_err(StoreError::redb("open blob chunks"))?
        .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)
        .map_err(StoreError::redb("delete blob chunks"))?;
    txn.open_table(STAGING)
        .map_err(StoreError::redb("open staged blobs"))?
        .remove(id)
        .map_err(StoreError::redb("delete a staged blob"))?;
    Ok(())
}

/// Drops a staged upload: its chunks and its staging entry.
pub(crate) struct Discard(pub u64);

impl Change for Discard {
    type Output = ();

    fn apply(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        delete_id(txn, self.0)
    }

    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, ()> {
        Box::pin(postgres::delete_id(txn, self.0))
    }
}

/// Makes an upload a blob: writes its last chunks, puts its description under its name
/// (the old version's chunks go), counts its bytes to its subject. Refused, it writes
/// nothing (the job's abandon drops what was staged).
pub(crate) struct Publish {
    pub name: String,
    pub meta: Meta,
    pub chunks: Vec<Chunk>,
    /// Refuse to replace a blob of that name.
    pub if_absent: bool,
    /// The subject's quota in bytes (0: none).
    pub quota: u64,
}

/// What a [`Publish`] did.
#[derive(Debug)]
pub(crate) enum Published {
    /// Stored; the version it replaced, if any.
    Stored { replaced: Option<Meta> },
    /// Not stored: why.
    Refused { code: ErrorCode, message: String },
}

impl Change for Publish {
    type Output = Published;

    fn apply(&mut self, txn: &WriteTransaction) -> Result<Published, StoreError> {
        let mut blobs = txn
            .open_table(BLOBS)
            .map_err(StoreError::redb("open blobs"))?;
        let old = match blobs
            .get(self.name.as_str())
            .map_err(StoreError::redb("read a blob"))?
        {
            Some(bytes) => Some(Meta::decode(&self.name, bytes.value())?),
            None => None,
        };
        if self.if_absent && old.is_some() {
            return Ok(Published::Refused {
                code: ErrorCode::AlreadyExists,
                message: format!(
                    "a blob named `{}` exists and the job asked not to replace it (if_absent); delete it first, or upload without if_absent",
                    self.name
                ),
            });
        }
        let mut usage = txn
            .open_table(USAGE)
            .map_err(StoreError::redb("open blob usage"))?;
        let sub = self.meta.sub.as_str();
        let used = usage
            .get(sub)
            .map_err(StoreError::redb("read blob usage"))?
            .map_or(0, |v| v.value());
        let freed = old.as_ref().filter(|o| o.sub == sub).map_or(0, |o| o.size);
        let after = used.saturating_sub(freed).saturating_add(self.meta.size);
        if self.quota > 0 && after > self.quota {
            return Ok(Published::Refused {
                code: ErrorCode::LimitExceeded,
                message: quota_message(sub, used.saturating_sub(freed), self.meta.size, self.quota),
            });
        }
        write_chunks(txn, self.meta.id, &self.chunks)?;
        blobs
            .insert(self.name.as_str(), self.meta.encode().as_slice())
            .map_err(StoreError::redb("store a blob"))?;
        drop(blobs);
        txn.open_table(STAGING)
            .map_err(StoreError::redb("open staged blobs"))?
            .remove(self.meta.id)
            .map_err(StoreError::redb("unstage a blob"))?;
        if let Some(old) = &old {
            delete_id(txn, old.id)?;
            if old.sub != sub {
                add_usage(&mut usage, &old.sub, -i128::from(old.size))?;
            }
        }
        usage
            .insert(sub, after)
            .map_err(StoreError::redb("write blob usage"))?;
        Ok(Published::Stored { replaced: old })
    }

    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, Published> {
        Box::pin(postgres::publish(
            txn,
            &self.name,
            &self.meta,
            &self.chunks,
            self.if_absent,
            self.quota,
        ))
    }

    fn weight(&self) -> usize {
        self.chunks.iter().map(|(_, c)| c.len()).sum()
    }
}

/// Why a blob does not fit its subject's quota.
pub(crate) fn quota_message(sub: &str, used: u64, size: u64, quota: u64) -> String {
    format!(
        "`{sub}` keeps {used} bytes of blobs; {size} more would pass its quota of {quota} (limits.blob_bytes_per_sub); delete blobs or raise the limit"
    )
}

fn add_usage(usage: &mut redb::Table<&str, u64>, sub: &str, delta: i128) -> Result<(), StoreError> {
    let used = usage
        .get(sub)
        .map_err(StoreError::redb("read blob usage"))?
        .map_or(0, |v| v.value());
    let next = u64::try_from((i128::from(used) + delta).max(0)).unwrap_or(u64::MAX);
    if next == 0 {
        usage
            .remove(sub)
            .map_err(StoreError::redb("write blob usage"))?;
    } else {
        usage
            .insert(sub, next)
            .map_err(StoreError::redb("write blob usage"))?;
    }
    Ok(())
}

/// Deletes a blob: its description, its chunks, its bytes from its subject's usage.
pub(crate) struct Remove(pub String);

impl Change for Remove {
    type Output = Option<Meta>;

    fn apply(&mut self, txn: &WriteTransaction) -> Result<Option<Meta>, StoreError> {
        let mut blobs = txn
            .open_table(BLOBS)
            .map_err(StoreError::redb("open blobs"))?;
        let meta = match blobs
            .remove(self.0.as_str())
            .map_err(StoreError::redb("delete a blob"))?
        {
            Some(bytes) => Meta::decode(&self.0, bytes.value())?,
            None => return Ok(None),
        };
        drop(blobs);
        delete_id(txn, meta.id)?;
        let mut usage = txn
            .open_table(USAGE)
            .map_err(StoreError::redb("open blob usage"))?;
        add_usage(&mut usage, &meta.sub, -i128::from(meta.size))?;
        Ok(Some(meta))
    }

    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, Option<Meta>> {
        Box::pin(postgres::remove(txn, &self.0))
    }
}

/// The description of the blob `name`.
pub(crate) fn meta(store: &Store, name: &str) -> Result<Option<Meta>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return postgres::meta(pg, name);
    }
    let txn = store.read()?;
    let blobs = txn
        .open_table(BLOBS)
        .map_err(StoreError::redb("open blobs"))?;
    let found = blobs.get(name).map_err(StoreError::redb("read a blob"))?;
    found
        .map(|bytes| Meta::decode(name, bytes.value()))
        .transpose()
}

/// The bytes of blobs `sub` keeps.
pub(crate) fn usage(store: &Store, sub: &str) -> Result<u64, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return postgres::usage(pg, sub);
    }
    let txn = store.read()?;
    let usage = txn
        .open_table(USAGE)
        .map_err(StoreError::redb("open blob usage"))?;
    let used = usage
        .get(sub)
        .map_err(StoreError::redb("read blob usage"))?;
    Ok(used.map_or(0, |v| v.value()))
}

/// A page of descriptions in name order: names after `after` that start with `prefix`.
pub(crate) fn list(
    store: &Store,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<(String, Meta)>, bool), StoreError> {
    let start = match after {
        Some(after) if after >= prefix => after,
        _ => prefix,
    };
    if let Kind::Postgres(pg) = store.kind() {
        return postgres::list(pg, prefix, start, Some(start) == after, limit);
    }
    let txn = store.read()?;
    let blobs = txn
        .open_table(BLOBS)
        .map_err(StoreError::redb("open blobs"))?;
    let rows = blobs
        .range(start..)
        .map_err(StoreError::redb("list blobs"))?;
    let mut items = Vec::new();
    for row in rows {
        let (name, bytes) = row.map_err(StoreError::redb("list blobs"))?;
        let name = name.value();
        if Some(name) == after {
            continue;
        }
        if !name.starts_with(prefix) {
            break;
        }
        if items.len() == limit {
            return Ok((items, true));
        }
        items.push((name.to_owned(), Meta::decode(name, bytes.value())?));
    }
    Ok((items, false))
}

/// One blob's bytes, read from one snapshot of the store: the version that was there when
/// it was opened, whole, whatever is published or deleted while it is read.
pub(crate) struct BlobContent {
    info: ContentInfo,
    id: u64,
    chunks: Snapshot,
}

/// Where a [`BlobContent`] reads its chunks.
enum Snapshot {
    /// The chunks table of a redb read transaction.
    Redb(ReadOnlyTable<(u64, u64), &'static [u8]>),
    /// A transaction of the PostgreSQL store held for the download (see
    /// [`postgres::Snapshot`] for why, and what it costs).
    Postgres(postgres::Snapshot),
}

impl BlobContent {
    fn new(meta: Meta, chunks: Snapshot) -> BlobContent {
        BlobContent {
            info: ContentInfo {
                size: meta.size,
                content_type: meta.content_type,
                etag: meta.digest,
                modified: at_ms(meta.created_ms),
            },
            id: meta.id,
            chunks,
        }
    }
}

/// Opens the blob `name` for reading: its description and a snapshot of its chunks.
pub(crate) fn open(store: &Store, name: &str) -> Result<Option<BlobContent>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return Ok(postgres::open(pg, name)?
            .map(|(meta, snapshot)| BlobContent::new(meta, Snapshot::Postgres(snapshot))));
    }
    let txn = store.read()?;
    let blobs = txn
        .open_table(BLOBS)
        .map_err(StoreError::redb("open blobs"))?;
    let Some(bytes) = blobs.get(name).map_err(StoreError::redb("read a blob"))? else {
        return Ok(None);
    };
    let meta = Meta::decode(name, bytes.value())?;
    let chunks = txn
        .open_table(CHUNKS)
        .map_err(StoreError::redb("open blob chunks"))?;
    Ok(Some(BlobContent::new(meta, Snapshot::Redb(chunks))))
}

impl Content for BlobContent {
    fn info(&self) -> &ContentInfo {
        &self.info
    }

    fn read(
        &mut self,
        range: Range<u64>,
        out: &mut dyn FnMut(Bytes) -> bool,
    ) -> Result<(), ReadError> {
        let chunk = CHUNK_BYTES as u64;
        let end = range.end.min(self.info.size);
        let mut at = range.start;
        while at < end {
            let index = at / chunk;
            let from = usize::try_from(at - index * chunk).unwrap_or(usize::MAX);
            let to = usize::try_from((end - index * chunk).min(chunk)).unwrap_or(usize::MAX);
            let missing = || StoreError::Corrupt {
                key: format!("blob_chunks/{}/{index}", self.id),
                message: "a chunk of a stored blob is missing".into(),
            };
            let short = |len: usize| StoreError::Corrupt {
                key: format!("blob_chunks/{}/{index}", self.id),
                message: format!("a chunk of a stored blob holds {len} bytes"),
            };
            let piece = match &self.chunks {
                Snapshot::Redb(chunks) => {
                    let found = chunks
                        .get((self.id, index))
                        .map_err(StoreError::redb("read a blob chunk"))?;
                    let bytes = found.ok_or_else(missing)?;
                    let bytes = bytes.value();
                    let piece = bytes
                        .get(from..to.min(bytes.len()))
                        .filter(|p| !p.is_empty())
                        .ok_or_else(|| short(bytes.len()))?;
                    Bytes::copy_from_slice(piece)
                }
                Snapshot::Postgres(snapshot) => {
                    let (len, piece) = snapshot
                        .chunk(self.id, index, from, to.saturating_sub(from))?
                        .ok_or_else(missing)?;
                    if len < to || piece.is_empty() {
                        return Err(short(len).into());
                    }
                    Bytes::from(piece)
                }
            };
            at += piece.len() as u64;
            if !out(piece) {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Uploads a prune deletes per transaction at most.
const PRUNE_BATCH: usize = 16;

/// Deletes staged uploads that no running job of this process owns (cut off by a crash,
/// or whose job's clean-up failed) and no job's cursor counts (a job cut off that may be
/// resumed; once its cursor is gone, ended or expired, its chunks go too), [`PRUNE_BATCH`] per transaction; returns how many. In a
/// PostgreSQL store, only this node's: another node's uploads are that node's to prune (it
/// alone knows which of its jobs run), when it starts again.
pub(crate) fn prune_orphans(store: &Store, stop: &dyn Fn() -> bool) -> Result<u64, StoreError> {
    let mut pruned = 0;
    while !stop() {
        let doomed = match store.kind() {
            Kind::Postgres(_) => {
                let prune = PruneStaged {
                    node: store.node().to_owned(),
                };
                store.submit(prune, crate::store::Sync::Now).wait()?
            }
            Kind::Redb(_) => {
                let txn = store.write()?;
                let doomed = prune_batch(&txn)?;
                txn.commit()
                    .map_err(StoreError::redb("prune staged blobs"))?;
                doomed
            }
        };
        pruned += doomed as u64;
        if doomed < PRUNE_BATCH {
            break;
        }
    }
    Ok(pruned)
}

/// Deletes up to [`PRUNE_BATCH`] staged uploads that no running job of this process owns;
/// returns how many.
fn prune_batch(txn: &WriteTransaction) -> Result<usize, StoreError> {
    let doomed: Vec<u64> = {
        let staging = txn
            .open_table(STAGING)
            .map_err(StoreError::redb("open staged blobs"))?;
        let ids = staging
            .iter()
            .map_err(StoreError::redb("list staged blobs"))?;
        let cursors = txn
            .open_table(crate::resume::CURSORS)
            .map_err(StoreError::redb("open job_cursors table"))?;
        let mut doomed = Vec::new();
        for row in ids {
            let (id, staged) = row.map_err(StoreError::redb("list staged blobs"))?;
            // Checked inside the write transaction: a job stages its id only while it
            // is live, and unstages it (committed) before it stops being live. A job that
            // keeps a cursor may be resumed: its chunks are the resume's.
            let resumable = match Staged::decode(id.value(), staged.value()) {
                Ok(staged) => cursors
                    .get(staged.job.as_str())
                    .map_err(StoreError::redb("read cursor"))?
                    .is_some(),
                Err(_) => false,
            };
            if !is_live(id.value()) && !resumable {
                doomed.push(id.value());
                if doomed.len() == PRUNE_BATCH {
                    break;
                }
            }
        }
        doomed
    };
    for id in &doomed {
        delete_id(txn, *id)?;
    }
    Ok(doomed.len())
}

/// One batch of [`prune_orphans`]: staged uploads of the node `node` that no running job of
/// this process owns, [`PRUNE_BATCH`] at most.
struct PruneStaged {
    node: String,
}

impl Change for PruneStaged {
    type Output = usize;

    fn apply(&mut self, txn: &WriteTransaction) -> Result<usize, StoreError> {
        prune_batch(txn)
    }

    fn apply_postgres<'a>(&'a mut self, txn: &'a PgTransaction<'_>) -> PgFuture<'a, usize> {
        Box::pin(postgres::prune_staged(
            txn,
            &self.node,
            PRUNE_BATCH,
            is_live,
        ))
    }
}

/// What the store holds of no published blob: staged uploads, and chunks of no blob (both
/// 0 once every job ended and the orphans were pruned; for tests and checks).
pub fn unpublished(store: &Store) -> Result<(u64, u64), StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return postgres::unpublished(pg);
    }
    let txn = store.read()?;
    let staging = txn
        .open_table(STAGING)
        .map_err(StoreError::redb("open staged blobs"))?;
    let chunks = txn
        .open_table(CHUNKS)
        .map_err(StoreError::redb("open blob chunks"))?;
    let blobs = txn
        .open_table(BLOBS)
        .map_err(StoreError::redb("open blobs"))?;
    let mut published = HashSet::new();
    for row in blobs.iter().map_err(StoreError::redb("list blobs"))? {
        let (name, bytes) = row.map_err(StoreError::redb("list blobs"))?;
        published.insert(Meta::decode(name.value(), bytes.value())?.id);
    }
    let mut loose = 0;
    for row in chunks
        .iter()
        .map_err(StoreError::redb("list blob chunks"))?
    {
        let (key, _) = row.map_err(StoreError::redb("list blob chunks"))?;
        if !published.contains(&key.value().0) {
            loose += 1;
        }
    }
    let staged = staging
        .len()
        .map_err(StoreError::redb("count staged blobs"))?;
    Ok((staged, loose))
}

/// Copies every blob of the redb store `from` into the PostgreSQL store `to` (`edge store
/// copy`), replacing blobs of the same name; returns how many blobs. Each blob gets an id of
/// the target's sequence, and goes as an upload does: its chunks staged in transactions of
/// about [`crate::table::COPY_BATCH_BYTES`] (never the whole blob in memory), then published
/// with its description and usage in one. A copy cut off leaves a staged upload of this node,
/// which its next start prunes.
pub(crate) fn copy(
    from: &Store,
    to: &Store,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, StoreError> {
    let txn = from.read()?;
    let blobs = txn
        .open_table(BLOBS)
        .map_err(StoreError::redb("open blobs"))?;
    let chunks = txn
        .open_table(CHUNKS)
        .map_err(StoreError::redb("open blob chunks"))?;
    let mut copied = 0;
    for row in blobs.iter().map_err(StoreError::redb("list blobs"))? {
        let (name, bytes) = row.map_err(StoreError::redb("list blobs"))?;
        let name = name.value();
        let meta = Meta::decode(name, bytes.value())?;
        let id = new_id(to)?;
        let copied_one = copy_one(&chunks, to, name, &meta, id);
        if copied_one.is_err() {
            if let Err(e) = to.submit(Discard(id), crate::store::Sync::Now).wait() {
                tracing::warn!(blob = name, "cannot drop a blob copied in part: {e}");
            }
        }
        release(id);
        copied_one?;
        copied += 1;
        progress(copied);
    }
    Ok(copied)
}

/// Copies one blob under the new id `id` (see [`copy`]).
fn copy_one(
    chunks: &ReadOnlyTable<(u64, u64), &'static [u8]>,
    to: &Store,
    name: &str,
    meta: &Meta,
    id: u64,
) -> Result<(), StoreError> {
    let mut staged = Some(Staged {
        name: name.to_owned(),
        job: meta.job.clone(),
        sub: meta.sub.clone(),
        started_ms: crate::time::now_ms(),
        node: to.node().to_owned(),
    });
    let mut batch: Vec<Chunk> = Vec::new();
    let mut bytes = 0;
    let rows = chunks
        .range((meta.id, 0)..=(meta.id, u64::MAX))
        .map_err(StoreError::redb("list blob chunks"))?;
    for row in rows {
        let (key, value) = row.map_err(StoreError::redb("list blob chunks"))?;
        let value = value.value();
        bytes += value.len();
        batch.push((key.value().1, value.to_vec()));
        if bytes >= crate::table::COPY_BATCH_BYTES {
            let stage = Stage {
                id,
                staged: staged.take(),
                chunks: std::mem::take(&mut batch),
                recycle: None,
                cursor: None,
                fence: None,
            };
            to.submit(stage, crate::store::Sync::Now).wait()?;
            bytes = 0;
        }
    }
    let publish = Publish {
        name: name.to_owned(),
        meta: Meta { id, ..meta.clone() },
        chunks: batch,
        if_absent: false,
        quota: 0,
    };
    match to.submit(publish, crate::store::Sync::Now).wait()? {
        Published::Stored { .. } => Ok(()),
        Published::Refused { message, .. } => Err(StoreError::Corrupt {
            key: format!("blobs/{name}"),
            message,
        }),
    }
}
