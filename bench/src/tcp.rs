//! `edge-bench tcp`: the same upload over QUIC and over TCP, in one run (issue 16 §1):
//!
//! - `edge-client upload` of the sorted 1M-record file over `edge/1` (QUIC), and with `--tcp`
//!   (HTTP/2 over TCP + TLS on the same port), each into a fresh server, timed from the
//!   client's start to the job's `done`. Target: HTTP/2 at >= 0.9x the rate of `edge/1`.
//! - The machine's own curl (no HTTP/3) over HTTP/2: into edge, and into the discard server's
//!   TCP side (which reads the body and drops it): what curl alone can push over TCP.

use crate::gen::{FileFormat, Generator, Order};
use crate::server::{DiscardServer, EdgeServer, Setup};
use anyhow::{bail, Context as _};
use edge_proto::Event;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The least share of `edge/1`'s rate the HTTP/2 upload keeps.
const TARGET: f64 = 0.9;

/// The longest one upload may take.
const UPLOAD_LIMIT: Duration = Duration::from_secs(600);

/// `edge-bench tcp`'s arguments.
#[derive(Debug, clap::Args)]
pub struct TcpArgs {
    /// Records of the upload (sorted JSON, as the `run` benchmark's).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    #[command(flatten)]
    runs: crate::runs::RunsArgs,
}

/// One row: what, its median wall time and rate.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// Median wall time, seconds.
    pub wall_s: f64,
    /// Records per second at the median.
    pub records_per_s: f64,
}

/// Everything `edge-bench tcp` measured.
#[derive(Debug, Clone, Serialize)]
pub struct TcpFigures {
    /// The file's size, bytes.
    pub bytes: u64,
    /// The rows.
    pub rows: Vec<Row>,
    /// HTTP/2's rate against edge/1's (edge-client both ways).
    pub h2_vs_edge1: f64,
    /// curl over HTTP/2: into edge against into the discard server, when curl was found.
    pub curl_edge_vs_discard: Option<f64>,
}

/// `edge-bench tcp`: generates the file, then measures every row.
pub fn tcp_only(args: TcpArgs) -> anyhow::Result<ExitCode> {
    let repeat = args.runs.repeat();
    let (tmp, setup) = args.runs.prepare()?;
    let file = tmp.path().join("sorted.json");
    eprintln!("edge-bench: writing {} sorted records", args.records);
    let generator = Generator::new(args.records, 1)?;
    let bytes = crate::run::generate_file(&generator, Order::Sorted, FileFormat::Json, &file)?;
    let curl = crate::run::on_path("curl");
    let figures = measure(&setup, &file, bytes, args.records, curl.as_deref(), repeat)?;
    print(&figures, args.records);
    args.runs.write_json(&figures)?;
    Ok(ExitCode::SUCCESS)
}

fn measure(
    setup: &Setup,
    file: &Path,
    bytes: u64,
    records: u64,
    curl: Option<&Path>,
    repeat: usize,
) -> anyhow::Result<TcpFigures> {
    let mut rows = Vec::new();
    for (what, extra) in [
        ("edge-client upload over edge/1 (QUIC), to done", &[][..]),
        (
            "edge-client upload --tcp (HTTP/2 over TCP), to done",
            &["--tcp"][..],
        ),
    ] {
        eprintln!("edge-bench: {what}, {repeat} time(s)");
        let mut walls = Vec::new();
        for _ in 0..repeat {
            let dirs = setup.dirs("tcp");
            let server = EdgeServer::start(&setup.bins, &dirs)?;
            let events = dirs.data.with_extension("events");
            let uploaded = setup.upload_with(server.addr, file, &events, UPLOAD_LIMIT, extra)?;
            server.stop()?;
            check_done(&uploaded.last, records)?;
            walls.push(uploaded.to_final_s);
        }
        rows.push(row(what, walls, records));
    }
    let mut curl_ratio = None;
    if let Some(curl) = curl {
        eprintln!(
            "edge-bench: curl --http2 into edge and into the discard server, {repeat} time(s) each"
        );
        let answer = setup.tmp.join("curl.out");
        let mut walls = Vec::new();
        for _ in 0..repeat {
            let server = EdgeServer::start(&setup.bins, &setup.dirs("tcp-curl"))?;
            let url = format!("https://127.0.0.1:{}/v1/jobs/ports", server.addr.port());
            walls.push(curl_upload(curl, setup, file, &url, &answer, true)?);
            server.stop()?;
            let text = std::fs::read_to_string(&answer)?;
            let last = text.lines().last().unwrap_or("");
            check_done(
                &serde_json::from_str(last).context("curl's last line")?,
                records,
            )?;
        }
        rows.push(row(
            "curl --http2 -T FILE .../v1/jobs/ports, to done",
            walls,
            records,
        ));
        let discard =
            DiscardServer::start(&setup.bins, &setup.certs, &setup.tmp.join("discard.log"))?;
        let url = format!("https://127.0.0.1:{}/discard", discard.addr.port());
        let mut walls = Vec::new();
        for _ in 0..repeat {
            walls.push(curl_upload(curl, setup, file, &url, &answer, false)?);
            let read: serde_json::Value = serde_json::from_slice(&std::fs::read(&answer)?)?;
            if read["bytes"].as_u64() != Some(bytes) {
                bail!("the discard server read {read}, not {bytes} bytes");
            }
        }
        discard.stop()?;
        rows.push(row(
            "curl --http2 -T FILE into the discard server",
            walls,
            records,
        ));
        curl_ratio = Some(rows[2].records_per_s / rows[3].records_per_s);
    }
    Ok(TcpFigures {
        bytes,
        h2_vs_edge1: rows[1].records_per_s / rows[0].records_per_s,
        curl_edge_vs_discard: curl_ratio,
        rows,
    })
}

/// `curl --http2 -T file url` (with the token when `auth`); its wall time.
fn curl_upload(
    curl: &Path,
    setup: &Setup,
    file: &Path,
    url: &str,
    answer: &PathBuf,
    auth: bool,
) -> anyhow::Result<f64> {
    let mut command = Command::new(curl);
    command
        .args(["--http2", "-sS", "--cacert"])
        .arg(setup.ca())
        .arg("-T")
        .arg(file)
        .arg(url)
        .arg("-o")
        .arg(answer)
        .stdin(Stdio::null());
    if auth {
        command.args(["-H", &format!("authorization: Bearer {}", setup.token)]);
    }
    let started = Instant::now();
    let status = command.status().context("cannot run curl")?;
    if !status.success() {
        bail!("curl exited with {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Fails unless `last` is `done` with every record committed and none in error.
pub(crate) fn check_done(last: &Event, records: u64) -> anyhow::Result<()> {
    match last {
        Event::Done {
            committed,
            errors: 0,
            ..
        } if *committed == records => Ok(()),
        other => bail!("expected done with {records} committed, got {other:?}"),
    }
}

/// A row of the median of `walls`, with its rate.
pub(crate) fn row(what: &str, walls: Vec<f64>, records: u64) -> Row {
    let wall_s = crate::run::median(walls).unwrap_or(f64::NAN);
    Row {
        what: what.into(),
        wall_s,
        records_per_s: records as f64 / wall_s,
    }
}

/// Prints the rows, the ratios and the target.
pub fn print(figures: &TcpFigures, records: u64) {
    println!(
        "\ntcp: {records} sorted records ({} bytes of JSON), medians",
        figures.bytes
    );
    println!("  {:<56} {:>8} {:>12}", "what", "wall s", "records/s");
    for row in &figures.rows {
        println!(
            "  {:<56} {:>8.3} {:>12.0}",
            row.what, row.wall_s, row.records_per_s
        );
    }
    if let Some(ratio) = figures.curl_edge_vs_discard {
        println!("\ncurl over HTTP/2: into edge at {ratio:.3} of its rate into the discard server");
    }
    let pass = figures.h2_vs_edge1 >= TARGET;
    println!("\nTarget (issue 16 §1)");
    println!(
        "  {:<5} HTTP/2 (edge-client --tcp) / edge/1 rate {:>10.3}  (goal >= {TARGET})",
        if pass { "PASS" } else { "MISS" },
        figures.h2_vs_edge1
    );
}
