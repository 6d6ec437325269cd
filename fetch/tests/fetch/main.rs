//! edge-fetch against real origins on 127.0.0.1 (see `server`): bodies and encodings,
//! redirects, address refusals, timeouts and size caps. No packet goes anywhere but
//! 127.0.0.1: every other address in these tests must be refused before any connect.

mod bodies;
mod limits;
mod redirects;
mod refusals;
mod server;

use bytes::Bytes;
use edge_fetch::{Body, FetchError, Policy, Rule};
use server::Origin;
use std::time::Duration;

/// A policy that trusts `origin`'s CA and allows 127.0.0.1 (refused by default), with
/// timeouts short enough for tests that fail.
fn policy(origin: &Origin) -> Policy {
    Policy {
        allow: vec![rule("127.0.0.1")],
        extra_roots: vec![origin.ca.clone()],
        connect_timeout: Duration::from_secs(5),
        first_byte_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(20),
        ..Policy::default()
    }
}

fn rule(text: &str) -> Rule {
    text.parse().expect("a test rule")
}

/// The whole body and the number of pieces it came in.
async fn read_all(body: &mut Body) -> Result<(Vec<u8>, usize), FetchError> {
    let mut all = Vec::new();
    let mut pieces = 0;
    while let Some(piece) = body.chunk().await? {
        assert!(!piece.is_empty(), "no empty pieces");
        all.extend_from_slice(&piece);
        pieces += 1;
    }
    Ok((all, pieces))
}

/// The error a fetch (or reading its body) ends with.
async fn failure(url: &str, policy: &Policy) -> FetchError {
    match edge_fetch::fetch(url, policy, None).await {
        Err(e) => e,
        Ok(mut fetched) => match read_all(&mut fetched.body).await {
            Err(e) => e,
            Ok((body, _)) => panic!("{url} was fetched: {} bytes", body.len()),
        },
    }
}

/// `n` bytes of text that compresses well but not absurdly.
fn text(n: usize) -> Bytes {
    let line = b"port,name,country,lat,lon\n";
    Bytes::from(line.iter().copied().cycle().take(n).collect::<Vec<u8>>())
}
