//! Files of watched folders taken as jobs: a claim is committed before a file's job starts
//! and removed once the file has moved to `done/` or `failed/`, so that a file is processed
//! once only, also when the server stops (or crashes) in between: at the next start a claim
//! left over names the job, and the file is moved by that job's outcome instead of running
//! again.

use crate::store::{Kind, Store, StoreError};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// `<folder>/<file name>` -> the [`Claim`] as JSON.
pub(crate) const CLAIMS: TableDefinition<&str, &[u8]> = TableDefinition::new("source_claims");

/// A file taken by a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The job that reads it.
    pub job: String,
    /// Its size when taken.
    pub size: u64,
    /// Its modification time when taken (nanoseconds since the epoch).
    pub modified_ns: u128,
}

/// Claims `file` for `claim.job` (durably). `false` when it was claimed already.
pub fn claim(store: &Store, file: &str, claim: &Claim) -> Result<bool, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        let (node, file) = (store.node().to_owned(), file.to_owned());
        let value = serde_json::to_string(claim).expect("a claim always serializes");
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let added = client
                .execute(
                    "INSERT INTO source_claims (node, file, claim) VALUES ($1, $2, $3::text::json)
                     ON CONFLICT (node, file) DO NOTHING",
                    &[&node, &file, &value],
                )
                .await
                .map_err(pg.query("claim a file"))?;
            Ok(added == 1)
        });
    }
    let txn = store.write()?;
    let added = {
        let mut table = txn
            .open_table(CLAIMS)
            .map_err(StoreError::redb("open source_claims table"))?;
        let exists = table
            .get(file)
            .map_err(StoreError::redb("read claim"))?
            .is_some();
        if !exists {
            let value = serde_json::to_vec(claim).expect("a claim always serializes");
            table
                .insert(file, value.as_slice())
                .map_err(StoreError::redb("write claim"))?;
        }
        !exists
    };
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(added)
}

/// Removes the claim on `file` (once it has moved).
pub fn release(store: &Store, file: &str) -> Result<(), StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        let (node, file) = (store.node().to_owned(), file.to_owned());
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            client
                .execute(
                    "DELETE FROM source_claims WHERE node = $1 AND file = $2",
                    &[&node, &file],
                )
                .await
                .map_err(pg.query("release a claim"))?;
            Ok(())
        });
    }
    let txn = store.write()?;
    {
        let mut table = txn
            .open_table(CLAIMS)
            .map_err(StoreError::redb("open source_claims table"))?;
        table
            .remove(file)
            .map_err(StoreError::redb("remove claim"))?;
    }
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(())
}

/// The claims of files in `folder` (`<folder>/...`), in name order.
pub fn list(store: &Store, folder: &str) -> Result<Vec<(String, Claim)>, StoreError> {
    let prefix = format!("{folder}/");
    if let Kind::Postgres(pg) = store.kind() {
        let node = store.node().to_owned();
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let rows = client
                .query(
                    "SELECT file, claim::text FROM source_claims
                     WHERE node = $1 AND starts_with(file, $2) ORDER BY file",
                    &[&node, &prefix],
                )
                .await
                .map_err(pg.query("list claims"))?;
            rows.iter()
                .map(|row| {
                    let file: String = row.get(0);
                    let claim =
                        serde_json::from_str(row.get(1)).map_err(|e| StoreError::Corrupt {
                            key: file.clone(),
                            message: e.to_string(),
                        })?;
                    Ok((file, claim))
                })
                .collect()
        });
    }
    let txn = store.read()?;
    let table = txn
        .open_table(CLAIMS)
        .map_err(StoreError::redb("open source_claims table"))?;
    let mut all = Vec::new();
    for entry in table
        .range(prefix.as_str()..)
        .map_err(StoreError::redb("list claims"))?
    {
        let (file, value) = entry.map_err(StoreError::redb("list claims"))?;
        let file = file.value();
        if !file.starts_with(&prefix) {
            break;
        }
        let claim = serde_json::from_slice(value.value()).map_err(|e| StoreError::Corrupt {
            key: file.to_owned(),
            message: e.to_string(),
        })?;
        all.push((file.to_owned(), claim));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[test]
    fn a_file_is_claimed_once_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        let first = Claim {
            job: "j1".into(),
            size: 10,
            modified_ns: 5,
        };
        assert!(claim(&store, "inbox/a.json", &first).unwrap());
        assert!(!claim(
            &store,
            "inbox/a.json",
            &Claim {
                job: "j2".into(),
                ..first.clone()
            }
        )
        .unwrap());
        assert!(claim(&store, "inboxes/b.json", &first).unwrap());
        assert_eq!(
            list(&store, "inbox").unwrap(),
            [("inbox/a.json".to_owned(), first.clone())]
        );
        release(&store, "inbox/a.json").unwrap();
        assert!(list(&store, "inbox").unwrap().is_empty());
        assert!(claim(&store, "inbox/a.json", &first).unwrap());
    }
}
