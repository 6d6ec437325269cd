//! The blobs' tables in a PostgreSQL store, for [`super::stored`]'s functions and changes
//! (each keeps its redb code and calls these beside it).
//!
//! The same tables as in redb: `blobs` (name → [`Meta`] as JSON), `blob_chunks` (the bytes,
//! `bytea`, by id and chunk index), `blob_staging` (uploads under way, with the node running
//! them) and `blob_usage` (bytes per token subject). Names sort as bytes (`COLLATE "C"`), as
//! redb sorts them. Chunk bytes are kept out of line and uncompressed (`STORAGE EXTERNAL`):
//! blobs are mostly compressed already, and a range read takes a `substring` of a chunk
//! without reading all of it.
//!
//! Several nodes share the database, so:
//! - blob ids come from the sequence `blob_ids`: never the same twice, whichever node asks;
//! - a publish or a delete of a name holds a transaction-level advisory lock on that name,
//!   so two nodes storing the same name one after the other each see the other's version;
//! - the usage of a subject changes only under its row's lock (`SELECT ... FOR UPDATE`), in
//!   the publish's (or the delete's) transaction, so two nodes can never both pass a quota;
//! - a staged upload is its node's: only that node prunes it when cut off (see
//!   [`prune_staged`]).
//!
//! A download reads from one `REPEATABLE READ` transaction held for it (see [`Snapshot`]).

use super::stored::{quota_message, Chunk, Meta, Published, Staged};
use crate::store::{Pg, PgTransaction, StoreError};
use edge_pg::tokio_postgres::IsolationLevel;
use edge_proto::ErrorCode;

/// The `blobs` plugin's layout steps in PostgreSQL.
pub(super) const SCHEMA: &[&str] = &["CREATE TABLE blobs (
        name text COLLATE \"C\" PRIMARY KEY,
        meta json NOT NULL
    );
    CREATE TABLE blob_chunks (
        id bigint NOT NULL,
        n bigint NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (id, n)
    );
    ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
    CREATE TABLE blob_staging (
        id bigint PRIMARY KEY,
        node text NOT NULL,
        staged json NOT NULL
    );
    CREATE INDEX blob_staging_node ON blob_staging (node);
    CREATE TABLE blob_usage (sub text PRIMARY KEY, bytes bigint NOT NULL);
    CREATE SEQUENCE blob_ids;"];

/// The first key of the advisory locks on blob names ("blob" in ASCII); the second is the
/// name's hash.
const NAME_LOCK: i32 = 0x626c_6f62;

/// An id as PostgreSQL keeps it. Ids of a PostgreSQL store come from its sequence (and `edge
/// store copy` gives copied blobs new ones), so they always fit.
fn sql_id(id: u64) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| StoreError::Corrupt {
        key: format!("blob_chunks/{id}"),
        message: "a blob id beyond PostgreSQL's bigint".into(),
    })
}

fn sql_bytes(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

fn from_sql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A fresh blob id from the sequence `blob_ids`.
pub(super) fn new_id(pg: &Pg) -> Result<u64, StoreError> {
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let row = client
            .query_one("SELECT nextval('blob_ids')", &[])
            .await
            .map_err(pg.query("take a blob id"))?;
        Ok(from_sql(row.get(0)))
    })
}

/// Writes chunks of the blob `id` (replacing chunks of the same index).
async fn write_chunks(
    txn: &PgTransaction<'_>,
    id: u64,
    chunks: &[Chunk],
) -> Result<(), StoreError> {
    if chunks.is_empty() {
        return Ok(());
    }
    let id = sql_id(id)?;
    let insert = txn
        .prepare(
            "INSERT INTO blob_chunks (id, n, data) VALUES ($1, $2, $3)
             ON CONFLICT (id, n) DO UPDATE SET data = EXCLUDED.data",
        )
        .await
        .map_err(txn.failed("write a blob chunk"))?;
    for (index, chunk) in chunks {
        txn.execute(&insert, &[&id, &sql_bytes(*index), &chunk.as_slice()])
            .await
            .map_err(txn.failed("write a blob chunk"))?;
    }
    Ok(())
}

/// Stages chunks of an upload, with its staging entry (the first time; a resumed job writes
/// it again, so that the node it goes on at owns it).
pub(super) async fn stage(
    txn: &PgTransaction<'_>,
    id: u64,
    staged: Option<&Staged>,
    chunks: &[Chunk],
) -> Result<(), StoreError> {
    if let Some(staged) = staged {
        let json = serde_json::to_string(staged).expect("a staging entry always serializes");
        txn.execute(
            "INSERT INTO blob_staging (id, node, staged) VALUES ($1, $2, $3::text::json)
             ON CONFLICT (id) DO UPDATE SET node = EXCLUDED.node, staged = EXCLUDED.staged",
            &[&sql_id(id)?, &staged.node, &json],
        )
        .await
        .map_err(txn.failed("stage a blob"))?;
    }
    write_chunks(txn, id, chunks).await
}

/// Deletes an id's chunks and its staging entry.
pub(super) async fn delete_id(txn: &PgTransaction<'_>, id: u64) -> Result<(), StoreError> {
    let id = sql_id(id)?;
    txn.execute("DELETE FROM blob_chunks WHERE id = $1", &[&id])
        .await
        .map_err(txn.failed("delete blob chunks"))?;
    txn.execute("DELETE FROM blob_staging WHERE id = $1", &[&id])
        .await
        .map_err(txn.failed("delete a staged blob"))?;
    Ok(())
}

/// Takes the lock on the name `name` until the transaction ends.
async fn lock_name(txn: &PgTransaction<'_>, name: &str) -> Result<(), StoreError> {
    txn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&NAME_LOCK, &name],
    )
    .await
    .map_err(txn.failed("lock a blob name"))?;
    Ok(())
}

/// The description of `name`, read in `txn`.
async fn meta_in(txn: &PgTransaction<'_>, name: &str) -> Result<Option<Meta>, StoreError> {
    let row = txn
        .query_opt("SELECT meta::text FROM blobs WHERE name = $1", &[&name])
        .await
        .map_err(txn.failed("read a blob"))?;
    row.map(|row| Meta::decode(name, row.get::<_, &str>(0).as_bytes()))
        .transpose()
}

/// Takes the row locks of the subjects' usage (creating rows of 0 bytes for those without),
/// in name order so that two transactions never wait for each other; returns their bytes.
async fn lock_usage(
    txn: &PgTransaction<'_>,
    subs: &[&str],
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut subs: Vec<&str> = subs.to_vec();
    subs.sort_unstable();
    subs.dedup();
    txn.execute(
        "INSERT INTO blob_usage (sub, bytes) SELECT s, 0 FROM unnest($1::text[]) AS s ORDER BY s
         ON CONFLICT (sub) DO NOTHING",
        &[&subs],
    )
    .await
    .map_err(txn.failed("write blob usage"))?;
    let rows = txn
        .query(
            "SELECT sub, bytes FROM blob_usage WHERE sub = ANY($1) ORDER BY sub FOR UPDATE",
            &[&subs],
        )
        .await
        .map_err(txn.failed("lock blob usage"))?;
    Ok(rows
        .iter()
        .map(|row| (row.get::<_, String>(0), from_sql(row.get(1))))
        .collect())
}

/// Sets the usage of `sub`, whose row [`lock_usage`] locked (deleting it at 0, as redb does).
async fn set_usage(txn: &PgTransaction<'_>, sub: &str, bytes: u64) -> Result<(), StoreError> {
    if bytes == 0 {
        txn.execute("DELETE FROM blob_usage WHERE sub = $1", &[&sub])
            .await
            .map_err(txn.failed("write blob usage"))?;
    } else {
        txn.execute(
            "UPDATE blob_usage SET bytes = $2 WHERE sub = $1",
            &[&sub, &sql_bytes(bytes)],
        )
        .await
        .map_err(txn.failed("write blob usage"))?;
    }
    Ok(())
}

/// The staging entry of the upload `id`, if it is staged.
pub(super) fn staged(pg: &Pg, id: u64) -> Result<Option<Staged>, StoreError> {
    let sql = sql_id(id)?;
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let row = client
            .query_opt(
                "SELECT staged::text FROM blob_staging WHERE id = $1",
                &[&sql],
            )
            .await
            .map_err(pg.query("read a staged blob"))?;
        row.map(|row| Staged::decode(id, row.get::<_, String>(0).as_bytes()))
            .transpose()
    })
}

/// [`super::stored::Publish`] in a PostgreSQL transaction: the same checks and writes as in
/// redb, under the name's lock and the usage rows' locks.
pub(super) async fn publish(
    txn: &PgTransaction<'_>,
    name: &str,
    meta: &Meta,
    chunks: &[Chunk],
    if_absent: bool,
    quota: u64,
) -> Result<Published, StoreError> {
    lock_name(txn, name).await?;
    let old = meta_in(txn, name).await?;
    if if_absent && old.is_some() {
        return Ok(Published::Refused {
            code: ErrorCode::AlreadyExists,
            message: format!(
                "a blob named `{name}` exists and the job asked not to replace it (if_absent); delete it first, or upload without if_absent"
            ),
        });
    }
    let sub = meta.sub.as_str();
    let mut subs = vec![sub];
    if let Some(old) = &old {
        subs.push(old.sub.as_str());
    }
    let usage = lock_usage(txn, &subs).await?;
    let used_by = |who: &str| {
        usage
            .iter()
            .find(|(s, _)| s == who)
            .map_or(0, |(_, bytes)| *bytes)
    };
    let used = used_by(sub);
    let freed = old.as_ref().filter(|o| o.sub == sub).map_or(0, |o| o.size);
    let after = used.saturating_sub(freed).saturating_add(meta.size);
    if quota > 0 && after > quota {
        // The rows of 0 bytes `lock_usage` made go again.
        txn.execute(
            "DELETE FROM blob_usage WHERE sub = ANY($1) AND bytes = 0",
            &[&subs],
        )
        .await
        .map_err(txn.failed("write blob usage"))?;
        return Ok(Published::Refused {
            code: ErrorCode::LimitExceeded,
            message: quota_message(sub, used.saturating_sub(freed), meta.size, quota),
        });
    }
    write_chunks(txn, meta.id, chunks).await?;
    let json = serde_json::to_string(meta).expect("a blob description always serializes");
    txn.execute(
        "INSERT INTO blobs (name, meta) VALUES ($1, $2::text::json)
         ON CONFLICT (name) DO UPDATE SET meta = EXCLUDED.meta",
        &[&name, &json],
    )
    .await
    .map_err(txn.failed("store a blob"))?;
    txn.execute(
        "DELETE FROM blob_staging WHERE id = $1",
        &[&sql_id(meta.id)?],
    )
    .await
    .map_err(txn.failed("unstage a blob"))?;
    if let Some(old) = &old {
        delete_id(txn, old.id).await?;
        if old.sub != sub {
            let left = used_by(&old.sub).saturating_sub(old.size);
            set_usage(txn, &old.sub, left).await?;
        }
    }
    set_usage(txn, sub, after).await?;
    Ok(Published::Stored { replaced: old })
}

/// [`super::stored::Remove`] in a PostgreSQL transaction.
pub(super) async fn remove(
    txn: &PgTransaction<'_>,
    name: &str,
) -> Result<Option<Meta>, StoreError> {
    lock_name(txn, name).await?;
    let row = txn
        .query_opt(
            "DELETE FROM blobs WHERE name = $1 RETURNING meta::text",
            &[&name],
        )
        .await
        .map_err(txn.failed("delete a blob"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let meta = Meta::decode(name, row.get::<_, &str>(0).as_bytes())?;
    delete_id(txn, meta.id).await?;
    let usage = lock_usage(txn, &[meta.sub.as_str()]).await?;
    let used = usage.first().map_or(0, |(_, bytes)| *bytes);
    set_usage(txn, &meta.sub, used.saturating_sub(meta.size)).await?;
    Ok(Some(meta))
}

/// The description of the blob `name`.
pub(super) fn meta(pg: &Pg, name: &str) -> Result<Option<Meta>, StoreError> {
    let name = name.to_owned();
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let row = client
            .query_opt("SELECT meta::text FROM blobs WHERE name = $1", &[&name])
            .await
            .map_err(pg.query("read a blob"))?;
        row.map(|row| Meta::decode(&name, row.get::<_, &str>(0).as_bytes()))
            .transpose()
    })
}

/// The bytes of blobs `sub` keeps.
pub(super) fn usage(pg: &Pg, sub: &str) -> Result<u64, StoreError> {
    let sub = sub.to_owned();
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let row = client
            .query_opt("SELECT bytes FROM blob_usage WHERE sub = $1", &[&sub])
            .await
            .map_err(pg.query("read blob usage"))?;
        Ok(row.map_or(0, |row| from_sql(row.get(0))))
    })
}

/// Up to `limit` descriptions in name order, of names from `start` (after it when
/// `exclusive`) that start with `prefix`; and whether more follow.
pub(super) fn list(
    pg: &Pg,
    prefix: &str,
    start: &str,
    exclusive: bool,
    limit: usize,
) -> Result<(Vec<(String, Meta)>, bool), StoreError> {
    let (prefix, start) = (prefix.to_owned(), start.to_owned());
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    pg.block(move |pg| async move {
        let client = pg.client().await?;
        let sql = if exclusive {
            "SELECT name, meta::text FROM blobs WHERE name > $1 AND starts_with(name, $2)
             ORDER BY name LIMIT $3"
        } else {
            "SELECT name, meta::text FROM blobs WHERE name >= $1 AND starts_with(name, $2)
             ORDER BY name LIMIT $3"
        };
        let rows = client
            .query(sql, &[&start, &prefix, &fetch])
            .await
            .map_err(pg.query("list blobs"))?;
        let more = rows.len() > limit;
        let items = rows
            .iter()
            .take(limit)
            .map(|row| {
                let name: String = row.get(0);
                let meta = Meta::decode(&name, row.get::<_, &str>(1).as_bytes())?;
                Ok((name, meta))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((items, more))
    })
}

/// What the store holds of no published blob: staged uploads (of every node), and chunks of
/// no blob.
pub(super) fn unpublished(pg: &Pg) -> Result<(u64, u64), StoreError> {
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM blob_staging),
                        (SELECT count(*) FROM blob_chunks c WHERE NOT EXISTS
                            (SELECT 1 FROM blobs b WHERE (b.meta->>'id')::bigint = c.id))",
                &[],
            )
            .await
            .map_err(pg.query("count unpublished blob chunks"))?;
        Ok((from_sql(row.get(0)), from_sql(row.get(1))))
    })
}

/// Deletes up to `batch` staged uploads of the node `node` that `is_live` says no running
/// job of this process owns, and whose job keeps no cursor (it may be resumed, on any node);
/// returns how many. Other nodes' uploads are theirs to prune: a
/// node cannot tell whether another one's job still runs.
pub(super) async fn prune_staged(
    txn: &PgTransaction<'_>,
    node: &str,
    batch: usize,
    is_live: fn(u64) -> bool,
) -> Result<usize, StoreError> {
    // Rows locked by a job's transaction (its publish, its discard) are skipped.
    let rows = txn
        .query(
            "SELECT id FROM blob_staging s WHERE node = $1
               AND NOT EXISTS (SELECT 1 FROM job_cursors c WHERE c.job = s.staged->>'job')
             ORDER BY id FOR UPDATE OF s SKIP LOCKED",
            &[&node],
        )
        .await
        .map_err(txn.failed("list staged blobs"))?;
    let mut doomed = Vec::new();
    for row in rows {
        let id = from_sql(row.get(0));
        // Checked while the row is locked: a job stages its id only while it is live, and
        // unstages it (committed) before it stops being live.
        if !is_live(id) {
            doomed.push(id);
            if doomed.len() == batch {
                break;
            }
        }
    }
    for id in &doomed {
        delete_id(txn, *id).await?;
    }
    Ok(doomed.len())
}

/// A request of a download to its transaction: chunk `index`, bytes `from..from + len` of
/// it; answered with the chunk's length and those bytes (`None`: no such chunk).
struct Request {
    id: i64,
    index: i64,
    from: i32,
    len: i32,
    reply: std::sync::mpsc::SyncSender<ChunkAnswer>,
}

/// A chunk's length and the bytes asked of it, or `None` when there is no such chunk.
type ChunkAnswer = Result<Option<(usize, Vec<u8>)>, StoreError>;

/// A download's view of the store: one `REPEATABLE READ READ ONLY` transaction, opened
/// before the blob's description is read and held until the download ends (when this is
/// dropped, the transaction rolls back and its connection goes back to the pool).
///
/// So a download reads the version it started with, whole, even when the blob is replaced
/// or deleted meanwhile: the replacing transaction deletes the old chunks, but PostgreSQL
/// keeps the row versions a running snapshot can see (and vacuum leaves them alone) until
/// that snapshot ends. This is the same guarantee redb's read snapshot gives, and costs the
/// same kind of thing: a download holds one of the pool's connections (`[store] pool_size`)
/// and, while it runs, keeps vacuum from reclaiming rows deleted after it started. Memory
/// stays bounded: the transaction serves one chunk (at most [`super::stored::CHUNK_BYTES`])
/// per request, and the download asks for the next one only once it passed the last on.
pub(super) struct Snapshot {
    requests: tokio::sync::mpsc::UnboundedSender<Request>,
}

/// Opens the blob `name` for a download: its description and the [`Snapshot`] it is read
/// from.
pub(super) fn open(pg: &Pg, name: &str) -> Result<Option<(Meta, Snapshot)>, StoreError> {
    let (opened, answer) = std::sync::mpsc::sync_channel(1);
    let (requests, mut waiting) = tokio::sync::mpsc::unbounded_channel::<Request>();
    let name = name.to_owned();
    let on = pg.clone();
    pg.spawn(async move {
        let pg = on;
        let mut pooled = match pg.client().await {
            Ok(pooled) => pooled,
            Err(e) => {
                let _ = opened.send(Err(StoreError::Postgres(e)));
                return;
            }
        };
        let client: &mut edge_pg::tokio_postgres::Client = &mut pooled;
        let begun = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| StoreError::Postgres(pg.query("begin a download")(e)));
        let txn = match begun {
            Ok(txn) => txn,
            Err(e) => {
                let _ = opened.send(Err(e));
                return;
            }
        };
        let found = async {
            let row = txn
                .query_opt("SELECT meta::text FROM blobs WHERE name = $1", &[&name])
                .await
                .map_err(pg.query("read a blob"))?;
            let meta = row
                .map(|row| Meta::decode(&name, row.get::<_, &str>(0).as_bytes()))
                .transpose()?;
            let statement = txn
                .prepare(
                    "SELECT length(data), substring(data FROM $3 FOR $4) FROM blob_chunks
                     WHERE id = $1 AND n = $2",
                )
                .await
                .map_err(pg.query("read a blob chunk"))?;
            Ok::<_, StoreError>((meta, statement))
        }
        .await;
        let statement = match found {
            Ok((Some(meta), statement)) => {
                if opened.send(Ok(Some(meta))).is_err() {
                    return;
                }
                statement
            }
            Ok((None, _)) => {
                let _ = opened.send(Ok(None));
                return;
            }
            Err(e) => {
                let _ = opened.send(Err(e));
                return;
            }
        };
        while let Some(request) = waiting.recv().await {
            let answer = txn
                .query_opt(
                    &statement,
                    &[&request.id, &request.index, &request.from, &request.len],
                )
                .await
                .map_err(|e| StoreError::Postgres(pg.query("read a blob chunk")(e)))
                .map(|row| {
                    row.map(|row| {
                        let length: i32 = row.get(0);
                        let bytes: Vec<u8> = row.get(1);
                        (usize::try_from(length).unwrap_or(0), bytes)
                    })
                });
            if request.reply.send(answer).is_err() {
                return;
            }
        }
        // The download ended: `txn` rolls back as it is dropped, then the connection goes
        // back to the pool.
    });
    let closed = || StoreError::Postgres(edge_pg::PgError::Closed);
    match answer.recv().map_err(|_| closed())?? {
        Some(meta) => Ok(Some((meta, Snapshot { requests }))),
        None => Ok(None),
    }
}

impl Snapshot {
    /// Bytes `from..from + len` of chunk `index` of blob `id`, with the chunk's whole length;
    /// `None` when the snapshot holds no such chunk.
    pub(super) fn chunk(&self, id: u64, index: u64, from: usize, len: usize) -> ChunkAnswer {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let int = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let request = Request {
            id: sql_id(id)?,
            index: sql_bytes(index),
            from: int(from).saturating_add(1),
            len: int(len),
            reply,
        };
        let closed = || StoreError::Postgres(edge_pg::PgError::Closed);
        self.requests.send(request).map_err(|_| closed())?;
        answer.recv().map_err(|_| closed())?
    }
}
