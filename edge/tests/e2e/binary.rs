//! The real `edge` binary, as a user runs it: it prints its ready line, serves, stops on
//! SIGTERM with exit code 0 after telling running jobs' clients, and reads ports back.

use crate::util::*;
use edge_client::{Client, ClientConfig, UploadJob};
use edge_proto::{ErrorCode, Event, Format, JobHeader};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `edge serve` child process, killed if a test fails before stopping it.
pub(crate) struct ServeProcess {
    child: Child,
    addr: String,
}

impl ServeProcess {
    pub(crate) fn start(dir: &Path) -> ServeProcess {
        ServeProcess::start_with(dir, &[])
    }

    /// Starts `edge serve` with extra environment variables (settings `EDGE_<SECTION>_<KEY>`).
    pub(crate) fn start_with(dir: &Path, env: &[(&str, &Path)]) -> ServeProcess {
        ServeProcess::spawn(dir, &[], env, "warn", Stdio::inherit(), "127.0.0.1:0")
    }

    /// Starts `edge serve --log-format FORMAT` logging at debug level into `log`.
    pub(crate) fn start_logging(dir: &Path, format: &str, log: std::fs::File) -> ServeProcess {
        ServeProcess::spawn(
            dir,
            &["--log-format", format],
            &[],
            "debug",
            log.into(),
            "127.0.0.1:0",
        )
    }

    /// Starts `edge serve --listen ADDR` (e.g. again on the port of one that was killed).
    pub(crate) fn start_on(dir: &Path, listen: std::net::SocketAddr) -> ServeProcess {
        ServeProcess::start_on_with(dir, listen, &[])
    }

    /// [`ServeProcess::start_on`] with extra environment variables.
    pub(crate) fn start_on_with(
        dir: &Path,
        listen: std::net::SocketAddr,
        env: &[(&str, &Path)],
    ) -> ServeProcess {
        let listen = listen.to_string();
        ServeProcess::spawn(dir, &[], env, "warn", Stdio::inherit(), &listen)
    }

    fn spawn(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &Path)],
        rust_log: &str,
        stderr: Stdio,
        listen: &str,
    ) -> ServeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edge"))
            .args(["serve", "--listen", listen])
            .args(args)
            .envs(env.iter().copied())
            .env("EDGE_DATA_DIR", dir.join("data"))
            .env("EDGE_CERTS_DIR", dir.join("certs"))
            .env("RUST_LOG", rust_log)
            // Jobs still running a second after SIGTERM are stopped (the default is 30 s).
            .env("EDGE_JOBS_SHUTDOWN_GRACE_SECS", "1")
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("edge starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("edge prints its ready line");
        let addr = line
            .trim()
            .strip_prefix("edge listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        ServeProcess { child, addr }
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.addr.parse().expect("edge prints a socket address")
    }

    pub(crate) fn client_config(&self, dir: &Path) -> ClientConfig {
        self.client_config_for(dir, "ports:write")
    }

    /// A client of this server whose token holds `scope`.
    pub(crate) fn client_config_for(&self, dir: &Path, scope: &str) -> ClientConfig {
        // The token comes from `edge token issue`, as a user mints one.
        let out = edge(
            dir,
            &[
                "token", "issue", "--sub", "ops", "--scope", scope, "--ttl", "10m",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        ClientConfig {
            server: format!("https://{}", self.addr),
            ca: Some(dir.join("certs/ca.pem")),
            token: Some(token),
        }
    }

    /// Sends `signal` (e.g. "HUP") to the server.
    pub(crate) fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Sends SIGTERM and waits for the exit status.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "edge did not exit within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn edge(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(args)
        .env("EDGE_DATA_DIR", dir.join("data"))
        .env("EDGE_CERTS_DIR", dir.join("certs"))
        .current_dir(dir)
        .output()
        .expect("edge runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stores_ports_stops_on_sigterm_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(dir.path());
    let client = Client::connect(&server.client_config(dir.path()))
        .await
        .expect("connects");
    let body = std::fs::read(ports_json()).unwrap();
    let (result, _) = upload(&client, "ports", None, body).await;
    assert!(
        matches!(
            result.last,
            Event::Done {
                committed: 1634,
                ..
            }
        ),
        "{:?}",
        result.last
    );
    client.close().await;

    let status = server.terminate();
    assert!(status.success(), "edge exits 0 on SIGTERM: {status:?}");

    let out = edge(dir.path(), &["ports", "get", "AEAJM"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(port["name"], "Ajman");
    assert_eq!(
        port["coordinates"],
        serde_json::json!([55.5136433, 25.4052165])
    );

    let out = edge(
        dir.path(),
        &[
            "ports",
            "list",
            "--country",
            "united arab emirates",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"AEAJM") && keys.contains(&"AEDXB"),
        "{keys:?}"
    );
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "key order");

    let out = edge(dir.path(), &["ports", "get", "XXXXX"]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_running_job_with_a_final_event_and_keeps_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(dir.path());
    let client = Client::connect(&server.client_config(dir.path()))
        .await
        .expect("connects");
    // A body that never ends by itself: the job is running when the signal comes.
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let feeder = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let chunk = synthetic_ports_ndjson(2_000);
        loop {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut header = JobHeader::new("ports");
    header.format = Some(Format::Ndjson);
    let job = UploadJob::new(header, Box::new(reader));
    let (committed_tx, mut committed_rx) = tokio::sync::mpsc::unbounded_channel();
    let draining = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = draining.clone();
    let upload = tokio::spawn(async move {
        client
            .upload(job, move |event: &Event| match event {
                Event::Committed { records, .. } => {
                    let _ = committed_tx.send(*records);
                }
                Event::Draining { grace_secs } => *seen.lock().unwrap() = Some(*grace_secs),
                _ => {}
            })
            .await
    });
    // Wait until something is committed, then stop the server.
    let first = tokio::time::timeout(Duration::from_secs(20), committed_rx.recv())
        .await
        .unwrap();
    assert!(first.unwrap_or(0) > 0);
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let result = upload
        .await
        .unwrap()
        .expect("the client gets a final event");
    feeder.abort();
    let Event::Failed {
        code, committed, ..
    } = result.last
    else {
        panic!("{:?}", result.last)
    };
    assert_eq!(code, ErrorCode::Shutdown);
    assert!(committed > 0);
    assert_eq!(
        *draining.lock().unwrap(),
        Some(1),
        "the client was told the server is draining, and how long the job has"
    );
    // Every committed record is in the store (keys repeat per chunk, so compare counts of
    // distinct keys: at least min(committed, 2000)).
    let stored = all_ports(&dir.path().join("data/edge.redb"));
    assert_eq!(stored.len() as u64, committed.min(2_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_while_an_upload_goes_on() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    // Two unrelated dev identities; the server starts with the first as its "real" certificate.
    for name in ["a", "b"] {
        let out = edge(dir.path(), &["--certs-dir", name, "certs", "dev"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let install = |from: &str| {
        for (file, to) in [
            ("server.pem", "fullchain.pem"),
            ("server.key", "privkey.pem"),
        ] {
            let tmp = live.join(format!("{to}.new"));
            std::fs::copy(dir.path().join(from).join(file), &tmp).unwrap();
            std::fs::rename(&tmp, live.join(to)).unwrap();
        }
    };
    install("a");
    let server = ServeProcess::start_with(
        dir.path(),
        &[
            ("EDGE_TLS_CERT", &live.join("fullchain.pem")),
            ("EDGE_TLS_KEY", &live.join("privkey.pem")),
        ],
    );
    let trusting = |ca: &str| ClientConfig {
        ca: Some(dir.path().join(ca).join("ca.pem")),
        ..server.client_config(dir.path())
    };
    let client = Client::connect(&trusting("a")).await.expect("CA a works");
    let (mut writer, reader) = tokio::io::duplex(1024);
    let port = |code: &str| format!("{{\"name\":\"Port {code}\",\"unlocs\":[\"{code}\"]}}\n");
    writer.write_all(port("XXAAA").as_bytes()).await.unwrap();
    let mut header = JobHeader::new("ports");
    header.format = Some(Format::Ndjson);
    let running = tokio::spawn(async move {
        let job = UploadJob::new(header, Box::new(reader));
        client.upload(job, |_| {}).await
    });

    install("b");
    server.signal("HUP");
    // The reload has happened once a client that trusts only the new CA gets in.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let renewed = loop {
        let attempt = Client::connect(&trusting("b")).await;
        if attempt.is_ok() || tokio::time::Instant::now() > deadline {
            break attempt;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        renewed.is_ok(),
        "a new connection gets the new certificate: {:?}",
        renewed.err()
    );
    let stale = Client::connect(&trusting("a")).await;
    assert!(stale.is_err(), "the old certificate is no longer served");

    // The upload that began under the old certificate goes on and completes.
    writer.write_all(port("XXBBB").as_bytes()).await.unwrap();
    writer.write_all(port("XXCCC").as_bytes()).await.unwrap();
    drop(writer);
    let result = running.await.unwrap().expect("the upload completes");
    assert!(
        matches!(result.last, Event::Done { records: 3, .. }),
        "{:?}",
        result.last
    );
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_backup_copies_the_store_while_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(dir.path());
    let client = Client::connect(&server.client_config(dir.path()))
        .await
        .expect("connects");
    let body = std::fs::read(ports_json()).unwrap();
    let (result, _) = upload(&client, "ports", Some(Format::Json), body).await;
    assert!(matches!(
        result.last,
        Event::Done {
            committed: 1634,
            ..
        }
    ));
    let out = edge(dir.path(), &["backup", "backup.redb"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("backup.redb"));
    let again = edge(dir.path(), &["backup", "backup.redb"]);
    assert!(
        !again.status.success(),
        "an existing file is never overwritten"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    // The server goes on; the copy is a store of its own.
    let (result, _) = upload(
        &client,
        "ports",
        Some(Format::Ndjson),
        b"{\"name\":\"Later\",\"unlocs\":[\"ZZLAT\"]}\n".to_vec(),
    )
    .await;
    assert!(matches!(result.last, Event::Done { committed: 1, .. }));
    client.close().await;
    assert!(server.terminate().success());
    let copy = dir.path().join("backup.redb");
    assert!(edge_tasks::Store::check_integrity(&copy).unwrap());
    assert_eq!(
        all_ports(&copy).len(),
        1634,
        "the snapshot, without what came later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_server_killed_and_restarted_learn_at_once_that_their_connection_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeProcess::start(dir.path());
    let addr = server.addr();
    let ca = dir.path().join("certs/ca.pem");
    let (_endpoint, connection) = crate::http3::raw_h3_connection_to(&ca, addr).await;
    // kill -9, and a new server on the same port with the same data dir.
    drop(server);
    let _server = ServeProcess::start_on(dir.path(), addr);
    let asked = std::time::Instant::now();
    // The client speaks; the new server knows nothing of the connection and resets it, with
    // the token the old one gave (the key is kept in the data dir).
    if let Ok(mut stream) = connection.open_uni().await {
        let _ = stream.write_all(b"are you there?").await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("the client learns within seconds, not after its idle timeout");
    assert!(
        matches!(closed, quinn::ConnectionError::Reset),
        "{closed:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert!(dir.path().join("data/quic-reset.key").is_file());
}
