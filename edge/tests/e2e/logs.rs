//! Log forging: the real `edge` binary logs (at debug level, both formats) while strangers
//! and token holders send control characters in every field they can reach: HTTP/3 header
//! names and values, paths, queries and methods; the `edge/1` job header's task, name and
//! params; a token's `kid` (read before any signature check) and a signed token's `sub`.
//! Every line of the log must be one event, with the peers' text escaped in it.

use crate::binary::ServeProcess;
use crate::util::*;
use edge_client::{Client, ClientConfig};
use edge_proto::{Format, JobHeader};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// What peers put in every field: a line break and a forged line, a carriage return, a
/// terminal escape, a NUL and a C1 control.
const EVIL: &str = "\n2026-01-01T00:00:00.000000Z  INFO edge: FORGED line\r\u{1b}[2J\0\u{85}";

/// A token signed with the server's key (or, with `kid`, by a stranger), `claims` changed.
fn token(dir: &Path, kid: Option<&str>, claims: Value) -> String {
    let keys = edge::auth::KeyPair::load_or_generate(&dir.join("certs")).unwrap();
    let now = edge::auth::unix_now();
    let mut all = json!({
        "sub": "tester", "exp": now + 600, "iat": now, "nbf": now, "jti": format!("j{now}"),
        "iss": "edge", "aud": "edge", "scope": "ports:write stats:write ports:read jobs:read",
    });
    for (key, value) in claims.as_object().unwrap() {
        all[key] = value.clone();
    }
    match kid {
        None => keys.sign(&all).unwrap(),
        // A key the server does not have: refused before any signature check, with the kid
        // in the message.
        Some(kid) => {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some(kid.to_owned());
            let secret = jsonwebtoken::EncodingKey::from_secret(b"not a key of the server");
            jsonwebtoken::encode(&header, &all, &secret).unwrap()
        }
    }
}

/// `edge/1` jobs carrying `EVIL` in the task, the file name, the params and the token.
async fn edge1_jobs(dir: &Path, addr: std::net::SocketAddr) {
    let config = |token: String| ClientConfig {
        server: format!("https://{addr}"),
        ca: Some(dir.join("certs/ca.pem")),
        token: Some(token),
    };
    let valid = token(dir, None, json!({}));
    let evil_sub = token(dir, None, json!({"sub": format!("sub{EVIL}")}));
    let evil_kid = token(dir, Some(&format!("kid{EVIL}")), json!({}));
    let cases: Vec<(String, JobHeader)> = vec![
        (valid.clone(), {
            let mut header = JobHeader::new(format!("task{EVIL}"));
            header.name = Some(format!("name{EVIL}"));
            header
        }),
        (valid, {
            let mut header = JobHeader::new("stats");
            header.name = Some(format!("name{EVIL}"));
            header.format = Some(Format::Lines);
            header
                .params
                .insert(format!("param{EVIL}"), json!(format!("value{EVIL}")));
            header
        }),
        (evil_sub, {
            let mut header = JobHeader::new("stats");
            header.format = Some(Format::Lines);
            header
        }),
        (evil_kid, JobHeader::new("stats")),
    ];
    for (token, mut header) in cases {
        let client = Client::connect(&config(token)).await.unwrap();
        header.size = Some(2);
        upload_with(
            &client,
            header,
            Box::new(std::io::Cursor::new(b"1\n".to_vec())),
        )
        .await;
        client.close().await;
    }
}

/// A QUIC connection with ALPN `h3` that has sent its SETTINGS.
async fn h3_connection(
    dir: &Path,
    addr: std::net::SocketAddr,
) -> (quinn::Endpoint, quinn::Connection, quinn::SendStream) {
    let (endpoint, connection) =
        crate::http3::raw_h3_connection_to(&dir.join("certs/ca.pem"), addr).await;
    // The control stream: its type (0) and an empty SETTINGS frame.
    let mut control = connection.open_uni().await.unwrap();
    control.write_all(&[0x00, 0x04, 0x00]).await.unwrap();
    (endpoint, connection, control)
}

/// An HTTP/3 variable-length integer.
fn varint(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=63 => out.push(n as u8),
        64..=16383 => out.extend_from_slice(&(0x4000 | n as u16).to_be_bytes()),
        _ => out.extend_from_slice(&(0x8000_0000 | n as u32).to_be_bytes()),
    }
}

/// A QPACK integer with an `n`-bit prefix in a first byte holding `flags`.
fn prefixed(out: &mut Vec<u8>, flags: u8, bits: u32, value: usize) {
    let max = (1usize << bits) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A HEADERS frame of literal fields (no static or dynamic table, no Huffman): any bytes in
/// any name or value, which no HTTP library would send.
fn headers_frame(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut block = vec![0, 0];
    for (name, value) in fields {
        prefixed(&mut block, 0x20, 3, name.len());
        block.extend_from_slice(name);
        prefixed(&mut block, 0x00, 7, value.len());
        block.extend_from_slice(value);
    }
    let mut frame = vec![0x01];
    varint(&mut frame, block.len());
    frame.extend(block);
    frame
}

/// Sends one request of raw `fields` on a new connection, and waits for its answer (or its
/// refusal) to end.
async fn raw_request(dir: &Path, addr: std::net::SocketAddr, fields: &[(&[u8], &[u8])]) {
    let (_endpoint, connection, _control) = h3_connection(dir, addr).await;
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&headers_frame(fields)).await.unwrap();
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20)).await;
    connection.close(0u32.into(), b"");
}

/// HTTP/3 requests with `EVIL` in every place a peer controls.
async fn h3_requests(dir: &Path, addr: std::net::SocketAddr) {
    let bearer = format!("Bearer {}", token(dir, None, json!({})));
    let evil_kid = format!(
        "Bearer {}",
        token(dir, Some(&format!("kid{EVIL}")), json!({}))
    );
    let evil = EVIL.as_bytes();
    let join = |parts: &[&[u8]]| parts.concat();
    let name = join(&[b"x-name", evil]);
    let value = join(&[b"value", evil]);
    let raw_path = join(&[b"/v1/jobs/stats", evil]);
    let method = join(&[b"PU", evil, b"T"]);
    // EVIL, percent-encoded.
    let encoded =
        "%0A2026-01-01T00:00:00.000000Z%20%20INFO%20edge:%20FORGED%20line%0D%1B%5B2J%00%C2%85";
    let task_path = format!("/v1/jobs/h3task{encoded}");
    let query_path = format!("/v1/jobs/stats?format=fmt{encoded}&name=n{encoded}");
    let port_path = format!("/v1/ports/code{encoded}");
    // Bytes over 0x7f are allowed in values: U+2028 (LINE SEPARATOR) and U+0085 (NEL).
    let content_type = "text/x\u{2028}FORGED\u{85}".as_bytes();
    let base = |method: &'static [u8], path: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), method.to_vec()),
            (b":scheme".to_vec(), b"https".to_vec()),
            (b":authority".to_vec(), b"localhost".to_vec()),
            (b":path".to_vec(), path.to_vec()),
        ]
    };
    let mut requests: Vec<Vec<(Vec<u8>, Vec<u8>)>> = Vec::new();
    let with = |mut fields: Vec<(Vec<u8>, Vec<u8>)>, extra: &[(&[u8], &[u8])]| {
        fields.extend(extra.iter().map(|(n, v)| (n.to_vec(), v.to_vec())));
        fields
    };
    // Before any token: header names and values, the path, the method, a token's kid.
    requests.push(with(base(b"GET", b"/v1/tasks"), &[(&name, b"v")]));
    requests.push(with(base(b"GET", b"/v1/tasks"), &[(b"x-value", &value)]));
    requests.push(base(b"GET", &raw_path));
    requests.push({
        let mut fields = base(b"GET", b"/v1/tasks");
        fields[0].1 = method.clone();
        fields
    });
    requests.push(with(
        base(b"GET", b"/v1/tasks"),
        &[(b"authorization", evil_kid.as_bytes())],
    ));
    // With a valid token: percent-encoded path segments and query values, a content type.
    for path in [&task_path, &query_path, &port_path] {
        requests.push(with(
            base(b"PUT", path.as_bytes()),
            &[(b"authorization", bearer.as_bytes())],
        ));
    }
    requests.push(with(
        base(b"PUT", b"/v1/jobs/stats"),
        &[
            (b"authorization", bearer.as_bytes()),
            (b"content-type", content_type),
        ],
    ));
    requests.push(with(
        base(b"GET", port_path.as_bytes()),
        &[(b"authorization", bearer.as_bytes())],
    ));
    for fields in &requests {
        let fields: Vec<(&[u8], &[u8])> = fields
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        raw_request(dir, addr, &fields).await;
    }
}

/// Whether `line` starts as an event of the human format does: an RFC 3339 time, a level.
fn starts_an_event(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let time = words.next().unwrap_or_default();
    let level = words.next().unwrap_or_default();
    time.len() >= 20
        && time.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && time.as_bytes()[4] == b'-'
        && time.as_bytes()[10] == b'T'
        && time.ends_with('Z')
        && ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_cannot_forge_log_lines_in_either_format() {
    for format in ["human", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("edge.log")).unwrap();
        let server = ServeProcess::start_logging(dir.path(), format, log);
        edge1_jobs(dir.path(), server.addr()).await;
        h3_requests(dir.path(), server.addr()).await;
        assert!(server.terminate().success());
        let log = std::fs::read_to_string(dir.path().join("edge.log")).unwrap();
        assert!(
            log.ends_with('\n'),
            "{format}: the log ends with a whole line"
        );
        let mut events = 0;
        for line in log.lines() {
            assert!(
                !line.chars().any(|c| c.is_control()),
                "{format}: a raw control character in {line:?}"
            );
            match format {
                "human" => assert!(starts_an_event(line), "not an event: {line:?}"),
                _ => {
                    let event: Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("not a JSON event ({e}): {line:?}"));
                    assert!(event["timestamp"].is_string() && event["level"].is_string());
                }
            }
            events += 1;
        }
        assert!(events > 10, "{format}: {log}");
        // The peers' text is there, escaped, in the events that quote it.
        let escaped = match format {
            "human" => r"\n2026-01-01T00:00:00.000000Z  INFO edge: FORGED line\r\u{1b}[2J\0\u{85}",
            _ => r"\n2026-01-01T00:00:00.000000Z  INFO edge: FORGED line\r\u001b[2J\u0000\u0085",
        };
        for (what, marker) in [
            ("the edge/1 task", "task"),
            ("an edge/1 param's name", "param"),
            ("a token's kid", "kid"),
            ("a token's sub", "sub"),
            ("the HTTP/3 path's task", "h3task"),
            ("the HTTP/3 query's format", "fmt"),
        ] {
            let quoted = format!("{marker}{escaped}");
            assert!(
                log.contains(&quoted),
                "{format}: {what} is not in the log as {quoted:?}:\n{log}"
            );
        }
    }
}
