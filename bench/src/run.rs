//! `edge-bench run`: every stage on the same generated data, in one run, side by side.

use crate::gen::{self, FileFormat, Generator, Order};
use crate::jobs::{self, JobsFigures};
use crate::proc::{clear_edge_env, remove_on_interrupt, Guard, Measured, Usage};
use crate::server::{self, Bins, DiscardServer, EdgeServer, ServerDirs};
use crate::stage::{StageKind, StageReport};
use anyhow::{bail, Context as _};
use edge_proto::Event;
use serde::Serialize;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// Which orders to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderArg {
    /// Keys in random order.
    Shuffled,
    /// Keys in ascending order.
    Sorted,
    /// Shuffled, then sorted.
    Both,
}

/// `edge-bench run`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Records per file [default: 1000000; 20000 with --small].
    #[arg(long)]
    records: Option<u64>,
    /// Key order of the data.
    #[arg(long, value_enum, default_value = "both")]
    order: OrderArg,
    /// Runs per stage; the table shows medians [default: 3; 1 with --small].
    #[arg(long)]
    repeat: Option<usize>,
    /// A quick run for CI: 20,000 records, one run, 1,000 + 100 small jobs.
    #[arg(long)]
    small: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// The data's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not run `cargo build` for edge and edge-client first (use the binaries next to
    /// this one as they are).
    #[arg(long)]
    no_build: bool,
    /// Skip the small-jobs benchmark.
    #[arg(long)]
    no_jobs: bool,
    /// Skip the long-path rows and small jobs beside a big upload (`edge-bench load`).
    #[arg(long)]
    no_load: bool,
    #[command(flatten)]
    jobs: JobCounts,
}

/// How many small jobs.
#[derive(Debug, Clone, clap::Args)]
pub struct JobCounts {
    /// One-record jobs on 4 reused connections, 50 at once [default: 10000; 1000 with --small].
    #[arg(long)]
    reused_jobs: Option<usize>,
    /// One-record jobs each on a new connection, 16 at once [default: 1000; 100 with --small].
    #[arg(long)]
    fresh_jobs: Option<usize>,
}

impl JobCounts {
    fn resolve(&self, small: bool) -> (usize, usize) {
        (
            self.reused_jobs
                .unwrap_or(if small { 1_000 } else { 10_000 }),
            self.fresh_jobs.unwrap_or(if small { 100 } else { 1_000 }),
        )
    }
}

/// `edge-bench jobs`'s arguments.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Fewer jobs: 1,000 + 100.
    #[arg(long)]
    small: bool,
    /// Do not run `cargo build` for edge and edge-client first.
    #[arg(long)]
    no_build: bool,
    #[command(flatten)]
    jobs: JobCounts,
}

/// The stages, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageId {
    Decode,
    Store,
    Pipeline,
    Edge1,
    Http3Curl,
    CurlDiscard,
    Sqlite,
}

impl StageId {
    const ALL: [StageId; 7] = [
        StageId::Decode,
        StageId::Store,
        StageId::Pipeline,
        StageId::Edge1,
        StageId::Http3Curl,
        StageId::CurlDiscard,
        StageId::Sqlite,
    ];

    fn label(self) -> &'static str {
        match self {
            StageId::Decode => "(1) decode only",
            StageId::Store => "(2) store only",
            StageId::Pipeline => "(3) pipeline in-process",
            StageId::Edge1 => "(4) edge/1 end to end",
            StageId::Http3Curl => "(5) HTTP/3 curl -> edge",
            StageId::CurlDiscard => "(5d) HTTP/3 curl -> discard",
            StageId::Sqlite => "(6) sqlite-utils insert",
        }
    }
}

/// One run of one stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Wall time, seconds (in-process stages: the timed part; others: the client process).
    wall_s: f64,
    /// Input bytes.
    bytes: u64,
    /// Records.
    records: u64,
    /// The server's (or the in-process stage's) CPU time and peak RSS.
    main: Option<Usage>,
    /// The client process's.
    client: Option<Usage>,
    /// The store file's size afterwards.
    store_bytes: Option<u64>,
    /// Keys plus values in the `ports` table (store-only stage).
    raw_kv_bytes: Option<u64>,
    /// The server's own job time (`done.duration_ms`), end-to-end stages.
    server_job_s: Option<f64>,
}

/// The medians of one stage's runs for one order.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    order: Order,
    stage: StageId,
    label: &'static str,
    runs: usize,
    wall_s: f64,
    mb_per_s: f64,
    records_per_s: f64,
    main_cpu_s: Option<f64>,
    main_rss_mib: Option<f64>,
    client_cpu_s: Option<f64>,
    client_rss_mib: Option<f64>,
    store_mib: Option<f64>,
    raw_kv_mib: Option<f64>,
    server_job_s: Option<f64>,
    written_mb: Option<f64>,
    samples: Vec<Sample>,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

const MIB: f64 = 1024.0 * 1024.0;

impl Row {
    fn of(order: Order, stage: StageId, samples: Vec<Sample>) -> Option<Row> {
        if samples.is_empty() {
            return None;
        }
        let pick =
            |f: &dyn Fn(&Sample) -> Option<f64>| median(samples.iter().filter_map(f).collect());
        let wall_s = pick(&|s| Some(s.wall_s))?;
        let bytes = pick(&|s| Some(s.bytes as f64)).unwrap_or(0.0);
        let records = pick(&|s| Some(s.records as f64)).unwrap_or(0.0);
        Some(Row {
            order,
            stage,
            label: stage.label(),
            runs: samples.len(),
            wall_s,
            mb_per_s: bytes / 1e6 / wall_s,
            records_per_s: records / wall_s,
            main_cpu_s: pick(&|s| s.main.map(|u| u.cpu_s())),
            main_rss_mib: pick(&|s| s.main.map(|u| u.max_rss_kib as f64 / 1024.0)),
            client_cpu_s: pick(&|s| s.client.map(|u| u.cpu_s())),
            client_rss_mib: pick(&|s| s.client.map(|u| u.max_rss_kib as f64 / 1024.0)),
            store_mib: pick(&|s| s.store_bytes.map(|b| b as f64 / MIB)),
            raw_kv_mib: pick(&|s| s.raw_kv_bytes.map(|b| b as f64 / MIB)),
            server_job_s: pick(&|s| s.server_job_s),
            written_mb: pick(&|s| {
                let written =
                    s.main.map_or(0, |u| u.write_bytes) + s.client.map_or(0, |u| u.write_bytes);
                Some(written as f64 / 1e6)
            }),
            samples,
        })
    }
}

/// A target from the issue, checked against the figures.
#[derive(Debug, Clone, Serialize)]
struct Target {
    name: String,
    goal: String,
    value: Option<f64>,
    shown: String,
    pass: Option<bool>,
}

/// A ratio of two rows' records/s.
#[derive(Debug, Clone, Serialize)]
struct Ratio {
    order: Order,
    name: &'static str,
    value: Option<f64>,
}

/// The memory comparison: server peak RSS for two upload sizes.
#[derive(Debug, Clone, Serialize)]
struct MemoryFigure {
    records: u64,
    order: Order,
    server_rss_mib: f64,
    client_rss_mib: Option<f64>,
}

/// curl into the discard server while busy threads spin beside it: how much curl itself
/// slows when it does not have the machine to itself (a server that works takes cores too).
#[derive(Debug, Clone, Serialize)]
struct BusyFigure {
    order: Order,
    busy_threads: usize,
    wall_s: f64,
    records_per_s: f64,
}

/// Everything `--json-out` writes.
#[derive(Debug, Serialize)]
struct Results {
    command: String,
    cpus: usize,
    records: u64,
    repeat: usize,
    seed: u64,
    files: Vec<FileInfo>,
    server_config: &'static str,
    rows: Vec<Row>,
    ratios: Vec<Ratio>,
    targets: Vec<Target>,
    memory: Vec<MemoryFigure>,
    curl_beside_busy_threads: Vec<BusyFigure>,
    jobs: Vec<JobsFigures>,
    jobs_server_rss_mib: Option<f64>,
    load: crate::load::LoadFigures,
    skipped: Vec<String>,
    failures: Vec<String>,
    small: bool,
    loadavg_before: String,
    loadavg_after: String,
}

#[derive(Debug, Clone, Serialize)]
struct FileInfo {
    order: Order,
    json: PathBuf,
    json_bytes: u64,
    ndjson_bytes: u64,
}

/// The data files of one order.
struct Files {
    json: PathBuf,
    json_bytes: u64,
    ndjson: PathBuf,
    ndjson_bytes: u64,
}

/// The running benchmark: binaries, directories, the token, what was skipped and what broke.
struct Bench {
    bins: Bins,
    tmp: PathBuf,
    certs: PathBuf,
    config: PathBuf,
    token: String,
    curl: Option<PathBuf>,
    sqlite: Option<PathBuf>,
    serial: u64,
    failures: Vec<String>,
}

/// Threads that spin until dropped, to take cores away from what is measured.
struct BusyThreads {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyThreads {
    fn start(count: usize) -> BusyThreads {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        BusyThreads { stop, threads }
    }
}

impl Drop for BusyThreads {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The repository root this binary was built from.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds edge and edge-client with the profile of this binary, so the figures are never
/// those of stale binaries.
pub(crate) fn build_binaries(no_build: bool) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("edge-bench: WARNING: this is a debug build; measure with `cargo run --release -p edge-bench -- ...`");
    }
    let root = repo_root();
    if no_build || !root.join("Cargo.toml").is_file() {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args(["build", "--quiet", "-p", "edge", "-p", "edge-client"]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    eprintln!(
        "edge-bench: building edge and edge-client (cargo build --release -p edge -p edge-client)"
    );
    let status = command.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build -p edge -p edge-client failed");
    }
    Ok(())
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn find_curl() -> Option<PathBuf> {
    if let Some(curl) = std::env::var_os("EDGE_BENCH_CURL") {
        return Some(PathBuf::from(curl));
    }
    let h3curl = repo_root().join("../shared/tools/h3curl");
    h3curl.is_file().then_some(h3curl)
}

fn generate_file(
    generator: &Generator,
    order: Order,
    format: FileFormat,
    path: &Path,
) -> anyhow::Result<u64> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let bytes = gen::write(generator, order, format, &mut w)?;
    w.flush()?;
    Ok(bytes)
}

fn temp_dir() -> anyhow::Result<tempfile::TempDir> {
    let tmp = tempfile::Builder::new()
        .prefix("edge-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    remove_on_interrupt(tmp.path());
    Ok(tmp)
}

impl Bench {
    /// Binaries, a temporary directory with the config and certs, and a token: starts a
    /// first server so that the dev CA exists, mints the token, stops it.
    fn new(tmp: &Path) -> anyhow::Result<Bench> {
        let bins = Bins::locate()?;
        let certs = tmp.join("certs");
        let config = tmp.join("edge.toml");
        std::fs::write(&config, server::CONFIG)?;
        let mut bench = Bench {
            bins,
            tmp: tmp.to_owned(),
            certs,
            config,
            token: String::new(),
            curl: find_curl(),
            sqlite: on_path("sqlite-utils"),
            serial: 0,
            failures: Vec::new(),
        };
        let dirs = bench.dirs("warmup");
        let first = EdgeServer::start(&bench.bins, &dirs)?;
        bench.token = server::mint_token(&bench.bins, &dirs)?;
        first.stop()?;
        let _ = std::fs::remove_dir_all(&dirs.data);
        Ok(bench)
    }

    fn fresh(&mut self, what: &str) -> PathBuf {
        self.serial += 1;
        self.tmp.join(format!("{what}-{}", self.serial))
    }

    fn dirs(&mut self, what: &str) -> ServerDirs {
        let base = self.fresh(what);
        ServerDirs {
            config: self.config.clone(),
            certs: self.certs.clone(),
            data: base.join("data"),
            log: self.tmp.join(format!(
                "{}.log",
                base.file_name().unwrap_or_default().to_string_lossy()
            )),
        }
    }

    fn ca(&self) -> PathBuf {
        self.certs.join("ca.pem")
    }

    fn setup(&self) -> crate::server::Setup {
        crate::server::Setup {
            bins: self.bins.clone(),
            config: self.config.clone(),
            certs: self.certs.clone(),
            tmp: self.tmp.clone(),
            token: self.token.clone(),
        }
    }

    /// Runs `edge-bench stage KIND` in a child and checks its counts.
    fn stage(&mut self, kind: StageKind, file: &Path, expect: u64) -> anyhow::Result<Sample> {
        let dir = self.fresh("stage");
        let log = self.tmp.join(format!(
            "{}.log",
            dir.file_name().unwrap_or_default().to_string_lossy()
        ));
        let mut command = Command::new(&self.bins.me);
        command
            .arg("stage")
            .arg(match kind {
                StageKind::Decode => "decode",
                StageKind::Store => "store",
                StageKind::Pipeline => "pipeline",
            })
            .arg("--file")
            .arg(file)
            .arg("--store")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        let mut guard = Guard::spawn(&mut command, "edge-bench stage")?;
        let mut out = String::new();
        guard
            .stdout()
            .context("stage stdout")?
            .read_to_string(&mut out)?;
        let status = guard.wait()?;
        let _ = std::fs::remove_dir_all(&dir);
        if !status.success() {
            bail!("exited with {status}: {}", server::tail(&log));
        }
        let report: StageReport = serde_json::from_str(out.trim())
            .with_context(|| format!("unreadable stage report `{}`", out.trim()))?;
        if report.committed != expect || report.errors != 0 {
            bail!(
                "expected {expect} records, got {} good ({} errors)",
                report.committed,
                report.errors
            );
        }
        let stage_usage = report.usage;
        Ok(Sample {
            wall_s: report.usage.wall_s,
            bytes: report.bytes,
            records: report.records,
            main: Some(stage_usage),
            client: None,
            store_bytes: report.store_bytes,
            raw_kv_bytes: report.raw_kv_bytes,
            server_job_s: None,
        })
    }

    /// Runs `program args` under `edge-bench measure`, its stdout to `out`.
    fn measured(
        &mut self,
        program: &Path,
        args: &[&std::ffi::OsStr],
        out: &Path,
    ) -> anyhow::Result<Measured> {
        let base = self.fresh("measure");
        let report = base.with_extension("json");
        let log = base.with_extension("log");
        let mut command = Command::new(&self.bins.me);
        clear_edge_env(&mut command)
            .arg("measure")
            .arg("--report")
            .arg(&report)
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out)?)
            .stderr(std::fs::File::create(&log)?);
        let mut guard = Guard::spawn(&mut command, &program.display().to_string())?;
        let status = guard.wait()?;
        if !status.success() {
            bail!(
                "edge-bench measure exited with {status}: {}",
                server::tail(&log)
            );
        }
        let measured: Measured = serde_json::from_slice(&std::fs::read(&report)?)
            .context("unreadable measure report")?;
        if measured.code != Some(0) {
            bail!(
                "{} exited with {:?} (signal {:?}): {}",
                program.display(),
                measured.code,
                measured.signal,
                server::tail(&log)
            );
        }
        let _ = std::fs::remove_file(&report);
        Ok(measured)
    }

    /// Uploads `file` to a fresh server with `edge-client` (or curl, with `curl` set).
    fn end_to_end(
        &mut self,
        file: &Path,
        bytes: u64,
        expect: u64,
        curl: Option<&Path>,
    ) -> anyhow::Result<Sample> {
        let dirs = self.dirs(if curl.is_some() { "h3" } else { "edge1" });
        let server = EdgeServer::start(&self.bins, &dirs)?;
        let before = server.usage()?;
        let out = dirs.data.with_extension("out");
        let url = format!("https://{}", server.addr);
        let ca = self.ca();
        let auth = format!("authorization: Bearer {}", self.token);
        let jobs_url = format!("{url}/v1/jobs/ports");
        let token = self.token.clone();
        let measured = match curl {
            None => {
                let client = self.bins.client.clone();
                let args: Vec<&std::ffi::OsStr> = vec![
                    "upload".as_ref(),
                    file.as_os_str(),
                    "--task".as_ref(),
                    "ports".as_ref(),
                    "--server".as_ref(),
                    url.as_ref(),
                    "--ca".as_ref(),
                    ca.as_os_str(),
                    "--token".as_ref(),
                    token.as_ref(),
                    "--json".as_ref(),
                ];
                self.measured(&client, &args, &out)
            }
            Some(curl) => {
                let args: Vec<&std::ffi::OsStr> = vec![
                    "--http3-only".as_ref(),
                    "-sS".as_ref(),
                    "--cacert".as_ref(),
                    ca.as_os_str(),
                    "-H".as_ref(),
                    auth.as_ref(),
                    "-T".as_ref(),
                    file.as_os_str(),
                    jobs_url.as_ref(),
                    "-o".as_ref(),
                    out.as_os_str(),
                ];
                let sink = dirs.data.with_extension("stdout");
                self.measured(curl, &args, &sink)
            }
        };
        let (after, store_bytes) = server.stop()?;
        let measured = measured?;
        let last = last_event(&out)?;
        let _ = std::fs::remove_dir_all(dirs.data.parent().unwrap_or(&dirs.data));
        let server_job_s = match last {
            Event::Done {
                committed,
                errors,
                duration_ms,
                ..
            } if committed == expect && errors == 0 => duration_ms as f64 / 1e3,
            other => bail!("expected done with {expect} committed, got {other:?}"),
        };
        Ok(Sample {
            wall_s: measured.usage.wall_s,
            bytes,
            records: expect,
            main: Some(Usage {
                wall_s: measured.usage.wall_s,
                user_s: after.user_s - before.user_s,
                sys_s: after.sys_s - before.sys_s,
                max_rss_kib: after.max_rss_kib,
                write_bytes: after.write_bytes.saturating_sub(before.write_bytes),
            }),
            client: Some(measured.usage),
            store_bytes: Some(store_bytes),
            raw_kv_bytes: None,
            server_job_s: Some(server_job_s),
        })
    }

    /// curl uploads `file` into the discard server.
    fn curl_discard(
        &mut self,
        curl: &Path,
        file: &Path,
        bytes: u64,
        records: u64,
    ) -> anyhow::Result<Sample> {
        let base = self.fresh("discard");
        let log = base.with_extension("log");
        let out = base.with_extension("out");
        let discard = DiscardServer::start(&self.bins, &self.certs, &log)?;
        let ca = self.ca();
        let url = format!("https://{}/discard", discard.addr);
        let args: Vec<&std::ffi::OsStr> = vec![
            "--http3-only".as_ref(),
            "-sS".as_ref(),
            "--cacert".as_ref(),
            ca.as_os_str(),
            "-T".as_ref(),
            file.as_os_str(),
            url.as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ];
        let sink = base.with_extension("stdout");
        let measured = self.measured(curl, &args, &sink);
        let server_usage = discard.stop()?;
        let measured = measured?;
        let answer: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out)?).context("the discard server's answer")?;
        if answer["bytes"].as_u64() != Some(bytes) {
            bail!("the discard server read {answer} of {bytes} bytes");
        }
        Ok(Sample {
            wall_s: measured.usage.wall_s,
            bytes,
            records,
            main: Some(server_usage),
            client: Some(measured.usage),
            store_bytes: None,
            raw_kv_bytes: None,
            server_job_s: None,
        })
    }

    /// `sqlite-utils insert DB ports FILE --nl --pk unlocs --alter`, then a row count.
    fn sqlite(
        &mut self,
        sqlite: &Path,
        ndjson: &Path,
        bytes: u64,
        expect: u64,
    ) -> anyhow::Result<Sample> {
        let base = self.fresh("sqlite");
        let db = base.with_extension("db");
        let out = base.with_extension("out");
        let args: Vec<&std::ffi::OsStr> = vec![
            "insert".as_ref(),
            db.as_os_str(),
            "ports".as_ref(),
            ndjson.as_os_str(),
            "--nl".as_ref(),
            "--pk".as_ref(),
            "unlocs".as_ref(),
            "--alter".as_ref(),
        ];
        let measured = self.measured(sqlite, &args, &out)?;
        let count = Command::new(sqlite)
            .arg("query")
            .arg(&db)
            .arg("select count(*) as n from ports")
            .stdin(Stdio::null())
            .output()
            .context("cannot count the rows")?;
        let rows: serde_json::Value =
            serde_json::from_slice(&count.stdout).context("sqlite-utils query output")?;
        let n = rows[0]["n"].as_u64();
        let store_bytes = crate::stage::file_size(&db);
        let _ = std::fs::remove_file(&db);
        if n != Some(expect) {
            bail!("expected {expect} rows in SQLite, found {rows}");
        }
        Ok(Sample {
            wall_s: measured.usage.wall_s,
            bytes,
            records: expect,
            main: None,
            client: Some(measured.usage),
            store_bytes: Some(store_bytes),
            raw_kv_bytes: None,
            server_job_s: None,
        })
    }
}

/// The last event in an NDJSON file of events.
fn last_event(path: &Path) -> anyhow::Result<Event> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the events in {}", path.display()))?;
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("no events in {}", path.display()))?;
    serde_json::from_str(line).with_context(|| format!("not an event: {line}"))
}

fn fmt_int(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let s = format!("{:.0}", x);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews the figures.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs the whole benchmark.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let records = args
        .records
        .unwrap_or(if args.small { 20_000 } else { 1_000_000 });
    let repeat = args.repeat.unwrap_or(if args.small { 1 } else { 3 }).max(1);
    let (reused_jobs, fresh_jobs) = args.jobs.resolve(args.small);
    let orders: Vec<Order> = match args.order {
        OrderArg::Shuffled => vec![Order::Shuffled],
        OrderArg::Sorted => vec![Order::Sorted],
        OrderArg::Both => vec![Order::Shuffled, Order::Sorted],
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    build_binaries(args.no_build)?;
    let loadavg_before = loadavg();
    let tmp = temp_dir()?;
    let mut bench = Bench::new(tmp.path())?;
    let mut skipped = Vec::new();
    if bench.curl.is_none() {
        skipped.push(
            "(5) and (5d): no HTTP/3 curl: set EDGE_BENCH_CURL or provide ../shared/tools/h3curl"
                .to_owned(),
        );
    }
    if bench.sqlite.is_none() {
        skipped.push("(6): sqlite-utils is not on PATH; install it with `python3 -m pip install sqlite-utils`".to_owned());
    }
    for s in &skipped {
        eprintln!("edge-bench: skipping {s}");
    }

    // The data: the same records for every stage; JSON (pretty, like samples/ports.json)
    // for the decoder, the pipeline and the uploads, NDJSON for the store and SQLite.
    let generator = Generator::new(records, args.seed)?;
    let mut files = Vec::new();
    for &order in &orders {
        let started = Instant::now();
        let json = tmp.path().join(format!("ports-{}.json", order.as_str()));
        let ndjson = tmp.path().join(format!("ports-{}.ndjson", order.as_str()));
        let json_bytes = generate_file(&generator, order, FileFormat::Json, &json)?;
        let ndjson_bytes = generate_file(&generator, order, FileFormat::Ndjson, &ndjson)?;
        eprintln!(
            "edge-bench: generated {records} {} records: JSON {:.1} MB, NDJSON {:.1} MB in {:.1} s",
            order.as_str(),
            json_bytes as f64 / 1e6,
            ndjson_bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        files.push((
            order,
            Files {
                json,
                json_bytes,
                ndjson,
                ndjson_bytes,
            },
        ));
    }

    let mut samples: Vec<(Order, StageId, Sample)> = Vec::new();
    for (order, f) in &files {
        for r in 1..=repeat {
            for stage in StageId::ALL {
                let result = match stage {
                    StageId::Decode => bench.stage(StageKind::Decode, &f.json, records),
                    StageId::Store => bench.stage(StageKind::Store, &f.ndjson, records),
                    StageId::Pipeline => bench.stage(StageKind::Pipeline, &f.json, records),
                    StageId::Edge1 => bench.end_to_end(&f.json, f.json_bytes, records, None),
                    StageId::Http3Curl => match bench.curl.clone() {
                        Some(curl) => bench.end_to_end(&f.json, f.json_bytes, records, Some(&curl)),
                        None => continue,
                    },
                    StageId::CurlDiscard => match bench.curl.clone() {
                        Some(curl) => bench.curl_discard(&curl, &f.json, f.json_bytes, records),
                        None => continue,
                    },
                    StageId::Sqlite => match bench.sqlite.clone() {
                        Some(sqlite) => bench.sqlite(&sqlite, &f.ndjson, f.ndjson_bytes, records),
                        None => continue,
                    },
                };
                match result {
                    Ok(sample) => {
                        eprintln!(
                            "edge-bench: [{} {r}/{repeat}] {:<28} {:>8.3} s {:>12} rec/s",
                            order.as_str(),
                            stage.label(),
                            sample.wall_s,
                            fmt_int(sample.records as f64 / sample.wall_s)
                        );
                        samples.push((*order, stage, sample));
                    }
                    Err(_) if crate::proc::interrupted() => bail!("interrupted"),
                    Err(e) => {
                        let why =
                            format!("[{} {r}/{repeat}] {}: {e:#}", order.as_str(), stage.label());
                        eprintln!("edge-bench: FAILED {why}");
                        bench.failures.push(why);
                    }
                }
            }
        }
    }
    let mut rows = Vec::new();
    for &order in &orders {
        for stage in StageId::ALL {
            let of: Vec<Sample> = samples
                .iter()
                .filter(|(o, s, _)| *o == order && *s == stage)
                .map(|(_, _, sample)| sample.clone())
                .collect();
            if let Some(row) = Row::of(order, stage, of) {
                rows.push(row);
            }
        }
    }

    if crate::proc::interrupted() {
        bail!("interrupted");
    }
    // Memory: the server's peak RSS for a tenth of the records, beside the full upload's.
    let mut memory = Vec::new();
    let small_order = orders[0];
    if let Some(row) = rows
        .iter()
        .find(|r| r.order == small_order && r.stage == StageId::Edge1)
    {
        let tenth = records / 10;
        if tenth > 0 {
            let path = tmp
                .path()
                .join(format!("ports-{}-tenth.json", small_order.as_str()));
            let bytes = generate_file(
                &Generator::new(tenth, args.seed)?,
                small_order,
                FileFormat::Json,
                &path,
            )?;
            match bench.end_to_end(&path, bytes, tenth, None) {
                Ok(sample) => memory.push(MemoryFigure {
                    records: tenth,
                    order: small_order,
                    server_rss_mib: sample.main.map_or(0.0, |u| u.max_rss_kib as f64 / 1024.0),
                    client_rss_mib: sample.client.map(|u| u.max_rss_kib as f64 / 1024.0),
                }),
                Err(e) => bench
                    .failures
                    .push(format!("memory, {tenth} records: {e:#}")),
            }
            let _ = std::fs::remove_file(&path);
        }
        memory.push(MemoryFigure {
            records,
            order: small_order,
            server_rss_mib: row.main_rss_mib.unwrap_or(0.0),
            client_rss_mib: row.client_rss_mib,
        });
    }
    // curl into the discard server with 1 and 2 threads spinning beside it.
    let mut busy = Vec::new();
    if let (Some(curl), Some((order, f))) = (bench.curl.clone(), files.first()) {
        for threads in 1..=2 {
            let mut walls = Vec::new();
            for _ in 0..repeat {
                let spinning = BusyThreads::start(threads);
                let sample = bench.curl_discard(&curl, &f.json, f.json_bytes, records);
                drop(spinning);
                match sample {
                    Ok(sample) => walls.push(sample.wall_s),
                    Err(e) => bench.failures.push(format!(
                        "curl -> discard beside {threads} busy threads: {e:#}"
                    )),
                }
            }
            if let Some(wall_s) = median(walls) {
                busy.push(BusyFigure {
                    order: *order,
                    busy_threads: threads,
                    wall_s,
                    records_per_s: records as f64 / wall_s,
                });
            }
        }
    }
    let load = match files.first() {
        Some((_, f)) if !args.no_load => crate::load::run(
            &bench.setup(),
            crate::load::Upload {
                file: &f.json,
                bytes: f.json_bytes,
                records,
            },
            &crate::load::Plan::new(records, args.seed, repeat),
            &mut bench.failures,
        ),
        _ => crate::load::LoadFigures::default(),
    };
    // The data files are not needed any more.
    for (_, f) in &files {
        let _ = std::fs::remove_file(&f.json);
        let _ = std::fs::remove_file(&f.ndjson);
    }

    if crate::proc::interrupted() {
        bail!("interrupted");
    }
    let (jobs, jobs_server_rss_mib) = if args.no_jobs {
        (Vec::new(), None)
    } else {
        match small_jobs(&mut bench, reused_jobs, fresh_jobs) {
            Ok((figures, rss)) => (figures, Some(rss)),
            Err(e) => {
                bench.failures.push(format!("small jobs: {e:#}"));
                (Vec::new(), None)
            }
        }
    };
    for figures in &jobs {
        if figures.failed > 0 {
            bench.failures.push(format!(
                "small jobs ({}): {} of {} failed; first: {}",
                figures.what,
                figures.failed,
                figures.jobs,
                figures.first_failure.as_deref().unwrap_or("?")
            ));
        }
    }

    if crate::proc::interrupted() {
        bail!("interrupted");
    }
    let ratios = ratios(&rows, &orders);
    let mut targets = targets(&rows, &orders);
    targets.extend(memory_and_jobs_targets(&memory, &jobs));
    let results = Results {
        command,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        records,
        repeat,
        seed: args.seed,
        files: files
            .iter()
            .map(|(order, f)| FileInfo {
                order: *order,
                json: f.json.clone(),
                json_bytes: f.json_bytes,
                ndjson_bytes: f.ndjson_bytes,
            })
            .collect(),
        server_config: server::CONFIG_SUMMARY,
        rows,
        ratios,
        targets,
        memory,
        curl_beside_busy_threads: busy,
        jobs,
        jobs_server_rss_mib,
        load,
        skipped,
        failures: std::mem::take(&mut bench.failures),
        small: args.small,
        loadavg_before,
        loadavg_after: loadavg(),
    };
    print_results(&results);
    crate::load::print(&results.load);
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\nJSON written to {}", path.display());
    }
    drop(bench);
    drop(tmp);
    Ok(if results.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs the small-jobs benchmark against a fresh server; returns the figures and the
/// server's peak RSS.
fn small_jobs(
    bench: &mut Bench,
    reused_jobs: usize,
    fresh_jobs: usize,
) -> anyhow::Result<(Vec<JobsFigures>, f64)> {
    let dirs = bench.dirs("jobs");
    let server = EdgeServer::start(&bench.bins, &dirs)?;
    eprintln!("edge-bench: small jobs: {reused_jobs} on 4 reused connections (50 at once), {fresh_jobs} on a new connection each (16 at once)");
    let figures = jobs::run_both(&server, &bench.ca(), &bench.token, reused_jobs, fresh_jobs);
    let (usage, _) = server.stop()?;
    let _ = std::fs::remove_dir_all(dirs.data.parent().unwrap_or(&dirs.data));
    Ok((figures?, usage.max_rss_kib as f64 / 1024.0))
}

/// `edge-bench jobs`: only the small-jobs benchmark.
pub fn jobs_only(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let (reused_jobs, fresh_jobs) = args.jobs.resolve(args.small);
    build_binaries(args.no_build)?;
    let tmp = temp_dir()?;
    let mut bench = Bench::new(tmp.path())?;
    let (figures, rss) = small_jobs(&mut bench, reused_jobs, fresh_jobs)?;
    print_jobs(&figures, Some(rss));
    let failed = figures.iter().any(|f| f.failed > 0);
    drop(bench);
    drop(tmp);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn find(rows: &[Row], order: Order, stage: StageId) -> Option<&Row> {
    rows.iter().find(|r| r.order == order && r.stage == stage)
}

fn rate(rows: &[Row], order: Order, stage: StageId) -> Option<f64> {
    find(rows, order, stage).map(|r| r.records_per_s)
}

fn ratios(rows: &[Row], orders: &[Order]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for &order in orders {
        let e2e = rate(rows, order, StageId::Edge1);
        for (name, other) in [
            ("(4)/(3) edge/1 vs pipeline in-process", StageId::Pipeline),
            ("(4)/(2) edge/1 vs store only", StageId::Store),
            ("(4)/(6) edge/1 vs sqlite-utils", StageId::Sqlite),
        ] {
            out.push(Ratio {
                order,
                name,
                value: e2e.zip(rate(rows, order, other)).map(|(a, b)| a / b),
            });
        }
    }
    out
}

fn target(
    name: String,
    goal: &str,
    value: Option<f64>,
    shown: String,
    pass: impl Fn(f64) -> bool,
) -> Target {
    Target {
        name,
        goal: goal.to_owned(),
        value,
        shown: if value.is_some() { shown } else { "n/a".into() },
        pass: value.map(pass),
    }
}

fn targets(rows: &[Row], orders: &[Order]) -> Vec<Target> {
    let mut out = Vec::new();
    for &order in orders {
        let goal = match order {
            Order::Shuffled => 200_000.0,
            Order::Sorted => 500_000.0,
        };
        let v = rate(rows, order, StageId::Edge1);
        out.push(target(
            format!("edge/1 end to end, {}", order.as_str()),
            &format!(">= {} records/s", fmt_int(goal)),
            v,
            format!(
                "{} records/s ({:.0}% of the target)",
                fmt_int(v.unwrap_or(0.0)),
                v.unwrap_or(0.0) / goal * 100.0
            ),
            move |x| x >= goal,
        ));
    }
    for &order in orders {
        let v = rate(rows, order, StageId::Edge1)
            .zip(rate(rows, order, StageId::Pipeline))
            .map(|(a, b)| a / b);
        out.push(target(
            format!("(4)/(3), {}", order.as_str()),
            ">= 0.90",
            v,
            format!("{:.2}", v.unwrap_or(0.0)),
            |x| x >= 0.9,
        ));
    }
    let e2e: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.stage, StageId::Edge1 | StageId::Http3Curl))
        .collect();
    let server_rss = e2e.iter().filter_map(|r| r.main_rss_mib).reduce(f64::max);
    out.push(target(
        "server peak RSS (worst of rows 4 and 5)".into(),
        "<= 64 MiB",
        server_rss,
        format!("{:.1} MiB", server_rss.unwrap_or(0.0)),
        |x| x <= 64.0,
    ));
    let client_rss = rows
        .iter()
        .filter(|r| r.stage == StageId::Edge1)
        .filter_map(|r| r.client_rss_mib)
        .reduce(f64::max);
    out.push(target(
        "edge-client peak RSS (worst of row 4)".into(),
        "<= 16 MiB",
        client_rss,
        format!("{:.1} MiB", client_rss.unwrap_or(0.0)),
        |x| x <= 16.0,
    ));
    for &order in orders {
        let v = find(rows, order, StageId::Http3Curl)
            .zip(find(rows, order, StageId::CurlDiscard))
            .map(|(a, b)| a.mb_per_s / b.mb_per_s);
        out.push(target(
            format!("HTTP/3 curl -> edge vs curl -> discard, {}", order.as_str()),
            ">= 0.90 (within 10%)",
            v,
            format!("{:.2}", v.unwrap_or(0.0)),
            |x| x >= 0.9,
        ));
    }
    for &order in orders {
        let v = find(rows, order, StageId::Edge1)
            .and_then(|r| r.store_mib)
            .zip(find(rows, order, StageId::Store).and_then(|r| r.raw_kv_mib))
            .map(|(store, raw)| store / raw);
        out.push(target(
            format!("store size / raw key+value bytes, {}", order.as_str()),
            "<= 1.5",
            v,
            format!("{:.2}x", v.unwrap_or(0.0)),
            |x| x <= 1.5,
        ));
    }
    out
}

/// The targets on memory growth and on small jobs.
fn memory_and_jobs_targets(memory: &[MemoryFigure], jobs: &[JobsFigures]) -> Vec<Target> {
    let mut out = Vec::new();
    if let [small, full] = memory {
        let v = full.server_rss_mib / small.server_rss_mib;
        out.push(target(
            format!(
                "server peak RSS, {} vs {} records",
                fmt_int(full.records as f64),
                fmt_int(small.records as f64)
            ),
            "<= 1.10 (within 10%)",
            Some(v),
            format!(
                "{:.2} ({:.1} vs {:.1} MiB)",
                v, full.server_rss_mib, small.server_rss_mib
            ),
            |x| x <= 1.10,
        ));
    }
    if let Some(reused) = jobs.first() {
        out.push(target(
            "small jobs, reused connections".into(),
            ">= 5,000 jobs/s, p99 < 50 ms",
            Some(reused.jobs_per_s),
            format!(
                "{} jobs/s, p99 {:.1} ms",
                fmt_int(reused.jobs_per_s),
                reused.p99_ms
            ),
            |x| x >= 5_000.0,
        ));
        if let Some(target) = out.last_mut() {
            target.pass = target.pass.map(|pass| pass && reused.p99_ms < 50.0);
        }
    }
    if let Some(fresh) = jobs.get(1) {
        out.push(target(
            "small jobs, a new connection each".into(),
            ">= 500 jobs/s",
            Some(fresh.jobs_per_s),
            format!("{} jobs/s", fmt_int(fresh.jobs_per_s)),
            |x| x >= 500.0,
        ));
    }
    out
}

fn print_results(results: &Results) {
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\nedge-bench: {} records, median of {} run(s), {} CPUs, seed {}",
        fmt_int(results.records as f64),
        results.repeat,
        results.cpus,
        results.seed
    );
    for f in &results.files {
        let _ = writeln!(
            out,
            "data ({}): JSON {:.1} MB (pretty, like samples/ports.json), NDJSON {:.1} MB",
            f.order.as_str(),
            f.json_bytes as f64 / 1e6,
            f.ndjson_bytes as f64 / 1e6
        );
    }
    let _ = writeln!(
        out,
        "edge serve config written by edge-bench: {}",
        results.server_config
    );
    let _ = writeln!(
        out,
        "load average before: {}, after: {}",
        results.loadavg_before, results.loadavg_after
    );
    let _ = writeln!(out, "MB = 10^6 bytes; MiB = 2^20 bytes. \"proc\" = the server, or the stage's own process for (1)-(3), or the discard server for (5d).\n");
    let _ = writeln!(
        out,
        "{:<9} {:<28} {:>8} {:>8} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "order",
        "stage",
        "wall s",
        "MB/s",
        "records/s",
        "proc cpu",
        "proc RSS",
        "cli cpu",
        "cli RSS",
        "store",
        "srv job",
        "written"
    );
    let _ = writeln!(
        out,
        "{:<9} {:<28} {:>8} {:>8} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "", "", "", "", "", "s", "MiB", "s", "MiB", "MiB", "s", "MB"
    );
    for r in &results.rows {
        let _ = writeln!(
            out,
            "{:<9} {:<28} {:>8.3} {:>8.1} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
            r.order.as_str(),
            r.label,
            r.wall_s,
            r.mb_per_s,
            fmt_int(r.records_per_s),
            opt(r.main_cpu_s, 2),
            opt(r.main_rss_mib, 1),
            opt(r.client_cpu_s, 2),
            opt(r.client_rss_mib, 1),
            opt(r.store_mib, 1),
            opt(r.server_job_s, 3),
            opt(r.written_mb, 0),
        );
    }
    if let Some(raw) = results.rows.iter().find_map(|r| r.raw_kv_mib) {
        let _ = writeln!(out, "raw key+value bytes in the ports table: {raw:.1} MiB");
    }
    let _ = writeln!(out, "\nratios (records/s):");
    for ratio in &results.ratios {
        let _ = writeln!(
            out,
            "  {:<9} {:<40} {}",
            ratio.order.as_str(),
            ratio.name,
            opt(ratio.value, 2)
        );
    }
    if !results.memory.is_empty() {
        let _ = writeln!(out, "\nmemory (edge/1 upload, fresh server each):");
        for m in &results.memory {
            let _ = writeln!(
                out,
                "  {:>11} records ({}): server peak RSS {:.1} MiB, edge-client {} MiB",
                fmt_int(m.records as f64),
                m.order.as_str(),
                m.server_rss_mib,
                opt(m.client_rss_mib, 1)
            );
        }
    }
    if !results.curl_beside_busy_threads.is_empty() {
        let _ = writeln!(
            out,
            "\nHTTP/3 curl -> discard with threads spinning beside it (each takes a core):"
        );
        for b in &results.curl_beside_busy_threads {
            let _ = writeln!(
                out,
                "  {} busy ({}): {:.3} s, {} records/s",
                b.busy_threads,
                b.order.as_str(),
                b.wall_s,
                fmt_int(b.records_per_s)
            );
        }
    }
    print!("{out}");
    print_jobs(&results.jobs, results.jobs_server_rss_mib);
    let mut out = String::new();
    let _ = writeln!(out, "\ntargets (issue 6):");
    if results.small {
        let _ = writeln!(out, "  (--small: too few records for the rate targets; process start and handshakes dominate. Use the full run.)");
    }
    for t in &results.targets {
        let verdict = match t.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a ",
        };
        let _ = writeln!(
            out,
            "  {verdict}  {:<52} {:<22} {}",
            t.name, t.goal, t.shown
        );
    }
    for s in &results.skipped {
        let _ = writeln!(out, "skipped: {s}");
    }
    for f in &results.failures {
        let _ = writeln!(out, "BROKEN: {f}");
    }
    print!("{out}");
}

fn print_jobs(jobs: &[JobsFigures], rss: Option<f64>) {
    if jobs.is_empty() {
        return;
    }
    println!("\nsmall jobs (edge_client library in edge-bench; one fresh server for both):");
    for j in jobs {
        println!(
            "  {:<40} {:>6} jobs, {:>2} at once on {:>4} conn: {:>8.1} jobs/s, p50 {:>7.2} ms, p99 {:>7.2} ms, max {:>7.2} ms, server cpu {:.2} s, failed {}",
            j.what, j.jobs, j.concurrency, j.connections, j.jobs_per_s, j.p50_ms, j.p99_ms, j.max_ms, j.server_cpu_s, j.failed
        );
        if let Some(close) = j.close_mean_ms {
            println!("  {:<40} Client::close took {close:.1} ms on average (in jobs/s, not in the latency)", "");
        }
    }
    if let Some(rss) = rss {
        println!("  server peak RSS over both: {rss:.1} MiB");
    }
}
