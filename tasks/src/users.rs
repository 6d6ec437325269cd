//! People who sign in with a name and a password (`edge user ...`, `POST /v1/login`): their
//! password hashes (PHC strings, made and checked by the server crate) and scopes. Changing a
//! user's password or removing the user ends the tokens issued to that name before the change:
//! the name goes on the subjects' deny-list with the time, in the same transaction.

use crate::store::{Kind, Pg, Store, StoreError};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Users by name -> their [`StoredUser`] as JSON.
pub(crate) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");

/// Token subjects whose tokens issued (`iat`) up to a time are refused -> that time (seconds
/// since the epoch).
pub(crate) const REVOKED_SUBJECTS: TableDefinition<&str, u64> =
    TableDefinition::new("revoked_subjects");

/// The longest user name.
pub const MAX_NAME_BYTES: usize = 64;

/// A user as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    /// The password's hash, a PHC string (`$argon2id$...`).
    pub hash: String,
    /// The scopes the user's tokens carry, space-separated.
    pub scope: String,
    /// When the user was added (seconds since the epoch).
    pub created: u64,
    /// When the password last changed (seconds since the epoch).
    pub changed: u64,
}

/// A user as `edge user list` shows it (no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The name (the `sub` of the user's tokens).
    pub name: String,
    /// The scopes, space-separated.
    pub scope: String,
    /// When the user was added (seconds since the epoch).
    pub created: u64,
    /// When the password last changed (seconds since the epoch).
    pub changed: u64,
}

/// Why a user name is refused, if it is.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "a user name has 1 to {MAX_NAME_BYTES} characters of A-Z, a-z, 0-9, `.`, `_`, `-` \
             and `@`, and does not start with `-`"
        ))
    }
}

/// What a change to a user found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Done.
    Done,
    /// `add` of a name that exists.
    Exists,
    /// `passwd`, `scope` or `remove` of a name that does not exist.
    Missing,
}

/// Adds user `name`.
pub fn add(
    store: &Store,
    name: &str,
    hash: &str,
    scope: &str,
    now: u64,
) -> Result<Change, StoreError> {
    let user = StoredUser {
        hash: hash.to_owned(),
        scope: scope.to_owned(),
        created: now,
        changed: now,
    };
    if let Kind::Postgres(pg) = store.kind() {
        let (name, value) = (name.to_owned(), to_json(&user));
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let added = client
                .execute(
                    "INSERT INTO users (name, record) VALUES ($1, $2::text::json)
                     ON CONFLICT (name) DO NOTHING",
                    &[&name, &value],
                )
                .await
                .map_err(pg.query("add a user"))?;
            Ok(if added == 1 {
                Change::Done
            } else {
                Change::Exists
            })
        });
    }
    let txn = store.write()?;
    let change = {
        let mut users = open_users(&txn)?;
        if users
            .get(name)
            .map_err(StoreError::redb("read user"))?
            .is_some()
        {
            Change::Exists
        } else {
            let value = serde_json::to_vec(&user).expect("a user always serializes");
            users
                .insert(name, value.as_slice())
                .map_err(StoreError::redb("write user"))?;
            Change::Done
        }
    };
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(change)
}

/// Sets user `name`'s password hash and ends the tokens issued to the name up to `now`.
pub fn set_password(store: &Store, name: &str, hash: &str, now: u64) -> Result<Change, StoreError> {
    update(store, name, now, |user| {
        user.hash = hash.to_owned();
        user.changed = now;
    })
}

/// Sets user `name`'s scopes and ends the tokens issued to the name up to `now` (they carry
/// the old scopes).
pub fn set_scope(store: &Store, name: &str, scope: &str, now: u64) -> Result<Change, StoreError> {
    update(store, name, now, |user| user.scope = scope.to_owned())
}

fn update(
    store: &Store,
    name: &str,
    now: u64,
    change: impl FnOnce(&mut StoredUser),
) -> Result<Change, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return update_postgres(pg, name, now, change);
    }
    let txn = store.write()?;
    let found = {
        let mut users = open_users(&txn)?;
        let found = users
            .get(name)
            .map_err(StoreError::redb("read user"))?
            .map(|v| decode(name, v.value()))
            .transpose()?;
        match found {
            Some(mut user) => {
                change(&mut user);
                let value = serde_json::to_vec(&user).expect("a user always serializes");
                users
                    .insert(name, value.as_slice())
                    .map_err(StoreError::redb("write user"))?;
                revoke_subject(&txn, name, now)?;
                Change::Done
            }
            None => Change::Missing,
        }
    };
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(found)
}

/// Removes user `name` and ends the tokens issued to the name up to `now`.
pub fn remove(store: &Store, name: &str, now: u64) -> Result<Change, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        let name = name.to_owned();
        return pg.block(move |pg| async move {
            let mut pooled = pg.client().await?;
            let client: &mut edge_pg::tokio_postgres::Client = &mut pooled;
            let txn = client.transaction().await.map_err(pg.query("begin"))?;
            let removed = txn
                .execute("DELETE FROM users WHERE name = $1", &[&name])
                .await
                .map_err(pg.query("remove a user"))?;
            if removed == 0 {
                return Ok(Change::Missing);
            }
            revoke_subject_postgres(&pg, &txn, &name, now).await?;
            txn.commit().await.map_err(pg.query("commit"))?;
            Ok(Change::Done)
        });
    }
    let txn = store.write()?;
    let change = {
        let mut users = open_users(&txn)?;
        let removed = users
            .remove(name)
            .map_err(StoreError::redb("remove user"))?
            .is_some();
        if removed {
            revoke_subject(&txn, name, now)?;
            Change::Done
        } else {
            Change::Missing
        }
    };
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(change)
}

/// User `name`, if there is one.
pub fn get(store: &Store, name: &str) -> Result<Option<StoredUser>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return get_postgres(pg, name);
    }
    let txn = store.read()?;
    let users = txn
        .open_table(USERS)
        .map_err(StoreError::redb("open users table"))?;
    let found = users.get(name).map_err(StoreError::redb("read user"))?;
    found.map(|v| decode(name, v.value())).transpose()
}

/// Every user, in name order.
pub fn list(store: &Store) -> Result<Vec<UserInfo>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let rows = client
                .query("SELECT name, record::text FROM users ORDER BY name", &[])
                .await
                .map_err(pg.query("list users"))?;
            rows.iter()
                .map(|row| {
                    let name: String = row.get(0);
                    let user = decode(&name, row.get::<_, &str>(1).as_bytes())?;
                    Ok(UserInfo {
                        name,
                        scope: user.scope,
                        created: user.created,
                        changed: user.changed,
                    })
                })
                .collect()
        });
    }
    let txn = store.read()?;
    let users = txn
        .open_table(USERS)
        .map_err(StoreError::redb("open users table"))?;
    let mut all = Vec::new();
    for entry in users.iter().map_err(StoreError::redb("list users"))? {
        let (name, value) = entry.map_err(StoreError::redb("list users"))?;
        let name = name.value();
        let user = decode(name, value.value())?;
        all.push(UserInfo {
            name: name.to_owned(),
            scope: user.scope,
            created: user.created,
            changed: user.changed,
        });
    }
    Ok(all)
}

/// Every subject on the deny-list with the time before which its tokens are refused.
pub fn revoked_subjects(store: &Store) -> Result<Vec<(String, u64)>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return pg.block(|pg| async move {
            let client = pg.client().await?;
            let rows = client
                .query("SELECT sub, before FROM revoked_subjects ORDER BY sub", &[])
                .await
                .map_err(pg.query("list revoked subjects"))?;
            Ok(rows
                .iter()
                .map(|row| (row.get(0), row.get::<_, i64>(1).max(0) as u64))
                .collect())
        });
    }
    let txn = store.read()?;
    let table = txn
        .open_table(REVOKED_SUBJECTS)
        .map_err(StoreError::redb("open revoked_subjects table"))?;
    let mut all = Vec::new();
    for entry in table
        .iter()
        .map_err(StoreError::redb("list revoked subjects"))?
    {
        let (sub, before) = entry.map_err(StoreError::redb("list revoked subjects"))?;
        all.push((sub.value().to_owned(), before.value()));
    }
    Ok(all)
}

fn open_users<'txn>(
    txn: &'txn redb::WriteTransaction,
) -> Result<redb::Table<'txn, &'static str, &'static [u8]>, StoreError> {
    txn.open_table(USERS)
        .map_err(StoreError::redb("open users table"))
}

fn revoke_subject(txn: &redb::WriteTransaction, sub: &str, now: u64) -> Result<(), StoreError> {
    let mut table = txn
        .open_table(REVOKED_SUBJECTS)
        .map_err(StoreError::redb("open revoked_subjects table"))?;
    table
        .insert(sub, now)
        .map_err(StoreError::redb("write revoked subject"))?;
    Ok(())
}

/// [`get`] in a PostgreSQL store.
fn get_postgres(pg: &Pg, name: &str) -> Result<Option<StoredUser>, StoreError> {
    let name = name.to_owned();
    pg.block(|pg| async move {
        let client = pg.client().await?;
        let row = client
            .query_opt("SELECT record::text FROM users WHERE name = $1", &[&name])
            .await
            .map_err(pg.query("read a user"))?;
        row.map(|row| decode(&name, row.get::<_, &str>(0).as_bytes()))
            .transpose()
    })
}

/// [`update`] in a PostgreSQL store: the user read and changed here, then written back in one
/// transaction with the subject's revocation, announced to the other nodes.
fn update_postgres(
    pg: &Pg,
    name: &str,
    now: u64,
    change: impl FnOnce(&mut StoredUser),
) -> Result<Change, StoreError> {
    let found = get_postgres(pg, name)?;
    let name = name.to_owned();
    let Some(mut user) = found else {
        return Ok(Change::Missing);
    };
    change(&mut user);
    let value = to_json(&user);
    pg.block(move |pg| async move {
        let mut pooled = pg.client().await?;
        let client: &mut edge_pg::tokio_postgres::Client = &mut pooled;
        let txn = client.transaction().await.map_err(pg.query("begin"))?;
        let updated = txn
            .execute(
                "UPDATE users SET record = $2::text::json WHERE name = $1",
                &[&name, &value],
            )
            .await
            .map_err(pg.query("write a user"))?;
        if updated == 0 {
            return Ok(Change::Missing);
        }
        revoke_subject_postgres(&pg, &txn, &name, now).await?;
        txn.commit().await.map_err(pg.query("commit"))?;
        Ok(Change::Done)
    })
}

/// Puts `sub` on the subjects' deny-list up to `now` and announces it to the other nodes.
async fn revoke_subject_postgres(
    pg: &Pg,
    txn: &edge_pg::tokio_postgres::Transaction<'_>,
    sub: &str,
    now: u64,
) -> Result<(), StoreError> {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    txn.execute(
        "INSERT INTO revoked_subjects (sub, before) VALUES ($1, $2)
         ON CONFLICT (sub) DO UPDATE SET before = GREATEST(revoked_subjects.before, EXCLUDED.before)",
        &[&sub, &now],
    )
    .await
    .map_err(pg.query("revoke a subject"))?;
    txn.execute(
        "SELECT pg_notify($1, $2)",
        &[&crate::revocations::CHANNEL, &sub],
    )
    .await
    .map_err(pg.query("announce a revocation"))?;
    Ok(())
}

fn to_json(user: &StoredUser) -> String {
    serde_json::to_string(user).expect("a user always serializes")
}

fn decode(name: &str, bytes: &[u8]) -> Result<StoredUser, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: format!("user {name}"),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[test]
    fn users_are_added_changed_and_removed_and_changes_revoke_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        {
            let store = Store::open(&path, &StoreOptions::default()).unwrap();
            assert_eq!(
                add(&store, "ana", "$h1", "ports:read", 10).unwrap(),
                Change::Done
            );
            assert_eq!(add(&store, "ana", "$h2", "", 11).unwrap(), Change::Exists);
            assert_eq!(add(&store, "bo", "$h3", "admin", 12).unwrap(), Change::Done);
            assert!(revoked_subjects(&store).unwrap().is_empty());
            assert_eq!(
                set_password(&store, "ana", "$h4", 20).unwrap(),
                Change::Done
            );
            assert_eq!(
                set_password(&store, "nobody", "$h", 20).unwrap(),
                Change::Missing
            );
            assert_eq!(remove(&store, "bo", 30).unwrap(), Change::Done);
            assert_eq!(remove(&store, "bo", 31).unwrap(), Change::Missing);
        }
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        let ana = get(&store, "ana").unwrap().unwrap();
        assert_eq!(
            ana,
            StoredUser {
                hash: "$h4".into(),
                scope: "ports:read".into(),
                created: 10,
                changed: 20
            }
        );
        assert!(get(&store, "bo").unwrap().is_none());
        let names: Vec<String> = list(&store).unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["ana"]);
        assert_eq!(
            revoked_subjects(&store).unwrap(),
            [("ana".to_owned(), 20), ("bo".to_owned(), 30)]
        );
        assert_eq!(set_scope(&store, "ana", "admin", 40).unwrap(), Change::Done);
        assert_eq!(get(&store, "ana").unwrap().unwrap().scope, "admin");
        assert_eq!(revoked_subjects(&store).unwrap()[0], ("ana".to_owned(), 40));
    }

    #[test]
    fn names_are_checked() {
        for good in ["ana", "a.b-c_d@example.org", "X9"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a b", "a/b", "ü", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
