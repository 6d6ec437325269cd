//! The edge client: streams files to an `edge` server as jobs over QUIC (`edge/1`) and hands
//! back the server's notification events as they arrive.
//!
//! ```no_run
//! # async fn demo() -> Result<(), edge_client::ClientError> {
//! use edge_client::{Client, ClientConfig, UploadJob};
//! use edge_proto::JobHeader;
//!
//! let config = ClientConfig {
//!     server: "https://localhost:4433".into(),
//!     ca: Some("certs/ca.pem".into()),
//!     token: None,
//! };
//! let client = Client::connect(&config).await?;
//! let body = tokio::fs::File::open("samples/ports.json").await.map_err(|e| edge_client::ClientError::Input {
//!     name: "samples/ports.json".into(),
//!     source: e,
//! })?;
//! let job = UploadJob::new(JobHeader::new("ports"), Box::new(body));
//! let result = client.upload(job, |event| println!("{event:?}")).await?;
//! println!("final: {:?}", result.last);
//! client.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`api`]: the read API over HTTP/3 (ports, jobs, tasks).
//! - [`connect`]: the server address, TLS trust and the QUIC connection.
//! - [`upload`]: one job: the header and body out, the events back.
//! - [`digest`]: a file's SHA-256, with its states every few MiB for resumes.
//! - `router`: pairs the server's notification streams with uploads.
//! - [`display`]: how the `edge-client` binary shows jobs (progress bars, line log).
//! - [`error`]: what can go wrong, with what to do about it.
//! - [`token`]: what the client can tell of its token before connecting.

pub mod api;
pub mod connect;
pub mod digest;
pub mod display;
pub mod error;
mod router;
mod tcp;
pub mod token;
pub mod upload;

pub use connect::{Client, ClientConfig, Server};
pub use digest::{Body, HeldBody, PrefixHashes, SeekableBody};
pub use error::{ClientError, Untrusted};
pub use upload::{JobResult, UploadJob};
