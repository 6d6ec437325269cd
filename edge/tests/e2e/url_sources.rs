//! Jobs whose body the server fetches from a URL (`source=https://...`): a test origin on
//! 127.0.0.1 (the one `edge-fetch`'s own tests use), allowed only by the test config's
//! allow-list and trusted through `sources.ca_files`. The same events as an upload, the
//! source recorded; a redirect followed and one to a private address refused; an origin's
//! 500, a stalled origin and a body past the cap failing the job with nothing stored; a 304
//! to `if_changed=true` ending the job at once, unchanged; `edge-client run --url`.

use crate::origin::{Origin, Reply, Transport};
use crate::util::*;
use edge_proto::{ErrorCode, Event, JobHeader};
use serde_json::Value;
use std::time::Duration;

const SCOPES: &str = "ports:write ports:read jobs:read sources:read";

/// The ports file's bytes.
fn ports() -> Vec<u8> {
    std::fs::read(ports_json()).unwrap()
}

/// A server that may fetch from 127.0.0.1 and trusts `origin`'s CA; bodies capped at 1 MiB,
/// the first byte awaited 1 s.
async fn server_for(origin: &Origin) -> TestServer {
    server_with(origin, |_| {}).await
}

/// [`server_for`], with `tune` adjusting the config after.
async fn server_with(
    origin: &Origin,
    tune: impl FnOnce(&mut edge::config::Config) + Send + 'static,
) -> TestServer {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("origin-ca.pem");
    let b64 = base64::engine::general_purpose::STANDARD.encode(origin.ca.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    std::fs::write(
        &ca,
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        ),
    )
    .unwrap();
    TestServer::start_in(dir, move |config| {
        config.sources.allow = vec!["127.0.0.1".into()];
        config.sources.ca_files = vec![ca];
        config.sources.max_fetch_bytes = 1024 * 1024;
        config.sources.first_byte_timeout_secs = 1;
        tune(config);
    })
    .await
}

/// One job of `ports` on `source` over edge/1; its events.
async fn run(server: &TestServer, source: &str, if_changed: bool) -> Vec<Event> {
    let client = edge_client::Client::connect(&edge_client::ClientConfig {
        token: Some(server.token(SCOPES)),
        ..server.client_config()
    })
    .await
    .unwrap();
    let mut header = JobHeader::new("ports");
    header.source = Some(source.to_owned());
    header.if_changed = if_changed;
    let (_, events) = upload_with(&client, header, Box::new(tokio::io::empty())).await;
    client.close().await;
    events
}

fn accepted_source(events: &[Event]) -> Value {
    match events.first() {
        Some(Event::Accepted { source, .. }) => source.clone().unwrap_or(Value::Null),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_is_fetched_as_it_decodes_and_asked_again_only_if_it_changed() {
    let body = ports();
    let origin = Origin::start(Transport::Https, move |seen| {
        match seen.path_and_query.as_str() {
            "/old/ports.json" => Reply::redirect(301, "/data/ports.json"),
            "/data/ports.json" => {
                let tag = seen.headers.get("if-none-match").map(|v| v.as_bytes());
                if tag == Some(b"\"v1\"") {
                    return Reply::full(304, "").header("etag", "\"v1\"");
                }
                Reply::full(200, body.clone())
                    .header("content-type", "application/json")
                    .header("etag", "\"v1\"")
            }
            _ => Reply::full(404, "no"),
        }
    })
    .await;
    let server = server_for(&origin).await;
    let url = origin.url("/old/ports.json");
    let events = run(&server, &url, false).await;
    let source = accepted_source(&events);
    assert_eq!(source["url"], url.as_str());
    assert_eq!(source["final_url"], origin.url("/data/ports.json").as_str());
    assert_eq!(source["status"], 200);
    assert_eq!(source["redirects"], 1);
    assert_eq!(source["etag"], "\"v1\"");
    let Event::Done { committed, .. } = done(&events) else {
        unreachable!()
    };
    assert_eq!(*committed, 1634);
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Progress { .. } | Event::Committed { .. }))
            .count()
            >= 1,
        "progress while it downloads"
    );

    // Asked again with if_changed: the origin answers 304 and the job ends at once.
    let again = run(&server, &url, true).await;
    assert!(
        matches!(
            done(&again),
            Event::Done {
                unchanged: true,
                records: 0,
                ..
            }
        ),
        "{again:?}"
    );
    let last = origin.seen().last().cloned().unwrap();
    assert_eq!(last.headers.get("if-none-match").unwrap(), "\"v1\"");

    // Over HTTP/2 with curl, and with edge-client run --url.
    let token = server.token(SCOPES);
    let (ca, port, url2) = (server.ca(), server.addr.port(), url.clone());
    let curl = tokio::task::spawn_blocking(move || {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("source", &url2)
            .append_pair("if_changed", "true")
            .finish();
        std::process::Command::new("curl")
            .args(["-sS", "--http2", "--max-time", "30", "--cacert"])
            .arg(&ca)
            .args([
                "-H",
                &format!("authorization: Bearer {token}"),
                "-X",
                "POST",
            ])
            .arg(format!("https://127.0.0.1:{port}/v1/jobs/ports?{query}"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let lines = String::from_utf8(curl.stdout).unwrap();
    assert!(lines.contains("\"unchanged\":true"), "{lines}");
    let server_url = format!("https://127.0.0.1:{}", server.addr.port());
    let (ca, token) = (server.ca(), server.token(SCOPES));
    let out = tokio::task::spawn_blocking(move || {
        run_client(
            &server_url,
            &ca,
            &token,
            ["run", "--task", "ports", "--url", &url, "--if-changed"],
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("unchanged since the last fetch"),
        "{stderr}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_that_fail_fail_the_job_and_refused_urls_refuse_it() {
    let body = synthetic_ports_ndjson(30_000);
    assert!(
        body.len() > 2 * 1024 * 1024,
        "past the 1 MiB cap: {}",
        body.len()
    );
    let origin = Origin::start(Transport::Https, move |seen| {
        match seen.path_and_query.as_str() {
            "/error" => Reply::full(500, "boom"),
            "/stall" => Reply::StallHead,
            "/big.ndjson" => Reply::pieces(
                200,
                body.chunks(64 * 1024)
                    .map(bytes::Bytes::copy_from_slice)
                    .collect(),
                Duration::ZERO,
            ),
            "/to-private" => Reply::redirect(302, "https://10.0.0.1/ports.json"),
            _ => Reply::full(404, "no"),
        }
    })
    .await;
    let server = server_for(&origin).await;

    let failed = |events: &[Event]| match events.last() {
        Some(Event::Failed {
            code,
            message,
            committed,
            ..
        }) => (*code, message.clone(), *committed),
        other => panic!("{other:?}"),
    };
    let (code, message, committed) = failed(&run(&server, &origin.url("/error"), false).await);
    assert_eq!(code, ErrorCode::SourceFailed);
    assert!(message.contains("500"), "{message}");
    assert_eq!(committed, 0);
    let (code, message, _) = failed(&run(&server, &origin.url("/stall"), false).await);
    assert_eq!(code, ErrorCode::SourceFailed);
    assert!(message.contains("fetch_timeout"), "{message}");
    // A body past the 1 MiB cap: what came before it is committed, the job fails.
    let (code, message, _) = failed(&run(&server, &origin.url("/big.ndjson"), false).await);
    assert_eq!(code, ErrorCode::LimitExceeded);
    assert!(message.contains("max_fetch_bytes"), "{message}");

    // A redirect to a private address, and a URL that is not https, are refused before any
    // job starts.
    for (url, what) in [
        (origin.url("/to-private"), "address_refused"),
        (format!("http://{}/x", origin.addr), "scheme_refused"),
    ] {
        let events = run(&server, &url, false).await;
        match events.last() {
            Some(Event::Rejected {
                code: ErrorCode::BadParams,
                message,
                ..
            }) => {
                assert!(message.starts_with(what), "{message}")
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    let dir = server.stop().await;
    let stored = all_ports(&dir.path().join("data/edge.redb"));
    assert!(
        stored.len() < 30_000,
        "the capped body did not all land: {}",
        stored.len()
    );
}

/// A feed `name` of `ports` at `url`, every 2 s, one retry after 1 s.
fn feed(name: &str, url: String) -> edge::config::FeedConfig {
    edge::config::FeedConfig {
        url,
        task: "ports".into(),
        every: "2s".into(),
        name: Some(name.into()),
        format: None,
        params: serde_json::Map::new(),
        sub: None,
        if_changed: true,
        retries: 1,
        retry_secs: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_fetch_on_their_schedule_ask_if_changed_and_retry_failures() {
    let body = ports();
    let origin = Origin::start(Transport::Https, move |seen| {
        match seen.path_and_query.as_str() {
            "/feed.json" => {
                if seen.headers.get("if-none-match").map(|v| v.as_bytes()) == Some(b"\"f1\"") {
                    return Reply::full(304, "").header("etag", "\"f1\"");
                }
                Reply::full(200, body.clone()).header("etag", "\"f1\"")
            }
            _ => Reply::full(500, "down"),
        }
    })
    .await;
    let (good, bad) = (origin.url("/feed.json"), origin.url("/broken.json"));
    let server = server_with(&origin, move |config| {
        config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        config.sources.feeds = vec![feed("good", good), feed("bad", bad)];
    })
    .await;
    let admin = server.admin.expect("the admin listener is on");
    let runs = |feed: &str, outcome: &str| {
        let (_, text) = admin_get(admin, "/metrics");
        let name = format!("edge_feed_runs_total{{feed=\"{feed}\",outcome=\"{outcome}\"}}");
        text.lines()
            .find_map(|l| l.strip_prefix(&name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while runs("good", "unchanged") == 0 || runs("bad", "failed") == 0 {
        assert!(std::time::Instant::now() < deadline, "the feeds never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        runs("good", "done"),
        1,
        "the first run fetched it, the next ones got 304"
    );
    assert!(runs("bad", "retry") >= 1);
    let token = server.token("admin");
    let (ca, port) = (server.ca(), server.addr.port());
    let listed = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--http2", "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("authorization: Bearer {token}")])
            .arg(format!("https://127.0.0.1:{port}/v1/jobs?limit=100"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let jobs: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let jobs = jobs["items"].as_array().unwrap();
    let good_jobs: Vec<&Value> = jobs.iter().filter(|j| j["sub"] == "feed:good").collect();
    assert!(good_jobs.iter().all(|j| j["transport"] == "feed"));
    assert!(good_jobs.iter().any(|j| j["committed"] == 1634));
    assert!(jobs
        .iter()
        .any(|j| j["sub"] == "feed:bad" && j["code"] == "source_failed"));
    let dir = server.stop().await;
    assert_eq!(all_ports(&dir.path().join("data/edge.redb")).len(), 1634);
}
