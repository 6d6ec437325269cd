//! The redb database every plugin shares: one file, opened once per process, with a capped
//! page cache and layout versions.
//!
//! The store names no plugin's table. It keeps its own (`meta`, the job history, the
//! deny-list) and, for every plugin of its [`Registry`], the tables that plugin declares
//! ([`crate::table::Storage`]): it creates them when it opens, upgrades them when it finds an
//! older layout version ([`schema`]), and copies them into every backup ([`backup`]).
//!
//! A store is that redb file (the default), or a PostgreSQL database that several edge nodes
//! share ([`Store::open_postgres`]). Code that reads or writes asks [`Store::kind`] and keeps
//! both ways side by side; a change submitted to the store ([`Change`]) says how it is made in
//! each ([`Change::apply`], [`Change::apply_postgres`]).
//!
//! # Layout
//! - [`postgres`]: the PostgreSQL store's layout versions and how a change commits there.
//! - [`error`]: the errors of opening, backing up, and reading and writing.
//! - [`schema`]: layout versions (the store's and each plugin's) and upgrades.
//! - [`backup`]: consistent copies of a running store.
//! - [`copy`]: a redb store copied into a PostgreSQL one (`edge store copy`).

mod backup;
mod copy;
mod error;
mod postgres;
mod schema;

pub use backup::BackupReport;
pub use copy::CopyReport;
pub use error::{BackupError, OpenError, StoreError};
pub use postgres::PG_SCHEMA_VERSION;
pub use schema::{plugin_version, SCHEMA_VERSION};

use crate::registry::Registry;
use crate::writer::Writer;
pub use crate::writer::{Change, Interrupt, Part, PgFuture, Sync, Ticket, HEAVY};
pub use edge_pg::{Pg, PgOptions};
pub use postgres::PgTransaction;
use redb::{Database, ReadableDatabase};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The open store. Cheap to clone; every clone shares one database (and, for redb, its writer
/// thread). A redb file is closed when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    registry: Registry,
}

#[derive(Debug, Clone)]
enum Backend {
    Redb(Arc<RedbStore>),
    Postgres(Arc<PgStore>),
}

#[derive(Debug)]
struct PgStore {
    pg: Pg,
    node: String,
    slot: u8,
}

#[derive(Debug)]
struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    writer: Writer,
}

/// Which database a store is, for the code that reads and writes it: each module keeps its
/// redb code and its PostgreSQL code side by side, behind one function.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    /// The embedded redb file.
    Redb(&'a Database),
    /// A PostgreSQL database.
    Postgres(&'a Pg),
}

impl Store {
    /// Opens (or creates) the store file with the built-in plugins' tables.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store, OpenError> {
        Store::open_with(path, options, Registry::builtin())
    }

    /// Opens (or creates) the store file with the tables of `registry`'s plugins, upgrading
    /// those of an older layout.
    pub fn open_with(
        path: &Path,
        options: &StoreOptions,
        registry: Registry,
    ) -> Result<Store, OpenError> {
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(|source| OpenError::open(path, source))?;
        let db = Arc::new(db);
        let store = Store {
            backend: Backend::Redb(Arc::new(RedbStore {
                writer: Writer::start(db.clone()).map_err(OpenError::Thread)?,
                db,
                path: path.to_owned(),
            })),
            registry,
        };
        schema::prepare(&store)?;
        Ok(store)
    }

    /// Connects to a PostgreSQL store and brings its tables to this build's layouts (creating
    /// them in an empty database), refusing a database that a newer edge set up. `node` names
    /// this server among those sharing the database (its jobs cut off by a crash are its own
    /// to mark interrupted when it starts again): stable across restarts, unique among nodes.
    pub fn open_postgres(
        options: &PgOptions,
        node: &str,
        registry: Registry,
    ) -> Result<Store, OpenError> {
        let pg = Pg::connect(options).map_err(OpenError::Postgres)?;
        let slot = postgres::prepare(&pg, node, &registry)?;
        Ok(Store {
            backend: Backend::Postgres(Arc::new(PgStore {
                pg,
                node: node.to_owned(),
                slot,
            })),
            registry,
        })
    }

    /// Whether the store answered the last time it was asked (never waits): always for redb;
    /// for PostgreSQL, `false` from a failure to reach it until it answers again.
    pub fn is_reachable(&self) -> bool {
        match &self.backend {
            Backend::Redb(_) => true,
            Backend::Postgres(store) => store.pg.is_reachable(),
        }
    }

    /// The store's size in bytes: the redb file's, or the PostgreSQL database's
    /// (`pg_database_size`; blocking).
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Redb(redb) => Ok(std::fs::metadata(&redb.path).map_or(0, |m| m.len())),
            Backend::Postgres(store) => store.pg.block(|pg| async move {
                let client = pg.client().await?;
                let row = client
                    .query_one("SELECT pg_database_size(current_database())", &[])
                    .await
                    .map_err(pg.query("ask the database's size"))?;
                Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
            }),
        }
    }

    /// This server's slot among the nodes sharing a PostgreSQL store (0 to 255; 0 for redb):
    /// a part of each job id, so that two nodes never give the same id.
    pub fn slot(&self) -> u8 {
        match &self.backend {
            Backend::Redb(_) => 0,
            Backend::Postgres(store) => store.slot,
        }
    }

    /// This server's name among the nodes sharing a PostgreSQL store (`""` for redb).
    pub fn node(&self) -> &str {
        match &self.backend {
            Backend::Redb(_) => "",
            Backend::Postgres(store) => &store.node,
        }
    }

    /// Which database this is.
    pub fn kind(&self) -> Kind<'_> {
        match &self.backend {
            Backend::Redb(redb) => Kind::Redb(&redb.db),
            Backend::Postgres(store) => Kind::Postgres(&store.pg),
        }
    }

    /// The store file (`None` for a PostgreSQL store).
    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Redb(redb) => Some(&redb.path),
            Backend::Postgres(_) => None,
        }
    }

    /// The store for messages: the file's path, or `postgres://user@host:port/db`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Redb(redb) => redb.path.display().to_string(),
            Backend::Postgres(store) => store.pg.target().to_owned(),
        }
    }

    /// The plugins whose tables the store keeps.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The redb database, for plugins' own tables; [`StoreError::NotOnPostgres`] for a
    /// PostgreSQL store.
    pub fn database(&self) -> Result<&Database, StoreError> {
        match &self.backend {
            Backend::Redb(redb) => Ok(&redb.db),
            Backend::Postgres(_) => Err(StoreError::NotOnPostgres),
        }
    }

    /// Opens an existing file alone (never creating one) and runs redb's integrity check
    /// (repairing what quick-repair allows). `Ok(true)` means the file was consistent.
    pub fn check_integrity(path: &Path) -> Result<bool, OpenError> {
        let mut db = Database::builder()
            .set_cache_size(StoreOptions::default().cache_bytes)
            .open(path)
            .map_err(|source| OpenError::open(path, source))?;
        db.check_integrity()
            .map_err(|source| OpenError::open(path, source))
    }

    /// A read transaction (for plugins' read APIs) of a redb store.
    pub fn read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.database()?
            .begin_read()
            .map_err(StoreError::redb("begin read"))
    }

    /// Hands a change to the store: for redb, to its writer, which commits it together with
    /// whatever else is queued (group commit); for PostgreSQL, to a transaction of its own.
    /// The ticket answers once that commit returned.
    pub fn submit<C: Change>(&self, change: C, sync: Sync) -> Ticket<C::Output> {
        match &self.backend {
            Backend::Redb(redb) => redb.writer.submit(change, sync),
            Backend::Postgres(store) => postgres::submit(&store.pg, change),
        }
    }

    /// A write transaction of a redb store with quick-repair on, so an interrupted commit
    /// never needs a long repair at the next open.
    pub fn write(&self) -> Result<redb::WriteTransaction, StoreError> {
        begin_write(self.database()?)
    }
}

/// A write transaction on `db` with quick-repair on: how every write to the store begins
/// ([`Store::write`], the writer thread, upgrades).
pub(crate) fn begin_write(db: &Database) -> Result<redb::WriteTransaction, StoreError> {
    let mut txn = db.begin_write().map_err(StoreError::redb("begin write"))?;
    txn.set_quick_repair(true);
    Ok(txn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Body, Record};
    use crate::Context;
    use redb::{ReadableTableMetadata, TableDefinition, TableHandle};

    /// Stores `count` ports through the `ports` task, as a job would.
    fn put_ports(store: &Store, count: u32) {
        let plugin = crate::registry::find("ports").unwrap();
        let context = Context::new(store.clone()).for_job(crate::task::JobRef {
            id: "0000000000000001".into(),
            sub: "tester".into(),
        });
        let mut task = (plugin.create)(&serde_json::Map::new(), &context).unwrap();
        for i in 0..count {
            let key = format!("K{i:06}");
            let record = Record {
                index: u64::from(i),
                offset: 0,
                end: 0,
                key: Some(&key),
                body: Body::Json(br#"{"name":"p"}"#),
            };
            task.record(&record).unwrap();
        }
        task.commit().unwrap();
    }

    /// Every table redb lists in the file, with its number of entries (read untyped, so
    /// without any list of tables in code).
    fn tables_in(path: &Path) -> Vec<(String, u64)> {
        let db = Database::open(path).unwrap();
        let txn = db.begin_read().unwrap();
        let mut tables: Vec<(String, u64)> = txn
            .list_tables()
            .unwrap()
            .map(|handle| {
                let name = handle.name().to_owned();
                let len = txn.open_untyped_table(handle).unwrap().len().unwrap();
                (name, len)
            })
            .collect();
        tables.sort();
        tables
    }

    #[test]
    fn a_backup_copies_every_table_redb_lists_and_is_a_store_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        put_ports(&store, 25_000);
        crate::revocations::revoke(&store, "jti-1", Some(9), 1).unwrap();
        let target = dir.path().join("backup.redb");
        let report = store.backup(&target).unwrap();
        assert!(matches!(
            store.backup(&target),
            Err(BackupError::Exists { .. })
        ));
        drop(store);
        let source = tables_in(&path);
        let names: Vec<&str> = source.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "blob_chunks",
                "blob_staging",
                "blob_usage",
                "blobs",
                "job_cursors",
                "jobs",
                "meta",
                "ports",
                "ports_history",
                "ports_job_changes",
                "revoked_subjects",
                "revoked_tokens",
                "source_claims",
                "url_validators",
                "users"
            ]
        );
        assert_eq!(tables_in(&target), source, "every table, every entry");
        assert_eq!(
            report.entries,
            source.iter().map(|(_, len)| len).sum::<u64>()
        );
        assert!(Store::check_integrity(&target).unwrap());
        let copy = Store::open(&target, &StoreOptions::default()).unwrap();
        assert_eq!(crate::ports::count(&copy).unwrap(), 25_000);
        assert!(crate::revocations::lookup(&copy, "jti-1")
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_table_no_one_declares_refuses_the_backup_instead_of_being_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        let stray: TableDefinition<&str, u64> = TableDefinition::new("stray");
        let txn = store.write().unwrap();
        txn.open_table(stray).unwrap().insert("x", 1).unwrap();
        txn.commit().unwrap();
        let target = dir.path().join("backup.redb");
        let err = store.backup(&target).unwrap_err();
        assert!(
            matches!(&err, BackupError::UnknownTable { table } if table == "stray"),
            "{err}"
        );
        assert!(!target.exists());
        assert!(
            !target.with_extension("partial").exists(),
            "no partial copy is left"
        );
    }

    #[test]
    fn a_second_open_says_the_store_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        let _first = Store::open(&path, &StoreOptions::default()).unwrap();
        let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
        assert!(matches!(err, OpenError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("edge serve"), "{err}");
    }

    #[test]
    fn reopening_keeps_the_versions_and_passes_the_integrity_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        drop(Store::open(&path, &StoreOptions::default()).unwrap());
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        let ports = crate::registry::find("ports").unwrap();
        assert_eq!(
            plugin_version(&store, ports).unwrap(),
            Some(ports.storage.version)
        );
        drop(store);
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
        assert!(matches!(err, OpenError::InUse { .. }), "{err}");
    }

    #[test]
    fn a_newer_layout_is_refused_and_names_whose_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        let set = |key: &str, version: u64| {
            let store = Store::open(&path, &StoreOptions::default()).unwrap();
            let txn = store.write().unwrap();
            txn.open_table(schema::META)
                .unwrap()
                .insert(key, version)
                .unwrap();
            txn.commit().unwrap();
        };
        set("schema", SCHEMA_VERSION + 1);
        let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
        assert!(
            matches!(&err, OpenError::NewerSchema { found, .. } if *found == SCHEMA_VERSION + 1),
            "{err}"
        );
        assert!(err.to_string().contains("store's own tables"), "{err}");

        let path = dir.path().join("second.redb");
        let ports = crate::registry::find("ports").unwrap();
        {
            let store = Store::open(&path, &StoreOptions::default()).unwrap();
            let txn = store.write().unwrap();
            txn.open_table(schema::META)
                .unwrap()
                .insert("schema.ports", ports.storage.version + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(&path, &StoreOptions::default()).unwrap_err();
        assert!(err.to_string().contains("task plugin `ports`"), "{err}");
    }

    #[test]
    fn the_job_history_of_an_older_store_reads_back_from_its_typed_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        let record = crate::history::JobRecord::start("j1", Some("me"), "ports", "h3", None, None);
        // As edge wrote it before the history's table was typed: schema 3, JSON bytes.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(schema::META)
                .unwrap()
                .insert("schema", 3)
                .unwrap();
            let untyped: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
            let json = serde_json::to_vec(&record).unwrap();
            txn.open_table(untyped)
                .unwrap()
                .insert("j1", json.as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(crate::history::get(&store, "j1").unwrap(), Some(record));
        drop(store);
        let tables = tables_in(&path);
        assert!(
            tables.iter().all(|(name, _)| name != "jobs.untyped"),
            "{tables:?}"
        );
        let reopened = Store::open(&path, &StoreOptions::default()).unwrap();
        assert!(crate::history::get(&reopened, "j1").unwrap().is_some());
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
