//! The `ports` table in a PostgreSQL store: the same encoded values as in redb (`bytea`: the
//! bytes stay as the codec wrote them), written a batch at a time with `COPY` into a
//! temporary table and one upsert that counts what it inserted and updated.

use super::codec;
use super::model::Port;
use crate::store::{Pg, PgTransaction, Store, StoreError};
use edge_pg::tokio_postgres::binary_copy::BinaryCopyInWriter;
use edge_pg::tokio_postgres::types::Type;

/// The `ports` plugin's layout steps in PostgreSQL: 1, the ports; 2, the change history (as
/// in redb, [`super::changes`]: the versions jobs replaced, with their time in a column of its
/// own for pruning, and the codes each transaction of a job changed). Keys compare as bytes
/// (`COLLATE "C"`), as in redb, whatever the database's locale.
pub(super) const SCHEMA: &[&str] = &[
    "CREATE TABLE ports (key text COLLATE \"C\" PRIMARY KEY, value bytea NOT NULL)",
    "CREATE TABLE ports_history (
        code text COLLATE \"C\" NOT NULL,
        job text COLLATE \"C\" NOT NULL,
        time_ms bigint NOT NULL,
        version bytea NOT NULL,
        PRIMARY KEY (code, job)
    );
    CREATE TABLE ports_job_changes (
        job text COLLATE \"C\" NOT NULL,
        part bigint NOT NULL,
        codes bytea NOT NULL,
        PRIMARY KEY (job, part)
    );",
];

/// Upserts one round of a batch (each key once, in key order, so that concurrent writers lock
/// rows in one order and never deadlock), and returns `(inserted, updated)`; the rest of the
/// round was unchanged. A value equal to the stored one is not written.
pub(super) async fn upsert<'k>(
    txn: &PgTransaction<'_>,
    rows: impl Iterator<Item = (&'k str, &'k [u8])>,
) -> Result<(u64, u64), StoreError> {
    let failed = |operation| txn.failed(operation);
    copy_rows(txn, rows).await?;
    let row = txn
        .query_one(
            "WITH up AS (
                INSERT INTO ports AS p (key, value)
                SELECT key, value FROM ports_in ORDER BY key
                ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
                WHERE p.value IS DISTINCT FROM EXCLUDED.value
                RETURNING (xmax = 0) AS inserted
            )
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up",
            &[],
        )
        .await
        .map_err(failed("upsert the batch"))?;
    let inserted: i64 = row.get(0);
    let updated: i64 = row.get(1);
    Ok((inserted as u64, updated as u64))
}

/// Ports copied per transaction by [`copy`].
const COPY_BATCH: usize = 10_000;

/// Copies every port of the redb store `from` into the PostgreSQL store `to` (replacing ports
/// of the same key), [`COPY_BATCH`] per transaction, then the change history. Returns how
/// many entries.
pub(super) fn copy(
    from: &Store,
    to: &Store,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, StoreError> {
    use redb::ReadableTable;
    let txn = from.read()?;
    let table = txn
        .open_table(super::PORTS)
        .map_err(StoreError::redb("open ports table"))?;
    let mut rows = table.iter().map_err(StoreError::redb("list ports"))?;
    let mut copied = 0;
    loop {
        let mut batch = Vec::with_capacity(COPY_BATCH);
        for row in rows.by_ref().take(COPY_BATCH) {
            let (key, value) = row.map_err(StoreError::redb("list ports"))?;
            batch.push((key.value().to_owned(), value.value().bytes().to_vec()));
        }
        if batch.is_empty() {
            let crate::store::Kind::Postgres(pg) = to.kind() else {
                return Err(StoreError::NotOnPostgres);
            };
            return Ok(copied + copy_history(from, pg, copied, progress)?);
        }
        copied += batch.len() as u64;
        to.submit(Rows(batch), crate::store::Sync::Now).wait()?;
        progress(copied);
    }
}

/// Copies the change history (the versions jobs replaced, and the codes each job changed),
/// [`COPY_BATCH`] entries per transaction. Returns how many entries.
fn copy_history(
    from: &Store,
    to: &Pg,
    base: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, StoreError> {
    use redb::ReadableTable;
    let txn = from.read()?;
    let versions = txn
        .open_table(super::changes::VERSIONS)
        .map_err(StoreError::redb("open ports history"))?;
    let mut copied = 0;
    let mut rows = versions
        .iter()
        .map_err(StoreError::redb("read ports history"))?;
    loop {
        let (mut codes, mut jobs, mut times, mut bytes) = (vec![], vec![], vec![], vec![]);
        for row in rows.by_ref().take(COPY_BATCH) {
            let (key, value) = row.map_err(StoreError::redb("read ports history"))?;
            let (code, job) = key.value();
            let stored = value.value().bytes().to_vec();
            let version = value.value().decode(code)?;
            codes.push(code.to_owned());
            jobs.push(job.to_owned());
            times.push(i64::try_from(version.time_ms).unwrap_or(i64::MAX));
            bytes.push(stored);
        }
        if codes.is_empty() {
            break;
        }
        copied += codes.len() as u64;
        to.block(|pg| async move {
            let client = pg.client().await?;
            client
                .execute(
                    "INSERT INTO ports_history (code, job, time_ms, version)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[])
                     ON CONFLICT (code, job) DO UPDATE SET time_ms = EXCLUDED.time_ms,
                         version = EXCLUDED.version",
                    &[&codes, &jobs, &times, &bytes],
                )
                .await
                .map_err(pg.query("copy the ports history"))?;
            Ok::<(), StoreError>(())
        })?;
        progress(base + copied);
    }
    let changes = txn
        .open_table(super::changes::JOB_CHANGES)
        .map_err(StoreError::redb("open ports job changes"))?;
    let mut rows = changes
        .iter()
        .map_err(StoreError::redb("read ports job changes"))?;
    loop {
        let (mut jobs, mut parts, mut lists) = (vec![], vec![], vec![]);
        for row in rows.by_ref().take(COPY_BATCH) {
            let (key, value) = row.map_err(StoreError::redb("read ports job changes"))?;
            let (job, part) = key.value();
            jobs.push(job.to_owned());
            parts.push(i64::try_from(part).unwrap_or(i64::MAX));
            lists.push(value.value().to_vec());
        }
        if jobs.is_empty() {
            return Ok(copied);
        }
        copied += jobs.len() as u64;
        to.block(|pg| async move {
            let client = pg.client().await?;
            client
                .execute(
                    "INSERT INTO ports_job_changes (job, part, codes)
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
                     ON CONFLICT (job, part) DO UPDATE SET codes = EXCLUDED.codes",
                    &[&jobs, &parts, &lists],
                )
                .await
                .map_err(pg.query("copy the ports job changes"))?;
            Ok::<(), StoreError>(())
        })?;
        progress(base + copied);
    }
}

/// Ports in key order, as a change (of either store).
struct Rows(Vec<(String, Vec<u8>)>);

impl crate::store::Change for Rows {
    type Output = ();

    fn apply(&mut self, txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut table = txn
            .open_table(super::PORTS)
            .map_err(StoreError::redb("open ports table"))?;
        for (key, value) in &self.0 {
            table
                .insert(key.as_str(), super::StoredPort::from_encoded(value))
                .map_err(StoreError::redb("write port"))?;
        }
        Ok(())
    }

    fn apply_postgres<'a>(
        &'a mut self,
        txn: &'a PgTransaction<'_>,
    ) -> crate::store::PgFuture<'a, ()> {
        Box::pin(async move {
            upsert(txn, self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).await?;
            Ok(())
        })
    }
}

/// Fills the batch's temporary table with `rows`.
async fn copy_rows<'k>(
    txn: &PgTransaction<'_>,
    rows: impl Iterator<Item = (&'k str, &'k [u8])>,
) -> Result<usize, StoreError> {
    txn.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS ports_in (key text COLLATE \"C\", value bytea) ON COMMIT DELETE ROWS;
         DELETE FROM ports_in",
    )
    .await
    .map_err(txn.failed("prepare the batch's table"))?;
    let sink = txn
        .copy_in("COPY ports_in (key, value) FROM STDIN BINARY")
        .await
        .map_err(txn.failed("copy the batch"))?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::BYTEA]));
    let mut len = 0;
    for (key, value) in rows {
        writer
            .as_mut()
            .write(&[&key, &value])
            .await
            .map_err(txn.failed("copy the batch"))?;
        len += 1;
    }
    writer
        .finish()
        .await
        .map_err(txn.failed("copy the batch"))?;
    Ok(len)
}

/// What one round of a job's batch changed: the keys it inserted, and those it updated.
pub(super) struct Changed {
    pub inserted: Vec<String>,
    pub updated: Vec<String>,
}

/// [`upsert`] for a job whose changes are recorded ([`super::changes`]): the new keys are
/// inserted first; the rows of the keys that exist are locked (in key order); the version each
/// update replaces is recorded under the job (the first one a job replaced stays), but not for
/// `recorded` keys (changed already in this transaction: redb records a key's first change in
/// a transaction); then the updates. Every key the round changed is in the answer.
pub(super) async fn upsert_recorded<'k>(
    txn: &PgTransaction<'_>,
    rows: impl Iterator<Item = (&'k str, &'k [u8])>,
    job: &str,
    prefix: &[u8],
    time_ms: u64,
    recorded: &[String],
) -> Result<Changed, StoreError> {
    let len = copy_rows(txn, rows).await?;
    let inserted = txn
        .query(
            "INSERT INTO ports (key, value) SELECT key, value FROM ports_in ORDER BY key
             ON CONFLICT (key) DO NOTHING RETURNING key",
            &[],
        )
        .await
        .map_err(txn.failed("insert the batch's new ports"))?;
    if inserted.len() == len {
        // All new (an import): nothing existed to lock, record or update.
        return Ok(Changed {
            inserted: inserted.iter().map(|row| row.get(0)).collect(),
            updated: Vec::new(),
        });
    }
    txn.query_one(
        "SELECT count(*) FROM (SELECT 1 FROM ports p JOIN ports_in i ON p.key = i.key
             ORDER BY p.key FOR UPDATE OF p) AS locked",
        &[],
    )
    .await
    .map_err(txn.failed("lock the batch's ports"))?;
    let time_ms = i64::try_from(time_ms).unwrap_or(i64::MAX);
    txn.execute(
        "INSERT INTO ports_history (code, job, time_ms, version)
         SELECT p.key, $1, $2, $3 || p.value FROM ports p JOIN ports_in i ON p.key = i.key
         WHERE p.value IS DISTINCT FROM i.value AND NOT (p.key = ANY($4))
         ON CONFLICT (code, job) DO NOTHING",
        &[&job, &time_ms, &prefix, &recorded],
    )
    .await
    .map_err(txn.failed("record the versions the batch replaces"))?;
    let updated = txn
        .query(
            "UPDATE ports p SET value = i.value FROM ports_in i
             WHERE p.key = i.key AND p.value IS DISTINCT FROM i.value RETURNING p.key",
            &[],
        )
        .await
        .map_err(txn.failed("update the batch's ports"))?;
    Ok(Changed {
        inserted: inserted.iter().map(|row| row.get(0)).collect(),
        updated: updated.iter().map(|row| row.get(0)).collect(),
    })
}

/// The first key of the advisory locks on a job's change lists ("port" in ASCII).
const JOB_CHANGES_LOCK: i32 = 0x706f_7274;

/// Appends `codes` ([`super::changes`]' `ChangedCodes` form) as `job`'s next change list.
pub(super) async fn record_codes(
    txn: &PgTransaction<'_>,
    job: &str,
    codes: &[u8],
) -> Result<(), StoreError> {
    // The parts of one batch commit at once: they number their lists one after the other
    // (a lock on the job's name, held to the end of the transaction, which this ends).
    txn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&JOB_CHANGES_LOCK, &job],
    )
    .await
    .map_err(txn.failed("take the job's change list lock"))?;
    txn.execute(
        "INSERT INTO ports_job_changes (job, part, codes)
         SELECT $1, coalesce(max(part) + 1, 0), $2 FROM ports_job_changes WHERE job = $1",
        &[&job, &codes],
    )
    .await
    .map_err(txn.failed("record the job's changed ports"))?;
    Ok(())
}

/// Up to `limit` versions of `code` that jobs replaced, newest first, before job `after`:
/// `(job, stored version)`.
pub(super) fn history_page(
    pg: &Pg,
    code: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let (code, after, limit) = (code.to_owned(), after.map(str::to_owned), limit as i64);
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let rows = client
            .query(
                "SELECT job, version FROM ports_history
                 WHERE code = $1 AND ($2::text IS NULL OR job < $2)
                 ORDER BY job DESC LIMIT $3",
                &[&code, &after, &limit],
            )
            .await
            .map_err(pg.query("read a port's history"))?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    })
}

/// Change list `part` of `job`.
pub(super) fn changed_by(pg: &Pg, job: &str, part: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let (job, part) = (job.to_owned(), i64::try_from(part).unwrap_or(i64::MAX));
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let row = client
            .query_opt(
                "SELECT codes FROM ports_job_changes WHERE job = $1 AND part = $2",
                &[&job, &part],
            )
            .await
            .map_err(pg.query("read a job's changed ports"))?;
        Ok(row.map(|row| row.get(0)))
    })
}

/// A page of change lists after `(job, part)`, in order.
pub(super) fn change_lists(
    pg: &Pg,
    after: Option<(String, i64)>,
) -> Result<Vec<(String, i64, Vec<u8>)>, StoreError> {
    let (job, part) = after.unwrap_or_default();
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let rows = client
            .query(
                "SELECT job, part, codes FROM ports_job_changes WHERE (job, part) > ($1, $2)
                 ORDER BY job, part LIMIT 1000",
                &[&job, &part],
            )
            .await
            .map_err(pg.query("read the changed ports"))?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect())
    })
}

/// The jobs after `job` that replaced a version of `code`, and what the first of them
/// replaced (the port as `job` left it).
pub(super) async fn later_jobs(
    txn: &PgTransaction<'_>,
    code: &str,
    job: &str,
) -> Result<(Vec<String>, Option<Vec<u8>>), StoreError> {
    let rows = txn
        .query(
            "SELECT job, version FROM ports_history WHERE code = $1 AND job > $2 ORDER BY job",
            &[&code, &job],
        )
        .await
        .map_err(txn.failed("read a port's history"))?;
    let left = match rows.first() {
        Some(row) => {
            let bytes: Vec<u8> = row.get(1);
            let version = <super::changes::Version as crate::table::Encoded>::decode(&bytes)
                .map_err(|message| StoreError::Corrupt {
                    key: code.to_owned(),
                    message,
                })?;
            Some(version.replaced)
        }
        None => None,
    };
    Ok((rows.iter().map(|row| row.get(0)).collect(), left))
}

/// The stored bytes of port `code`, its row locked until the transaction ends.
pub(super) async fn lock_port(
    txn: &PgTransaction<'_>,
    code: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let row = txn
        .query_opt(
            "SELECT value FROM ports WHERE key = $1 FOR UPDATE",
            &[&code],
        )
        .await
        .map_err(txn.failed("read a port"))?;
    Ok(row.map(|row| row.get(0)))
}

/// The version of `code` that `job` replaced, as stored.
pub(super) async fn version(
    txn: &PgTransaction<'_>,
    code: &str,
    job: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let row = txn
        .query_opt(
            "SELECT version FROM ports_history WHERE code = $1 AND job = $2",
            &[&code, &job],
        )
        .await
        .map_err(txn.failed("read a port's history"))?;
    Ok(row.map(|row| row.get(0)))
}

/// Writes port `code`'s stored bytes.
pub(super) async fn put_port(
    txn: &PgTransaction<'_>,
    code: &str,
    value: &[u8],
) -> Result<(), StoreError> {
    txn.execute(
        "INSERT INTO ports (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[&code, &value],
    )
    .await
    .map_err(txn.failed("restore a port"))?;
    Ok(())
}

/// Removes port `code`.
pub(super) async fn remove_port(txn: &PgTransaction<'_>, code: &str) -> Result<(), StoreError> {
    txn.execute("DELETE FROM ports WHERE key = $1", &[&code])
        .await
        .map_err(txn.failed("remove a port"))?;
    Ok(())
}

/// Records that `job` replaced `replaced` (the first version it replaced stays).
pub(super) async fn record_version(
    txn: &PgTransaction<'_>,
    code: &str,
    job: &str,
    time_ms: u64,
    prefix: &[u8],
    replaced: &[u8],
) -> Result<(), StoreError> {
    let time_ms = i64::try_from(time_ms).unwrap_or(i64::MAX);
    let mut version = prefix.to_vec();
    version.extend_from_slice(replaced);
    txn.execute(
        "INSERT INTO ports_history (code, job, time_ms, version) VALUES ($1, $2, $3, $4)
         ON CONFLICT (code, job) DO NOTHING",
        &[&code, &job, &time_ms, &version],
    )
    .await
    .map_err(txn.failed("record a port version"))?;
    Ok(())
}

/// Deletes up to `batch` versions beyond the newest `keep` of their port (0: no count limit)
/// or replaced before `cutoff_ms`; returns how many.
pub(super) fn prune_versions(
    pg: &Pg,
    keep: u64,
    cutoff_ms: Option<u64>,
    batch: usize,
) -> Result<u64, StoreError> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    let cutoff = cutoff_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
    let batch = batch as i64;
    pg.block(|pg| async move {
        let client = pg.client().await?;
        client
            .execute(
                "DELETE FROM ports_history WHERE (code, job) IN (
                    SELECT code, job FROM (
                        SELECT code, job, time_ms,
                               row_number() OVER (PARTITION BY code ORDER BY job DESC) AS newer
                        FROM ports_history) AS v
                    WHERE ($1::bigint > 0 AND newer > $1::bigint) OR time_ms < $2::bigint
                    LIMIT $3)",
                &[&keep, &cutoff, &batch],
            )
            .await
            .map_err(pg.query("prune the ports history"))
            .map_err(StoreError::from)
    })
}

/// Deletes up to `batch` change lists of jobs the job history no longer has.
pub(super) fn prune_orphaned_changes(pg: &Pg, batch: usize) -> Result<u64, StoreError> {
    let batch = batch as i64;
    pg.block(|pg| async move {
        let client = pg.client().await?;
        client
            .execute(
                "DELETE FROM ports_job_changes WHERE (job, part) IN (
                    SELECT c.job, c.part FROM ports_job_changes c
                    LEFT JOIN jobs j ON j.job = c.job WHERE j.job IS NULL LIMIT $1)",
                &[&batch],
            )
            .await
            .map_err(pg.query("prune the changed ports"))
            .map_err(StoreError::from)
    })
}

/// The port stored under `code`.
pub(super) fn get(pg: &Pg, code: &str) -> Result<Option<Port>, StoreError> {
    let code = code.to_owned();
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let row = client
            .query_opt("SELECT value FROM ports WHERE key = $1", &[&code])
            .await
            .map_err(pg.query("read a port"))?;
        row.map(|row| decode(&code, row.get(0))).transpose()
    })
}

/// Up to `limit` `(key, port)` pairs after `after`, in key order.
pub(super) fn scan(
    pg: &Pg,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Port)>, StoreError> {
    let after = after.map(str::to_owned);
    let limit = limit as i64;
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let rows = match &after {
            Some(after) => {
                client
                    .query(
                        "SELECT key, value FROM ports WHERE key > $1 ORDER BY key LIMIT $2",
                        &[after, &limit],
                    )
                    .await
            }
            None => {
                client
                    .query(
                        "SELECT key, value FROM ports ORDER BY key LIMIT $1",
                        &[&limit],
                    )
                    .await
            }
        }
        .map_err(pg.query("list ports"))?;
        rows.iter()
            .map(|row| {
                let key: String = row.get(0);
                let port = decode(&key, row.get(1))?;
                Ok((key, port))
            })
            .collect()
    })
}

/// How many ports the store holds.
pub(super) fn count(pg: &Pg) -> Result<u64, StoreError> {
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM ports", &[])
            .await
            .map_err(pg.query("count ports"))?;
        Ok(row.get::<_, i64>(0) as u64)
    })
}

fn decode(key: &str, value: &[u8]) -> Result<Port, StoreError> {
    codec::decode(value).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
}
