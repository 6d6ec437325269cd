//! The store's errors, one enum per kind of operation (as redb does): opening a store,
//! writing a backup, and the reads and writes of running jobs.

use std::path::PathBuf;

/// The store could not be opened (or checked).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
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
    /// The file, or a plugin's tables in it, were written by a newer edge.
    #[error("the store {path} holds {owner} in layout version {found}; this edge reads up to version {supported} (upgrade edge)")]
    NewerSchema {
        /// The store file.
        path: PathBuf,
        /// Whose layout: `the store's own tables` or `the tables of task plugin NAME`.
        owner: String,
        /// The version found.
        found: u64,
        /// The newest version this build knows.
        supported: u64,
    },
    /// Creating the tables or reading their versions failed.
    #[error("cannot set up the store {path}: {source}")]
    Setup {
        /// The store file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// A plugin's tables could not be upgraded to its current layout; the store is left as
    /// the last completed step wrote it, and the upgrade resumes at the next open.
    #[error(
        "cannot upgrade the tables of task plugin `{plugin}` from layout version {from}: {source}"
    )]
    Migrate {
        /// The plugin.
        plugin: String,
        /// The version found.
        from: u64,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// The writer thread could not be started.
    #[error("cannot start the store's writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The PostgreSQL store could not be reached or set up.
    #[error("{0} (check `url` in [store] or EDGE_STORE_URL, `ca_files` when the database's certificate is from a private CA, and that PostgreSQL runs)")]
    Postgres(#[source] edge_pg::PgError),
    /// 256 nodes are registered in the PostgreSQL store already.
    #[error("the PostgreSQL store has 256 nodes registered already (each edge node takes one of 256 slots for its job ids); remove the rows of nodes gone for good from the table edge_nodes")]
    TooManyNodes,
    /// A read or write while setting up failed.
    #[error("cannot set up the store: {0}")]
    Store(#[from] StoreError),
}

impl OpenError {
    pub(crate) fn open(path: &std::path::Path, source: redb::DatabaseError) -> OpenError {
        match source {
            redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse {
                path: path.to_owned(),
            },
            source => OpenError::Open {
                path: path.to_owned(),
                source,
            },
        }
    }
}

/// A backup could not be written. The partial copy is removed; the store is untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The target exists: a backup never overwrites.
    #[error("cannot write the backup {path}: the file exists; pick a new name")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The copy could not be created or written.
    #[error("cannot write the backup {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The store holds a table no part of this build declares, so a backup would leave it
    /// out.
    #[error("the store holds the table `{table}`, which no task plugin of this edge declares; a backup would leave it out (back the store up with the edge that wrote it, or copy the file while edge is stopped)")]
    UnknownTable {
        /// The table.
        table: String,
    },
    /// Reading the store failed.
    #[error("cannot read the store for a backup: {0}")]
    Read(#[from] StoreError),
}

/// A read, a write or a commit of the running store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A read, write or commit failed (disk full, I/O error, corruption).
    #[error("store {operation} failed: {source}")]
    Redb {
        /// What was being done.
        operation: &'static str,
        /// Why.
        #[source]
        source: redb::Error,
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
    /// A stored value could not be decoded.
    #[error("stored value for `{key}` is unreadable: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        message: String,
    },
    /// The PostgreSQL store failed, or could not be reached ([`StoreError::is_unavailable`]).
    #[error("{0}")]
    Postgres(#[from] edge_pg::PgError),
    /// A job's cursor is held by a later resume of the job (or is gone): the write of the
    /// job attached before is refused, with the batch it came with.
    #[error("job {job} was resumed by another client (or its resume window passed): this upload is no longer attached to it, and nothing it sent after the job's last commit was kept")]
    TakenOver {
        /// The job.
        job: String,
    },
    /// What was asked works with the redb store only, so far.
    #[error("this works with the redb store only so far, and this server's store is PostgreSQL ([store] backend = \"postgres\"); use backend = \"redb\" for it")]
    NotOnPostgres,
}

impl StoreError {
    /// Whether the store was away (the PostgreSQL server down or restarting): the same write
    /// may work later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Postgres(e) if e.is_unavailable())
    }

    /// The code a job (or request) that met this error ends with: `store_unavailable` when
    /// the store was away, `taken_over` when a resume holds the job's cursor, else
    /// `store_error`.
    pub fn code(&self) -> edge_proto::ErrorCode {
        match self {
            StoreError::TakenOver { .. } => edge_proto::ErrorCode::TakenOver,
            e if e.is_unavailable() => edge_proto::ErrorCode::StoreUnavailable,
            _ => edge_proto::ErrorCode::StoreError,
        }
    }

    /// Wraps a redb error with the operation that failed.
    pub fn redb<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> StoreError {
        move |source| StoreError::Redb {
            operation,
            source: source.into(),
        }
    }
}
