//! `edge-client`: streams files to an edge server as jobs and shows their progress.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use edge_client::display::{self, LineLog, Outcome};
use edge_client::{Client, ClientConfig, ClientError, PrefixHashes, UploadJob};
use edge_proto::{ErrorCode, Event, Format, JobHeader};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

mod read;
mod stdin;

/// Streams files to an edge server as jobs, with progress.
#[derive(Debug, Parser)]
#[command(name = "edge-client", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Upload files as jobs (several files run in parallel on one connection).
    ///
    /// Files past the number of jobs the server runs at once wait their turn. Ctrl-C cancels:
    /// the jobs end `cancelled`, keeping what they committed (exit code 130).
    Upload(UploadArgs),
    /// Resume job JOB with FILE, where its last commit ended (after the client itself died,
    /// or from another machine). FILE must be the job's file: its first bytes are checked
    /// against what the server received before the rest is sent. (`upload` resumes by
    /// itself when the connection drops or the server restarts.)
    Resume(ResumeArgs),
    /// Run a job on a file the server already has (`--server-file`, in a folder its
    /// `[sources] dirs` allows) or on a URL the server fetches (`--url`); the token needs
    /// `sources:read` besides the task's scope.
    Run(RunArgs),
    /// Show the job history, or one job (HTTP/3).
    Jobs(read::JobsArgs),
    /// Show the tasks the server runs, with their formats (HTTP/3).
    Tasks(read::TasksArgs),
    /// `<task> get KEY`, `<task> list [--FILTER VALUE].. [--limit N] [--after KEY] [--json]`:
    /// read a task's items from the server (HTTP/3), e.g. `edge-client ports list --country
    /// Italy`. `edge-client tasks` lists the tasks; `edge-client <task> list --help` shows a
    /// task's filters.
    #[command(external_subcommand)]
    Read(Vec<String>),
}

/// Where the server is and how to trust and use it.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServerArgs {
    /// The server.
    #[arg(long, env = "EDGE_SERVER", default_value = "https://localhost:4433")]
    server: String,
    /// A PEM CA to trust, e.g. certs/ca.pem [default: the system's roots].
    #[arg(long, env = "EDGE_CA")]
    ca: Option<PathBuf>,
    /// The token (JWT).
    #[arg(long, env = "EDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl ServerArgs {
    /// The client configuration these arguments give.
    pub(crate) fn config(&self) -> ClientConfig {
        ClientConfig {
            server: self.server.clone(),
            ca: self.ca.clone(),
            token: self.token.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct UploadArgs {
    /// Files to upload; `-` reads standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    job: JobArgs,
}

#[derive(Debug, Args)]
struct ResumeArgs {
    /// The job to resume (its id, as `accepted` and `edge-client jobs` show it).
    job: String,
    /// The job's file.
    file: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
    /// Print the raw events as NDJSON on stdout instead of progress.
    #[arg(long)]
    json: bool,
    /// Do not send the file's SHA-256 (the server then cannot refuse another file at once;
    /// the first bytes are still checked).
    #[arg(long)]
    no_digest: bool,
    /// Print nothing but the closing line of a job that did not end clean.
    #[arg(long, short, conflicts_with = "json")]
    quiet: bool,
    /// Over TCP (HTTP/2: `GET` then `PATCH` of the job's upload resource) instead of QUIC.
    #[arg(long)]
    tcp: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["server_file", "url"])))]
struct RunArgs {
    /// The file on the server, as `<folder>/<path>` (`GET /v1/sources/files` lists them).
    #[arg(long)]
    server_file: Option<String>,
    /// A URL the server fetches and decodes as it downloads (https; see `[sources]`).
    #[arg(long)]
    url: Option<String>,
    /// With --url: only if it changed since the last fetch whose job was done (the server
    /// asks with If-None-Match / If-Modified-Since); if not, the job ends at once, unchanged.
    #[arg(long, requires = "url")]
    if_changed: bool,
    #[command(flatten)]
    job: JobArgs,
}

/// What every job takes, wherever its body comes from.
#[derive(Debug, Args)]
struct JobArgs {
    /// The task to run: ports, stats, primes, blobs (`edge-client tasks` lists the server's).
    #[arg(long)]
    task: String,
    /// json, ndjson, lines or csv [default: from the file's extension (.json, .ndjson/.jsonl,
    /// .txt/.lines, .csv); else, and for stdin, the server sniffs the first bytes]. A task
    /// that stores files as they are (blobs) ignores it.
    #[arg(long)]
    format: Option<Format>,
    #[command(flatten)]
    server: ServerArgs,
    /// A task parameter, KEY=VALUE (VALUE is JSON if it parses, else a string).
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, serde_json::Value)>,
    /// Print the raw events as NDJSON on stdout instead of progress.
    #[arg(long)]
    json: bool,
    /// Do not send a file's SHA-256 with its job (sending it costs one read of the file
    /// before the upload; the server checks the body against it, and `done` confirms it).
    #[arg(long)]
    no_digest: bool,
    /// All or nothing: the server keeps nothing of the job unless all of it is (it holds
    /// the records until the file ended and its digest matched, then commits them at once;
    /// up to its `jobs.atomic_max_mib`).
    #[arg(long)]
    atomic: bool,
    /// Upload over TCP (HTTP/2) on the server's port instead of QUIC. Without it the client
    /// tries QUIC, and falls back to TCP by itself when UDP gets no answer within 3 s.
    #[arg(long)]
    tcp: bool,
    /// Print nothing but the closing line of a job that did not end clean (the exit code
    /// says how it went).
    #[arg(long, short, conflicts_with = "json")]
    quiet: bool,
}

fn parse_param(text: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = text.split_once('=').ok_or("expected KEY=VALUE")?;
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("edge-client: error: {e:#}");
            Outcome::Failed.exit_code()
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = match cli.command {
        Command::Upload(args) => runtime.block_on(upload(args)),
        Command::Resume(args) => runtime.block_on(resume(args)),
        Command::Run(args) => runtime.block_on(run_on_server(args)),
        Command::Read(args) => runtime.block_on(read::task(args)),
        Command::Jobs(args) => runtime.block_on(read::jobs(args)),
        Command::Tasks(args) => runtime.block_on(read::tasks(args)),
    };
    // Not waiting for a read of stdin that may never return (a cancelled upload of `-`).
    runtime.shutdown_background();
    Ok(outcome.exit_code())
}

/// How events are shown.
#[derive(Clone)]
enum Show {
    /// Raw NDJSON on stdout.
    Json,
    /// Progress bars on a terminal.
    Bars(MultiProgress),
    /// A line log on stderr.
    Log,
    /// Only the closing line of a job that did not end clean (`--quiet`).
    Quiet,
}

impl Show {
    /// Prints a note on stderr (above the bars, if any).
    fn note(&self, line: &str) {
        match self {
            Show::Bars(multi) => {
                let _ = multi.println(line);
            }
            _ => eprintln!("{line}"),
        }
    }

    /// Prints a task's answer to a record (a `result` event's fields) as one JSON line on
    /// stdout: the answers are the command's output, whatever shows the progress.
    fn answer(&self, fields: &serde_json::Map<String, serde_json::Value>) {
        let mut line = serde_json::to_vec(fields).unwrap_or_default();
        line.push(b'\n');
        let write = || {
            // A reader that went away (`| head`) is not an error of ours.
            let _ = std::io::stdout().lock().write_all(&line);
        };
        match self {
            Show::Bars(multi) => multi.suspend(write),
            _ => write(),
        }
    }
}

/// How many times one file is sent again after a `rate_limited` refusal.
const MAX_RETRIES: u32 = 60;

async fn upload(args: UploadArgs) -> Outcome {
    let mut prepared = Vec::new();
    for file in &args.files {
        prepared.push(prepare(file, &args.job).await);
    }
    run_jobs(prepared, &args.job).await
}

/// `edge-client resume`: job `args.job` again, with its file from where its last commit ended.
async fn resume(args: ResumeArgs) -> Outcome {
    if args.file.as_os_str() == "-" {
        eprintln!(
            "edge-client: standard input cannot be resumed from another process (its first bytes \
             cannot be checked): give the job's file (`edge-client upload -` resumes by itself \
             while it runs)"
        );
        return Outcome::Failed;
    }
    let job = JobArgs {
        // The server takes the job's task (and its parameters and format) from the job.
        task: String::new(),
        format: None,
        server: args.server,
        params: Vec::new(),
        json: args.json,
        no_digest: args.no_digest,
        atomic: false,
        tcp: args.tcp,
        quiet: args.quiet,
    };
    let prepared = prepare(&args.file, &job).await.map(|(mut header, source)| {
        header.format = None;
        header.resume = Some(args.job.clone());
        (header, source)
    });
    run_jobs(vec![prepared], &job).await
}

/// `edge-client run`: one job whose body the server reads itself.
async fn run_on_server(args: RunArgs) -> Outcome {
    let mut header = JobHeader::new(&args.job.task);
    header.format = args.job.format;
    header.params = args.job.params.iter().cloned().collect();
    let (source, path) = match (&args.server_file, &args.url) {
        (Some(file), _) => (format!("file:{file}"), file.as_str()),
        (None, Some(url)) => (url.clone(), url.split(['?', '#']).next().unwrap_or(url)),
        (None, None) => unreachable!("clap requires --server-file or --url"),
    };
    header.name = path
        .rsplit('/')
        .next()
        .map(str::to_owned)
        .filter(|n| !n.is_empty() && !n.contains(':'));
    header.source = Some(source);
    header.if_changed = args.if_changed;
    run_jobs(vec![Ok((header, Source::Server))], &args.job).await
}

/// Runs the jobs of `prepared` (each a header and where its body comes from, or why it
/// cannot run), showing them as `args` asks.
async fn run_jobs(
    prepared: Vec<Result<(JobHeader, Source), ClientError>>,
    args: &JobArgs,
) -> Outcome {
    if let Err(e) = edge_client::token::check(args.server.token.as_deref(), SystemTime::now()) {
        eprintln!("edge-client: {e}");
        return Outcome::Failed;
    }
    let show = if args.json {
        Show::Json
    } else if args.quiet {
        Show::Quiet
    } else if std::io::stderr().is_terminal() {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        multi.set_move_cursor(true);
        Show::Bars(multi)
    } else {
        Show::Log
    };
    let cancel = CancellationToken::new();
    watch_ctrl_c(cancel.clone(), show.clone());
    let config = args.server.config();
    let connect = async {
        if args.tcp {
            Client::connect_tcp(&config).await
        } else {
            Client::connect(&config).await
        }
    };
    let client = tokio::select! {
        client = connect => match client {
            Ok(client) => client,
            Err(e) => return Outcome::not_connected(&e),
        },
        _ = cancel.cancelled() => return Outcome::Cancelled,
    };
    if client.transport() != "QUIC" && !args.tcp && !args.quiet {
        eprintln!(
            "edge-client: QUIC got no answer (UDP blocked?): uploading over {} instead",
            client.transport()
        );
    }
    // Look at every file and lay out every bar before any job starts drawing.
    let mut outcomes = Vec::new();
    let mut queue = VecDeque::new();
    let width = console::Term::stderr().size().1;
    for prepared in prepared {
        match prepared {
            Ok((header, source)) => {
                let bar = match &show {
                    Show::Bars(multi) => {
                        Some(multi.add(progress_bar(&job_name(&header), header.size, width)))
                    }
                    _ => None,
                };
                queue.push_back(Queued {
                    header,
                    source,
                    bar,
                    retries: 0,
                });
            }
            Err(e) => {
                eprintln!("edge-client: {e}");
                outcomes.push(Outcome::Failed);
            }
        }
    }
    let connector = Connector {
        config,
        tcp: args.tcp,
    };
    outcomes.extend(run_queue(&client, &connector, queue, &show, &cancel).await);
    if cancel.is_cancelled() {
        outcomes.push(Outcome::Cancelled);
    }
    client.close().await;
    display::worst(outcomes)
}

/// The first Ctrl-C cancels (every running job is reset with `cancelled`; the final counts
/// are awaited briefly); a second one quits at once.
fn watch_ctrl_c(cancel: CancellationToken, show: Show) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        show.note("edge-client: cancelling: waiting for the server's final counts (Ctrl-C again to quit at once)");
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(i32::from(Outcome::Cancelled as u8));
        }
    });
}

/// A file waiting to run as a job (again, after a `rate_limited` refusal).
struct Queued {
    header: JobHeader,
    source: Source,
    bar: Option<ProgressBar>,
    retries: u32,
}

/// Where a job's body comes from.
#[derive(Clone)]
enum Source {
    /// A file, opened when its job starts (again from its start on a retry or a resume),
    /// with its SHA-256 states when it was hashed (a resume checks its prefix from them).
    File(PathBuf, Option<Arc<PrefixHashes>>),
    /// Standard input, holding the bytes a refused or cut job needs again.
    Stdin(Arc<stdin::Held>),
    /// None: the server reads the body itself (the header's `source`).
    Server,
}

impl Source {
    /// The job with `header` on this body, opened (again).
    fn open(&self, header: JobHeader) -> Result<UploadJob, ClientError> {
        match self {
            Source::File(path, prefix) => {
                let file = std::fs::File::open(path).map_err(|source| ClientError::Input {
                    name: path.display().to_string(),
                    source,
                })?;
                let file = tokio::fs::File::from_std(file);
                Ok(match prefix {
                    Some(prefix) => UploadJob::seekable(header, Box::new(file), prefix.clone()),
                    None => UploadJob::new(header, Box::new(file)),
                })
            }
            Source::Stdin(held) => {
                held.rewind();
                let reader = stdin::HeldReader(held.clone());
                Ok(UploadJob::held(header, Box::new(reader)))
            }
            Source::Server => Ok(UploadJob::new(header, Box::new(tokio::io::empty()))),
        }
    }

    /// Whether a job cut off can be resumed by sending its body again from an offset (a
    /// file: opened again, and its bytes before the offset checked; standard input: from
    /// what it holds).
    fn can_resume(&self) -> bool {
        match self {
            Source::File(..) => true,
            Source::Stdin(held) => held.can_resume(),
            Source::Server => false,
        }
    }

    /// Whether a job refused now can be sent again.
    fn can_resend(&self) -> bool {
        match self {
            Source::File(..) | Source::Server => true,
            Source::Stdin(held) => held.freeze(),
        }
    }

    /// The server committed the body's bytes before `offset`: standard input lets them go.
    fn committed(&self, offset: u64) {
        if let Source::Stdin(held) = self {
            held.committed(offset);
        }
    }
}

/// How a job ended, for the queue.
enum Ended {
    /// For good, with this outcome (already shown).
    Outcome(Outcome),
    /// Refused with `rate_limited`: to be sent again after `retry_after` seconds.
    RateLimited { retry_after: u64, message: String },
}

/// Runs the queued files as jobs: all at once until the server refuses one with
/// `rate_limited`; from then on at most as many as were running then, the next starting when
/// one ends, and a refused one again after the server's `retry_after`.
async fn run_queue(
    client: &Client,
    connector: &Connector,
    mut queue: VecDeque<Queued>,
    show: &Show,
    cancel: &CancellationToken,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut running = tokio::task::JoinSet::new();
    let mut limit = usize::MAX;
    let mut not_before = tokio::time::Instant::now();
    loop {
        if cancel.is_cancelled() {
            for queued in queue.drain(..) {
                if let Some(bar) = &queued.bar {
                    bar.finish_and_clear();
                }
                show.note(&format!(
                    "{}: not started (cancelled)",
                    job_name(&queued.header)
                ));
            }
        }
        while running.len() < limit && tokio::time::Instant::now() >= not_before {
            let Some(next) = queue.pop_front() else {
                break;
            };
            let (client, connector) = (client.clone(), connector.clone());
            running.spawn(run_job(
                client,
                connector,
                next,
                show.clone(),
                cancel.clone(),
            ));
        }
        if running.is_empty() && queue.is_empty() {
            return outcomes;
        }
        let may_start = !queue.is_empty() && running.len() < limit;
        tokio::select! {
            Some(joined) = running.join_next() => match joined {
                Ok((_, Ended::Outcome(outcome))) => outcomes.push(outcome),
                Ok((mut queued, Ended::RateLimited { retry_after, message })) => {
                    // The server runs no more of this subject's jobs at once than those still
                    // running (at least one, once they end).
                    limit = limit.min(running.len().max(1));
                    let retry_at = tokio::time::Instant::now() + Duration::from_secs(retry_after.max(1));
                    not_before = not_before.max(retry_at);
                    queued.retries += 1;
                    let name = job_name(&queued.header);
                    let wait = if running.is_empty() {
                        format!("retrying in {} s", retry_after.max(1))
                    } else {
                        format!("starts when one of the {} running ends", running.len())
                    };
                    match &queued.bar {
                        Some(bar) => {
                            bar.reset();
                            bar.set_message(format!("queued: {wait}"));
                        }
                        None => {
                            if matches!(show, Show::Log) {
                                show.note(&format!("{name}: queued ({message}): {wait}"));
                            }
                        }
                    }
                    queue.push_front(queued);
                }
                Err(e) => {
                    eprintln!("edge-client: a job crashed: {e}");
                    outcomes.push(Outcome::Failed);
                }
            },
            _ = tokio::time::sleep_until(not_before), if may_start => {}
            _ = cancel.cancelled(), if !queue.is_empty() => {}
        }
    }
}

/// The header for one file (or stdin), and where its body comes from.
async fn prepare(file: &PathBuf, args: &JobArgs) -> Result<(JobHeader, Source), ClientError> {
    let mut header = JobHeader::new(&args.task);
    header.format = args.format;
    header.atomic = args.atomic;
    header.params = args.params.iter().cloned().collect();
    if file.as_os_str() == "-" {
        header.name = Some("stdin".into());
        return Ok((header, Source::Stdin(Arc::new(stdin::Held::new()))));
    }
    let name = file.display().to_string();
    let metadata = tokio::fs::metadata(file)
        .await
        .map_err(|source| ClientError::Input {
            name: name.clone(),
            source,
        })?;
    header.name = file.file_name().map(|n| n.to_string_lossy().into_owned());
    // An explicit --format wins; else the extension names it; else the server sniffs.
    header.format = header
        .format
        .or_else(|| header.name.as_deref().and_then(Format::from_file_name));
    header.size = metadata.is_file().then_some(metadata.len());
    let mut prefix = None;
    if metadata.is_file() && !args.no_digest {
        let (digest, states) = sha256_of(file).await.map_err(|source| ClientError::Input {
            name: name.clone(),
            source,
        })?;
        header.sha256 = Some(digest);
        prefix = Some(states);
    }
    Ok((header, Source::File(file.clone(), prefix)))
}

/// A file's SHA-256 as lowercase hex, with its states every few MiB, read off the async
/// runtime.
async fn sha256_of(file: &std::path::Path) -> std::io::Result<(String, Arc<PrefixHashes>)> {
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || PrefixHashes::of_file(&file))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

fn job_name(header: &JobHeader) -> String {
    header.name.clone().unwrap_or_else(|| "upload".into())
}

/// How to connect again, for a job that resumes after the connection dropped.
#[derive(Clone)]
struct Connector {
    config: ClientConfig,
    tcp: bool,
}

/// How long a cut-off job tries to reconnect before it gives up (the server may be
/// restarting).
const RESUME_FOR: Duration = Duration::from_secs(120);

/// The most times one job resumes.
const MAX_RESUMES: u32 = 50;

impl Connector {
    /// A new connection, tried with growing pauses (a quarter second to ten) for up to
    /// [`RESUME_FOR`]; `None` if none came or the user cancelled.
    async fn reconnect(&self, cancel: &CancellationToken) -> Option<Client> {
        let deadline = tokio::time::Instant::now() + RESUME_FOR;
        let mut pause = Duration::from_millis(250);
        loop {
            let connect = async {
                match self.tcp {
                    true => Client::connect_tcp(&self.config).await,
                    false => Client::connect(&self.config).await,
                }
            };
            tokio::select! {
                connected = connect => if let Ok(client) = connected {
                    return Some(client);
                },
                _ = cancel.cancelled() => return None,
            }
            if tokio::time::Instant::now() + pause > deadline {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => return None,
            }
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }
}

/// Whether an upload was cut off by the way (the connection, a server restart, the store
/// away), so that resuming it can work.
fn was_cut(result: &Result<edge_client::JobResult, ClientError>) -> bool {
    match result {
        Ok(result) => matches!(
            &result.last,
            Event::Failed {
                code: ErrorCode::UploadAborted | ErrorCode::Shutdown | ErrorCode::StoreUnavailable,
                ..
            } | Event::Rejected {
                code: ErrorCode::ShuttingDown
                    | ErrorCode::StoreUnavailable
                    | ErrorCode::OffsetMismatch,
                ..
            }
        ),
        Err(ClientError::ConnectionLost(_) | ClientError::Protocol(_)) => true,
        Err(_) => false,
    }
}

/// Where a job's events are shown.
struct View<'a> {
    show: &'a Show,
    bar: Option<&'a ProgressBar>,
    counts: BarCounts,
    log: LineLog,
}

impl View<'_> {
    fn event(&mut self, event: &Event, line: &[u8]) {
        if let (Event::Result { fields, .. }, false) = (event, matches!(self.show, Show::Json)) {
            self.show.answer(fields);
        }
        match self.show {
            Show::Json => {
                // A reader that went away (`| head`) is not an error of ours: the job goes
                // on, unseen.
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(line);
                let _ = out.flush();
            }
            Show::Bars(_) => {
                if let Some(bar) = self.bar {
                    self.counts.update(bar, event);
                }
            }
            Show::Log => {
                if let Some(line) = self.log.line(event) {
                    eprintln!("{line}");
                }
            }
            Show::Quiet => {}
        }
    }
}

async fn run_job(
    client: Client,
    connector: Connector,
    queued: Queued,
    show: Show,
    cancel: CancellationToken,
) -> (Queued, Ended) {
    let name = job_name(&queued.header);
    if let Some(bar) = &queued.bar {
        bar.set_message("");
    }
    let mut view = View {
        show: &show,
        bar: queued.bar.as_ref(),
        counts: BarCounts::default(),
        log: LineLog::new(name.clone()),
    };
    let may_retry = queued.retries < MAX_RETRIES;
    // Decided once, when the refusal comes: whether it is sent again (then not shown).
    let mut resend = false;
    let mut job_id = queued.header.resume.clone();
    let mut header = queued.header.clone();
    let mut client = client;
    let mut resumes = 0;
    // The final event of each attempt, shown once it is known that no resume follows.
    let mut last_line = Vec::new();
    let result = loop {
        let job = match queued.source.open(header.clone()) {
            Ok(job) => job,
            Err(e) => {
                if let Some(bar) = &queued.bar {
                    bar.finish_and_clear();
                }
                eprintln!("edge-client: {e}");
                return (queued, Ended::Outcome(Outcome::Failed));
            }
        };
        let result = client
            .upload_until(job, &cancel, |event, line| {
                match event {
                    Event::Accepted { job, .. } => job_id = Some(job.clone()),
                    Event::Committed { offset, .. } => queued.source.committed(*offset),
                    Event::Rejected {
                        code: ErrorCode::RateLimited,
                        ..
                    } if may_retry && !cancel.is_cancelled() => {
                        resend = queued.source.can_resend();
                        if resend {
                            return;
                        }
                    }
                    _ => {}
                }
                if event.is_final() {
                    last_line = line.to_vec();
                    return;
                }
                view.event(event, line);
            })
            .await;
        let go_on = was_cut(&result)
            && queued.source.can_resume()
            && !cancel.is_cancelled()
            && resumes < MAX_RESUMES;
        let Some(job) = job_id.clone().filter(|_| go_on) else {
            break result;
        };
        resumes += 1;
        let why = match &result {
            Ok(result) => display::summary(&name, &result.last),
            Err(e) => format!("{name}: {e}"),
        };
        show.note(&format!(
            "{why}; resuming job {job} where its last commit ended"
        ));
        let Some(connected) = connector.reconnect(&cancel).await else {
            break result;
        };
        client = connected;
        header.resume = Some(job);
    };
    if let Ok(result) = &result {
        if !resend {
            view.event(&result.last, &last_line);
        }
    }
    let ended = match result {
        Ok(result) => {
            if let (
                true,
                Event::Rejected {
                    retry_after,
                    message,
                    ..
                },
            ) = (resend, &result.last)
            {
                let retry_after = retry_after.unwrap_or(1);
                let message = message.clone();
                return (
                    queued,
                    Ended::RateLimited {
                        retry_after,
                        message,
                    },
                );
            }
            let mut outcome = Outcome::of(&result.last);
            let mut summary = display::summary(&name, &result.last);
            // The server checked the body against the digest sent; it says which it computed.
            if let (
                Some(sent),
                Event::Done {
                    sha256: Some(read), ..
                },
            ) = (&queued.header.sha256, &result.last)
            {
                if sent != read {
                    outcome = Outcome::Failed;
                    summary = format!("{summary}; but the server read SHA-256 {read}, not {sent}");
                }
            }
            match &show {
                Show::Bars(_) => {
                    if let Some(bar) = &queued.bar {
                        // The bar's line becomes the job's summary.
                        bar.set_style(
                            ProgressStyle::with_template("{msg}")
                                .expect("a valid progress template"),
                        );
                        bar.finish_with_message(summary);
                    }
                }
                Show::Quiet if outcome != Outcome::Clean => eprintln!("{summary}"),
                // The events on stdout are the output; a cancelled job's counts go to stderr too.
                Show::Json if outcome == Outcome::Cancelled => eprintln!("{summary}"),
                _ => {}
            }
            outcome
        }
        Err(e) => {
            if let Some(bar) = &queued.bar {
                bar.finish_and_clear();
            }
            show.note(&format!("edge-client: {name}: {e}"));
            match e {
                ClientError::Cancelled { .. } => Outcome::Cancelled,
                e if e.is_connect() => Outcome::NoConnection,
                _ => Outcome::Failed,
            }
        }
    };
    (queued, Ended::Outcome(ended))
}

/// The longest file name a bar shows (longer ones are cut in the middle).
const BAR_NAME: usize = 24;

/// A bar drawn nowhere until a `MultiProgress` adopts it (drawing it first would leave a
/// stray line on the terminal). Its line fits `width` columns: the parts that do not fit are
/// left out, and the counts (last) are cut short rather than wrapped.
fn progress_bar(name: &str, size: Option<u64>, width: u16) -> ProgressBar {
    let bar = match size {
        Some(size) => ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::hidden()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()),
    };
    let name = short_name(name);
    bar.set_style(bar_style(size.is_some(), width, name.chars().count()));
    bar.set_prefix(name);
    bar
}

/// The style of a bar on a terminal `width` columns wide, after a name `name` columns wide.
fn bar_style(sized: bool, width: u16, name: usize) -> ProgressStyle {
    // The parts after the name, with the most columns each takes, most wanted first.
    let parts: &[(&str, usize)] = if sized {
        &[
            ("{bytes}/{total_bytes}", 21),
            ("ETA {eta}", 8),
            ("{binary_bytes_per_sec}", 13),
            ("[{bar:20}]", 22),
        ]
    } else {
        &[
            ("{spinner}", 1),
            ("{bytes}", 10),
            ("{binary_bytes_per_sec}", 13),
        ]
    };
    // Room is left for the counts (at least 16 columns).
    let mut room = usize::from(width).saturating_sub(name + 1 + 16);
    let mut chosen = Vec::new();
    for (part, columns) in parts {
        if *columns < room {
            room -= columns + 1;
            chosen.push(*part);
        }
    }
    // The bar goes right after the name.
    if let Some(at) = chosen.iter().position(|p| p.starts_with('[')) {
        let bar = chosen.remove(at);
        chosen.insert(0, bar);
    }
    let template = format!("{{prefix:.bold}} {} {{wide_msg}}", chosen.join(" "));
    ProgressStyle::with_template(&template)
        .expect("a valid progress template")
        .progress_chars("=> ")
}

/// `name`, cut in the middle to at most [`BAR_NAME`] characters.
fn short_name(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= BAR_NAME {
        return name.to_owned();
    }
    let keep = (BAR_NAME - 1) / 2;
    let head: String = chars[..keep].iter().collect();
    let tail: String = chars[chars.len() - (BAR_NAME - 1 - keep)..]
        .iter()
        .collect();
    format!("{head}…{tail}")
}

/// What a job's progress bar shows beside the bytes.
#[derive(Debug, Default)]
struct BarCounts {
    records: u64,
    committed: u64,
    errors: u64,
}

impl BarCounts {
    fn update(&mut self, bar: &ProgressBar, event: &Event) {
        match event {
            Event::Progress {
                bytes,
                records,
                errors,
            } => {
                bar.set_position(*bytes);
                (self.records, self.errors) = (*records, *errors);
            }
            Event::Committed { records, .. } => self.committed = *records,
            Event::Resumed {
                offset, committed, ..
            } => {
                bar.set_position(*offset);
                self.committed = *committed;
            }
            Event::RecordError { .. } => {
                if let Some(line) = display::record_error(&bar.prefix(), event) {
                    bar.println(line);
                }
                return;
            }
            Event::Draining { grace_secs } => {
                bar.println(format!(
                    "{}: the server is shutting down; the job has {grace_secs} s to finish",
                    bar.prefix()
                ));
                return;
            }
            _ => return,
        }
        bar.set_message(format!(
            "{} records, {} committed, {} errors",
            self.records, self.committed, self.errors
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// A terminal `width` columns wide that keeps every line drawn.
    #[derive(Debug)]
    struct Screen {
        width: u16,
        lines: StdMutex<Vec<String>>,
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            self.width
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.lines.lock().unwrap().push(s.to_owned());
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.write_line(s)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Every line a bar draws for a big job with many records, on a terminal `width` wide.
    fn drawn(width: u16, name: &str, sized: bool) -> Vec<String> {
        let screen = std::sync::Arc::new(Screen {
            width,
            lines: StdMutex::new(Vec::new()),
        });
        let bar = progress_bar(name, sized.then_some(987_654_321_000), width);
        bar.set_draw_target(ProgressDrawTarget::term_like(Box::new(ArcScreen(
            screen.clone(),
        ))));
        let mut counts = BarCounts::default();
        counts.update(
            &bar,
            &Event::Progress {
                bytes: 123_456_789_000,
                records: 123_456_789_012,
                errors: 98_765,
            },
        );
        counts.update(
            &bar,
            &Event::Committed {
                records: 123_456_700_000,
                offset: 0,
            },
        );
        bar.tick();
        let lines = screen.lines.lock().unwrap().clone();
        lines
    }

    #[derive(Debug)]
    struct ArcScreen(std::sync::Arc<Screen>);

    impl indicatif::TermLike for ArcScreen {
        fn width(&self) -> u16 {
            self.0.width()
        }
        fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
            self.0.move_cursor_up(n)
        }
        fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
            self.0.move_cursor_down(n)
        }
        fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
            self.0.move_cursor_right(n)
        }
        fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
            self.0.move_cursor_left(n)
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.0.write_line(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.write_str(s)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.0.clear_line()
        }
        fn flush(&self) -> std::io::Result<()> {
            self.0.flush()
        }
    }

    fn columns(line: &str) -> usize {
        console::measure_text_width(line)
    }

    #[test]
    fn the_bar_fits_the_terminal_and_shows_an_eta() {
        let long = "a-file-name-much-longer-than-a-bar-has-room-for.ndjson";
        for width in [40u16, 60, 80, 100, 160] {
            for (name, sized) in [("ports.json", true), (long, true), (long, false)] {
                let lines = drawn(width, name, sized);
                assert!(!lines.is_empty(), "nothing drawn at {width}");
                for line in &lines {
                    assert!(
                        columns(line) <= usize::from(width),
                        "{} columns on a terminal of {width}: {line:?}",
                        columns(line)
                    );
                }
            }
        }
        let wide = drawn(160, "ports.json", true).join("\n");
        assert!(wide.contains("ETA "), "{wide}");
        assert!(wide.contains("123456789012 records"), "{wide}");
        let standard = drawn(80, "ports.json", true).join("\n");
        assert!(
            standard.contains("ETA "),
            "an ETA on 80 columns: {standard}"
        );
    }

    #[test]
    fn long_names_are_cut_in_the_middle() {
        let cut = short_name("a-file-name-much-longer-than-a-bar-has-room-for.ndjson");
        assert_eq!(cut.chars().count(), BAR_NAME);
        assert!(
            cut.starts_with("a-file-name") && cut.ends_with("for.ndjson"),
            "{cut}"
        );
        assert_eq!(short_name("ports.json"), "ports.json");
    }
}
