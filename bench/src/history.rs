//! `edge-bench history`: what the `ports` change history costs (issue 15 §2). Two uploads
//! into one store, in process (decode, task, store, as the server's pipeline runs them): the
//! sorted file, then the same file with every tenth record renamed. The second upload is timed
//! twice: as a job, so `ports` keeps the 10% of versions it replaces ("history"), and outside
//! a job, which keeps none ("without"). Target: the history costs at most 15% of the second
//! upload's throughput.

use crate::gen::{self, FileFormat, Generator, Order};
use crate::stage::{run_child, StageKind};
use anyhow::Context as _;
use serde::Serialize;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The largest share of throughput the history may cost.
const COST_TARGET: f64 = 0.15;
/// Every this many records the second upload changes.
const CHANGED_EVERY: u64 = 10;

/// `edge-bench history`'s arguments.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Records of each upload (sorted JSON).
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Runs of each way; the table shows medians.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// One way of running the two uploads, medians of its runs.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    /// `without` or `history`.
    pub what: String,
    /// The first upload (every record new), seconds.
    pub first_s: f64,
    /// The second upload (10% changed), seconds.
    pub second_s: f64,
    /// The second upload's records per second.
    pub second_per_s: f64,
    /// The store file after both, bytes.
    pub store_bytes: u64,
}

/// Everything `edge-bench history` measured.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryFigures {
    /// Records per upload.
    pub records: u64,
    /// Without history, then with it.
    pub rows: Vec<HistoryRow>,
    /// The second upload's throughput lost to the history (0.1 = 10%).
    pub cost: f64,
    /// Whether the cost is within [`COST_TARGET`].
    pub pass: bool,
}

/// `edge-bench history`: makes both files in a temporary directory and measures.
pub fn history_only(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::Builder::new()
        .prefix("edge-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    crate::proc::remove_on_interrupt(tmp.path());
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let first = write(tmp.path(), "first", Generator::new(args.records, 1)?)?;
    let second = write(
        tmp.path(),
        "second",
        Generator::new(args.records, 1)?.with_changes(CHANGED_EVERY),
    )?;
    eprintln!(
        "edge-bench: two uploads of {} sorted records (the second renames 1 in {CHANGED_EVERY}), {} run(s) each way",
        args.records, args.repeat
    );
    let mut runs: [Vec<(f64, f64, u64)>; 2] = [Vec::new(), Vec::new()];
    for run in 0..args.repeat.max(1) {
        // The two ways take turns, so that a busy moment does not fall on one of them.
        for (way, kind) in [StageKind::Pipeline, StageKind::PipelineHistory]
            .into_iter()
            .enumerate()
        {
            let store = tmp.path().join(format!("store-{run}-{way}"));
            let log = tmp.path().join(format!("stage-{run}-{way}.log"));
            let stage = |file| run_child(&me, kind, file, &store, &log, args.records);
            let (one, two) = (stage(&first)?, stage(&second)?);
            runs[way].push((
                one.usage.wall_s,
                two.usage.wall_s,
                two.store_bytes.unwrap_or(0),
            ));
            let _ = std::fs::remove_dir_all(&store);
        }
    }
    let row = |what: &str, runs: &[(f64, f64, u64)]| {
        let second_s = median(runs.iter().map(|r| r.1).collect());
        HistoryRow {
            what: what.to_owned(),
            first_s: median(runs.iter().map(|r| r.0).collect()),
            second_s,
            second_per_s: args.records as f64 / second_s,
            store_bytes: runs.iter().map(|r| r.2).max().unwrap_or(0),
        }
    };
    let rows = vec![row("without", &runs[0]), row("history", &runs[1])];
    let cost = 1.0 - rows[1].second_per_s / rows[0].second_per_s;
    let figures = HistoryFigures {
        records: args.records,
        rows,
        cost,
        pass: cost <= COST_TARGET,
    };
    print(&figures);
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `generator`'s records, sorted, as JSON to `dir/NAME.json`.
fn write(dir: &Path, name: &str, generator: Generator) -> anyhow::Result<PathBuf> {
    let file = dir.join(format!("{name}.json"));
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&file)?);
    gen::write(&generator, Order::Sorted, FileFormat::Json, &mut out)?;
    out.flush()?;
    Ok(file)
}

fn median(values: Vec<f64>) -> f64 {
    crate::run::median(values).unwrap_or(0.0)
}

/// Prints the rows and the target.
pub fn print(figures: &HistoryFigures) {
    println!(
        "\nports change history, {} sorted records twice (medians)",
        figures.records
    );
    println!(
        "  {:<10} {:>12} {:>13} {:>15} {:>12}",
        "", "first s", "second s", "second rec/s", "store MB"
    );
    for row in &figures.rows {
        println!(
            "  {:<10} {:>12.2} {:>13.2} {:>15.0} {:>12.1}",
            row.what,
            row.first_s,
            row.second_s,
            row.second_per_s,
            row.store_bytes as f64 / 1e6
        );
    }
    let verdict = if figures.pass { "PASS" } else { "MISS" };
    println!("\nTarget (issue 15 §2)");
    println!(
        "  {verdict:<5} throughput the history costs on the 10%-changed upload {:>6.1}%  (goal <= {:.0}%)",
        figures.cost * 100.0,
        COST_TARGET * 100.0
    );
}
