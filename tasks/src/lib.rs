//! Task plugins for edge, and everything they need: transport-free and synchronous.
//!
//! The server hands this crate a job's bytes; this crate cuts them into records, runs them
//! through a task plugin and keeps what the plugin stores. It knows nothing of QUIC or HTTP.
//!
//! # Layout
//! - [`decode`]: incremental decoders (`json`, `ndjson`, `lines`, `csv`) and format sniffing.
//! - [`record`]: the records decoders produce and the faults reported for bad ones.
//! - [`task`]: the [`Task`] trait and the [`Plugin`] description a plugin exports.
//! - [`registry`]: the list of plugins (adding one is its file and one line there).
//! - [`table`]: tables as values, and what a plugin keeps in the store ([`table::Storage`]).
//! - [`reads`]: a plugin's read endpoints ([`reads::Reads`]) and the requests for them.
//! - [`ports`]: the `ports` plugin (sea ports upserted into redb) and its table.
//! - [`stats`]: the `stats` plugin (online count, mean, variance, min, max).
//! - [`blobs`]: the `blobs` plugin (files stored as they are, in chunks, and served back).
//! - [`primes`]: the `primes` plugin (the n-th prime for each record, sent back as results).
//! - [`store`]: the redb database every plugin shares: its tables, layout versions, backups.
//! - [`writer`]: the store's single writer thread, which commits jobs' changes in groups.
//! - [`history`]: job records kept in the store.
//! - [`revocations`]: revoked token ids (the deny-list) kept in the store.
//! - [`pipeline`]: runs one job: decoder -> task -> commits, emitting notification events.

pub mod blobs;
pub mod claims;
pub mod decode;
pub mod fetches;
pub mod history;
pub mod pipeline;
pub mod ports;
pub mod primes;
pub mod reads;
pub mod record;
pub mod registry;
pub mod resume;
pub mod revocations;
pub mod stats;
pub mod store;
pub mod table;
pub mod task;
mod time;
pub mod users;
pub mod writer;

pub use record::{Body, CsvRow, Record, RecordFault, Rejection};
pub use registry::Registry;
pub use store::{BackupError, OpenError, Store, StoreError};
pub use task::{Context, ParamError, Plugin, Task, TaskError};
