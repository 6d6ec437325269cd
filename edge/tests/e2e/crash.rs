//! Crash safety of the real `edge` binary: upload a large file (a ports file, or a blob),
//! `kill -9` the server at a random moment, and check the store after every crash. It must open, pass redb's integrity
//! check, hold every record a `committed` event reported, and hold nothing that was never
//! sent; and every stored port must be in its job's list of changes (the change history is
//! written in the same transaction). Also prints how long reopening the store after a crash takes (never asserted).
//!
//! Each kill comes at a random share of the time a full upload takes on this machine (timed
//! in a first round). The shares come from a small PRNG whose seed is printed;
//! `EDGE_CRASH_SEED=<seed>` replays the same shares (where exactly the kill lands in the
//! server's work still depends on the machine).

use crate::binary::ServeProcess;
use edge_client::{Client, ClientError, JobResult, UploadJob};
use edge_proto::{Event, Format, JobHeader};
use edge_tasks::ports::{self, ListQuery, Port};
use edge_tasks::store::StoreOptions;
use edge_tasks::Store;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Records per round: a full upload takes a few seconds in a debug build and commits every
/// 100 ms or 10,000 records, so a random kill lands between or during one of many commits.
const RECORDS: u64 = 80_000;

/// Rounds in which the server is killed at a random moment (after one calibration round).
const CRASH_ROUNDS: u32 = 20;

/// The key of record `i` of round `round`: every round has its own keys, in upload order.
fn key(round: u32, i: u64) -> String {
    format!("R{round:02}-{i:07}")
}

/// Record `i` of round `round`, as the server must store it.
fn port(round: u32, i: u64) -> Port {
    Port {
        name: format!("Crash port {round}-{i}"),
        city: Some("Crashville".into()),
        country: Some("Testland".into()),
        alias: Vec::new(),
        regions: Vec::new(),
        coordinates: Some([(i % 360) as f64 - 180.0, (i % 180) as f64 - 90.0]),
        province: None,
        timezone: Some("Etc/UTC".into()),
        unlocs: vec![key(round, i)],
        code: None,
    }
}

/// Round `round`'s upload: `n` records as NDJSON, keyed by `unlocs[0]` (written by hand: the
/// same records as [`port`] gives, much faster than serializing each one in a debug build).
fn round_ndjson(round: u32, n: u64) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(n as usize * 200);
    for i in 0..n {
        let [lon, lat] = [(i % 360) as f64 - 180.0, (i % 180) as f64 - 90.0];
        writeln!(
            out,
            r#"{{"name":"Crash port {round}-{i}","city":"Crashville","country":"Testland","alias":[],"regions":[],"coordinates":[{lon:?},{lat:?}],"timezone":"Etc/UTC","unlocs":["{}"]}}"#,
            key(round, i)
        )
        .unwrap();
    }
    out
}

/// splitmix64: small, deterministic, good enough to spread kill delays.
struct Rng(u64);

impl Rng {
    /// A generator seeded from `EDGE_CRASH_SEED`, else from the clock; the seed is printed
    /// (after `label`) so that a run can be replayed.
    fn seeded(label: &str) -> Rng {
        let seed = match std::env::var("EDGE_CRASH_SEED") {
            Ok(seed) => seed.parse().expect("EDGE_CRASH_SEED is a number"),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        eprintln!("{label}: seed {seed} (EDGE_CRASH_SEED={seed} replays these kill moments)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An upload running in the background, and the highest `committed` count it has seen.
struct Running {
    committed: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    task: JoinHandle<Result<JobResult, ClientError>>,
}

/// Starts uploading `body` as one `ports` job; the task owns the client, so aborting it drops
/// the connection.
fn start_upload(client: Client, body: Vec<u8>) -> Running {
    let committed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let (seen, bad) = (committed.clone(), errors.clone());
    let mut header = JobHeader::new("ports");
    header.format = Some(Format::Ndjson);
    header.size = Some(body.len() as u64);
    let job = UploadJob::new(header, Box::new(std::io::Cursor::new(body)));
    let task = tokio::spawn(async move {
        let result = client
            .upload(job, move |event: &Event| match event {
                Event::Committed { records, .. } => {
                    seen.fetch_max(*records, Ordering::SeqCst);
                }
                Event::RecordError { .. } => {
                    bad.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            })
            .await;
        // Not closed: the server is killed next anyway, and its kill is what is tested.
        drop(client);
        result
    });
    Running {
        committed,
        errors,
        task,
    }
}

/// What one round left in the store.
struct Outcome {
    /// Records of this round found in the store (always its first ones).
    stored: u64,
    /// Reopening after the crash: `check_integrity`, then `Store::open`.
    check: Duration,
    open: Duration,
}

/// Reopens the store of a killed server and checks round `round`, whose client saw
/// `committed` records committed; `earlier[j]` is what round `j` left in the store.
fn check_after_crash(path: &Path, round: u32, committed: u64, earlier: &[u64]) -> Outcome {
    let started = Instant::now();
    let consistent = Store::check_integrity(path);
    let check = started.elapsed();
    assert!(
        matches!(consistent, Ok(true)),
        "round {round}: the store fails its integrity check after a crash: {consistent:?}"
    );
    let started = Instant::now();
    let store = Store::open(path, &StoreOptions::default())
        .unwrap_or_else(|e| panic!("round {round}: the store does not open after a crash: {e}"));
    let open = started.elapsed();

    // This round's keys: exactly its first `stored` records, each as it was sent.
    let prefix = format!("R{round:02}-");
    let mut stored = 0u64;
    let mut after = prefix.clone();
    'pages: loop {
        let page = ports::list(
            &store,
            &ListQuery {
                country: None,
                after: Some(&after),
                limit: ports::MAX_PAGE,
            },
        )
        .unwrap();
        for (k, p) in &page.items {
            if !k.starts_with(&prefix) {
                break 'pages;
            }
            assert!(
                stored < RECORDS,
                "round {round}: the store holds {k:?}, a record that was never sent"
            );
            assert_eq!(
                *k,
                key(round, stored),
                "round {round}: the stored records are not the first ones of the upload \
                 (record {stored} is missing, or {k:?} was never sent)"
            );
            assert_eq!(*p, port(round, stored), "round {round}: {k:?} differs");
            stored += 1;
        }
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    assert!(
        stored >= committed,
        "round {round}: a committed event reported {committed} records, but only the first \
         {stored} are in the store after the crash"
    );

    // Earlier rounds: still exactly what they left, and nothing else anywhere.
    for (j, &kept) in earlier.iter().enumerate() {
        let j = j as u32;
        if kept > 0 {
            assert!(
                ports::get(&store, &key(j, kept - 1)).unwrap().is_some(),
                "round {round}: record {} of round {j} was lost",
                kept - 1
            );
        }
        assert!(
            ports::get(&store, &key(j, kept)).unwrap().is_none(),
            "round {round}: record {kept} of round {j} appeared later"
        );
    }
    let total: u64 = earlier.iter().sum::<u64>() + stored;
    assert_eq!(
        ports::count(&store).unwrap(),
        total,
        "round {round}: the store holds records other than the ones committed"
    );
    // Every round inserts keys of its own: each stored port is in exactly one job's list of
    // changes, written in the same transaction (or the revert of a crashed job would miss it).
    assert_eq!(
        ports::changes::count_changes(&store).unwrap(),
        total,
        "round {round}: the jobs' lists of changed ports disagree with the ports stored"
    );
    Outcome {
        stored,
        check,
        open,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_keeps_every_committed_record_and_a_sound_store() {
    let mut rng = Rng::seeded("crash");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/edge.redb");
    let mut kept: Vec<u64> = Vec::new();
    let mut reopen: Vec<Duration> = Vec::new();
    // Round 0 uploads the whole file to time a full upload on this machine; its kill hits an
    // idle server. Later rounds kill at a random moment within that time.
    let mut window = Duration::ZERO;
    for round in 0..=CRASH_ROUNDS {
        let body = round_ndjson(round, RECORDS);
        let started = Instant::now();
        let server = ServeProcess::start(dir.path());
        let restart = started.elapsed();
        let client = Client::connect(&server.client_config(dir.path()))
            .await
            .expect("the client connects after a restart");
        let upload = start_upload(client, body);
        let started = Instant::now();
        let delay = if round == 0 {
            let finished = tokio::time::timeout(Duration::from_secs(60), async {
                while !upload.task.is_finished() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            assert!(finished.is_ok(), "a full upload takes over 60 s");
            window = started.elapsed();
            window
        } else {
            // A share of the full upload time, in thousandths.
            let share = rng.below(1001) as u32;
            let delay = window * share / 1000;
            tokio::time::sleep(delay).await;
            delay
        };
        // kill -9, and wait for the process to be gone (it holds the store's lock).
        drop(server);
        upload.task.abort();
        let result = upload.task.await;
        let committed = upload.committed.load(Ordering::SeqCst);
        assert_eq!(upload.errors.load(Ordering::SeqCst), 0, "round {round}");
        let done = match &result {
            Ok(Ok(JobResult {
                last: Event::Done { committed, .. },
                ..
            })) => Some(*committed),
            Ok(Ok(other)) => panic!("round {round}: unexpected end of the job: {other:?}"),
            // Cut off by the kill: the client's error, or aborted while it waited.
            Ok(Err(_)) | Err(_) => None,
        };
        if round == 0 {
            assert_eq!(done, Some(RECORDS), "the calibration upload completes");
        }

        let outcome = check_after_crash(&path, round, committed, &kept);
        if let Some(done) = done {
            assert_eq!(
                outcome.stored, done,
                "round {round}: done, yet not all stored"
            );
        }
        eprintln!(
            "crash: round {round:2}: kill -9 after {:6.0} ms ({}); committed seen {committed:6}, \
             stored {:6} of {RECORDS}; restart {:5.0} ms; reopen {:6.1} ms \
             (check_integrity {:.1} + open {:.1})",
            ms(delay),
            if done.is_some() {
                "job done"
            } else {
                "mid-job"
            },
            outcome.stored,
            ms(restart),
            ms(outcome.check + outcome.open),
            ms(outcome.check),
            ms(outcome.open),
        );
        kept.push(outcome.stored);
        reopen.push(outcome.check + outcome.open);
    }
    reopen.sort();
    eprintln!(
        "crash: reopen after kill -9 over {} rounds: median {:.1} ms, max {:.1} ms \
         (store of {} records at the end)",
        reopen.len(),
        ms(reopen[reopen.len() / 2]),
        ms(*reopen.last().unwrap()),
        kept.iter().sum::<u64>()
    );
}

/// Rounds of the blob crash test (after one calibration round).
const BLOB_ROUNDS: u32 = 8;

/// The size of each round's blob: many chunks, so that a kill lands between two of them.
const BLOB_BYTES: usize = 24 * 1024 * 1024;

/// Round `round`'s blob: bytes of its own.
fn blob_body(round: u32) -> Vec<u8> {
    let mut rng = Rng(u64::from(round) + 1);
    let mut body = Vec::with_capacity(BLOB_BYTES);
    while body.len() < BLOB_BYTES {
        body.extend_from_slice(&rng.next().to_le_bytes());
    }
    body.truncate(BLOB_BYTES);
    body
}

/// Starts uploading `body` as blob `name`; the task owns the client.
fn start_blob_upload(
    client: Client,
    name: String,
    body: Vec<u8>,
) -> JoinHandle<Result<JobResult, ClientError>> {
    let mut header = JobHeader::new("blobs");
    header.name = Some(name);
    header.size = Some(body.len() as u64);
    let job = UploadJob::new(header, Box::new(std::io::Cursor::new(body)));
    tokio::spawn(async move {
        let result = client.upload(job, |_: &Event| {}).await;
        drop(client);
        result
    })
}

/// One-record `ports` jobs, one after another, until aborted.
fn start_small_jobs(client: Client) -> JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0u64.. {
            let mut header = JobHeader::new("ports");
            header.format = Some(Format::Ndjson);
            let body = format!(r#"{{"name":"tick {i}","unlocs":["TICK{}"]}}"#, i % 10);
            let job = UploadJob::new(header, Box::new(std::io::Cursor::new(body.into_bytes())));
            if client.upload(job, |_: &Event| {}).await.is_err() {
                return;
            }
        }
    })
}

/// The blob `name` in `store`: `None`, or its size and the BLAKE3 of the bytes read back.
fn stored_blob(store: &Store, name: &str) -> Option<(u64, String)> {
    let reads = edge_tasks::blobs::PLUGIN.reads.expect("blobs has reads");
    let open = reads.content.expect("blobs are files");
    let context = edge_tasks::Context::new(store.clone());
    let mut content = open(&context, name).expect("the store reads")?;
    let mut hasher = blake3::Hasher::new();
    let size = content.info().size;
    content
        .read(0..size, &mut |piece| {
            hasher.update(&piece);
            true
        })
        .expect("a stored blob reads whole");
    assert_eq!(
        content.info().etag,
        hasher.finalize().to_hex().to_string(),
        "blob {name}: its bytes are not the digest it was stored with"
    );
    Some((size, hasher.finalize().to_hex().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_blob_uploads_leaves_each_blob_whole_or_absent_and_no_orphans() {
    let mut rng = Rng::seeded("blob crash");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/edge.redb");
    // (name, digest, whether its job reported done) of every round so far.
    let mut rounds: Vec<(String, String, bool)> = Vec::new();
    let mut window = Duration::ZERO;
    for round in 0..=BLOB_ROUNDS {
        let body = blob_body(round);
        let name = format!("crash-{round}.bin");
        let digest = blake3::hash(&body).to_hex().to_string();
        let server = ServeProcess::start(dir.path());
        let config = server.client_config_for(dir.path(), "blobs:write ports:write");
        let client = Client::connect(&config)
            .await
            .expect("the client connects after a restart");
        // Small jobs beside the upload commit durably, as on a busy server: the staged
        // chunks committed before each of them are then on disk too, and a kill leaves
        // them behind for the prune.
        let ticker = start_small_jobs(
            Client::connect(&config)
                .await
                .expect("a second client connects"),
        );
        let upload = start_blob_upload(client, name.clone(), body);
        let started = Instant::now();
        let delay = if round == 0 {
            let finished = tokio::time::timeout(Duration::from_secs(120), async {
                while !upload.is_finished() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            assert!(finished.is_ok(), "a blob upload takes over 120 s");
            window = started.elapsed();
            window
        } else {
            let delay = window * rng.below(1001) as u32 / 1000;
            tokio::time::sleep(delay).await;
            delay
        };
        drop(server);
        upload.abort();
        ticker.abort();
        let _ = ticker.await;
        let done = match upload.await {
            Ok(Ok(JobResult {
                last: Event::Done { summary, .. },
                ..
            })) => {
                assert_eq!(summary["digest"], digest.as_str(), "round {round}");
                true
            }
            Ok(Ok(other)) => panic!("round {round}: unexpected end of the job: {other:?}"),
            Ok(Err(_)) | Err(_) => false,
        };
        if round == 0 {
            assert!(done, "the calibration upload completes");
        }
        rounds.push((name, digest, done));

        assert!(
            matches!(Store::check_integrity(&path), Ok(true)),
            "round {round}: the store fails its integrity check after a crash"
        );
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        let mut present = 0;
        for (j, (name, digest, done)) in rounds.iter().enumerate() {
            match stored_blob(&store, name) {
                Some((size, got)) => {
                    assert_eq!(
                        size, BLOB_BYTES as u64,
                        "round {round}: blob of round {j} is partial"
                    );
                    assert_eq!(&got, digest, "round {round}: blob of round {j} differs");
                    present += 1;
                }
                None => assert!(
                    !done,
                    "round {round}: blob of round {j} was reported done, yet is gone"
                ),
            }
        }
        eprintln!(
            "blob crash: round {round}: kill -9 after {:.0} ms ({}); {present} of {} blobs whole, the rest absent",
            ms(delay),
            if done { "job done" } else { "mid-job" },
            rounds.len()
        );
    }
    // What cut-off uploads staged goes at the next start (the prune) once they can no longer
    // be resumed (their cursors expired: here at once); nothing else is left.
    let store = Store::open(&path, &StoreOptions::default()).unwrap();
    let expired = edge_tasks::resume::expire(&store, Duration::ZERO).unwrap();
    let (staged, loose) = edge_tasks::blobs::stored::unpublished(&store).unwrap();
    drop(store);
    eprintln!("blob crash: before the last start: {expired} cursors expired, {staged} staged uploads, {loose} loose chunks");
    let log_path = dir.path().join("last-start.log");
    let server = ServeProcess::start_logging(
        dir.path(),
        "human",
        std::fs::File::create(&log_path).unwrap(),
    );
    if staged > 0 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("pruned what the task keeps")
        {
            assert!(Instant::now() < deadline, "no prune at start within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(server.terminate().success());
    let store = Store::open(&path, &StoreOptions::default()).unwrap();
    assert_eq!(
        edge_tasks::blobs::stored::unpublished(&store).unwrap(),
        (0, 0),
        "orphans are left after the start's prune"
    );
    for (name, digest, done) in &rounds {
        if *done {
            assert_eq!(
                stored_blob(&store, name).map(|b| b.1).as_ref(),
                Some(digest)
            );
        }
    }
}
