//! Revoked token ids (`jti`): a deny-list in the store, so that a revocation survives
//! restarts. An entry is kept until the token it names has expired; then it is pruned.

use crate::store::{Store, StoreError};
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
