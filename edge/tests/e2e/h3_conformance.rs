//! HTTP/3 conformance (RFC 9114, RFC 9110): GOAWAY and requests after it, malformed
//! requests, HEAD and 405, STOP_SENDING codes, and early refusals that reach a real curl
//! still uploading.
//!
//! The protocol-level checks speak raw QUIC (frames written by hand, field sections in QPACK
//! literals) so that they can send what a well-behaved client library never would.

use crate::http3::{curl_as, h3curl, raw_h3_connection, url};
use crate::util::*;
use crate::wire::{frame_header, prefix_int};
use edge_proto::Event;
use serde_json::Value;
use std::time::Duration;

/// H3_NO_ERROR, H3_REQUEST_REJECTED and H3_MESSAGE_ERROR (RFC 9114 §8.1).
const H3_NO_ERROR: u64 = 0x100;
const H3_REQUEST_REJECTED: u64 = 0x10b;
const H3_MESSAGE_ERROR: u64 = 0x10e;

fn frame(frame_type: u64, payload: &[u8]) -> Vec<u8> {
    [
        frame_header(frame_type, payload.len() as u64),
        payload.to_vec(),
    ]
    .concat()
}

/// A HEADERS frame of literal field lines, in the order given (no table, no Huffman).
fn headers(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = vec![0, 0];
    for (name, value) in fields {
        block.extend(prefix_int(0x20, 3, name.len()));
        block.extend(name.as_bytes());
        block.extend(prefix_int(0, 7, value.len()));
        block.extend(value.as_bytes());
    }
    frame(0x1, &block)
}

async fn read_varint(recv: &mut quinn::RecvStream) -> u64 {
    let mut first = [0u8];
    recv.read_exact(&mut first).await.unwrap();
    let mut rest = vec![0u8; (1 << (first[0] >> 6)) - 1];
    recv.read_exact(&mut rest).await.unwrap();
    rest.iter()
        .fold(u64::from(first[0] & 0x3f), |v, b| (v << 8) | u64::from(*b))
}

/// One frame: its type and payload.
async fn read_frame(recv: &mut quinn::RecvStream) -> (u64, Vec<u8>) {
    let frame_type = read_varint(recv).await;
    let mut payload = vec![0u8; read_varint(recv).await as usize];
    recv.read_exact(&mut payload).await.unwrap();
    (frame_type, payload)
}

/// An HTTP/3 connection set up by hand: our control stream with empty SETTINGS, and the
/// server's control stream (its other unidirectional streams are kept open, unread).
struct RawH3 {
    _endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    _control: quinn::SendStream,
    server_control: quinn::RecvStream,
    _others: Vec<quinn::RecvStream>,
}

impl RawH3 {
    async fn connect(server: &TestServer) -> RawH3 {
        let (endpoint, connection) = raw_h3_connection(server).await;
        let mut control = connection.open_uni().await.unwrap();
        control.write_all(&[0x00, 0x04, 0x00]).await.unwrap();
        let mut others = Vec::new();
        let server_control = loop {
            let mut uni = connection.accept_uni().await.unwrap();
            if read_varint(&mut uni).await == 0x00 {
                break uni;
            }
            others.push(uni);
        };
        RawH3 {
            _endpoint: endpoint,
            connection,
            _control: control,
            server_control,
            _others: others,
        }
    }

    /// The GOAWAY id the server sends, skipping its other control frames.
    async fn goaway(&mut self) -> u64 {
        loop {
            let (frame_type, payload) = read_frame(&mut self.server_control).await;
            if frame_type == 0x7 {
                let mut id = 0u64;
                let len = 1usize << (payload[0] >> 6);
                for (i, b) in payload[..len].iter().enumerate() {
                    id = (id << 8) | u64::from(if i == 0 { b & 0x3f } else { *b });
                }
                return id;
            }
        }
    }

    /// A request: its HEADERS (and body, when given) sent, the stream left open unless
    /// `finish`.
    async fn request(
        &self,
        fields: &[(&str, &str)],
        body: &[u8],
        finish: bool,
    ) -> (quinn::SendStream, quinn::RecvStream) {
        let (mut send, recv) = self.connection.open_bi().await.unwrap();
        send.write_all(&headers(fields)).await.unwrap();
        if !body.is_empty() {
            send.write_all(&frame(0x0, body)).await.unwrap();
        }
        if finish {
            send.finish().unwrap();
        }
        (send, recv)
    }
}

fn get(authority: &str, path: &'static str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":scheme", "https".into()),
        (":authority", authority.into()),
        (":path", path.into()),
    ]
}

fn borrowed<'a>(fields: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    fields.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// The DATA payloads of a response up to its end, or the reset that ended it.
async fn response_body(recv: &mut quinn::RecvStream) -> Result<String, quinn::ReadError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        bytes.extend_from_slice(&chunk.bytes);
    }
    let mut rest = bytes.as_slice();
    let mut body = Vec::new();
    while !rest.is_empty() {
        let take_varint = |rest: &mut &[u8]| {
            let len = 1usize << (rest[0] >> 6);
            let v = rest[..len].iter().enumerate().fold(0u64, |v, (i, b)| {
                (v << 8) | u64::from(if i == 0 { b & 0x3f } else { *b })
            });
            *rest = &rest[len..];
            v
        };
        let frame_type = take_varint(&mut rest);
        let len = take_varint(&mut rest) as usize;
        if frame_type == 0x0 {
            body.extend_from_slice(&rest[..len]);
        }
        rest = &rest[len..];
    }
    Ok(String::from_utf8(body).unwrap())
}

fn reset_code(result: &Result<String, quinn::ReadError>) -> Option<u64> {
    match result {
        Err(quinn::ReadError::Reset(code)) => Some(code.into_inner()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_names_the_request_above_the_last_accepted_and_later_ones_are_refused_at_once() {
    let server = TestServer::start().await;
    let mut h3 = RawH3::connect(&server).await;
    let authority = format!("localhost:{}", server.addr.port());
    let token = format!("Bearer {}", server.token(ALL_SCOPES));
    let mut upload = get(&authority, "/v1/jobs/stats?format=lines");
    upload[0].1 = "PUT".into();
    upload.push(("authorization", token));
    // Request 0: an upload whose body is still coming when the server drains.
    let (mut send, mut recv) = h3.request(&borrowed(&upload), b"1\n2\n", false).await;
    let (frame_type, _) = read_frame(&mut recv).await;
    assert_eq!(
        frame_type, 0x1,
        "the upload's response headers: the job runs"
    );

    server.drain();
    // RFC 9114 §5.2: the id above the last request processed. Request 0 goes on.
    assert_eq!(h3.goaway().await, 4);

    // Request 4 came after GOAWAY: refused unprocessed, at once (not at the end of the grace).
    let health = get(&authority, "/healthz");
    let (_late_send, mut late) = h3.request(&borrowed(&health), b"", true).await;
    let refused = tokio::time::timeout(Duration::from_secs(5), response_body(&mut late))
        .await
        .expect("refused at once");
    assert_eq!(
        reset_code(&refused),
        Some(H3_REQUEST_REJECTED),
        "{refused:?}"
    );

    // Request 0 is answered to its end.
    send.write_all(&frame(0x0, b"3\n")).await.unwrap();
    send.finish().unwrap();
    let body = response_body(&mut recv).await.unwrap();
    let events = crate::http3::events(&body);
    assert!(
        matches!(events.last(), Some(Event::Done { records: 3, .. })),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_stream_errors_and_never_answered() {
    let server = TestServer::start().await;
    let h3 = RawH3::connect(&server).await;
    let authority = format!("localhost:{}", server.addr.port());
    let good = get(&authority, "/healthz");

    // The same encoding, well formed, is answered: the checks are not against the encoder.
    let (_send, mut recv) = h3.request(&borrowed(&good), b"", true).await;
    let body = response_body(&mut recv).await.unwrap();
    assert!(body.starts_with(r#"{"status":"ok""#), "{body}");

    let mut cases: Vec<(&str, Vec<(&str, String)>)> = Vec::new();
    let mut after = good.clone();
    after.insert(1, ("accept", "*/*".into()));
    cases.push(("a pseudo-header after a regular header", after));
    let mut twice = good.clone();
    twice.push((":path", "/v1/tasks".into()));
    cases.push(("a second :path", twice));
    let mut twice = good.clone();
    twice.insert(1, (":method", "DELETE".into()));
    cases.push(("a second :method", twice));
    for missing in [":method", ":scheme", ":path"] {
        let fields = good
            .iter()
            .filter(|(n, _)| *n != missing)
            .cloned()
            .collect();
        cases.push((missing, fields));
    }
    let mut status = good.clone();
    status.push((":status", "200".into()));
    cases.push(("a :status in a request", status));
    for (case, fields) in &cases {
        let (_send, mut recv) = h3.request(&borrowed(fields), b"", true).await;
        let answer = response_body(&mut recv).await;
        assert_eq!(
            reset_code(&answer),
            Some(H3_MESSAGE_ERROR),
            "{case}: {answer:?}"
        );
    }
    // The connection lives on.
    let (_send, mut recv) = h3.request(&borrowed(&good), b"", true).await;
    assert!(response_body(&mut recv).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_still_coming_after_a_refusal_is_read_then_stopped_with_h3_no_error() {
    let server = TestServer::start().await;
    let h3 = RawH3::connect(&server).await;
    let authority = format!("localhost:{}", server.addr.port());
    let mut fields = get(&authority, "/v1/jobs/nosuchtask");
    fields[0].1 = "PUT".into();
    fields.push((
        "authorization",
        format!("Bearer {}", server.token(ALL_SCOPES)),
    ));
    let (mut send, mut recv) = h3.request(&borrowed(&fields), b"", false).await;
    // The body goes on past the refusal; the server reads it (up to its bound), then stops it.
    let writer = tokio::spawn(async move {
        let chunk = frame(0x0, &vec![b'x'; 64 * 1024]);
        let mut sent = 0u64;
        loop {
            if send.write_all(&chunk).await.is_err() {
                return (sent, send.stopped().await);
            }
            sent += chunk.len() as u64;
            assert!(sent < 256 * 1024 * 1024, "never stopped");
        }
    });
    let body = response_body(&mut recv).await.unwrap();
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "unknown_task", "{body}");
    let (sent, stopped) = writer.await.unwrap();
    let code = stopped.unwrap().map(|c| c.into_inner());
    assert_eq!(code, Some(H3_NO_ERROR), "STOP_SENDING after {sent} bytes");
    assert!(sent >= 8 * 1024 * 1024, "stopped after only {sent} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn head_answers_like_get_and_other_methods_get_405_with_allow_on_every_route() {
    let server = TestServer::start().await;
    let token = Some(server.token(ALL_SCOPES));
    for path in ["/healthz", "/v1/tasks", "/v1/ports", "/v1/jobs"] {
        let (status, text) = curl_as(
            &server,
            token.clone(),
            vec!["-I".into(), url(&server, path)],
        )
        .await;
        assert_eq!(status, 200, "HEAD {path}: {text}");
        let lower = text.to_ascii_lowercase();
        assert!(lower.contains("content-length: "), "HEAD {path}: {text}");
        assert!(!text.contains('{'), "HEAD {path} has no body: {text}");
    }
    let cases = [
        ("DELETE", "/healthz", "GET, HEAD"),
        ("PUT", "/v1/tasks", "GET, HEAD"),
        ("POST", "/v1/ports", "GET, HEAD"),
        ("DELETE", "/v1/ports/AEAJM", "GET, HEAD"),
        ("PUT", "/v1/jobs", "GET, HEAD"),
        ("DELETE", "/v1/jobs/stats", "GET, HEAD, PUT, POST"),
    ];
    for (method, path, allow) in cases {
        let args = vec![
            "-D".into(),
            "-".into(),
            "-X".into(),
            method.into(),
            url(&server, path),
        ];
        let (status, text) = curl_as(&server, token.clone(), args).await;
        assert_eq!(status, 405, "{method} {path}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains(&format!("allow: {}", allow.to_ascii_lowercase())),
            "{method} {path}: {text}"
        );
        assert!(
            text.contains(r#""method_not_allowed""#),
            "{method} {path}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn early_refusals_reach_curl_still_uploading_a_large_file() {
    assert!(h3curl().is_some());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.txt");
    let line = "12345\n";
    std::fs::write(&file, line.repeat(5 * 1024 * 1024 / line.len())).unwrap(); // 5 MB
    let file = file.display().to_string();
    let upload = |server: &TestServer, path: &str, extra: &[&str]| {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend(["-T".into(), file.clone(), url(server, path)]);
        args
    };
    let server = TestServer::start_with(|config| config.limits.max_upload_bytes = 1_000_000).await;
    let expired = server.expired_token("stats:write");
    let all = Some(server.token(ALL_SCOPES));
    let cases: Vec<(Option<String>, Vec<String>, u16, &str)> = vec![
        (
            None,
            upload(&server, "/v1/jobs/stats", &[]),
            401,
            "unauthorized",
        ),
        (
            Some(expired),
            upload(&server, "/v1/jobs/stats", &[]),
            401,
            "token_expired",
        ),
        (
            Some(server.token("ports:read")),
            upload(&server, "/v1/jobs/stats", &[]),
            403,
            "forbidden",
        ),
        (
            all.clone(),
            upload(&server, "/v1/jobs/nosuchtask", &[]),
            404,
            "unknown_task",
        ),
        (
            all.clone(),
            upload(&server, "/v1/jobs/stats", &[]),
            413,
            "limit_exceeded",
        ),
        (
            all.clone(),
            upload(
                &server,
                "/v1/jobs/stats",
                &["-H", "content-type: image/png"],
            ),
            415,
            "unknown_format",
        ),
    ];
    for (token, args, want_status, want_code) in cases {
        let (status, body) = curl_as(&server, token, args.clone()).await;
        assert_eq!(status, want_status, "{args:?}: {body}");
        let error: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{args:?}: {e}: {body:?}"));
        assert_eq!(error["error"]["code"], want_code, "{args:?}");
    }

    let server = TestServer::start_with(|config| {
        config.limits.job_starts_per_sec = 0.1;
        config.limits.job_start_burst = 1;
    })
    .await;
    let all = Some(server.token(ALL_SCOPES));
    let numbers = std::fs::canonicalize(ports_json())
        .unwrap()
        .with_file_name("numbers.txt")
        .display()
        .to_string();
    let small = vec!["-T".into(), numbers, url(&server, "/v1/jobs/stats")];
    assert_eq!(curl_as(&server, all.clone(), small).await.0, 200);
    let (status, body) = curl_as(&server, all, upload(&server, "/v1/jobs/stats", &[])).await;
    assert_eq!(status, 429, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "rate_limited");
}
