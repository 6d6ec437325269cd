//! What a benchmark command of one task takes about its runs and their figures (`--repeat`,
//! `--json-out`, `--no-build`), and how it writes them.

use anyhow::Context as _;
use std::path::PathBuf;

/// The runs of a benchmark command and where its figures go.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// Runs of each row; the table shows medians.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Do not run `cargo build` for edge and edge-client first.
    #[arg(long)]
    pub no_build: bool,
}

impl RunsArgs {
    /// What every such command does first: builds the binaries (unless `--no-build`), makes
    /// a temporary directory (removed on Ctrl-C too), and the servers' setup in it (config,
    /// dev certificate, token). The directory lives as long as the returned value.
    pub fn prepare(&self) -> anyhow::Result<(tempfile::TempDir, crate::server::Setup)> {
        crate::run::build_binaries(self.no_build)?;
        let tmp = tempfile::Builder::new()
            .prefix("edge-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        crate::proc::remove_on_interrupt(tmp.path());
        let setup = crate::load::setup(tmp.path())?;
        Ok((tmp, setup))
    }

    /// How many runs: `--repeat`, at least one.
    pub fn repeat(&self) -> usize {
        self.repeat.max(1)
    }

    /// Writes `figures` as JSON to `--json-out`, when given.
    pub fn write_json(&self, figures: &impl serde::Serialize) -> anyhow::Result<()> {
        if let Some(path) = &self.json_out {
            std::fs::write(path, serde_json::to_vec_pretty(figures)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}
