//! Resuming cut-off jobs over the real binaries: `edge-client` killed mid-upload and resumed
//! with `edge-client resume JOB FILE`; the server killed (`kill -9`) and restarted, and the
//! path cut (a UDP forwarder that drops everything for a while), with `edge-client upload`
//! resuming by itself; two clients resuming one job at once; a resume with another file.
//! After each, the `stats` figures (bit for bit) and the store equal one clean upload's.
//!
//! Where the cuts land inside the body (mid-record, mid-UTF-8, between a commit and its
//! event) is covered byte by byte by the pipeline's own resume tests (tasks/tests/resume.rs,
//! thirty random cuts per task); here the cuts are the real ones a user meets, at random
//! moments of an upload.

use crate::binary::ServeProcess;
use crate::util::*;
use edge_proto::{ErrorCode, Event};
use edge_tasks::stats::Welford;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::window::forwarder;

/// How long any one wait of these tests may take.
const PATIENCE: Duration = Duration::from_secs(120);

/// The server's receive window on the slow path: with [`ONE_WAY`] each way, about 3 MB/s,
/// so that an upload of a few MB runs long enough to be cut at a random moment.
const WINDOW: u64 = 64 * 1024;

/// The delay of the slow path each way.
const ONE_WAY: Duration = Duration::from_millis(10);

/// Lines of the numbers files: about 6 MB.
const LINES: usize = 700_000;

/// A server whose receive window stays at [`WINDOW`], with `tune` applied too.
async fn slow_server(tune: impl FnOnce(&mut edge::config::Config)) -> TestServer {
    TestServer::start_with(|config| {
        config.transport.connection_receive_window = WINDOW;
        config.transport.connection_receive_window_max = WINDOW;
        tune(config);
    })
    .await
}

/// `edge-client`'s exit code for a job `done` with record errors (the numbers files have a
/// few bad lines).
const RECORD_ERRORS: i32 = 1;

/// Numbers one per line: `lines` of them, with a few multi-byte characters in bad lines (so
/// that cuts land inside UTF-8 sequences too), and the figures `stats` must end with.
fn numbers(dir: &Path, lines: usize, seed: u64) -> (PathBuf, serde_json::Value) {
    let mut text = String::with_capacity(lines * 10);
    let mut figures = Welford::default();
    let mut x = seed | 1;
    for i in 0..lines {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if i % 997 == 5 {
            text.push_str("nöt ä nümber\n");
            continue;
        }
        let value = format!("{}.{}", x % 100_000, i % 89);
        figures.push(value.parse().unwrap());
        text.push_str(&value);
        text.push('\n');
    }
    let path = dir.join(format!("numbers-{seed}.txt"));
    std::fs::write(&path, text).unwrap();
    (path, figures.to_json())
}

/// A running `edge-client`, its stdout (`--json` events) read line by line on a thread.
struct ClientProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Event>,
}

impl ClientProcess {
    fn start(args: &[String]) -> ClientProcess {
        ClientProcess::start_with_stdin(args, Stdio::null())
    }

    /// [`ClientProcess::start`] with `stdin` as its standard input.
    fn start_with_stdin(args: &[String], stdin: impl Into<Stdio>) -> ClientProcess {
        let mut child = Command::new(client_binary())
            .args(args)
            .stdin(stdin)
            .env_remove("EDGE_SERVER")
            .env_remove("EDGE_CA")
            .env_remove("EDGE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("edge-client starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        ClientProcess {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads events until one satisfies `wanted` (which it returns).
    fn until(&mut self, what: &str, mut wanted: impl FnMut(&Event) -> bool) -> Event {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no {what} from edge-client; last seen: {:?}",
                    self.seen.last()
                )
            });
            let event = Event::from_line(line.as_bytes()).unwrap();
            self.seen.push(event.clone());
            if wanted(&event) {
                return event;
            }
        }
    }

    /// Waits for the client to exit; returns its status and every event it printed.
    fn finish(mut self) -> (ExitStatus, Vec<Event>) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "edge-client did not end; last seen: {:?}",
                self.seen.last()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(Event::from_line(line.as_bytes()).unwrap());
        }
        (status, std::mem::take(&mut self.seen))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `edge-client COMMAND.. --json --server SERVER --ca CA --token TOKEN`.
fn client_args(command: &[&str], server: &str, ca: &Path, token: &str) -> Vec<String> {
    let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--json".into(),
        "--server".into(),
        server.into(),
        "--ca".into(),
        ca.display().to_string(),
        "--token".into(),
        token.into(),
    ]);
    args
}

fn accepted_job(event: &Event) -> String {
    let Event::Accepted { job, .. } = event else {
        panic!("not accepted: {event:?}")
    };
    job.clone()
}

fn committed_some(event: &Event) -> bool {
    matches!(event, Event::Committed { records, .. } if *records > 0)
}

/// The last event, which must be `done`; its summary.
fn done_summary(events: &[Event]) -> serde_json::Value {
    match events.last() {
        Some(Event::Done { summary, .. }) => summary.clone(),
        other => panic!("the job did not end done: {other:?}"),
    }
}

fn resumed_at(events: &[Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Resumed { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_client_resumes_with_edge_client_resume_and_the_figures_are_exact() {
    let server = slow_server(|_| {}).await;
    let path = forwarder::Forwarder::start(server.addr, ONE_WAY).unwrap();
    let files = tempfile::tempdir().unwrap();
    let (file, expected) = numbers(files.path(), LINES, 11);
    let (other, _) = numbers(files.path(), LINES, 12);
    let address = format!("https://{}", path.addr());
    let token = server.token(ALL_SCOPES);
    let args = |command: &[&str]| client_args(command, &address, &server.ca(), &token);
    let path = file.display().to_string();
    let mut api = edge_client::api::Api::connect(&server.client_config())
        .await
        .unwrap();
    for round in 0..3 {
        let mut upload = ClientProcess::start(&args(&["upload", "--task", "stats", &path]));
        let job = accepted_job(&upload.until("accepted", |e| matches!(e, Event::Accepted { .. })));
        let started = api.get(&format!("/v1/jobs/{job}")).await.unwrap().body["started"].clone();
        assert!(started.is_string(), "{started}");
        let mut commits = 0;
        upload.until("commits", |e| {
            commits += u32::from(committed_some(e));
            commits > round
        });
        // kill -9 of the client: the server keeps the job attached until its idle timeout;
        // the resume takes it over at once.
        upload.kill();
        if round == 0 {
            // Another file is refused: its digest is not the job's.
            let other = other.display().to_string();
            let (status, events) = ClientProcess::start(&args(&["resume", &job, &other])).finish();
            assert!(!status.success());
            assert!(
                matches!(
                    events.last(),
                    Some(Event::Rejected {
                        code: ErrorCode::DigestMismatch,
                        ..
                    })
                ),
                "{:?}",
                events.last()
            );
            // Without a digest, the client sees that the first bytes differ and sends nothing.
            let out = run_client(
                &address,
                &server.ca(),
                &token,
                ["resume", &job, &other, "--no-digest", "--json"],
            );
            assert!(!out.status.success());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("digest_mismatch") && stderr.contains("does not start with"),
                "{stderr}"
            );
        }
        let (status, events) = ClientProcess::start(&args(&["resume", &job, &path])).finish();
        assert_eq!(status.code(), Some(RECORD_ERRORS), "{:?}", events.last());
        let offsets = resumed_at(&events);
        assert!(
            offsets.len() == 1 && offsets[0] > 0,
            "round {round}: {offsets:?}"
        );
        assert_eq!(done_summary(&events), expected, "round {round}");
        // Its history is one record, which says when the job first started.
        let record = api.get(&format!("/v1/jobs/{job}")).await.unwrap().body;
        assert_eq!(record["started"], started, "round {round}: {record}");
        assert_eq!(record["outcome"], "done", "round {round}: {record}");
        assert!(
            matches!(events.last(), Some(Event::Done { bytes, .. }) if *bytes == std::fs::metadata(&file).unwrap().len()),
            "{:?}",
            events.last()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_resume_one_job_at_once_and_one_of_them_finishes_it_exactly() {
    let server = slow_server(|_| {}).await;
    let path = forwarder::Forwarder::start(server.addr, ONE_WAY).unwrap();
    let files = tempfile::tempdir().unwrap();
    let (file, expected) = numbers(files.path(), LINES, 21);
    let address = format!("https://{}", path.addr());
    let token = server.token(ALL_SCOPES);
    let args = |command: &[&str]| client_args(command, &address, &server.ca(), &token);
    let path = file.display().to_string();
    let mut upload = ClientProcess::start(&args(&["upload", "--task", "stats", &path]));
    let job = accepted_job(&upload.until("accepted", |e| matches!(e, Event::Accepted { .. })));
    upload.until("a commit", committed_some);
    upload.kill();
    let first = ClientProcess::start(&args(&["resume", &job, &path]));
    let second = ClientProcess::start(&args(&["resume", &job, &path]));
    let (a, b) = (first.finish(), second.finish());
    let finals: Vec<&Event> = [&a.1, &b.1]
        .iter()
        .filter_map(|events| events.last())
        .collect();
    let done: Vec<&&Event> = finals
        .iter()
        .filter(|e| matches!(e, Event::Done { .. }))
        .collect();
    assert_eq!(done.len(), 1, "exactly one finishes: {finals:?}");
    let Event::Done { summary, .. } = done[0] else {
        unreachable!()
    };
    assert_eq!(summary, &expected);
    let other = finals
        .iter()
        .find(|e| !matches!(e, Event::Done { .. }))
        .unwrap();
    assert!(
        matches!(
            other,
            Event::Failed {
                code: ErrorCode::TakenOver,
                ..
            } | Event::Rejected {
                code: ErrorCode::ResumeExpired,
                ..
            }
        ),
        "the other is taken over (or finds the job finished): {other:?}"
    );
}

/// The `edge` binary on a data dir, its receive window at [`WINDOW`], behind the slow path;
/// killed (`kill -9`) and started again on the same port and data dir at will.
struct Restartable {
    dir: tempfile::TempDir,
    window: String,
    /// The running server (none only while it restarts).
    server: Option<ServeProcess>,
    addr: std::net::SocketAddr,
    path: forwarder::Forwarder,
}

impl Restartable {
    fn start() -> Restartable {
        let dir = tempfile::tempdir().unwrap();
        let window = WINDOW.to_string();
        let any = "127.0.0.1:0".parse().unwrap();
        let server = ServeProcess::start_on_with(dir.path(), any, &Restartable::env(&window));
        let addr = server.addr();
        let path = forwarder::Forwarder::start(addr, ONE_WAY).unwrap();
        Restartable {
            dir,
            window,
            server: Some(server),
            addr,
            path,
        }
    }

    fn server(&self) -> &ServeProcess {
        self.server
            .as_ref()
            .expect("the server runs between restarts")
    }

    fn env(window: &str) -> [(&'static str, &Path); 2] {
        [
            (
                "EDGE_TRANSPORT_CONNECTION_RECEIVE_WINDOW",
                Path::new(window),
            ),
            (
                "EDGE_TRANSPORT_CONNECTION_RECEIVE_WINDOW_MAX",
                Path::new(window),
            ),
        ]
    }

    /// `edge-client upload --task TASK FILE` through the slow path, with `scope`.
    fn upload(&self, task: &str, file: &Path, scope: &str) -> ClientProcess {
        let config = self.server().client_config_for(self.dir.path(), scope);
        ClientProcess::start(&client_args(
            &["upload", "--task", task, &file.display().to_string()],
            &format!("https://{}", self.path.addr()),
            config.ca.as_deref().unwrap(),
            config.token.as_deref().unwrap(),
        ))
    }

    /// `kill -9`, and the server again on the same port with the same data dir.
    fn kill_and_restart(&mut self) {
        drop(self.server.take());
        let env = Restartable::env(&self.window);
        self.server = Some(ServeProcess::start_on_with(
            self.dir.path(),
            self.addr,
            &env,
        ));
    }

    /// Stops the server (SIGTERM); returns its data dir's store file.
    fn stop(mut self) -> (tempfile::TempDir, PathBuf) {
        let server = self
            .server
            .take()
            .expect("the server runs between restarts");
        assert!(server.terminate().success());
        let store = self.dir.path().join("data/edge.redb");
        (self.dir, store)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_resumes_by_itself_after_the_server_is_killed_and_restarted() {
    let files = tempfile::tempdir().unwrap();
    let (file, expected) = numbers(files.path(), LINES, 31);
    let mut server = Restartable::start();
    let mut upload = server.upload("stats", &file, "stats:write");
    upload.until("accepted", |e| matches!(e, Event::Accepted { .. }));
    for cut in 0..2 {
        upload.until("a commit", committed_some);
        server.kill_and_restart();
        let resumed = Instant::now();
        upload.until("resumed", |e| matches!(e, Event::Resumed { .. }));
        println!(
            "cut {cut}: resumed {:?} after the server was back",
            resumed.elapsed()
        );
    }
    let (status, events) = upload.finish();
    assert_eq!(status.code(), Some(RECORD_ERRORS), "{:?}", events.last());
    assert_eq!(done_summary(&events), expected);
}

/// The blob `photo.bin` in `store` is `body`, and nothing is left staged.
fn assert_photo_stored_whole(store: &edge_tasks::Store, body: &[u8]) {
    assert!(
        stored_photo(store) == body,
        "the stored blob is not the file"
    );
    assert_eq!(
        edge_tasks::blobs::stored::unpublished(store).unwrap(),
        (0, 0),
        "staged chunks are left"
    );
}

/// The bytes of the blob `photo.bin` in `store`.
fn stored_photo(store: &edge_tasks::Store) -> Vec<u8> {
    let reads = edge_tasks::blobs::PLUGIN.reads.unwrap();
    let context = edge_tasks::Context::new(store.clone());
    let mut content = (reads.content.unwrap())(&context, "photo.bin")
        .unwrap()
        .unwrap();
    let size = content.info().size;
    let mut stored = Vec::new();
    content
        .read(0..size, &mut |piece| {
            stored.extend_from_slice(&piece);
            true
        })
        .unwrap();
    stored
}

/// Drops every packet through `path` for 4 s, then lets them through again.
async fn cut_for_a_while(path: &forwarder::Forwarder) {
    path.cut(true);
    tokio::time::sleep(Duration::from_secs(4)).await;
    path.cut(false);
}

/// Bytes that do not compress: a photo's worth.
fn photo(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut body = Vec::with_capacity(len + 8);
    while body.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.extend_from_slice(&x.to_le_bytes());
    }
    body.truncate(len);
    let path = dir.join("photo.bin");
    std::fs::write(&path, &body).unwrap();
    (path, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_upload_goes_on_after_its_last_staged_chunk_when_the_server_is_killed() {
    let chunk = edge_tasks::blobs::stored::CHUNK_BYTES as u64;
    let files = tempfile::tempdir().unwrap();
    let (file, body) = photo(files.path(), 7 * chunk as usize + 4321);
    let mut server = Restartable::start();
    let mut upload = server.upload("blobs", &file, "blobs:write");
    let mut last_offset = 0;
    for cut in 1..=2u64 {
        // Two more chunks kept (staged with the job's cursor, durably).
        let past = last_offset + 2 * chunk;
        upload.until(
            "two more chunks committed",
            |e| matches!(e, Event::Committed { offset, .. } if *offset >= past),
        );
        // The server's prune at start spares the cut upload's chunks: its job may be resumed.
        server.kill_and_restart();
        let Event::Resumed {
            offset, records, ..
        } = upload.until("resumed", |e| matches!(e, Event::Resumed { .. }))
        else {
            unreachable!("until returns what it waited for")
        };
        println!("cut {cut}: the blob goes on at byte {offset}");
        assert_eq!(records, 0);
        assert_eq!(offset % chunk, 0, "a blob goes on at a chunk's end");
        assert!(
            offset > last_offset,
            "cut {cut}: nothing staged was kept ({offset})"
        );
        last_offset = offset;
    }
    let (status, events) = upload.finish();
    assert_eq!(status.code(), Some(0), "{:?}", events.last());
    // Its commits said how far its bytes were kept (what a client holding standard input
    // may let go of).
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Committed { records: 0, offset }
            if *offset > 0 && offset % chunk == 0)),
        "no committed offsets"
    );
    let summary = done_summary(&events);
    assert_eq!(summary["size"], body.len());
    assert_eq!(summary["digest"], blake3::hash(&body).to_hex().as_str());
    let (_dir, path) = server.stop();
    let store =
        edge_tasks::Store::open(&path, &edge_tasks::store::StoreOptions::default()).unwrap();
    assert_photo_stored_whole(&store, &body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_drops_every_packet_for_a_while_is_resumed_and_the_store_is_exact() {
    // A short idle timeout: both ends give the connection up 2 s into the cut.
    let server = slow_server(|config| config.transport.idle_timeout_secs = 2).await;
    let files = tempfile::tempdir().unwrap();
    let records = 40_000;
    let file = files.path().join("ports.ndjson");
    std::fs::write(&file, synthetic_ports_ndjson(records)).unwrap();
    let path = forwarder::Forwarder::start(server.addr, ONE_WAY).unwrap();
    let token = server.token(ALL_SCOPES);
    let args = client_args(
        &["upload", "--task", "ports", &file.display().to_string()],
        &format!("https://{}", path.addr()),
        &server.ca(),
        &token,
    );
    let mut upload = ClientProcess::start(&args);
    upload.until("a commit", committed_some);
    cut_for_a_while(&path).await;
    upload.until("resumed", |e| matches!(e, Event::Resumed { .. }));
    let (status, events) = upload.finish();
    assert!(status.success(), "{:?}", events.last());
    assert!(
        matches!(events.last(), Some(Event::Done { committed, errors: 0, summary, .. })
            if *committed == records as u64 && summary["inserted"] == records),
        "{:?}",
        events.last()
    );
    let dir = server.stop().await;
    let stored = all_ports(&dir.path().join("data/edge.redb"));
    assert_eq!(stored.len(), records);
}

/// A response head's status, `Upload-Offset` and `Location`.
fn response_head(head: &str) -> (u16, Option<u64>, Option<String>) {
    let head = head.to_ascii_lowercase();
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let offset = field("upload-offset:").and_then(|v| v.parse().ok());
    (status, offset, field("location:"))
}

/// A curl upload cut off, then resumed as docs/PROTOCOL.md shows: `HEAD` the upload
/// resource for `Upload-Offset`, then `tail -c +N file | curl -X PATCH -T - ...` with it.
struct CurlResume<'a> {
    curl: &'a Path,
    /// `--http1.1`, `--http2` or `--http3-only`.
    protocol: &'a str,
    base: String,
    ca: PathBuf,
    token: String,
}

impl CurlResume<'_> {
    fn command(&self) -> Command {
        let mut command = Command::new(self.curl);
        command
            .args(["-sS", self.protocol, "--cacert"])
            .arg(&self.ca)
            .args(["-H", &format!("authorization: Bearer {}", self.token)]);
        command
    }

    /// Starts uploading `file` at a limited rate, reads its events until a commit, kills
    /// curl; returns the job.
    fn cut_upload(&self, file: &Path) -> String {
        let mut child = self
            .command()
            .args(["--limit-rate", "1M", "-T"])
            .arg(file)
            .arg(format!("{}/v1/jobs/stats?format=lines", self.base))
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl starts");
        let stdout = child.stdout.take().unwrap();
        let mut job = None;
        for line in BufReader::new(stdout).lines() {
            let event = Event::from_line(line.unwrap().as_bytes()).unwrap();
            if let Event::Accepted { job: id, .. } = &event {
                job = Some(id.clone());
            }
            if committed_some(&event) {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        job.expect("the upload was accepted")
    }

    /// `HEAD /v1/uploads/{job}`: the status and the `Upload-Offset`.
    fn offset(&self, job: &str) -> (u16, Option<u64>) {
        let out = self
            .command()
            .args(["-I", &format!("{}/v1/uploads/{job}", self.base)])
            .output()
            .unwrap();
        let (status, offset, _) = response_head(&String::from_utf8_lossy(&out.stdout));
        (status, offset)
    }

    /// `PATCH` from `offset` with the file's bytes from `from` on; returns curl's stdout.
    fn append(&self, job: &str, file: &Path, offset: u64, from: u64) -> String {
        let mut tail = Command::new("tail")
            .arg("-c")
            .arg(format!("+{}", from + 1))
            .arg(file)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = self
            .command()
            .args(["-X", "PATCH", "-T", "-"])
            .args(["-H", &format!("upload-offset: {offset}")])
            .args(["-H", "upload-complete: ?1"])
            .arg(format!("{}/v1/uploads/{job}", self.base))
            .stdin(tail.stdout.take().unwrap())
            .output()
            .unwrap();
        let _ = tail.wait();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends `part` (a file) with `Upload-Complete: ?0` and `args`; returns the final
    /// status, the `Upload-Offset` and `Location` answered, and the body.
    fn part(&self, part: &Path, args: &[&str]) -> (u16, Option<u64>, Option<String>, String) {
        let out = self
            .command()
            .args(["-D", "-", "-o", "-", "-T"])
            .arg(part)
            .args(["-H", "upload-complete: ?0"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // The last response head (after any `100 Continue`), then its body.
        let (head, body) = text
            .rsplit_once("\r\n\r\n")
            .map(|(head, body)| (head.to_owned(), body.to_owned()))
            .unwrap_or((text.clone(), String::new()));
        let (status, offset, location) =
            response_head(head.rsplit("\r\n\r\n").next().unwrap_or(""));
        (status, offset, location, body)
    }

    /// Sends `file` in three requests, as the draft's parts: the creation and one append with
    /// `Upload-Complete: ?0` (each cut at `cuts`, mid-line), then the rest with `?1`; returns
    /// the final event.
    fn in_parts(&self, file: &Path, cuts: [u64; 2], dir: &Path) -> Event {
        let bytes = std::fs::read(file).unwrap();
        let write_part = |name: &str, range: std::ops::Range<u64>| {
            let path = dir.join(name);
            std::fs::write(&path, &bytes[range.start as usize..range.end as usize]).unwrap();
            path
        };
        let first = write_part("part-1", 0..cuts[0]);
        let url = format!("{}/v1/jobs/stats?format=lines", self.base);
        let (status, offset, location, body) = self.part(&first, &[&url]);
        assert_eq!(status, 201, "{}: {body}", self.protocol);
        let created: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
        let job = created["job"].as_str().unwrap().to_owned();
        assert_eq!(
            location.as_deref(),
            Some(format!("/v1/uploads/{job}").as_str())
        );
        let offset = offset.expect("the creation answers Upload-Offset");
        // Where the rest starts: the end of the last whole line of the part.
        assert!(offset <= cuts[0] && offset > 0, "{offset}");
        assert_eq!(bytes[offset as usize - 1], b'\n');
        assert_eq!(created["offset"], offset);
        let second = write_part("part-2", offset..cuts[1]);
        let resource = format!("{}/v1/uploads/{job}", self.base);
        let (status, next, _, body) = self.part(
            &second,
            &[
                "-X",
                "PATCH",
                "-H",
                &format!("upload-offset: {offset}"),
                &resource,
            ],
        );
        assert_eq!(status, 204, "{}: {body}", self.protocol);
        let next = next.expect("an append answers Upload-Offset");
        assert!(next > offset && next <= cuts[1], "{next}");
        assert_eq!(self.offset(&job), (204, Some(next)));
        self.finish(&job, file, next)
    }

    /// Cuts an upload of `file`, checks that a wrong offset is refused with `409`, resumes it
    /// and returns the final event; then cuts another and cancels it with `DELETE`.
    fn round(&self, file: &Path) -> Event {
        let job = self.cut_upload(file);
        let (status, seen) = self.offset(&job);
        assert_eq!(status, 204, "{}", self.protocol);
        let seen = seen.expect("HEAD answers Upload-Offset");
        assert!(seen > 0, "a commit came before the cut");
        // An append at another offset is refused. It takes the job over first (the cut
        // upload's last bytes may still have moved it on): from then on the offset holds.
        let refused = self.append(&job, file, seen + 1, seen + 1);
        let problem: serde_json::Value = serde_json::from_str(refused.trim()).unwrap();
        assert_eq!(
            problem["type"],
            "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
        );
        assert_eq!(problem["provided-offset"], seen + 1);
        let offset = problem["expected-offset"].as_u64().unwrap();
        assert!(offset >= seen);
        assert_eq!(self.offset(&job), (204, Some(offset)));
        let last = self.finish(&job, file, offset);
        // A job cancelled through its upload resource can no longer be resumed.
        let other = self.cut_upload(file);
        let out = self
            .command()
            .args(["-X", "DELETE", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{}/v1/uploads/{other}", self.base))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "204");
        assert_eq!(self.offset(&other).0, 404);
        last
    }

    /// `PATCH`es the rest of `file` from `offset`, which the job must resume at; returns
    /// the final event.
    fn finish(&self, job: &str, file: &Path, offset: u64) -> Event {
        let out = self.append(job, file, offset, offset);
        let events: Vec<Event> = out
            .lines()
            .map(|l| Event::from_line(l.as_bytes()).unwrap())
            .collect();
        assert_eq!(resumed_at(&events), [offset], "{}", self.protocol);
        events.last().cloned().expect("events came")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_tcp_resumes_with_head_and_patch_as_the_draft_says() {
    let server = slow_server(|_| {}).await;
    let files = tempfile::tempdir().unwrap();
    let (file, expected) = numbers(files.path(), LINES, 41);
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let (ca, token) = (server.ca(), server.token(ALL_SCOPES));
    let last = tokio::task::spawn_blocking(move || {
        let mut finals = Vec::new();
        let parts = tempfile::tempdir().unwrap();
        let size = std::fs::metadata(&file).unwrap().len();
        for protocol in ["--http1.1", "--http2"] {
            let curl = CurlResume {
                curl: Path::new("curl"),
                protocol,
                base: base.clone(),
                ca: ca.clone(),
                token: token.clone(),
            };
            finals.push(curl.round(&file));
            finals.push(curl.in_parts(&file, [size / 3 + 3, 2 * size / 3 + 5], parts.path()));
        }
        finals
    })
    .await
    .unwrap();
    for last in last {
        let Event::Done { summary, .. } = &last else {
            panic!("{last:?}")
        };
        assert_eq!(summary, &expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn curl_over_http3_resumes_with_head_and_patch() {
    let server = slow_server(|_| {}).await;
    let files = tempfile::tempdir().unwrap();
    let (file, expected) = numbers(files.path(), LINES, 51);
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let (ca, token) = (server.ca(), server.token(ALL_SCOPES));
    let curl = crate::http3::h3curl().expect("the test is ignored without an HTTP/3 curl");
    let finals = tokio::task::spawn_blocking(move || {
        let resume = CurlResume {
            curl: &curl,
            protocol: "--http3-only",
            base,
            ca,
            token,
        };
        let parts = tempfile::tempdir().unwrap();
        let size = std::fs::metadata(&file).unwrap().len();
        let cuts = [size / 4 + 7, size / 2 + 1];
        [
            resume.round(&file),
            resume.in_parts(&file, cuts, parts.path()),
        ]
    })
    .await
    .unwrap();
    for last in finals {
        let Event::Done { summary, .. } = &last else {
            panic!("{last:?}")
        };
        assert_eq!(summary, &expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_upload_names_its_upload_resource() {
    let server = TestServer::start().await;
    let (ca, token, port) = (server.ca(), server.token(ALL_SCOPES), server.addr.port());
    let curl = move |query: &str, headers: &[&str]| {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "-i", "--http2", "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("authorization: Bearer {token}")])
            .args(["--data-binary", "1\n2\n"]);
        for header in headers {
            command.args(["-H", header]);
        }
        let url = format!("https://127.0.0.1:{port}/v1/jobs/stats?format=lines{query}");
        let out = command.arg(url).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase()
    };
    let (text, atomic_part) = tokio::task::spawn_blocking(move || {
        (
            curl("", &[]),
            curl("&atomic=true", &["upload-complete: ?0"]),
        )
    })
    .await
    .unwrap();
    let job = text
        .lines()
        .find_map(|l| Event::from_line(l.as_bytes()).ok())
        .map(|e| accepted_job(&e))
        .unwrap();
    assert!(
        text.contains(&format!("location: /v1/uploads/{job}")),
        "{text}"
    );
    // A job that keeps nothing before its end takes no part of a body.
    assert!(
        atomic_part.starts_with("http/2 400") && atomic_part.contains("sent whole"),
        "{atomic_part}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_upload_whose_digest_does_not_match_keeps_nothing() {
    use base64::Engine as _;
    let server = TestServer::start().await;
    let (ca, token, port) = (server.ca(), server.token(ALL_SCOPES), server.addr.port());
    let body = std::fs::read(ports_json()).unwrap();
    let mut hash = edge_tasks::resume::sha256::Sha256::new();
    hash.update(&body);
    let right = base64::engine::general_purpose::STANDARD.encode(hash.digest());
    let wrong = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let upload = move |digest: String| {
        let out = Command::new("curl")
            .args(["-sS", "--http2", "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("authorization: Bearer {token}")])
            .args(["-H", &format!("repr-digest: sha-256=:{digest}:")])
            .arg("-T")
            .arg(ports_json())
            .arg(format!(
                "https://127.0.0.1:{port}/v1/jobs/ports?atomic=true"
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let events: Vec<Event> = text
            .lines()
            .map(|l| Event::from_line(l.as_bytes()).unwrap())
            .collect();
        events
    };
    let (refused, kept) = tokio::task::spawn_blocking(move || (upload(wrong), upload(right)))
        .await
        .unwrap();
    assert!(
        matches!(
            refused.last(),
            Some(Event::Failed {
                code: ErrorCode::DigestMismatch,
                committed: 0,
                ..
            })
        ),
        "{:?}",
        refused.last()
    );
    assert!(!refused.iter().any(|e| matches!(e, Event::Committed { .. })));
    // Every port is new to the second upload: the first kept none.
    assert!(
        matches!(kept.last(), Some(Event::Done { committed: 1634, summary, .. }) if summary["inserted"] == 1634),
        "{:?}",
        kept.last()
    );
    let dir = server.stop().await;
    let stored = all_ports(&dir.path().join("data/edge.redb"));
    assert_eq!(stored.len(), 1634);
}

/// Two nodes on the PostgreSQL database `db`: `edge-client upload --task TASK FILE` into
/// node A (through the slow path), killed once `cut` says, then `edge-client resume` on node
/// B, which must succeed; returns the resume's events.
async fn cut_on_one_node_resumed_on_another(
    db: &str,
    task: &str,
    file: &Path,
    cut: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    use crate::postgres::{on_postgres, second_node};
    let a = slow_server(|c| on_postgres(c, db)).await;
    let (b, b_client) = second_node(&a, db, |_| {}).await;
    let path = forwarder::Forwarder::start(a.addr, ONE_WAY).unwrap();
    let token = a.token(ALL_SCOPES);
    let name = file.display().to_string();
    let mut upload = ClientProcess::start(&client_args(
        &["upload", "--task", task, &name],
        &format!("https://{}", path.addr()),
        &a.ca(),
        &token,
    ));
    let job = accepted_job(&upload.until("accepted", |e| matches!(e, Event::Accepted { .. })));
    upload.until("the cut", cut);
    upload.kill();
    // The job goes on on the other node, which shares the database.
    let (status, events) = ClientProcess::start(&client_args(
        &["resume", &job, &name],
        &b_client.server,
        &a.ca(),
        &token,
    ))
    .finish();
    assert!(status.success(), "{:?}", events.last());
    drop((a, b));
    events
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_job_cut_on_one_node_is_resumed_on_another_exactly_once() {
    let db = edge_pg::cluster::Database::new().unwrap();
    let files = tempfile::tempdir().unwrap();
    let records = 40_000;
    let file = files.path().join("ports.ndjson");
    std::fs::write(&file, synthetic_ports_ndjson(records)).unwrap();
    let events = cut_on_one_node_resumed_on_another(db.url(), "ports", &file, committed_some).await;
    assert!(resumed_at(&events)[0] > 0);
    // Every port inserted exactly once, across the two nodes' runs of the job.
    assert!(
        matches!(events.last(), Some(Event::Done { committed, summary, .. })
            if *committed == records as u64 && summary["inserted"] == records),
        "{:?}",
        events.last()
    );
    let store = crate::postgres::open(db.url());
    assert_eq!(edge_tasks::ports::count(&store).unwrap(), records as u64);
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_blob_cut_on_one_node_goes_on_on_another_from_its_last_chunk() {
    let chunk = edge_tasks::blobs::stored::CHUNK_BYTES as u64;
    let db = edge_pg::cluster::Database::new().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (file, body) = photo(files.path(), 6 * chunk as usize + 777);
    let two_chunks_kept =
        |e: &Event| matches!(e, Event::Committed { offset, .. } if *offset >= 2 * chunk);
    let events =
        cut_on_one_node_resumed_on_another(db.url(), "blobs", &file, two_chunks_kept).await;
    let offset = resumed_at(&events)[0];
    assert!(
        offset >= 2 * chunk && offset.is_multiple_of(chunk),
        "{offset}"
    );
    let summary = done_summary(&events);
    assert_eq!(summary["digest"], blake3::hash(&body).to_hex().as_str());
    let store = crate::postgres::open(db.url());
    assert_photo_stored_whole(&store, &body);
}

/// A job's cursor through its life, on `store`: fenced by each resume, kept or dropped as
/// the job ends, refused to another subject, expired after the window.
fn cursor_life(store: &edge_tasks::Store, job: &str) {
    use edge_tasks::resume::{self, Claimant, Cursor, Origin, Outcome, Save};
    use edge_tasks::store::{StoreError, Sync};
    let origin = |job: &str| Origin {
        job: job.into(),
        sub: "alice".into(),
        task: "stats".into(),
        params: Default::default(),
        format: None,
        name: None,
        size: None,
        sha256: None,
        atomic: false,
        transport: "test".into(),
    };
    let claimant = |sub: &'static str, admin: bool| Claimant {
        sub,
        admin,
        window: Duration::from_secs(3600),
    };
    let first = Cursor::start(origin(job));
    resume::begin(store, &first).wait().unwrap();
    store
        .submit(Save::new(first.clone()), Sync::Now)
        .wait()
        .unwrap();
    let second = resume::claim(store, job, claimant("alice", false)).unwrap();
    assert_eq!(second.epoch, 2);
    let fenced = store.submit(Save::new(first), Sync::Now).wait();
    assert!(
        matches!(fenced, Err(StoreError::TakenOver { .. })),
        "{fenced:?}"
    );
    store
        .submit(Save::new(second.clone()), Sync::Now)
        .wait()
        .unwrap();
    // The run taken over ends late: the cursor stays the resume's.
    resume::end(store, job, 1, Outcome::Ended).wait().unwrap();
    assert_eq!(resume::load(store, job).unwrap().unwrap().epoch, 2);
    resume::end(store, job, 2, Outcome::Stopped).wait().unwrap();
    assert!(resume::load(store, job)
        .unwrap()
        .unwrap()
        .stopped_ms
        .is_some());
    let refused = resume::claim(store, job, claimant("bob", false)).unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Forbidden);
    assert_eq!(
        resume::claim(store, job, claimant("bob", true))
            .unwrap()
            .epoch,
        3
    );
    resume::end(store, job, 3, Outcome::Ended).wait().unwrap();
    assert_eq!(
        resume::claim(store, job, claimant("alice", false))
            .unwrap_err()
            .code(),
        ErrorCode::ResumeExpired
    );
    let old = format!("{job}-old");
    let mut stale = Cursor::start(origin(&old));
    stale.updated_ms -= 2 * 3600 * 1000;
    resume::begin(store, &stale).wait().unwrap();
    assert!(resume::expire(store, Duration::from_secs(3600)).unwrap() >= 1);
    assert!(resume::load(store, &old).unwrap().is_none());
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[test]
fn a_cursor_lives_the_same_on_postgres_as_on_redb() {
    let dir = tempfile::tempdir().unwrap();
    let redb = edge_tasks::Store::open(
        &dir.path().join("edge.redb"),
        &edge_tasks::store::StoreOptions::default(),
    )
    .unwrap();
    cursor_life(&redb, "job-on-redb");
    let db = edge_pg::cluster::Database::new().unwrap();
    cursor_life(&crate::postgres::open(db.url()), "job-on-postgres");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_edge_client_resumes_through_the_upload_resource() {
    let server = slow_server(|_| {}).await;
    let files = tempfile::tempdir().unwrap();
    // TCP has no slow path here: a file four times bigger takes long enough to be cut.
    let (file, expected) = numbers(files.path(), 4 * LINES, 61);
    let (other, _) = numbers(files.path(), LINES, 62);
    let address = format!("https://127.0.0.1:{}", server.addr.port());
    let token = server.token(ALL_SCOPES);
    let args = |command: &[&str]| client_args(command, &address, &server.ca(), &token);
    let path = file.display().to_string();
    let mut upload = ClientProcess::start(&args(&["upload", "--tcp", "--task", "stats", &path]));
    let job = accepted_job(&upload.until("accepted", |e| matches!(e, Event::Accepted { .. })));
    upload.until("a commit", committed_some);
    upload.kill();
    let other = other.display().to_string();
    let out = run_client(
        &address,
        &server.ca(),
        &token,
        ["resume", "--tcp", &job, &other, "--no-digest", "--json"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not start with"), "{stderr}");
    let (status, events) = ClientProcess::start(&args(&["resume", "--tcp", &job, &path])).finish();
    let offsets = resumed_at(&events);
    assert!(
        offsets.len() == 1 && offsets[0] > 0,
        "{offsets:?}: {status:?} {:?}",
        events.first()
    );
    assert_eq!(done_summary(&events), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_input_resumes_from_what_the_client_still_holds() {
    let server = slow_server(|config| config.transport.idle_timeout_secs = 2).await;
    let files = tempfile::tempdir().unwrap();
    let (file, expected) = numbers(files.path(), LINES, 71);
    let path = forwarder::Forwarder::start(server.addr, ONE_WAY).unwrap();
    let token = server.token(ALL_SCOPES);
    let args = client_args(
        &["upload", "--task", "stats", "--format", "lines", "-"],
        &format!("https://{}", path.addr()),
        &server.ca(),
        &token,
    );
    // The numbers come as standard input: the client cannot open them again from the start.
    let mut upload = ClientProcess::start_with_stdin(&args, std::fs::File::open(&file).unwrap());
    upload.until("a commit", committed_some);
    cut_for_a_while(&path).await;
    upload.until("resumed", |e| matches!(e, Event::Resumed { .. }));
    let (status, events) = upload.finish();
    assert_eq!(status.code(), Some(RECORD_ERRORS), "{:?}", events.last());
    assert_eq!(done_summary(&events), expected);
}
