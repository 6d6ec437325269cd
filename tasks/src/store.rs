//! The redb database every plugin shares: one file, opened once per process, with a capped
//! page cache and a schema version.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::writer::Writer;
pub use crate::writer::{Change, Sync, Ticket};

/// Key/value metadata about the store itself (e.g. `schema`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout version this build reads and writes. 2: ports in their binary form (1: JSON;
/// upgraded when opened).
pub const SCHEMA_VERSION: u64 = 2;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (usually `edge serve`) has the file open.
    #[error("the store {path} is in use by another process (is `edge serve` running on this data dir? stop it first)")]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The file could not be opened or is not a redb database.
    #[error("cannot open the store {path}: {source}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// Why.
        #[source]
        source: redb::DatabaseError,
    },
    /// The file was written by a newer edge.
    #[error("the store {path} has schema version {found}; this edge reads version {SCHEMA_VERSION} (upgrade edge)")]
    NewerSchema {
        /// The store file.
        path: PathBuf,
        /// The version found.
        found: u64,
    },
    /// A read, write or commit failed (disk full, I/O error, corruption).
    #[error("store {operation} failed: {source}")]
    Redb {
        /// What was being done.
        operation: &'static str,
        /// Why.
        #[source]
        source: redb::Error,
    },
    /// A backup could not be written.
    #[error("cannot write the backup {path}: {message}")]
    Backup {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The commit of a group of changes failed (every change of the group failed with it).
    #[error("store commit failed: {message}")]
    GroupCommit {
        /// Why.
        message: String,
    },
    /// The store's writer thread is gone (the store is closing, or a bug stopped it).
    #[error("the store's writer stopped; nothing more can be written (restart edge)")]
    WriterStopped,
    /// Starting, applying or committing a change panicked: a bug. The change is not reported
    /// as committed (a panic while applying it aborts its transaction, so nothing of it is
    /// written), and the writer goes on with the next one.
    #[error(
        "a bug stopped this store write ({message}); it is not reported as committed; please report the bug"
    )]
    Panicked {
        /// The panic's message.
        message: String,
    },
    /// The writer thread could not be started.
    #[error("cannot start the store's writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A stored value could not be decoded.
    #[error("stored value for `{key}` is unreadable: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        message: String,
    },
}

impl StoreError {
    /// Wraps a redb error with the operation that failed.
    pub fn redb(operation: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
        move |source| StoreError::Redb { operation, source }
    }
}

/// How to open the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// redb's page cache in bytes. redb's own default (1 GiB) would dominate server memory.
    pub cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The open store. Cheap to clone; every clone shares one database and its writer thread.
/// The file is closed when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
    path: Arc<PathBuf>,
    writer: Arc<Writer>,
}

impl Store {
    /// Opens (or creates) the store file and its tables.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(|source| open_error(path, source))?;
        let db = Arc::new(db);
        let store = Store {
            writer: Arc::new(Writer::start(db.clone()).map_err(StoreError::Thread)?),
            db,
            path: Arc::new(path.to_owned()),
        };
        store.init_schema()?;
        Ok(store)
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The redb database, for plugins' own tables.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Opens an existing file alone (never creating one) and runs redb's integrity check
    /// (repairing what quick-repair allows). `Ok(true)` means the file was consistent.
    pub fn check_integrity(path: &Path) -> Result<bool, StoreError> {
        let mut db = Database::builder()
            .set_cache_size(StoreOptions::default().cache_bytes)
            .open(path)
            .map_err(|source| open_error(path, source))?;
        db.check_integrity()
            .map_err(|source| open_error(path, source))
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let found = self.create_tables()?;
        if found == Some(1) {
            self.upgrade_from_1()?;
        }
        Ok(())
    }

    /// Creates the tables a new store needs and records the schema version of a new store.
    /// Returns the version an existing store had.
    fn create_tables(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.write()?;
        let found = {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| StoreError::redb("open meta")(e.into()))?;
            let found = meta
                .get("schema")
                .map_err(|e| StoreError::redb("read schema")(e.into()))?
                .map(|v| v.value());
            match found {
                Some(found) if found > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: self.path.to_path_buf(),
                        found,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert("schema", SCHEMA_VERSION)
                        .map_err(|e| StoreError::redb("write schema")(e.into()))?;
                }
            }
            found
        };
        crate::ports::create_tables(&txn)?;
        crate::history::create_tables(&txn)?;
        crate::revocations::create_tables(&txn)?;
        txn.commit()
            .map_err(|e| StoreError::redb("commit")(e.into()))?;
        Ok(found)
    }

    /// Schema 1 kept ports as JSON; schema 2 keeps them in their binary form. Converts them in
    /// batches (a cut-off upgrade resumes at the next open), then records version 2.
    fn upgrade_from_1(&self) -> Result<(), StoreError> {
        tracing::info!(store = %self.path.display(), "upgrading the store from schema 1 to 2 (ports in binary form)");
        let converted = crate::ports::migrate_json_values(&self.db, 10_000, &mut |done| {
            tracing::info!(
                converted = done,
                "upgrading the store: ports converted so far"
            );
        })?;
        let txn = self.write()?;
        txn.open_table(META)
            .map_err(|e| StoreError::redb("open meta")(e.into()))?
            .insert("schema", SCHEMA_VERSION)
            .map_err(|e| StoreError::redb("write schema")(e.into()))?;
        txn.commit()
            .map_err(|e| StoreError::redb("commit")(e.into()))?;
        tracing::info!(converted, "store upgraded to schema 2");
        Ok(())
    }

    /// A read transaction (for plugins' read APIs).
    pub fn read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db
            .begin_read()
            .map_err(|e| StoreError::redb("begin read")(e.into()))
    }

    /// Hands a change to the store's writer, which commits it together with whatever else is
    /// queued (group commit); the ticket answers once that commit returned.
    pub fn submit<C: Change>(&self, change: C, sync: Sync) -> Ticket<C::Output> {
        self.writer.submit(change, sync)
    }

    /// A write transaction with quick-repair on, so an interrupted commit never needs a long
    /// repair at the next open.
    pub fn write(&self) -> Result<redb::WriteTransaction, StoreError> {
        begin_write(&self.db)
    }
}

/// A write transaction on `db` with quick-repair on: how every write to the store begins
/// ([`Store::write`], the writer thread, the schema upgrade).
pub(crate) fn begin_write(db: &Database) -> Result<redb::WriteTransaction, StoreError> {
    let mut txn = db
        .begin_write()
        .map_err(|e| StoreError::redb("begin write")(e.into()))?;
    txn.set_quick_repair(true);
    Ok(txn)
}

/// Entries written per transaction while copying, so that a backup's memory stays bounded.
const BACKUP_BATCH: usize = 10_000;

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupReport {
    /// The backup file.
    pub path: PathBuf,
    /// Entries copied, over every table.
    pub entries: u64,
    /// The backup file's size.
    pub bytes: u64,
}

impl Store {
    /// Writes a consistent copy of the store to `target`, a new file: every table is read in
    /// one read transaction (a snapshot, while writers go on) and written in batches. The copy
    /// is written next to `target` and renamed into place only when complete.
    pub fn backup(&self, target: &Path) -> Result<BackupReport, StoreError> {
        if target.exists() {
            return Err(StoreError::Backup {
                path: target.to_owned(),
                message: "the file exists; pick a new name".into(),
            });
        }
        let partial = target.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        let copy = Database::builder()
            .set_cache_size(StoreOptions::default().cache_bytes)
            .create(&partial)
            .map_err(|e| StoreError::Backup {
                path: partial.clone(),
                message: e.to_string(),
            })?;
        let snapshot = self.read()?;
        let mut entries = copy_table(&snapshot, &copy, META)?;
        entries += copy_table(&snapshot, &copy, crate::ports::PORTS)?;
        entries += copy_table(&snapshot, &copy, crate::history::JOBS)?;
        entries += copy_table(&snapshot, &copy, crate::revocations::REVOKED)?;
        drop(copy);
        std::fs::rename(&partial, target).map_err(|e| StoreError::Backup {
            path: target.to_owned(),
            message: e.to_string(),
        })?;
        let bytes = std::fs::metadata(target).map(|m| m.len()).unwrap_or(0);
        Ok(BackupReport {
            path: target.to_owned(),
            entries,
            bytes,
        })
    }
}

/// Copies one table from a snapshot into `target`, [`BACKUP_BATCH`] entries per transaction.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    snapshot: &redb::ReadTransaction,
    target: &Database,
    table: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let failed = |operation: &'static str| StoreError::redb(operation);
    let source = snapshot
        .open_table(table)
        .map_err(|e| failed("open table for backup")(e.into()))?;
    let mut rows = source
        .iter()
        .map_err(|e| failed("read table for backup")(e.into()))?;
    let mut copied = 0u64;
    loop {
        let txn = target
            .begin_write()
            .map_err(|e| failed("begin backup write")(e.into()))?;
        let mut batch = 0;
        {
            let mut out = txn
                .open_table(table)
                .map_err(|e| failed("open backup table")(e.into()))?;
            while batch < BACKUP_BATCH {
                let Some(row) = rows.next() else { break };
                let (key, value) = row.map_err(|e| failed("read table for backup")(e.into()))?;
                out.insert(key.value(), value.value())
                    .map_err(|e| failed("write backup")(e.into()))?;
                batch += 1;
            }
        }
        txn.commit()
            .map_err(|e| failed("commit backup")(e.into()))?;
        copied += batch as u64;
        if batch < BACKUP_BATCH {
            return Ok(copied);
        }
    }
}

fn open_error(path: &Path, source: redb::DatabaseError) -> StoreError {
    match source {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.to_owned(),
        },
        source => StoreError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    #[test]
    fn a_backup_is_a_consistent_store_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        let txn = store.write().unwrap();
        {
            let mut ports = txn.open_table(crate::ports::PORTS).unwrap();
            for i in 0..25_000u32 {
                ports
                    .insert(format!("K{i:06}").as_str(), b"{}".as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        crate::revocations::revoke(&store, "jti-1", Some(9), 1).unwrap();
        let target = dir.path().join("backup.redb");
        let report = store.backup(&target).unwrap();
        assert_eq!(
            report.entries,
            25_000 + 1 + 1,
            "ports, the revocation and the schema"
        );
        assert!(store.backup(&target).is_err(), "never overwrites");
        drop(store);
        assert!(Store::check_integrity(&target).unwrap());
        let copy = Store::open(&target, &StoreOptions::default()).unwrap();
        assert_eq!(crate::ports::count(&copy).unwrap(), 25_000);
        assert!(crate::revocations::lookup(&copy, "jti-1")
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_second_open_says_the_store_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        let _first = Store::open(&path, &StoreOptions::default()).unwrap();
        let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("edge serve"), "{err}");
    }

    #[test]
    fn reopening_keeps_the_schema_and_passes_the_integrity_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        drop(Store::open(&path, &StoreOptions::default()).unwrap());
        drop(Store::open(&path, &StoreOptions::default()).unwrap());
        assert!(Store::check_integrity(&path).unwrap());
    }

    #[test]
    fn checking_a_missing_file_fails_without_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.redb");
        let err = Store::check_integrity(&path).unwrap_err();
        assert!(err.to_string().contains("missing.redb"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn checking_a_store_in_use_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        let _open = Store::open(&path, &StoreOptions::default()).unwrap();
        let err = Store::check_integrity(&path).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        {
            let store = Store::open(&path, &StoreOptions::default()).unwrap();
            let txn = store.write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema", SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_schema_1_store_is_upgraded_and_its_ports_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        let sample = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../samples/ports.json"
        ))
        .unwrap();
        let ports: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&sample).unwrap();
        // What edge 0.1 wrote: schema 1, each port as its JSON.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema", 1).unwrap();
            {
                let mut table = txn.open_table(crate::ports::PORTS).unwrap();
                for (key, port) in &ports {
                    let port: crate::ports::Port = serde_json::from_value(port.clone()).unwrap();
                    let json = serde_json::to_vec(&port).unwrap();
                    table.insert(key.as_str(), json.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        let txn = store.read().unwrap();
        let schema = txn
            .open_table(META)
            .unwrap()
            .get("schema")
            .unwrap()
            .unwrap();
        assert_eq!(schema.value(), SCHEMA_VERSION);
        let table = txn.open_table(crate::ports::PORTS).unwrap();
        assert_eq!(table.len().unwrap(), ports.len() as u64);
        for entry in table.iter().unwrap() {
            let (_, value) = entry.unwrap();
            assert_ne!(value.value().first(), Some(&b'{'), "a JSON value was left");
        }
        for (key, port) in &ports {
            let expected: crate::ports::Port = serde_json::from_value(port.clone()).unwrap();
            assert_eq!(crate::ports::get(&store, key).unwrap(), Some(expected));
        }
    }

    #[test]
    fn a_file_that_is_not_a_store_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        std::fs::write(
            &path,
            b"this is not a database, but it is long enough to have a header....",
        )
        .unwrap();
        let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
        assert!(err.to_string().contains("edge.redb"), "{err}");
    }
}
