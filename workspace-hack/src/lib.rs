//! No code: this crate exists for its `Cargo.toml`, which gives the workspace's binary
//! packages one feature set per third-party dependency (see the comment there).
