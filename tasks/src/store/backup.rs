//! Backups: a consistent copy of the running store, of every table it holds.

use super::schema::CORE_TABLES;
use super::{BackupError, Store, StoreError, StoreOptions};
use crate::table::StoredTable;
use redb::{Database, MultimapTableHandle, TableHandle};
use std::path::{Path, PathBuf};

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
    /// is written next to `target` and renamed into place only when complete. Every table the
    /// file holds is copied, the store's own and every plugin's; a table that no part of this
    /// build declares refuses the backup rather than being left out.
    pub fn backup(&self, target: &Path) -> Result<BackupReport, BackupError> {
        if target.exists() {
            return Err(BackupError::Exists {
                path: target.to_owned(),
            });
        }
        let partial = target.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        let copied = self.copy_into(&partial);
        let entries = match copied {
            Ok(entries) => entries,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        std::fs::rename(&partial, target).map_err(|e| BackupError::Write {
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

    /// Every table the store declares: its own, then each plugin's.
    pub fn tables(&self) -> Vec<&'static dyn StoredTable> {
        let plugins = self
            .registry()
            .plugins()
            .flat_map(|plugin| plugin.storage.tables.iter().copied());
        CORE_TABLES.iter().copied().chain(plugins).collect()
    }

    fn copy_into(&self, path: &Path) -> Result<u64, BackupError> {
        let write_error = |message: String| BackupError::Write {
            path: path.to_owned(),
            message,
        };
        let copy = Database::builder()
            .set_cache_size(StoreOptions::default().cache_bytes)
            .create(path)
            .map_err(|e| write_error(e.to_string()))?;
        let snapshot = self.read()?;
        let tables = self.tables();
        let held = snapshot
            .list_tables()
            .map_err(StoreError::redb("list tables"))?
            .map(|t| t.name().to_owned())
            .chain(
                snapshot
                    .list_multimap_tables()
                    .map_err(StoreError::redb("list tables"))?
                    .map(|t| t.name().to_owned()),
            );
        let mut present = Vec::new();
        for name in held {
            match tables.iter().find(|t| t.name() == name) {
                Some(table) => present.push(*table),
                None => return Err(BackupError::UnknownTable { table: name }),
            }
        }
        let mut entries = 0;
        for table in present {
            entries += table
                .copy(&snapshot, &copy, BACKUP_BATCH)
                .map_err(|e| write_error(format!("copying table `{}`: {e}", table.name())))?;
        }
        Ok(entries)
    }
}
