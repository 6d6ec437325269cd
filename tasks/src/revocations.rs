//! Revoked token ids (`jti`): a deny-list in the store, so that a revocation survives
//! restarts. An entry is kept until the token it names has expired; then it is pruned.

use crate::store::{Kind, Pg, Store, StoreError};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Revoked ids -> (revoked at, the token's `exp` or 0 when not known yet), in seconds since
/// the epoch.
pub(crate) const REVOKED: TableDefinition<&str, (u64, u64)> =
    TableDefinition::new("revoked_tokens");

/// The longest `jti` accepted (ours are 32 hex digits).
pub const MAX_JTI_BYTES: usize = 256;

/// One revoked token id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// The token id.
    pub jti: String,
    /// When it was revoked (seconds since the epoch).
    pub revoked_at: u64,
    /// When the token expires (seconds since the epoch), once known; the entry is pruned
    /// after that.
    pub expires: Option<u64>,
}

/// Adds `jti` to the deny-list (`expires`: the token's `exp`, if known). Returns `false` when
/// it was already there (its expiry is filled in if it was not known).
pub fn revoke(
    store: &Store,
    jti: &str,
    expires: Option<u64>,
    now: u64,
) -> Result<bool, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return revoke_postgres(pg, jti, expires, now);
    }
    let txn = store.write()?;
    let added = {
        let mut table = txn
            .open_table(REVOKED)
            .map_err(StoreError::redb("open revoked_tokens table"))?;
        let existing = table
            .get(jti)
            .map_err(StoreError::redb("read revoked token"))?
            .map(|v| v.value());
        let entry = match existing {
            Some((at, 0)) => (at, expires.unwrap_or(0)),
            Some(entry) => entry,
            None => (now, expires.unwrap_or(0)),
        };
        table
            .insert(jti, entry)
            .map_err(StoreError::redb("write revoked token"))?;
        existing.is_none()
    };
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(added)
}

/// Records the expiries learned for entries revoked by id alone (`(jti, exp)`), in one
/// transaction, so that they can be pruned. Entries gone or whose expiry is known are left as
/// they are. Returns how many were updated.
pub fn learn_expiries(store: &Store, learned: &[(String, u64)]) -> Result<usize, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        let learned = learned.to_vec();
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let mut updated = 0;
            for (jti, exp) in &learned {
                updated += client
                    .execute(
                        "UPDATE revoked_tokens SET expires = $2 WHERE jti = $1 AND expires = 0",
                        &[jti, &secs(*exp)],
                    )
                    .await
                    .map_err(pg.query("learn a revoked token's expiry"))?;
            }
            Ok(updated as usize)
        });
    }
    let txn = store.write()?;
    let mut updated = 0;
    {
        let mut table = txn
            .open_table(REVOKED)
            .map_err(StoreError::redb("open revoked_tokens table"))?;
        for (jti, exp) in learned {
            let existing = table
                .get(jti.as_str())
                .map_err(StoreError::redb("read revoked token"))?
                .map(|v| v.value());
            if let Some((at, 0)) = existing {
                table
                    .insert(jti.as_str(), (at, *exp))
                    .map_err(StoreError::redb("write revoked token"))?;
                updated += 1;
            }
        }
    }
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(updated)
}

/// The deny-list's entry for `jti`, if it is revoked.
pub fn lookup(store: &Store, jti: &str) -> Result<Option<Revoked>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        let jti = jti.to_owned();
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let row = client
                .query_opt(
                    "SELECT jti, revoked_at, expires FROM revoked_tokens WHERE jti = $1",
                    &[&jti],
                )
                .await
                .map_err(pg.query("read a revoked token"))?;
            Ok(row.map(|row| from_row(&row)))
        });
    }
    let txn = store.read()?;
    let table = txn
        .open_table(REVOKED)
        .map_err(StoreError::redb("open revoked_tokens table"))?;
    let found = table
        .get(jti)
        .map_err(StoreError::redb("read revoked token"))?;
    Ok(found.map(|value| {
        let (revoked_at, expires) = value.value();
        Revoked {
            jti: jti.to_owned(),
            revoked_at,
            expires: (expires != 0).then_some(expires),
        }
    }))
}

/// Every revoked id, in id order.
pub fn list(store: &Store) -> Result<Vec<Revoked>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let rows = client
                .query(
                    "SELECT jti, revoked_at, expires FROM revoked_tokens ORDER BY jti",
                    &[],
                )
                .await
                .map_err(pg.query("list revoked tokens"))?;
            Ok(rows.iter().map(from_row).collect())
        });
    }
    let txn = store.read()?;
    let table = txn
        .open_table(REVOKED)
        .map_err(StoreError::redb("open revoked_tokens table"))?;
    let mut all = Vec::new();
    for entry in table
        .iter()
        .map_err(StoreError::redb("list revoked tokens"))?
    {
        let (jti, value) = entry.map_err(StoreError::redb("list revoked tokens"))?;
        let (revoked_at, expires) = value.value();
        all.push(Revoked {
            jti: jti.value().to_owned(),
            revoked_at,
            expires: (expires != 0).then_some(expires),
        });
    }
    Ok(all)
}

/// Removes entries whose token expired before `before` (no such token can verify any more).
/// Returns how many were removed.
pub fn prune(store: &Store, before: u64) -> Result<usize, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let removed = client
                .execute(
                    "DELETE FROM revoked_tokens WHERE expires <> 0 AND expires < $1",
                    &[&secs(before)],
                )
                .await
                .map_err(pg.query("prune revoked tokens"))?;
            Ok(removed as usize)
        });
    }
    let txn = store.write()?;
    let removed = {
        let mut table = txn
            .open_table(REVOKED)
            .map_err(StoreError::redb("open revoked_tokens table"))?;
        let mut removed = 0;
        for entry in table
            .extract_if(|_, (_, expires)| expires != 0 && expires < before)
            .map_err(StoreError::redb("prune revoked tokens"))?
        {
            entry.map_err(StoreError::redb("prune revoked tokens"))?;
            removed += 1;
        }
        removed
    };
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(removed)
}

/// The channel on which a PostgreSQL store announces a revocation (of a token or of a
/// subject's tokens) to the other nodes, which then reload their deny-lists.
pub const CHANNEL: &str = "edge_revocations";

/// For a store other nodes write too (PostgreSQL): a signal each time one of them may have
/// revoked something (a token, or a user's tokens), so that this node reloads its deny-list.
/// It comes on each notification on [`CHANNEL`], and once more after the listening connection
/// was lost and made again (something may have been missed meanwhile). Signals waiting
/// coalesce. `None` for redb: only this process writes it.
pub fn announcements(store: &Store) -> Option<tokio::sync::mpsc::Receiver<()>> {
    let Kind::Postgres(pg) = store.kind() else {
        return None;
    };
    let (signal, announced) = tokio::sync::mpsc::channel(1);
    let on = pg.clone();
    pg.spawn(async move {
        use tokio::sync::mpsc::error::TrySendError;
        let closed = |sent: Result<(), TrySendError<()>>| matches!(sent, Err(TrySendError::Closed(_)));
        loop {
            let (notices, mut notified) = tokio::sync::mpsc::channel(16);
            match on.listener(notices).await {
                Ok(client) => match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        if closed(signal.try_send(())) {
                            return;
                        }
                        loop {
                            tokio::select! {
                                notice = notified.recv() => {
                                    if notice.is_none() {
                                        break;
                                    }
                                    if closed(signal.try_send(())) {
                                        return;
                                    }
                                }
                                () = signal.closed() => return,
                            }
                        }
                        tracing::warn!("lost the PostgreSQL store's revocation announcements; listening again");
                    }
                    Err(e) => tracing::warn!("cannot listen for revocations: {e}"),
                },
                Err(e) => tracing::debug!("cannot listen for revocations yet: {e}"),
            }
            if signal.is_closed() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    Some(announced)
}

/// [`revoke`] in a PostgreSQL store, announced on [`CHANNEL`] when it commits.
fn revoke_postgres(pg: &Pg, jti: &str, expires: Option<u64>, now: u64) -> Result<bool, StoreError> {
    let jti = jti.to_owned();
    let (expires, now) = (secs(expires.unwrap_or(0)), secs(now));
    pg.block(|pg| async move {
        let mut pooled = pg.client().await?;
        let client: &mut edge_pg::tokio_postgres::Client = &mut pooled;
        let txn = client.transaction().await.map_err(pg.query("begin"))?;
        let added: bool = txn
            .query_one(
                "INSERT INTO revoked_tokens (jti, revoked_at, expires) VALUES ($1, $2, $3)
                 ON CONFLICT (jti) DO UPDATE SET expires = CASE
                     WHEN revoked_tokens.expires = 0 THEN EXCLUDED.expires
                     ELSE revoked_tokens.expires END
                 RETURNING (xmax = 0)",
                &[&jti, &now, &expires],
            )
            .await
            .map_err(pg.query("revoke a token"))?
            .get(0);
        txn.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &jti])
            .await
            .map_err(pg.query("announce a revocation"))?;
        txn.commit().await.map_err(pg.query("commit"))?;
        Ok(added)
    })
}

fn from_row(row: &edge_pg::tokio_postgres::Row) -> Revoked {
    let expires: i64 = row.get(2);
    Revoked {
        jti: row.get(0),
        revoked_at: row.get::<_, i64>(1).max(0) as u64,
        expires: (expires > 0).then_some(expires as u64),
    }
}

/// Seconds as PostgreSQL's `bigint`.
fn secs(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    fn is_revoked(store: &Store, jti: &str) -> Result<bool, StoreError> {
        lookup(store, jti).map(|found| found.is_some())
    }

    #[test]
    fn revocations_survive_reopening_and_expired_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        {
            let store = Store::open(&path, &StoreOptions::default()).unwrap();
            assert!(revoke(&store, "old", Some(100), 50).unwrap());
            assert!(revoke(&store, "current", Some(10_000), 60).unwrap());
            assert!(revoke(&store, "unknown-expiry", None, 70).unwrap());
            assert!(
                !revoke(&store, "current", None, 80).unwrap(),
                "already there"
            );
        }
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        assert!(is_revoked(&store, "old").unwrap());
        assert!(!is_revoked(&store, "never").unwrap());
        assert_eq!(prune(&store, 1_000).unwrap(), 1);
        assert!(!is_revoked(&store, "old").unwrap());
        let ids: Vec<_> = list(&store).unwrap();
        assert_eq!(
            ids,
            vec![
                Revoked {
                    jti: "current".into(),
                    revoked_at: 60,
                    expires: Some(10_000)
                },
                Revoked {
                    jti: "unknown-expiry".into(),
                    revoked_at: 70,
                    expires: None
                },
            ]
        );
        // The expiry of an entry revoked by id alone is learned later, and then it is pruned.
        let learned = [
            ("unknown-expiry".to_owned(), 500),
            ("current".to_owned(), 1),
        ];
        assert_eq!(
            learn_expiries(&store, &learned).unwrap(),
            1,
            "a known expiry stays"
        );
        assert_eq!(
            lookup(&store, "current").unwrap().unwrap().expires,
            Some(10_000)
        );
        assert_eq!(prune(&store, 1_000).unwrap(), 1);
        assert!(!is_revoked(&store, "unknown-expiry").unwrap());
    }
}
