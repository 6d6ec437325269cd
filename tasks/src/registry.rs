//! The registry of task plugins. Adding a plugin is one file plus one line here.

use crate::task::Plugin;

/// Every task plugin this build knows, by name.
pub const PLUGINS: &[Plugin] = &[crate::ports::PLUGIN, crate::stats::PLUGIN];

/// The plugin named `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Plugin> {
    PLUGINS.iter().find(|p| p.name == name)
}

/// The names of every plugin, comma-separated (for error messages).
pub fn names() -> String {
    PLUGINS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}
