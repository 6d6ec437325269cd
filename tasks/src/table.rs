//! Tables as values: what the store needs to know of a table it did not define, so that it
//! can create it at open and copy it into a backup without naming it.
//!
//! Every table of the store is declared once, as a typed `TableDefinition` const in the module
//! that owns it (a plugin, the job history, the deny-list), and listed in that owner's
//! `tables`. The store walks those lists; [`StoredTable`] is implemented for every
//! `TableDefinition`, so a declaration is all a plugin writes. A record type kept encoded
//! implements [`Encoded`], and its table holds [`Stored`] values.

use redb::{
    Database, Key, ReadTransaction, ReadableTable, TableDefinition, TypeName, Value,
    WriteTransaction,
};
use std::marker::PhantomData;

/// The value bytes one copying transaction writes at most (plus one value): a table of big
/// values (`blob_chunks`) is copied in transactions of a bounded size too.
pub const COPY_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// A table the store creates when it opens and copies into every backup.
pub trait StoredTable: Sync {
    /// The table's name in the redb file.
    fn name(&self) -> &str;

    /// Creates the table in `txn` if it does not exist yet.
    fn create(&self, txn: &WriteTransaction) -> Result<(), redb::Error>;

    /// Copies every entry of the table in the snapshot `from` into `to`, `batch` entries (and
    /// at most about [`COPY_BATCH_BYTES`]) per write transaction, so that memory stays
    /// bounded, and returns how many it copied.
    fn copy(&self, from: &ReadTransaction, to: &Database, batch: usize)
        -> Result<u64, redb::Error>;

    /// How many entries the table holds in the snapshot `txn` (0 when it does not exist).
    fn len(&self, txn: &ReadTransaction) -> Result<u64, redb::Error>;
}

impl<K: Key + Sync + 'static, V: Value + Sync + 'static> StoredTable
    for TableDefinition<'static, K, V>
{
    fn name(&self) -> &str {
        redb::TableHandle::name(self)
    }

    fn create(&self, txn: &WriteTransaction) -> Result<(), redb::Error> {
        txn.open_table(*self)?;
        Ok(())
    }

    fn len(&self, txn: &ReadTransaction) -> Result<u64, redb::Error> {
        use redb::ReadableTableMetadata;
        match txn.open_table(*self) {
            Ok(table) => Ok(table.len()?),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    fn copy(
        &self,
        from: &ReadTransaction,
        to: &Database,
        batch: usize,
    ) -> Result<u64, redb::Error> {
        let source = from.open_table(*self)?;
        let mut rows = source.iter()?;
        let mut copied = 0u64;
        loop {
            let txn = to.begin_write()?;
            let (mut written, mut bytes, mut ended) = (0, 0, false);
            {
                let mut out = txn.open_table(*self)?;
                while written < batch && bytes < COPY_BATCH_BYTES {
                    let Some(row) = rows.next() else {
                        ended = true;
                        break;
                    };
                    let (key, value) = row?;
                    let value = value.value();
                    bytes += V::as_bytes(&value).as_ref().len();
                    out.insert(key.value(), value)?;
                    written += 1;
                }
            }
            txn.commit()?;
            copied += written as u64;
            if ended {
                return Ok(copied);
            }
        }
    }
}

/// Brings a plugin's tables from the layout version `from` to the plugin's current one. It
/// runs when the store opens, before any job, and must resume cleanly when cut off (the
/// version is recorded only once it returned).
pub type Migrate = fn(store: &crate::Store, from: u64) -> Result<(), crate::StoreError>;

/// What a plugin keeps in the store.
#[derive(Clone, Copy)]
pub struct Storage {
    /// The layout version of the plugin's tables. The store records it per plugin (in its
    /// `meta` table, as `schema.<plugin>`) and runs [`Storage::migrate`] when it finds an
    /// older one; a newer one (written by a newer edge) is refused.
    pub version: u64,
    /// The plugin's tables: created when the store opens, copied into every backup.
    pub tables: &'static [&'static dyn StoredTable],
    /// Upgrades tables of an older layout version (see [`Migrate`]).
    pub migrate: Option<Migrate>,
    /// The plugin's tables in a PostgreSQL store: the SQL of each layout step, in order (the
    /// first creates them; step `n` brings layout `n` to `n + 1`). The store records how many
    /// ran (as `schema.<plugin>` in `edge_meta`) and runs the rest when it opens. Empty for a
    /// plugin that keeps nothing, or whose data works with redb only so far (its jobs then
    /// fail with a message saying so).
    pub postgres: &'static [&'static str],
    /// Copies the plugin's data from a redb store into a PostgreSQL one (`edge store copy`),
    /// returning how many entries; `None` where the plugin's data works with redb only.
    pub copy: Option<CopyToPostgres>,
}

/// See [`Storage::copy`]: `progress` is told the entries copied so far.
pub type CopyToPostgres = fn(
    from: &crate::Store,
    to: &crate::Store,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, crate::StoreError>;

impl Storage {
    /// Nothing kept in the store (a task that only computes, such as `stats`).
    pub const NONE: Storage = Storage {
        version: 0,
        tables: &[],
        migrate: None,
        postgres: &[],
        copy: None,
    };
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables: Vec<&str> = self.tables.iter().map(|t| t.name()).collect();
        f.debug_struct("Storage")
            .field("version", &self.version)
            .field("tables", &tables)
            .finish_non_exhaustive()
    }
}

/// Entries moved per transaction by [`retype`], so that memory stays bounded on a huge store.
const RETYPE_BATCH: usize = 10_000;

/// Gives a table of raw bytes (`&[u8]` values) its record type `V`, whose stored form is those
/// same bytes: renames it `<name>.untyped`, moves [`RETYPE_BATCH`] entries per transaction into
/// a new table typed `V` under the old name, and deletes the untyped one once empty. A run cut
/// off anywhere resumes at the next call; a table typed already is left alone. Returns how many
/// entries it moved.
pub(crate) fn retype<V: Value + 'static>(
    store: &crate::Store,
    typed: TableDefinition<'static, &'static str, V>,
) -> Result<u64, crate::StoreError> {
    use crate::StoreError;
    use redb::{TableError, TableHandle};
    let name = typed.name();
    let untyped: TableDefinition<&str, &[u8]> = TableDefinition::new(name);
    let moving_name = format!("{name}.untyped");
    let moving: TableDefinition<&str, &[u8]> = TableDefinition::new(&moving_name);
    let mut moved = 0u64;
    loop {
        let txn = store.write()?;
        let moving_exists = txn
            .list_tables()
            .map_err(StoreError::redb("list tables"))?
            .any(|t| t.name() == moving_name);
        if !moving_exists {
            match txn.open_table(untyped) {
                Ok(table) => drop(table),
                // Typed already: a run cut off after its last step, or nothing to do.
                Err(TableError::TableTypeMismatch { .. }) => return Ok(moved),
                Err(e) => return Err(StoreError::redb("open table to retype")(e)),
            }
            txn.rename_table(untyped, moving)
                .map_err(StoreError::redb("rename table to retype"))?;
        }
        let done = {
            let mut from = txn
                .open_table(moving)
                .map_err(StoreError::redb("open table to retype"))?;
            let mut to = txn
                .open_table(typed)
                .map_err(StoreError::redb("open retyped table"))?;
            let mut count = 0;
            while count < RETYPE_BATCH {
                let Some((key, value)) = from.pop_first().map_err(StoreError::redb("retype"))?
                else {
                    break;
                };
                to.insert(key.value(), V::from_bytes(value.value()))
                    .map_err(StoreError::redb("retype"))?;
                count += 1;
            }
            moved += count as u64;
            count < RETYPE_BATCH
        };
        if done {
            txn.delete_table(moving)
                .map_err(StoreError::redb("delete the untyped table"))?;
        }
        txn.commit().map_err(StoreError::redb("commit"))?;
        if done {
            return Ok(moved);
        }
    }
}

/// A record type a table keeps in an encoded form (a port's binary form, a job record's JSON).
pub trait Encoded: Sized {
    /// The name redb records for a table of these (it is written into every store file: never
    /// change it without a layout version and an upgrade).
    const TYPE_NAME: &'static str;

    /// The record, from its encoded form; `Err` says why the bytes are not one.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

/// A record as the store holds it: its encoded bytes, decoded when asked. It is the
/// `redb::Value` of a table of `T`s, so a read gets a record (or a [`StoreError::Corrupt`]
/// naming its key), never bytes to decode by hand.
///
/// [`StoreError::Corrupt`]: crate::StoreError::Corrupt
pub struct Stored<'a, T>(&'a [u8], PhantomData<fn() -> T>);

impl<'a, T: Encoded> Stored<'a, T> {
    /// A record already in its encoded form.
    pub fn from_encoded(bytes: &'a [u8]) -> Stored<'a, T> {
        Stored(bytes, PhantomData)
    }

    /// The encoded form.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The record, or a store error naming its key.
    pub fn decode(&self, key: &str) -> Result<T, crate::StoreError> {
        T::decode(self.0).map_err(|message| crate::StoreError::Corrupt {
            key: key.to_owned(),
            message,
        })
    }
}

impl<T> Clone for Stored<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Stored<'_, T> {}

impl<T> PartialEq for Stored<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<T> std::fmt::Debug for Stored<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stored({} bytes)", self.0.len())
    }
}

impl<T: Encoded> Value for Stored<'_, T> {
    type SelfType<'a>
        = Stored<'a, T>
    where
        Self: 'a;
    type AsBytes<'a>
        = &'a [u8]
    where
        Self: 'a;

    fn fixed_width() -> Option<usize> {
        None
    }

    fn from_bytes<'a>(data: &'a [u8]) -> Stored<'a, T>
    where
        Self: 'a,
    {
        Stored(data, PhantomData)
    }

    fn as_bytes<'a, 'b: 'a>(value: &'a Stored<'b, T>) -> &'a [u8]
    where
        Self: 'b,
    {
        value.0
    }

    fn type_name() -> TypeName {
        TypeName::new(T::TYPE_NAME)
    }
}
