//! `edge-bench resume`: an upload cut twice and resumed, beside the same upload uncut, in one
//! run (issue 19):
//!
//! - **uncut**: the sorted 1M-record JSON file (the `tcp` rows' file) uploaded with the
//!   `edge_client` library, task `ports`, into a fresh server; timed from the connect to the
//!   job's `done`.
//! - **cut twice**: the same upload into a fresh server, but once the library has taken 1/3 of
//!   the file from its reader, the client's QUIC connection is closed ([`Client::close`]);
//!   the harness connects again and resumes the job (`resume` in the header, the whole file
//!   as the body again: the library checks the prefix the server has and sends the rest);
//!   cut again at 2/3, resumed again, to `done` with every record. Timed the same way, cuts,
//!   reconnects and resumes included.
//!
//! Each run takes the two rows in turn, each into its own fresh server, so both insert into
//! an empty store. For each resume: where it resumed (the `resumed` offset, which is where
//! the last commit ended), how far the client had read the file when it was cut, the bytes
//! so sent twice, and the time from the reconnect's start to the `resumed` event.
//!
//! Targets: the cut upload at >= 0.9x the uncut one's rate; every `resumed` within 1 s of
//! the reconnect's start.

use crate::gen::{FileFormat, Generator, Order};
use crate::server::{EdgeServer, Setup};
use anyhow::{bail, Context as _};
use edge_client::{Client, ClientConfig, ClientError, JobResult, PrefixHashes, UploadJob};
use edge_proto::{Event, Format, JobHeader};
use serde::Serialize;
use std::path::Path;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;

/// The least share of the uncut upload's rate the upload cut twice keeps.
const RATE_TARGET: f64 = 0.9;

/// The longest a resume may take from the reconnect's start to its `resumed` event, seconds.
const RESUME_TARGET_S: f64 = 1.0;

/// Where the upload is cut: these shares of the file taken by the library from its reader.
const CUT_AT: [f64; 2] = [1.0 / 3.0, 2.0 / 3.0];

/// The longest one upload (with its cuts and resumes) may take.
const UPLOAD_LIMIT: Duration = Duration::from_secs(600);

/// `edge-bench resume`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Records of the upload (sorted JSON, as the `tcp` benchmark's).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    #[command(flatten)]
    runs: crate::runs::RunsArgs,
}

/// One row: what, its median wall time and rates.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub what: String,
    /// Median wall time, seconds.
    pub wall_s: f64,
    /// The file's bytes per second at the median, in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Records per second at the median.
    pub records_per_s: f64,
}

/// One cut and the resume after it.
#[derive(Debug, Clone, Serialize)]
pub struct Cut {
    /// The run (from 1).
    pub run: usize,
    /// The cut in its run (from 1).
    pub cut: usize,
    /// Bytes of the file the library had taken from its reader when the connection was
    /// closed (at most its 64 KiB buffer more than it had written to the stream).
    pub sent: u64,
    /// Body bytes the server had read, as of its last `progress` event the client heard.
    pub server_read: u64,
    /// Where the last commit the client heard of ended (its `committed` offset).
    pub committed_heard: u64,
    /// Where the job resumed: the `resumed` offset.
    pub resumed_at: u64,
    /// Bytes sent twice: `sent` - `resumed_at`.
    pub sent_twice: u64,
    /// From the reconnect's start to the `resumed` event, seconds.
    pub resume_s: f64,
    /// From the `resumed` event to the library having read (and hashed) the file's bytes
    /// before the offset, which it checks before it sends the rest, seconds.
    pub prefix_s: f64,
}

/// Everything `edge-bench resume` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeFigures {
    /// The file's size, bytes.
    pub bytes: u64,
    /// Its records.
    pub records: u64,
    /// Uncut, then cut twice.
    pub rows: Vec<Row>,
    /// Every cut of every run.
    pub cuts: Vec<Cut>,
    /// The cut upload's rate against the uncut one's.
    pub cut_vs_uncut: f64,
    /// The slowest resume, seconds from the reconnect's start to `resumed`.
    pub slowest_resume_s: f64,
}

/// `edge-bench resume`: generates the file, then measures both rows.
pub fn resume_only(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let repeat = args.runs.repeat();
    let (tmp, setup) = args.runs.prepare()?;
    let file = tmp.path().join("sorted.json");
    eprintln!("edge-bench: writing {} sorted records", args.records);
    let generator = Generator::new(args.records, 1)?;
    let bytes = crate::run::generate_file(&generator, Order::Sorted, FileFormat::Json, &file)?;
    let figures = measure(&setup, &file, bytes, args.records, repeat)?;
    print(&figures);
    args.runs.write_json(&figures)?;
    Ok(ExitCode::SUCCESS)
}

fn measure(
    setup: &Setup,
    file: &Path,
    bytes: u64,
    records: u64,
    repeat: usize,
) -> anyhow::Result<ResumeFigures> {
    // As edge-client's own runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // edge-client hashes a file before it uploads it (its declared digest), keeping the
    // hash's states every few MiB: a resume checks the server's prefix digest from the
    // nearest one. Done once here, outside the timed rows, as before either upload.
    let (_, prefix) = PrefixHashes::of_file(file).context("hashing the file")?;
    let upload = Upload {
        file,
        bytes,
        records,
        prefix: &prefix,
    };
    let (mut uncut_walls, mut cut_walls, mut cuts) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=repeat {
        eprintln!("edge-bench: run {run} of {repeat}: uncut, then cut twice");
        let wall = on_fresh_server(setup, "resume-uncut", |config| {
            runtime.block_on(limited(upload.uncut(config)))
        })?;
        uncut_walls.push(wall);
        let (wall, resumes) = on_fresh_server(setup, "resume-cut", |config| {
            runtime.block_on(limited(upload.cut_twice(config)))
        })?;
        cut_walls.push(wall);
        cuts.extend(resumes.into_iter().enumerate().map(|(i, r)| Cut {
            run,
            cut: i + 1,
            ..r
        }));
    }
    let rows = vec![
        row("uncut: one connection, to done", uncut_walls, upload),
        row(
            "cut twice (1/3, 2/3), reconnected and resumed, to done",
            cut_walls,
            upload,
        ),
    ];
    Ok(ResumeFigures {
        bytes,
        records,
        cut_vs_uncut: rows[1].mb_per_s / rows[0].mb_per_s,
        slowest_resume_s: cuts.iter().map(|c| c.resume_s).fold(0.0, f64::max),
        rows,
        cuts,
    })
}

/// Runs `work` against a fresh server (its own data dir, removed afterwards) with the
/// client config for it.
fn on_fresh_server<T>(
    setup: &Setup,
    what: &str,
    work: impl FnOnce(&ClientConfig) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let dirs = setup.dirs(what);
    let server = EdgeServer::start(&setup.bins, &dirs)?;
    let result = work(&setup.client_config(server.addr));
    let stopped = server.stop();
    let _ = std::fs::remove_dir_all(dirs.data.parent().unwrap_or(&dirs.data));
    let value = result.with_context(|| format!("log: {}", dirs.log.display()))?;
    stopped?;
    Ok(value)
}

/// `upload`, failing past [`UPLOAD_LIMIT`].
async fn limited<T>(
    upload: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(UPLOAD_LIMIT, upload)
        .await
        .with_context(|| format!("the upload took longer than {UPLOAD_LIMIT:?}"))?
}

/// The file both rows upload.
#[derive(Debug, Clone, Copy)]
struct Upload<'a> {
    file: &'a Path,
    bytes: u64,
    records: u64,
    /// The file's SHA-256 states, for the resumes' prefix checks.
    prefix: &'a Arc<PrefixHashes>,
}

impl Upload<'_> {
    /// One connection, one job: seconds from the connect to `done`.
    async fn uncut(&self, config: &ClientConfig) -> anyhow::Result<f64> {
        let started = Instant::now();
        let attempt = self.attempt(config, self.header(), None).await?;
        let wall = attempt.ended.duration_since(started).as_secs_f64();
        let result = attempt.result.context("the uncut upload")?;
        crate::tcp::check_done(&result.last, self.records)?;
        Ok(wall)
    }

    /// The job cut at each of [`CUT_AT`] and resumed after each cut: seconds from the first
    /// connect to `done`, and each cut with its resume (`run` and `cut` left at 0).
    async fn cut_twice(&self, config: &ClientConfig) -> anyhow::Result<(f64, Vec<Cut>)> {
        let started = Instant::now();
        let mut header = self.header();
        let cut_at = CUT_AT.map(|share| Some((self.bytes as f64 * share) as u64));
        let mut attempts = Vec::new();
        for cut_at in cut_at.into_iter().chain([None]) {
            let attempt = self.attempt(config, header.clone(), cut_at).await?;
            let job = attempt.job.clone().context("the job was never accepted")?;
            header.resume = Some(job);
            attempts.push(attempt);
        }
        let last = attempts.last().context("no attempt")?;
        let wall = last.ended.duration_since(started).as_secs_f64();
        self.check_last(last)?;
        let cuts = attempts
            .windows(2)
            .map(|pair| cut(&pair[0], &pair[1]))
            .collect::<anyhow::Result<Vec<Cut>>>()?;
        Ok((wall, cuts))
    }

    /// The last attempt ended `done` with every record, having sent only the bytes after
    /// the offset it resumed at.
    fn check_last(&self, last: &Attempt) -> anyhow::Result<()> {
        let result = last
            .result
            .as_ref()
            .map_err(|e| anyhow::anyhow!("the last resume: {e}"))?;
        crate::tcp::check_done(&result.last, self.records)?;
        let offset = last.resumed.as_ref().map_or(0, |r| r.offset);
        let rest = self.bytes.saturating_sub(offset);
        if result.bytes_sent != rest {
            bail!(
                "the last resume sent {} bytes after resuming at {offset}: expected {rest}",
                result.bytes_sent
            );
        }
        Ok(())
    }

    /// The job's header: task `ports`, the JSON format, the file's name and size.
    fn header(&self) -> JobHeader {
        let mut header = JobHeader::new("ports");
        header.format = Some(Format::Json);
        header.name = self
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        header.size = Some(self.bytes);
        header
    }

    /// Connects, then uploads the whole file with `header`; with `cut_at`, closes the
    /// connection once the library has taken that many bytes of the file.
    async fn attempt(
        &self,
        config: &ClientConfig,
        header: JobHeader,
        cut_at: Option<u64>,
    ) -> anyhow::Result<Attempt> {
        let connecting = Instant::now();
        let client = Client::connect(config).await.context("connect")?;
        let cut = Arc::new(Notify::new());
        let reads = Arc::new(Mutex::new(Reads::default()));
        let body = Counted {
            file: tokio::fs::File::open(self.file)
                .await
                .with_context(|| format!("cannot open {}", self.file.display()))?,
            reads: reads.clone(),
            cut: cut_at.map(|at| (at, cut.clone())),
        };
        let heard = Arc::new(Mutex::new(Heard::default()));
        let mut at_cut = None;
        let result = {
            let job = UploadJob::seekable(header, Box::new(body), self.prefix.clone());
            let upload = client.upload(job, |event| lock(&heard).event(event, connecting));
            tokio::pin!(upload);
            tokio::select! {
                result = &mut upload => result,
                () = cut.notified(), if cut_at.is_some() => {
                    at_cut = Some((lock(&reads).taken, lock(&heard).clone()));
                    client.clone().close().await;
                    upload.await
                }
            }
        };
        let ended = Instant::now();
        if at_cut.is_none() {
            client.close().await;
        }
        let heard = lock(&heard).clone();
        let reads = std::mem::take(&mut lock(&reads).at);
        Ok(Attempt {
            result,
            ended,
            job: heard.job,
            resumed: heard.resumed,
            at_cut,
            reads,
        })
    }
}

/// The lock of `shared` (what a panicked holder left is as good as any).
fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How one connection's upload went.
#[derive(Debug)]
struct Attempt {
    /// How the library's upload ended.
    result: Result<JobResult, ClientError>,
    /// When it ended (before the connection's close).
    ended: Instant,
    /// The job's id, from `accepted`.
    job: Option<String>,
    /// The `resumed` event, when it came.
    resumed: Option<Resumed>,
    /// When it was cut: the file's bytes the library had taken, and what the client had
    /// heard by then.
    at_cut: Option<(u64, Heard)>,
    /// Each read of the file: the bytes taken by then, and when.
    reads: Vec<(u64, Instant)>,
}

impl Attempt {
    /// Seconds from the `resumed` event to the library having read the file up to its
    /// offset; 0 for an attempt that did not resume.
    fn prefix_s(&self) -> f64 {
        let Some(resumed) = &self.resumed else {
            return 0.0;
        };
        self.reads
            .iter()
            .find(|(taken, _)| *taken >= resumed.offset)
            .map_or(f64::NAN, |(_, at)| {
                at.saturating_duration_since(resumed.at).as_secs_f64()
            })
    }
}

/// A `resumed` event and when it came.
#[derive(Debug, Clone)]
struct Resumed {
    /// Its offset.
    offset: u64,
    /// Seconds from the connect's start.
    after_s: f64,
    /// When it came.
    at: Instant,
}

/// What the client heard of a job so far.
#[derive(Debug, Clone, Default)]
struct Heard {
    /// The job's id, from `accepted`.
    job: Option<String>,
    /// The `resumed` event.
    resumed: Option<Resumed>,
    /// The last `progress` bytes.
    server_read: u64,
    /// The last `committed` offset.
    committed: u64,
}

impl Heard {
    /// Notes `event`, which came now (the connect began at `connecting`).
    fn event(&mut self, event: &Event, connecting: Instant) {
        match event {
            Event::Accepted { job, .. } => self.job = Some(job.clone()),
            Event::Resumed { offset, .. } => {
                let at = Instant::now();
                self.resumed = Some(Resumed {
                    offset: *offset,
                    after_s: at.duration_since(connecting).as_secs_f64(),
                    at,
                })
            }
            Event::Progress { bytes, .. } => self.server_read = *bytes,
            Event::Committed { offset, .. } => self.committed = *offset,
            _ => {}
        }
    }
}

/// The cut that ended `cut` and the resume that followed it in `next`.
fn cut(cut: &Attempt, next: &Attempt) -> anyhow::Result<Cut> {
    if let Ok(result) = &cut.result {
        if matches!(result.last, Event::Done { .. }) {
            bail!("the upload ended done before its cut: the file is too small to cut");
        }
    }
    let (sent, heard) = cut
        .at_cut
        .clone()
        .context("the upload ended before its cut")?;
    let resumed = next
        .resumed
        .clone()
        .context("the resume got no `resumed` event")?;
    Ok(Cut {
        run: 0,
        cut: 0,
        sent,
        server_read: heard.server_read,
        committed_heard: heard.committed,
        resumed_at: resumed.offset,
        sent_twice: sent.saturating_sub(resumed.offset),
        resume_s: resumed.after_s,
        prefix_s: next.prefix_s(),
    })
}

/// The file as the library reads it, noting each read in `reads`; once the bytes taken
/// reach the first of `cut`, it notifies the second.
struct Counted {
    file: tokio::fs::File,
    reads: Arc<Mutex<Reads>>,
    cut: Option<(u64, Arc<Notify>)>,
}

/// The reads of a [`Counted`] file.
#[derive(Debug, Default)]
struct Reads {
    /// Bytes taken so far.
    taken: u64,
    /// Each read: the bytes taken by then, and when.
    at: Vec<(u64, Instant)>,
}

/// A resume seeks the file to the SHA-256 state nearest its offset: the count follows.
impl tokio::io::AsyncSeek for Counted {
    fn start_seek(mut self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        let polled = Pin::new(&mut self.file).poll_complete(cx);
        if let Poll::Ready(Ok(at)) = &polled {
            lock(&self.reads).taken = *at;
        }
        polled
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.file).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        let taken = {
            let mut reads = lock(&self.reads);
            reads.taken += n;
            let taken = reads.taken;
            reads.at.push((taken, Instant::now()));
            taken
        };
        if let Some((at, cut)) = &self.cut {
            if taken >= *at {
                cut.notify_one();
                self.cut = None;
            }
        }
        polled
    }
}

/// A row of the median of `walls`, with its rates.
fn row(what: &str, walls: Vec<f64>, upload: Upload<'_>) -> Row {
    let wall_s = crate::run::median(walls).unwrap_or(f64::NAN);
    Row {
        what: what.into(),
        wall_s,
        mb_per_s: upload.bytes as f64 / 1e6 / wall_s,
        records_per_s: upload.records as f64 / wall_s,
    }
}

/// Prints the rows, the cuts, and the targets.
pub fn print(figures: &ResumeFigures) {
    println!(
        "\nresume: {} sorted records ({} bytes of JSON), medians",
        figures.records, figures.bytes
    );
    println!(
        "  {:<56} {:>8} {:>8} {:>12}",
        "what", "wall s", "MB/s", "records/s"
    );
    for row in &figures.rows {
        println!(
            "  {:<56} {:>8.3} {:>8.1} {:>12.0}",
            row.what, row.wall_s, row.mb_per_s, row.records_per_s
        );
    }
    println!("\nEach cut (bytes of the file) and the resume after it");
    println!(
        "  {:>3} {:>3} {:>12} {:>12} {:>14} {:>12} {:>12} {:>14} {:>10}",
        "run",
        "cut",
        "client sent",
        "server read",
        "commit heard",
        "resumed at",
        "sent twice",
        "to resumed ms",
        "prefix ms"
    );
    for c in &figures.cuts {
        println!(
            "  {:>3} {:>3} {:>12} {:>12} {:>14} {:>12} {:>12} {:>14.1} {:>10.1}",
            c.run,
            c.cut,
            c.sent,
            c.server_read,
            c.committed_heard,
            c.resumed_at,
            c.sent_twice,
            c.resume_s * 1e3,
            c.prefix_s * 1e3
        );
    }
    println!("\nTargets (issue 19)");
    let verdict = |pass: bool| if pass { "PASS" } else { "FAIL" };
    println!(
        "  {:<5} cut twice / uncut rate {:>27.3}  (goal >= {RATE_TARGET})",
        verdict(figures.cut_vs_uncut >= RATE_TARGET),
        figures.cut_vs_uncut
    );
    println!(
        "  {:<5} slowest reconnect to `resumed`, s {:>17.3}  (goal < {RESUME_TARGET_S})",
        verdict(figures.slowest_resume_s < RESUME_TARGET_S),
        figures.slowest_resume_s
    );
}
