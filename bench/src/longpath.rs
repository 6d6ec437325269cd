//! Long paths: the same upload through the delay forwarder at several round-trip times (0,
//! 50 and 100 ms), each to a fresh server. A fixed receive window caps one upload at
//! window ÷ RTT; this shows the rate each RTT gets, beside the server's peak RSS.

use crate::forwarder::Forwarder;
use crate::server::{EdgeServer, Setup, Uploaded};
use anyhow::bail;
use edge_proto::Event;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// The round trips measured by default, in milliseconds.
pub const RTTS_MS: [u64; 3] = [0, 50, 100];
/// The longest one upload may take.
const UPLOAD_LIMIT: Duration = Duration::from_secs(600);

/// The upload at one round-trip time: medians of its runs.
#[derive(Debug, Clone, Serialize)]
pub struct LongPathRow {
    /// The round trip the forwarder adds (0: no forwarder).
    pub rtt_ms: u64,
    /// Runs.
    pub runs: usize,
    /// From starting the client to the job's `done` event, seconds (the connection's close,
    /// about 3 probe timeouts, is left out).
    pub to_done_s: f64,
    /// Upload rate (bytes ÷ `to_done_s`), MB/s.
    pub mb_per_s: f64,
    /// The client's whole wall time, close included, seconds.
    pub client_wall_s: f64,
    /// This rate ÷ the 0 ms rate.
    pub vs_0ms: Option<f64>,
    /// The server's peak RSS, MiB.
    pub server_rss_mib: f64,
    /// Every run's `to_done_s`.
    pub runs_to_done_s: Vec<f64>,
    /// Datagrams the forwarder dropped (its queue full), over every run.
    pub dropped: usize,
}

/// Uploads `file` (`bytes` long, `records` records) `repeat` times at each of `rtts_ms`.
pub fn run(
    setup: &Setup,
    file: &Path,
    bytes: u64,
    records: u64,
    repeat: usize,
    rtts_ms: &[u64],
) -> anyhow::Result<Vec<LongPathRow>> {
    let mut rows: Vec<LongPathRow> = Vec::new();
    for &rtt_ms in rtts_ms {
        let (mut walls, mut client_walls, mut rss, mut dropped) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        for r in 1..=repeat {
            if crate::proc::interrupted() {
                bail!("interrupted");
            }
            let (uploaded, rss_mib, lost) = once(setup, file, records, rtt_ms)?;
            let wall = uploaded.to_final_s;
            eprintln!(
                "edge-bench: [long path {rtt_ms} ms RTT {r}/{repeat}] {wall:.2} s to done ({:.2} s with close), {:.1} MB/s, server RSS {rss_mib:.0} MiB",
                uploaded.wall_s,
                bytes as f64 / 1e6 / wall
            );
            walls.push(wall);
            client_walls.push(uploaded.wall_s);
            rss.push(rss_mib);
            dropped += lost;
        }
        let to_done_s = median(&walls);
        let mb_per_s = bytes as f64 / 1e6 / to_done_s;
        let base = rows.iter().find(|r| r.rtt_ms == 0).map(|r| r.mb_per_s);
        rows.push(LongPathRow {
            rtt_ms,
            runs: walls.len(),
            to_done_s,
            mb_per_s,
            client_wall_s: median(&client_walls),
            vs_0ms: base.map(|b| mb_per_s / b),
            server_rss_mib: median(&rss),
            runs_to_done_s: walls,
            dropped,
        });
    }
    Ok(rows)
}

/// One upload to a fresh server through a forwarder of `rtt_ms`: how it went, the server's
/// peak RSS in MiB, datagrams dropped.
fn once(
    setup: &Setup,
    file: &Path,
    records: u64,
    rtt_ms: u64,
) -> anyhow::Result<(Uploaded, f64, usize)> {
    let dirs = setup.dirs(&format!("longpath-{rtt_ms}ms"));
    let server = EdgeServer::start(&setup.bins, &dirs)?;
    let forwarder = match rtt_ms {
        0 => None,
        _ => Some(Forwarder::start(
            server.addr,
            Duration::from_millis(rtt_ms) / 2,
        )?),
    };
    let addr = forwarder.as_ref().map_or(server.addr, Forwarder::addr);
    let events = dirs.data.with_extension("events");
    let uploaded = setup.upload(addr, file, &events, UPLOAD_LIMIT);
    let dropped = forwarder.as_ref().map_or(0, Forwarder::dropped);
    drop(forwarder);
    let (usage, _) = server.stop()?;
    let _ = std::fs::remove_dir_all(dirs.data.parent().unwrap_or(&dirs.data));
    let uploaded = uploaded?;
    match &uploaded.last {
        Event::Done {
            committed, errors, ..
        } if *committed == records && *errors == 0 => {}
        other => bail!("expected done with {records} committed, got {other:?}"),
    }
    Ok((uploaded, usage.max_rss_kib as f64 / 1024.0, dropped))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Prints the rows as a table.
pub fn print(rows: &[LongPathRow]) {
    if rows.is_empty() {
        return;
    }
    println!("\nLong paths: the same upload through a UDP forwarder that delays each datagram RTT/2 each way");
    println!(
        "{:>8} {:>5} {:>11} {:>9} {:>8} {:>13} {:>15} {:>8}",
        "RTT ms",
        "runs",
        "to done s",
        "MB/s",
        "vs 0 ms",
        "with close s",
        "server RSS MiB",
        "dropped"
    );
    for r in rows {
        println!(
            "{:>8} {:>5} {:>11.2} {:>9.1} {:>8} {:>13.2} {:>15.0} {:>8}",
            r.rtt_ms,
            r.runs,
            r.to_done_s,
            r.mb_per_s,
            r.vs_0ms.map_or("-".into(), |v| format!("{v:.2}x")),
            r.client_wall_s,
            r.server_rss_mib,
            r.dropped
        );
    }
}
