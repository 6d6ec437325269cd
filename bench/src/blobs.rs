//! `edge-bench blobs`: one large file through the `blobs` task, beside the same bytes to and
//! from the discard server, client for client, with the targets of issue 15 §1:
//!
//! - the upload (`edge-client upload FILE --task blobs`, to its `done`) at >= 0.8x the rate
//!   of the same command into the discard server (which reads `edge/1` and drops the body);
//! - the download (`edge-client blobs get NAME`, its digest checked) at >= 0.8x the rate of
//!   the same command from the discard server (which serves the bytes from memory);
//! - the server's peak RSS <= 64 MiB during either (measured over each phase alone);
//! - the store file <= 1.05x the bytes stored.
//!
//! The same with curl over HTTP/3 (`curl -T`, `curl GET`) is measured and printed too. Each
//! upload goes to a fresh server (so the store holds one version).

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
    #[command(flatten)]
    runs: crate::runs::RunsArgs,
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
    /// The server's CPU time (user + system) per run, seconds (mean).
    pub server_cpu_s: f64,
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
    /// With curl (HTTP/3) instead: upload and download rate against the discard server's.
    pub curl_ratios: (f64, f64),
}

/// `edge-bench blobs`: generates the file, then measures every row.
pub fn blobs_only(args: BlobsArgs) -> anyhow::Result<ExitCode> {
    let Some(curl) = crate::run::find_curl() else {
        bail!("no HTTP/3 curl: set EDGE_BENCH_CURL (../shared/tools/h3curl is used when present)");
    };
    let (tmp, setup) = args.runs.prepare()?;
    let file = tmp.path().join("blob.bin");
    let bytes = args.size_mib * 1024 * 1024;
    eprintln!("edge-bench: writing a {} MiB file", args.size_mib);
    let digest = write_file(&file, bytes)?;
    let figures = measure(&setup, &curl, &file, bytes, &digest, args.runs.repeat())?;
    print(&figures);
    args.runs.write_json(&figures)?;
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
    let run = Runner {
        setup,
        curl,
        answer: setup.tmp.join("answer.out"),
    };
    let discard = DiscardServer::start_serving(
        &setup.bins,
        &setup.certs,
        &setup.tmp.join("discard.log"),
        Some(bytes),
    )?;
    let mut rows = Vec::new();
    eprintln!("edge-bench: into and from the discard server, {repeat} time(s) each");
    let discard_cpu = || discard.usage().map(|u| u.cpu_s());
    let mut sample = Sample::default();
    for _ in 0..repeat {
        sample.time(discard_cpu, || run.client_upload(discard.addr, file))?;
    }
    rows.push(sample.row(ROW_CLIENT_UP_DISCARD, bytes, repeat));
    let mut sample = Sample::default();
    for _ in 0..repeat {
        sample.time(discard_cpu, || {
            run.client_get(discard.addr, &bytes.to_string())
        })?;
    }
    rows.push(sample.row(ROW_CLIENT_DOWN_DISCARD, bytes, repeat));
    let mut sample = Sample::default();
    for _ in 0..repeat {
        let url = format!("https://{}/discard", discard.addr);
        sample.time(discard_cpu, || run.curl_upload(&url, file))?;
        let read: serde_json::Value = serde_json::from_slice(&std::fs::read(&run.answer)?)?;
        if read["bytes"].as_u64() != Some(bytes) {
            bail!("the discard server read {read}, not {bytes} bytes");
        }
    }
    rows.push(sample.row(ROW_CURL_UP_DISCARD, bytes, repeat));
    let mut sample = Sample::default();
    for _ in 0..repeat {
        let url = format!("https://{}/bytes/{bytes}", discard.addr);
        sample.time(discard_cpu, || run.curl_get(&url))?;
    }
    rows.push(sample.row(ROW_CURL_DOWN_DISCARD, bytes, repeat));
    discard.stop()?;

    eprintln!("edge-bench: into and from edge's blobs task, {repeat} time(s) each");
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (mut sample, mut store_bytes) = (Sample::default(), 0u64);
    for run_index in 0..repeat {
        let server = EdgeServer::start(&setup.bins, &setup.dirs("blobs"))?;
        server.reset_peak_rss()?;
        let cpu = || server.usage().map(|u| u.cpu_s());
        sample.time(cpu, || run.client_upload(server.addr, file))?;
        sample.rss(&server)?;
        if run_index == 0 {
            store_bytes = crate::stage::file_size(&server.store_path());
        }
        server.stop()?;
    }
    rows.push(sample.row(ROW_CLIENT_UP_EDGE, bytes, repeat));
    let mut sample = Sample::default();
    for _ in 0..repeat {
        let server = EdgeServer::start(&setup.bins, &setup.dirs("blobs-curl"))?;
        server.reset_peak_rss()?;
        let url = format!("https://{}/v1/jobs/blobs?name={name}", server.addr);
        let cpu = || server.usage().map(|u| u.cpu_s());
        sample.time(cpu, || run.curl_upload(&url, file))?;
        sample.rss(&server)?;
        check_done(&run.answer, digest)?;
        server.stop()?;
    }
    rows.push(sample.row(ROW_CURL_UP_EDGE, bytes, repeat));

    // Downloads: the file uploaded once more (not timed), then a fresh server on that store,
    // so that its memory is the download's alone.
    let dirs = setup.dirs("blobs-get");
    let server = EdgeServer::start(&setup.bins, &dirs)?;
    run.client_upload(server.addr, file)?;
    server.stop()?;
    let server = EdgeServer::start(&setup.bins, &dirs)?;
    let cpu = || server.usage().map(|u| u.cpu_s());
    server.reset_peak_rss()?;
    let mut sample = Sample::default();
    for _ in 0..repeat {
        sample.time(cpu, || run.client_get(server.addr, &name))?;
    }
    sample.rss(&server)?;
    rows.push(sample.row(ROW_CLIENT_DOWN_EDGE, bytes, repeat));
    server.reset_peak_rss()?;
    let mut sample = Sample::default();
    for _ in 0..repeat {
        let url = format!("https://{}/v1/blobs/{name}", server.addr);
        sample.time(cpu, || run.curl_get(&url))?;
    }
    sample.rss(&server)?;
    rows.push(sample.row(ROW_CURL_DOWN_EDGE, bytes, repeat));
    server.stop()?;

    let rate = |what: &str| {
        rows.iter()
            .find(|r| r.what == what)
            .map_or(f64::NAN, |r| r.mb_per_s)
    };
    let rss_of = |what: &str| {
        rows.iter()
            .find(|r| r.what == what)
            .map_or(f64::NAN, |r| r.server_rss_mib)
    };
    let up = rate(ROW_CLIENT_UP_EDGE) / rate(ROW_CLIENT_UP_DISCARD);
    let down = rate(ROW_CLIENT_DOWN_EDGE) / rate(ROW_CLIENT_DOWN_DISCARD);
    let up_rss = rss_of(ROW_CLIENT_UP_EDGE).max(rss_of(ROW_CURL_UP_EDGE));
    let down_rss = rss_of(ROW_CLIENT_DOWN_EDGE).max(rss_of(ROW_CURL_DOWN_EDGE));
    let store = store_bytes as f64 / bytes as f64;
    let targets = vec![
        target(
            "upload rate / discard server's (edge-client)",
            format!(">= {RATE_TARGET}"),
            up,
            up >= RATE_TARGET,
        ),
        target(
            "download rate / discard server's (edge-client)",
            format!(">= {RATE_TARGET}"),
            down,
            down >= RATE_TARGET,
        ),
        target(
            "server peak RSS during an upload, MiB",
            format!("<= {RSS_TARGET_MIB}"),
            up_rss,
            up_rss <= RSS_TARGET_MIB,
        ),
        target(
            "server peak RSS during a download, MiB",
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
    let curl_ratios = (
        rate(ROW_CURL_UP_EDGE) / rate(ROW_CURL_UP_DISCARD),
        rate(ROW_CURL_DOWN_EDGE) / rate(ROW_CURL_DOWN_DISCARD),
    );
    Ok(BlobsFigures {
        bytes,
        store_bytes,
        rows,
        targets,
        curl_ratios,
    })
}

const ROW_CLIENT_UP_DISCARD: &str = "edge-client upload FILE into the discard server (edge/1)";
const ROW_CLIENT_UP_EDGE: &str = "edge-client upload FILE --task blobs (edge/1, to done)";
const ROW_CLIENT_DOWN_DISCARD: &str = "edge-client blobs get N from the discard server";
const ROW_CLIENT_DOWN_EDGE: &str = "edge-client blobs get NAME from edge";
const ROW_CURL_UP_DISCARD: &str = "curl -T FILE into the discard server (HTTP/3)";
const ROW_CURL_UP_EDGE: &str = "curl -T FILE .../v1/jobs/blobs (HTTP/3, to done)";
const ROW_CURL_DOWN_DISCARD: &str = "curl GET /bytes/N from the discard server";
const ROW_CURL_DOWN_EDGE: &str = "curl GET .../v1/blobs/NAME from edge";

/// Runs the clients, each timed from its start to its exit.
struct Runner<'a> {
    setup: &'a Setup,
    curl: &'a Path,
    /// Where curl writes an upload's answer.
    answer: PathBuf,
}

impl Runner<'_> {
    /// `edge-client ARGS.. --server .. --ca .. --token ..`.
    fn client(&self, addr: std::net::SocketAddr, args: &[&str]) -> Command {
        let mut command = Command::new(&self.setup.bins.client);
        crate::proc::clear_edge_env(&mut command)
            .args(args)
            .arg("--server")
            .arg(format!("https://{addr}"))
            .arg("--ca")
            .arg(self.setup.ca())
            .args(["--token", &self.setup.token])
            .stdin(Stdio::null());
        command
    }

    fn client_upload(&self, addr: std::net::SocketAddr, file: &Path) -> anyhow::Result<f64> {
        let mut command = self.client(addr, &["upload", "--task", "blobs", "-q"]);
        command.arg(file).stdout(Stdio::null());
        timed(&mut command, "edge-client upload")
    }

    fn client_get(&self, addr: std::net::SocketAddr, name: &str) -> anyhow::Result<f64> {
        let mut command = self.client(addr, &["blobs", "get", name]);
        command.stdout(Stdio::null());
        timed(&mut command, "edge-client blobs get")
    }

    fn curl(&self) -> Command {
        let mut command = Command::new(self.curl);
        command
            .args(["--http3-only", "-sS", "--cacert"])
            .arg(self.setup.ca())
            .args(["-H", &format!("authorization: Bearer {}", self.setup.token)])
            .stdin(Stdio::null());
        command
    }

    fn curl_upload(&self, url: &str, file: &Path) -> anyhow::Result<f64> {
        let mut command = self.curl();
        command
            .arg("-T")
            .arg(file)
            .arg(url)
            .arg("-o")
            .arg(&self.answer);
        timed(&mut command, "curl -T")
    }

    fn curl_get(&self, url: &str) -> anyhow::Result<f64> {
        let mut command = self.curl();
        command.arg(url).args(["-o", "/dev/null"]);
        timed(&mut command, "curl GET")
    }
}

/// Runs `command` to its end; its wall time, or why it failed.
fn timed(command: &mut Command, what: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{what} exited with {status}");
    }
    Ok(wall)
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

/// The runs of one row: their wall times, the server's CPU time over them and its peak RSS.
#[derive(Debug, Default)]
struct Sample {
    walls: Vec<f64>,
    cpu_s: f64,
    rss_mib: Option<f64>,
}

impl Sample {
    /// Runs `run` once, timing it and counting the server's CPU time (from `cpu`) over it.
    fn time(
        &mut self,
        cpu: impl Fn() -> anyhow::Result<f64>,
        run: impl FnOnce() -> anyhow::Result<f64>,
    ) -> anyhow::Result<()> {
        let before = cpu()?;
        self.walls.push(run()?);
        self.cpu_s += cpu()? - before;
        Ok(())
    }

    /// Takes in the server's peak RSS since its last reset.
    fn rss(&mut self, server: &EdgeServer) -> anyhow::Result<()> {
        let rss = mib(server.usage()?.max_rss_kib);
        self.rss_mib = Some(self.rss_mib.map_or(rss, |r| r.max(rss)));
        Ok(())
    }

    fn row(self, what: &str, bytes: u64, repeat: usize) -> BlobsRow {
        let wall_s = crate::run::median(self.walls).unwrap_or(f64::NAN);
        BlobsRow {
            what: what.into(),
            wall_s,
            mb_per_s: bytes as f64 / wall_s / 1e6,
            server_rss_mib: self.rss_mib.unwrap_or(f64::NAN),
            server_cpu_s: self.cpu_s / repeat as f64,
        }
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
        "  {:<56} {:>8} {:>9} {:>12} {:>16}",
        "what", "wall s", "MB/s", "server CPU s", "server RSS MiB"
    );
    for row in &figures.rows {
        let rss = if row.server_rss_mib.is_nan() {
            "-".into()
        } else {
            format!("{:.1}", row.server_rss_mib)
        };
        println!(
            "  {:<56} {:>8.3} {:>9.1} {:>12.2} {:>16}",
            row.what, row.wall_s, row.mb_per_s, row.server_cpu_s, rss
        );
    }
    println!(
        "\nWith curl over HTTP/3 instead (curl needs a core of its own; see docs/BENCHMARKS.md): upload {:.3}, download {:.3} of the discard server's rate",
        figures.curl_ratios.0, figures.curl_ratios.1
    );
    println!("\nTargets (issue 15 §1)");
    for t in &figures.targets {
        let verdict = if t.pass { "PASS" } else { "MISS" };
        println!(
            "  {verdict:<5} {:<42} {:>10.3}  (goal {})",
            t.name, t.value, t.goal
        );
    }
}
