//! `edge-bench primes`: the `primes` task end to end against the peer crate it is built on
//! (`primal`, called in this process), with the targets of issue 15 §3:
//!
//! - the 10⁷-th prime (179,424,673) through `GET /v1/primes/10000000` in under 0.5 s;
//! - a job of 100,000 small `n` (≤ 10⁵) over `edge/1`, every answer back as a `result` event,
//!   at ≥ 200,000 results/s from the upload's start to its `done`.

use crate::server::{EdgeServer, Setup};
use anyhow::{bail, Context as _};
use edge_client::api::Api;
use edge_client::{Client, UploadJob};
use edge_proto::{Event, Format, JobHeader};
use serde::Serialize;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `n` of the large-prime row.
const LARGE_N: u64 = 10_000_000;
/// Its prime.
const LARGE_PRIME: u64 = 179_424_673;
/// The most time the large prime may take end to end, s.
const LARGE_TARGET_S: f64 = 0.5;
/// Records of the small-`n` job.
const SMALL_JOB_RECORDS: usize = 100_000;
/// The largest `n` in it.
const SMALL_N_MAX: u64 = 100_000;
/// The fewest results per second the small-`n` job keeps end to end.
const SMALL_TARGET_PER_S: f64 = 200_000.0;

/// `edge-bench primes`'s arguments.
#[derive(Debug, clap::Args)]
pub struct PrimesArgs {
    #[command(flatten)]
    runs: crate::runs::RunsArgs,
}

/// One row: what, how long (median), and the rate where it has one.
#[derive(Debug, Clone, Serialize)]
pub struct PrimesRow {
    /// What was measured.
    pub what: String,
    /// Median wall time, seconds.
    pub wall_s: f64,
    /// Results per second (the small-`n` rows).
    pub per_s: Option<f64>,
}

/// One target and whether the figures meet it.
#[derive(Debug, Clone, Serialize)]
pub struct PrimesTarget {
    /// What.
    pub name: String,
    /// The goal.
    pub goal: String,
    /// The figure.
    pub value: f64,
    /// Met?
    pub pass: bool,
}

/// Everything `edge-bench primes` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrimesFigures {
    /// The rows.
    pub rows: Vec<PrimesRow>,
    /// The targets, checked.
    pub targets: Vec<PrimesTarget>,
}

/// `edge-bench primes`: starts a server in a temporary directory and measures every row.
pub fn primes_only(args: PrimesArgs) -> anyhow::Result<ExitCode> {
    let repeat = args.runs.repeat();
    let (_tmp, setup) = args.runs.prepare()?;
    let server = EdgeServer::start(&setup.bins, &setup.dirs("primes"))?;
    let figures = measure(&setup, &server, repeat);
    server.stop()?;
    let figures = figures?;
    print(&figures);
    args.runs.write_json(&figures)?;
    Ok(ExitCode::SUCCESS)
}

fn measure(setup: &Setup, server: &EdgeServer, repeat: usize) -> anyhow::Result<PrimesFigures> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let config = setup.client_config(server.addr);
    let mut rows = Vec::new();

    eprintln!("edge-bench: the {LARGE_N}th prime, {repeat} time(s) each way");
    let peer = median(repeat, || {
        let started = Instant::now();
        let prime = primal::StreamingSieve::nth_prime(LARGE_N as usize) as u64;
        check_large(prime)?;
        Ok(started.elapsed())
    })?;
    rows.push(PrimesRow {
        what: format!("p({LARGE_N}): primal::StreamingSieve in process (peer crate)"),
        wall_s: peer,
        per_s: None,
    });
    let served = runtime.block_on(async {
        let mut api = Api::connect(&config).await.context("connect")?;
        let mut walls = Vec::new();
        for _ in 0..repeat {
            let started = Instant::now();
            let answer = api.get(&format!("/v1/primes/{LARGE_N}")).await?;
            let wall = started.elapsed();
            if answer.status != 200 {
                bail!("GET /v1/primes/{LARGE_N}: {}", answer.error_message());
            }
            check_large(answer.body["prime"].as_u64().unwrap_or(0))?;
            walls.push(wall);
        }
        api.close().await;
        Ok::<_, anyhow::Error>(median_of(walls))
    })?;
    rows.push(PrimesRow {
        what: format!("p({LARGE_N}): GET /v1/primes/{LARGE_N} (end to end)"),
        wall_s: served,
        per_s: None,
    });

    eprintln!("edge-bench: {SMALL_JOB_RECORDS} small n, {repeat} time(s) each way");
    let ns = small_ns();
    let peer = median(repeat, || {
        let started = Instant::now();
        let (_, bound) = primal::estimate_nth_prime(SMALL_N_MAX);
        let sieve = primal::Sieve::new(bound as usize);
        let sum: u64 = ns.iter().map(|&n| sieve.nth_prime(n as usize) as u64).sum();
        std::hint::black_box(sum);
        Ok(started.elapsed())
    })?;
    rows.push(PrimesRow {
        what: format!(
            "{SMALL_JOB_RECORDS} n <= {SMALL_N_MAX}: primal::Sieve in process (peer crate)"
        ),
        wall_s: peer,
        per_s: Some(SMALL_JOB_RECORDS as f64 / peer),
    });
    let body: Vec<u8> = ns
        .iter()
        .map(|n| format!("{n}\n"))
        .collect::<String>()
        .into_bytes();
    let client = runtime
        .block_on(Client::connect(&config))
        .context("connect")?;
    let mut walls = Vec::new();
    for _ in 0..repeat {
        walls.push(runtime.block_on(small_job(&client, body.clone(), &ns))?);
    }
    runtime.block_on(client.close());
    let served = median_of(walls);
    rows.push(PrimesRow {
        what: format!("{SMALL_JOB_RECORDS} n <= {SMALL_N_MAX}: a job over edge/1, upload to done"),
        wall_s: served,
        per_s: Some(SMALL_JOB_RECORDS as f64 / served),
    });

    let large = rows[1].wall_s;
    let rate = SMALL_JOB_RECORDS as f64 / served;
    let targets = vec![
        PrimesTarget {
            name: format!("p({LARGE_N}) through GET, s"),
            goal: format!("< {LARGE_TARGET_S}"),
            value: large,
            pass: large < LARGE_TARGET_S,
        },
        PrimesTarget {
            name: "small-n job, results/s end to end".into(),
            goal: format!(">= {SMALL_TARGET_PER_S}"),
            value: rate,
            pass: rate >= SMALL_TARGET_PER_S,
        },
    ];
    Ok(PrimesFigures { rows, targets })
}

/// The small `n` of the job: spread over 1..=[`SMALL_N_MAX`] by a fixed generator.
fn small_ns() -> Vec<u64> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..SMALL_JOB_RECORDS)
        .map(|_| {
            // xorshift64*: the same numbers every run.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d) % SMALL_N_MAX + 1
        })
        .collect()
}

/// Uploads the small-`n` job; checks that every record was answered, in order; returns the
/// time from the upload's start to `done`.
async fn small_job(client: &Client, body: Vec<u8>, ns: &[u64]) -> anyhow::Result<Duration> {
    let mut header = JobHeader::new("primes");
    header.format = Some(Format::Lines);
    header.size = Some(body.len() as u64);
    let job = UploadJob::new(header, Box::new(std::io::Cursor::new(body)));
    let answered = Arc::new(Mutex::new((0usize, None::<String>)));
    let sink = answered.clone();
    let expected = ns.to_vec();
    let started = Instant::now();
    let result = client
        .upload(job, move |event: &Event| {
            if let Event::Result { index, fields } = event {
                let mut seen = sink.lock().unwrap_or_else(|e| e.into_inner());
                let wanted = expected.get(seen.0).copied();
                if *index != seen.0 as u64 || fields.get("n").and_then(|n| n.as_u64()) != wanted {
                    seen.1
                        .get_or_insert(format!("result {index} out of order: {fields:?}"));
                }
                seen.0 += 1;
            }
        })
        .await?;
    let wall = started.elapsed();
    let (count, fault) = answered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(fault) = fault {
        bail!("{fault}");
    }
    match result.last {
        Event::Done { records, .. } if records as usize == ns.len() && count == ns.len() => {
            Ok(wall)
        }
        other => bail!(
            "expected done with {} answers, got {count} and {other:?}",
            ns.len()
        ),
    }
}

fn check_large(prime: u64) -> anyhow::Result<()> {
    if prime != LARGE_PRIME {
        bail!("p({LARGE_N}) came out as {prime}, not {LARGE_PRIME}");
    }
    Ok(())
}

/// The median wall time of `repeat` runs, seconds.
fn median(repeat: usize, mut run: impl FnMut() -> anyhow::Result<Duration>) -> anyhow::Result<f64> {
    let walls = (0..repeat)
        .map(|_| run())
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(median_of(walls))
}

fn median_of(walls: Vec<Duration>) -> f64 {
    let seconds = walls.iter().map(Duration::as_secs_f64).collect();
    crate::run::median(seconds).unwrap_or(0.0)
}

/// Prints the rows and the targets.
pub fn print(figures: &PrimesFigures) {
    println!("\nprimes (medians)");
    println!("  {:<66} {:>9} {:>12}", "what", "wall s", "results/s");
    for row in &figures.rows {
        let rate = row.per_s.map_or("-".into(), |r| format!("{r:.0}"));
        println!("  {:<66} {:>9.3} {:>12}", row.what, row.wall_s, rate);
    }
    println!("\nTargets (issue 15 §3)");
    for t in &figures.targets {
        let verdict = if t.pass { "PASS" } else { "MISS" };
        println!(
            "  {verdict:<5} {:<40} {:>12.3}  (goal {})",
            t.name, t.value, t.goal
        );
    }
}
