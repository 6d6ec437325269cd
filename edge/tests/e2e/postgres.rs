//! The PostgreSQL store (`[store] backend = "postgres"`) against a real PostgreSQL server:
//! the same jobs give the same counts and the same ports as with redb; two nodes share one
//! database (each other's jobs, revocations within a second, no lost or double-counted record,
//! job ids that never collide); a database that goes away mid-upload fails the job cleanly
//! with its committed count, and the server carries on once it is back.
//!
//! Each test makes a database of its own: in `EDGE_TEST_PG_URL`'s server (`.ci/run` starts
//! one), or in a throwaway cluster (`edge_pg::cluster`). Skipped where there is neither.

use crate::history::ports_job;
use crate::util::{
    done, ports_as_array_and_ndjson, synthetic_ports_ndjson, upload, Events, TestServer,
};
use edge::config::{Config, StoreBackend};
use edge_client::api::Api;
use edge_client::{Client, UploadJob};
use edge_pg::cluster::{Cluster, Database};
use edge_proto::{ErrorCode, Event, Format, JobHeader};
use edge_tasks::ports::{ListQuery, Port};
use edge_tasks::store::PgOptions;
use edge_tasks::{Registry, Store};
use std::time::{Duration, Instant};

/// Points `config` at the PostgreSQL database `url`.
pub fn on_postgres(config: &mut Config, url: &str) {
    config.store.backend = StoreBackend::Postgres;
    config.store.url = Some(url.to_owned());
}

/// A second node beside node `a` on the database `url`, sharing `a`'s certs dir (its CA and
/// token keys), with `tune`'s settings; and a client of it with `a`'s CA and token.
pub(crate) async fn second_node(
    a: &TestServer,
    url: &str,
    tune: impl FnOnce(&mut Config),
) -> (TestServer, edge_client::ClientConfig) {
    let certs = a.dir.path().join("certs");
    let b = TestServer::start_with(|c| {
        on_postgres(c, url);
        c.certs_dir = certs;
        tune(c);
    })
    .await;
    let client = edge_client::ClientConfig {
        server: format!("https://127.0.0.1:{}", b.addr.port()),
        ..a.client_config()
    };
    (b, client)
}

/// A store handle of the test's own on the database, as another process would open it.
pub(crate) fn open(url: &str) -> Store {
    Store::open_postgres(&PgOptions::new(url), "test-reader", Registry::builtin())
        .expect("the database opens")
}

/// Every port in `store`, in key order.
fn ports_in(store: &Store) -> Vec<(String, Port)> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = ListQuery {
            country: None,
            after: after.as_deref(),
            limit: 1000,
        };
        let page = edge_tasks::ports::list(store, &query).unwrap();
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

/// The summary of a job that must end `done`.
fn summary(events: &[Event]) -> serde_json::Value {
    match done(events) {
        Event::Done { summary, .. } => summary.clone(),
        _ => unreachable!("done() returns a done event"),
    }
}

/// NDJSON records that exercise every count: two ports of the file unchanged, one changed,
/// two new, and repeats of one key inside the same batch (same value, then a new one).
fn mixed_batch() -> Vec<u8> {
    let lines = [
        r#"{"name":"Ajman","city":"Ajman","country":"United Arab Emirates","alias":[],"regions":[],"coordinates":[55.5136433,25.4052165],"province":"Ajman","timezone":"Asia/Dubai","unlocs":["AEAJM"],"code":"52000"}"#,
        r#"{"name":"Abu Dhabi (changed)","country":"United Arab Emirates","unlocs":["AEAUH"]}"#,
        r#"{"name":"New One","country":"Nowhere","unlocs":["ZZNEW"]}"#,
        r#"{"name":"Twice","country":"Nowhere","unlocs":["ZZTWO"]}"#,
        r#"{"name":"Twice","country":"Nowhere","unlocs":["ZZTWO"]}"#,
        r#"{"name":"Twice, then changed","country":"Nowhere","unlocs":["ZZTWO"]}"#,
    ];
    let mut body = lines.join("\n").into_bytes();
    body.push(b'\n');
    body
}

/// What [`same_jobs`] reads back through the API.
const READS: [&str; 6] = [
    "/v1/ports/AEAUH",
    "/v1/ports/ZZTWO",
    "/v1/ports?country=united%20arab%20emirates&limit=3",
    "/v1/ports?after=ZZNEW",
    "/v1/ports/AEAUH/history",
    "/v1/ports/ZZTWO/history",
];

/// Runs the same jobs on `server`, returning their summaries and a few reads through the API.
async fn same_jobs(server: &TestServer) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let client = server.client().await;
    let ports = std::fs::read(crate::util::ports_json()).unwrap();
    let (array, _) = ports_as_array_and_ndjson();
    let mut summaries = Vec::new();
    for (format, body) in [
        (Some(Format::Json), ports),
        (Some(Format::Json), array),
        (Some(Format::Ndjson), mixed_batch()),
    ] {
        let (_, events) = upload(&client, "ports", format, body).await;
        summaries.push(summary(&events));
    }
    client.close().await;
    let mut api = Api::connect(&server.client_config()).await.unwrap();
    let mut reads = Vec::new();
    for path in READS {
        let answer = api.get(path).await.unwrap();
        assert_eq!(answer.status, 200, "{path}: {}", answer.error_message());
        reads.push(answer.body);
    }
    (summaries, reads)
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_jobs_count_and_read_the_same_on_postgres_as_on_redb() {
    let db = Database::new().unwrap();
    let redb = TestServer::start().await;
    let postgres = TestServer::start_with(|c| on_postgres(c, db.url())).await;

    let (on_redb, reads_redb) = same_jobs(&redb).await;
    let (on_postgres, reads_postgres) = same_jobs(&postgres).await;
    assert_eq!(
        on_redb[0],
        serde_json::json!({"inserted": 1634, "updated": 0, "unchanged": 0})
    );
    assert_eq!(
        on_redb[1],
        serde_json::json!({"inserted": 0, "updated": 0, "unchanged": 1634})
    );
    assert_eq!(
        on_redb[2],
        serde_json::json!({"inserted": 2, "updated": 2, "unchanged": 2}),
        "AEAJM unchanged, AEAUH updated, ZZNEW inserted, ZZTWO inserted then unchanged then updated"
    );
    assert_eq!(on_postgres, on_redb, "the same counts, exactly");
    let scrubbed = |mut reads: Vec<serde_json::Value>| {
        reads.iter_mut().for_each(scrub);
        reads
    };
    assert_eq!(
        reads_redb[4]["items"][0]["was"], "Abu Dhabi",
        "the history holds what the update replaced: {}",
        reads_redb[4]
    );
    assert_eq!(
        scrubbed(reads_postgres),
        scrubbed(reads_redb),
        "the same answers to reads (but for job ids and times)"
    );

    let _ = postgres.stop().await;
    let dir = redb.stop().await;
    let expected = crate::util::all_ports(&dir.path().join("data/edge.redb"));
    assert_eq!(expected.len(), 1636);
    assert_eq!(
        ports_in(&open(db.url())),
        expected,
        "the same ports, byte for byte"
    );
}

/// A token minted with the shared keys (both nodes use the same certs dir).
fn token(certs: &std::path::Path, sub: &str) -> String {
    crate::util::mint(certs, sub, "ports:write ports:read jobs:read")
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_database_exactly() {
    let db = Database::new().unwrap();
    let a = TestServer::start_with(|c| on_postgres(c, db.url())).await;
    let certs = a.dir.path().join("certs");
    let (b, b_client) = second_node(&a, db.url(), |_| {}).await;

    // Both nodes take the same 20,000 keys at once, in two jobs each: every key is inserted
    // by exactly one of the four jobs and found unchanged by the other.
    const KEYS: usize = 20_000;
    let all = synthetic_ports_ndjson(KEYS);
    let lines: Vec<&[u8]> = all.split_inclusive(|b| *b == b'\n').collect();
    let halves = [lines[..KEYS / 2].concat(), lines[KEYS / 2..].concat()];
    let mut jobs = Vec::new();
    for config in [a.client_config(), b_client.clone()] {
        for half in &halves {
            let config = config.clone();
            let body = half.clone();
            jobs.push(tokio::spawn(async move {
                let client = Client::connect(&config).await.unwrap();
                let (_, events) = upload(&client, "ports", Some(Format::Ndjson), body).await;
                client.close().await;
                events
            }));
        }
    }
    let mut totals = [0u64; 3];
    let mut ids = Vec::new();
    for job in jobs {
        let events = job.await.unwrap();
        let Event::Done {
            job,
            committed,
            summary,
            ..
        } = done(&events)
        else {
            unreachable!()
        };
        assert_eq!(*committed, (KEYS / 2) as u64);
        for (total, field) in totals.iter_mut().zip(["inserted", "updated", "unchanged"]) {
            *total += summary[field].as_u64().unwrap();
        }
        ids.push(job.clone());
    }
    assert_eq!(
        totals,
        [KEYS as u64, 0, KEYS as u64],
        "each key inserted once, and found unchanged once: none lost, none counted twice"
    );
    let slots: std::collections::BTreeSet<&str> = ids.iter().map(|id| &id[11..13]).collect();
    assert_eq!(
        slots.len(),
        2,
        "each node's ids carry its own slot: {ids:?}"
    );

    // The store is what one node doing it all would leave: every key, as uploaded; each key
    // in the change lists once (by the job that inserted it; batches of thousands are written
    // in parts at once, each listing its own keys).
    let store = open(db.url());
    let stored = ports_in(&store);
    assert_eq!(stored.len(), KEYS);
    assert_eq!(
        edge_tasks::ports::changes::count_changes(&store).unwrap(),
        KEYS as u64
    );
    let reference = TestServer::start().await;
    let client = reference.client().await;
    upload(&client, "ports", Some(Format::Ndjson), all.clone()).await;
    client.close().await;
    let dir = reference.stop().await;
    assert_eq!(
        stored,
        crate::util::all_ports(&dir.path().join("data/edge.redb"))
    );

    // A job run on node A is in node B's history and read API.
    let mut api_b = Api::connect(&b_client).await.unwrap();
    for id in &ids {
        let answer = api_b.get(&format!("/v1/jobs/{id}")).await.unwrap();
        assert_eq!(answer.status, 200, "{id}: {}", answer.error_message());
        assert_eq!(answer.body["outcome"], "done", "{}", answer.body);
    }

    // A token revoked through node A is refused by node B within a second.
    let stolen = token(&certs, "mallory");
    let b_config = edge_client::ClientConfig {
        token: Some(stolen.clone()),
        ..b_client.clone()
    };
    let gate = br#"{"name":"Gate","unlocs":["GATE1"]}"#.to_vec();
    let client = Client::connect(&b_config).await.unwrap();
    let (result, _) = upload(&client, "ports", Some(Format::Ndjson), gate.clone()).await;
    assert!(
        matches!(result.last, Event::Done { .. }),
        "{:?}",
        result.last
    );
    client.close().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["token", "revoke", &stolen])
        .env("EDGE_DATA_DIR", a.dir.path().join("data"))
        .env("EDGE_CERTS_DIR", &certs)
        .env("EDGE_STORE_BACKEND", "postgres")
        .env("EDGE_STORE_URL", db.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked = Instant::now();
    loop {
        let client = Client::connect(&b_config).await.unwrap();
        let (result, _) = upload(&client, "ports", Some(Format::Ndjson), gate.clone()).await;
        client.close().await;
        match &result.last {
            Event::Rejected { code, .. } if *code == ErrorCode::TokenRevoked => break,
            other => assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "node B still accepts the token revoked on node A after {:?}: {other:?}",
                revoked.elapsed()
            ),
        }
    }
    let _ = a.stop().await;
    let _ = b.stop().await;
}

/// The job id an upload's events name (its `accepted`).
fn job_id(events: &Events) -> String {
    events
        .all()
        .iter()
        .find_map(|e| match e {
            Event::Accepted { job, .. } => Some(job.clone()),
            _ => None,
        })
        .expect("the job was accepted")
}

/// The highest `committed` count an upload's events reported.
fn acknowledged(events: &[Event]) -> u64 {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Committed { records, .. } => Some(*records),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// A body fed by the test: what it writes to the other end is what the server reads.
pub(crate) fn piped() -> (
    tokio::io::DuplexStream,
    Box<dyn tokio::io::AsyncRead + Send + Unpin>,
) {
    let (writer, reader) = tokio::io::duplex(64 * 1024);
    (writer, Box::new(reader))
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_fails_the_job_cleanly_and_the_server_carries_on() {
    use tokio::io::AsyncWriteExt;
    // A cluster of its own: the test stops and starts it.
    let cluster = Cluster::start().unwrap();
    let url = cluster.url("postgres");
    let server = TestServer::start_with(|c| on_postgres(c, &url)).await;
    let client = server.client().await;

    let (mut body, reader) = piped();
    let events = Events::new();
    let sink = events.sink();
    let config = server.client_config();
    let job = tokio::spawn(async move {
        let client = Client::connect(&config).await.unwrap();
        let header = {
            let mut header = JobHeader::new("ports");
            header.format = Some(Format::Ndjson);
            header
        };
        let result = client.upload(UploadJob::new(header, reader), sink).await;
        client.close().await;
        result
    });
    let first = synthetic_ports_ndjson(3_000);
    body.write_all(&first).await.unwrap();
    events
        .until(
            "committed 3000",
            |e| matches!(e, Event::Committed { records, .. } if *records == 3_000),
        )
        .await;

    cluster.stop().unwrap();
    // More records while the database is away: their commit fails.
    let more = synthetic_ports_ndjson(6_000);
    let second: Vec<u8> = more
        .split_inclusive(|b| *b == b'\n')
        .skip(3_000)
        .flatten()
        .copied()
        .collect();
    let _ = body.write_all(&second).await;
    let _ = body.shutdown().await;
    let result = job.await.unwrap().unwrap();
    let Event::Failed {
        code,
        committed,
        message,
        ..
    } = &result.last
    else {
        panic!("the job must fail: {:?}", result.last);
    };
    assert_eq!(*code, ErrorCode::StoreUnavailable, "{message}");
    assert!(
        message.contains("127.0.0.1"),
        "names the database: {message}"
    );
    assert_eq!(
        *committed,
        acknowledged(&events.all()),
        "failed carries the committed count"
    );

    // The health check says so, for a load balancer to send clients elsewhere.
    let mut api = Api::connect(&server.client_config()).await.unwrap();
    let health = api.get("/healthz").await.unwrap();
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(health.body["status"], "store_unavailable");

    // Back again: no restart of edge; what was acknowledged is there.
    cluster.start_again().unwrap();
    let back = Instant::now();
    loop {
        let health = api.get("/healthz").await.unwrap();
        if health.status == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the health check still says {} after the database came back",
            health.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = open(&url);
    let stored = ports_in(&store);
    assert!(
        stored.len() as u64 >= *committed,
        "{} stored, {committed} acknowledged",
        stored.len()
    );
    for (i, (key, _)) in stored.iter().enumerate().take(*committed as usize) {
        assert_eq!(*key, format!("P{i:06}"), "acknowledged records are kept");
    }
    let (result, events) = upload(&client, "ports", Some(Format::Ndjson), more).await;
    assert!(matches!(result.last, Event::Done { .. }), "{events:?}");
    assert_eq!(ports_in(&store).len(), 6_000);
    client.close().await;
    let _ = server.stop().await;
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_away_or_set_up_by_a_newer_edge_is_refused_at_start_and_named() {
    // Nothing listens: refused at once, with the database named and what to check.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        certs_dir: dir.path().join("certs"),
        ..Config::default()
    };
    on_postgres(
        &mut config,
        &format!("postgres://edge:secret@127.0.0.1:{port}/edge?sslmode=disable"),
    );
    let started = Instant::now();
    let err = config
        .open_store(Registry::builtin())
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        err.contains(&format!("postgres://edge@127.0.0.1:{port}/edge")) && !err.contains("secret"),
        "{err}"
    );
    assert!(err.contains("EDGE_STORE_URL"), "{err}");

    // A database whose layout a newer edge wrote.
    let db = Database::new().unwrap();
    drop(open(db.url()));
    let pg = edge_tasks::store::Pg::connect(&PgOptions::new(db.url())).unwrap();
    pg.block(|pg| async move {
        let client = pg.client().await?;
        client
            .execute(
                "UPDATE edge_meta SET value = value + 1 WHERE key = 'schema'",
                &[],
            )
            .await
            .map_err(pg.query("raise the version"))?;
        Ok::<(), edge_pg::PgError>(())
    })
    .unwrap();
    let err = Store::open_postgres(&PgOptions::new(db.url()), "n", Registry::builtin())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("store's own tables") && err.contains("upgrade edge"),
        "{err}"
    );
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[test]
fn the_offline_commands_read_the_database() {
    let db = Database::new().unwrap();
    let store = open(db.url());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = runtime.block_on(TestServer::start_in(dir, |c| {
        on_postgres(c, db.url());
        c.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    }));
    runtime.block_on(async {
        let client = server.client().await;
        let ports = std::fs::read(crate::util::ports_json()).unwrap();
        upload(&client, "ports", Some(Format::Json), ports).await;
        client.close().await;
    });
    let data = server.dir.path().join("data");
    let edge = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
            .args(args)
            .env("EDGE_DATA_DIR", &data)
            .env("EDGE_STORE_BACKEND", "postgres")
            .env("EDGE_STORE_URL", db.url())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // While the server runs on this data dir (a shared database has no single-process lock).
    let (ok, out, err) = edge(&["ports", "get", "AEAJM"]);
    assert!(ok, "{err}");
    let port: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(port["name"], "Ajman");
    let (ok, out, err) = edge(&["ports", "list", "--limit", "2"]);
    assert!(ok, "{err}");
    assert!(out.contains("AEAJM"), "{out}");
    assert_eq!(edge_tasks::ports::count(&store).unwrap(), 1634);
    // The store's size in the metrics is the database's (asked at start, then every 30 s).
    let admin = server.admin.unwrap();
    let size = crate::util::metric(
        &crate::util::admin_get(admin, "/metrics").1,
        "edge_store_size_bytes",
    );
    assert!(size > 1_000_000.0, "the database's size: {size}");
    let (ok, out, _) = edge(&["config", "check"]);
    assert!(ok);
    assert!(out.contains("backend = \"postgres\""), "{out}");
    runtime.block_on(server.stop());
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_store_copy_moves_a_redb_deployment_to_postgres() {
    let db = Database::new().unwrap();
    let redb = TestServer::start().await;
    let (summaries, reads) = same_jobs(&redb).await;
    assert_eq!(summaries.len(), 3);
    let root = redb.dir.path().to_owned();
    let edge = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
            .args(args)
            .env("EDGE_DATA_DIR", root.join("data"))
            .env("EDGE_CERTS_DIR", root.join("certs"))
            .envs(env.iter().copied())
            .current_dir(&root)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "edge {args:?}: {stderr}");
        stdout
    };
    let stolen = edge(
        &[
            "token",
            "issue",
            "--sub",
            "mallory",
            "--scope",
            "ports:write",
        ],
        &[],
    );
    let stolen = stolen.trim().to_owned();
    edge(&["token", "revoke", &stolen], &[]);
    let from = format!("redb:{}", root.join("data").display());

    // While the server runs, the copy refuses: writes after it would be lost.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["store", "copy", "--from", &from, "--to", db.url()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stop `edge serve`"), "{stderr}");

    let dir = redb.stop().await;
    let report = edge(&["store", "copy", "--from", &from, "--to", db.url()], &[]);
    // 1,636 ports, and the 3 entries of their change history (2 versions, 1 change list).
    assert!(
        report.contains("copied       1639  ports (task plugin)"),
        "{report}"
    );
    assert!(
        report.contains("copied          3  job history"),
        "{report}"
    );
    assert!(
        report.contains("copied          1  revoked tokens"),
        "{report}"
    );
    assert_eq!(
        ports_in(&open(db.url())),
        crate::util::all_ports(&dir.path().join("data/edge.redb"))
    );

    // The same deployment on PostgreSQL: the same answers, its history, its revocations.
    let server = TestServer::start_in(dir, |c| on_postgres(c, db.url())).await;
    let mut api = Api::connect(&server.client_config()).await.unwrap();
    let jobs = api.get("/v1/jobs").await.unwrap();
    assert_eq!(
        jobs.body["items"].as_array().map(Vec::len),
        Some(3),
        "{}",
        jobs.body
    );
    for (path, expected) in READS.iter().zip(&reads) {
        assert_eq!(&api.get(path).await.unwrap().body, expected, "{path}");
    }
    let config = edge_client::ClientConfig {
        token: Some(stolen),
        ..server.client_config()
    };
    let client = Client::connect(&config).await.unwrap();
    let (result, _) = upload(&client, "ports", Some(Format::Ndjson), mixed_batch()).await;
    assert!(
        matches!(&result.last, Event::Rejected { code, .. } if *code == ErrorCode::TokenRevoked),
        "{:?}",
        result.last
    );
    client.close().await;
    let _ = server.stop().await;
}

/// A sequence of uploads, history reads and reverts over the API, with job ids replaced by
/// their place in the sequence (`j1`...) so that two runs compare.
async fn history_and_undo(server: &TestServer) -> Vec<serde_json::Value> {
    let client = server.client().await;
    let j1 = ports_job(&client, &[("AAAAA", "a1"), ("BBBBB", "b1")]).await;
    let j2 = ports_job(
        &client,
        &[
            ("AAAAA", "a2"),
            ("BBBBB", "b1"),
            ("CCCCC", "c2"),
            ("AAAAA", "a3"),
        ],
    )
    .await;
    let j3 = ports_job(&client, &[("AAAAA", "a4")]).await;
    client.close().await;
    let admin = edge_client::ClientConfig {
        token: Some(server.token("admin ports:read")),
        ..server.client_config()
    };
    let mut api = Api::connect(&admin).await.unwrap();
    let mut seen = Vec::new();
    let mut answer = |body: serde_json::Value| seen.push(body);
    for code in ["AAAAA", "BBBBB", "CCCCC"] {
        let page = api.get(&format!("/v1/ports/{code}/history")).await.unwrap();
        assert_eq!(page.status, 200, "{}", page.error_message());
        answer(page.body);
    }
    for job in [&j2, &j3, &j2, &j1] {
        let report = api.post(&format!("/v1/jobs/{job}/revert")).await.unwrap();
        assert_eq!(report.status, 200, "{}", report.error_message());
        answer(report.body);
    }
    let page = api.get("/v1/ports/AAAAA/history?limit=2").await.unwrap();
    answer(page.body);
    let ports = api.get("/v1/ports").await.unwrap();
    answer(ports.body);
    // Job ids, revert ids and times differ between runs: name them by what they are.
    let mut text = serde_json::to_string(&seen).unwrap();
    for (id, label) in [(&j1, "j1"), (&j2, "j2"), (&j3, "j3")] {
        text = text.replace(id.as_str(), label);
    }
    let mut seen: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    for value in &mut seen {
        scrub(value);
    }
    seen
}

/// Removes what differs between runs however right both are: times, and the ids of the
/// revert jobs themselves (16 hex digits: the uploads' ids were named already).
fn scrub(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("time");
            map.values_mut().for_each(scrub);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
        serde_json::Value::String(text)
            if text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            *text = "revert".into();
        }
        _ => {}
    }
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_history_and_undo_answer_the_same_on_postgres_as_on_redb() {
    let db = Database::new().unwrap();
    let redb = TestServer::start().await;
    let postgres = TestServer::start_with(|c| on_postgres(c, db.url())).await;
    let on_redb = history_and_undo(&redb).await;
    let on_postgres = history_and_undo(&postgres).await;
    assert_eq!(on_redb[0]["items"][0]["was"], "a3", "{:#}", on_redb[0]);
    assert_eq!(on_redb[3]["left_alone"], 1, "{:#}", on_redb[3]);
    for (i, (pg, redb)) in on_postgres.iter().zip(&on_redb).enumerate() {
        assert_eq!(
            pg, redb,
            "answer {i} differs:\npostgres {pg:#}\nredb {redb:#}"
        );
    }
    assert_eq!(on_postgres.len(), on_redb.len());
    // What the jobs recorded counts the same (the crash test's measure), before and after
    // pruning to one version per port.
    let dir = redb.stop().await;
    let _ = postgres.stop().await;
    let stores = [
        Store::open(&dir.path().join("data/edge.redb"), &Default::default()).unwrap(),
        open(db.url()),
    ];
    let changes = |store: &Store| edge_tasks::ports::changes::count_changes(store).unwrap();
    assert_eq!(changes(&stores[1]), changes(&stores[0]));
    // Pruning waits on the store like the server's own pruning does: off the runtime.
    let histories = tokio::task::spawn_blocking(move || {
        let prune = edge_tasks::registry::find("ports").unwrap().prune.unwrap();
        let mut histories = Vec::new();
        for store in &stores {
            let mut context = edge_tasks::Context::new(store.clone());
            context.limits = context
                .limits
                .with_ports_history(edge_tasks::task::HistoryKeep {
                    versions: 1,
                    days: 0,
                });
            let pruned = prune(&context, std::time::SystemTime::now(), &|| false).unwrap();
            let reads = edge_tasks::registry::find("ports").unwrap().reads.unwrap();
            let page = reads
                .read_history(&context, "AAAAA", &[("limit".into(), "10".into())])
                .unwrap();
            histories.push((pruned, page));
        }
        histories
    })
    .await
    .unwrap();
    assert!(histories[0].0 > 0, "something was pruned: {histories:?}");
    assert_eq!(histories[0].1["items"].as_array().map(Vec::len), Some(1));
    let scrubbed: Vec<serde_json::Value> = histories
        .into_iter()
        .map(|(pruned, mut page)| {
            scrub(&mut page);
            serde_json::json!({"pruned": pruned, "page": page})
        })
        .collect();
    assert_eq!(scrubbed[1], scrubbed[0], "pruning, the same on both");
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_checks_its_certificate() {
    // A certificate for 127.0.0.1 from a CA of edge's own making (the dev certificates).
    let certs = TestServer::start().await.stop().await;
    let certs = certs.path().join("certs");
    let cluster = Cluster::start_tls(&certs.join("server.pem"), &certs.join("server.key")).unwrap();
    let url = cluster.tls_url("postgres");

    // Trusted through ca_files: jobs run over TLS.
    let server = TestServer::start_with(|c| {
        on_postgres(c, &url);
        c.store.ca_files = vec![certs.join("ca.pem")];
    })
    .await;
    let client = server.client().await;
    let ports = std::fs::read(crate::util::ports_json()).unwrap();
    let (_, events) = upload(&client, "ports", Some(Format::Json), ports).await;
    assert_eq!(summary(&events)["inserted"], 1634);
    client.close().await;
    let _ = server.stop().await;
    let pg = edge_tasks::store::Pg::connect(&PgOptions {
        ca_files: vec![certs.join("ca.pem")],
        ..PgOptions::new(url.clone())
    })
    .unwrap();
    let encrypted: bool = pg
        .block(|pg| async move {
            let client = pg.client().await?;
            let row = client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .map_err(pg.query("ask about the connection"))?;
            Ok::<bool, edge_pg::PgError>(row.get(0))
        })
        .unwrap();
    assert!(encrypted, "the connection is TLS");

    // Not trusted: refused at start, saying why.
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        certs_dir: dir.path().join("certs"),
        ..Config::default()
    };
    on_postgres(&mut config, &url);
    let err = config
        .open_store(Registry::builtin())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid peer certificate") && err.contains("127.0.0.1"),
        "{err}"
    );
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_upload_keeps_what_it_acknowledged_and_only_its_own_jobs_are_interrupted()
{
    use crate::binary::ServeProcess;
    use std::path::Path;
    let db = Database::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("EDGE_STORE_BACKEND", Path::new("postgres")),
        ("EDGE_STORE_URL", Path::new(db.url())),
    ];
    let a = ServeProcess::start_with(dir.path(), &env);
    let certs = dir.path().join("certs");
    let b = TestServer::start_with(|c| {
        on_postgres(c, db.url());
        c.certs_dir = certs.clone();
        // Node B's job waits, body unfinished, while node A dies and comes back.
        c.jobs.min_upload_bytes_per_sec = 0;
    })
    .await;
    let b_client = edge_client::ClientConfig {
        server: format!("https://127.0.0.1:{}", b.addr.port()),
        ca: Some(certs.join("ca.pem")),
        token: Some(token(&certs, "ops")),
    };

    // A job on node B that is still running when node A dies.
    let (mut b_body, b_reader) = piped();
    let b_events = Events::new();
    let b_job = {
        let (config, sink) = (b_client.clone(), b_events.sink());
        tokio::spawn(async move {
            let client = Client::connect(&config).await.unwrap();
            let mut header = JobHeader::new("ports");
            header.format = Some(Format::Ndjson);
            let result = client.upload(UploadJob::new(header, b_reader), sink).await;
            client.close().await;
            result
        })
    };
    use tokio::io::AsyncWriteExt;
    b_body
        .write_all(b"{\"name\":\"On B\",\"unlocs\":[\"BNODE\"]}\n")
        .await
        .unwrap();
    b_events
        .until("B's commit", |e| {
            matches!(e, Event::Committed { records: 1, .. })
        })
        .await;

    // Node A takes a big upload and is killed once some of it is acknowledged.
    let a_events = Events::new();
    let a_job = {
        let (config, sink) = (a.client_config(dir.path()), a_events.sink());
        tokio::spawn(async move {
            let client = Client::connect(&config).await.unwrap();
            let mut header = JobHeader::new("ports");
            header.format = Some(Format::Ndjson);
            let body = synthetic_ports_ndjson(200_000);
            let reader = Box::new(std::io::Cursor::new(body));
            client.upload(UploadJob::new(header, reader), sink).await
        })
    };
    a_events
        .until(
            "A's first commit",
            |e| matches!(e, Event::Committed { records, .. } if *records > 0),
        )
        .await;
    a.signal("KILL");
    drop(a);
    // Its client would wait for its idle timeout: what it saw is what matters.
    a_job.abort();
    let a_id = job_id(&a_events);
    let stored = ports_in(&open(db.url()));
    for i in 0..acknowledged(&a_events.all()) as usize {
        let key = format!("P{i:06}");
        assert!(
            stored
                .binary_search_by(|(k, _)| k.as_str().cmp(&key))
                .is_ok(),
            "{key} was acknowledged by the killed node and must be stored"
        );
    }

    // Node A again, on the same data dir (its name): its cut-off job is interrupted; node B's
    // job, still running, is not.
    let a = ServeProcess::start_with(dir.path(), &env);
    let mut api = Api::connect(&b_client).await.unwrap();
    let a_record = api.get(&format!("/v1/jobs/{a_id}")).await.unwrap();
    assert_eq!(a_record.body["outcome"], "interrupted", "{}", a_record.body);
    let b_id = job_id(&b_events);
    let b_record = api.get(&format!("/v1/jobs/{b_id}")).await.unwrap();
    assert_eq!(b_record.body["outcome"], "running", "{}", b_record.body);
    b_body.shutdown().await.unwrap();
    let result = b_job.await.unwrap().unwrap();
    assert!(
        matches!(result.last, Event::Done { .. }),
        "{:?}",
        result.last
    );
    let _ = a.terminate();
    let _ = b.stop().await;
}

/// `edge user ARGS` on node `dir`'s data dir and the database `url`, `stdin` its input.
fn edge_user_on(dir: &std::path::Path, url: &str, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
        .arg("user")
        .args(args)
        .env("EDGE_DATA_DIR", dir.join("data"))
        .env("EDGE_CERTS_DIR", dir.join("certs"))
        .env("EDGE_STORE_BACKEND", "postgres")
        .env("EDGE_STORE_URL", url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "edge user {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `POST /v1/login` on the node at `port` (over HTTP/2, with the machine's curl).
fn sign_in(port: u16, ca: &std::path::Path, name: &str, password: &str) -> serde_json::Value {
    let body = serde_json::json!({"name": name, "password": password}).to_string();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "30", "--cacert"])
        .arg(ca)
        .args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            &body,
        ])
        .arg(format!("https://127.0.0.1:{port}/v1/login"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_on_one_node_signs_in_on_another_and_a_removal_reaches_both() {
    let db = Database::new().unwrap();
    let a = TestServer::start_with(|c| on_postgres(c, db.url())).await;
    let certs = a.dir.path().join("certs");
    let (b, _) = second_node(&a, db.url(), |_| {}).await;
    let (a_dir, url) = (a.dir.path().to_owned(), db.url().to_owned());
    let added = tokio::task::spawn_blocking(move || {
        edge_user_on(
            &a_dir,
            &url,
            &["add", "ana", "--scope", "ports:read"],
            "a long password\n",
        )
    })
    .await
    .unwrap();
    assert!(added.contains("added ana"), "{added}");

    // Added through node A, signed in on node B; the token works on both.
    let ca = certs.join("ca.pem");
    let login = sign_in(b.addr.port(), &ca, "ana", "a long password");
    let token = login["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{login}"))
        .to_owned();
    let config = |port: u16| edge_client::ClientConfig {
        server: format!("https://127.0.0.1:{port}"),
        ca: Some(ca.clone()),
        token: Some(token.clone()),
    };
    for port in [a.addr.port(), b.addr.port()] {
        let mut api = Api::connect(&config(port)).await.unwrap();
        assert_eq!(api.get("/v1/ports").await.unwrap().status, 200);
    }

    // Removed through node A: node B refuses the token within a second.
    let (a_dir, url) = (a.dir.path().to_owned(), db.url().to_owned());
    tokio::task::spawn_blocking(move || edge_user_on(&a_dir, &url, &["rm", "ana"], ""))
        .await
        .unwrap();
    let removed = Instant::now();
    loop {
        let mut api = Api::connect(&config(b.addr.port())).await.unwrap();
        let status = api.get("/v1/ports").await.unwrap().status;
        if status == 401 {
            break;
        }
        assert!(
            removed.elapsed() < Duration::from_secs(1),
            "node B still takes a removed user's token after {:?} (status {status})",
            removed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = a.stop().await;
    let _ = b.stop().await;
}
