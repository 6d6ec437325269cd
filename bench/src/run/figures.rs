//! The figures of a run: the stages, one run of a stage ([`Sample`]), the medians of a stage's
//! runs ([`Row`]), the ratios and targets drawn from them, and everything `--json-out` writes.

use super::report::fmt_int;
use crate::gen::Order;
use crate::jobs::JobsFigures;
use crate::proc::Usage;
use serde::Serialize;
use std::path::PathBuf;

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
    pub(super) const ALL: [StageId; 7] = [
        StageId::Decode,
        StageId::Store,
        StageId::Pipeline,
        StageId::Edge1,
        StageId::Http3Curl,
        StageId::CurlDiscard,
        StageId::Sqlite,
    ];

    pub(super) fn label(self) -> &'static str {
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
    pub(super) wall_s: f64,
    /// Input bytes.
    pub(super) bytes: u64,
    /// Records.
    pub(super) records: u64,
    /// The server's (or the in-process stage's) CPU time and peak RSS.
    pub(super) main: Option<Usage>,
    /// The client process's.
    pub(super) client: Option<Usage>,
    /// The store file's size afterwards.
    pub(super) store_bytes: Option<u64>,
    /// Keys plus values in the `ports` table (store-only stage).
    pub(super) raw_kv_bytes: Option<u64>,
    /// The server's own job time (`done.duration_ms`), end-to-end stages.
    pub(super) server_job_s: Option<f64>,
}

/// The medians of one stage's runs for one order.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub(super) order: Order,
    pub(super) stage: StageId,
    pub(super) label: &'static str,
    pub(super) runs: usize,
    pub(super) wall_s: f64,
    pub(super) mb_per_s: f64,
    pub(super) records_per_s: f64,
    pub(super) main_cpu_s: Option<f64>,
    pub(super) main_rss_mib: Option<f64>,
    pub(super) client_cpu_s: Option<f64>,
    pub(super) client_rss_mib: Option<f64>,
    pub(super) store_mib: Option<f64>,
    pub(super) raw_kv_mib: Option<f64>,
    pub(super) server_job_s: Option<f64>,
    pub(super) written_mb: Option<f64>,
    pub(super) samples: Vec<Sample>,
}

/// The median of the finite `values` (the mean of the middle two for an even count).
pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
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

pub(super) const MIB: f64 = 1024.0 * 1024.0;

impl Row {
    pub(super) fn of(order: Order, stage: StageId, samples: Vec<Sample>) -> Option<Row> {
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
pub(super) struct Target {
    pub(super) name: String,
    pub(super) goal: String,
    pub(super) value: Option<f64>,
    pub(super) shown: String,
    pub(super) pass: Option<bool>,
}

/// A ratio of two rows' records/s.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Ratio {
    pub(super) order: Order,
    pub(super) name: &'static str,
    pub(super) value: Option<f64>,
}

/// The memory comparison: server peak RSS for two upload sizes.
#[derive(Debug, Clone, Serialize)]
pub(super) struct MemoryFigure {
    pub(super) records: u64,
    pub(super) order: Order,
    pub(super) server_rss_mib: f64,
    pub(super) client_rss_mib: Option<f64>,
}

/// curl into the discard server while busy threads spin beside it: how much curl itself
/// slows when it does not have the machine to itself (a server that works takes cores too).
#[derive(Debug, Clone, Serialize)]
pub(super) struct BusyFigure {
    pub(super) order: Order,
    pub(super) busy_threads: usize,
    pub(super) wall_s: f64,
    pub(super) records_per_s: f64,
}

/// Everything `--json-out` writes.
#[derive(Debug, Serialize)]
pub(super) struct Results {
    pub(super) command: String,
    pub(super) cpus: usize,
    pub(super) records: u64,
    pub(super) repeat: usize,
    pub(super) seed: u64,
    pub(super) files: Vec<FileInfo>,
    pub(super) server_config: &'static str,
    pub(super) rows: Vec<Row>,
    pub(super) ratios: Vec<Ratio>,
    pub(super) targets: Vec<Target>,
    pub(super) memory: Vec<MemoryFigure>,
    pub(super) curl_beside_busy_threads: Vec<BusyFigure>,
    pub(super) jobs: Vec<JobsFigures>,
    pub(super) jobs_server_rss_mib: Option<f64>,
    pub(super) load: crate::load::LoadFigures,
    pub(super) skipped: Vec<String>,
    pub(super) failures: Vec<String>,
    pub(super) small: bool,
    pub(super) loadavg_before: String,
    pub(super) loadavg_after: String,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct FileInfo {
    pub(super) order: Order,
    pub(super) json: PathBuf,
    pub(super) json_bytes: u64,
    pub(super) ndjson_bytes: u64,
}

pub(super) fn find(rows: &[Row], order: Order, stage: StageId) -> Option<&Row> {
    rows.iter().find(|r| r.order == order && r.stage == stage)
}

pub(super) fn rate(rows: &[Row], order: Order, stage: StageId) -> Option<f64> {
    find(rows, order, stage).map(|r| r.records_per_s)
}

pub(super) fn ratios(rows: &[Row], orders: &[Order]) -> Vec<Ratio> {
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

pub(super) fn target(
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

pub(super) fn targets(rows: &[Row], orders: &[Order]) -> Vec<Target> {
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
pub(super) fn memory_and_jobs_targets(
    memory: &[MemoryFigure],
    jobs: &[JobsFigures],
) -> Vec<Target> {
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
