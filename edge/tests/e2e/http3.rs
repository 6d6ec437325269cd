//! HTTP/3 with a real curl: uploads stream their events back as NDJSON, the read API, and
//! refusals as statuses with JSON bodies.
//!
//! The curl is the one `edge/build.rs` finds: `EDGE_TEST_CURL`, else `../shared/tools/h3curl`
//! (curl 8.14 with HTTP/3). Without one the tests that run it are ignored, so they show as
//! skipped; under CI (`CI=true`) its absence fails the build.

use crate::util::*;
use edge_proto::{Event, Format, JobHeader};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The HTTP/3 curl `edge/build.rs` found (`EDGE_TEST_CURL` or `../shared/tools/h3curl`),
/// or `None`: the tests that need it are then ignored (`cfg(has_h3curl)`), and under CI the
/// build fails.
pub(crate) fn h3curl() -> Option<PathBuf> {
    option_env!("EDGE_TEST_CURL_PATH").map(PathBuf::from)
}

/// The curl of a test that is ignored without one.
fn the_curl() -> PathBuf {
    h3curl().expect("tests that run curl are ignored without one (cfg has_h3curl)")
}

/// Runs curl against the server with a token holding every scope; returns (status, body).
pub(crate) async fn curl(server: &TestServer, args: Vec<String>) -> (u16, String) {
    curl_as(server, Some(server.token(ALL_SCOPES)), args).await
}

/// Runs curl with `token` (or none) as `Authorization: Bearer`; returns (status, body).
pub(crate) async fn curl_as(
    server: &TestServer,
    token: Option<String>,
    args: Vec<String>,
) -> (u16, String) {
    let curl = the_curl();
    let mut command = Command::new(curl);
    command
        .args([
            "--http3-only",
            "-sS",
            "--max-time",
            "60",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(server.ca());
    if let Some(token) = token {
        command.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    command.args(args);
    let output = tokio::task::spawn_blocking(move || command.output().expect("curl runs"))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = status.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl gave no status: {text:?} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (status, body.to_owned())
}

pub(crate) fn url(server: &TestServer, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", server.addr.port())
}

pub(crate) fn events(body: &str) -> Vec<Event> {
    body.lines()
        .map(|l| Event::from_line(l.as_bytes()).expect("every line is an event"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn curl_uploads_the_ports_file_and_reads_it_back() {
    let server = TestServer::start().await;
    let file = ports_json().display().to_string();
    let (status, body) = curl(
        &server,
        vec!["-T".into(), file, url(&server, "/v1/jobs/ports")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events = events(&body);
    assert!(
        matches!(
            events.first(),
            Some(Event::Accepted {
                format: Format::Json,
                ..
            })
        ),
        "{body}"
    );
    assert!(
        matches!(
            events.last(),
            Some(Event::Done {
                committed: 1634,
                errors: 0,
                ..
            })
        ),
        "{body}"
    );

    let (status, body) = curl(&server, vec![url(&server, "/v1/ports/AEAJM")]).await;
    assert_eq!(status, 200);
    let port: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(port["name"], "Ajman");

    // Pages walk every key exactly once, in order.
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(a) => format!("/v1/ports?limit=500&after={a}"),
            None => "/v1/ports?limit=500".to_owned(),
        };
        let (status, body) = curl(&server, vec![url(&server, &query)]).await;
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        keys.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["key"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(keys.len(), 1634);
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing, so no key twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn curl_uploads_csv_named_by_content_type_with_a_task_parameter() {
    let server = TestServer::start().await;
    let file = server.dir.path().join("prices.dat");
    // The first line has no comma, so a sniff would say `lines`: Content-Type decides.
    std::fs::write(&file, "price\r\n10\r\n20\r\n\"30\"\r\nfree\r\n").unwrap();
    let (status, body) = curl(
        &server,
        vec![
            "-H".into(),
            "content-type: text/csv; charset=utf-8".into(),
            "-T".into(),
            file.display().to_string(),
            url(&server, "/v1/jobs/stats?column=price"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events = events(&body);
    assert!(
        matches!(
            events.first(),
            Some(Event::Accepted {
                format: Format::Csv,
                ..
            })
        ),
        "{body}"
    );
    let Some(Event::Done {
        summary,
        errors,
        first_errors,
        ..
    }) = events.last()
    else {
        panic!("{body}")
    };
    assert_eq!(
        (summary["count"].as_u64(), summary["mean"].as_f64()),
        (Some(3), Some(20.0))
    );
    assert_eq!(*errors, 1);
    assert_eq!(first_errors[0].index, 3);
    assert!(first_errors[0].message.contains("column `price`"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn refusals_are_statuses_with_json_errors() {
    let server = TestServer::start().await;
    let numbers = std::fs::canonicalize(ports_json())
        .unwrap()
        .with_file_name("numbers.txt");
    let numbers = numbers.display().to_string();
    let cases: Vec<(Vec<String>, u16, &str)> = vec![
        (
            vec![
                "-T".into(),
                numbers.clone(),
                url(&server, "/v1/jobs/nonesuch"),
            ],
            404,
            "unknown_task",
        ),
        (
            vec![
                "-T".into(),
                numbers.clone(),
                url(&server, "/v1/jobs/stats?format=xml"),
            ],
            415,
            "unknown_format",
        ),
        (
            vec![
                "-T".into(),
                numbers.clone(),
                "-H".into(),
                "content-type: image/png".into(),
                url(&server, "/v1/jobs/stats"),
            ],
            415,
            "unknown_format",
        ),
        (
            vec![
                "-T".into(),
                numbers.clone(),
                url(&server, "/v1/jobs/stats?colum=x"),
            ],
            400,
            "bad_params",
        ),
        (
            vec![
                "-T".into(),
                numbers.clone(),
                url(&server, "/v1/jobs/ports?format=lines"),
            ],
            415,
            "unknown_format",
        ),
        (vec![url(&server, "/v1/ports/NOPE")], 404, "not_found"),
        (
            vec![url(&server, "/v1/ports?limit=5000")],
            400,
            "bad_params",
        ),
        (
            vec!["-X".into(), "DELETE".into(), url(&server, "/v1/jobs/ports")],
            405,
            "method_not_allowed",
        ),
        (vec![url(&server, "/v1/jobs/nonesuch")], 404, "not_found"),
        (vec![url(&server, "/nowhere")], 404, "not_found"),
    ];
    for (args, want_status, want_code) in cases {
        let (status, body) = curl(&server, args.clone()).await;
        assert_eq!(status, want_status, "{args:?}: {body}");
        let error: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{args:?}: {e}: {body}"));
        assert_eq!(error["error"]["code"], want_code, "{args:?}");
        assert!(error["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }

    let (status, body) = curl(&server, vec![url(&server, "/healthz")]).await;
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok", "{body}");
    assert!(health["certificate"]["expires"].is_string(), "{body}");
    let (status, body) = curl(&server, vec![url(&server, "/v1/tasks")]).await;
    assert_eq!(status, 200);
    let tasks: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ports", "stats", "primes", "blobs"]);
    assert_eq!(
        tasks["tasks"][0]["schema"]["required"],
        serde_json::json!(["name"])
    );

    // Nothing was stored by any refusal.
    let dir = server.stop().await;
    assert!(all_ports(&dir.path().join("data/edge.redb")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn events_reach_curl_while_it_is_still_uploading() {
    let curl = the_curl();
    let server = TestServer::start().await;
    let authorization = format!("authorization: Bearer {}", server.token(ALL_SCOPES));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("numbers.txt");
    let body: String = (0..250_000).map(|i| format!("{i}\n")).collect(); // ~1.6 MB
    std::fs::write(&file, body).unwrap();
    let ca = server.ca();
    let target = url(&server, "/v1/jobs/stats");
    let arrivals = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(curl)
            .args(["-H", &authorization])
            .args([
                "--http3-only",
                "-sS",
                "-N",
                "--limit-rate",
                "400k",
                "--cacert",
            ])
            .arg(ca)
            .arg("-T")
            .arg(&file)
            .arg(target)
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl runs");
        let start = Instant::now();
        let stdout = child.stdout.take().unwrap();
        let arrivals: Vec<(Duration, Event)> = BufReader::new(stdout)
            .lines()
            .map(|line| {
                (
                    start.elapsed(),
                    Event::from_line(line.unwrap().as_bytes()).unwrap(),
                )
            })
            .collect();
        assert!(child.wait().unwrap().success());
        arrivals
    })
    .await
    .unwrap();
    let first_commit = arrivals
        .iter()
        .find(|(_, e)| matches!(e, Event::Committed { .. }))
        .expect("a committed event");
    let (done_at, done) = arrivals.last().unwrap();
    assert!(
        matches!(
            done,
            Event::Done {
                records: 250_000,
                ..
            }
        ),
        "{done:?}"
    );
    assert!(
        *done_at > first_commit.0 + Duration::from_millis(1500),
        "the first `committed` came {:?} before the end; it must come while the upload runs",
        *done_at - first_commit.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn curl_and_edge_client_upload_at_the_same_time() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ports.ndjson");
    std::fs::write(&file, synthetic_ports_ndjson(40_000)).unwrap();
    let client = server.client().await;
    let mut header = JobHeader::new("stats");
    header.format = Some(Format::Lines);
    let numbers: String = (0..200_000).map(|i| format!("{i}\n")).collect();
    let by_client = upload_with(
        &client,
        header,
        Box::new(std::io::Cursor::new(numbers.into_bytes())),
    );
    let by_curl = curl(
        &server,
        vec![
            "-T".into(),
            file.display().to_string(),
            url(&server, "/v1/jobs/ports?format=ndjson"),
        ],
    );
    let ((client_result, _), (status, body)) = tokio::join!(by_client, by_curl);
    assert!(
        matches!(
            client_result.last,
            Event::Done {
                records: 200_000,
                ..
            }
        ),
        "{:?}",
        client_result.last
    );
    assert_eq!(status, 200);
    assert!(
        matches!(
            events(&body).last(),
            Some(Event::Done {
                committed: 40_000,
                ..
            })
        ),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn job_history_lists_recent_jobs_and_survives_a_restart() {
    let server = TestServer::start().await;
    let file = ports_json().display().to_string();
    let (status, body) = curl(
        &server,
        vec![
            "-T".into(),
            file,
            url(&server, "/v1/jobs/ports?name=first.json"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let client = server.client().await;
    let (result, _) = upload(&client, "stats", Some(Format::Lines), b"1\nx\n3\n".to_vec()).await;
    let Event::Done { job: second, .. } = &result.last else {
        panic!("{:?}", result.last)
    };
    client.close().await;

    let (status, body) = curl(&server, vec![url(&server, "/v1/jobs?limit=1")]).await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    let latest = &page["items"][0];
    assert_eq!(latest["job"], second.as_str());
    assert_eq!(
        (latest["task"].as_str(), latest["transport"].as_str()),
        (Some("stats"), Some("edge/1"))
    );
    assert_eq!(
        (
            latest["outcome"].as_str(),
            latest["records"].as_u64(),
            latest["errors"].as_u64()
        ),
        (Some("done"), Some(3), Some(1))
    );
    let before = page["next"].as_str().expect("an older page").to_owned();
    let (_, body) = curl(
        &server,
        vec![url(&server, &format!("/v1/jobs?before={before}"))],
    )
    .await;
    let older: Value = serde_json::from_str(&body).unwrap();
    let first = &older["items"][0];
    assert_eq!(
        (
            first["name"].as_str(),
            first["transport"].as_str(),
            first["committed"].as_u64()
        ),
        (Some("first.json"), Some("h3"), Some(1634))
    );
    assert!(first["started"].as_str().is_some() && first["finished"].as_str().is_some());

    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let (status, body) = curl(&server, vec![url(&server, &format!("/v1/jobs/{second}"))]).await;
    assert_eq!(status, 200, "the history survives a restart: {body}");
    let (status, _) = curl(&server, vec![url(&server, "/v1/jobs/0000000000000000")]).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn an_oversized_header_block_gets_431_and_the_connection_lives() {
    let curl = the_curl();
    let server = TestServer::start().await;
    let ca = server.ca();
    let big = format!("x-big: {}", "x".repeat(20 * 1024));
    let healthz = url(&server, "/healthz");
    let output = tokio::task::spawn_blocking(move || {
        // Two requests in one curl run share one connection.
        Command::new(curl)
            .args([
                "--http3-only",
                "-sS",
                "-w",
                "%{http_code} %{num_connects}\n",
                "-o",
                "/dev/null",
                "--cacert",
            ])
            .arg(&ca)
            .args([
                "-H",
                &big,
                &healthz,
                "--next",
                "--http3-only",
                "-sS",
                "-w",
                "%{http_code} %{num_connects}\n",
                "--cacert",
            ])
            .arg(&ca)
            .arg(&healthz)
            .output()
            .expect("curl runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("431 1"),
        "{text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        lines
            .get(1)
            .is_some_and(|l| l.starts_with(r#"{"status":"ok""#)),
        "{text}"
    );
    // `num_connects` 0: the second request reused the first one's connection.
    assert_eq!(lines.get(2).copied(), Some("200 0"), "{text}");
}

/// A raw QUIC connection speaking ALPN `h3`, for peers that misbehave on purpose.
pub(crate) async fn raw_h3_connection(server: &TestServer) -> (quinn::Endpoint, quinn::Connection) {
    raw_h3_connection_to(&server.ca(), server.addr).await
}

/// A raw QUIC connection speaking ALPN `h3` to `addr`, trusting the CA in the file `ca`.
pub(crate) async fn raw_h3_connection_to(
    ca: &std::path::Path,
    addr: std::net::SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(quic)));
    let connection = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    (endpoint, connection)
}

/// Sends `header` then zeros until the server closes the connection; returns how many bytes
/// went out and the close.
async fn send_until_closed(
    mut stream: quinn::SendStream,
    connection: &quinn::Connection,
    header: &[u8],
) -> (u64, quinn::ConnectionError) {
    stream.write_all(header).await.unwrap();
    let zeros = vec![0u8; 64 * 1024];
    let mut sent = header.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while stream.write_all(&zeros).await.is_ok() {
        sent += zeros.len() as u64;
        assert!(Instant::now() < deadline, "not cut off after {sent} bytes");
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("the server closes the connection");
    (sent, closed)
}

/// H3_EXCESSIVE_LOAD.
const EXCESSIVE_LOAD: u64 = 0x107;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_declaring_huge_frames_are_cut_off_before_they_are_buffered() {
    let server = TestServer::start().await;
    // A request stream whose HEADERS frame declares 1 GiB (varint 0xc0000000_40000000).
    let huge_headers = [0x01, 0xc0, 0, 0, 0, 0x40, 0, 0, 0];
    // A control stream (type 0) whose first frame, of an unknown type, declares 1 GiB.
    let huge_control_frame = [0x00, 0x21, 0xc0, 0, 0, 0, 0x40, 0, 0, 0];

    let (_endpoint, connection) = raw_h3_connection(&server).await;
    let (send, _recv) = connection.open_bi().await.unwrap();
    let (sent, closed) = send_until_closed(send, &connection, &huge_headers).await;
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == EXCESSIVE_LOAD),
        "{closed}"
    );
    assert!(sent < 8 * 1024 * 1024, "cut off only after {sent} bytes");

    let (_endpoint, connection) = raw_h3_connection(&server).await;
    let send = connection.open_uni().await.unwrap();
    let (sent, closed) = send_until_closed(send, &connection, &huge_control_frame).await;
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code.into_inner() == EXCESSIVE_LOAD),
        "{closed}"
    );
    assert!(sent < 8 * 1024 * 1024, "cut off only after {sent} bytes");

    // The server goes on serving.
    let client = server.client().await;
    let (result, _) = upload(&client, "stats", Some(Format::Lines), b"1\n2\n".to_vec()).await;
    assert!(matches!(result.last, Event::Done { records: 2, .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_disagrees_with_its_content_length_fails_and_the_response_still_ends_cleanly() {
    use bytes::Buf;
    let server = TestServer::start().await;
    let (_endpoint, connection) = raw_h3_connection(&server).await;
    let (mut driver, mut requests) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .unwrap();
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let uri = format!(
        "https://localhost:{}/v1/jobs/stats?format=lines",
        server.addr.port()
    );
    let request = http::Request::put(uri)
        .header("content-length", "100")
        .header(
            "authorization",
            format!("Bearer {}", server.token(ALL_SCOPES)),
        )
        .body(())
        .unwrap();
    let mut stream = requests.send_request(request).await.unwrap();
    stream
        .send_data(bytes::Bytes::from_static(b"1\n2\n3\n"))
        .await
        .unwrap();
    stream.finish().await.unwrap();
    let response = stream.recv_response().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = Vec::new();
    let ending = loop {
        match stream.recv_data().await {
            Ok(Some(mut data)) => body.extend_from_slice(&data.copy_to_bytes(data.remaining())),
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    let text = String::from_utf8_lossy(&body);
    // The response ends cleanly after the final event: a reset could make a client discard
    // it.
    assert_eq!(ending, None, "the response is finished cleanly: {text}");
    let events = events(&text);
    assert!(
        matches!(events.last(), Some(Event::Failed { code, .. }) if *code == edge_proto::ErrorCode::UploadAborted),
        "{text}"
    );

    // The job history says why, over the same connection.
    let uri = format!("https://localhost:{}/v1/jobs?limit=1", server.addr.port());
    let mut stream = requests
        .send_request(
            http::Request::get(uri)
                .header(
                    "authorization",
                    format!("Bearer {}", server.token(ALL_SCOPES)),
                )
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    stream.finish().await.unwrap();
    assert_eq!(stream.recv_response().await.unwrap().status(), 200);
    let mut body = Vec::new();
    while let Some(mut data) = stream.recv_data().await.unwrap() {
        body.extend_from_slice(&data.copy_to_bytes(data.remaining()));
    }
    let page: Value = serde_json::from_slice(&body).unwrap();
    let job = &page["items"][0];
    assert_eq!(
        (job["outcome"].as_str(), job["code"].as_str()),
        (Some("failed"), Some("upload_aborted")),
        "{job}"
    );
    assert!(
        job["message"]
            .as_str()
            .is_some_and(|m| m.contains("content-length")),
        "{job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn a_client_that_goes_away_mid_upload_fails_only_its_job_and_keeps_what_was_committed() {
    let curl = the_curl();
    // A killed curl says nothing: the server learns it is gone when the connection idles out.
    let server = TestServer::start_with(|config| config.transport.idle_timeout_secs = 2).await;
    let authorization = format!("authorization: Bearer {}", server.token(ALL_SCOPES));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ports.ndjson");
    std::fs::write(&file, synthetic_ports_ndjson(30_000)).unwrap(); // ~6 MB: 6 s at 1 MB/s
    let mut child = Command::new(curl)
        .args(["-H", &authorization])
        .args([
            "--http3-only",
            "-sS",
            "-N",
            "--limit-rate",
            "1M",
            "--cacert",
        ])
        .arg(server.ca())
        .arg("-T")
        .arg(&file)
        .arg(url(&server, "/v1/jobs/ports?format=ndjson"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl runs");
    // Killed once the job has committed records: its `committed` event is the sign.
    let stdout = child.stdout.take().unwrap();
    let committed = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).any(|line| {
            matches!(Event::from_line(line.as_bytes()), Ok(Event::Committed { records, .. }) if records > 0)
        })
    });
    assert!(
        committed.await.unwrap(),
        "the job committed nothing before the upload ended"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // The job ends `failed` in the history, with what it committed before.
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let (status, body) = curl_get(&server, "/v1/jobs?limit=1").await;
        assert_eq!(status, 200);
        let page: Value = serde_json::from_str(&body).unwrap();
        let job = page["items"][0].clone();
        if job["outcome"] != "running" {
            break job;
        }
        assert!(Instant::now() < deadline, "the job is still running: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job["outcome"], "failed", "{job}");
    assert_eq!(job["code"], "upload_aborted", "{job}");
    let committed = job["committed"].as_u64().unwrap();
    assert!(committed > 0 && committed < 30_000, "{job}");

    // Other jobs are untouched, and every committed record is in the store.
    let client = server.client().await;
    let (result, _) = upload(&client, "stats", Some(Format::Lines), b"5\n".to_vec()).await;
    assert!(matches!(result.last, Event::Done { records: 1, .. }));
    client.close().await;
    let dir = server.stop().await;
    assert_eq!(
        all_ports(&dir.path().join("data/edge.redb")).len() as u64,
        committed
    );
}

async fn curl_get(server: &TestServer, path: &str) -> (u16, String) {
    curl(server, vec![url(server, path)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn tokens_gate_every_request_but_the_health_check() {
    let server = TestServer::start().await;
    let numbers = std::fs::canonicalize(ports_json())
        .unwrap()
        .with_file_name("numbers.txt")
        .display()
        .to_string();
    let upload = |server: &TestServer| {
        vec![
            "-T".to_owned(),
            numbers.clone(),
            url(server, "/v1/jobs/stats"),
        ]
    };
    let expired = server.expired_token("stats:write");

    let cases: Vec<(Option<String>, Vec<String>, u16, &str)> = vec![
        (None, upload(&server), 401, "unauthorized"),
        (Some("garbage".into()), upload(&server), 401, "unauthorized"),
        (Some(expired), upload(&server), 401, "token_expired"),
        (
            Some(server.token("ports:read")),
            upload(&server),
            403,
            "forbidden",
        ),
        (
            Some(server.token("stats:write")),
            vec![url(&server, "/v1/ports/AEAJM")],
            403,
            "forbidden",
        ),
        (
            Some(server.token("stats:write")),
            vec![url(&server, "/v1/jobs")],
            403,
            "forbidden",
        ),
        (None, vec![url(&server, "/v1/tasks")], 401, "unauthorized"),
    ];
    for (token, args, want_status, want_code) in cases {
        let (status, body) = curl_as(&server, token, args.clone()).await;
        assert_eq!(status, want_status, "{args:?}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], want_code, "{args:?}");
    }
    let (status, _) = curl_as(&server, None, vec![url(&server, "/healthz")]).await;
    assert_eq!(status, 200, "the health check needs no token");

    // Each user sees their own jobs; an administrator sees all.
    let alice = mint(
        &server.dir.path().join("certs"),
        "alice",
        "stats:write jobs:read",
    );
    let bob = mint(
        &server.dir.path().join("certs"),
        "bob",
        "stats:write jobs:read",
    );
    let admin = mint(&server.dir.path().join("certs"), "root", "admin");
    let (status, _) = curl_as(&server, Some(alice.clone()), upload(&server)).await;
    assert_eq!(status, 200);
    let (_, body) = curl_as(&server, Some(alice.clone()), vec![url(&server, "/v1/jobs")]).await;
    let alices: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(alices["items"].as_array().unwrap().len(), 1);
    assert_eq!(alices["items"][0]["sub"], "alice");
    let job = alices["items"][0]["job"].as_str().unwrap().to_owned();
    let (_, body) = curl_as(&server, Some(bob.clone()), vec![url(&server, "/v1/jobs")]).await;
    let bobs: Value = serde_json::from_str(&body).unwrap();
    assert!(bobs["items"].as_array().unwrap().is_empty(), "{bobs}");
    let (status, _) = curl_as(
        &server,
        Some(bob),
        vec![url(&server, &format!("/v1/jobs/{job}"))],
    )
    .await;
    assert_eq!(status, 404, "another user's job does not exist for bob");
    let (status, _) = curl_as(
        &server,
        Some(admin),
        vec![url(&server, &format!("/v1/jobs/{job}"))],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn over_the_start_rate_curl_gets_429_with_retry_after() {
    let server = TestServer::start_with(|config| {
        config.limits.job_starts_per_sec = 0.1;
        config.limits.job_start_burst = 1;
    })
    .await;
    let numbers = std::fs::canonicalize(ports_json())
        .unwrap()
        .with_file_name("numbers.txt")
        .display()
        .to_string();
    let upload = vec!["-T".to_owned(), numbers, url(&server, "/v1/jobs/stats")];
    let (status, _) = curl(&server, upload.clone()).await;
    assert_eq!(status, 200);
    let mut with_headers = vec!["-D".to_owned(), "-".to_owned()];
    with_headers.extend(upload);
    let (status, text) = curl(&server, with_headers).await;
    assert_eq!(status, 429, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 10"),
        "{text}"
    );
    assert!(text.contains("\"rate_limited\""), "{text}");
}
