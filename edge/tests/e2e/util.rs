//! Shared helpers for the end-to-end tests: a real server on 127.0.0.1:0 with its own temp
//! dirs, real clients, and test data.

#![allow(dead_code)]

use edge::config::Config;
use edge::Server;
use edge_client::{Client, ClientConfig, JobResult, UploadJob};
use edge_proto::{Event, Format, JobHeader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every scope the tests' tasks need.
pub const ALL_SCOPES: &str = "ports:write stats:write primes:write blobs:write ports:read \
     primes:read blobs:read blobs:delete jobs:read";

/// A one-hour token for `sub` with `scope`, signed with the key in `certs`.
pub fn mint(certs: &Path, sub: &str, scope: &str) -> String {
    let keys = edge::auth::KeyPair::load_or_generate(certs).expect("token keys");
    let config = edge::config::AuthConfig::default();
    keys.issue(
        &config,
        sub,
        scope,
        std::time::Duration::from_secs(3600),
        None,
    )
    .expect("a token")
}

/// The real sea-ports file (1,634 ports).
pub fn ports_json() -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/ports.json");
    if shipped.is_file() {
        return shipped;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ports.json")
}

/// The `edge-client` binary that the workspace's build made, beside this package's `edge`
/// (see [`workspace_binary`]).
/// Runs the `edge-client` binary with `args`, then `--server SERVER --ca CA --token TOKEN`,
/// without the environment's `EDGE_*` settings; waits for it and returns its output.
pub fn run_client<A: AsRef<std::ffi::OsStr>>(
    server: &str,
    ca: &Path,
    token: &str,
    args: impl IntoIterator<Item = A>,
) -> std::process::Output {
    std::process::Command::new(client_binary())
        .args(args)
        .args(["--server", server])
        .arg("--ca")
        .arg(ca)
        .args(["--token", token])
        .env_remove("EDGE_SERVER")
        .env_remove("EDGE_CA")
        .env_remove("EDGE_TOKEN")
        .output()
        .expect("edge-client runs")
}

pub fn client_binary() -> PathBuf {
    workspace_binary(
        "edge-client",
        &["client/src", "client/Cargo.toml", "proto/src"],
    )
}

/// A binary of another package of the workspace, from the target dir this test's `edge` is
/// in. Cargo gives a test only its own package's binaries (`CARGO_BIN_EXE_*`), and a test never
/// builds one itself: `cargo nextest run --workspace` builds every package's binaries first
/// (`edge-client` has integration tests of its own), and so does `cargo build --workspace
/// --bins` (which `.ci/run` runs). A missing binary, or one older than its `sources` (paths
/// relative to the workspace root), fails the test with the command that fixes it, so that a
/// test never runs a stale binary.
pub fn workspace_binary(name: &str, sources: &[&str]) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_edge")).with_file_name(name);
    let fix = "build it with `cargo build --workspace --bins` (or run the tests with `cargo \
               nextest run --workspace`, which builds it)";
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {fix}", path.display()));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().unwrap_or(manifest);
    for source in sources {
        if let Some(newer) = newer_file(&root.join(source), built) {
            panic!(
                "{} is older than {}: {fix}",
                path.display(),
                newer.display()
            );
        }
    }
    path
}

/// A file at or under `path` modified after `than`, if any.
fn newer_file(path: &Path, than: std::time::SystemTime) -> Option<PathBuf> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).ok()?;
        return entries
            .filter_map(Result::ok)
            .find_map(|entry| newer_file(&entry.path(), than));
    }
    meta.modified()
        .ok()
        .filter(|modified| *modified > than)
        .map(|_| path.to_owned())
}

/// A server running in this process, in its own temp dir.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    /// The admin listener, when the config asked for one.
    pub admin: Option<std::net::SocketAddr>,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server with default settings on an ephemeral port.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts a server after `tune` adjusted its config.
    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        TestServer::start_in(dir, tune).await
    }

    /// Starts a server whose data and certs live in `dir`.
    pub async fn start_in(dir: tempfile::TempDir, tune: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_with_plugins(dir, edge_tasks::Registry::builtin(), tune).await
    }

    /// Starts a server whose data and certs live in `dir`, running the plugins of `registry`.
    pub async fn start_with_plugins(
        dir: tempfile::TempDir,
        registry: edge_tasks::Registry,
        tune: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("data"),
            certs_dir: dir.path().join("certs"),
            ..Config::default()
        };
        // Tests open many short connections from one address in quick succession, and on a
        // busy machine the server may not have seen the last ones close yet. The caps have
        // their own test (auth::connections_are_capped_per_ip_and_closed_without_a_valid_token).
        config.transport.max_connections_per_ip = 1024;
        tune(&mut config);
        let server = Server::bind_with(&config, registry).expect("server binds");
        let addr = server.local_addr();
        let admin = server.admin_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        TestServer {
            addr,
            admin,
            dir,
            shutdown,
            task,
        }
    }

    /// The dev CA the server generated.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    /// The store file.
    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("data/edge.redb")
    }

    /// A client connected to this server.
    pub async fn client(&self) -> Client {
        Client::connect(&self.client_config())
            .await
            .expect("client connects")
    }

    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            server: format!("https://127.0.0.1:{}", self.addr.port()),
            ca: Some(self.ca()),
            token: Some(self.token(ALL_SCOPES)),
        }
    }

    /// A token for `tester` with `scope`, signed with this server's key.
    pub fn token(&self, scope: &str) -> String {
        mint(&self.dir.path().join("certs"), "tester", scope)
    }

    /// Begins the shutdown (as on SIGTERM) without waiting for it: the server drains.
    pub fn drain(&self) {
        self.shutdown.cancel();
    }

    /// A token for `old` with `scope`, signed with this server's key, that expired two minutes
    /// ago (beyond the default leeway).
    pub fn expired_token(&self, scope: &str) -> String {
        let keys = edge::auth::KeyPair::load_or_generate(&self.dir.path().join("certs")).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({"sub": "old", "exp": now - 120, "nbf": now - 600,
            "iss": "edge", "aud": "edge", "scope": scope});
        keys.sign(&claims).unwrap()
    }

    /// Shuts the server down (as on SIGTERM) and waits until it has stopped; returns the temp
    /// dir so the store can be opened.
    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.task.await.expect("server task ends cleanly");
        self.dir
    }
}

/// Uploads `body` as one job and collects every event.
pub async fn upload(
    client: &Client,
    task: &str,
    format: Option<Format>,
    body: Vec<u8>,
) -> (JobResult, Vec<Event>) {
    let mut header = JobHeader::new(task);
    header.format = format;
    header.size = Some(body.len() as u64);
    upload_with(client, header, Box::new(std::io::Cursor::new(body))).await
}

/// Uploads with a given header and body reader, collecting every event.
pub async fn upload_with(
    client: &Client,
    header: JobHeader,
    body: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
) -> (JobResult, Vec<Event>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let job = UploadJob::new(header, body);
    let result = client
        .upload(job, move |event: &Event| {
            sink.lock().unwrap().push(event.clone())
        })
        .await
        .expect("upload completes");
    let events = events.lock().unwrap().clone();
    (result, events)
}

/// The `done` event of a finished job (panics with the events if there is none).
pub fn done(events: &[Event]) -> &Event {
    events
        .iter()
        .find(|e| matches!(e, Event::Done { .. }))
        .unwrap_or_else(|| panic!("no done event in {events:#?}"))
}

/// The ports file as a JSON array of its records, and as NDJSON.
pub fn ports_as_array_and_ndjson() -> (Vec<u8>, Vec<u8>) {
    let text = std::fs::read(ports_json()).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text).unwrap();
    let records: Vec<&serde_json::Value> = map.values().collect();
    let array = serde_json::to_vec_pretty(&records).unwrap();
    let mut ndjson = Vec::new();
    for r in &records {
        ndjson.extend_from_slice(&serde_json::to_vec(r).unwrap());
        ndjson.push(b'\n');
    }
    (array, ndjson)
}

/// The ports file as CSV: every field a column, lists `;`-separated, coordinates one
/// `"lon,lat"` cell, every cell quoted.
pub fn ports_as_csv() -> Vec<u8> {
    const COLUMNS: [&str; 10] = [
        "name",
        "city",
        "country",
        "alias",
        "regions",
        "coordinates",
        "province",
        "timezone",
        "unlocs",
        "code",
    ];
    let text = std::fs::read(ports_json()).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text).unwrap();
    let mut csv = COLUMNS.join(",");
    csv.push_str("\r\n");
    for port in map.values() {
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|column| {
                let cell = match &port[*column] {
                    serde_json::Value::Array(items) if *column == "coordinates" => items
                        .iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    serde_json::Value::Array(items) => items
                        .iter()
                        .map(|x| x.as_str().unwrap().to_owned())
                        .collect::<Vec<_>>()
                        .join(";"),
                    serde_json::Value::String(text) => text.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                format!("\"{}\"", cell.replace('"', "\"\""))
            })
            .collect();
        csv.push_str(&cells.join(","));
        csv.push_str("\r\n");
    }
    csv.into_bytes()
}

/// `n` synthetic port records as NDJSON, keyed `P000000`, `P000001`, ...
pub fn synthetic_ports_ndjson(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 200);
    for i in 0..n {
        let line = serde_json::json!({
            "name": format!("Port {i}"),
            "city": "Testville",
            "country": "Testland",
            "alias": [],
            "regions": [],
            "coordinates": [(i % 360) as f64 - 180.0, (i % 180) as f64 - 90.0],
            "timezone": "Etc/UTC",
            "unlocs": [format!("P{i:06}")],
        });
        out.extend_from_slice(&serde_json::to_vec(&line).unwrap());
        out.push(b'\n');
    }
    out
}

/// Every port in a stopped server's store, in key order.
pub fn all_ports(store_path: &Path) -> Vec<(String, edge_tasks::ports::Port)> {
    let store = edge_tasks::Store::open(store_path, &Default::default()).expect("store opens");
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = edge_tasks::ports::ListQuery {
            country: None,
            after: after.as_deref(),
            limit: 1000,
        };
        let page = edge_tasks::ports::list(&store, &query).unwrap();
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

/// The events of an upload as they arrive, and a way to wait for one: tests wait on the event
/// itself ("the job has started", "draining began"), never on a sleep.
#[derive(Clone)]
pub struct Events {
    seen: Arc<Mutex<Vec<Event>>>,
    count: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            seen: Arc::new(Mutex::new(Vec::new())),
            count: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// The callback to hand `Client::upload`.
    pub fn sink(&self) -> impl FnMut(&Event) + Send + 'static {
        let events = self.clone();
        move |event: &Event| {
            events.seen.lock().unwrap().push(event.clone());
            events.count.send_modify(|n| *n += 1);
        }
    }

    /// Waits (at most 30 s) until an event matching `wanted` has arrived; `what` names it.
    pub async fn until(&self, what: &str, wanted: impl Fn(&Event) -> bool) {
        let mut count = self.count.subscribe();
        let arrived = count.wait_for(|_| self.seen.lock().unwrap().iter().any(&wanted));
        tokio::time::timeout(std::time::Duration::from_secs(30), arrived)
            .await
            .unwrap_or_else(|_| panic!("no {what} event within 30 s: {:?}", self.all()))
            .expect("the sender lives in self");
    }

    /// Every event so far.
    pub fn all(&self) -> Vec<Event> {
        self.seen.lock().unwrap().clone()
    }
}

/// `GET path` on the admin listener: (status line, body).
pub fn admin_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}
