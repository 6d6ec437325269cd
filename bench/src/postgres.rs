//! `edge-bench postgres`: the PostgreSQL store beside redb, in one run (issue 18):
//!
//! - the 1M-record file, shuffled, then sorted, uploaded with `edge-client upload` over
//!   `edge/1` into a fresh server on redb, and into a fresh server on a fresh PostgreSQL
//!   database (one node);
//! - the shuffled file in two halves, uploaded at once into two nodes sharing one fresh
//!   database: timed until both are done.
//!
//! PostgreSQL is a throwaway cluster on 127.0.0.1 with `fsync` and `synchronous_commit` on, as
//! redb syncs every commit. The files are NDJSON (the halves of a file split by lines).
//! Targets: PostgreSQL one node >= 0.6x redb (shuffled); two nodes >= 1.3x one node where the
//! database has cores to spare (this machine's two cores run both nodes, both clients and the
//! database, so the row says what it measured, and the verdict says which case it is).

use crate::gen::{FileFormat, Generator, Order};
use crate::server::EdgeServer;
use crate::tcp::{check_done, row, Row};
use anyhow::Context as _;
use edge_pg::cluster::Cluster;
use serde::Serialize;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// PostgreSQL (one node) against redb, shuffled.
const TARGET_ONE_NODE: f64 = 0.6;
/// Two nodes against one.
const TARGET_TWO_NODES: f64 = 1.3;

/// The longest one job may take.
const JOB_LIMIT: Duration = Duration::from_secs(900);

/// `edge-bench postgres`' arguments.
#[derive(Debug, clap::Args)]
pub struct PostgresArgs {
    /// Records of the file.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    #[command(flatten)]
    runs: crate::runs::RunsArgs,
}

/// Everything `edge-bench postgres` measured.
#[derive(Debug, Clone, Serialize)]
pub struct PostgresFigures {
    /// The shuffled file's size, bytes.
    pub bytes: u64,
    /// Cores of this machine.
    pub cores: usize,
    /// The rows: redb shuffled, PostgreSQL shuffled, redb sorted, PostgreSQL sorted,
    /// PostgreSQL two nodes shuffled.
    pub rows: Vec<Row>,
    /// PostgreSQL one node / redb, shuffled.
    pub one_node_vs_redb: f64,
    /// PostgreSQL one node / redb, sorted.
    pub sorted_vs_redb: f64,
    /// Two nodes / one node, shuffled.
    pub two_nodes_vs_one: f64,
}

/// Where a row's servers keep their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Redb,
    Postgres,
}

/// `edge-bench postgres`: generates the files, starts PostgreSQL, measures every row.
pub fn postgres_only(args: PostgresArgs) -> anyhow::Result<ExitCode> {
    let repeat = args.runs.repeat();
    let (tmp, setup) = args.runs.prepare()?;
    eprintln!(
        "edge-bench: writing {} records, shuffled and sorted",
        args.records
    );
    let generator = Generator::new(args.records, 1)?;
    let shuffled = tmp.path().join("shuffled.ndjson");
    let sorted = tmp.path().join("sorted.ndjson");
    let bytes =
        crate::run::generate_file(&generator, Order::Shuffled, FileFormat::Ndjson, &shuffled)?;
    crate::run::generate_file(&generator, Order::Sorted, FileFormat::Ndjson, &sorted)?;
    let halves = split_lines(&shuffled, args.records / 2)?;
    eprintln!("edge-bench: starting PostgreSQL (fsync on)");
    let cluster = Cluster::start_durable().context("cannot start PostgreSQL")?;
    let mut databases = 0;
    let mut database = || {
        databases += 1;
        cluster.create_database(&format!("bench{databases}"))
    };

    let mut rows = Vec::new();
    for (what, backend, file) in [
        ("redb, shuffled, one node", Backend::Redb, &shuffled),
        (
            "PostgreSQL, shuffled, one node",
            Backend::Postgres,
            &shuffled,
        ),
        ("redb, sorted, one node", Backend::Redb, &sorted),
        ("PostgreSQL, sorted, one node", Backend::Postgres, &sorted),
    ] {
        eprintln!("edge-bench: {what}, {repeat} time(s)");
        let mut walls = Vec::new();
        for _ in 0..repeat {
            let env = match backend {
                Backend::Redb => Vec::new(),
                Backend::Postgres => postgres_env(&database()?),
            };
            let dirs = setup.dirs("postgres");
            let server = EdgeServer::start_with_env(&setup.bins, &dirs, &env)?;
            let events = dirs.data.with_extension("events");
            let job = setup.upload(server.addr, file, &events, JOB_LIMIT)?;
            server.stop()?;
            check_done(&job.last, args.records)?;
            walls.push(job.to_final_s);
        }
        rows.push(row(what, walls, args.records));
    }

    let what = "PostgreSQL, shuffled, two nodes (a half each, at once)";
    eprintln!("edge-bench: {what}, {repeat} time(s)");
    let mut walls = Vec::new();
    for _ in 0..repeat {
        let env = postgres_env(&database()?);
        let nodes = [setup.dirs("node-a"), setup.dirs("node-b")];
        let servers = nodes
            .iter()
            .map(|dirs| EdgeServer::start_with_env(&setup.bins, dirs, &env))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let started = Instant::now();
        let results = std::thread::scope(|scope| {
            let jobs: Vec<_> = servers
                .iter()
                .zip(&halves)
                .zip(&nodes)
                .map(|((server, half), dirs)| {
                    let (setup, addr) = (&setup, server.addr);
                    let events = dirs.data.with_extension("events");
                    scope.spawn(move || setup.upload(addr, &half.0, &events, JOB_LIMIT))
                })
                .collect();
            jobs.into_iter()
                .map(|job| job.join().expect("an upload thread does not panic"))
                .collect::<Vec<_>>()
        });
        let wall = started.elapsed().as_secs_f64();
        for server in servers {
            server.stop()?;
        }
        for (result, half) in results.into_iter().zip(&halves) {
            check_done(&result?.last, half.1)?;
        }
        walls.push(wall);
    }
    rows.push(row(what, walls, args.records));

    let rate = |i: usize| rows[i].records_per_s;
    let figures = PostgresFigures {
        bytes,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        one_node_vs_redb: rate(1) / rate(0),
        sorted_vs_redb: rate(3) / rate(2),
        two_nodes_vs_one: rate(4) / rate(1),
        rows,
    };
    print(&figures, args.records);
    args.runs.write_json(&figures)?;
    drop(cluster);
    Ok(ExitCode::SUCCESS)
}

/// The settings that put a server on the database at `url`.
fn postgres_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("EDGE_STORE_BACKEND", "postgres".to_owned()),
        ("EDGE_STORE_URL", url.to_owned()),
    ]
}

/// Splits an NDJSON file after `first` lines into two files, returning each with its count.
fn split_lines(file: &Path, first: u64) -> anyhow::Result<[(PathBuf, u64); 2]> {
    let paths = [
        file.with_extension("a.ndjson"),
        file.with_extension("b.ndjson"),
    ];
    let mut outs = [
        std::io::BufWriter::new(std::fs::File::create(&paths[0])?),
        std::io::BufWriter::new(std::fs::File::create(&paths[1])?),
    ];
    let mut counts = [0u64; 2];
    let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    for line in reader.split(b'\n') {
        let line = line?;
        let half = usize::from(counts[0] >= first);
        outs[half].write_all(&line)?;
        outs[half].write_all(b"\n")?;
        counts[half] += 1;
    }
    for out in &mut outs {
        out.flush()?;
    }
    let [a, b] = paths;
    Ok([(a, counts[0]), (b, counts[1])])
}

fn print(figures: &PostgresFigures, records: u64) {
    println!(
        "{records} records, {:.0} MB of NDJSON; PostgreSQL with fsync on; {} cores",
        figures.bytes as f64 / 1e6,
        figures.cores
    );
    println!("{:<60} {:>8} {:>12}", "what", "wall s", "records/s");
    for row in &figures.rows {
        println!(
            "{:<60} {:>8.2} {:>12.0}",
            row.what, row.wall_s, row.records_per_s
        );
    }
    let verdict = |ratio: f64, target: f64| if ratio >= target { "PASS" } else { "FAIL" };
    println!(
        "PostgreSQL / redb, shuffled: {:.2}x (target >= {TARGET_ONE_NODE:.1}x) {}",
        figures.one_node_vs_redb,
        verdict(figures.one_node_vs_redb, TARGET_ONE_NODE)
    );
    println!("PostgreSQL / redb, sorted: {:.2}x", figures.sorted_vs_redb);
    let two = if figures.cores > 4 {
        verdict(figures.two_nodes_vs_one, TARGET_TWO_NODES).to_owned()
    } else {
        format!(
            "{}; not a fair test here: {} cores run both nodes, both clients and PostgreSQL",
            verdict(figures.two_nodes_vs_one, TARGET_TWO_NODES),
            figures.cores
        )
    };
    println!(
        "two nodes / one node, shuffled: {:.2}x (target >= {TARGET_TWO_NODES:.1}x where the database has cores to spare) {two}",
        figures.two_nodes_vs_one
    );
}
