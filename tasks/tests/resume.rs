//! Jobs cut off at random points and resumed from their cursor, through the real pipeline
//! and a real redb store: every record is applied exactly once, so the store, the task's
//! figures and the body's SHA-256 equal those of one uncut upload of the same bytes.
//!
//! A cut is the source breaking off (`upload_aborted`) after any number of bytes: mid-record,
//! mid-UTF-8 sequence, inside the first chunk; a resume claims the cursor
//! ([`resume::claim`]) and feeds the body from the cursor's offset, in other chunk sizes.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use edge_proto::{ErrorCode, Event, Format};
use edge_tasks::pipeline::{self, Input, JobSpec, Resume, Settings, Source};
use edge_tasks::resume::{self, Claimant, Cursor, Origin};
use edge_tasks::store::StoreOptions;
use edge_tasks::task::{JobRef, UploadInfo};
use edge_tasks::{ports, registry, Context, Store};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::time::Duration;

/// A source that hands out `bytes` in chunks of `chunk` bytes, then ends, or breaks off
/// (`upload_aborted`) after `cut` bytes; `during` runs before the chunk it names.
struct Feed {
    chunks: VecDeque<Bytes>,
    cut: bool,
    before: Option<(usize, Box<dyn FnMut()>)>,
    handed: usize,
}

impl Feed {
    fn new(bytes: &[u8], chunk: usize, cut: Option<usize>) -> Feed {
        let end = cut.unwrap_or(bytes.len()).min(bytes.len());
        Feed {
            chunks: bytes[..end]
                .chunks(chunk.max(1))
                .map(Bytes::copy_from_slice)
                .collect(),
            cut: cut.is_some(),
            before: None,
            handed: 0,
        }
    }
}

impl Source for Feed {
    fn next(&mut self, _wait: Duration) -> Input {
        if let Some((at, run)) = &mut self.before {
            if *at == self.handed {
                run();
            }
        }
        self.handed += 1;
        match self.chunks.pop_front() {
            Some(chunk) => Input::Chunk(chunk),
            None if self.cut => Input::Aborted {
                code: ErrorCode::UploadAborted,
                message: "cut by the test".into(),
            },
            None => Input::End,
        }
    }
}

/// A small deterministic generator (xorshift), so that every run cuts at the same points.
struct Rng(u64);

impl Rng {
    /// One to three places to cut a body of `len` bytes, in order.
    fn cuts(&mut self, len: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = (0..1 + self.below(3))
            .map(|_| self.below(len as u64) as usize)
            .collect();
        cuts.sort_unstable();
        cuts
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn settings() -> Settings {
    Settings {
        commit_records: 97,
        commit_interval: Duration::from_secs(3600),
        ..Settings::default()
    }
}

/// The settings a job of `task` runs with: a `blobs` job commits every other storage chunk.
fn settings_for(task: &str) -> Settings {
    match task {
        "blobs" => Settings {
            commit_records: 2,
            ..settings()
        },
        _ => settings(),
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
    (dir, store)
}

const JOB: &str = "0000000000000001";

fn spec(task: &str, format: Option<Format>) -> JobSpec {
    JobSpec {
        job: JOB.into(),
        upload_stream: None,
        task: task.into(),
        format,
        name: None,
        size: None,
        source: None,
        unchanged: false,
        sha256: None,
        atomic: false,
    }
}

fn origin(task: &str, format: Option<Format>) -> Origin {
    Origin {
        job: JOB.into(),
        sub: "alice".into(),
        task: task.into(),
        params: Map::new(),
        format,
        name: None,
        size: None,
        sha256: None,
        atomic: false,
        transport: "test".into(),
    }
}

/// Runs one attempt of the job on `store` from `cursor`, reading `source`; returns its events.
fn attempt(
    store: &Store,
    job: &JobSpec,
    cursor: Cursor,
    source: &mut dyn Source,
) -> (pipeline::Report, Vec<Event>) {
    let plugin = registry::find(&job.task).unwrap();
    let context = Context::new(store.clone())
        .for_job(JobRef {
            id: JOB.into(),
            sub: "alice".into(),
        })
        .with_upload(UploadInfo {
            name: job.name.clone(),
            size: job.size,
            content_type: None,
        });
    let task = (plugin.create)(&Map::new(), &context).unwrap();
    let mut events = Vec::new();
    let resume = Resume {
        store: store.clone(),
        cursor,
    };
    let report = pipeline::run_resumable(
        job,
        plugin,
        task,
        source,
        &settings_for(&job.task),
        &mut |e| events.push(e),
        Some(resume),
    );
    (report, events)
}

fn claim(store: &Store) -> Cursor {
    let claimant = Claimant {
        sub: "alice",
        admin: false,
        window: Duration::from_secs(3600),
    };
    resume::claim(store, JOB, claimant).unwrap()
}

/// The job on `body`, cut after each of `cuts` bytes of the body (absolute offsets, in
/// order) and resumed after each; returns the last attempt's final event.
fn cut_and_resume(
    store: &Store,
    job: &JobSpec,
    body: &[u8],
    cuts: &[usize],
    rng: &mut Rng,
) -> Event {
    let first = Cursor::start(origin(&job.task, job.format));
    resume::begin(store, &first).wait().unwrap();
    let mut cursor = first;
    for &cut in cuts.iter().chain([&usize::MAX]) {
        let offset = usize::try_from(cursor.offset()).unwrap();
        let rest = &body[offset..];
        let cut = (cut != usize::MAX).then(|| cut.saturating_sub(offset));
        let chunk = 1 + rng.below(5000) as usize;
        let (report, events) =
            attempt(store, job, cursor.clone(), &mut Feed::new(rest, chunk, cut));
        check_events(&events, cursor.epoch > 1, offset as u64);
        match cut {
            None => return report.last,
            Some(_) => {
                assert!(
                    matches!(
                        report.last,
                        Event::Failed {
                            code: ErrorCode::UploadAborted,
                            ..
                        }
                    ),
                    "{:?}",
                    report.last
                );
                resume::end(store, JOB, cursor.epoch, resume::Outcome::Stopped)
                    .wait()
                    .unwrap();
                cursor = claim(store);
            }
        }
    }
    unreachable!("the last attempt is not cut")
}

/// Every attempt starts with `accepted`; a resumed one then says `resumed` at its offset;
/// `committed` offsets only grow.
fn check_events(events: &[Event], resumed: bool, offset: u64) {
    assert!(
        matches!(events.first(), Some(Event::Accepted { .. })),
        "{events:?}"
    );
    if resumed {
        assert!(
            matches!(events.get(1), Some(Event::Resumed { offset: at, .. }) if *at == offset),
            "{:?}",
            events.get(1)
        );
    }
    let mut last = offset;
    for event in events {
        if let Event::Committed { offset, .. } = event {
            assert!(*offset >= last, "committed offsets go back: {events:?}");
            last = *offset;
        }
    }
}

/// What the final event says, without what differs between runs (the duration).
fn outcome(last: &Event) -> Value {
    let Event::Done {
        bytes,
        records,
        committed,
        errors,
        summary,
        first_errors,
        sha256,
        ..
    } = last
    else {
        panic!("the job did not end done: {last:?}")
    };
    serde_json::json!({
        "bytes": bytes, "records": records, "committed": committed, "errors": errors,
        "summary": summary, "first_errors": first_errors, "sha256": sha256,
    })
}

/// Numbers one per line, some of them bad, with multi-byte characters to cut through.
fn numbers(count: usize) -> Vec<u8> {
    let mut body = String::new();
    let mut rng = Rng(7);
    for i in 0..count {
        match rng.below(50) {
            0 => body.push_str("naïve ünïcode\n"),
            1 => body.push('\n'),
            _ => body.push_str(&format!("{}.{}\n", rng.below(1_000_000), i % 97)),
        }
    }
    body.into_bytes()
}

fn uncut(job: &JobSpec, body: &[u8]) -> (tempfile::TempDir, Store, Value) {
    let (dir, store) = store();
    let mut rng = Rng(1);
    let last = cut_and_resume(&store, job, body, &[], &mut rng);
    (dir, store, outcome(&last))
}

#[test]
fn stats_cut_thirty_times_anywhere_gives_the_uncut_figures_bit_for_bit() {
    let body = numbers(20_000);
    let job = spec("stats", Some(Format::Lines));
    let (_dir, _store, expected) = uncut(&job, &body);
    let mut rng = Rng(42);
    for round in 0..30 {
        let (_dir, store) = store();
        let cuts = rng.cuts(body.len());
        let last = cut_and_resume(&store, &job, &body, &cuts, &mut rng);
        assert_eq!(outcome(&last), expected, "round {round}, cuts {cuts:?}");
    }
}

/// Every port in the store, in key order, as JSON.
fn all_ports(store: &Store) -> Vec<(String, Value)> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = ports::ListQuery {
            country: None,
            after: after.as_deref(),
            limit: ports::MAX_PAGE,
        };
        let page = ports::list(store, &query).unwrap();
        all.extend(
            page.items
                .into_iter()
                .map(|(key, port)| (key, serde_json::to_value(port).unwrap())),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

fn ports_file() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/ports.json");
    std::fs::read(path).unwrap()
}

#[test]
fn ports_cut_thirty_times_anywhere_stores_what_one_upload_stores() {
    let body = ports_file();
    let job = spec("ports", None);
    let (_dir, clean, expected) = uncut(&job, &body);
    let stored = all_ports(&clean);
    assert_eq!(stored.len(), 1634);
    let mut rng = Rng(4242);
    for round in 0..30 {
        let (_dir, store) = store();
        let cuts = rng.cuts(body.len());
        let last = cut_and_resume(&store, &job, &body, &cuts, &mut rng);
        assert_eq!(outcome(&last), expected, "round {round}, cuts {cuts:?}");
        assert!(
            all_ports(&store) == stored,
            "round {round}: the store differs"
        );
        assert_eq!(
            ports::changes::count_changes(&store).unwrap(),
            ports::changes::count_changes(&clean).unwrap(),
            "round {round}: the change history differs"
        );
    }
}

#[test]
fn a_cut_inside_the_first_record_or_the_csv_header_starts_over_cleanly() {
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/ports.csv"),
    )
    .unwrap();
    let job = spec("ports", Some(Format::Csv));
    let (_dir, clean, expected) = uncut(&job, &body);
    let mut rng = Rng(9);
    for cut in [0, 1, 10, 100, body.len() / 2, body.len() - 1] {
        let (_dir, store) = store();
        let last = cut_and_resume(&store, &job, &body, &[cut], &mut rng);
        assert_eq!(outcome(&last), expected, "cut at {cut}");
        assert!(all_ports(&store) == all_ports(&clean), "cut at {cut}");
    }
}

#[test]
fn a_resume_takes_over_the_job_and_the_writer_before_it_is_refused() {
    let body = numbers(5_000);
    let job = spec("stats", Some(Format::Lines));
    let (_dir, _clean, expected) = uncut(&job, &body);
    let (_dir, store) = store();
    resume::begin(&store, &Cursor::start(origin("stats", Some(Format::Lines))))
        .wait()
        .unwrap();
    // The first client is still sending when a second one resumes the job.
    let claimed = std::rc::Rc::new(std::cell::RefCell::new(None));
    let mut first = Feed::new(&body, 1000, None);
    let (store2, claimed2) = (store.clone(), claimed.clone());
    first.before = Some((
        8,
        Box::new(move || *claimed2.borrow_mut() = Some(claim(&store2))),
    ));
    let start = resume::load(&store, JOB).unwrap().unwrap();
    let (report, _) = attempt(&store, &job, start, &mut first);
    let Event::Failed { code, .. } = &report.last else {
        panic!("{:?}", report.last)
    };
    assert_eq!(*code, ErrorCode::TakenOver);
    let cursor = claimed.borrow_mut().take().unwrap();
    let offset = usize::try_from(cursor.offset()).unwrap();
    let (report, _) = attempt(
        &store,
        &job,
        cursor,
        &mut Feed::new(&body[offset..], 777, None),
    );
    assert_eq!(outcome(&report.last), expected);
}

/// Runs an atomic job of `task` on `body` (cut after `cut` bytes if given, declaring
/// `sha256`), with `max` as what it may hold; returns its report and events.
fn atomic(
    store: &Store,
    task: &str,
    body: &[u8],
    sha256: Option<String>,
    cut: Option<usize>,
    max: usize,
) -> (pipeline::Report, Vec<Event>) {
    let mut job = spec(task, None);
    job.atomic = true;
    job.sha256 = sha256.clone();
    let mut origin = origin(task, None);
    origin.atomic = true;
    origin.sha256 = sha256;
    let cursor = match resume::load(store, JOB).unwrap() {
        Some(_) => claim(store),
        None => {
            let cursor = Cursor::start(origin);
            resume::begin(store, &cursor).wait().unwrap();
            cursor
        }
    };
    let offset = usize::try_from(cursor.offset()).unwrap();
    let plugin = registry::find(task).unwrap();
    let context = Context::new(store.clone()).for_job(JobRef {
        id: JOB.into(),
        sub: "alice".into(),
    });
    let task = (plugin.create)(&Map::new(), &context).unwrap();
    let settings = Settings {
        atomic_max_bytes: max,
        ..settings()
    };
    let mut events = Vec::new();
    let resume = Resume {
        store: store.clone(),
        cursor,
    };
    let report = pipeline::run_resumable(
        &job,
        plugin,
        task,
        &mut Feed::new(&body[offset..], 4096, cut),
        &settings,
        &mut |e| events.push(e),
        Some(resume),
    );
    (report, events)
}

fn sha256_hex(body: &[u8]) -> String {
    let mut hash = resume::sha256::Sha256::new();
    hash.update(body);
    hash.hex()
}

const MIB: usize = 1024 * 1024;

#[test]
fn an_atomic_job_keeps_nothing_unless_all_of_it_is_kept() {
    let body = ports_file();
    // Another file's digest: nothing of it is kept.
    let (_dir, store) = store();
    let (report, events) = atomic(
        &store,
        "ports",
        &body,
        Some(sha256_hex(b"other")),
        None,
        64 * MIB,
    );
    let Event::Failed {
        code, committed, ..
    } = &report.last
    else {
        panic!("{:?}", report.last)
    };
    assert_eq!((*code, *committed), (ErrorCode::DigestMismatch, 0));
    assert!(all_ports(&store).is_empty());
    assert!(!events.iter().any(|e| matches!(e, Event::Committed { .. })));
    // Cut: nothing kept, and the resume starts over from the first byte.
    let (_dir, store) = self::store();
    let (report, _) = atomic(
        &store,
        "ports",
        &body,
        Some(sha256_hex(&body)),
        Some(body.len() / 2),
        64 * MIB,
    );
    assert!(matches!(
        report.last,
        Event::Failed {
            code: ErrorCode::UploadAborted,
            committed: 0,
            ..
        }
    ));
    assert!(all_ports(&store).is_empty());
    resume::end(&store, JOB, 1, resume::Outcome::Stopped)
        .wait()
        .unwrap();
    let (report, events) = atomic(
        &store,
        "ports",
        &body,
        Some(sha256_hex(&body)),
        None,
        64 * MIB,
    );
    assert!(
        matches!(events.get(1), Some(Event::Resumed { offset: 0, .. })),
        "{:?}",
        events.get(1)
    );
    let Event::Done {
        committed, summary, ..
    } = &report.last
    else {
        panic!("{:?}", report.last)
    };
    assert_eq!(*committed, 1634);
    assert_eq!(summary["inserted"], 1634);
    assert_eq!(all_ports(&store).len(), 1634);
    // All of it in one commit, at the end.
    let commits: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::Committed { .. }))
        .collect();
    assert_eq!(commits.len(), 1, "{commits:?}");
}

#[test]
fn an_atomic_job_bigger_than_its_limit_fails_and_keeps_nothing() {
    let body = ports_file();
    let (_dir, store) = store();
    let (report, _) = atomic(&store, "ports", &body, None, None, 64 * 1024);
    let Event::Failed {
        code,
        message,
        committed,
        ..
    } = &report.last
    else {
        panic!("{:?}", report.last)
    };
    assert_eq!((*code, *committed), (ErrorCode::LimitExceeded, 0));
    assert!(message.contains("jobs.atomic_max_mib"), "{message}");
    assert!(all_ports(&store).is_empty());
}

#[test]
fn an_atomic_job_answers_nothing_before_its_digest_matched() {
    let body = b"1\n2\n3\n".to_vec();
    let (_dir, store) = store();
    let (report, events) = atomic(
        &store,
        "primes",
        &body,
        Some(sha256_hex(b"1\n2\n")),
        None,
        MIB,
    );
    assert!(matches!(
        report.last,
        Event::Failed {
            code: ErrorCode::DigestMismatch,
            ..
        }
    ));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Result { .. })),
        "{events:?}"
    );
    let (_dir, store) = self::store();
    let (report, events) = atomic(&store, "primes", &body, Some(sha256_hex(&body)), None, MIB);
    assert!(matches!(report.last, Event::Done { .. }));
    let answers = events
        .iter()
        .filter(|e| matches!(e, Event::Result { .. }))
        .count();
    assert_eq!(answers, 3);
}

/// Bytes that do not compress, a few storage chunks' worth.
fn photo(len: usize) -> Vec<u8> {
    let mut rng = Rng(99);
    (0..len).map(|_| rng.below(256) as u8).collect()
}

/// The blob `name`'s bytes.
fn blob_bytes(store: &Store, name: &str) -> Vec<u8> {
    let reads = registry::find("blobs").unwrap().reads.unwrap();
    let open = reads.content.unwrap();
    let mut content = open(&Context::new(store.clone()), name).unwrap().unwrap();
    let size = content.info().size;
    let mut bytes = Vec::new();
    content
        .read(0..size, &mut |piece| {
            bytes.extend_from_slice(&piece);
            true
        })
        .unwrap();
    bytes
}

/// Prunes what the `blobs` plugin would at a start: staged uploads of no running job.
fn prune_blobs(store: &Store) -> u64 {
    let prune = registry::find("blobs").unwrap().prune.unwrap();
    prune(
        &Context::new(store.clone()),
        std::time::SystemTime::now(),
        &|| false,
    )
    .unwrap()
}

/// Nothing staged is left: every upload was published, or its chunks deleted.
fn assert_nothing_staged(store: &Store) {
    assert_eq!(
        edge_tasks::blobs::stored::unpublished(store).unwrap(),
        (0, 0),
        "staged chunks are left"
    );
}

fn blob_job() -> JobSpec {
    JobSpec {
        name: Some("photo.bin".into()),
        ..spec("blobs", None)
    }
}

#[test]
fn a_blob_cut_thirty_times_anywhere_is_stored_whole_from_its_last_staged_chunk() {
    let chunk = edge_tasks::blobs::stored::CHUNK_BYTES;
    let body = photo(5 * chunk + 12_345);
    let job = blob_job();
    let (_dir, _clean, mut expected) = uncut(&job, &body);
    assert_eq!(
        expected["summary"]["digest"],
        blake3::hash(&body).to_hex().as_str()
    );
    let mut rng = Rng(77);
    for round in 0..30 {
        let (_dir, store) = store();
        let cuts = rng.cuts(body.len());
        let last = cut_and_resume(&store, &job, &body, &cuts, &mut rng);
        let got = outcome(&last);
        expected["summary"]["created"] = got["summary"]["created"].clone();
        assert_eq!(got, expected, "round {round}, cuts {cuts:?}");
        assert!(blob_bytes(&store, "photo.bin") == body, "round {round}");
        assert_nothing_staged(&store);
    }
}

/// Starts a `blobs` job on `body` and cuts it after `cut` bytes; the job's cursor is then
/// kept, as the server keeps it.
fn cut_blob(store: &Store, body: &[u8], cut: usize) {
    let first = Cursor::start(origin("blobs", None));
    resume::begin(store, &first).wait().unwrap();
    let (report, _) = attempt(
        store,
        &blob_job(),
        first,
        &mut Feed::new(body, 4096, Some(cut)),
    );
    assert!(aborted(&report.last), "{:?}", report.last);
    resume::end(store, JOB, 1, resume::Outcome::Stopped)
        .wait()
        .unwrap();
}

fn aborted(last: &Event) -> bool {
    matches!(
        last,
        Event::Failed {
            code: ErrorCode::UploadAborted,
            ..
        }
    )
}

#[test]
fn a_cut_blob_goes_on_at_a_chunk_end_and_its_chunks_outlive_a_prune() {
    let chunk = edge_tasks::blobs::stored::CHUNK_BYTES;
    let body = photo(3 * chunk + 10);
    let (_dir, store) = store();
    cut_blob(&store, &body, 2 * chunk + 500);
    // The process restarts: its prune spares the chunks, which the cursor counts.
    assert_eq!(prune_blobs(&store), 0);
    let cursor = claim(&store);
    assert_eq!(cursor.offset(), 2 * chunk as u64, "whole chunks only");
    let mut rest = Feed::new(&body[2 * chunk..], 3000, None);
    let (report, events) = attempt(&store, &blob_job(), cursor, &mut rest);
    check_events(&events, true, 2 * chunk as u64);
    let done = outcome(&report.last);
    assert_eq!(done["bytes"], body.len());
    assert_eq!(done["summary"]["size"], body.len());
    assert_eq!(
        done["summary"]["digest"],
        blake3::hash(&body).to_hex().as_str()
    );
    assert!(blob_bytes(&store, "photo.bin") == body);
    assert_nothing_staged(&store);
}

#[test]
fn a_cut_blob_given_up_leaves_its_chunks_to_the_prune() {
    let chunk = edge_tasks::blobs::stored::CHUNK_BYTES;
    let body = photo(2 * chunk);
    let (_dir, store) = store();
    cut_blob(&store, &body, chunk + 1);
    let cursor = claim(&store);
    resume::end(&store, JOB, cursor.epoch, resume::Outcome::Ended)
        .wait()
        .unwrap();
    assert_eq!(prune_blobs(&store), 1);
    assert_nothing_staged(&store);
}

#[test]
fn a_resume_takes_a_blob_over_and_the_run_before_it_stages_nothing_more() {
    let chunk = edge_tasks::blobs::stored::CHUNK_BYTES;
    let body = photo(6 * chunk + 99);
    let (_dir, store) = store();
    resume::begin(&store, &Cursor::start(origin("blobs", None)))
        .wait()
        .unwrap();
    // The first client is still sending (past three chunks, once a commit of its chunks is
    // durable: the store's writer runs beside the job) when a second one resumes.
    let claimed = std::rc::Rc::new(std::cell::RefCell::new(None));
    let mut first = Feed::new(&body, 64 * 1024, None);
    let (store2, claimed2) = (store.clone(), claimed.clone());
    let take_over = move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while resume::load(&store2, JOB).unwrap().unwrap().offset() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no commit within 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        *claimed2.borrow_mut() = Some(claim(&store2));
    };
    first.before = Some((3 * chunk / (64 * 1024) + 2, Box::new(take_over)));
    let start = resume::load(&store, JOB).unwrap().unwrap();
    let (report, _) = attempt(&store, &blob_job(), start, &mut first);
    let Event::Failed { code, .. } = &report.last else {
        panic!("{:?}", report.last)
    };
    assert_eq!(*code, ErrorCode::TakenOver);
    let cursor = claimed.borrow_mut().take().unwrap();
    let offset = usize::try_from(cursor.offset()).unwrap();
    assert!(offset > 0 && offset % chunk == 0, "{offset}");
    let mut rest = Feed::new(&body[offset..], 777, None);
    let (report, _) = attempt(&store, &blob_job(), cursor, &mut rest);
    let done = outcome(&report.last);
    assert_eq!(
        done["summary"]["digest"],
        blake3::hash(&body).to_hex().as_str()
    );
    assert!(blob_bytes(&store, "photo.bin") == body);
    assert_nothing_staged(&store);
}
