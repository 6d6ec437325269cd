//! The `ports` table in a PostgreSQL store: the same encoded values as in redb (`bytea`: the
//! bytes stay as the codec wrote them), written a batch at a time with `COPY` into a
//! temporary table and one upsert that counts what it inserted and updated.

use super::codec;
use super::model::Port;
use crate::store::{Pg, PgTransaction, Store, StoreError};
use edge_pg::tokio_postgres::binary_copy::BinaryCopyInWriter;
use edge_pg::tokio_postgres::types::Type;

/// The `ports` plugin's layout steps in PostgreSQL.
pub(super) const SCHEMA: &[&str] =
    &["CREATE TABLE ports (key text PRIMARY KEY, value bytea NOT NULL)"];

/// Upserts one round of a batch (each key once, in key order, so that concurrent writers lock
/// rows in one order and never deadlock), and returns `(inserted, updated)`; the rest of the
/// round was unchanged. A value equal to the stored one is not written.
pub(super) async fn upsert<'k>(
    txn: &PgTransaction<'_>,
    rows: impl Iterator<Item = (&'k str, &'k [u8])>,
) -> Result<(u64, u64), StoreError> {
    let failed = |operation| txn.failed(operation);
    txn.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS ports_in (key text, value bytea) ON COMMIT DELETE ROWS;
         TRUNCATE ports_in",
    )
    .await
    .map_err(failed("prepare the batch's table"))?;
    let sink = txn
        .copy_in("COPY ports_in (key, value) FROM STDIN BINARY")
        .await
        .map_err(failed("copy the batch"))?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::BYTEA]));
    for (key, value) in rows {
        writer
            .as_mut()
            .write(&[&key, &value])
            .await
            .map_err(failed("copy the batch"))?;
    }
    writer.finish().await.map_err(failed("copy the batch"))?;
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
/// of the same key), [`COPY_BATCH`] per transaction. Returns how many.
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
            return Ok(copied);
        }
        copied += batch.len() as u64;
        to.submit(Rows(batch), crate::store::Sync::Now).wait()?;
        progress(copied);
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
