//! `edge-bench run`: every stage on the same generated data, in one run, side by side.
//!
//! - this module: the arguments and the run itself, stage after stage, order after order;
//! - [`stages`]: how each stage is measured;
//! - [`figures`]: samples, rows (medians), ratios and targets;
//! - [`report`]: the printed table;
//! - [`setup`]: binaries, tools, data files, temporary directories.

mod figures;
mod report;
mod setup;
mod stages;

use crate::gen::{FileFormat, Generator, Order};
use crate::jobs::{self, JobsFigures};
use crate::server::{self, EdgeServer};
use crate::stage::StageKind;
use anyhow::{bail, Context as _};
pub(crate) use figures::median;
use figures::{
    memory_and_jobs_targets, ratios, targets, BusyFigure, FileInfo, MemoryFigure, Results, Row,
    Sample, StageId,
};
use report::{fmt_int, print_jobs, print_results};
pub(crate) use setup::{build_binaries, find_curl, generate_file, on_path};
use setup::{loadavg, temp_dir, BusyThreads};
use stages::Bench;
use std::path::PathBuf;
use std::process::ExitCode;
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

/// The data files of one order.
struct Files {
    json: PathBuf,
    json_bytes: u64,
    ndjson: PathBuf,
    ndjson_bytes: u64,
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
