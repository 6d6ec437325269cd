//! HTTP/1.1 and HTTP/2 over TCP + TLS on the QUIC port, with this machine's own curl (7.88,
//! which has no HTTP/3): the same router as HTTP/3, uploads whose events stream back while
//! the body is still going up (no second lost to `Expect: 100-continue`), `Alt-Svc` on every
//! response, and `tcp.enabled = false` turning it off.

use crate::util::*;
use edge_proto::Event;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The machine's curl (not the HTTP/3 one the HTTP/3 tests use).
fn curl() -> Command {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "60"]);
    command
}

fn https(server: &TestServer, path: &str) -> String {
    format!("https://localhost:{}{path}", server.addr.port())
}

fn port_line(i: u32) -> String {
    format!("{{\"name\":\"Tcp {i}\",\"unlocs\":[\"TCPAA{i:03}\"]}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_over_http2_and_http1_1_and_reads_events_before_the_body_ends() {
    let server = TestServer::start().await;
    let (ca, token) = (server.ca(), server.token(ALL_SCOPES));
    // About 1.3 MB, sent at 400 kB/s: the upload lasts over 3 s.
    let file = server.dir.path().join("slow.ndjson");
    let lines = 30_000;
    std::fs::write(&file, (0..lines).map(port_line).collect::<String>()).unwrap();
    for version in ["--http2", "--http1.1"] {
        let url = https(&server, "/v1/jobs/ports");
        let (ca, token, file) = (ca.clone(), token.clone(), file.clone());
        let (first_commit, ended, events) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut child = curl()
                .arg(version)
                .args(["-N", "--limit-rate", "400k", "--cacert"])
                .arg(&ca)
                .args(["-H", &format!("authorization: Bearer {token}")])
                .arg("-T")
                .arg(&file)
                .arg(&url)
                .stdout(Stdio::piped())
                .spawn()
                .expect("curl runs");
            let stdout = BufReader::new(child.stdout.take().unwrap());
            let mut first_commit = None;
            let mut events = Vec::new();
            for line in stdout.lines() {
                let event = Event::from_line(line.unwrap().as_bytes()).unwrap();
                if matches!(event, Event::Committed { .. }) && first_commit.is_none() {
                    first_commit = Some(started.elapsed());
                }
                events.push(event);
            }
            assert!(child.wait().unwrap().success(), "{version}");
            (first_commit, started.elapsed(), events)
        })
        .await
        .unwrap();
        assert!(
            matches!(events.first(), Some(Event::Accepted { .. })),
            "{version}: {events:?}"
        );
        assert!(
            matches!(events.last(), Some(Event::Done { committed, .. }) if *committed == u64::from(lines)),
            "{version}: {:?}",
            events.last()
        );
        let first_commit = first_commit.expect("a committed event");
        assert!(
            ended.saturating_sub(first_commit) > Duration::from_secs(1),
            "{version}: the first commit's event came at {first_commit:?}, the upload ended at {ended:?}: it should have come while the body was still going up"
        );
    }
    // The job history says how each came.
    let dir = server.stop().await;
    let store = edge_tasks::Store::open(
        &dir.path().join("data/edge.redb"),
        &edge_tasks::store::StoreOptions::default(),
    )
    .unwrap();
    let (jobs, _) = edge_tasks::history::list(&store, None, 10, None).unwrap();
    let transports: Vec<&str> = jobs.iter().map(|j| j.transport.as_str()).collect();
    assert_eq!(transports, ["http/1.1", "h2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_over_tcp_as_over_http3_and_says_where_http3_is() {
    let server = TestServer::start().await;
    let client = server.client().await;
    upload(
        &client,
        "ports",
        Some(edge_proto::Format::Ndjson),
        port_line(1).into_bytes(),
    )
    .await;
    let (ca, token, port) = (server.ca(), server.token(ALL_SCOPES), server.addr.port());
    let (port_item, health, refused, big) = {
        let urls = [
            https(&server, "/v1/ports/TCPAA001"),
            https(&server, "/healthz"),
            https(&server, "/v1/jobs"),
        ];
        let file = server.dir.path().join("big.ndjson");
        let body: String = (0..30_000).map(port_line).collect();
        std::fs::write(&file, body).unwrap();
        let upload_url = https(&server, "/v1/jobs/ports");
        tokio::task::spawn_blocking(move || {
            let run = |args: &[&str]| {
                let out = curl()
                    .arg("--cacert")
                    .arg(&ca)
                    .args(["-i", "-w", "\n%{time_total}"])
                    .args(args)
                    .output()
                    .expect("curl runs");
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let auth = format!("authorization: Bearer {token}");
            (
                run(&["-H", &auth, &urls[0]]),
                run(&["--http1.1", &urls[1]]),
                run(&[&urls[2]]),
                // Above 1 MiB curl asks `Expect: 100-continue` over HTTP/1.1.
                run(&[
                    "--http1.1",
                    "-H",
                    &auth,
                    "-T",
                    file.to_str().unwrap(),
                    &upload_url,
                ]),
            )
        })
        .await
        .unwrap()
    };
    let alt_svc = format!("alt-svc: h3=\":{port}\"; ma=86400");
    for answer in [&port_item, &health, &refused] {
        assert!(answer.to_ascii_lowercase().contains(&alt_svc), "{answer}");
    }
    assert!(port_item.starts_with("HTTP/2 200"), "{port_item}");
    assert!(port_item.contains("\"name\":\"Tcp 1\""), "{port_item}");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(refused.starts_with("HTTP/2 401"), "{refused}");
    assert!(refused.contains("\"code\":\"unauthorized\""), "{refused}");
    assert!(big.contains("HTTP/1.1 100 Continue"), "{big}");
    let seconds: f64 = big.lines().last().unwrap().parse().unwrap();
    assert!(
        seconds < 0.9,
        "curl waited for 100 Continue instead of getting it at once: {seconds} s"
    );
    let done = big
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "done")
        .unwrap_or_else(|| panic!("no done event: {big}"));
    assert_eq!(done["committed"], 30_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alt_svc_names_the_public_port_and_tcp_can_be_turned_off() {
    let behind_router = TestServer::start_with(|config| config.tcp.public_port = 443).await;
    let ca = behind_router.ca();
    let url = https(&behind_router, "/healthz");
    let head = tokio::task::spawn_blocking(move || {
        curl()
            .arg("--cacert")
            .arg(&ca)
            .args(["-I", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(head.contains("alt-svc: h3=\":443\"; ma=86400"), "{head}");

    let quic_only = TestServer::start_with(|config| config.tcp.enabled = false).await;
    let (ca, url) = (quic_only.ca(), https(&quic_only, "/healthz"));
    let refused = tokio::task::spawn_blocking(move || {
        curl().arg("--cacert").arg(&ca).arg(&url).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(refused.status.code(), Some(7), "curl cannot connect");
    // QUIC still serves.
    let client = quic_only.client().await;
    let (result, _) = upload(
        &client,
        "stats",
        Some(edge_proto::Format::Lines),
        b"1\n2\n".to_vec(),
    )
    .await;
    assert!(matches!(result.last, Event::Done { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_count_toward_the_per_address_cap_before_tls() {
    let server = TestServer::start_with(|config| config.transport.max_connections_per_ip = 1).await;
    let (ca, url) = (server.ca(), https(&server, "/healthz"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
    let health = move || {
        curl()
            .arg("--cacert")
            .arg(&ca)
            .args(["--max-time", "5", &url])
            .output()
            .unwrap()
    };
    // A connection that never starts TLS holds this address's one place.
    let holder = std::net::TcpStream::connect(addr).unwrap();
    let check = health.clone();
    let refused = tokio::task::spawn_blocking(check).await.unwrap();
    assert!(
        !refused.status.success(),
        "the second connection is refused"
    );
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let check = health.clone();
        let answer = tokio::task::spawn_blocking(check).await.unwrap();
        if answer.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the place is never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_without_a_valid_token_is_closed_after_the_auth_timeout() {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::AsyncReadExt;
    let server = TestServer::start_with(|config| config.auth.auth_timeout_secs = 1).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(server.ca()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", server.addr.port()))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, socket).await.unwrap();
    // An idle connection: closed after the 1 s auth timeout (the header timeout is 10 s).
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(8), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the server closed the connection: {read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
}

/// `edge-client upload FILE --task ports` against `server_url`, with extra arguments.
fn client_upload(server: &TestServer, server_url: String, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<std::ffi::OsString> = vec!["upload".into(), "--task".into(), "ports".into()];
    args.push(ports_json().into());
    args.extend(extra.iter().map(std::ffi::OsString::from));
    run_client(&server_url, &server.ca(), &server.token(ALL_SCOPES), args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_client_uploads_and_reads_over_tcp_when_asked_and_when_udp_gets_no_answer() {
    let server = TestServer::start().await;
    // A port with nothing on UDP, whose TCP goes to the server's: as behind a firewall that
    // drops UDP.
    let forwarder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forwarded = forwarder.local_addr().unwrap().port();
    let target = ("127.0.0.1", server.addr.port());
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = forwarder.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let direct = format!("https://localhost:{}", server.addr.port());
    let blocked = format!("https://localhost:{forwarded}");
    let server = std::sync::Arc::new(server);
    let (forced, fallback, read) = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            let (ca, token) = (server.ca(), server.token(ALL_SCOPES));
            (
                client_upload(&server, direct, &["--tcp"]),
                client_upload(&server, blocked.clone(), &[]),
                run_client(&blocked, &ca, &token, ["ports", "get", "AEAJM"]),
            )
        })
        .await
        .unwrap()
    };
    // The read commands fall back too.
    assert_eq!(
        read.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(String::from_utf8_lossy(&read.stdout).contains("\"Ajman\""));
    for (what, out) in [("--tcp", &forced), ("fallback", &fallback)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
        assert!(stderr.contains("done: 1634 records"), "{what}: {stderr}");
    }
    let stderr = String::from_utf8_lossy(&fallback.stderr);
    assert!(
        stderr.contains("QUIC got no answer") && stderr.contains("over TCP (HTTP/2)"),
        "the client says which it used: {stderr}"
    );
    assert!(!String::from_utf8_lossy(&forced.stderr).contains("QUIC got no answer"));
    // --json prints the events one per line, as over QUIC.
    let json = {
        let server = server.clone();
        let url = format!("https://localhost:{}", server.addr.port());
        tokio::task::spawn_blocking(move || client_upload(&server, url, &["--tcp", "--json"]))
            .await
            .unwrap()
    };
    let stdout = String::from_utf8_lossy(&json.stdout);
    let events: Vec<Event> = stdout
        .lines()
        .map(|l| Event::from_line(l.as_bytes()).unwrap())
        .collect();
    assert!(
        matches!(events.first(), Some(Event::Accepted { .. })),
        "{stdout}"
    );
    assert!(
        matches!(events.last(), Some(Event::Done { .. })),
        "{stdout}"
    );
}
