//! What the last fetch of each URL source said of itself (`ETag`, `Last-Modified`), kept
//! once its job ended `done`, so that a job with `if_changed=true` asks the origin whether
//! anything changed (`If-None-Match` / `If-Modified-Since`) instead of reading it again.

use crate::store::{Kind, Store, StoreError};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

/// URL -> its [`Validators`] as JSON.
pub(crate) const VALIDATORS: TableDefinition<&str, &[u8]> = TableDefinition::new("url_validators");

/// The longest URL whose validators are kept.
pub const MAX_URL_BYTES: usize = 8192;

/// What an origin said of a response, to ask later whether it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// Its `ETag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Its `Last-Modified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// Keeps `validators` for `url` (replacing what was kept); nothing when it has none.
pub fn remember(store: &Store, url: &str, validators: &Validators) -> Result<(), StoreError> {
    if url.len() > MAX_URL_BYTES {
        return Ok(());
    }
    if let Kind::Postgres(pg) = store.kind() {
        let url = url.to_owned();
        let value = (validators.etag.is_some() || validators.last_modified.is_some())
            .then(|| serde_json::to_string(validators).expect("validators always serialize"));
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let done = match &value {
                Some(value) => client
                    .execute(
                        "INSERT INTO url_validators (url, validators) VALUES ($1, $2::text::json)
                             ON CONFLICT (url) DO UPDATE SET validators = EXCLUDED.validators",
                        &[&url, value],
                    )
                    .await,
                None => {
                    client
                        .execute("DELETE FROM url_validators WHERE url = $1", &[&url])
                        .await
                }
            };
            done.map_err(pg.query("keep a URL's validators"))?;
            Ok(())
        });
    }
    let txn = store.write()?;
    {
        let mut table = txn
            .open_table(VALIDATORS)
            .map_err(StoreError::redb("open url_validators table"))?;
        if validators.etag.is_none() && validators.last_modified.is_none() {
            table
                .remove(url)
                .map_err(StoreError::redb("remove validators"))?;
        } else {
            let value = serde_json::to_vec(validators).expect("validators always serialize");
            table
                .insert(url, value.as_slice())
                .map_err(StoreError::redb("write validators"))?;
        }
    }
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(())
}

/// What was kept for `url`, if anything.
pub fn last(store: &Store, url: &str) -> Result<Option<Validators>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        let url = url.to_owned();
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let row = client
                .query_opt(
                    "SELECT validators::text FROM url_validators WHERE url = $1",
                    &[&url],
                )
                .await
                .map_err(pg.query("read a URL's validators"))?;
            row.map(|row| {
                serde_json::from_str(row.get(0)).map_err(|e| StoreError::Corrupt {
                    key: url.clone(),
                    message: e.to_string(),
                })
            })
            .transpose()
        });
    }
    let txn = store.read()?;
    let table = txn
        .open_table(VALIDATORS)
        .map_err(StoreError::redb("open url_validators table"))?;
    let found = table
        .get(url)
        .map_err(StoreError::redb("read validators"))?;
    found
        .map(|v| {
            serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                key: url.to_owned(),
                message: e.to_string(),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[test]
    fn validators_are_kept_per_url_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        let url = "https://example.org/ports.csv";
        assert_eq!(last(&store, url).unwrap(), None);
        let first = Validators {
            etag: Some("\"v1\"".into()),
            last_modified: None,
        };
        remember(&store, url, &first).unwrap();
        assert_eq!(last(&store, url).unwrap(), Some(first));
        remember(&store, url, &Validators::default()).unwrap();
        assert_eq!(last(&store, url).unwrap(), None);
    }
}
