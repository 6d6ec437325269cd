//! Small jobs beside a big upload: the latency of one-record jobs on their own connection,
//! first alone, then while a big upload (the 1M-record shuffled file) runs on another
//! connection of the same server. The jobs run one after another, so each latency is that of
//! a job with nothing of its own queued before it.

use crate::jobs::bodies;
use crate::server::{EdgeServer, Setup};
use anyhow::{bail, Context as _};
use edge_client::{Client, UploadJob};
use edge_proto::{Event, Format, JobHeader};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// One-record jobs measured alone.
const ALONE_JOBS: usize = 300;
/// At most this many one-record jobs beside the upload (they stop when it ends).
const BESIDE_MAX_JOBS: usize = 20_000;
/// The longest the big upload may take.
const UPLOAD_LIMIT: Duration = Duration::from_secs(600);

/// Latencies of one-record jobs, alone or beside the upload.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyFigures {
    /// `alone` or `beside a big upload`.
    pub what: String,
    /// Jobs measured.
    pub jobs: usize,
    /// Median latency (upload call to `done`), ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Jobs that did not end `done` with one record.
    pub failed: usize,
    /// The big upload's wall time, seconds (beside only).
    pub upload_s: Option<f64>,
}

/// Runs both measurements against one fresh server; `file` is the big upload (`records`).
pub fn run(setup: &Setup, file: &Path, records: u64) -> anyhow::Result<Vec<LatencyFigures>> {
    let dirs = setup.dirs("latency");
    let server = EdgeServer::start(&setup.bins, &dirs)?;
    let result = measure(
        setup,
        &server,
        file,
        records,
        &dirs.data.with_extension("events"),
    );
    let stopped = server.stop();
    let _ = std::fs::remove_dir_all(dirs.data.parent().unwrap_or(&dirs.data));
    let figures = result?;
    stopped?;
    Ok(figures)
}

fn measure(
    setup: &Setup,
    server: &EdgeServer,
    file: &Path,
    records: u64,
    events: &Path,
) -> anyhow::Result<Vec<LatencyFigures>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let config = setup.client_config(server.addr);
    let client = runtime
        .block_on(Client::connect(&config))
        .context("connect")?;
    let alone = bodies(ALONE_JOBS, 21)?;
    let (latencies, failed) = runtime.block_on(jobs(&client, &alone, || false));
    let mut out = vec![figures("alone", latencies, failed, None)];

    let beside = bodies(BESIDE_MAX_JOBS, 22)?;
    let upload = {
        let (setup, addr) = (setup.clone(), server.addr);
        let (file, events) = (file.to_owned(), events.to_owned());
        std::thread::spawn(move || setup.upload(addr, &file, &events, UPLOAD_LIMIT))
    };
    let (latencies, failed) = runtime.block_on(jobs(&client, &beside, || upload.is_finished()));
    let uploaded = upload
        .join()
        .map_err(|_| anyhow::anyhow!("the upload thread panicked"))??;
    let wall = uploaded.wall_s;
    match uploaded.last {
        Event::Done { committed, .. } if committed == records => {}
        other => bail!("the big upload: expected done with {records} committed, got {other:?}"),
    }
    out.push(figures(
        "beside a big upload",
        latencies,
        failed,
        Some(wall),
    ));
    runtime.block_on(client.close());
    Ok(out)
}

/// Runs one-record jobs one after another until `stop()` or the bodies run out; returns the
/// latencies (ms) of those that ended `done` with one record, and how many did not.
async fn jobs(client: &Client, bodies: &[Vec<u8>], stop: impl Fn() -> bool) -> (Vec<f64>, usize) {
    let (mut latencies, mut failed) = (Vec::new(), 0);
    for (i, body) in bodies.iter().enumerate() {
        if stop() || crate::proc::interrupted() {
            break;
        }
        let mut header = JobHeader::new("ports");
        header.format = Some(Format::Ndjson);
        header.name = Some(format!("small-{i}.ndjson"));
        header.size = Some(body.len() as u64);
        let job = UploadJob::new(header, Box::new(std::io::Cursor::new(body.clone())));
        let t0 = Instant::now();
        match client.upload(job, |_| {}).await {
            Ok(result) if matches!(result.last, Event::Done { committed: 1, .. }) => {
                latencies.push(t0.elapsed().as_secs_f64() * 1e3)
            }
            _ => failed += 1,
        }
    }
    (latencies, failed)
}

fn figures(
    what: &str,
    mut latencies: Vec<f64>,
    failed: usize,
    upload_s: Option<f64>,
) -> LatencyFigures {
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i]
    };
    LatencyFigures {
        what: what.to_owned(),
        jobs: latencies.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        failed,
        upload_s,
    }
}

/// Prints the figures as a table.
pub fn print(figures: &[LatencyFigures]) {
    if figures.is_empty() {
        return;
    }
    println!("\nSmall jobs beside a big upload: one-record jobs one after another on their own connection");
    println!(
        "{:<22} {:>6} {:>8} {:>8} {:>8} {:>7} {:>9}",
        "", "jobs", "p50 ms", "p99 ms", "max ms", "failed", "upload s"
    );
    for f in figures {
        println!(
            "{:<22} {:>6} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>9}",
            f.what,
            f.jobs,
            f.p50_ms,
            f.p99_ms,
            f.max_ms,
            f.failed,
            f.upload_s.map_or("-".into(), |s| format!("{s:.2}"))
        );
    }
}
