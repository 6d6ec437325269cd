//! The registry of task plugins. Adding a plugin is one file plus one line in [`BUILTIN`].
//!
//! A [`Registry`] is the set a store and a server run with: the built-in plugins, plus any a
//! test (or a program embedding edge) adds with [`Registry::with`]. Everything generic over
//! plugins (the store's tables and backups, the HTTP routes and scopes, the read commands)
//! walks it, so a plugin needs no line anywhere else.

use crate::task::Plugin;
use std::sync::Arc;

/// Every task plugin this build knows.
pub const BUILTIN: &[&Plugin] = &[
    &crate::ports::PLUGIN,
    &crate::stats::PLUGIN,
    &crate::primes::PLUGIN,
    &crate::blobs::PLUGIN,
];

/// Names a plugin may not take: the API's own paths under `/v1/` and the `edge` commands.
pub const RESERVED_NAMES: &[&str] = &[
    "jobs", "tasks", "healthz", "metrics", "sources", "serve", "token", "config", "certs",
    "backup", "status", "upload", "help",
];

/// Table names the store itself keeps (see [`crate::store`]).
const CORE_TABLES: &[&str] = &["meta", "jobs", "revoked_tokens"];

/// A plugin that cannot join a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two plugins of one name.
    #[error("two task plugins are named `{0}`")]
    DuplicateName(String),
    /// The name is one of [`RESERVED_NAMES`], or not a lowercase word.
    #[error("a task plugin cannot be named `{0}`: use lowercase letters, digits, `-` and `_`, and none of: {list}", list = RESERVED_NAMES.join(", "))]
    BadName(String),
    /// A task that reads bodies as they are (`raw`) and also names record formats: it would be
    /// handed every body raw, so the others could never apply.
    #[error(
        "task plugin `{0}` reads `raw` bodies, so it can read no other format: give it `raw` alone"
    )]
    RawAndRecords(String),
    /// Two owners of one table.
    #[error("the table `{table}` of task plugin `{plugin}` is already the table of {owner}")]
    DuplicateTable {
        /// The plugin that declared it second.
        plugin: String,
        /// The table.
        table: String,
        /// Who has it: `the store` or `task plugin NAME`.
        owner: String,
    },
}

/// The plugins a store and a server run with. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    plugins: Arc<[&'static Plugin]>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::builtin()
    }
}

impl Registry {
    /// The built-in plugins ([`BUILTIN`]).
    pub fn builtin() -> Registry {
        Registry {
            plugins: BUILTIN.into(),
        }
    }

    /// This registry and `plugin`, if its name and tables are free.
    pub fn with(&self, plugin: &'static Plugin) -> Result<Registry, RegistryError> {
        let valid = !plugin.name.is_empty()
            && plugin
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid || RESERVED_NAMES.contains(&plugin.name) {
            return Err(RegistryError::BadName(plugin.name.to_owned()));
        }
        if self.find(plugin.name).is_some() {
            return Err(RegistryError::DuplicateName(plugin.name.to_owned()));
        }
        if plugin.reads_raw() && plugin.formats.len() > 1 {
            return Err(RegistryError::RawAndRecords(plugin.name.to_owned()));
        }
        for table in plugin.storage.tables {
            let owner = if CORE_TABLES.contains(&table.name()) {
                Some("the store".to_owned())
            } else {
                self.owner_of(table.name())
                    .map(|p| format!("task plugin `{}`", p.name))
            };
            if let Some(owner) = owner {
                return Err(RegistryError::DuplicateTable {
                    plugin: plugin.name.to_owned(),
                    table: table.name().to_owned(),
                    owner,
                });
            }
        }
        let mut plugins = self.plugins.to_vec();
        plugins.push(plugin);
        Ok(Registry {
            plugins: plugins.into(),
        })
    }

    /// The plugin named `name`, if there is one.
    pub fn find(&self, name: &str) -> Option<&'static Plugin> {
        self.plugins.iter().find(|p| p.name == name).copied()
    }

    /// Every plugin, in registration order.
    pub fn plugins(&self) -> impl Iterator<Item = &'static Plugin> + '_ {
        self.plugins.iter().copied()
    }

    /// The names of every plugin, comma-separated (for error messages).
    pub fn names(&self) -> String {
        self.plugins
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn owner_of(&self, table: &str) -> Option<&'static Plugin> {
        self.plugins()
            .find(|p| p.storage.tables.iter().any(|t| t.name() == table))
    }
}

/// The built-in plugin named `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Plugin> {
    BUILTIN.iter().find(|p| p.name == name).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_plugins_are_a_valid_registry() {
        let mut registry = Registry {
            plugins: Arc::new([]),
        };
        for plugin in BUILTIN {
            registry = registry.with(plugin).unwrap();
        }
        assert_eq!(registry.names(), "ports, stats, primes, blobs");
    }

    #[test]
    fn names_and_tables_are_checked() {
        let registry = Registry::builtin();
        let err = registry.with(&crate::ports::PLUGIN).unwrap_err();
        assert_eq!(err, RegistryError::DuplicateName("ports".into()));

        static JOBS: Plugin = Plugin {
            name: "jobs",
            ..crate::stats::PLUGIN
        };
        assert!(matches!(
            registry.with(&JOBS),
            Err(RegistryError::BadName(_))
        ));
        static UPPER: Plugin = Plugin {
            name: "Ports2",
            ..crate::stats::PLUGIN
        };
        assert!(matches!(
            registry.with(&UPPER),
            Err(RegistryError::BadName(_))
        ));

        static MIXED: Plugin = Plugin {
            name: "mixed",
            formats: &[edge_proto::Format::Json, edge_proto::Format::Raw],
            ..crate::stats::PLUGIN
        };
        assert_eq!(
            registry.with(&MIXED).unwrap_err(),
            RegistryError::RawAndRecords("mixed".into())
        );

        static THIEF: Plugin = Plugin {
            name: "thief",
            ..crate::ports::PLUGIN
        };
        let err = registry.with(&THIEF).unwrap_err();
        assert!(err.to_string().contains("task plugin `ports`"), "{err}");
    }
}
