//! The real `edge-client` binary against a real server: output modes and exit codes.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

async fn edge_client(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(client_binary())
            .args(&args)
            .env_remove("EDGE_SERVER")
            .env_remove("EDGE_CA")
            .env_remove("EDGE_TOKEN")
            .output()
            .expect("edge-client runs")
    })
    .await
    .unwrap()
}

fn args(server: &TestServer, rest: &[&str]) -> Vec<String> {
    let mut all = vec![
        "upload".to_owned(),
        "--server".to_owned(),
        format!("https://127.0.0.1:{}", server.addr.port()),
        "--ca".to_owned(),
        server.ca().display().to_string(),
        "--token".to_owned(),
        server.token(ALL_SCOPES),
    ];
    all.extend(rest.iter().map(|s| s.to_string()));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_several_files_and_exits_by_the_worst_outcome() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.txt");
    let bad = dir.path().join("bad.txt");
    std::fs::write(&good, "1\n2\n3\n").unwrap();
    std::fs::write(&bad, "1\nx\n3\n").unwrap();
    let ports = ports_json().display().to_string();

    let out = edge_client(args(&server, &["--task", "ports", &ports])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("ports.json: done: 1634 records, 1634 committed, 0 errors"),
        "{log}"
    );

    let good = good.display().to_string();
    let bad = bad.display().to_string();
    let out = edge_client(args(&server, &["--task", "stats", &good, &bad])).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "record errors: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("bad.txt: record 1 at byte 2: invalid_record"),
        "{log}"
    );
    assert!(log.contains("good.txt: done: 3 records"), "{log}");

    let out = edge_client(args(&server, &["--task", "nonesuch", &good])).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "rejected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("rejected (unknown_task)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_prints_the_raw_events() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("n.txt");
    std::fs::write(&file, "4\n8\n").unwrap();
    let out = edge_client(args(
        &server,
        &["--task", "stats", "--json", &file.display().to_string()],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is one JSON event"))
        .collect();
    assert_eq!(lines.first().unwrap()["event"], "accepted");
    let done = lines.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["summary"]["mean"], 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_problems_exit_3_and_say_what_to_do() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("n.txt");
    std::fs::write(&file, "1\n").unwrap();
    let file = file.display().to_string();

    // No --ca: the dev certificate is not trusted.
    let no_ca = vec![
        "upload".to_owned(),
        "--server".to_owned(),
        format!("https://127.0.0.1:{}", server.addr.port()),
        "--task".to_owned(),
        "stats".to_owned(),
        "--token".to_owned(),
        server.token(ALL_SCOPES),
        file.clone(),
    ];
    let out = edge_client(no_ca).await;
    assert_eq!(out.status.code(), Some(3));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("not trusted") && message.contains("--ca certs/ca.pem"),
        "{message}"
    );

    // Nobody listening.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let nobody = vec![
        "upload".to_owned(),
        "--server".to_owned(),
        format!("127.0.0.1:{port}"),
        "--ca".to_owned(),
        server.ca().display().to_string(),
        "--task".to_owned(),
        "stats".to_owned(),
        "--token".to_owned(),
        server.token(ALL_SCOPES),
        file,
    ];
    let out = edge_client(nobody).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is `edge serve` running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `edge-client <command...> --server .. --ca ..`.
fn read_args(server: &TestServer, command: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = command.iter().map(|s| s.to_string()).collect();
    all.extend([
        "--server".to_owned(),
        format!("https://127.0.0.1:{}", server.addr.port()),
        "--ca".to_owned(),
        server.ca().display().to_string(),
        "--token".to_owned(),
        server.token(ALL_SCOPES),
    ]);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_ports_jobs_and_tasks_over_http3() {
    let server = TestServer::start().await;
    let ports = ports_json().display().to_string();
    let out = edge_client(args(&server, &["--task", "ports", &ports])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = edge_client(read_args(&server, &["ports", "get", "AEAJM"])).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(port["name"], "Ajman");

    let out = edge_client(read_args(&server, &["ports", "get", "NOPE1"])).await;
    assert_eq!(out.status.code(), Some(1), "not found");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));

    let out = edge_client(read_args(
        &server,
        &[
            "ports",
            "list",
            "--country",
            "United Arab Emirates",
            "--limit",
            "2",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with(
            "KEY    NAME       COUNTRY               COORDINATES\nAEAJM  Ajman      United Arab Emirates  55.5136433,25.4052165\nAEAUH  Abu Dhabi  "
        ),
        "{table}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("more: --after AEAUH"), "{stderr}");

    let out = edge_client(read_args(&server, &["ports", "list", "--colour", "red"])).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "an option the task does not take"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--country"),
        "suggests the task's filter: {stderr}"
    );
    let out = edge_client(read_args(&server, &["stats", "list"])).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("task `stats` keeps nothing to read"),
        "{stderr}"
    );

    let out = edge_client(read_args(&server, &["jobs", "--json"])).await;
    assert_eq!(out.status.code(), Some(0));
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["items"][0]["name"], "ports.json");
    assert_eq!(page["items"][0]["committed"], 1634);

    let out = edge_client(read_args(&server, &["tasks"])).await;
    assert_eq!(out.status.code(), Some(0));
    let tasks = String::from_utf8_lossy(&out.stdout);
    assert!(
        tasks.contains("ports   json,ndjson,csv        ")
            && tasks.contains("stats   lines,json,ndjson,csv  ")
            && tasks.contains("primes  lines,json,ndjson,csv  "),
        "{tasks}"
    );
}

/// The format of the `accepted` event in `--json` output.
fn accepted_format(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first: serde_json::Value = stdout
        .lines()
        .next()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| {
            panic!(
                "no event: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(first["event"], "accepted", "{stdout}");
    first["format"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_extension_names_the_format_unless_format_is_given() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // One column: no comma on the first line, so sniffing alone would say `lines`.
    let body = "price\n10\n20\n30\n";
    let csv = dir.path().join("prices.CSV");
    let unknown = dir.path().join("prices.dat");
    std::fs::write(&csv, body).unwrap();
    std::fs::write(&unknown, body).unwrap();
    let run = |file: &Path, extra: &[&str]| {
        let mut rest = vec!["--task", "stats", "--param", "column=price", "--json"];
        rest.extend_from_slice(extra);
        let file = file.display().to_string();
        let mut all = args(&server, &rest);
        all.push(file);
        edge_client(all)
    };

    let out = run(&csv, &[]).await;
    assert_eq!(accepted_format(&out), "csv", "from the extension");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let done: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (done["event"].as_str(), done["summary"]["mean"].as_f64()),
        (Some("done"), Some(20.0)),
        "{stdout}"
    );

    let out = run(&csv, &["--format", "lines"]).await;
    assert_eq!(accepted_format(&out), "lines", "an explicit --format wins");

    let out = run(&unknown, &[]).await;
    assert_eq!(
        accepted_format(&out),
        "lines",
        "no known extension: sniffed"
    );
}

/// Connects with the client library, trusting `ca`, and returns why the handshake failed.
async fn refusal(server: &TestServer, host: &str, ca: PathBuf) -> edge_client::Untrusted {
    let config = edge_client::ClientConfig {
        server: format!("https://{host}:{}", server.addr.port()),
        ca: Some(ca),
        token: None,
    };
    match edge_client::Client::connect(&config).await {
        Err(edge_client::ClientError::NotTrusted { reason, .. }) => reason,
        Err(other) => panic!("not a certificate refusal: {other:?}"),
        Ok(_) => panic!("the handshake succeeded"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refusals_are_classified_by_the_verifiers_error() {
    // A CA that did not sign the server's certificate.
    let server = TestServer::start().await;
    let other = tempfile::tempdir().unwrap();
    let unrelated = other.path().join("unrelated.pem");
    let stranger = rcgen::generate_simple_self_signed(vec!["stranger.invalid".to_owned()]).unwrap();
    std::fs::write(&unrelated, stranger.cert.pem()).unwrap();
    assert_eq!(
        refusal(&server, "127.0.0.1", unrelated).await,
        edge_client::Untrusted::UnknownIssuer
    );
    // Another dev CA (as after `edge certs` regenerated them elsewhere): the same name, another
    // key, so the certificate's signature does not verify.
    let paths = edge::tls::DevPaths::new(&other.path().join("certs"));
    edge::tls::generate_dev(&paths, &[]).unwrap();
    assert_eq!(
        refusal(&server, "127.0.0.1", paths.ca_cert.clone()).await,
        edge_client::Untrusted::BadSignature
    );
    server.stop().await;

    // A trusted certificate for another name than the one connected to.
    let dir = tempfile::tempdir().unwrap();
    let issued = rcgen::generate_simple_self_signed(vec!["edge.invalid".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, issued.cert.pem()).unwrap();
    std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|config| {
        config.tls.cert = Some(cert.clone());
        config.tls.key = Some(key.clone());
    })
    .await;
    let reason = refusal(&server, "127.0.0.1", cert).await;
    let edge_client::Untrusted::NameMismatch {
        expected,
        presented,
    } = reason
    else {
        panic!("{reason:?}")
    };
    assert_eq!(expected, "127.0.0.1");
    assert!(
        presented.iter().any(|name| name.contains("edge.invalid")),
        "{presented:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_has_closed_its_connection() {
    // The client no longer waits out QUIC's draining period before it exits (that cost every
    // command 80-90 ms); it still must send its CONNECTION_CLOSE first, or the server would
    // hold the connection until its idle timeout.
    let server = TestServer::start_with(|config| {
        config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        config.transport.idle_timeout_secs = 60;
    })
    .await;
    let admin = server.admin.expect("the admin listener is on");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("n.txt");
    std::fs::write(&file, "1\n").unwrap();
    let upload = args(&server, &["--task", "stats", &file.display().to_string()]);
    let mut tasks = upload.clone();
    tasks[0] = "tasks".to_owned();
    tasks.truncate(7);
    for command in [upload, tasks] {
        let out = edge_client(command).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, text) = tokio::task::spawn_blocking(move || admin_get(admin, "/metrics"))
            .await
            .unwrap();
        let open = metric(&text, "edge_connections_open");
        if open == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} connections still open 10 s after their clients exited (idle timeout 60 s)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
