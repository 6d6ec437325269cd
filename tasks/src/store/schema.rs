//! Layout versions and upgrades. The store's own tables have a version (`schema` in `meta`),
//! and so do each plugin's (`schema.<plugin>`): a plugin changes its layout by raising
//! [`Storage::version`](crate::table::Storage) and giving a migration, without a word here.

use super::{OpenError, Store, StoreError};
use crate::table::StoredTable;
use crate::task::Plugin;
use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use std::path::PathBuf;

/// Key/value metadata about the store itself: `schema` (the layout of the store's own
/// tables) and `schema.<plugin>` (the layout of each plugin's tables).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout version of the store's own tables. 5: users and the subjects' deny-list (a
/// build that does not know them would accept the tokens of a removed user), and the claims
/// on watched folders' files, and the validators of URL sources; 4: the job history's table is typed
/// (`StoredJob`); 3: each plugin records its own version. Versions 1 and 2 numbered the whole
/// file, and that number was the layout of the tables it held (the `ports` plugin's: its
/// records in JSON, then in binary form).
pub const SCHEMA_VERSION: u64 = 5;

/// The store's own tables: `meta`, the job history, the token deny-list, the users, the
/// subjects' deny-list, the claims on watched folders' files, the validators of URL
/// sources and the cursors of resumable jobs (a table an older build ignores: no new
/// version).
pub(crate) const CORE_TABLES: &[&dyn StoredTable] = &[
    &META,
    &crate::history::JOBS,
    &crate::revocations::REVOKED,
    &crate::users::USERS,
    &crate::users::REVOKED_SUBJECTS,
    &crate::claims::CLAIMS,
    &crate::fetches::VALIDATORS,
    &crate::resume::CURSORS,
];

/// Brings a store to the layouts of this build: creates the store's own tables, upgrades each
/// plugin's tables found in an older layout, creates the tables of plugins new to the store,
/// and records every version. Refuses a store (or a plugin's tables) of a newer layout.
pub(super) fn prepare(store: &Store) -> Result<(), OpenError> {
    let setup = |source| OpenError::Setup {
        path: PathBuf::from(store.describe()),
        source: Box::new(source),
    };
    upgrade_own_tables(store).map_err(setup)?;
    let found = read_versions(store)?;
    for (plugin, recorded) in &found {
        let Some(from) = recorded.filter(|v| *v < plugin.storage.version) else {
            continue;
        };
        let Some(migrate) = plugin.storage.migrate else {
            continue;
        };
        tracing::info!(
            plugin = plugin.name,
            from,
            to = plugin.storage.version,
            "upgrading a task plugin's tables in the store"
        );
        migrate(store, from).map_err(|source| OpenError::Migrate {
            plugin: plugin.name.to_owned(),
            from,
            source: Box::new(source),
        })?;
    }
    let txn = store.write().map_err(setup)?;
    record_versions(&txn, &found).map_err(setup)?;
    txn.commit()
        .map_err(StoreError::redb("commit"))
        .map_err(setup)
}

/// Brings the store's own tables to [`SCHEMA_VERSION`] (before they are opened typed): from
/// version 3 or older, the job history's table is given its record type.
fn upgrade_own_tables(store: &Store) -> Result<(), StoreError> {
    let txn = store.write()?;
    let found = {
        let meta = txn
            .open_table(META)
            .map_err(StoreError::redb("open meta"))?;
        let found = meta
            .get("schema")
            .map_err(StoreError::redb("read schema"))?;
        found.map(|v| v.value())
    };
    txn.commit().map_err(StoreError::redb("commit"))?;
    if found.is_some_and(|found| found < 4) {
        let moved = crate::table::retype(store, crate::history::JOBS)?;
        tracing::info!(moved, "job history moved into its typed table");
    }
    Ok(())
}

/// Creates the store's own tables and reads the layout each plugin's tables are in: `None`
/// for a plugin whose tables are not in the store yet.
fn read_versions(store: &Store) -> Result<Vec<(&'static Plugin, Option<u64>)>, OpenError> {
    let setup = |source| OpenError::Setup {
        path: PathBuf::from(store.describe()),
        source: Box::new(source),
    };
    let newer = |owner: String, found: u64, supported: u64| OpenError::NewerSchema {
        path: PathBuf::from(store.describe()),
        owner,
        found,
        supported,
    };
    let txn = store.write().map_err(setup)?;
    for table in CORE_TABLES {
        table
            .create(&txn)
            .map_err(StoreError::redb("create table"))
            .map_err(setup)?;
    }
    let existing: Vec<String> = txn
        .list_tables()
        .map_err(StoreError::redb("list tables"))
        .map_err(setup)?
        .map(|t| t.name().to_owned())
        .collect();
    let mut found = Vec::new();
    {
        let meta = txn
            .open_table(META)
            .map_err(StoreError::redb("open meta"))
            .map_err(setup)?;
        let version = |key: &str| -> Result<Option<u64>, OpenError> {
            let value = meta
                .get(key)
                .map_err(StoreError::redb("read schema"))
                .map_err(setup)?;
            Ok(value.map(|v| v.value()))
        };
        let core = version("schema")?;
        if let Some(core) = core.filter(|v| *v > SCHEMA_VERSION) {
            return Err(newer("the store's own tables".into(), core, SCHEMA_VERSION));
        }
        for plugin in store.registry().plugins() {
            if plugin.storage.tables.is_empty() {
                continue;
            }
            let held = plugin
                .storage
                .tables
                .iter()
                .any(|t| existing.iter().any(|name| name == t.name()));
            let recorded = match (version(&version_key(plugin))?, core) {
                (Some(recorded), _) => Some(recorded),
                (None, Some(legacy)) if legacy < 3 && held => Some(legacy),
                _ => None,
            };
            if let Some(recorded) = recorded.filter(|v| *v > plugin.storage.version) {
                let owner = format!("the tables of task plugin `{}`", plugin.name);
                return Err(newer(owner, recorded, plugin.storage.version));
            }
            found.push((plugin, recorded));
        }
    }
    txn.commit()
        .map_err(StoreError::redb("commit"))
        .map_err(setup)?;
    Ok(found)
}

/// Creates the plugins' tables (those already there are kept as they are) and records the
/// version of every layout.
fn record_versions(
    txn: &WriteTransaction,
    plugins: &[(&'static Plugin, Option<u64>)],
) -> Result<(), StoreError> {
    let mut meta = txn
        .open_table(META)
        .map_err(StoreError::redb("open meta"))?;
    for (plugin, _) in plugins {
        for table in plugin.storage.tables {
            table
                .create(txn)
                .map_err(StoreError::redb("create table"))?;
        }
        meta.insert(version_key(plugin).as_str(), plugin.storage.version)
            .map_err(StoreError::redb("write schema"))?;
    }
    meta.insert("schema", SCHEMA_VERSION)
        .map_err(StoreError::redb("write schema"))?;
    Ok(())
}

/// Where a plugin's layout version is kept in `meta`.
fn version_key(plugin: &Plugin) -> String {
    format!("schema.{}", plugin.name)
}

/// The layout version the store records for `plugin`'s tables, if any.
pub fn plugin_version(store: &Store, plugin: &Plugin) -> Result<Option<u64>, StoreError> {
    let txn = store.read()?;
    let meta = txn
        .open_table(META)
        .map_err(StoreError::redb("open meta"))?;
    let value = meta
        .get(version_key(plugin).as_str())
        .map_err(StoreError::redb("read schema"))?;
    Ok(value.map(|v| v.value()))
}
