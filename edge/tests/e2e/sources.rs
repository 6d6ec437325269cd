//! Jobs whose body the server reads itself: a file in a folder `[sources] dirs` allows, named
//! over `edge/1` (the header's `source`), over HTTP/2 with the machine's curl
//! (`?source=file:...`) and by `edge-client run --server-file`, with the same events as an
//! upload of the file; every way out of the folder refused alike; the listing.

use crate::util::*;
use edge::config::SourceDir;
use edge_proto::{Event, JobHeader};
use serde_json::Value;
use std::process::Command;

const SCOPES: &str = "ports:write ports:read jobs:read sources:read";

/// A server allowing `<temp>/exports` (holding `ports.json` and `sub/`), and a folder outside
/// it holding a file the tests try to reach.
async fn server() -> (TestServer, tempfile::TempDir) {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.json"), r#"[{"secret":1}]"#).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exports = dir.path().join("exports");
    std::fs::create_dir_all(exports.join("sub")).unwrap();
    std::fs::copy(ports_json(), exports.join("ports.json")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.json"), exports.join("out.json"))
        .unwrap();
    let server = TestServer::start_in(dir, move |config| {
        config.sources.dirs = vec![SourceDir {
            path: exports,
            name: "exports".into(),
            watch: None,
        }];
    })
    .await;
    (server, outside)
}

/// `POST /v1/jobs/...{query}` over HTTP/2 with the machine's curl: status and body.
fn post(server: &TestServer, token: &str, path_and_query: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "60", "--cacert"])
        .arg(server.ca())
        .args(["-H", &format!("authorization: Bearer {token}")])
        .args(["-X", "POST", "-w", "\n%{http_code}"])
        .arg(format!(
            "https://127.0.0.1:{}{path_and_query}",
            server.addr.port()
        ))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("a status");
    (status.parse().expect("a status"), body.to_owned())
}

fn get(server: &TestServer, token: &str, path: &str) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "30", "--cacert"])
        .arg(server.ca())
        .args(["-H", &format!("authorization: Bearer {token}")])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("https://127.0.0.1:{}{path}", server.addr.port()))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("a status");
    (
        status.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn events(body: &str) -> Vec<Event> {
    body.lines()
        .map(|l| Event::from_line(l.as_bytes()).expect("an event"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_file_runs_like_its_upload_over_edge1_http2_and_edge_client() {
    let (server, _outside) = server().await;
    let token = server.token(SCOPES);

    // edge/1: the header names the file; the stream ends after it.
    let client = edge_client::Client::connect(&edge_client::ClientConfig {
        token: Some(token.clone()),
        ..server.client_config()
    })
    .await
    .unwrap();
    let mut header = JobHeader::new("ports");
    header.source = Some("file:exports/ports.json".into());
    let (_, quic) = upload_with(&client, header, Box::new(tokio::io::empty())).await;
    let Some(Event::Accepted {
        name, size, source, ..
    }) = quic.first()
    else {
        panic!("{quic:?}")
    };
    assert_eq!(name.as_deref(), Some("ports.json"));
    assert_eq!(*size, Some(std::fs::metadata(ports_json()).unwrap().len()));
    assert_eq!(
        source,
        &Some(serde_json::json!({"file": "exports/ports.json"}))
    );
    let Event::Done {
        committed, summary, ..
    } = done(&quic)
    else {
        unreachable!()
    };
    assert_eq!(*committed, 1634);
    assert_eq!(summary["inserted"], 1634);

    // HTTP/2: the same job again finds every port unchanged.
    let (server, token, h2) = tokio::task::spawn_blocking(move || {
        let answer = post(
            &server,
            &token,
            "/v1/jobs/ports?source=file:exports/ports.json",
        );
        (server, token, answer)
    })
    .await
    .unwrap();
    assert_eq!(h2.0, 200, "{}", h2.1);
    let h2 = events(&h2.1);
    let Event::Done { summary, .. } = done(&h2) else {
        unreachable!()
    };
    assert_eq!(summary["unchanged"], 1634, "{summary}");

    // edge-client run --server-file.
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let (ca, client_token) = (server.ca(), token.clone());
    let out = tokio::task::spawn_blocking(move || {
        run_client(
            &url,
            &ca,
            &client_token,
            [
                "run",
                "--task",
                "ports",
                "--server-file",
                "exports/ports.json",
            ],
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1634 committed"), "{stderr}");

    // The job history keeps where the body came from; the listing shows the file.
    let (server, history, listing) = tokio::task::spawn_blocking(move || {
        let history = get(&server, &token, "/v1/jobs?limit=1");
        let listing = get(&server, &token, "/v1/sources/files?dir=exports");
        (server, history, listing)
    })
    .await
    .unwrap();
    assert_eq!(history.0, 200);
    assert_eq!(
        history.1["items"][0]["source"]["file"],
        "exports/ports.json"
    );
    assert_eq!(listing.0, 200, "{}", listing.1);
    let names: Vec<&str> = listing.1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["exports/ports.json", "exports/sub"],
        "symlinks are not listed"
    );
    assert_eq!(
        listing.1["items"][0]["size"],
        std::fs::metadata(ports_json()).unwrap().len()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_out_of_the_folders_is_refused_alike_and_nothing_is_stored() {
    let (server, outside) = server().await;
    let token = server.token(SCOPES);
    let secret = outside.path().join("secret.json").display().to_string();
    let names = [
        "file:exports/../exports/ports.json".to_owned(),
        "file:exports/out.json".to_owned(),
        format!("file:{secret}"),
        "file:/etc/hostname".to_owned(),
        "file:exports/missing.json".to_owned(),
        "file:exports/sub".to_owned(),
        "file:elsewhere/ports.json".to_owned(),
        "file:exports/%2e%2e/%2e%2e/etc/hostname".to_owned(),
    ];
    let without_scope = server.token("ports:write jobs:read");
    let (server, answers, forbidden, not_a_source) = tokio::task::spawn_blocking(move || {
        let answers: Vec<(u16, String)> = names
            .iter()
            .map(|name| {
                let query: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("source", name)
                    .finish();
                post(&server, &token, &format!("/v1/jobs/ports?{query}"))
            })
            .collect();
        let forbidden = post(
            &server,
            &without_scope,
            "/v1/jobs/ports?source=file:exports/ports.json",
        );
        let not_a_source = post(&server, &token, "/v1/jobs/ports?source=ftp://x/y");
        (server, answers, forbidden, not_a_source)
    })
    .await
    .unwrap();
    let mut messages = std::collections::BTreeSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 400, "{body}");
        let error: Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["error"]["code"], "bad_params");
        let message = error["error"]["message"].as_str().unwrap();
        // The name asked for is quoted back; the rest never says whether it exists.
        let (_, rest) = message
            .split_once("` is not")
            .expect("the refusal's wording");
        messages.insert(rest.to_owned());
    }
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(forbidden.0, 403, "{}", forbidden.1);
    assert!(forbidden.1.contains("sources:read"));
    assert_eq!(not_a_source.0, 400);
    let dir = server.stop().await;
    assert!(all_ports(&dir.path().join("data/edge.redb")).is_empty());
}

/// Waits (at most 30 s) until `path` exists.
async fn appears(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_landing_in_a_watched_folder_run_once_and_move_by_their_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    // A file claimed when the server last stopped, whose job never finished: it is moved to
    // failed/ at start, not run again.
    std::fs::copy(ports_json(), inbox.join("cut.json")).unwrap();
    {
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let store = edge_tasks::Store::open(
            &dir.path().join("data/edge.redb"),
            &edge_tasks::store::StoreOptions::default(),
        )
        .unwrap();
        let claim = edge_tasks::claims::Claim {
            job: "0000000000000000".into(),
            size: 1,
            modified_ns: 1,
        };
        assert!(edge_tasks::claims::claim(&store, "inbox/cut.json", &claim).unwrap());
    }
    let watched = inbox.clone();
    let server = TestServer::start_in(dir, move |config| {
        config.sources.dirs = vec![SourceDir {
            path: watched,
            name: "inbox".into(),
            watch: Some(edge::config::WatchConfig {
                task: "ports".into(),
                settle_secs: 1,
                format: None,
                params: serde_json::Map::new(),
                sub: None,
            }),
        }];
    })
    .await;
    appears(&inbox.join("failed/cut.json")).await;

    // A file written under a temporary name, then renamed into place, runs once.
    std::fs::copy(ports_json(), inbox.join("ports.json.part")).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        inbox.join("ports.json.part").exists(),
        "a .part file is left alone"
    );
    std::fs::rename(inbox.join("ports.json.part"), inbox.join("ports.json")).unwrap();
    appears(&inbox.join("done/ports.json")).await;
    // A file no task can read fails and moves to failed/.
    std::fs::write(inbox.join("noise.bin"), [0u8, 1, 2, 3, 255, 254]).unwrap();
    appears(&inbox.join("failed/noise.bin")).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let token = mint(&server.dir.path().join("certs"), "admin-watcher", "admin");
    let (server, jobs) = tokio::task::spawn_blocking(move || {
        let jobs = get(&server, &token, "/v1/jobs?limit=10");
        (server, jobs)
    })
    .await
    .unwrap();
    let jobs = jobs.1["items"].as_array().unwrap().clone();
    assert_eq!(
        jobs.len(),
        2,
        "one job per file, none for the cut one: {jobs:?}"
    );
    let ports_job = jobs
        .iter()
        .find(|j| j["name"] == "ports.json")
        .expect("the ports file's job");
    assert_eq!(ports_job["outcome"], "done");
    assert_eq!(ports_job["transport"], "watch");
    assert_eq!(ports_job["sub"], "watch:inbox");
    assert_eq!(ports_job["committed"], 1634);
    assert_eq!(ports_job["source"]["file"], "inbox/ports.json");
    assert!(inbox
        .read_dir()
        .unwrap()
        .all(|e| e.unwrap().file_type().unwrap().is_dir()));
    let dir = server.stop().await;
    assert_eq!(all_ports(&dir.path().join("data/edge.redb")).len(), 1634);
    let store = edge_tasks::Store::open(
        &dir.path().join("data/edge.redb"),
        &edge_tasks::store::StoreOptions::default(),
    )
    .unwrap();
    assert!(edge_tasks::claims::list(&store, "inbox")
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn a_server_file_runs_over_http3_with_curl() {
    use crate::http3::{curl_as, url};
    let (server, _outside) = server().await;
    let token = Some(server.token(SCOPES));
    let args = vec![
        "-X".to_owned(),
        "POST".to_owned(),
        url(&server, "/v1/jobs/ports?source=file:exports/ports.json"),
    ];
    let (status, body) = curl_as(&server, token, args).await;
    assert_eq!(status, 200, "{body}");
    let events = events(&body);
    let Some(Event::Accepted { source, .. }) = events.first() else {
        panic!("{events:?}")
    };
    assert_eq!(
        source,
        &Some(serde_json::json!({"file": "exports/ports.json"}))
    );
    assert!(
        matches!(
            done(&events),
            Event::Done {
                committed: 1634,
                ..
            }
        ),
        "{events:?}"
    );
    server.stop().await;
}
