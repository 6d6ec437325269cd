//! `edge store copy`: everything of a redb store into a PostgreSQL one, so that a deployment
//! moves to PostgreSQL with its data. The source is read from one snapshot; the target is
//! written in bounded transactions and may already hold data (entries of the same key are
//! replaced), so a copy cut off can simply run again.

use super::{Kind, Store, StoreError};
use crate::history::JobRecord;
use redb::ReadableTable;

/// Job records written per transaction.
const JOBS_BATCH: usize = 1_000;

/// What a copy did: entries copied per kind, and what it left out (with how many entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    /// `(what, entries)` copied.
    pub copied: Vec<(String, u64)>,
    /// `(what, entries)` not copied, and why.
    pub left: Vec<(String, u64, String)>,
}

impl Store {
    /// Copies this redb store into the PostgreSQL store `to`: the job history, the token and
    /// subject deny-lists, the users, the URL validators, and each plugin's data that works on
    /// PostgreSQL. `progress` is told `(what, entries so far)`.
    pub fn copy_to_postgres(
        &self,
        to: &Store,
        progress: &mut dyn FnMut(&str, u64),
    ) -> Result<CopyReport, StoreError> {
        let Kind::Postgres(pg) = to.kind() else {
            return Err(StoreError::NotOnPostgres);
        };
        let mut report = CopyReport::default();
        let jobs = copy_jobs(self, to, &mut |n| progress("job history", n))?;
        report.copied.push(("job history".into(), jobs));

        let revoked = crate::revocations::list(self)?;
        let subjects = crate::users::revoked_subjects(self)?;
        let users: Vec<(String, crate::users::StoredUser)> = crate::users::list(self)?
            .into_iter()
            .filter_map(|info| {
                crate::users::get(self, &info.name)
                    .transpose()
                    .map(|user| user.map(|user| (info.name, user)))
            })
            .collect::<Result<_, _>>()?;
        let validators = validators(self)?;
        let counts = [
            ("revoked tokens", revoked.len()),
            ("revoked subjects", subjects.len()),
            ("users", users.len()),
            ("URL validators", validators.len()),
        ];
        pg.block(move |pg| async move {
            let mut pooled = pg.client().await?;
            let client: &mut edge_pg::tokio_postgres::Client = &mut pooled;
            let txn = client.transaction().await.map_err(pg.query("begin"))?;
            for r in &revoked {
                txn.execute(
                    "INSERT INTO revoked_tokens (jti, revoked_at, expires) VALUES ($1, $2, $3)
                     ON CONFLICT (jti) DO UPDATE SET revoked_at = EXCLUDED.revoked_at,
                         expires = EXCLUDED.expires",
                    &[&r.jti, &secs(r.revoked_at), &secs(r.expires.unwrap_or(0))],
                )
                .await
                .map_err(pg.query("copy a revoked token"))?;
            }
            for (sub, before) in &subjects {
                txn.execute(
                    "INSERT INTO revoked_subjects (sub, before) VALUES ($1, $2)
                     ON CONFLICT (sub) DO UPDATE SET before = EXCLUDED.before",
                    &[sub, &secs(*before)],
                )
                .await
                .map_err(pg.query("copy a revoked subject"))?;
            }
            for (name, user) in &users {
                let record = serde_json::to_string(user).expect("a user always serializes");
                txn.execute(
                    "INSERT INTO users (name, record) VALUES ($1, $2::text::json)
                     ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
                    &[name, &record],
                )
                .await
                .map_err(pg.query("copy a user"))?;
            }
            for (url, json) in &validators {
                txn.execute(
                    "INSERT INTO url_validators (url, validators) VALUES ($1, $2::text::json)
                     ON CONFLICT (url) DO UPDATE SET validators = EXCLUDED.validators",
                    &[url, json],
                )
                .await
                .map_err(pg.query("copy a URL's validators"))?;
            }
            txn.execute(
                "SELECT pg_notify($1, 'copy')",
                &[&crate::revocations::CHANNEL],
            )
            .await
            .map_err(pg.query("announce the revocations"))?;
            txn.commit().await.map_err(pg.query("commit"))?;
            Ok::<(), StoreError>(())
        })?;
        for (what, n) in counts {
            report.copied.push((what.into(), n as u64));
        }

        let snapshot = self.read()?;
        let claims = crate::table::StoredTable::len(&crate::claims::CLAIMS, &snapshot)
            .map_err(StoreError::redb("count claims"))?;
        if claims > 0 {
            report.left.push((
                "claims on watched folders' files".into(),
                claims,
                "they belong to jobs of the old store: let them finish (or move the files back) before switching".into(),
            ));
        }
        for plugin in self.registry().plugins() {
            match plugin.storage.copy {
                Some(copy) => {
                    let what = format!("{} (task plugin)", plugin.name);
                    let n = copy(self, to, &mut |n| progress(&what, n))?;
                    report.copied.push((what, n));
                }
                None => {
                    let mut entries = 0;
                    for table in plugin.storage.tables {
                        entries += table
                            .len(&snapshot)
                            .map_err(StoreError::redb("count entries"))?;
                    }
                    if entries > 0 {
                        report.left.push((
                            format!("{} (task plugin)", plugin.name),
                            entries,
                            "its data works with redb only so far".into(),
                        ));
                    }
                }
            }
        }
        Ok(report)
    }
}

/// Copies the job history, [`JOBS_BATCH`] records per transaction.
fn copy_jobs(from: &Store, to: &Store, progress: &mut dyn FnMut(u64)) -> Result<u64, StoreError> {
    let txn = from.read()?;
    let table = txn
        .open_table(crate::history::JOBS)
        .map_err(StoreError::redb("open jobs table"))?;
    let mut rows = table.iter().map_err(StoreError::redb("list jobs"))?;
    let mut copied = 0;
    loop {
        let mut tickets = Vec::with_capacity(JOBS_BATCH);
        for row in rows.by_ref().take(JOBS_BATCH) {
            let (key, value) = row.map_err(StoreError::redb("list jobs"))?;
            let mut record: JobRecord = value.value().decode(key.value())?;
            // Cut off when the old store's server last stopped: no node runs it now.
            if record.outcome == "running" {
                record.interrupt();
            }
            tickets.push(crate::history::submit(to, &record, crate::store::Sync::Now));
        }
        if tickets.is_empty() {
            return Ok(copied);
        }
        copied += tickets.len() as u64;
        for ticket in tickets {
            ticket.wait()?;
        }
        progress(copied);
    }
}

/// The URL validators, as `(url, JSON)`.
fn validators(from: &Store) -> Result<Vec<(String, String)>, StoreError> {
    let txn = from.read()?;
    let table = txn
        .open_table(crate::fetches::VALIDATORS)
        .map_err(StoreError::redb("open url_validators table"))?;
    let mut all = Vec::new();
    for row in table.iter().map_err(StoreError::redb("list validators"))? {
        let (url, value) = row.map_err(StoreError::redb("list validators"))?;
        all.push((
            url.value().to_owned(),
            String::from_utf8_lossy(value.value()).into_owned(),
        ));
    }
    Ok(all)
}

fn secs(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
