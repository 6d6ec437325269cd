//! `edge-bench`: synthetic port files, and every stage of an upload measured side by side in
//! one run, on the same data. See docs/BENCHMARKS.md.
//!
//! - `edge-bench gen`: writes a synthetic port file (json, ndjson or csv), streamed.
//! - `edge-bench run`: generates the data in a temporary directory and measures decode only,
//!   store only, the in-process pipeline, `edge/1` end to end, HTTP/3 with curl (into edge and
//!   into a discarding server), and `sqlite-utils insert`; then small jobs. Prints a table,
//!   the ratios and the targets, and writes JSON with `--json-out`.
//! - `edge-bench jobs`: only the small-jobs benchmark.
//! - `edge-bench load`: only the upload at 0, 50 and 100 ms RTT (through a delay forwarder)
//!   and small jobs beside a big upload (also part of `run`).
//! - `edge-bench history`: the cost of the `ports` change history on a second upload.
//! - `edge-bench primes`: the `primes` task end to end beside the `primal` crate in process.
//! - `edge-bench blobs`: a 1 GiB file up and down through the `blobs` task with curl over
//!   HTTP/3, beside the discard server.
//! - `edge-bench tcp`: the sorted 1M upload over HTTP/2 (TCP) beside the same over `edge/1`,
//!   and curl over HTTP/2 into edge and into the discard server's TCP side.
//! - `edge-bench resume`: the sorted 1M upload cut twice and resumed, beside the same upload
//!   uncut, with the library.
//! - Hidden helpers run as child processes: `stage` (one in-process stage), `measure` (runs a
//!   program and reports its CPU time and peak RSS) and `discard` (the HTTP/3 discard server).

mod blobs;
mod discard;
mod forwarder;
mod gen;
mod history;
mod jobs;
mod latency;
mod load;
mod longpath;
mod postgres;
mod primes;
mod proc;
mod resume;
mod run;
mod runs;
mod server;
mod sources;
mod stage;
mod tcp;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// edge-bench: measure edge's stages side by side, in one run, on the same data.
#[derive(Debug, Parser)]
#[command(name = "edge-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a synthetic port file shaped like samples/ports.json.
    Gen {
        /// How many records.
        #[arg(long)]
        records: u64,
        /// Key order of the records.
        #[arg(long, value_enum, default_value = "shuffled")]
        order: gen::Order,
        /// json (one object keyed by the record key), ndjson or csv (keyed by unlocs[0]).
        #[arg(long, value_enum, default_value = "json")]
        format: gen::FileFormat,
        /// The seed: the same seed gives the same records.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The output file (`-` for standard output).
        #[arg(long)]
        out: PathBuf,
    },
    /// Measure every stage side by side and print the table, ratios and targets.
    Run(run::RunArgs),
    /// Only the small-jobs benchmark (one-record jobs, reused and new connections).
    Jobs(run::JobsArgs),
    /// Only the upload over long paths (0, 50, 100 ms RTT) and small jobs beside it.
    Load(load::LoadArgs),
    /// Only the cost of the `ports` change history: two sorted uploads, the second changing 10%.
    History(history::HistoryArgs),
    /// Only the `primes` task: the 10^7-th prime and a job of 100,000 small n, against primal.
    Primes(primes::PrimesArgs),
    /// Only the `blobs` task: a 1 GiB file up and down, against the discard server.
    Blobs(blobs::BlobsArgs),
    /// Only the upload over TCP (HTTP/2) beside the same over QUIC, and curl over HTTP/2.
    Tcp(tcp::TcpArgs),
    /// Only an upload cut twice and resumed, beside the same upload uncut.
    Resume(resume::ResumeArgs),
    /// Only a job on a file the server has (`run --server-file`) beside its upload.
    Sources(sources::SourcesArgs),
    /// Only the PostgreSQL store beside redb: one node, and two nodes on one database.
    Postgres(postgres::PostgresArgs),
    /// (internal) Run one in-process stage and print its report as JSON.
    #[command(hide = true)]
    Stage {
        /// The stage.
        #[arg(value_enum)]
        kind: stage::StageKind,
        /// The input file.
        #[arg(long)]
        file: PathBuf,
        /// The directory of the store (store and pipeline).
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// (internal) Run a program and write its wall time, CPU time and peak RSS as JSON.
    #[command(hide = true)]
    Measure {
        /// Where to write the report.
        #[arg(long)]
        report: PathBuf,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        program: Vec<String>,
    },
    /// (internal) An HTTP/3 and edge/1 server that drops uploads and serves bytes.
    #[command(hide = true)]
    Discard {
        /// The certs dir holding server.pem and server.key.
        #[arg(long)]
        certs: PathBuf,
        /// Serve this many bytes as blob `N` (`GET /v1/blobs/N`).
        #[arg(long)]
        file_bytes: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gen {
            records,
            order,
            format,
            seed,
            out,
        } => generate(records, order, format, seed, &out).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => {
            proc::install_interrupt_handler();
            run::run(args)
        }
        Command::Jobs(args) => {
            proc::install_interrupt_handler();
            run::jobs_only(args)
        }
        Command::Load(args) => {
            proc::install_interrupt_handler();
            load::load_only(args)
        }
        Command::History(args) => {
            proc::install_interrupt_handler();
            history::history_only(args)
        }
        Command::Primes(args) => {
            proc::install_interrupt_handler();
            primes::primes_only(args)
        }
        Command::Blobs(args) => {
            proc::install_interrupt_handler();
            blobs::blobs_only(args)
        }
        Command::Tcp(args) => {
            proc::install_interrupt_handler();
            tcp::tcp_only(args)
        }
        Command::Resume(args) => {
            proc::install_interrupt_handler();
            resume::resume_only(args)
        }
        Command::Postgres(args) => {
            proc::install_interrupt_handler();
            postgres::postgres_only(args)
        }
        Command::Sources(args) => {
            proc::install_interrupt_handler();
            sources::sources_only(args)
        }
        Command::Stage { kind, file, store } => {
            stage::stage_main(kind, &file, store.as_deref()).map(|()| ExitCode::SUCCESS)
        }
        Command::Measure { report, program } => {
            proc::measure_main(&report, &program).map(|()| ExitCode::SUCCESS)
        }
        Command::Discard { certs, file_bytes } => {
            discard::discard_main(&certs, file_bytes).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(_) if proc::interrupted() => ExitCode::from(130),
        Err(e) => {
            eprintln!("edge-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn generate(
    records: u64,
    order: gen::Order,
    format: gen::FileFormat,
    seed: u64,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let generator = gen::Generator::new(records, seed)?;
    if out.as_os_str() == "-" {
        let stdout = std::io::stdout().lock();
        let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout);
        gen::write(&generator, order, format, &mut w)?;
        w.flush()?;
        return Ok(());
    }
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let bytes = gen::write(&generator, order, format, &mut w)?;
    w.flush()?;
    eprintln!(
        "edge-bench: wrote {records} records ({bytes} bytes, {}) to {}",
        order.as_str(),
        out.display()
    );
    Ok(())
}
