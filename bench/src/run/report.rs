//! How a run's figures are printed: the table, the ratios, the targets, the small jobs.

use super::figures::Results;
use crate::jobs::JobsFigures;

pub(super) fn fmt_int(x: f64) -> String {
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

pub(super) fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

pub(super) fn print_results(results: &Results) {
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

pub(super) fn print_jobs(jobs: &[JobsFigures], rss: Option<f64>) {
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
