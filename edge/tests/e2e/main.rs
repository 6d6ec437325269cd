//! End-to-end tests: a real server on 127.0.0.1 with a real redb file, real QUIC, the real
//! `edge-client` library, and (in `binary`) the real `edge` binary as a user runs it.

// Test code may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod auth;
mod binary;
mod blobs;
mod browser;
mod client_cli;
mod crash;
mod digest;
mod h3_conformance;
mod history;
mod http3;
mod jobs;
mod listen;
mod login;
mod logs;
/// The test origin `edge-fetch`'s own tests use: HTTPS on 127.0.0.1 with a CA of its own.
#[path = "../../../fetch/tests/fetch/server.rs"]
#[allow(dead_code)]
mod origin;
mod plugin;
mod postgres;
mod postgres_blobs;
mod primes;
mod readme;
mod resume;
mod sources;
mod tcp;
mod url_sources;
mod util;
mod watch;
mod webdriver;
mod window;
mod wire;
