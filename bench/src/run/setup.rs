//! What a run needs around it: fresh binaries, curl and sqlite-utils, the data files, a
//! temporary directory, busy threads, the load average.

use crate::gen::{self, FileFormat, Generator, Order};
use crate::proc::remove_on_interrupt;
use anyhow::{bail, Context as _};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Threads that spin until dropped, to take cores away from what is measured.
pub(super) struct BusyThreads {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyThreads {
    pub(super) fn start(count: usize) -> BusyThreads {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        BusyThreads { stop, threads }
    }
}

impl Drop for BusyThreads {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The repository root this binary was built from.
pub(super) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds edge and edge-client with the profile of this binary, so the figures are never
/// those of stale binaries.
pub(crate) fn build_binaries(no_build: bool) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("edge-bench: WARNING: this is a debug build; measure with `cargo run --release -p edge-bench -- ...`");
    }
    let root = repo_root();
    if no_build || !root.join("Cargo.toml").is_file() {
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args(["build", "--quiet", "-p", "edge", "-p", "edge-client"]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    eprintln!(
        "edge-bench: building edge and edge-client (cargo build --release -p edge -p edge-client)"
    );
    let status = command.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build -p edge -p edge-client failed");
    }
    Ok(())
}

pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

pub(crate) fn find_curl() -> Option<PathBuf> {
    if let Some(curl) = std::env::var_os("EDGE_BENCH_CURL") {
        return Some(PathBuf::from(curl));
    }
    let h3curl = repo_root().join("../shared/tools/h3curl");
    h3curl.is_file().then_some(h3curl)
}

pub(crate) fn generate_file(
    generator: &Generator,
    order: Order,
    format: FileFormat,
    path: &Path,
) -> anyhow::Result<u64> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let bytes = gen::write(generator, order, format, &mut w)?;
    w.flush()?;
    Ok(bytes)
}

pub(super) fn temp_dir() -> anyhow::Result<tempfile::TempDir> {
    let tmp = tempfile::Builder::new()
        .prefix("edge-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    remove_on_interrupt(tmp.path());
    Ok(tmp)
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews the figures.
pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
