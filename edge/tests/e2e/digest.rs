//! A body's declared SHA-256: `edge-client` sends its file's (`sha256` in the `edge/1`
//! header, `Repr-Digest` over HTTP), the server hashes the bytes as they arrive, and `done`
//! carries the digest; a body that does not match fails the job `digest_mismatch` before its
//! last commit.

use crate::util::*;
use edge_proto::{ErrorCode, Event, JobHeader};

/// The SHA-256 of `bytes` in hex.
fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_digest_is_checked_and_confirmed() {
    let server = TestServer::start().await;
    let body = std::fs::read(ports_json()).unwrap();
    let right = sha256_hex(&body);

    // edge-client sends the file's digest by itself; `done` confirms it.
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let (ca, token, file) = (server.ca(), server.token(ALL_SCOPES), ports_json());
    let out = tokio::task::spawn_blocking(move || {
        run_client(
            &url,
            &ca,
            &token,
            [
                "upload".as_ref(),
                file.as_os_str(),
                "--task".as_ref(),
                "ports".as_ref(),
                "--json".as_ref(),
            ],
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8(out.stdout).unwrap();
    let last = Event::from_line(last.lines().last().unwrap().as_bytes()).unwrap();
    assert!(
        matches!(&last, Event::Done { sha256: Some(d), .. } if *d == right),
        "{last:?}"
    );

    // A body that is not the one declared fails, over edge/1.
    let client = server.client().await;
    let mut header = JobHeader::new("stats");
    header.sha256 = Some(sha256_hex(b"1\n2\n3\n"));
    header.format = Some(edge_proto::Format::Lines);
    let (_, events) = upload_with(
        &client,
        header,
        Box::new(std::io::Cursor::new(b"1\n2\n4\n".to_vec())),
    )
    .await;
    match events.last() {
        Some(Event::Failed { code, message, .. }) => {
            assert_eq!(*code, ErrorCode::DigestMismatch);
            assert!(message.contains("not the"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A declared digest that is not one is refused before the job starts.
    let mut header = JobHeader::new("stats");
    header.sha256 = Some("xyz".into());
    let (_, events) = upload_with(
        &client,
        header,
        Box::new(std::io::Cursor::new(b"1\n".to_vec())),
    )
    .await;
    assert!(
        matches!(
            events.last(),
            Some(Event::Rejected {
                code: ErrorCode::BadParams,
                ..
            })
        ),
        "{events:?}"
    );
    client.close().await;

    // Over HTTP/2 with curl: Repr-Digest (RFC 9530).
    use base64::Engine as _;
    let wrong = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
    let (ca, token, port) = (server.ca(), server.token(ALL_SCOPES), server.addr.port());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--http2", "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("authorization: Bearer {token}")])
            .args(["-H", &format!("repr-digest: sha-256=:{wrong}:")])
            .args(["-T"])
            .arg(ports_json())
            .arg(format!("https://127.0.0.1:{port}/v1/jobs/ports"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let last = Event::from_line(text.lines().last().unwrap().as_bytes()).unwrap();
    assert!(
        matches!(
            last,
            Event::Failed {
                code: ErrorCode::DigestMismatch,
                ..
            }
        ),
        "{last:?}"
    );
    server.stop().await;
}
