//! Following a job from anywhere: `GET /v1/jobs/{id}/events` replays a job's events and then
//! streams the live ones until its final event, as NDJSON or Server-Sent Events, for the job's
//! own subject (or an administrator); `edge-client jobs watch ID` prints them.

use crate::http3::{curl_as, url};
use crate::util::*;
use edge_client::api::Api;
use edge_proto::{Event, Format, JobHeader};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

fn port_line(i: u32) -> String {
    format!("{{\"name\":\"Watched {i}\",\"unlocs\":[\"WATCH{i:03}\"]}}\n")
}

/// The job id of the `accepted` event among `events`.
fn job_of(events: &[Event]) -> String {
    events
        .iter()
        .find_map(|e| match e {
            Event::Accepted { job, .. } => Some(job.clone()),
            _ => None,
        })
        .expect("an accepted event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_gets_what_was_sent_then_the_live_events_until_the_end() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let mut header = JobHeader::new("ports");
    header.format = Some(Format::Ndjson);
    let events = Events::new();
    let sink = events.sink();
    let upload = tokio::spawn(async move {
        let job = edge_client::UploadJob::new(header, Box::new(reader));
        client.upload(job, sink).await.unwrap().last
    });
    writer.write_all(port_line(1).as_bytes()).await.unwrap();
    events
        .until("committed", |e| {
            matches!(e, Event::Committed { records: 1, .. })
        })
        .await;
    let job = job_of(&events.all());

    // A watcher joins while the upload is open: it gets the events so far, then the live ones.
    let mut api = Api::connect(&server.client_config()).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Event>::new()));
    let watched = seen.clone();
    let path = format!("/v1/jobs/{job}/events");
    let watcher = tokio::spawn(async move {
        let followed = api
            .follow(&path, &mut |line| {
                watched
                    .lock()
                    .unwrap()
                    .push(Event::from_line(line).unwrap());
            })
            .await;
        api.close().await;
        followed
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::Committed { records: 1, .. }))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no replay within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!upload.is_finished(), "the upload is still open");
    for i in 2..=5 {
        writer.write_all(port_line(i).as_bytes()).await.unwrap();
    }
    drop(writer);
    let last = upload.await.unwrap();
    assert!(matches!(last, Event::Done { committed: 5, .. }), "{last:?}");
    watcher.await.unwrap().unwrap().unwrap();
    let watched = seen.lock().unwrap().clone();
    assert!(matches!(watched.first(), Some(Event::Accepted { .. })));
    assert_eq!(
        watched.last(),
        Some(&last),
        "the watcher's last event is the job's"
    );
    assert_eq!(
        watched,
        events.all(),
        "the watcher saw what the uploader saw"
    );

    // After the end: a replay from event 2, as NDJSON and as Server-Sent Events.
    let mut api = Api::connect(&server.client_config()).await.unwrap();
    let mut replay = Vec::new();
    api.follow(&format!("/v1/jobs/{job}/events?after=1"), &mut |line| {
        replay.push(Event::from_line(line).unwrap())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(replay, events.all()[1..].to_vec());
    api.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn server_sent_events_resume_from_the_last_event_id_and_only_for_the_owner() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let body: String = (1..=3).map(port_line).collect();
    let (result, events) = upload(&client, "ports", Some(Format::Ndjson), body.into_bytes()).await;
    assert!(matches!(result.last, Event::Done { .. }));
    let job = job_of(&events);
    let path = format!("/v1/jobs/{job}/events");
    let sse = |token: String, extra: &[&str]| {
        let mut args = vec!["-H".to_owned(), "accept: text/event-stream".to_owned()];
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push(url(&server, &path));
        curl_as(&server, Some(token), args)
    };
    let owner = server.token("jobs:read");
    let (status, body) = sse(owner.clone(), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("id: 1\nevent: accepted\ndata: {\"event\":\"accepted\""),
        "{body}"
    );
    let count = events.len();
    assert!(
        body.contains(&format!("id: {count}\nevent: done\ndata: ")),
        "{body}"
    );
    let (status, resumed) = sse(owner, &["-H", &format!("last-event-id: {}", count - 1)]).await;
    assert_eq!(status, 200);
    assert!(
        resumed.starts_with(&format!("id: {count}\nevent: done")),
        "{resumed}"
    );
    let stranger = mint(&server.dir.path().join("certs"), "mallory", "jobs:read");
    let (status, body) = sse(stranger, &[]).await;
    assert_eq!(
        status, 404,
        "another subject's job does not exist for it: {body}"
    );
    let admin = mint(&server.dir.path().join("certs"), "root", "admin");
    assert_eq!(sse(admin, &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_client_watches_a_job_to_its_end() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let body: String = (1..=2).map(port_line).collect();
    let (_, events) = upload(&client, "ports", Some(Format::Ndjson), body.into_bytes()).await;
    let job = job_of(&events);
    let (address, ca, token) = (
        format!("https://127.0.0.1:{}", server.addr.port()),
        server.ca(),
        server.token("jobs:read"),
    );
    let run = move |args: &[&str]| run_client(&address, &ca, &token, args);
    let (plain, json, missing) = {
        let job = job.clone();
        tokio::task::spawn_blocking(move || {
            (
                run(&["jobs", "watch", &job]),
                run(&["jobs", "watch", &job, "--json", "--after", "1"]),
                run(&["jobs", "watch", "0000000000000000"]),
            )
        })
        .await
        .unwrap()
    };
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert_eq!(plain.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("job {job}: accepted as job {job}")),
        "{stderr}"
    );
    assert!(stderr.contains("done: 2 records"), "{stderr}");
    let lines: Vec<Event> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| Event::from_line(l.as_bytes()).unwrap())
        .collect();
    assert_eq!(lines, events[1..].to_vec());
    assert_ne!(missing.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not_found"));
}

/// The machine's curl over HTTP/2 (as a browser would use the server), with `token`.
fn h2_curl(server: &TestServer, token: &str) -> std::process::Command {
    let mut command = std::process::Command::new("curl");
    command
        .args(["-sS", "--http2", "--max-time", "60", "--cacert"])
        .arg(server.ca())
        .args(["-H", &format!("authorization: Bearer {token}")]);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_named_by_a_reference_is_watched_before_its_response_is_read() {
    // A browser cannot read an upload's response before its body is sent: it names the job
    // with `?ref=` and watches `/v1/jobs/ref:<ref>/events` meanwhile.
    let server = TestServer::start().await;
    let token = server.token(ALL_SCOPES);
    let file = server.dir.path().join("slow.ndjson");
    let lines = 12_000u32;
    std::fs::write(&file, (0..lines).map(port_line).collect::<String>()).unwrap();
    let reference = "page-0123456789abcdef";
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let uploading = h2_curl(&server, &token)
        .args(["--limit-rate", "200k", "-T"])
        .arg(&file)
        .arg(format!("{base}/v1/jobs/ports?ref={reference}"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    let watch_url = format!("{base}/v1/jobs/ref:{reference}/events");
    let (server, watched) = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let out = h2_curl(&server, &token)
                .args(["-w", "\n%{http_code}"])
                .arg(&watch_url)
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            let (body, status) = text.rsplit_once('\n').unwrap();
            if status == "200" {
                return (server, body.to_owned());
            }
            assert_eq!(status, "404", "{body}");
            assert!(
                std::time::Instant::now() < deadline,
                "the job never appeared"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    let output = tokio::task::spawn_blocking(move || uploading.wait_with_output().unwrap())
        .await
        .unwrap();
    let uploaded: Vec<Event> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| Event::from_line(l.as_bytes()).unwrap())
        .collect();
    let watched: Vec<Event> = watched
        .lines()
        .map(|l| Event::from_line(l.as_bytes()).unwrap())
        .collect();
    assert_eq!(job_of(&watched), job_of(&uploaded));
    assert!(
        matches!(watched.last(), Some(Event::Done { committed, .. }) if *committed == u64::from(lines)),
        "{:?}",
        watched.last()
    );
    assert!(
        watched.iter().any(|e| matches!(e, Event::Committed { .. })),
        "the watcher saw the commits as they came"
    );

    // Another subject's reference is not found; a malformed one is refused.
    let other = mint(
        &server.dir.path().join("certs"),
        "someone-else",
        "jobs:read",
    );
    let (server, status) = tokio::task::spawn_blocking(move || {
        let out = h2_curl(&server, &other)
            .args(["-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!(
                "https://127.0.0.1:{}/v1/jobs/ref:{reference}/events",
                server.addr.port()
            ))
            .output()
            .unwrap();
        (server, String::from_utf8(out.stdout).unwrap())
    })
    .await
    .unwrap();
    assert_eq!(status, "404");
    let token = server.token(ALL_SCOPES);
    let out = tokio::task::spawn_blocking(move || {
        h2_curl(&server, &token)
            .args(["-d", "1", "-w", "\n%{http_code}"])
            .arg(format!(
                "https://127.0.0.1:{}/v1/jobs/stats?ref=a%20b",
                server.addr.port()
            ))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with("\n400") && text.contains("`ref`"), "{text}");
}
