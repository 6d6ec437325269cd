//! Child processes: guards that kill them (and everything they started) on every way out,
//! and what each one cost (wall time, CPU time, peak RSS).
//!
//! Every child runs in its own process group, so a guard kills the whole group with one
//! signal; a Ctrl-C or SIGTERM sent to `edge-bench` kills every live group and removes the
//! temporary directories before it exits. CPU and peak RSS of a program that exits by itself
//! come from `edge-bench measure`, a tiny wrapper that runs it as its only child and reads
//! `getrusage(RUSAGE_CHILDREN)` after reaping it; those of a server come from
//! `/proc/PID/status` (VmHWM) and `/proc/PID/stat` read just before it is told to stop.

use anyhow::{bail, Context as _};
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Process groups of live children, killed if `edge-bench` is interrupted.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());
/// Directories removed if `edge-bench` is interrupted.
static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Set once SIGINT or SIGTERM arrived: no child may start any more.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether `edge-bench` was interrupted; long loops check it and stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// On SIGINT or SIGTERM: kill every live child group and refuse new ones, so the main thread
/// stops at its next step and cleans up as usual (its `TempDir` is dropped); if it has not
/// exited within 5 s, remove the temporary directories here and exit.
pub fn install_interrupt_handler() {
    std::thread::spawn(|| {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("edge-bench: interrupted; stopping every child process");
            kill_all();
            tokio::time::sleep(Duration::from_secs(5)).await;
            kill_all();
            for dir in lock(&CLEANUP).iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
            std::process::exit(130);
        });
    });
}

/// Marks the run interrupted and kills every live child group; holds the list's lock, so no
/// child can start in between.
fn kill_all() {
    let live = lock(&LIVE);
    INTERRUPTED.store(true, Ordering::SeqCst);
    for group in live.iter() {
        let _ = killpg(Pid::from_raw(*group), Signal::SIGKILL);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes `dir` if `edge-bench` is interrupted (a `TempDir` removes it otherwise).
pub fn remove_on_interrupt(dir: &Path) {
    lock(&CLEANUP).push(dir.to_owned());
}

/// A child process (and its process group) that is killed when the guard is dropped unless it
/// was waited for.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    name: String,
    reaped: bool,
}

impl Guard {
    /// Spawns `command` in a new process group.
    pub fn spawn(command: &mut Command, name: &str) -> anyhow::Result<Guard> {
        command.process_group(0);
        let mut live = lock(&LIVE);
        if interrupted() {
            bail!("interrupted");
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        live.push(child.id() as i32);
        drop(live);
        Ok(Guard {
            child,
            name: name.to_owned(),
            reaped: false,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's standard output, if piped.
    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Waits for the child to exit.
    pub fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        self.reaped();
        Ok(status)
    }

    /// Waits at most `limit` for the child to exit; `None` if it is still running.
    pub fn wait_for(&mut self, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?
            {
                self.reaped();
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the child alone.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), signal)
            .with_context(|| format!("cannot signal {}", self.name))
    }

    fn reaped(&mut self) {
        self.reaped = true;
        let pid = self.child.id() as i32;
        lock(&LIVE).retain(|&g| g != pid);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // Not yet reaped: the group id cannot have been reused.
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
        self.reaped();
    }
}

/// What a process cost.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    /// Wall time, seconds.
    pub wall_s: f64,
    /// User CPU time, seconds.
    pub user_s: f64,
    /// System CPU time, seconds.
    pub sys_s: f64,
    /// Peak resident set size, KiB.
    pub max_rss_kib: u64,
    /// Bytes the process caused to be written to storage (Linux `write_bytes`).
    #[serde(default)]
    pub write_bytes: u64,
}

impl Usage {
    /// User plus system CPU time, seconds.
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// This process's CPU time so far and peak RSS.
pub fn self_usage() -> anyhow::Result<Usage> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    Ok(Usage {
        wall_s: 0.0,
        user_s: seconds(usage.user_time()),
        sys_s: seconds(usage.system_time()),
        max_rss_kib: u64::try_from(usage.max_rss()).unwrap_or(0),
        write_bytes: io_write_bytes("self"),
    })
}

/// `write_bytes` of /proc/PID/io (`self` for this process), 0 if unreadable.
fn io_write_bytes(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn seconds(t: nix::sys::time::TimeVal) -> f64 {
    t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6
}

/// What `edge-bench measure` writes about the program it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// Its cost.
    pub usage: Usage,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
}

/// `edge-bench measure --report FILE -- PROGRAM ARGS...`: runs the program as this process's
/// only child, with this process's standard streams, and writes what it cost to `report`.
pub fn measure_main(report: &Path, program: &[String]) -> anyhow::Result<()> {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let Some((first, args)) = program.split_first() else {
        bail!("measure: no program given");
    };
    let started = Instant::now();
    let status = Command::new(first)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {first}"))?;
    let wall_s = started.elapsed().as_secs_f64();
    let children = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    use std::os::unix::process::ExitStatusExt;
    let measured = Measured {
        usage: Usage {
            wall_s,
            user_s: seconds(children.user_time()),
            sys_s: seconds(children.system_time()),
            max_rss_kib: u64::try_from(children.max_rss()).unwrap_or(0),
            // Linux counts ru_oublock in 512-byte units of write_bytes.
            write_bytes: u64::try_from(children.block_writes()).unwrap_or(0) * 512,
        },
        code: status.code(),
        signal: status.signal(),
    };
    std::fs::write(report, serde_json::to_vec(&measured)?)
        .with_context(|| format!("cannot write {}", report.display()))?;
    Ok(())
}

/// CPU time (user, system, seconds) and peak RSS (KiB) of a running process, from /proc.
pub fn proc_usage(pid: u32) -> anyhow::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let max_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    // utime and stime are fields 14 and 15: indexes 11 and 12 after the state (field 3).
    Ok(Usage {
        wall_s: 0.0,
        user_s: ticks(11) / hz,
        sys_s: ticks(12) / hz,
        max_rss_kib,
        write_bytes: io_write_bytes(&pid.to_string()),
    })
}

/// Removes every `EDGE_*` variable from a child's environment, so the user's own settings
/// (a token, a server, limits) cannot change what is measured.
pub fn clear_edge_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("EDGE_") {
            command.env_remove(&name);
        }
    }
    command
}
