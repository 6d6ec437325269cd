//! Under load, and over long paths (issue 13 §4): the long-path rows ([`crate::longpath`])
//! and small jobs beside a big upload ([`crate::latency`]), with their targets. `edge-bench
//! run` includes them; `edge-bench load` runs only them.

use crate::gen::{self, FileFormat, Generator, Order};
use crate::latency::{self, LatencyFigures};
use crate::longpath::{self, LongPathRow};
use crate::server::{self, Bins, EdgeServer, ServerDirs, Setup};
use anyhow::Context as _;
use serde::Serialize;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The most server RSS one upload may take at any RTT, MiB.
const RSS_TARGET_MIB: f64 = 64.0;
/// The least share of the 0 ms rate an upload keeps at 100 ms RTT.
const RATE_TARGET_AT_100MS: f64 = 0.8;
/// The most p99 latency of small jobs beside a big upload, ms.
const P99_TARGET_MS: f64 = 100.0;

/// Everything this part measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadFigures {
    /// The upload at each RTT.
    pub long_paths: Vec<LongPathRow>,
    /// Small jobs, alone and beside the upload.
    pub small_jobs_beside_upload: Vec<LatencyFigures>,
    /// The targets, checked.
    pub targets: Vec<LoadTarget>,
}

/// One target and whether the figures meet it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadTarget {
    /// What.
    pub name: String,
    /// The goal.
    pub goal: String,
    /// The figure.
    pub value: Option<f64>,
    /// Met?
    pub pass: Option<bool>,
}

/// `edge-bench load`'s arguments.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Records of the big upload (shuffled JSON) [default: 1000000; 20000 with --small].
    #[arg(long)]
    records: Option<u64>,
    /// Records of the long-path upload [default: 264000 (85 MB), at most --records].
    #[arg(long)]
    path_records: Option<u64>,
    /// Runs per RTT; the table shows medians [default: 3; 1 with --small].
    #[arg(long)]
    repeat: Option<usize>,
    /// Round trips to measure, in ms.
    #[arg(long, value_delimiter = ',', default_values_t = longpath::RTTS_MS)]
    rtt_ms: Vec<u64>,
    /// A quick run: 20,000 records, one run.
    #[arg(long)]
    small: bool,
    /// Skip small jobs beside the upload.
    #[arg(long)]
    no_latency: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// The data's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not run `cargo build` for edge and edge-client first.
    #[arg(long)]
    no_build: bool,
}

/// The big upload: a JSON file of shuffled records.
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    /// The file.
    pub file: &'a Path,
    /// Its size.
    pub bytes: u64,
    /// Its records.
    pub records: u64,
}

/// What to measure besides the big upload.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Records of the long-path upload (shuffled JSON; [`PATH_RECORDS`] make the 85 MB of the
    /// issue); the big upload itself when it has no more.
    pub path_records: u64,
    /// The data's seed.
    pub seed: u64,
    /// Runs per RTT.
    pub repeat: usize,
    /// Round trips, ms.
    pub rtts_ms: Vec<u64>,
    /// Also small jobs beside the big upload.
    pub latency: bool,
}

/// Records of the long-path upload: 85 MB of pretty JSON.
pub const PATH_RECORDS: u64 = 264_000;

impl Plan {
    /// The default plan for a run of `records` records.
    pub fn new(records: u64, seed: u64, repeat: usize) -> Plan {
        Plan {
            path_records: records.min(PATH_RECORDS),
            seed,
            repeat,
            rtts_ms: longpath::RTTS_MS.to_vec(),
            latency: true,
        }
    }
}

/// Measures the long-path rows (with their own file, made in `setup.tmp`, unless `big` is
/// small enough) and small jobs beside `big`; what breaks goes to `failures`.
pub fn run(setup: &Setup, big: Upload<'_>, plan: &Plan, failures: &mut Vec<String>) -> LoadFigures {
    let mut figures = LoadFigures::default();
    let path_file = (plan.path_records < big.records)
        .then(|| shuffled_json(&setup.tmp, plan.path_records, plan.seed));
    let path = match &path_file {
        Some(Ok((file, bytes))) => Ok(Upload {
            file,
            bytes: *bytes,
            records: plan.path_records,
        }),
        Some(Err(e)) => Err(anyhow::anyhow!("{e:#}")),
        None => Ok(big),
    };
    let rows = path.and_then(|p| {
        longpath::run(
            setup,
            p.file,
            p.bytes,
            p.records,
            plan.repeat,
            &plan.rtts_ms,
        )
    });
    match rows {
        Ok(rows) => figures.long_paths = rows,
        Err(e) => failures.push(format!("long paths: {e:#}")),
    }
    if let Some(Ok((file, _))) = &path_file {
        let _ = std::fs::remove_file(file);
    }
    if plan.latency {
        match latency::run(setup, big.file, big.records) {
            Ok(f) => figures.small_jobs_beside_upload = f,
            Err(e) => failures.push(format!("small jobs beside an upload: {e:#}")),
        }
    }
    figures.targets = targets(&figures);
    figures
}

/// Writes `records` shuffled records as JSON in `dir`: the file and its size.
fn shuffled_json(dir: &Path, records: u64, seed: u64) -> anyhow::Result<(PathBuf, u64)> {
    let file = dir.join(format!("ports-shuffled-{records}.json"));
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&file)?);
    let bytes = gen::write(
        &Generator::new(records, seed)?,
        Order::Shuffled,
        FileFormat::Json,
        &mut w,
    )?;
    w.flush()?;
    Ok((file, bytes))
}

fn targets(figures: &LoadFigures) -> Vec<LoadTarget> {
    let at = |ms: u64| figures.long_paths.iter().find(|r| r.rtt_ms == ms);
    let mut out = Vec::new();
    if let Some(row) = at(100) {
        out.push(LoadTarget {
            name: "upload rate at 100 ms RTT vs 0 ms".into(),
            goal: format!(">= {RATE_TARGET_AT_100MS}x"),
            value: row.vs_0ms,
            pass: row.vs_0ms.map(|v| v >= RATE_TARGET_AT_100MS),
        });
    }
    if let Some(worst) = figures
        .long_paths
        .iter()
        .map(|r| r.server_rss_mib)
        .max_by(f64::total_cmp)
    {
        out.push(LoadTarget {
            name: "server peak RSS, one upload, any RTT (MiB)".into(),
            goal: format!("<= {RSS_TARGET_MIB}"),
            value: Some(worst),
            pass: Some(worst <= RSS_TARGET_MIB),
        });
    }
    if let Some(beside) = figures.small_jobs_beside_upload.get(1) {
        out.push(LoadTarget {
            name: "p99 of one-record jobs beside a big upload (ms)".into(),
            goal: format!("<= {P99_TARGET_MS}"),
            value: Some(beside.p99_ms),
            pass: Some(beside.p99_ms <= P99_TARGET_MS),
        });
    }
    out
}

/// Prints the tables and the targets.
pub fn print(figures: &LoadFigures) {
    longpath::print(&figures.long_paths);
    latency::print(&figures.small_jobs_beside_upload);
    if figures.targets.is_empty() {
        return;
    }
    println!("\nTargets (issue 13 §4)");
    for t in &figures.targets {
        let verdict = match t.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "-",
        };
        let value = t.value.map_or("-".into(), |v| format!("{v:.2}"));
        println!(
            "  {verdict:<5} {:<48} {value:>8}  (goal {})",
            t.name, t.goal
        );
    }
}

/// `edge-bench load`: only these rows, on a fresh temporary directory.
pub fn load_only(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let records = args
        .records
        .unwrap_or(if args.small { 20_000 } else { 1_000_000 });
    let repeat = args.repeat.unwrap_or(if args.small { 1 } else { 3 }).max(1);
    crate::run::build_binaries(args.no_build)?;
    let tmp = tempfile::Builder::new()
        .prefix("edge-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    crate::proc::remove_on_interrupt(tmp.path());
    let setup = setup(tmp.path())?;
    let (file, bytes) = shuffled_json(tmp.path(), records, args.seed)?;
    let plan = Plan {
        path_records: args.path_records.unwrap_or(records.min(PATH_RECORDS)),
        latency: !args.no_latency,
        rtts_ms: args.rtt_ms.clone(),
        ..Plan::new(records, args.seed, repeat)
    };
    eprintln!(
        "edge-bench: {records} shuffled records, {:.1} MB; long paths with {} records at RTTs {:?} ms, {repeat} run(s) each",
        bytes as f64 / 1e6,
        plan.path_records,
        plan.rtts_ms
    );
    let mut failures = Vec::new();
    let big = Upload {
        file: &file,
        bytes,
        records,
    };
    let figures = run(&setup, big, &plan, &mut failures);
    print(&figures);
    for f in &failures {
        println!("FAILED: {f}");
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The config, certs and token in `tmp`: a first server makes the dev CA, the token is
/// minted for it.
pub fn setup(tmp: &Path) -> anyhow::Result<Setup> {
    let config = tmp.join("edge.toml");
    std::fs::write(&config, server::CONFIG)?;
    let mut setup = Setup {
        bins: Bins::locate()?,
        config,
        certs: tmp.join("certs"),
        tmp: tmp.to_owned(),
        token: String::new(),
    };
    let dirs: ServerDirs = setup.dirs("warmup");
    let first = EdgeServer::start(&setup.bins, &dirs)?;
    setup.token = server::mint_token(&setup.bins, &dirs)?;
    first.stop()?;
    Ok(setup)
}
