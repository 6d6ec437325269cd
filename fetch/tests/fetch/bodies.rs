//! Bodies as they stream, their encodings, what is sent, statuses and 304s.

use crate::server::{Origin, Reply, Transport};
use crate::{failure, policy, read_all, text};
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZlibEncoder};
use bytes::Bytes;
use edge_fetch::{Conditional, FetchError};
use std::time::Duration;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn a_200_streams_in_pieces() {
    let pieces: Vec<Bytes> = (0..4)
        .map(|i| Bytes::from(format!("piece {i}\n")))
        .collect();
    let sent = pieces.concat();
    let origin = Origin::start(Transport::Https, move |_| {
        Reply::pieces(200, pieces.clone(), Duration::from_millis(30))
            .header("content-type", "text/csv")
    })
    .await;
    let mut fetched = edge_fetch::fetch(&origin.url("/data.csv?x=1"), &policy(&origin), None)
        .await
        .expect("fetched");
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.final_url, origin.url("/data.csv?x=1"));
    assert_eq!(fetched.redirects, 0);
    assert_eq!(fetched.content_type.as_deref(), Some("text/csv"));
    assert_eq!(fetched.content_length, None);
    assert!(!fetched.not_modified);
    let (body, count) = read_all(&mut fetched.body).await.expect("the body");
    assert_eq!(body, sent);
    assert!(count >= 2, "the body came in {count} piece(s)");
    assert_eq!(fetched.body.chunk().await.expect("the end again"), None);
}

#[tokio::test]
async fn http2_when_offered_http1_otherwise() {
    for (transport, version) in [
        (Transport::Https, http::Version::HTTP_2),
        (Transport::HttpsH1, http::Version::HTTP_11),
    ] {
        let origin = Origin::start(transport, |_| Reply::full(200, "hello")).await;
        let mut fetched = edge_fetch::fetch(&origin.url("/"), &policy(&origin), None)
            .await
            .expect("fetched");
        assert_eq!(fetched.content_length, Some(5));
        let (body, _) = read_all(&mut fetched.body).await.expect("the body");
        assert_eq!(body, b"hello");
        let seen = origin.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].version, version);
        assert_eq!(seen[0].path_and_query, "/");
    }
}

#[tokio::test]
async fn what_is_sent() {
    let origin = Origin::start(Transport::HttpsH1, |_| Reply::full(200, "ok")).await;
    let mut fetched = edge_fetch::fetch(&origin.url("/a?b=c"), &policy(&origin), None)
        .await
        .expect("fetched");
    read_all(&mut fetched.body).await.expect("the body");
    let seen = origin.seen();
    let headers = &seen[0].headers;
    assert_eq!(seen[0].path_and_query, "/a?b=c");
    assert_eq!(
        headers["user-agent"],
        concat!("edge-fetch/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(headers["accept-encoding"], "gzip, deflate, br");
    assert_eq!(headers["host"], origin.addr.to_string().as_str());
    for absent in [
        "authorization",
        "cookie",
        "if-none-match",
        "if-modified-since",
    ] {
        assert!(!headers.contains_key(absent), "{absent} was sent");
    }
}

async fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let read = match coding {
        "gzip" => GzipEncoder::new(data).read_to_end(&mut out).await,
        "deflate" => ZlibEncoder::new(data).read_to_end(&mut out).await,
        "br" => BrotliEncoder::new(data).read_to_end(&mut out).await,
        other => panic!("no encoder for {other}"),
    };
    read.expect("encoded");
    out
}

#[tokio::test]
async fn gzip_deflate_and_br_bodies_are_decoded() {
    let plain = text(300_000);
    for coding in ["gzip", "deflate", "br"] {
        let encoded = Bytes::from(encode(coding, &plain).await);
        let wire_length = encoded.len();
        // In small pieces on the wire, so that decoding happens across them.
        let pieces: Vec<Bytes> = encoded.chunks(1000).map(Bytes::copy_from_slice).collect();
        let origin = Origin::start(Transport::Https, move |_| {
            Reply::pieces(200, pieces.clone(), Duration::ZERO)
                .header("content-encoding", coding)
                .header("content-length", &wire_length.to_string())
        })
        .await;
        let mut fetched = edge_fetch::fetch(&origin.url("/"), &policy(&origin), None)
            .await
            .expect("fetched");
        assert_eq!(fetched.content_length, Some(wire_length as u64), "{coding}");
        let (body, _) = read_all(&mut fetched.body).await.expect(coding);
        assert_eq!(body.len(), plain.len(), "{coding}");
        assert!(body == plain, "{coding}: the decoded body differs");
    }
}

#[tokio::test]
async fn an_unknown_encoding_or_a_corrupt_body_fails() {
    let origin = Origin::start(Transport::Https, |seen| {
        match seen.path_and_query.as_str() {
            "/zstd" => Reply::full(200, "x").header("content-encoding", "zstd"),
            _ => Reply::full(200, "not gzip at all").header("content-encoding", "gzip"),
        }
    })
    .await;
    let policy = policy(&origin);
    let unknown = failure(&origin.url("/zstd"), &policy).await;
    assert_eq!(unknown.code(), "unsupported_encoding", "{unknown}");
    let corrupt = failure(&origin.url("/corrupt"), &policy).await;
    assert_eq!(corrupt.code(), "body_failed", "{corrupt}");
}

#[tokio::test]
async fn a_500_is_a_status_error() {
    let origin = Origin::start(Transport::Https, |_| Reply::full(500, "oops")).await;
    let error = failure(&origin.url("/"), &policy(&origin)).await;
    assert!(
        matches!(error, FetchError::Status { status: 500 }),
        "{error}"
    );
    assert_eq!(error.code(), "http_status");
}

#[tokio::test]
async fn a_304_answers_a_conditional_request() {
    const ETAG: &str = "\"v1\"";
    const DATE: &str = "Tue, 01 Dec 2026 10:00:00 GMT";
    let origin = Origin::start(Transport::Https, |seen| {
        match seen.headers.get("if-none-match") {
            Some(tag) if tag == ETAG => Reply::full(304, "").header("etag", ETAG),
            _ => Reply::full(200, "a,b\n1,2\n")
                .header("etag", ETAG)
                .header("last-modified", DATE),
        }
    })
    .await;
    let policy = policy(&origin);
    let mut first = edge_fetch::fetch(&origin.url("/feed.csv"), &policy, None)
        .await
        .expect("fetched");
    read_all(&mut first.body).await.expect("the body");
    assert_eq!(first.etag.as_deref(), Some(ETAG));
    assert_eq!(first.last_modified.as_deref(), Some(DATE));
    let conditional = Conditional {
        etag: first.etag.clone(),
        last_modified: first.last_modified.clone(),
    };
    let mut again = edge_fetch::fetch(&origin.url("/feed.csv"), &policy, Some(&conditional))
        .await
        .expect("fetched again");
    assert!(again.not_modified);
    assert_eq!(again.status, 304);
    assert_eq!(again.etag.as_deref(), Some(ETAG));
    assert_eq!(again.body.chunk().await.expect("no body"), None);
    let seen = origin.seen();
    assert_eq!(seen[1].headers["if-none-match"], ETAG);
    assert_eq!(seen[1].headers["if-modified-since"], DATE);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let origin = Origin::start(Transport::Https, |_| Reply::full(200, "x")).await;
    let mut untrusting = policy(&origin);
    untrusting.extra_roots.clear();
    let error = failure(&origin.url("/"), &untrusting).await;
    assert_eq!(error.code(), "tls_failed", "{error}");
    assert!(origin.seen().is_empty());
}
