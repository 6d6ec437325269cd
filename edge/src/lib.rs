//! edge: a TLS-first QUIC ingest server.
//!
//! A client streams a file as a job over one QUIC unidirectional stream (ALPN `edge/1`); the
//! server decodes it into records as the bytes arrive, runs them through a task plugin
//! (`edge-tasks`) that may store them in redb, and streams notification events back on one
//! stream per job. The wire contract lives in `edge-proto`; `docs/PROTOCOL.md` describes it.
//!
//! # Layout
//! - [`auth`]: the token gate: JWT keys, verification, scopes, minting.
//! - [`config`]: `config/edge.toml`, flags and environment variables.
//! - [`tls`]: configured certificates, or dev certificates generated with rcgen.
//! - [`certs`]: the certificate in use, reloaded on SIGHUP and when its files change.
//! - [`server`]: the QUIC endpoint, ALPN dispatch and the steps of a shutdown.
//! - `service`: what every connection, job and request shares (store, token gate, limits).
//! - `shutdown`: the server's shutdown (draining, then abort) as one value every task holds.
//! - `edge1`: the `edge/1` job protocol on one connection.
//! - `h3guard`: cuts off HTTP/3 peers that declare oversized frames (h3 0.0.8 would buffer them),
//!   aborts malformed requests and refuses requests after GOAWAY.
//! - `h3fields`: the pseudo-header rules of a request's field section (RFC 9114 §4.3).
//! - `http3`: HTTP/3 on the same port: uploads as jobs, and the read API (`mod.rs` the
//!   connection, `routes.rs` routing, `upload.rs` uploads, `read.rs` the read API,
//!   `respond.rs` responses and refusals).
//! - `limits`: per-subject job limits (concurrency, start rate).
//! - `login`: signing in with a name and a password (`POST /v1/login`), slowed and locked
//!   out per name and per address.
//! - `logging`: the log formats, escaping what peers sent so that it cannot forge log lines.
//! - [`metrics`]: counters in the Prometheus text format.
//! - `admin`: the optional plain-HTTP admin listener (`/metrics`, `/healthz`).
//! - `connections`: connection caps (total, per IP), Retry under load, closing connections
//!   that never present a valid token.
//! - [`control`]: the Unix socket in the data dir through which `edge token revoke` reaches a
//!   running server.
//! - `window`: receive windows that follow each connection's round trip and rate, within a
//!   server-wide budget.
//! - `jobs`: one job, whatever carries it: task start, body pump, pipeline, events.
//! - `reset_key`: QUIC's stateless-reset key, kept in the data dir across restarts.
//! - `resumes`: resuming cut-off jobs: claiming a job's cursor, taking it over from the
//!   client attached to it on this node, keeping or dropping the cursor as a job ends.
//! - `prune`: hourly pruning of what plugins keep beyond their retention.
//! - `sources`: job bodies the server reads itself: files in allowed folders.
//! - `tcp`: HTTP/1.1 and HTTP/2 over TCP + TLS on the same port, through the same router.
//! - `watch`: each job's events, kept for watchers (`GET /v1/jobs/{id}/events`).
//! - [`cli`]: the `edge` command line (`serve`, `ports`, `token`).

mod admin;
pub mod auth;
pub mod certs;
pub mod cli;
pub mod config;
mod connections;
pub mod control;
mod edge1;
mod h3fields;
mod h3guard;
mod http3;
mod jobs;
mod limits;
mod logging;
mod login;
pub mod metrics;
mod prune;
mod reset_key;
mod resumes;
pub mod server;
mod service;
mod shutdown;
mod sources;
mod tcp;
pub mod tls;
mod watch;
mod window;

pub use config::Config;
pub use server::{ServeError, Server};

/// Wire encoders the HTTP/3 unit tests share with the end-to-end tests.
#[cfg(test)]
#[path = "../tests/e2e/wire.rs"]
mod test_wire;
