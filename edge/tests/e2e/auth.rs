//! The token gate: each bad token is refused with a clear code before any body byte is
//! decoded, and nothing is stored; a valid token with the right scope runs its job.

use crate::util::*;
use edge::auth::KeyPair;
use edge_client::{Client, ClientConfig};
use edge_proto::{ErrorCode, Event, Format};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass, to be spoiled one at a time.
fn good_claims() -> Value {
    json!({
        "sub": "tester", "exp": now() + 600, "iat": now(), "nbf": now(), "jti": "t1",
        "iss": "edge", "aud": "edge", "scope": "ports:write",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A token that no key signed: `alg: none`.
fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!(
        "{}.{}.",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    )
}

/// HS256 with the server's public key as the HMAC secret (algorithm confusion).
fn confused(keys: &KeyPair, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(keys.kid.clone());
    let secret = jsonwebtoken::EncodingKey::from_secret(keys.verify_pem.as_bytes());
    jsonwebtoken::encode(&header, claims, &secret).unwrap()
}

/// Uploads one port with `token`; returns the final event.
async fn upload_as(server: &TestServer, token: Option<String>) -> Event {
    let config = ClientConfig {
        token,
        ..server.client_config()
    };
    let client = Client::connect(&config).await.unwrap();
    let body = br#"{"name":"Gate","unlocs":["GATE1"]}"#.to_vec();
    let (result, _) = upload(&client, "ports", Some(Format::Ndjson), body).await;
    client.close().await;
    result.last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_over_edge1_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let keys = KeyPair::load_or_generate(&server.dir.path().join("certs")).unwrap();
    let stranger_dir = tempfile::tempdir().unwrap();
    let stranger = KeyPair::load_or_generate(stranger_dir.path()).unwrap();
    let valid = keys.sign(&good_claims()).unwrap();
    // Change one character in the middle of the signature (its last one has unused bits).
    let mut tampered: Vec<char> = valid.chars().collect();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();

    let cases: Vec<(&str, Option<String>, ErrorCode, &str)> = vec![
        ("missing", None, ErrorCode::Unauthorized, "no token"),
        (
            "garbage",
            Some("garbage".into()),
            ErrorCode::Unauthorized,
            "not a valid JWT",
        ),
        (
            "wrong signature",
            Some(tampered),
            ErrorCode::Unauthorized,
            "signature",
        ),
        (
            "unknown kid",
            Some(stranger.sign(&good_claims()).unwrap()),
            ErrorCode::Unauthorized,
            "key id",
        ),
        (
            "alg none",
            Some(unsigned(&keys.kid, &good_claims())),
            ErrorCode::Unauthorized,
            "token",
        ),
        (
            "HS256 with the public key",
            Some(confused(&keys, &good_claims())),
            ErrorCode::Unauthorized,
            "signature",
        ),
        (
            "expired",
            Some(
                keys.sign(&with(good_claims(), "exp", json!(now() - 120)))
                    .unwrap(),
            ),
            ErrorCode::TokenExpired,
            "expired",
        ),
        (
            "nbf in the future",
            Some(
                keys.sign(&with(good_claims(), "nbf", json!(now() + 300)))
                    .unwrap(),
            ),
            ErrorCode::Unauthorized,
            "not valid yet",
        ),
        (
            "nbf as a string",
            Some(
                keys.sign(&with(good_claims(), "nbf", json!("soon")))
                    .unwrap(),
            ),
            ErrorCode::Unauthorized,
            "nbf",
        ),
        (
            "wrong aud",
            Some(
                keys.sign(&with(good_claims(), "aud", json!("elsewhere")))
                    .unwrap(),
            ),
            ErrorCode::Unauthorized,
            "audience",
        ),
        (
            "missing aud",
            Some(keys.sign(&without(good_claims(), "aud")).unwrap()),
            ErrorCode::Unauthorized,
            "aud",
        ),
        (
            "missing iss",
            Some(keys.sign(&without(good_claims(), "iss")).unwrap()),
            ErrorCode::Unauthorized,
            "iss",
        ),
        (
            "missing sub",
            Some(keys.sign(&without(good_claims(), "sub")).unwrap()),
            ErrorCode::Unauthorized,
            "sub",
        ),
        (
            "another task's scope",
            Some(
                keys.sign(&with(good_claims(), "scope", json!("stats:write")))
                    .unwrap(),
            ),
            ErrorCode::Forbidden,
            "ports:write",
        ),
        (
            "read-only token",
            Some(
                keys.sign(&with(good_claims(), "scope", json!("ports:read")))
                    .unwrap(),
            ),
            ErrorCode::Forbidden,
            "ports:write",
        ),
        (
            "over 8 KiB",
            Some(
                keys.sign(&with(good_claims(), "pad", json!("x".repeat(9000))))
                    .unwrap(),
            ),
            ErrorCode::Unauthorized,
            "longer than",
        ),
    ];
    for (case, token, code, says) in cases {
        let last = upload_as(&server, token).await;
        let Event::Rejected {
            code: got,
            message,
            committed,
            ..
        } = &last
        else {
            panic!("{case}: {last:?}")
        };
        assert_eq!((*got, *committed), (code, 0), "{case}: {message}");
        assert!(
            message.contains(says),
            "{case}: `{message}` should say `{says}`"
        );
    }

    let last = upload_as(&server, Some(valid)).await;
    assert!(
        matches!(last, Event::Done { committed: 1, .. }),
        "a valid token runs its job: {last:?}"
    );
    let dir = server.stop().await;
    let stored = all_ports(&dir.path().join("data/edge.redb"));
    assert_eq!(stored.len(), 1, "only the valid token's record is stored");
}

/// `edge token issue ARGS` with the certs in `dir`.
fn token_issue(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["token", "issue"])
        .args(args)
        .env("EDGE_CERTS_DIR", dir.join("certs"))
        .env("EDGE_DATA_DIR", dir.join("data"))
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn edge_token_issue_refuses_scopes_no_task_knows_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let out = token_issue(
        dir.path(),
        &["--sub", "bob", "--scope", "port:write ports:read"],
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no token is printed");
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("unknown scope `port:write`:")
            && !message.contains("`ports:read`:")
            && [
                "ports:write",
                "stats:write",
                "ports:read",
                "jobs:read",
                "admin"
            ]
            .iter()
            .all(|known| message.contains(&format!("`{known}`")))
            && message.contains("--allow-unknown-scope"),
        "names the unknown scope and the known ones: {message}"
    );

    let out = token_issue(
        dir.path(),
        &[
            "--sub",
            "bob",
            "--scope",
            "port:write",
            "--allow-unknown-scope",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).matches('.').count(),
        2,
        "a JWT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_token_issue_json_prints_the_token_with_its_id_subject_scopes_and_expiry() {
    let server = TestServer::start().await;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = token_issue(
        server.dir.path(),
        &[
            "--sub",
            "carol",
            "--scope",
            "stats:write jobs:read",
            "--ttl",
            "2h",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(issued["sub"], "carol");
    assert_eq!(issued["scopes"], json!(["stats:write", "jobs:read"]));
    let exp = issued["exp"].as_u64().unwrap();
    assert!((before + 7200..=before + 7260).contains(&exp), "{issued}");
    assert!(
        issued["expires"].as_str().unwrap().ends_with('Z'),
        "{issued}"
    );
    let token = issued["token"].as_str().unwrap().to_owned();
    let jti = issued["jti"].as_str().unwrap();
    assert_eq!(jti.len(), 32, "{issued}");
    // The jti printed is the token's own: revoking it refuses the token.
    let claims = edge::auth::unverified_id(&token).expect("the token has a jti");
    assert_eq!((claims.0.as_str(), claims.1), (jti, Some(exp)));
    let config = ClientConfig {
        token: Some(token),
        ..server.client_config()
    };
    let client = Client::connect(&config).await.unwrap();
    let (result, _) = upload(&client, "stats", Some(Format::Lines), b"3\n".to_vec()).await;
    assert!(
        matches!(result.last, Event::Done { records: 1, .. }),
        "{:?}",
        result.last
    );
    client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_token_issue_mints_tokens_the_server_accepts() {
    let server = TestServer::start().await;
    let certs = server.dir.path().join("certs");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
        .args([
            "token",
            "issue",
            "--sub",
            "alice",
            "--scope",
            "stats:write",
            "--ttl",
            "5m",
        ])
        .env("EDGE_CERTS_DIR", &certs)
        .current_dir(server.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let config = ClientConfig {
        token: Some(token),
        ..server.client_config()
    };
    let client = Client::connect(&config).await.unwrap();
    let (result, _) = upload(&client, "stats", Some(Format::Lines), b"1\n2\n".to_vec()).await;
    assert!(
        matches!(result.last, Event::Done { records: 2, .. }),
        "{:?}",
        result.last
    );
    let (result, _) = upload(&client, "ports", Some(Format::Ndjson), b"{}\n".to_vec()).await;
    assert!(
        matches!(
            result.last,
            Event::Rejected {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{:?}",
        result.last
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_per_subject_across_connections() {
    let server = TestServer::start_with(|config| {
        config.limits.max_jobs_per_sub = 1;
        config.limits.job_starts_per_sec = 0.2;
        config.limits.job_start_burst = 2;
    })
    .await;
    // A job that keeps running: its body never ends while the test runs.
    let first = server.client().await;
    let (mut writer, reader) = tokio::io::duplex(1024);
    use tokio::io::AsyncWriteExt;
    writer.write_all(b"1\n").await.unwrap();
    let mut header = edge_proto::JobHeader::new("stats");
    header.format = Some(Format::Lines);
    let events = Events::new();
    let sink = events.sink();
    let running = tokio::spawn(async move {
        let job = edge_client::UploadJob::new(header, Box::new(reader));
        first.upload(job, sink).await.unwrap().last
    });
    events
        .until("accepted", |e| matches!(e, Event::Accepted { .. }))
        .await;

    // Same subject, another connection: over the concurrency cap.
    let second = server.client().await;
    let (result, _) = upload(&second, "stats", Some(Format::Lines), b"2\n".to_vec()).await;
    let Event::Rejected {
        code,
        retry_after,
        message,
        ..
    } = &result.last
    else {
        panic!("{:?}", result.last)
    };
    assert_eq!(
        (*code, *retry_after),
        (ErrorCode::RateLimited, Some(1)),
        "{message}"
    );
    assert!(message.contains("max_jobs_per_sub"), "{message}");

    // Another subject is not affected.
    let other = ClientConfig {
        token: Some(mint(
            &server.dir.path().join("certs"),
            "other",
            "stats:write",
        )),
        ..server.client_config()
    };
    let other = Client::connect(&other).await.unwrap();
    let (result, _) = upload(&other, "stats", Some(Format::Lines), b"3\n".to_vec()).await;
    assert!(
        matches!(result.last, Event::Done { .. }),
        "{:?}",
        result.last
    );

    // The first job ends, and its place is free as soon as its final event came: the refused
    // job took no start, so the second of the burst of 2 starts runs.
    drop(writer);
    assert!(matches!(running.await.unwrap(), Event::Done { .. }));
    let (result, _) = upload(&second, "stats", Some(Format::Lines), b"4\n".to_vec()).await;
    assert!(
        matches!(result.last, Event::Done { .. }),
        "{:?}",
        result.last
    );
    // The burst is used up: the rate applies.
    let (result, _) = upload(&second, "stats", Some(Format::Lines), b"5\n".to_vec()).await;
    let Event::Rejected {
        code,
        retry_after,
        message,
        ..
    } = &result.last
    else {
        panic!("{:?}", result.last)
    };
    assert_eq!(*code, ErrorCode::RateLimited);
    assert!(message.contains("job_starts_per_sec"), "{message}");
    assert!(
        retry_after.is_some_and(|s| (1..=5).contains(&s)),
        "{retry_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_past_the_byte_cap_fails_and_keeps_what_came_before() {
    let server = TestServer::start_with(|config| {
        config.limits.max_upload_bytes = 100_000;
        config.jobs.commit_records = 100;
    })
    .await;
    let client = server.client().await;
    let body = synthetic_ports_ndjson(5_000); // ~1 MB
    let (result, _) = upload(&client, "ports", Some(Format::Ndjson), body).await;
    let Event::Failed {
        code,
        committed,
        message,
        ..
    } = &result.last
    else {
        panic!("{:?}", result.last)
    };
    assert_eq!(*code, ErrorCode::LimitExceeded, "{message}");
    assert!(*committed > 0 && *committed < 5_000, "{committed}");
    client.close().await;
    let dir = server.stop().await;
    assert_eq!(
        all_ports(&dir.path().join("data/edge.redb")).len() as u64,
        *committed
    );
}

/// Runs the real `edge` binary on `server`'s dirs (as an operator would, beside the server).
fn edge_cli(server_dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(args)
        .env("EDGE_DATA_DIR", server_dir.join("data"))
        .env("EDGE_CERTS_DIR", server_dir.join("certs"))
        .current_dir(server_dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The token's final event over edge/1, and its status and body over HTTP/3 (curl).
async fn both_transports(server: &TestServer, token: &str) -> (Event, Option<(u16, String)>) {
    let last = upload_as(server, Some(token.to_owned())).await;
    let curl = match crate::http3::h3curl() {
        Some(_) => Some(
            crate::http3::curl_as(
                server,
                Some(token.to_owned()),
                vec![crate::http3::url(server, "/v1/ports?limit=1")],
            )
            .await,
        ),
        None => None,
    };
    (last, curl)
}

fn assert_revoked(case: &str, (last, curl): &(Event, Option<(u16, String)>)) {
    assert!(
        matches!(
            last,
            Event::Rejected {
                code: ErrorCode::TokenRevoked,
                committed: 0,
                ..
            }
        ),
        "{case}: edge/1 gave {last:?}"
    );
    if let Some((status, body)) = curl {
        assert_eq!(*status, 401, "{case}: {body}");
        assert!(body.contains("token_revoked"), "{case}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_are_refused_on_both_transports_and_after_a_restart() {
    let server = TestServer::start().await;
    let dir = server.dir.path().to_owned();
    let scope = "ports:write ports:read";
    let (ok, out, err) = edge_cli(
        &dir,
        &["token", "issue", "--sub", "mallory", "--scope", scope],
    );
    assert!(ok, "{err}");
    let stolen = out.trim().to_owned();
    let (last, curl) = both_transports(&server, &stolen).await;
    assert!(matches!(last, Event::Done { .. }), "{last:?}");
    if let Some((status, body)) = curl {
        assert_eq!(status, 200, "{body}");
    }

    // Revoked while the server runs: the command hands it over the control socket.
    let (ok, out, err) = edge_cli(&dir, &["token", "revoke", &stolen]);
    assert!(ok, "{err}");
    assert!(out.starts_with("revoked "), "{out}");
    assert_revoked("while running", &both_transports(&server, &stolen).await);
    // Another token of the same subject still works: revocation is per token.
    let (_, fresh, _) = edge_cli(
        &dir,
        &["token", "issue", "--sub", "mallory", "--scope", scope],
    );
    let fresh = fresh.trim().to_owned();
    let (last, _) = both_transports(&server, &fresh).await;
    assert!(matches!(last, Event::Done { .. }), "{last:?}");

    // Revoked by id alone while no server runs: the command opens the store itself.
    let tempdir = server.stop().await;
    let jti = edge::auth::unverified_id(&fresh).unwrap().0;
    let (ok, out, err) = edge_cli(&dir, &["token", "revoke", &jti]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("revoked {jti}"));
    let (ok, out, _) = edge_cli(&dir, &["token", "revoke", &jti]);
    assert!(ok && out.contains("already revoked"), "{out}");

    // Both stay revoked after a restart, and both are listed.
    let server = TestServer::start_in(tempdir, |_| {}).await;
    assert_revoked("after a restart", &both_transports(&server, &stolen).await);
    assert_revoked("revoked offline", &both_transports(&server, &fresh).await);
    let (ok, out, err) = edge_cli(&dir, &["token", "list-revoked", "--json"]);
    assert!(ok, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 2, "{out}");
    assert!(
        listed.iter().all(|e| e["expires"].as_u64().is_some()),
        "the offline entry learned its expiry when the token was presented: {out}"
    );
    let dir = server.stop().await;
    assert_eq!(
        all_ports(&dir.path().join("data/edge.redb")).len(),
        1,
        "the refused jobs stored nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_keys_rotate_and_hs256_secrets_work() {
    let keys_dir = tempfile::tempdir().unwrap();
    let secret_file = keys_dir.path().join("hs256.secret");
    std::fs::write(&secret_file, "a-shared-secret-of-more-than-32-bytes\n").unwrap();
    let old = KeyPair::generate_at(&keys_dir.path().join("old")).unwrap();
    let new = KeyPair::generate_at(&keys_dir.path().join("new")).unwrap();
    let key = |kid: &str, name: &str| edge::config::KeyConfig {
        kid: kid.into(),
        algorithm: edge::config::KeyAlgorithm::EdDSA,
        public_key: Some(keys_dir.path().join(format!("{name}.pub.pem"))),
        private_key: Some(keys_dir.path().join(format!("{name}.pem"))),
        secret_file: None,
        secret_env: None,
    };
    let auth = edge::config::AuthConfig {
        keys: vec![
            key("2026", "old"),
            key("2027", "new"),
            edge::config::KeyConfig {
                kid: "ci".into(),
                algorithm: edge::config::KeyAlgorithm::HS256,
                public_key: None,
                private_key: None,
                secret_file: Some(secret_file.clone()),
                secret_env: None,
            },
        ],
        ..edge::config::AuthConfig::default()
    };
    let configured = auth.clone();
    let server = TestServer::start_with(move |config| config.auth = configured).await;
    let certs = server.dir.path().join("certs");
    let mint = |kid: &str| {
        edge::auth::SigningKey::load(&auth, &certs, Some(kid))
            .unwrap()
            .issue(
                &auth,
                "ops",
                "ports:write",
                std::time::Duration::from_secs(60),
                None,
            )
            .unwrap()
    };
    for kid in ["2026", "2027", "ci"] {
        let last = upload_as(&server, Some(mint(kid))).await;
        assert!(matches!(last, Event::Done { .. }), "{kid}: {last:?}");
    }
    // A key that is not configured is not trusted, even the certs dir's generated one, and a
    // token naming a configured kid but signed by another key does not verify.
    let generated = KeyPair::load_or_generate(&certs).unwrap();
    let impostor = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("2027".into());
        jsonwebtoken::encode(
            &header,
            &good_claims(),
            &jsonwebtoken::EncodingKey::from_ed_pem(
                std::fs::read(keys_dir.path().join("old.pem"))
                    .unwrap()
                    .as_slice(),
            )
            .unwrap(),
        )
        .unwrap()
    };
    let cases = [
        (
            "the generated key",
            generated.sign(&good_claims()).unwrap(),
            "key id",
        ),
        ("kid 2027, signed by 2026", impostor, "signature"),
    ];
    for (case, token, says) in cases {
        let last = upload_as(&server, Some(token)).await;
        let Event::Rejected { code, message, .. } = &last else {
            panic!("{case}: {last:?}")
        };
        assert_eq!(*code, ErrorCode::Unauthorized, "{case}: {message}");
        assert!(message.contains(says), "{case}: {message}");
    }
    assert_ne!(old.kid, new.kid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_ip_and_closed_without_a_valid_token() {
    let server = TestServer::start_with(|config| {
        config.transport.max_connections_per_ip = 2;
        config.auth.auth_timeout_secs = 1;
        // Every client proves its address first (a QUIC Retry): jobs still work.
        config.transport.retry_above_handshakes = 0;
    })
    .await;
    let first = server.client().await;
    let (result, _) = upload(&first, "stats", Some(Format::Lines), b"1\n".to_vec()).await;
    assert!(
        matches!(result.last, Event::Done { .. }),
        "{:?}",
        result.last
    );
    let idle = server.client().await;
    let third = Client::connect(&server.client_config()).await;
    let Err(refused) = third else {
        panic!("a third connection from one address is refused")
    };
    assert!(
        refused.to_string().to_lowercase().contains("refused"),
        "{refused}"
    );

    // The idle connection never sent a token: it is closed after auth_timeout_secs, freeing
    // its slot; the authorised one stays open.
    tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
    let mut header = edge_proto::JobHeader::new("stats");
    header.format = Some(Format::Lines);
    let job = edge_client::UploadJob::new(header, Box::new(std::io::Cursor::new(b"2\n".to_vec())));
    let closed = idle
        .upload(job, |_| {})
        .await
        .expect_err("the idle connection was closed");
    assert!(closed.to_string().contains("valid token"), "{closed}");
    let (result, _) = upload(&first, "stats", Some(Format::Lines), b"3\n".to_vec()).await;
    assert!(
        matches!(result.last, Event::Done { .. }),
        "{:?}",
        result.last
    );
    let again = server.client().await;
    let (result, _) = upload(&again, "stats", Some(Format::Lines), b"4\n".to_vec()).await;
    assert!(
        matches!(result.last, Event::Done { .. }),
        "{:?}",
        result.last
    );
}

/// Mints a token with PyJWT (`EDGE_TEST_PYTHON`, default python3): `key` is a PEM file
/// (EdDSA) or a secret file (HS256).
#[cfg(has_pyjwt)]
fn pyjwt(algorithm: &str, key: &std::path::Path, kid: &str, claims: &Value) -> String {
    const SCRIPT: &str = r#"
import json, os, sys, jwt
key = open(os.environ["KEY"], "rb").read()
if os.environ["ALG"] == "HS256":
    key = key.rstrip(b"\r\n")
claims = json.loads(os.environ["CLAIMS"])
sys.stdout.write(jwt.encode(claims, key, algorithm=os.environ["ALG"], headers={"kid": os.environ["KID"]}))
"#;
    let out = std::process::Command::new(env!("EDGE_TEST_PYTHON_BIN"))
        .args(["-c", SCRIPT])
        .env("KEY", key)
        .env("ALG", algorithm)
        .env("KID", kid)
        .env("CLAIMS", claims.to_string())
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "PyJWT could not mint with {}: {}",
        key.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[cfg(not(has_pyjwt))]
fn pyjwt(_: &str, _: &std::path::Path, _: &str, _: &Value) -> String {
    unreachable!("the test is ignored without PyJWT")
}

/// The claims an external token needs (docs/PROTOCOL.md, "Tokens"), and nothing else.
fn required_claims() -> Value {
    json!({"sub": "ext", "exp": now() + 300, "iss": "edge", "aud": "edge", "jti": "ext-1"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_pyjwt),
    ignore = "needs python3 with PyJWT + cryptography (pip install pyjwt cryptography)"
)]
async fn tokens_minted_with_pyjwt_are_accepted_with_the_required_claims_only() {
    assert_eq!(
        edge::auth::REQUIRED_CLAIMS,
        ["sub", "exp", "iss", "aud", "jti"]
    );
    let server = TestServer::start().await;
    let certs = server.dir.path().join("certs");
    let kid = KeyPair::load_or_generate(&certs).unwrap().kid;
    let signing = certs.join(edge::auth::SIGNING_KEY_FILE);
    let with_scope = with(required_claims(), "scope", json!("ports:write stats:write"));

    // PyJWT (through Python's cryptography) reads the generated signing key, and the server
    // accepts what it signs.
    let last = upload_as(&server, Some(pyjwt("EdDSA", &signing, &kid, &with_scope))).await;
    assert!(matches!(last, Event::Done { committed: 1, .. }), "{last:?}");

    // Only the required claims: a valid token that grants nothing (`forbidden`, not
    // `unauthorized`).
    let last = upload_as(
        &server,
        Some(pyjwt("EdDSA", &signing, &kid, &required_claims())),
    )
    .await;
    assert!(
        matches!(
            &last,
            Event::Rejected {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{last:?}"
    );

    // Each required claim missing: refused, naming it and the whole list.
    for claim in edge::auth::REQUIRED_CLAIMS {
        let token = pyjwt("EdDSA", &signing, &kid, &without(with_scope.clone(), claim));
        let last = upload_as(&server, Some(token)).await;
        let Event::Rejected { code, message, .. } = &last else {
            panic!("{claim}: {last:?}")
        };
        assert_eq!(*code, ErrorCode::Unauthorized, "{claim}: {message}");
        assert!(
            message.contains(&format!("`{claim}` is missing"))
                && message.contains("every token needs `sub`, `exp`, `iss`, `aud`, `jti`"),
            "{claim}: {message}"
        );
    }
    drop(server);

    // HS256 with a configured secret.
    let keys_dir = tempfile::tempdir().unwrap();
    let secret = keys_dir.path().join("hs256.secret");
    std::fs::write(&secret, "a-shared-secret-of-more-than-32-bytes\n").unwrap();
    let key = edge::config::KeyConfig {
        kid: "ci".into(),
        algorithm: edge::config::KeyAlgorithm::HS256,
        public_key: None,
        private_key: None,
        secret_file: Some(secret.clone()),
        secret_env: None,
    };
    let server = TestServer::start_with(move |config| config.auth.keys = vec![key]).await;
    let config = ClientConfig {
        token: Some(pyjwt("HS256", &secret, "ci", &with_scope)),
        ..server.client_config()
    };
    let client = Client::connect(&config).await.unwrap();
    let (result, _) = upload(&client, "stats", Some(Format::Lines), b"1\n".to_vec()).await;
    assert!(
        matches!(result.last, Event::Done { records: 1, .. }),
        "{:?}",
        result.last
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_on_disk_when_acknowledged_and_in_force_after_a_crash() {
    use crate::binary::{edge, ServeProcess};
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(dir.path());
    let config = server.client_config(dir.path());
    let token = config.token.clone().unwrap();
    let client = Client::connect(&config).await.unwrap();
    let (result, _) = upload(&client, "ports", Some(Format::Ndjson), b"{}\n".to_vec()).await;
    assert!(
        !matches!(result.last, Event::Rejected { .. }),
        "{:?}",
        result.last
    );

    let out = edge(dir.path(), &["token", "revoke", &token]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // In force at once, on the connection that was open before.
    let (result, _) = upload(&client, "ports", Some(Format::Ndjson), b"{}\n".to_vec()).await;
    assert!(
        matches!(
            result.last,
            Event::Rejected {
                code: ErrorCode::TokenRevoked,
                ..
            }
        ),
        "{:?}",
        result.last
    );
    // The server dies without a chance to write anything more (SIGKILL).
    drop(client);
    drop(server);
    let out = edge(dir.path(), &["token", "list-revoked", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let jti = edge::auth::unverified_id(&token).unwrap().0;
    assert!(
        listed.iter().any(|e| e["jti"] == jti.as_str()),
        "the acknowledged revocation was committed: {listed:?}"
    );

    // The next server loads it.
    let server = ServeProcess::start(dir.path());
    let config = ClientConfig {
        token: Some(token),
        ..server.client_config(dir.path())
    };
    let client = Client::connect(&config).await.unwrap();
    let (result, _) = upload(&client, "ports", Some(Format::Ndjson), b"{}\n".to_vec()).await;
    assert!(
        matches!(
            result.last,
            Event::Rejected {
                code: ErrorCode::TokenRevoked,
                ..
            }
        ),
        "{:?}",
        result.last
    );
}
