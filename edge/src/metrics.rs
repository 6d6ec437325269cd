//! The server's counters, in the Prometheus text format (names prefixed `edge_`).
//!
//! Everything is an atomic or a small map behind a lock, updated where the thing happens:
//! connections in `server`, refusals where jobs are refused, job outcomes and counts from the
//! events every job streams (so they move while a job runs), commit latency from the
//! pipeline's commit observer.

use crate::connections::Connections;
use edge_proto::{ErrorCode, Event};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Upper bounds (seconds) of the commit latency histogram's buckets.
const COMMIT_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Every figure `/metrics` shows.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    start_time: f64,
    store_path: PathBuf,
    /// The PostgreSQL store's size, as last asked ([`Metrics::set_store_bytes`]); `None` for
    /// redb, whose file is measured when asked.
    database_bytes: Mutex<Option<u64>>,
    /// The connection counts (open, refused), kept by the caps that decide them.
    connections: Arc<Connections>,
    /// The receive-window budget (held bytes, growths), kept by the connections' tuners.
    windows: Arc<crate::window::Budget>,
    jobs_started: AtomicU64,
    /// Jobs started, by what carried them (`edge/1`, `h3`, `h2`, `http/1.1`).
    jobs_by_transport: Mutex<BTreeMap<&'static str, u64>>,
    jobs_running: AtomicI64,
    /// Finished jobs by outcome and code (`done`/"", `failed`/`shutdown`, ...).
    jobs_finished: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Feed runs by feed and outcome (`done`, `unchanged`, `failed`, `retry`).
    feed_runs: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Refused jobs and requests by code.
    rejections: Mutex<BTreeMap<&'static str, u64>>,
    /// Auth failures by reason.
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    bytes_received: AtomicU64,
    records_decoded: AtomicU64,
    records_committed: AtomicU64,
    record_errors: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS.len()],
    commit_count: AtomicU64,
    commit_micros: AtomicU64,
    /// When `status` was last asked, and the committed records and bytes then.
    last_status: Mutex<Option<(Instant, u64, u64)>>,
}

impl Metrics {
    /// Fresh counters for a server whose store is `store_path` and whose connections are
    /// counted by `connections` and whose receive windows are charged to `windows`.
    pub(crate) fn new(
        store_path: PathBuf,
        connections: Arc<Connections>,
        windows: Arc<crate::window::Budget>,
    ) -> Metrics {
        Metrics {
            started: Instant::now(),
            start_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            store_path,
            database_bytes: Mutex::new(None),
            connections,
            windows,
            jobs_started: AtomicU64::new(0),
            jobs_by_transport: Mutex::new(BTreeMap::new()),
            jobs_running: AtomicI64::new(0),
            jobs_finished: Mutex::new(BTreeMap::new()),
            rejections: Mutex::new(BTreeMap::new()),
            feed_runs: Mutex::new(BTreeMap::new()),
            auth_failures: Mutex::new(BTreeMap::new()),
            bytes_received: AtomicU64::new(0),
            records_decoded: AtomicU64::new(0),
            records_committed: AtomicU64::new(0),
            record_errors: AtomicU64::new(0),
            commit_buckets: Default::default(),
            commit_count: AtomicU64::new(0),
            commit_micros: AtomicU64::new(0),
            last_status: Mutex::new(None),
        }
    }

    /// How long the server has been up.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Jobs running now.
    pub fn jobs_running(&self) -> i64 {
        self.jobs_running.load(Ordering::Relaxed)
    }

    /// A job started (got its slot).
    pub(crate) fn job_started(&self, transport: &'static str) {
        self.jobs_started.fetch_add(1, Ordering::Relaxed);
        *lock(&self.jobs_by_transport).entry(transport).or_insert(0) += 1;
        self.jobs_running.fetch_add(1, Ordering::Relaxed);
    }

    /// A feed's run ended with `outcome` (`done`, `unchanged`, `failed`, `retry`).
    pub(crate) fn feed_run(&self, feed: &str, outcome: &'static str) {
        *lock(&self.feed_runs)
            .entry((feed.to_owned(), outcome))
            .or_insert(0) += 1;
    }

    /// A started job ended with `last`.
    pub(crate) fn job_finished(&self, last: &Event) {
        self.jobs_running.fetch_sub(1, Ordering::Relaxed);
        let key = match last {
            Event::Done { .. } => ("done", ""),
            Event::Failed { code, .. } => ("failed", code.as_str()),
            Event::Rejected { code, .. } => ("rejected", code.as_str()),
            _ => ("unknown", ""),
        };
        *lock(&self.jobs_finished).entry(key).or_insert(0) += 1;
    }

    /// A job or request was refused before it started.
    pub(crate) fn rejected(&self, code: ErrorCode) {
        *lock(&self.rejections).entry(code.as_str()).or_insert(0) += 1;
        if matches!(
            code,
            ErrorCode::Unauthorized
                | ErrorCode::Forbidden
                | ErrorCode::TokenExpired
                | ErrorCode::TokenRevoked
        ) {
            *lock(&self.auth_failures).entry(code.as_str()).or_insert(0) += 1;
        }
    }

    /// Counts what a job's event says happened since its previous one.
    pub(crate) fn observe(&self, event: &Event, seen: &mut JobSeen) {
        match event {
            Event::Progress {
                bytes,
                records,
                errors,
            } => {
                add(&self.bytes_received, bytes, &mut seen.bytes);
                add(&self.records_decoded, records, &mut seen.records);
                add(&self.record_errors, errors, &mut seen.errors);
            }
            Event::Committed { records, .. } => {
                add(&self.records_committed, records, &mut seen.committed);
            }
            Event::Done {
                bytes,
                records,
                committed,
                errors,
                ..
            }
            | Event::Failed {
                bytes,
                records,
                committed,
                errors,
                ..
            } => {
                add(&self.bytes_received, bytes, &mut seen.bytes);
                add(&self.records_decoded, records, &mut seen.records);
                add(&self.records_committed, committed, &mut seen.committed);
                add(&self.record_errors, errors, &mut seen.errors);
            }
            _ => {}
        }
    }

    /// One commit took `took`.
    pub(crate) fn commit_took(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bucket, bound) in self.commit_buckets.iter().zip(COMMIT_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.commit_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.commit_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The figures `edge status` shows; rates are over the time since the previous call (at
    /// most a minute) or since the start.
    pub fn status(&self) -> crate::control::Status {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (records, bytes) = (load(&self.records_committed), load(&self.bytes_received));
        let now = Instant::now();
        let mut last = lock(&self.last_status);
        let (at, then_records, then_bytes) = match *last {
            Some(previous) if now.duration_since(previous.0) <= Duration::from_secs(60) => previous,
            _ => (self.started, 0, 0),
        };
        *last = Some((now, records, bytes));
        let secs = now.duration_since(at).as_secs_f64().max(1e-3);
        crate::control::Status {
            uptime_secs: self.uptime().as_secs(),
            jobs_running: self.jobs_running(),
            connections_open: self.connections.open() as i64,
            jobs_started: load(&self.jobs_started),
            records_committed: records,
            bytes_received: bytes,
            records_per_sec: (records - then_records) as f64 / secs,
            bytes_per_sec: (bytes - then_bytes) as f64 / secs,
            store_bytes: self.store_bytes(),
        }
    }

    /// The store's size in bytes: the redb file's (0 if it cannot be read), or the
    /// PostgreSQL database's as last asked.
    pub fn store_bytes(&self) -> u64 {
        let database = *self
            .database_bytes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        database.unwrap_or_else(|| {
            std::fs::metadata(&self.store_path)
                .map(|m| m.len())
                .unwrap_or(0)
        })
    }

    /// Records the PostgreSQL store's size ([`keep_database_size`] asks it).
    pub fn set_store_bytes(&self, bytes: u64) {
        *self
            .database_bytes
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(bytes);
    }

    /// Every figure in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut out,
            "edge_start_time_seconds",
            "When the server started (Unix time).",
            self.start_time,
        );
        gauge(
            &mut out,
            "edge_uptime_seconds",
            "Seconds since the server started.",
            self.uptime().as_secs_f64(),
        );
        gauge(
            &mut out,
            "edge_connections_open",
            "QUIC connections open now (or in handshake).",
            self.connections.open() as f64,
        );
        counter(
            &mut out,
            "edge_connections_refused_total",
            "Connections refused by the connection caps.",
            self.connections.refused(),
        );
        gauge(
            &mut out,
            "edge_receive_window_held_bytes",
            "Receive-window bytes above their start that connections hold now (of transport.receive_window_budget).",
            self.windows.held() as f64,
        );
        gauge(
            &mut out,
            "edge_receive_window_budget_bytes",
            "The server-wide budget of receive-window bytes above their start (transport.receive_window_budget).",
            self.windows.limit() as f64,
        );
        counter(
            &mut out,
            "edge_receive_window_grown_total",
            "Times a connection's receive window grew (its jobs consumed it at the rate of its round trip).",
            self.windows.grown(),
        );
        counter(
            &mut out,
            "edge_jobs_started_total",
            "Jobs that started running.",
            load(&self.jobs_started),
        );
        header(
            &mut out,
            "edge_jobs_by_transport_total",
            "Jobs that started running, by what carried them: edge/1, h3 (HTTP/3), h2 or http/1.1 (over TCP), watch (a watched folder's file), feed (a feed's URL).",
            "counter",
        );
        for (transport, n) in lock(&self.jobs_by_transport).iter() {
            let _ = writeln!(
                out,
                "edge_jobs_by_transport_total{{transport=\"{transport}\"}} {n}"
            );
        }
        header(
            &mut out,
            "edge_feed_runs_total",
            "Runs of each feed ([[sources.feeds]]), by outcome: done, unchanged (a 304), failed (after its retries), retry.",
            "counter",
        );
        for ((feed, outcome), n) in lock(&self.feed_runs).iter() {
            let feed = feed.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "edge_feed_runs_total{{feed=\"{feed}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        gauge(
            &mut out,
            "edge_jobs_running",
            "Jobs running now.",
            self.jobs_running() as f64,
        );
        header(
            &mut out,
            "edge_jobs_finished_total",
            "Jobs that ended, by outcome (done, failed) and failure code.",
            "counter",
        );
        for ((outcome, code), n) in lock(&self.jobs_finished).iter() {
            let _ = writeln!(
                out,
                "edge_jobs_finished_total{{outcome=\"{outcome}\",code=\"{code}\"}} {n}"
            );
        }
        header(
            &mut out,
            "edge_jobs_rejected_total",
            "Jobs and requests refused before they started, by code.",
            "counter",
        );
        for (code, n) in lock(&self.rejections).iter() {
            let _ = writeln!(out, "edge_jobs_rejected_total{{code=\"{code}\"}} {n}");
        }
        header(&mut out, "edge_auth_failures_total", "Refusals for a missing, invalid, expired or revoked token or a missing scope, by reason.", "counter");
        for (reason, n) in lock(&self.auth_failures).iter() {
            let _ = writeln!(out, "edge_auth_failures_total{{reason=\"{reason}\"}} {n}");
        }
        counter(
            &mut out,
            "edge_bytes_received_total",
            "Upload body bytes read.",
            load(&self.bytes_received),
        );
        counter(
            &mut out,
            "edge_records_decoded_total",
            "Records decoded, good or bad.",
            load(&self.records_decoded),
        );
        counter(
            &mut out,
            "edge_records_committed_total",
            "Records in returned store commits.",
            load(&self.records_committed),
        );
        counter(
            &mut out,
            "edge_record_errors_total",
            "Records reported as errors.",
            load(&self.record_errors),
        );
        header(
            &mut out,
            "edge_commit_duration_seconds",
            "How long store commits take.",
            "histogram",
        );
        for (bucket, bound) in self.commit_buckets.iter().zip(COMMIT_BUCKETS) {
            let _ = writeln!(
                out,
                "edge_commit_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                load(bucket)
            );
        }
        let count = load(&self.commit_count);
        let _ = writeln!(
            out,
            "edge_commit_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "edge_commit_duration_seconds_sum {}",
            load(&self.commit_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "edge_commit_duration_seconds_count {count}");
        gauge(
            &mut out,
            "edge_store_size_bytes",
            "Size of the store file.",
            self.store_bytes() as f64,
        );
        out
    }
}

/// What one job's events have reported so far (to count only what is new).
#[derive(Debug, Default)]
pub(crate) struct JobSeen {
    bytes: u64,
    records: u64,
    committed: u64,
    errors: u64,
}

fn add(total: &AtomicU64, now: &u64, seen: &mut u64) {
    if *now > *seen {
        total.fetch_add(*now - *seen, Ordering::Relaxed);
        *seen = *now;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

/// How often the PostgreSQL store's size is asked.
const DATABASE_SIZE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// For a PostgreSQL store: asks the database's size at start and every
/// [`DATABASE_SIZE_INTERVAL`] (off the runtime), for `edge_store_size_bytes` and `edge
/// status`, until the server drains. Nothing to do for redb.
pub(crate) async fn keep_database_size(
    metrics: std::sync::Arc<Metrics>,
    store: edge_tasks::Store,
    shutdown: crate::shutdown::Shutdown,
) {
    if !matches!(store.kind(), edge_tasks::store::Kind::Postgres(_)) {
        return;
    }
    let mut every = tokio::time::interval(DATABASE_SIZE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.draining() => return,
            _ = every.tick() => {}
        }
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.size_bytes()).await {
            Ok(Ok(bytes)) => metrics.set_store_bytes(bytes),
            Ok(Err(e)) => tracing::debug!("cannot ask the store's size: {e}"),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_only_what_is_new_and_render_as_prometheus_text() {
        let connections = Connections::new(&crate::config::TransportConfig::default());
        let budget = Arc::new(crate::window::Budget::new(1 << 20));
        let metrics = Metrics::new(PathBuf::from("/nonexistent"), connections, budget);
        let mut seen = JobSeen::default();
        metrics.job_started("h2");
        metrics.observe(
            &Event::Progress {
                bytes: 100,
                records: 10,
                errors: 1,
            },
            &mut seen,
        );
        metrics.observe(
            &Event::Committed {
                records: 9,
                offset: 90,
            },
            &mut seen,
        );
        metrics.observe(
            &Event::Progress {
                bytes: 150,
                records: 12,
                errors: 1,
            },
            &mut seen,
        );
        let done = Event::Done {
            job: "j".into(),
            bytes: 150,
            records: 12,
            committed: 11,
            errors: 1,
            duration_ms: 1,
            summary: serde_json::Value::Null,
            first_errors: Vec::new(),
            unchanged: false,
            sha256: None,
        };
        metrics.observe(&done, &mut seen);
        metrics.job_finished(&done);
        metrics.rejected(ErrorCode::TokenRevoked);
        metrics.commit_took(Duration::from_millis(3));
        let text = metrics.render();
        for line in [
            "edge_bytes_received_total 150",
            "edge_records_decoded_total 12",
            "edge_records_committed_total 11",
            "edge_record_errors_total 1",
            "edge_jobs_running 0",
            "edge_jobs_by_transport_total{transport=\"h2\"} 1",
            "edge_jobs_finished_total{outcome=\"done\",code=\"\"} 1",
            "edge_auth_failures_total{reason=\"token_revoked\"} 1",
            "edge_commit_duration_seconds_bucket{le=\"0.0025\"} 0",
            "edge_commit_duration_seconds_bucket{le=\"0.005\"} 1",
            "edge_commit_duration_seconds_count 1",
            "# TYPE edge_commit_duration_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
    }
}
