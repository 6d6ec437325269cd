//! Small jobs: many one-record jobs through the `edge_client` library, on a few reused
//! connections, and each on a new connection. Reports jobs/s and the latency from opening the
//! job (or the connection) to its `done` event.

use crate::gen::Generator;
use anyhow::{bail, Context as _};
use edge_client::{Client, ClientConfig, UploadJob};
use edge_proto::{Event, Format, JobHeader};
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How one small-jobs run went.
#[derive(Debug, Clone, Serialize)]
pub struct JobsFigures {
    /// What was run.
    pub what: String,
    /// Jobs run.
    pub jobs: usize,
    /// Jobs in flight at once.
    pub concurrency: usize,
    /// Connections used (`jobs` when each job has its own).
    pub connections: usize,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
    /// Jobs per second.
    pub jobs_per_s: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Slowest job, milliseconds.
    pub max_ms: f64,
    /// Jobs that did not end `done` with one record committed.
    pub failed: usize,
    /// The first failure, if any.
    pub first_failure: Option<String>,
    /// Server CPU time during the run, seconds.
    pub server_cpu_s: f64,
    /// Mean time `Client::close` took (new connections only), milliseconds: it waits until
    /// its CONNECTION_CLOSE has been sent (not the draining period). Each close runs beside the worker's
    /// next job, as a process that uploads and exits would; the wall time ends when every
    /// close has returned.
    pub close_mean_ms: Option<f64>,
}

/// One-record NDJSON bodies, made before any timing.
pub fn bodies(count: usize, seed: u64) -> anyhow::Result<Vec<Vec<u8>>> {
    let generator = Generator::new(count as u64, seed)?;
    (0..count as u64)
        .map(|g| {
            let (_, port) = generator.record(g);
            let mut line = serde_json::to_vec(&port)?;
            line.push(b'\n');
            Ok(line)
        })
        .collect()
}

fn header(i: usize, body: &[u8]) -> JobHeader {
    let mut header = JobHeader::new("ports");
    header.format = Some(Format::Ndjson);
    header.name = Some(format!("job-{i}.ndjson"));
    header.size = Some(body.len() as u64);
    header
}

/// Checks a job's final event: `done` with one record committed.
fn check(last: &Event) -> Result<(), String> {
    match last {
        Event::Done { committed: 1, .. } => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// Latencies (ms) and failures collected by the workers.
#[derive(Debug, Default)]
pub struct Tally {
    latencies_ms: Vec<f64>,
    close_ms: Vec<f64>,
    failed: usize,
    first_failure: Option<String>,
}

impl Tally {
    fn fail(&mut self, why: String) {
        self.failed += 1;
        self.first_failure.get_or_insert(why);
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_ms.extend(other.latencies_ms);
        self.close_ms.extend(other.close_ms);
        self.failed += other.failed;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
    }
}

fn config(addr: &str, ca: &Path, token: &str) -> ClientConfig {
    ClientConfig {
        server: format!("https://{addr}"),
        ca: Some(ca.to_owned()),
        token: Some(token.to_owned()),
    }
}

/// `bodies.len()` one-record jobs, `concurrency` at once, over `connections` reused
/// connections. Latency: from calling `upload` to the `done` event.
pub async fn reused(
    addr: &str,
    ca: &Path,
    token: &str,
    bodies: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    connections: usize,
) -> anyhow::Result<(Tally, f64)> {
    let config = config(addr, ca, token);
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(Client::connect(&config).await.context("connect")?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let client = clients[w % connections].clone();
        let (next, bodies) = (next.clone(), bodies.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let job = UploadJob::new(
                    header(i, body),
                    Box::new(std::io::Cursor::new(body.clone())),
                );
                let t0 = Instant::now();
                match client.upload(job, |_| {}).await {
                    Ok(result) => match check(&result.last) {
                        Ok(()) => tally.latencies_ms.push(t0.elapsed().as_secs_f64() * 1e3),
                        Err(why) => tally.fail(why),
                    },
                    Err(e) => tally.fail(e.to_string()),
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for worker in workers {
        tally.merge(worker.await.context("a worker panicked")?);
    }
    let wall = started.elapsed().as_secs_f64();
    for client in clients {
        client.close().await;
    }
    Ok((tally, wall))
}

/// `bodies.len()` one-record jobs, each on a new connection, `concurrency` at once. Latency:
/// from starting to connect to the `done` event. Each connection's close runs beside the
/// worker's next job (it waits about 3 round-trip timeouts for the connection to drain); the
/// wall time ends when the last close returned.
pub async fn fresh(
    addr: &str,
    ca: &Path,
    token: &str,
    bodies: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
) -> anyhow::Result<(Tally, f64)> {
    let config = Arc::new(config(addr, ca, token));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (next, bodies, config) = (next.clone(), bodies.clone(), config.clone());
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut closing = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let t0 = Instant::now();
                let client = match Client::connect(&config).await {
                    Ok(client) => client,
                    Err(e) => {
                        tally.fail(format!("connect: {e}"));
                        continue;
                    }
                };
                let job = UploadJob::new(
                    header(i, body),
                    Box::new(std::io::Cursor::new(body.clone())),
                );
                match client.upload(job, |_| {}).await {
                    Ok(result) => match check(&result.last) {
                        Ok(()) => tally.latencies_ms.push(t0.elapsed().as_secs_f64() * 1e3),
                        Err(why) => tally.fail(why),
                    },
                    Err(e) => tally.fail(e.to_string()),
                }
                closing.push(tokio::spawn(async move {
                    let started = Instant::now();
                    client.close().await;
                    started.elapsed().as_secs_f64() * 1e3
                }));
            }
            for close in closing {
                if let Ok(ms) = close.await {
                    tally.close_ms.push(ms);
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for worker in workers {
        tally.merge(worker.await.context("a worker panicked")?);
    }
    Ok((tally, started.elapsed().as_secs_f64()))
}

impl Tally {
    /// The figures of a run of `jobs` jobs that took `wall_s`.
    pub fn figures(
        self,
        what: &str,
        jobs: usize,
        concurrency: usize,
        connections: usize,
        wall_s: f64,
        server_cpu_s: f64,
    ) -> JobsFigures {
        let mut lat = self.latencies_ms;
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return f64::NAN;
            }
            let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i]
        };
        JobsFigures {
            what: what.to_owned(),
            jobs,
            concurrency,
            connections,
            wall_s,
            jobs_per_s: jobs as f64 / wall_s.max(1e-9),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: lat.last().copied().unwrap_or(f64::NAN),
            failed: self.failed,
            first_failure: self.first_failure,
            server_cpu_s,
            close_mean_ms: (!self.close_ms.is_empty())
                .then(|| self.close_ms.iter().sum::<f64>() / self.close_ms.len() as f64),
        }
    }
}

/// Runs both small-jobs benchmarks against one server; the caller starts and stops it.
pub fn run_both(
    server: &crate::server::EdgeServer,
    ca: &Path,
    token: &str,
    reused_jobs: usize,
    fresh_jobs: usize,
) -> anyhow::Result<Vec<JobsFigures>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let addr = server.addr.to_string();
    let (concurrency, connections, fresh_concurrency) = (50, 4, 16);
    let mut out = Vec::new();

    let bodies_a = Arc::new(bodies(reused_jobs, 11)?);
    let cpu0 = server.usage()?.cpu_s();
    let (tally, wall) = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(600),
            reused(&addr, ca, token, bodies_a, concurrency, connections),
        )
        .await
    })??;
    let cpu1 = server.usage()?.cpu_s();
    out.push(tally.figures(
        "one-record jobs, reused connections",
        reused_jobs,
        concurrency,
        connections,
        wall,
        cpu1 - cpu0,
    ));

    let bodies_b = Arc::new(bodies(fresh_jobs, 12)?);
    let (tally, wall) = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(600),
            fresh(&addr, ca, token, bodies_b, fresh_concurrency),
        )
        .await
    })??;
    let cpu2 = server.usage()?.cpu_s();
    out.push(tally.figures(
        "one-record jobs, a new connection each",
        fresh_jobs,
        fresh_concurrency,
        fresh_jobs,
        wall,
        cpu2 - cpu1,
    ));
    if out.iter().all(|f| f.jobs > 0 && f.failed == f.jobs) {
        bail!("every small job failed: {:?}", out[0].first_failure);
    }
    Ok(out)
}
