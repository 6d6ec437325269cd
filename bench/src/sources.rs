//! `edge-bench sources`: a job whose body is a file on the server beside the same file
//! uploaded, in one run (issue 17):
//!
//! - `edge-client upload` of the sorted 1M-record file over `edge/1` (QUIC), into a fresh
//!   server;
//! - `edge-client run --server-file bench/sorted.json` into a fresh server whose
//!   `sources.dirs` holds the file's folder: the server reads the file itself.
//!
//! Each timed from the client's start to the job's `done`. Target: the server file at >= 1.0x
//! the rate of the upload.

use crate::gen::{FileFormat, Generator, Order};
use crate::server::EdgeServer;
use crate::tcp::{check_done, row, Row};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

/// The least share of the upload's rate the server file keeps.
const TARGET: f64 = 1.0;

/// The longest one job may take.
const JOB_LIMIT: Duration = Duration::from_secs(600);

/// `edge-bench sources`' arguments.
#[derive(Debug, clap::Args)]
pub struct SourcesArgs {
    /// Records of the file (sorted JSON, as the `run` benchmark's).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    #[command(flatten)]
    runs: crate::runs::RunsArgs,
}

/// Everything `edge-bench sources` measured.
#[derive(Debug, Clone, Serialize)]
pub struct SourcesFigures {
    /// The file's size, bytes.
    pub bytes: u64,
    /// The rows.
    pub rows: Vec<Row>,
    /// The server file's rate against the upload's.
    pub file_vs_upload: f64,
}

/// `edge-bench sources`: generates the file, then measures both rows.
pub fn sources_only(args: SourcesArgs) -> anyhow::Result<ExitCode> {
    let repeat = args.runs.repeat();
    let (tmp, setup) = args.runs.prepare()?;
    let folder = tmp.path().join("bench");
    std::fs::create_dir_all(&folder)?;
    let file = folder.join("sorted.json");
    eprintln!("edge-bench: writing {} sorted records", args.records);
    let generator = Generator::new(args.records, 1)?;
    let bytes = crate::run::generate_file(&generator, Order::Sorted, FileFormat::Json, &file)?;
    let dirs_setting = serde_json::to_string(&[&folder])?;
    let mut rows = Vec::new();
    let upload_args: Vec<std::ffi::OsString> = vec!["upload".into(), file.clone().into()];
    let run_args: Vec<std::ffi::OsString> = ["run", "--server-file", "bench/sorted.json"]
        .map(Into::into)
        .to_vec();
    for (what, client_args, env) in [
        (
            "edge-client upload over edge/1 (QUIC), to done",
            &upload_args,
            vec![],
        ),
        (
            "edge-client run --server-file (the server reads the file), to done",
            &run_args,
            vec![("EDGE_SOURCES_DIRS", dirs_setting.clone())],
        ),
    ] {
        eprintln!("edge-bench: {what}, {repeat} time(s)");
        let mut walls = Vec::new();
        for _ in 0..repeat {
            let dirs = setup.dirs("sources");
            let server = EdgeServer::start_with_env(&setup.bins, &dirs, &env)?;
            let events = dirs.data.with_extension("events");
            let job = setup.client_job(server.addr, client_args, &events, JOB_LIMIT)?;
            server.stop()?;
            check_done(&job.last, args.records)?;
            walls.push(job.to_final_s);
        }
        rows.push(row(what, walls, args.records));
    }
    let figures = SourcesFigures {
        bytes,
        file_vs_upload: rows[1].records_per_s / rows[0].records_per_s,
        rows,
    };
    print(&figures, args.records);
    args.runs.write_json(&figures)?;
    Ok(ExitCode::SUCCESS)
}

fn print(figures: &SourcesFigures, records: u64) {
    println!(
        "{records} sorted records, {:.0} MB of JSON",
        figures.bytes as f64 / 1e6
    );
    println!("{:<70} {:>8} {:>12}", "what", "wall s", "records/s");
    for row in &figures.rows {
        println!(
            "{:<70} {:>8.2} {:>12.0}",
            row.what, row.wall_s, row.records_per_s
        );
    }
    let verdict = if figures.file_vs_upload >= TARGET {
        "PASS"
    } else {
        "FAIL"
    };
    println!(
        "server file / upload: {:.2}x (target >= {TARGET:.1}x) {verdict}",
        figures.file_vs_upload
    );
}
