//! The `ports` table: its typed definition, the stored form of a port as a `redb::Value`, and
//! the upgrades from older layouts.
//!
//! Layouts: 1 kept each port as its JSON; 2 in the binary form of [`super::codec`], in an
//! untyped (`&[u8]`) table; 3 the same bytes in a table typed [`StoredPort`], so that a read
//! gets a port, not bytes to decode by hand.

use super::codec;
use super::Port;
use crate::store::{Store, StoreError};
use crate::table::{Encoded, Stored};
use redb::TableDefinition;

/// Ports by key (UN/LOCODE).
pub(crate) const PORTS: TableDefinition<&str, StoredPort> = TableDefinition::new("ports");

/// The `ports` table as layouts 1 and 2 typed it.
pub(super) const UNTYPED: TableDefinition<&str, &[u8]> = TableDefinition::new("ports");

/// The layout version of this build.
pub(super) const VERSION: u64 = 3;

/// A port as the store holds it: its binary form, decoded when read.
pub type StoredPort<'a> = Stored<'a, Port>;

impl Encoded for Port {
    const TYPE_NAME: &'static str = "edge::ports::StoredPort";

    fn decode(bytes: &[u8]) -> Result<Port, String> {
        codec::decode(bytes).map_err(|e| e.to_string())
    }
}

/// Entries per transaction while upgrading, so that memory stays bounded on a huge store.
const UPGRADE_BATCH: usize = 10_000;

/// Upgrades the `ports` table from layout `from` (1 or 2) to [`VERSION`]. Each step resumes
/// where a cut-off run stopped.
pub(super) fn migrate(store: &Store, from: u64) -> Result<(), StoreError> {
    if from < 2 {
        let converted =
            codec::migrate_json_values(store.database()?, UPGRADE_BATCH, &mut |done| {
                tracing::info!(
                    converted = done,
                    "upgrading ports: converted to binary so far"
                );
            })?;
        tracing::info!(converted, "ports converted from JSON to their binary form");
    }
    if from < 3 {
        let moved = crate::table::retype(store, PORTS)?;
        tracing::info!(moved, "ports moved into their typed table");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{plugin_version, StoreOptions};
    use redb::{Database, ReadableTableMetadata};

    /// Where an upgrade to layout 3 keeps the untyped table while it moves its entries.
    const MOVING: TableDefinition<&str, &[u8]> = TableDefinition::new("ports.untyped");

    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

    fn sample() -> serde_json::Map<String, serde_json::Value> {
        let sample = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../samples/ports.json"
        ))
        .unwrap();
        serde_json::from_slice(&sample).unwrap()
    }

    /// A store as an older edge wrote it: `schema` = `version`, every port in the untyped
    /// table, as JSON (1) or in binary form (2).
    fn legacy_store(path: &std::path::Path, version: u64) -> Vec<(String, Port)> {
        let ports: Vec<(String, Port)> = sample()
            .into_iter()
            .map(|(key, port)| (key, serde_json::from_value(port).unwrap()))
            .collect();
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema", version)
            .unwrap();
        {
            let mut table = txn.open_table(UNTYPED).unwrap();
            for (key, port) in &ports {
                let mut value = Vec::new();
                match version {
                    1 => value = serde_json::to_vec(port).unwrap(),
                    _ => codec::encode(port, &mut value),
                }
                table.insert(key.as_str(), value.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        ports
    }

    fn assert_upgraded(store: &Store, ports: &[(String, Port)]) {
        let plugin = crate::registry::find("ports").unwrap();
        assert_eq!(plugin_version(store, plugin).unwrap(), Some(VERSION));
        let txn = store.read().unwrap();
        let table = txn.open_table(PORTS).unwrap();
        assert_eq!(table.len().unwrap(), ports.len() as u64);
        let moving = txn
            .list_tables()
            .unwrap()
            .any(|t| t.name() == "ports.untyped");
        assert!(!moving, "the untyped table is gone");
        for (key, port) in ports {
            assert_eq!(super::super::get(store, key).unwrap().as_ref(), Some(port));
        }
    }

    use redb::TableHandle;

    #[test]
    fn stores_of_layouts_1_and_2_are_upgraded_and_read_the_same() {
        for version in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("edge.redb");
            let ports = legacy_store(&path, version);
            let store = Store::open(&path, &StoreOptions::default()).unwrap();
            assert_upgraded(&store, &ports);
        }
    }

    #[test]
    fn an_upgrade_cut_off_midway_resumes_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.redb");
        let ports = legacy_store(&path, 2);
        // What a crash leaves: the untyped table renamed and partly moved.
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.rename_table(UNTYPED, MOVING).unwrap();
            {
                let mut from = txn.open_table(MOVING).unwrap();
                let mut to = txn.open_table(PORTS).unwrap();
                for _ in 0..100 {
                    let (key, value) = from.pop_first().unwrap().unwrap();
                    to.insert(key.value(), StoredPort::from_encoded(value.value()))
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        assert_upgraded(&store, &ports);
    }
}
