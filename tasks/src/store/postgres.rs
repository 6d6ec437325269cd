//! The PostgreSQL store: its layout versions, and how a [`Change`] commits there.
//!
//! Layouts work as in redb ([`super::schema`]): the store's own tables have a version
//! (`schema` in the `edge_meta` table) and so does each plugin's (`schema.<plugin>`). A
//! version is the number of steps of SQL that ran ([`CORE`], and each plugin's
//! [`crate::table::Storage::postgres`]). Every node runs the missing steps when it starts,
//! one node at a time (an advisory lock), in one transaction; a database set up by a newer
//! edge is refused.
//!
//! Changes commit in a transaction each, on a pooled connection: PostgreSQL runs many writers
//! at once (a job's batch beside another's), so there is no writer thread to group them. A
//! transaction the database asks to retry (a serialization failure or a deadlock) is made
//! again, a few times, from the start.

use super::{OpenError, StoreError};
use crate::registry::Registry;
use crate::writer::{Change, Ticket};
use edge_pg::{Pg, PgError};
use std::time::Duration;

/// The store's own tables, one step of SQL per layout version (2 is below): 1, the job history (the
/// record as JSON; which node runs it, whether it runs, when it ended, for the queries), the
/// token deny-list, the users and the subjects' deny-list, the claims on watched folders' files
/// (per node: each node watches its own folders), the validators of URL sources, and the
/// nodes with their slots (a part of every job id, so that ids never collide). Keys compare
/// as bytes (`COLLATE "C"`), as redb compares them, whatever the database's locale.
const CORE: &[&str] = &[
    "CREATE TABLE jobs (
        job text COLLATE \"C\" PRIMARY KEY,
        node text NOT NULL,
        running boolean NOT NULL,
        ended bigint,
        record json NOT NULL
    );
    CREATE INDEX jobs_running ON jobs (node) WHERE running;
    CREATE INDEX jobs_ended ON jobs (ended) WHERE ended IS NOT NULL;
    CREATE TABLE revoked_tokens (
        jti text COLLATE \"C\" PRIMARY KEY,
        revoked_at bigint NOT NULL,
        expires bigint NOT NULL
    );
    CREATE TABLE users (name text COLLATE \"C\" PRIMARY KEY, record json NOT NULL);
    CREATE TABLE revoked_subjects (sub text COLLATE \"C\" PRIMARY KEY, before bigint NOT NULL);
    CREATE TABLE source_claims (
        node text NOT NULL,
        file text COLLATE \"C\" NOT NULL,
        claim json NOT NULL,
        PRIMARY KEY (node, file)
    );
    CREATE TABLE url_validators (url text COLLATE \"C\" PRIMARY KEY, validators json NOT NULL);
    CREATE TABLE edge_nodes (
        node text PRIMARY KEY,
        slot integer NOT NULL UNIQUE,
        started bigint NOT NULL
    );",
    // 2: the cursors of resumable jobs (`seen`: when the job was last heard of, for the
    // resume window).
    "CREATE TABLE job_cursors (
        job text COLLATE \"C\" PRIMARY KEY,
        epoch bigint NOT NULL,
        seen bigint NOT NULL,
        cursor json NOT NULL
    );
    CREATE INDEX job_cursors_seen ON job_cursors (seen);",
];

/// The layout version of the PostgreSQL store's own tables in this build.
pub const PG_SCHEMA_VERSION: u64 = CORE.len() as u64;

/// Key of the advisory lock held while a node sets up the tables ("edge" in ASCII, then 1).
const SETUP_LOCK: i64 = 0x6564_6765_0001;

/// Brings the database to this build's layouts: creates `edge_meta`, runs the store's and
/// each plugin's missing steps, and records the versions. Then registers `node` and returns
/// its slot (0 to 255): the one it had, or the lowest free one.
pub(super) fn prepare(pg: &Pg, node: &str, registry: &Registry) -> Result<u8, OpenError> {
    let mut owners: Vec<(String, String, &'static [&'static str])> =
        vec![("schema".into(), "the store's own tables".into(), CORE)];
    for plugin in registry.plugins() {
        owners.push((
            format!("schema.{}", plugin.name),
            format!("the tables of task plugin `{}`", plugin.name),
            plugin.storage.postgres,
        ));
    }
    let target = pg.target().to_owned();
    let node = node.to_owned();
    pg.block(move |pg| async move {
        let mut client = pg.client().await?;
        let txn = client
            .transaction()
            .await
            .map_err(pg.query("begin the setup"))?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK])
            .await
            .map_err(pg.query("take the setup lock"))?;
        txn.batch_execute(
            "CREATE TABLE IF NOT EXISTS edge_meta (key text PRIMARY KEY, value bigint NOT NULL)",
        )
        .await
        .map_err(pg.query("create edge_meta"))?;
        for (key, owner, steps) in owners {
            let found: Option<i64> = txn
                .query_opt("SELECT value FROM edge_meta WHERE key = $1", &[&key])
                .await
                .map_err(pg.query("read a layout version"))?
                .map(|row| row.get(0));
            let found = found.map_or(0, |v| u64::try_from(v).unwrap_or(0));
            let supported = steps.len() as u64;
            if found > supported {
                return Err(OpenError::NewerSchema {
                    path: target.clone().into(),
                    owner,
                    found,
                    supported,
                });
            }
            if found == supported {
                continue;
            }
            for (step, sql) in steps.iter().enumerate().skip(found as usize) {
                tracing::info!(%owner, version = step + 1, "setting up the PostgreSQL store");
                txn.batch_execute(sql)
                    .await
                    .map_err(pg.query("a layout step"))?;
            }
            txn.execute(
                "INSERT INTO edge_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &(supported as i64)],
            )
            .await
            .map_err(pg.query("record a layout version"))?;
        }
        let slot: Option<i32> = txn
            .query_one(
                "INSERT INTO edge_nodes (node, slot, started)
                 VALUES ($1, (SELECT min(s) FROM generate_series(0, 255) AS s
                              WHERE s NOT IN (SELECT slot FROM edge_nodes)),
                         extract(epoch FROM now())::bigint)
                 ON CONFLICT (node) DO UPDATE SET started = EXCLUDED.started
                 RETURNING slot",
                &[&node],
            )
            .await
            .map_err(|e| match e.code() {
                Some(code) if code.code() == "23502" => OpenError::TooManyNodes,
                _ => OpenError::Postgres(pg.query("register the node")(e)),
            })?
            .get(0);
        txn.commit().await.map_err(pg.query("commit the setup"))?;
        let slot = slot.and_then(|s| u8::try_from(s).ok());
        slot.ok_or(OpenError::TooManyNodes)
    })
}

impl From<PgError> for OpenError {
    fn from(e: PgError) -> OpenError {
        OpenError::Postgres(e)
    }
}

/// Commits `change` in a transaction of its own; the ticket answers once it committed.
pub(super) fn submit<C: Change>(pg: &Pg, change: C) -> Ticket<C::Output> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let on = pg.clone();
    pg.spawn(async move {
        let mut change = change;
        let _ = reply.send(commit(&on, &mut change).await);
    });
    Ticket::new(answer)
}

/// A transaction of the PostgreSQL store, as [`Change::apply_postgres`] gets it: the
/// statements of `tokio_postgres`'s transaction, and [`PgTransaction::failed`] to name their
/// errors.
pub struct PgTransaction<'a> {
    txn: edge_pg::tokio_postgres::Transaction<'a>,
    pg: Pg,
}

impl<'a> std::ops::Deref for PgTransaction<'a> {
    type Target = edge_pg::tokio_postgres::Transaction<'a>;

    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}

impl PgTransaction<'_> {
    /// Maps a statement's error to the store's: the database away is unavailable (the job
    /// fails `store_unavailable`), anything else a failed `operation`.
    pub fn failed(
        &self,
        operation: &'static str,
    ) -> impl Fn(edge_pg::tokio_postgres::Error) -> StoreError {
        let query = self.pg.query(operation);
        move |e| StoreError::Postgres(query(e))
    }
}

/// Attempts at a transaction the database asks to retry.
const ATTEMPTS: u32 = 5;

/// Makes `change` in a transaction and commits it, again from the start when the database
/// asks to retry.
async fn commit<C: Change>(pg: &Pg, change: &mut C) -> Result<C::Output, StoreError> {
    let mut attempt = 1;
    loop {
        let mut pooled = pg.client().await?;
        let client: &mut edge_pg::tokio_postgres::Client = &mut pooled;
        let made = async {
            let txn = PgTransaction {
                txn: client.transaction().await.map_err(pg.query("begin"))?,
                pg: pg.clone(),
            };
            let output = change.apply_postgres(&txn).await?;
            txn.txn.commit().await.map_err(pg.query("commit"))?;
            Ok(output)
        }
        .await;
        match made {
            Err(e) if attempt < ATTEMPTS && asks_to_retry(&e) => {
                tracing::debug!(attempt, "PostgreSQL asked to retry a transaction: {e}");
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                attempt += 1;
            }
            made => return made,
        }
    }
}

/// A serialization failure or a deadlock: the transaction was rolled back, and made again it
/// may pass.
fn asks_to_retry(error: &StoreError) -> bool {
    let StoreError::Postgres(PgError::Query { source, .. }) = error else {
        return false;
    };
    source
        .code()
        .is_some_and(|code| matches!(code.code(), "40001" | "40P01"))
}
