//! The in-process stages, each run in a child process of its own (`edge-bench stage ...`) so
//! that its peak RSS and CPU time are its own. Each prints one JSON line: [`StageReport`].

use crate::proc::{self_usage, Usage};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use edge_proto::{ErrorCode, Event, Format};
use edge_tasks::decode::{self, Item, Limits};
use edge_tasks::pipeline::{self, Input, JobSpec, Settings, Source};
use edge_tasks::store::StoreOptions;
use edge_tasks::{ports, registry, Body, Context, Record, Store, Task};
use serde::{Deserialize, Serialize};
use serde_json::Map;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

/// The chunk size the file is fed in (the server's read size).
pub const CHUNK: usize = 64 * 1024;

/// Records per store batch and per commit in the store-only stage (the server's default
/// `jobs.commit_records`).
pub const BATCH: usize = 10_000;

/// Which stage to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StageKind {
    /// The JSON decoder alone, counting items.
    Decode,
    /// The `ports` task and the store, fed pre-split NDJSON records from memory.
    Store,
    /// `pipeline::run` on the file: decode, task, store, events.
    Pipeline,
    /// The same as a job, so that `ports` keeps what it replaced (its change history).
    PipelineHistory,
}

impl StageKind {
    /// Its name on the command line (`edge-bench stage NAME`).
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Decode => "decode",
            StageKind::Store => "store",
            StageKind::Pipeline => "pipeline",
            StageKind::PipelineHistory => "pipeline-history",
        }
    }
}

/// Runs `me stage KIND --file FILE --store STORE` as a child process (its stderr to `log`)
/// and returns its report, checking that it committed `expect` records and no errors.
pub fn run_child(
    me: &Path,
    kind: StageKind,
    file: &Path,
    store: &Path,
    log: &Path,
    expect: u64,
) -> anyhow::Result<StageReport> {
    let mut command = std::process::Command::new(me);
    command
        .args(["stage", kind.name(), "--file"])
        .arg(file)
        .arg("--store")
        .arg(store)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(File::create(log)?);
    let mut guard = crate::proc::Guard::spawn(&mut command, "edge-bench stage")?;
    let mut out = String::new();
    guard
        .stdout()
        .context("stage stdout")?
        .read_to_string(&mut out)?;
    let status = guard.wait()?;
    if !status.success() {
        bail!(
            "stage {} exited with {status}: {}",
            kind.name(),
            crate::server::tail(log)
        );
    }
    let report: StageReport = serde_json::from_str(out.trim())
        .with_context(|| format!("unreadable stage report `{}`", out.trim()))?;
    if report.committed != expect || report.errors != 0 {
        bail!(
            "stage {}: expected {expect} records, got {} good ({} errors)",
            kind.name(),
            report.committed,
            report.errors
        );
    }
    Ok(report)
}

/// What a stage did and cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    /// Input bytes the timed part consumed.
    pub bytes: u64,
    /// Records decoded or fed.
    pub records: u64,
    /// Records committed to the store (decode: records).
    pub committed: u64,
    /// Bad records.
    pub errors: u64,
    /// Timed wall time and CPU of the timed part; peak RSS of the whole process.
    pub usage: Usage,
    /// The store file's size afterwards.
    pub store_bytes: Option<u64>,
    /// Keys plus values in the `ports` table afterwards.
    pub raw_kv_bytes: Option<u64>,
}

/// Runs one stage and prints its report.
pub fn stage_main(kind: StageKind, file: &Path, store_dir: Option<&Path>) -> anyhow::Result<()> {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let report = match kind {
        StageKind::Decode => decode_only(file)?,
        StageKind::Store => store_only(file, need(store_dir)?)?,
        StageKind::Pipeline => pipeline(file, need(store_dir)?, false)?,
        StageKind::PipelineHistory => pipeline(file, need(store_dir)?, true)?,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn need(dir: Option<&Path>) -> anyhow::Result<&Path> {
    dir.context("this stage needs --store DIR")
}

fn open(file: &Path) -> anyhow::Result<File> {
    File::open(file).with_context(|| format!("cannot open {}", file.display()))
}

/// Reads up to `buf.len()` bytes, short only at the end of the file.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn decode_only(path: &Path) -> anyhow::Result<StageReport> {
    let mut file = open(path)?;
    let mut buf = vec![0u8; CHUNK];
    let (mut records, mut faults, mut bytes) = (0u64, 0u64, 0u64);
    let before = self_usage()?;
    let started = Instant::now();
    let mut decoder = decode::decoder(Format::Json, Limits::default());
    let mut sink = |item: Item<'_>| {
        match item {
            Item::Record(_) => records += 1,
            Item::Fault(_) => faults += 1,
            Item::Bytes { .. } => unreachable!("a json decoder frames records"),
        }
        ControlFlow::Continue(())
    };
    loop {
        let n = read_full(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        let _flow = decoder
            .feed(&buf[..n], &mut sink)
            .map_err(|e| anyhow::anyhow!("decode: {e}"))?;
    }
    let _flow = decoder
        .finish(&mut sink)
        .map_err(|e| anyhow::anyhow!("decode: {e}"))?;
    let wall = started.elapsed();
    let usage = spent(before, self_usage()?, wall);
    Ok(StageReport {
        bytes,
        records: records + faults,
        committed: records,
        errors: faults,
        usage,
        store_bytes: None,
        raw_kv_bytes: None,
    })
}

fn spent(before: Usage, after: Usage, wall: Duration) -> Usage {
    Usage {
        wall_s: wall.as_secs_f64(),
        user_s: after.user_s - before.user_s,
        sys_s: after.sys_s - before.sys_s,
        max_rss_kib: after.max_rss_kib,
        write_bytes: after.write_bytes.saturating_sub(before.write_bytes),
    }
}

fn open_store(dir: &Path) -> anyhow::Result<(Store, std::path::PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("edge.redb");
    let store = Store::open(&path, &StoreOptions::default())?;
    Ok((store, path))
}

/// Feeds NDJSON lines to the `ports` task from memory: each batch of [`BATCH`] lines is read
/// before its timing starts; the timed part is `record` for each line, then the pipeline's
/// commit policy: a commit starts when the previous one returned, and the task waits for it
/// when its batch reaches the default batch budget.
fn store_only(path: &Path, dir: &Path) -> anyhow::Result<StageReport> {
    let mut lines = BufReader::with_capacity(CHUNK, open(path)?);
    let (store, store_path) = open_store(dir)?;
    let plugin = registry::find("ports").context("no `ports` task in the registry")?;
    let mut task = (plugin.create)(&Map::new(), &Context::new(store.clone()))
        .map_err(|e| anyhow::anyhow!("ports task: {e}"))?;
    let batch_bytes = Settings::default().batch.bytes();
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let (mut records, mut errors, mut bytes, mut offset) = (0u64, 0u64, 0u64, 0u64);
    let mut total = Usage::default();
    let mut wall = Duration::ZERO;
    loop {
        // Untimed: read the next batch into memory.
        let mut filled = 0;
        while filled < BATCH {
            if batch.len() <= filled {
                batch.push(Vec::with_capacity(256));
            }
            let line = &mut batch[filled];
            line.clear();
            if lines.read_until(b'\n', line)? == 0 {
                break;
            }
            filled += 1;
        }
        if filled == 0 {
            break;
        }
        // Timed: the task takes the batch and commits it.
        let before = self_usage()?;
        let started = Instant::now();
        for line in &batch[..filled] {
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let record = Record {
                index: records,
                offset,
                end: offset + line.len() as u64,
                key: None,
                body: Body::Json(body),
            };
            if task.record(&record).is_err() {
                errors += 1;
            }
            records += 1;
            offset += line.len() as u64;
            bytes += line.len() as u64;
        }
        commit_like_the_pipeline(task.as_mut(), batch_bytes)?;
        let took = started.elapsed();
        let spent = spent(before, self_usage()?, took);
        wall += took;
        total.user_s += spent.user_s;
        total.sys_s += spent.sys_s;
        total.write_bytes += spent.write_bytes;
    }
    let started = Instant::now();
    task.commit().context("commit")?;
    wall += started.elapsed();
    drop(task);
    total.wall_s = wall.as_secs_f64();
    total.max_rss_kib = self_usage()?.max_rss_kib;
    let raw = raw_kv_bytes(&store)?;
    drop(store);
    Ok(StageReport {
        bytes,
        records,
        committed: records - errors,
        errors,
        usage: total,
        store_bytes: Some(file_size(&store_path)),
        raw_kv_bytes: Some(raw),
    })
}

/// After a batch of records: starts a commit if none runs; waits for the running one first
/// if the task holds `batch_bytes` or more.
fn commit_like_the_pipeline(task: &mut dyn Task, batch_bytes: usize) -> anyhow::Result<()> {
    let wait = task.pending_bytes() >= batch_bytes;
    match task.finish_commit(wait) {
        Some(done) => {
            done.context("commit")?;
            task.start_commit(None).context("commit")?;
            Ok(())
        }
        None => Ok(()),
    }
}

/// The raw size of what the `ports` table holds: each key plus its port as compact JSON (the
/// canonical form of the data, whatever encoding the store uses).
pub fn raw_kv_bytes(store: &Store) -> anyhow::Result<u64> {
    let mut total = 0u64;
    let mut after: Option<String> = None;
    loop {
        let page = ports::list(
            store,
            &ports::ListQuery {
                country: None,
                after: after.as_deref(),
                limit: ports::MAX_PAGE,
            },
        )?;
        for (key, port) in &page.items {
            total += (key.len() + serde_json::to_vec(port)?.len()) as u64;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(total),
        }
    }
}

/// A file's size, 0 if it is missing.
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Reads the file in [`CHUNK`]-byte chunks, as the server's pump hands over network reads.
struct FileSource {
    file: File,
}

impl Source for FileSource {
    fn next(&mut self, _wait: Duration) -> Input {
        let mut buf = vec![0u8; CHUNK];
        match read_full(&mut self.file, &mut buf) {
            Ok(0) => Input::End,
            Ok(n) => {
                buf.truncate(n);
                Input::Chunk(Bytes::from(buf))
            }
            Err(e) => Input::Aborted {
                code: ErrorCode::UploadAborted,
                message: e.to_string(),
            },
        }
    }
}

/// Runs the file through the pipeline into the store in `dir`; with `history`, as a job (a
/// new id, later than any before it), so that `ports` records what it replaced.
fn pipeline(path: &Path, dir: &Path, history: bool) -> anyhow::Result<StageReport> {
    let file = open(path)?;
    let size = file.metadata()?.len();
    let (store, store_path) = open_store(dir)?;
    let plugin = registry::find("ports").context("no `ports` task in the registry")?;
    let spec = JobSpec {
        job: "bench".into(),
        upload_stream: None,
        task: "ports".into(),
        format: Some(Format::Json),
        name: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        size: Some(size),
        source: None,
        unchanged: false,
        sha256: None,
        atomic: false,
    };
    let mut source = FileSource { file };
    let mut events = 0u64;
    let before = self_usage()?;
    let started = Instant::now();
    let mut context = Context::new(store.clone());
    if history {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        context = context.for_job(edge_tasks::task::JobRef {
            id: format!("{nanos:032x}"),
            sub: "bench".into(),
        });
    }
    let task =
        (plugin.create)(&Map::new(), &context).map_err(|e| anyhow::anyhow!("ports task: {e}"))?;
    let report = pipeline::run(
        &spec,
        plugin,
        task,
        &mut source,
        &Settings::default(),
        &mut |_event: Event| events += 1,
    );
    let usage = spent(before, self_usage()?, started.elapsed());
    if !matches!(report.last, Event::Done { .. }) {
        bail!("the pipeline ended with {:?}", report.last);
    }
    drop(store);
    Ok(StageReport {
        bytes: report.bytes,
        records: report.records,
        committed: report.committed,
        errors: report.errors,
        usage,
        store_bytes: Some(file_size(&store_path)),
        raw_kv_bytes: None,
    })
}
