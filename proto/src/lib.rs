//! The edge wire contract, shared by the server (`edge`) and the client (`edge-client`).
//!
//! It holds only data shapes and constants, no I/O: the ALPN ids, the job header a client sends
//! at the start of an upload stream, the notification events the server streams back, the stable
//! error codes, and the QUIC application codes used to stop streams and close connections.
//! `docs/PROTOCOL.md` describes the same contract in prose.
//!
//! # Layout
//! - [`header`]: the one-line JSON job header (`v`, `token`, `task`, `format`, `name`, `size`, `params`).
//! - [`event`]: the NDJSON notification events (`accepted`, `progress`, `committed`, ...).
//! - [`code`]: error codes carried in `record_error`, `failed` and `rejected` events.
//! - [`format`]: the upload formats (`json`, `ndjson`, `lines`, `csv`, `raw`).
//! - [`reads`]: a task's read endpoints as `GET /v1/tasks` describes them, and the table the
//!   read commands print.
//! - [`read_command`] (feature `cli`): the read commands `<task> get|list` that `edge` and
//!   `edge-client` both offer.
//! - [`save`] (feature `cli`): how those commands save a stored file (`get KEY -o FILE`): the
//!   one place here that does I/O.

pub mod code;
pub mod event;
pub mod format;
pub mod header;
#[cfg(feature = "cli")]
pub mod read_command;
pub mod reads;
#[cfg(feature = "cli")]
pub mod save;

pub use code::{AppCode, ErrorCode};
pub use event::{ErrorSample, Event, Summary, FIRST_ERRORS};
pub use format::Format;
pub use header::{HeaderError, JobHeader};

/// ALPN id of the job protocol: one unidirectional upload stream per job, one notification
/// stream back.
pub const ALPN_EDGE: &[u8] = b"edge/1";

/// ALPN id of HTTP/3, served on the same UDP port.
pub const ALPN_H3: &[u8] = b"h3";

/// The protocol version carried in the job header's `v` field.
pub const PROTOCOL_VERSION: u32 = 1;

/// The default UDP port of `edge serve`.
pub const DEFAULT_PORT: u16 = 4433;
