//! Time and size caps: origins that stall or trickle, bodies past the cap, a gzip bomb.

use crate::server::{Origin, Reply, Transport};
use crate::{failure, policy, read_all, text};
use async_compression::tokio::bufread::GzipEncoder;
use bytes::Bytes;
use edge_fetch::{FetchError, Policy, Timeout};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const SHORT: Duration = Duration::from_millis(300);

/// Fails unless `error` is the timeout `which`.
fn assert_timeout(error: &FetchError, which: Timeout) {
    match error {
        FetchError::Timeout { which: got, .. } => assert_eq!(*got, which, "{error}"),
        other => panic!("not a timeout: {other}"),
    }
    assert_eq!(error.code(), "fetch_timeout");
}

#[tokio::test]
async fn a_head_that_never_comes_passes_the_first_byte_timeout() {
    let origin = Origin::start(Transport::Https, |_| Reply::StallHead).await;
    let policy = Policy {
        first_byte_timeout: SHORT,
        ..policy(&origin)
    };
    let start = Instant::now();
    let error = failure(&origin.url("/"), &policy).await;
    assert_timeout(&error, Timeout::FirstByte);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_body_that_stops_passes_the_idle_timeout() {
    let origin = Origin::start(Transport::Https, |_| {
        Reply::pieces(200, vec![Bytes::from_static(b"the start")], Duration::ZERO).then_stall()
    })
    .await;
    let policy = Policy {
        idle_timeout: SHORT,
        ..policy(&origin)
    };
    let mut fetched = edge_fetch::fetch(&origin.url("/"), &policy, None)
        .await
        .expect("fetched");
    let first = fetched.body.chunk().await.expect("the first piece");
    assert_eq!(first.as_deref(), Some(&b"the start"[..]));
    let start = Instant::now();
    let error = fetched.body.chunk().await.expect_err("a stall");
    assert_timeout(&error, Timeout::Idle);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // The body stays failed.
    assert!(fetched.body.chunk().await.is_err());
}

#[tokio::test]
async fn a_trickle_passes_the_total_timeout() {
    let drops: Vec<Bytes> = (0..100).map(|_| Bytes::from_static(b".")).collect();
    let origin = Origin::start(Transport::Https, move |_| {
        Reply::pieces(200, drops.clone(), Duration::from_millis(50))
    })
    .await;
    let policy = Policy {
        idle_timeout: Duration::from_millis(400),
        total_timeout: Duration::from_millis(500),
        ..policy(&origin)
    };
    let start = Instant::now();
    let error = failure(&origin.url("/"), &policy).await;
    assert_timeout(&error, Timeout::Total);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_tls_handshake_that_never_comes_passes_the_connect_timeout() {
    // Accepts TCP connections and says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let origin = Origin::start(Transport::Https, |_| Reply::full(200, "")).await;
    let policy = Policy {
        connect_timeout: SHORT,
        ..policy(&origin)
    };
    let error = failure(&format!("https://{addr}/"), &policy).await;
    assert_timeout(&error, Timeout::Connect);
    silent.abort();
}

#[tokio::test]
async fn a_content_length_past_the_cap_is_refused_up_front() {
    let origin = Origin::start(Transport::Https, |_| Reply::full(200, text(2 << 20))).await;
    let policy = Policy {
        max_bytes: 1 << 20,
        ..policy(&origin)
    };
    let error = edge_fetch::fetch(&origin.url("/"), &policy, None)
        .await
        .expect_err("too large");
    assert!(
        matches!(error, FetchError::TooLarge { max } if max == 1 << 20),
        "{error}"
    );
    assert_eq!(error.code(), "too_large");
}

#[tokio::test]
async fn a_body_without_length_stops_at_the_cap() {
    let pieces: Vec<Bytes> = (0..40).map(|_| text(64 * 1024)).collect();
    let origin = Origin::start(Transport::Https, move |_| {
        Reply::pieces(200, pieces.clone(), Duration::ZERO)
    })
    .await;
    let max = 1 << 20;
    let policy = Policy {
        max_bytes: max,
        ..policy(&origin)
    };
    let mut fetched = edge_fetch::fetch(&origin.url("/"), &policy, None)
        .await
        .expect("fetched");
    let mut handed_out = 0u64;
    let error = loop {
        match fetched.body.chunk().await {
            Ok(Some(piece)) => handed_out += piece.len() as u64,
            Ok(None) => panic!("the whole body was read"),
            Err(e) => break e,
        }
    };
    assert!(matches!(error, FetchError::TooLarge { .. }), "{error}");
    assert!(handed_out <= max, "{handed_out} bytes handed out");
}

#[tokio::test]
async fn a_gzip_bomb_stops_at_the_cap() {
    let decoded_size = 64 << 20;
    let mut bomb = Vec::new();
    GzipEncoder::new(&vec![0u8; decoded_size][..])
        .read_to_end(&mut bomb)
        .await
        .expect("compressed");
    assert!(bomb.len() < 256 * 1024, "{} bytes", bomb.len());
    let bomb = Bytes::from(bomb);
    let origin = Origin::start(Transport::Https, move |_| {
        Reply::full(200, bomb.clone()).header("content-encoding", "gzip")
    })
    .await;
    let max = 1 << 20;
    let policy = Policy {
        max_bytes: max,
        ..policy(&origin)
    };
    let mut fetched = edge_fetch::fetch(&origin.url("/"), &policy, None)
        .await
        .expect("fetched: the wire length is under the cap");
    let error = read_all(&mut fetched.body).await.expect_err("too large");
    assert!(matches!(error, FetchError::TooLarge { .. }), "{error}");
    assert!(fetched.body.bytes_read() <= max);
}
