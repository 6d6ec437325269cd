//! The `edge-client` binary (`CARGO_BIN_EXE_edge-client`) as a user runs it, against a real
//! server on 127.0.0.1 in this process: Ctrl-C, the job queue, what it says when something is
//! wrong before or while connecting, and its tables.

// Test code may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use edge::config::Config;
use edge::Server;
use edge_client::api::Api;
use edge_client::{Client, ClientConfig, UploadJob};
use edge_proto::{Event, JobHeader};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const ALL_SCOPES: &str = "ports:write stats:write ports:read jobs:read";

/// A server on 127.0.0.1:0 in its own temp dir.
struct TestServer {
    port: u16,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(tune: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            certs_dir: dir.path().join("certs"),
            ..Config::default()
        };
        config.transport.max_connections_per_ip = 1024;
        tune(&mut config);
        let server = Server::bind(&config).expect("server binds");
        let port = server.local_addr().port();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        TestServer {
            port,
            dir,
            shutdown,
            task,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn keys(&self) -> edge::auth::KeyPair {
        edge::auth::KeyPair::load_or_generate(&self.dir.path().join("certs")).unwrap()
    }

    fn token(&self) -> String {
        self.keys()
            .issue(
                &Default::default(),
                "tester",
                ALL_SCOPES,
                Duration::from_secs(3600),
                None,
            )
            .unwrap()
    }

    fn config(&self) -> ClientConfig {
        ClientConfig {
            server: self.url(),
            ca: Some(self.ca()),
            token: Some(self.token()),
        }
    }

    /// `--server`, `--ca`, `--token` for this server.
    fn args(&self) -> Vec<String> {
        vec![
            "--server".into(),
            self.url(),
            "--ca".into(),
            self.ca().display().to_string(),
            "--token".into(),
            self.token(),
        ]
    }

    /// `GET path` on the read API.
    async fn get(&self, path: &str) -> serde_json::Value {
        let mut api = Api::connect(&self.config()).await.unwrap();
        let answer = api.get(path).await.unwrap();
        api.close().await;
        assert_eq!(answer.status, 200, "{path}: {:?}", answer.body);
        answer.body
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

/// `edge-client` with `args`, without the user's environment; stdio piped.
fn edge_client(args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edge-client"));
    command
        .args(args)
        .env_remove("EDGE_SERVER")
        .env_remove("EDGE_CA")
        .env_remove("EDGE_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A child process that is killed if the test ends before it does.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Running {
    fn sigint(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (at most `limit`) for the process to exit.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < limit, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `command` to its end on a blocking thread.
async fn output(mut command: Command) -> std::process::Output {
    command.stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// `n` port records as NDJSON, keyed from `P{first}`.
fn ports_ndjson(first: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in first..first + n {
        let line = serde_json::json!({"name": format!("Port {i}"), "country": "Testland",
            "coordinates": [1.5, 2.5], "unlocs": [format!("P{i:06}")]});
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Reads lines from `reader` on a thread, handing each over.
fn lines(reader: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (at most 30 s) for a line matching `wanted`; returns every line read so far.
fn until(
    rx: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|l| wanted(l)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no {what} within 30 s: {seen:#?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_job_prints_what_was_committed_and_exits_130() {
    let server = TestServer::start(|_| {}).await;
    let mut args = vec!["upload".into(), "-".into(), "--task".into(), "ports".into()];
    args.extend(["--format".into(), "ndjson".into(), "--json".into()]);
    args.extend(server.args());
    let mut child = Running(edge_client(&args).spawn().unwrap());
    let mut stdin = child.0.stdin.take().unwrap();
    let stdout = lines(child.0.stdout.take().unwrap());
    let mut stderr = child.0.stderr.take().unwrap();
    // 2,000 records, and the upload stays open.
    stdin.write_all(&ports_ndjson(0, 2000)).unwrap();
    stdin.flush().unwrap();
    let mut events = Vec::new();
    until(&stdout, &mut events, "committed 2000", |line| {
        line.contains(r#""event":"committed","records":2000"#)
    });

    let interrupted = Instant::now();
    child.sigint();
    let status = child.wait(Duration::from_secs(10));
    let took = interrupted.elapsed();
    assert_eq!(status.code(), Some(130), "{events:#?}");
    // The server's answer came, not the client's timeout.
    assert!(took < edge_client::upload::CANCEL_WAIT, "{took:?}");
    drop(stdin);
    while let Ok(line) = stdout.recv_timeout(Duration::from_secs(5)) {
        events.push(line);
    }
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(
        (&last["event"], &last["code"], &last["committed"]),
        (&"failed".into(), &"cancelled".into(), &2000.into()),
        "{events:#?}"
    );
    let mut said = String::new();
    stderr.read_to_string(&mut said).unwrap();
    assert!(
        said.contains("stdin: cancelled: 2000 records committed"),
        "{said}"
    );

    // The server ended the job at once, in its history.
    let jobs = server.get("/v1/jobs").await;
    let job = &jobs["items"][0];
    assert_eq!(
        (&job["outcome"], &job["code"], &job["committed"]),
        (&"failed".into(), &"cancelled".into(), &2000.into()),
        "{job}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_quits_at_once() {
    // One job slot, held by another job: the next job's reset is not read (no final event
    // comes), so a single Ctrl-C waits CANCEL_WAIT for it.
    let server = TestServer::start(|config| config.jobs.max_running = 1).await;
    let client = Client::connect(&server.config()).await.unwrap();
    let (mut holder_tx, holder_rx) = tokio::io::duplex(64 * 1024);
    let mut header = JobHeader::new("stats");
    header.format = Some(edge_proto::Format::Lines);
    let holder = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .upload(UploadJob::new(header, Box::new(holder_rx)), |_| {})
                .await
        })
    };
    tokio::io::AsyncWriteExt::write_all(&mut holder_tx, b"1\n2\n")
        .await
        .unwrap();

    let mut args = vec!["upload".into(), "-".into(), "--task".into(), "stats".into()];
    args.extend(["--format".into(), "lines".into()]);
    args.extend(server.args());
    let start = |times: usize| {
        let args = args.clone();
        tokio::task::spawn_blocking(move || {
            let mut child = Running(edge_client(&args).spawn().unwrap());
            let mut stdin = child.0.stdin.take().unwrap();
            // Once 1 MiB is written (more than the pipe holds), the client is sending.
            stdin.write_all(&b"7\n".repeat(512 * 1024)).unwrap();
            let interrupted = Instant::now();
            for _ in 0..times {
                child.sigint();
                std::thread::sleep(Duration::from_millis(200));
            }
            let status = child.wait(Duration::from_secs(10));
            let took = interrupted.elapsed();
            let mut said = String::new();
            child
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut said)
                .unwrap();
            (status.code(), took, said)
        })
    };
    let (code, took, said) = start(1).await.unwrap();
    assert_eq!(code, Some(130), "{said}");
    assert!(took >= edge_client::upload::CANCEL_WAIT, "{took:?}: {said}");
    assert!(said.contains("did not confirm"), "{said}");

    let (code, took, said) = start(2).await.unwrap();
    assert_eq!(code, Some(130), "{said}");
    assert!(
        took < edge_client::upload::CANCEL_WAIT,
        "the second Ctrl-C quits at once: {took:?}: {said}"
    );

    drop(holder_tx);
    let held = holder.await.unwrap().unwrap();
    assert_eq!(held.last.name(), "done");
    client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_past_the_servers_job_limit_are_queued_and_all_run() {
    // One job at once per subject; another job of the same subject holds it at first. The
    // start rate is out of the way: the probes below must not use up its burst (a holder
    // refused for the rate, on a loaded machine, would never hold the place).
    let server = TestServer::start(|config| {
        config.limits.max_jobs_per_sub = 1;
        config.limits.job_starts_per_sec = 1000.0;
        config.limits.job_start_burst = 1000;
    })
    .await;
    let client = Client::connect(&server.config()).await.unwrap();
    let (mut holder_tx, holder_rx) = tokio::io::duplex(64 * 1024);
    let mut header = JobHeader::new("stats");
    header.format = Some(edge_proto::Format::Lines);
    let (accepted, mut holding) = tokio::sync::mpsc::unbounded_channel();
    let holder = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .upload(
                    UploadJob::new(header, Box::new(holder_rx)),
                    move |event: &Event| {
                        let _ = accepted.send(event.clone());
                    },
                )
                .await
        })
    };
    tokio::io::AsyncWriteExt::write_all(&mut holder_tx, b"1\n")
        .await
        .unwrap();
    // It holds the place once the server accepted it (a job is accepted only once admitted).
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), holding.recv())
        .await
        .expect("the holder's first event within 30 s");
    assert!(
        matches!(first, Some(Event::Accepted { .. })),
        "the holder was not accepted: {first:?}"
    );
    // A job of the same subject is refused meanwhile.
    let probe = Client::connect(&server.config()).await.unwrap();
    let mut header = JobHeader::new("stats");
    header.format = Some(edge_proto::Format::Lines);
    let body = Box::new(std::io::Cursor::new(b"1\n".to_vec()));
    let result = probe
        .upload(UploadJob::new(header, body), |_| {})
        .await
        .unwrap();
    let Event::Rejected { message, .. } = &result.last else {
        panic!("a job beside the holder was not refused: {:?}", result.last)
    };
    assert!(message.contains("max_jobs_per_sub"), "{message}");
    probe.close().await;

    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["upload".into(), "--task".into(), "ports".into()];
    for i in 0..5 {
        let file = dir.path().join(format!("p{i}.ndjson"));
        std::fs::write(&file, ports_ndjson(i * 1000, 300)).unwrap();
        args.push(file.display().to_string());
    }
    args.push("-".into());
    args.extend(["--format".into(), "ndjson".into()]);
    args.extend(server.args());
    let mut child = Running(edge_client(&args).spawn().unwrap());
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all(&ports_ndjson(9000, 250)).unwrap();
    drop(stdin);
    let stderr = lines(child.0.stderr.take().unwrap());
    let mut log = Vec::new();
    until(&stderr, &mut log, "a queued job", |line| {
        line.contains(": queued (")
    });
    // The place frees: the queued files run, one at a time.
    drop(holder_tx);
    assert_eq!(holder.await.unwrap().unwrap().last.name(), "done");
    let status = tokio::task::spawn_blocking(move || child.wait(Duration::from_secs(60)))
        .await
        .unwrap();
    while let Ok(line) = stderr.recv_timeout(Duration::from_secs(5)) {
        log.push(line);
    }
    let log = log.join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    for i in 0..5 {
        assert!(
            log.contains(&format!("p{i}.ndjson: done: 300 records, 300 committed")),
            "{log}"
        );
    }
    assert!(
        log.contains("stdin: done: 250 records, 250 committed"),
        "stdin is sent again in full: {log}"
    );
    assert!(!log.contains("rejected"), "{log}");
    let jobs = server.get("/v1/jobs?limit=100").await;
    let done = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|job| job["task"] == "ports" && job["outcome"] == "done")
        .count();
    assert_eq!(done, 6, "{jobs}");
    client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_expired_token_is_found_before_connecting() {
    let server = TestServer::start(|_| {}).await;
    // Nobody listens there: the client says what is wrong with the token without trying.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("127.0.0.1:{}", dead.local_addr().unwrap().port());
    drop(dead);
    let upload = |token: Option<String>| {
        let mut args: Vec<String> = ["upload", "--task", "stats", "-", "--server", &nowhere]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(token) = token {
            args.extend(["--token".into(), token]);
        }
        edge_client(&args)
    };
    let out = output(upload(None)).await;
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no token: pass --token or set EDGE_TOKEN"),
        "{said}"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"sub": "old", "exp": now - 7200, "iss": "edge",
        "aud": "edge", "jti": "x", "scope": ALL_SCOPES});
    let expired = server.keys().sign(&claims).unwrap();
    let out = output(upload(Some(expired.clone()))).await;
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("the token expired at") && said.contains("(2h ago)"),
        "{said}"
    );
    let mut jobs: Vec<String> = ["jobs", "--server", &nowhere, "--token", &expired]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = output(edge_client(&jobs)).await;
    assert_eq!(out.status.code(), Some(2), "the read commands too");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the token expired at"));
    jobs.truncate(3);
    jobs[0] = "tasks".into();
    let out = output(edge_client(&jobs)).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_port_is_told_within_seconds_with_a_hint() {
    let server = TestServer::start(|_| {}).await;
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("127.0.0.1:{}", dead.local_addr().unwrap().port());
    drop(dead);
    let mut args: Vec<String> = ["upload", "--task", "stats", "-", "--server", &nowhere]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--ca".into(), server.ca().display().to_string()]);
    args.extend(["--token".into(), server.token()]);
    let started = Instant::now();
    let out = output(edge_client(&args)).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(took < Duration::from_secs(6), "{took:?}: {said}");
    assert!(
        said.contains("no answer within 3 s on UDP port")
            && said.contains("is `edge serve` running there?")
            && said.contains("UDP"),
        "{said}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_mismatch_names_the_certificates_names_and_how_to_add_one() {
    let dir = tempfile::tempdir().unwrap();
    let issued = rcgen::generate_simple_self_signed(vec!["edge.invalid".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start(|config| {
        config.tls.cert = Some(cert.clone());
        config.tls.key = Some(key.clone());
    })
    .await;
    let mut args: Vec<String> = vec!["upload".into(), "--task".into(), "stats".into()];
    args.extend(["-".into(), "--server".into(), server.url()]);
    args.extend(["--ca".into(), cert.display().to_string()]);
    args.extend(["--token".into(), server.token()]);
    let out = output(edge_client(&args)).await;
    assert_eq!(out.status.code(), Some(3));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("it is for edge.invalid but not for `127.0.0.1`")
            && said.contains("edge certs dev --name 127.0.0.1"),
        "{said}"
    );
    assert!(!said.contains("pass --ca"), "the CA is right: {said}");

    // With the CA of another server: which CA is wrong.
    let other = TestServer::start(|_| {}).await;
    let mut args: Vec<String> = vec!["upload".into(), "--task".into(), "stats".into()];
    args.extend(["-".into(), "--server".into(), server.url()]);
    args.extend(["--ca".into(), other.ca().display().to_string()]);
    args.extend(["--token".into(), server.token()]);
    let out = output(edge_client(&args)).await;
    assert_eq!(out.status.code(), Some(3));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "it is not signed by the CA in {}",
            other.ca().display()
        )),
        "{said}"
    );
    other.stop().await;
    server.stop().await;
}

/// The column at which `header` starts in the first line of `table`, and the same column's
/// start in every row.
fn column_starts(table: &str, header: &str) -> usize {
    let first = table.lines().next().unwrap();
    first
        .find(header)
        .unwrap_or_else(|| panic!("no {header} in {first}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_have_aligned_columns_under_headers_and_jobs_show_their_code() {
    let server = TestServer::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("ports.ndjson");
    std::fs::write(&good, ports_ndjson(0, 3)).unwrap();
    let bad = dir.path().join("broken.json");
    std::fs::write(&bad, b"[{\"name\": \"x\", \"unlocs\": [\"XXAAA\"]}, {{{").unwrap();
    for file in [&good, &bad] {
        let mut args = vec!["upload".into(), "--task".into(), "ports".into()];
        args.push(file.display().to_string());
        args.extend(server.args());
        output(edge_client(&args)).await;
    }
    let read = |command: &[&str]| {
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        args.extend(server.args());
        output(edge_client(&args))
    };
    let out = read(&["jobs"]).await;
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    let code = column_starts(&table, "CODE");
    assert_eq!(&rows[1][code..code + 12], "syntax_error", "{table}");
    assert_eq!(&rows[2][code..code + 1], "-", "{table}");
    let name = column_starts(&table, "NAME");
    assert!(rows[1][name..].starts_with("broken.json"), "{table}");
    assert!(!table.contains('\t'), "{table}");

    let out = read(&["ports", "list"]).await;
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let country = column_starts(&table, "COUNTRY");
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 5, "a header and four ports: {table}");
    for row in &rows[1..] {
        assert!(
            row[country..].starts_with("Testland") || row[country..].starts_with('-'),
            "{table}"
        );
    }

    let out = read(&["tasks"]).await;
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let formats = column_starts(&table, "FORMATS");
    assert!(table.lines().next().unwrap().starts_with("TASK"), "{table}");
    for row in table.lines().skip(1) {
        assert!(
            ["json", "lines", "raw"]
                .iter()
                .any(|format| row[formats..].starts_with(format)),
            "{table}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_prints_only_what_did_not_end_clean_and_json_survives_a_closed_pipe() {
    let server = TestServer::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.txt");
    let bad = dir.path().join("bad.txt");
    std::fs::write(&good, "1\n2\n3\n").unwrap();
    std::fs::write(&bad, "1\nx\n3\n").unwrap();
    let upload = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["upload".into(), "--task".into(), "stats".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(server.args());
        edge_client(&args)
    };
    let good = good.display().to_string();
    let bad = bad.display().to_string();
    let out = output(upload(&["--quiet", &good])).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice()),
        (&b""[..], &b""[..])
    );
    let out = output(upload(&["-q", &good, &bad])).await;
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 1, "{said}");
    assert!(
        lines[0].starts_with("bad.txt: done: 3 records, 2 committed, 1 errors"),
        "{said}"
    );

    // `| head -1`: the reader goes after the first event; the client ends quietly.
    let mut big = Vec::new();
    for i in 0..200_000 {
        big.extend_from_slice(format!("{i}\n").as_bytes());
    }
    let file = dir.path().join("big.txt");
    std::fs::write(&file, big).unwrap();
    let mut command = upload(&["--json", &file.display().to_string()]);
    command.stdin(Stdio::null());
    let mut child = Running(command.spawn().unwrap());
    let stdout = child.0.stdout.take().unwrap();
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert!(first.contains(r#""event":"accepted""#), "{first}");
    // (stdout is dropped here: the pipe is closed)
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait(Duration::from_secs(30));
        let mut said = String::new();
        child
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut said)
            .unwrap();
        (status, said)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0), "{}", status.1);
    assert!(!status.1.contains("panicked"), "{}", status.1);
    server.stop().await;
}
