//! `edge-client`: streams files to an edge server as jobs and shows their progress.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use edge_client::display::{self, LineLog, Outcome};
use edge_client::{Client, ClientConfig, ClientError, UploadJob};
use edge_proto::{Event, Format, JobHeader};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncRead;

mod read;

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
    Upload(UploadArgs),
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
    /// The task to run: ports, stats.
    #[arg(long)]
    task: String,
    /// json, ndjson, lines or csv [default: from the file's extension (.json, .ndjson/.jsonl,
    /// .txt/.lines, .csv); else, and for stdin, the server sniffs the first bytes].
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
        Command::Read(args) => runtime.block_on(read::task(args)),
        Command::Jobs(args) => runtime.block_on(read::jobs(args)),
        Command::Tasks(args) => runtime.block_on(read::tasks(args)),
    };
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
}

async fn upload(args: UploadArgs) -> Outcome {
    let config = args.server.config();
    let client = match Client::connect(&config).await {
        Ok(client) => client,
        Err(e) => return Outcome::not_connected(&e),
    };
    let show = if args.json {
        Show::Json
    } else if std::io::stderr().is_terminal() {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        multi.set_move_cursor(true);
        Show::Bars(multi)
    } else {
        Show::Log
    };
    // Open every file and lay out every bar before any job starts drawing.
    let mut outcomes = Vec::new();
    let mut ready = Vec::new();
    for file in &args.files {
        match open(file, &args).await {
            Ok((header, body)) => {
                let bar = match &show {
                    Show::Bars(multi) => {
                        Some(multi.add(progress_bar(&job_name(&header), header.size)))
                    }
                    _ => None,
                };
                ready.push((header, body, bar));
            }
            Err(e) => {
                eprintln!("edge-client: {e}");
                outcomes.push(Outcome::Failed);
            }
        }
    }
    let mut jobs = tokio::task::JoinSet::new();
    for (header, body, bar) in ready {
        jobs.spawn(run_job(client.clone(), header, body, bar, show.clone()));
    }
    outcomes.extend(jobs.join_all().await);
    client.close().await;
    display::worst(outcomes)
}

/// The header and body for one file (or stdin).
async fn open(
    file: &PathBuf,
    args: &UploadArgs,
) -> Result<(JobHeader, Box<dyn AsyncRead + Send + Unpin>), ClientError> {
    let mut header = JobHeader::new(&args.task);
    header.format = args.format;
    header.params = args.params.iter().cloned().collect();
    if file.as_os_str() == "-" {
        header.name = Some("stdin".into());
        return Ok((header, Box::new(tokio::io::stdin())));
    }
    let name = file.display().to_string();
    let opened = tokio::fs::File::open(file)
        .await
        .map_err(|source| ClientError::Input {
            name: name.clone(),
            source,
        })?;
    let metadata = opened
        .metadata()
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
    Ok((header, Box::new(opened)))
}

fn job_name(header: &JobHeader) -> String {
    header.name.clone().unwrap_or_else(|| "upload".into())
}

async fn run_job(
    client: Client,
    header: JobHeader,
    body: Box<dyn AsyncRead + Send + Unpin>,
    bar: Option<ProgressBar>,
    show: Show,
) -> Outcome {
    let name = job_name(&header);
    let log = Arc::new(Mutex::new(LineLog::new(name.clone())));
    let mut counts = BarCounts::default();
    let job = UploadJob::new(header, body);
    let result = client
        .upload_lines(job, |event, line| match &show {
            Show::Json => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(line);
                let _ = out.flush();
            }
            Show::Bars(_) => {
                if let Some(bar) = &bar {
                    counts.update(bar, event);
                }
            }
            Show::Log => {
                if let Some(line) = log.lock().ok().and_then(|mut log| log.line(event)) {
                    eprintln!("{line}");
                }
            }
        })
        .await;
    match result {
        Ok(result) => {
            if let Some(bar) = &bar {
                // The bar's line becomes the job's summary.
                bar.set_style(
                    ProgressStyle::with_template("{msg}").expect("a valid progress template"),
                );
                bar.finish_with_message(display::summary(&name, &result.last));
            }
            Outcome::of(&result.last)
        }
        Err(e) => {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            eprintln!("edge-client: {name}: {e}");
            if e.is_connect() {
                Outcome::NoConnection
            } else {
                Outcome::Failed
            }
        }
    }
}

/// A bar drawn nowhere until a `MultiProgress` adopts it (drawing it first would leave a
/// stray line on the terminal).
fn progress_bar(name: &str, size: Option<u64>) -> ProgressBar {
    let (bar, template) = match size {
        Some(size) => (
            ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::hidden()),
            "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        ),
        None => (
            ProgressBar::no_length(),
            "{prefix:.bold} {spinner} {bytes} {bytes_per_sec} {msg}",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .expect("a valid progress template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(name.to_owned());
    bar
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
            Event::Committed { records } => self.committed = *records,
            Event::RecordError {
                index,
                code,
                message,
                ..
            } => {
                bar.println(format!(
                    "{}: record {index}: {code}: {message}",
                    bar.prefix()
                ));
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
