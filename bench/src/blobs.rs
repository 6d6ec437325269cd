//! `edge-bench blobs`: one large file through the `blobs` task with curl over HTTP/3, beside
//! the same bytes to and from the discard server, with the targets of issue 15 §1:
//!
//! - the upload (`curl -T FILE .../v1/jobs/blobs?name=...`, to its `done`) at >= 0.8x the
//!   rate of `curl -T FILE` into the discard server;
//! - the download (`curl .../v1/blobs/NAME`) at >= 0.8x the rate of `curl .../bytes/N` from
//!   the discard server (bytes from memory);
//! - the server's peak RSS <= 64 MiB during either (measured over each phase alone);
//! - the store file <= 1.05x the bytes stored.
//!
//! Each upload goes to a fresh server (so the store holds one version); the downloads read
//! the last one.

use crate::server::{DiscardServer, EdgeServer, Setup};
use anyhow::{bail, Context as _};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// The least share of the discard server's rate the upload and the download keep.
const RATE_TARGET: f64 = 0.8;
/// The most the server's RSS may reach during an upload or a download, MiB.
const RSS_TARGET_MIB: f64 = 64.0;
/// The most the store file may hold per byte stored.
const STORE_TARGET: f64 = 1.05;

/// `edge-bench blobs`'s arguments.
#[derive(Debug, clap::Args)]
pub struct BlobsArgs {
    /// The file's size, MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Runs of each row; the table shows medians.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Do not run `cargo build` for edge and edge-client first.
    #[arg(long)]
    no_build: bool,
}

/// One row: what, its median wall time and rate, and the server's peak RSS.
#[derive(Debug, Clone, Serialize)]
pub struct BlobsRow {
    /// What was measured.
    pub what: String,
    /// Median wall time, seconds.
    pub wall_s: f64,
    /// MB/s (10^6 bytes) at the median.
    pub mb_per_s: f64,
    /// The server's peak RSS over the row's runs, MiB.
    pub server_rss_mib: f64,
}

/// One target and whether the figures meet it.
#[derive(Debug, Clone, Serialize)]
pub struct BlobsTarget {
    /// What.
    pub name: String,
    /// The goal.
    pub goal: String,
    /// The figure.
    pub value: f64,
    /// Met?
    pub pass: bool,
}

/// Everything `edge-bench blobs` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BlobsFigures {
    /// The file's size, bytes.
    pub bytes: u64,
    /// The store file's size after one upload, bytes.
    pub store_bytes: u64,
    /// The rows.
    pub rows: Vec<BlobsRow>,
    /// The targets, checked.
    pub targets: Vec<BlobsTarget>,
}

/// `edge-bench blobs`: generates the file, then measures every row.
pub fn blobs_only(args: BlobsArgs) -> anyhow::Result<ExitCode> {
    crate::run::build_binaries(args.no_build)?;
    let Some(curl) = crate::run::find_curl() else {
        bail!("no HTTP/3 curl: set EDGE_BENCH_CURL (../shared/tools/h3curl is used when present)");
    };
    let tmp = tempfile::Builder::new()
        .prefix("edge-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    crate::proc::remove_on_interrupt(tmp.path());
    let setup = crate::load::setup(tmp.path())?;
    let file = tmp.path().join("blob.bin");
    let bytes = args.size_mib * 1024 * 1024;
    eprintln!("edge-bench: writing a {} MiB file", args.size_mib);
    let digest = write_file(&file, bytes)?;
    let figures = measure(&setup, &curl, &file, bytes, &digest, args.repeat.max(1))?;
    print(&figures);
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` of incompressible bytes (a xorshift stream); returns their BLAKE3.
fn write_file(path: &Path, bytes: u64) -> anyhow::Result<String> {
    use std::io::Write as _;
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut hasher = blake3::Hasher::new();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        hasher.update(&block[..n]);
        left -= n as u64;
    }
    out.flush()?;
    Ok(hasher.finalize().to_hex().to_string())
}

fn measure(
    setup: &Setup,
    curl: &Path,
    file: &Path,
    bytes: u64,
    digest: &str,
    repeat: usize,
) -> anyhow::Result<BlobsFigures> {
    let auth = format!("authorization: Bearer {}", setup.token);
    let ca = setup.ca();
    let curl_run = |args: &[&std::ffi::OsStr], out: &Path| -> anyhow::Result<f64> {
        let started = Instant::now();
        let status = Command::new(curl)
            .args(["--http3-only", "-sS", "--cacert"])
            .arg(&ca)
            .args(args)
            .arg("-o")
            .arg(out)
            .stdin(Stdio::null())
            .status()
            .context("cannot run curl")?;
        let wall = started.elapsed().as_secs_f64();
        if !status.success() {
            bail!("curl exited with {status}");
        }
        Ok(wall)
    };
    let answer = setup.tmp.join("answer.out");
    let mut rows = Vec::new();

    eprintln!("edge-bench: upload into the discard server, {repeat} time(s)");
    let discard = DiscardServer::start(&setup.bins, &setup.certs, &setup.tmp.join("discard.log"))?;
    let discard_url = format!("https://{}/discard", discard.addr);
    let mut walls = Vec::new();
    for _ in 0..repeat {
        walls.push(curl_run(
            &["-T".as_ref(), file.as_os_str(), discard_url.as_ref()],
            &answer,
        )?);
        let read: serde_json::Value = serde_json::from_slice(&std::fs::read(&answer)?)?;
        if read["bytes"].as_u64() != Some(bytes) {
            bail!("the discard server read {read}, not {bytes} bytes");
        }
    }
    rows.push(row(
        "curl -T FILE into the discard server (upload)",
        walls,
        bytes,
        None,
    ));
    eprintln!("edge-bench: download from the discard server, {repeat} time(s)");
    let bytes_url = format!("https://{}/bytes/{bytes}", discard.addr);
    let mut walls = Vec::new();
    for _ in 0..repeat {
        walls.push(curl_run(&[bytes_url.as_ref()], Path::new("/dev/null"))?);
    }
    discard.stop()?;
    rows.push(row(
        "curl GET /bytes/N from the discard server (download)",
        walls,
        bytes,
        None,
    ));

    eprintln!("edge-bench: upload as a blob, {repeat} time(s), each into a fresh server");
    let upload_url = "/v1/jobs/blobs?name=bench.bin";
    let (mut walls, mut rss, mut store_bytes) = (Vec::new(), 0f64, 0u64);
    let mut last_server = None;
    for run in 0..repeat {
        if let Some(server) = last_server.take() {
            let server: EdgeServer = server;
            server.stop()?;
        }
        let server = EdgeServer::start(&setup.bins, &setup.dirs("blobs"))?;
        server.reset_peak_rss()?;
        let url = format!("https://{}{upload_url}", server.addr);
        walls.push(curl_run(
            &[
                "-H".as_ref(),
                auth.as_ref(),
                "-T".as_ref(),
                file.as_os_str(),
                url.as_ref(),
            ],
            &answer,
        )?);
        rss = rss.max(mib(server.usage()?.max_rss_kib));
        check_done(&answer, digest)?;
        if run == 0 {
            store_bytes = crate::stage::file_size(&server.store_path());
        }
        last_server = Some(server);
    }
    let server = last_server.context("at least one run")?;
    rows.push(row(
        "curl -T FILE .../v1/jobs/blobs (upload, to done)",
        walls,
        bytes,
        Some(rss),
    ));

    eprintln!("edge-bench: download the blob, {repeat} time(s)");
    server.reset_peak_rss()?;
    let blob_url = format!("https://{}/v1/blobs/bench.bin", server.addr);
    let mut walls = Vec::new();
    for _ in 0..repeat {
        walls.push(curl_run(
            &["-H".as_ref(), auth.as_ref(), blob_url.as_ref()],
            Path::new("/dev/null"),
        )?);
    }
    let rss = mib(server.usage()?.max_rss_kib);
    server.stop()?;
    rows.push(row(
        "curl GET .../v1/blobs/NAME (download)",
        walls,
        bytes,
        Some(rss),
    ));

    let ratio = |edge: usize, discard: usize| rows[edge].mb_per_s / rows[discard].mb_per_s;
    let (up, down) = (ratio(2, 0), ratio(3, 1));
    let up_rss = rows[2].server_rss_mib;
    let down_rss = rows[3].server_rss_mib;
    let store = store_bytes as f64 / bytes as f64;
    let targets = vec![
        target(
            "upload rate / discard server's",
            format!(">= {RATE_TARGET}"),
            up,
            up >= RATE_TARGET,
        ),
        target(
            "download rate / discard server's",
            format!(">= {RATE_TARGET}"),
            down,
            down >= RATE_TARGET,
        ),
        target(
            "server peak RSS during the upload, MiB",
            format!("<= {RSS_TARGET_MIB}"),
            up_rss,
            up_rss <= RSS_TARGET_MIB,
        ),
        target(
            "server peak RSS during the download, MiB",
            format!("<= {RSS_TARGET_MIB}"),
            down_rss,
            down_rss <= RSS_TARGET_MIB,
        ),
        target(
            "store file / bytes stored",
            format!("<= {STORE_TARGET}"),
            store,
            store <= STORE_TARGET,
        ),
    ];
    Ok(BlobsFigures {
        bytes,
        store_bytes,
        rows,
        targets,
    })
}

/// Checks that a blob upload's last event is `done` with the file's digest.
fn check_done(answer: &Path, digest: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(answer)?;
    let last = text.lines().last().unwrap_or("");
    let event: serde_json::Value =
        serde_json::from_str(last).with_context(|| format!("the upload's last line: {last}"))?;
    if event["event"] != "done" || event["summary"]["digest"] != digest {
        bail!("the upload did not end done with the file's digest: {last}");
    }
    Ok(())
}

fn row(what: &str, walls: Vec<f64>, bytes: u64, rss: Option<f64>) -> BlobsRow {
    let wall_s = crate::run::median(walls).unwrap_or(f64::NAN);
    BlobsRow {
        what: what.into(),
        wall_s,
        mb_per_s: bytes as f64 / wall_s / 1e6,
        server_rss_mib: rss.unwrap_or(f64::NAN),
    }
}

fn target(name: &str, goal: String, value: f64, pass: bool) -> BlobsTarget {
    BlobsTarget {
        name: name.into(),
        goal,
        value,
        pass,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Prints the rows and the targets.
pub fn print(figures: &BlobsFigures) {
    println!(
        "\nblobs: one file of {} MiB (medians; store file after one upload: {} bytes)",
        figures.bytes / (1024 * 1024),
        figures.store_bytes
    );
    println!(
        "  {:<56} {:>8} {:>9} {:>16}",
        "what", "wall s", "MB/s", "server RSS MiB"
    );
    for row in &figures.rows {
        let rss = if row.server_rss_mib.is_nan() {
            "-".into()
        } else {
            format!("{:.1}", row.server_rss_mib)
        };
        println!(
            "  {:<56} {:>8.3} {:>9.1} {:>16}",
            row.what, row.wall_s, row.mb_per_s, rss
        );
    }
    println!("\nTargets (issue 15 §1)");
    for t in &figures.targets {
        let verdict = if t.pass { "PASS" } else { "MISS" };
        println!(
            "  {verdict:<5} {:<42} {:>10.3}  (goal {})",
            t.name, t.value, t.goal
        );
    }
}
