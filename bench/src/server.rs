//! The real `edge serve` binary on 127.0.0.1 with its own data dir, certs dir and config; the
//! binaries the harness runs; and the small HTTP/3 discard server.

use crate::proc::{clear_edge_env, proc_usage, Guard, Usage};
use anyhow::{bail, Context as _};
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What the harness writes as the server's config: `[limits]` raised so that no benchmark job
/// is refused with `rate_limited`, and room for the connections of the small-jobs benchmark.
/// Everything else is at its default.
pub const CONFIG: &str = "\
# Written by edge-bench. Every setting not named here is at its default (config/edge.toml).
# [limits] is raised so that no benchmark job is refused with `rate_limited` (the defaults
# allow 4 jobs at once and 10 starts/s per subject); the small-jobs benchmark opens many
# connections from 127.0.0.1, so the per-address connection cap is raised too.
listen = \"127.0.0.1:0\"

[limits]
max_jobs_per_sub = 1000
job_starts_per_sec = 1000000.0
job_start_burst = 1000000

[transport]
max_connections_per_ip = 256
";

/// The settings [`CONFIG`] changes, for the report.
pub const CONFIG_SUMMARY: &str = "[limits] max_jobs_per_sub=1000, job_starts_per_sec=1e6, job_start_burst=1e6; [transport] max_connections_per_ip=256; all else default";

/// Paths of the programs the harness runs.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `edge` (the server).
    pub edge: PathBuf,
    /// `edge-client`.
    pub client: PathBuf,
    /// This program (for `measure`, `stage` and `discard`).
    pub me: PathBuf,
}

impl Bins {
    /// `edge` and `edge-client` next to this program (cargo puts every workspace binary of a
    /// profile in one directory).
    pub fn locate() -> anyhow::Result<Bins> {
        let me = std::env::current_exe().context("cannot find this program's path")?;
        let dir = me
            .parent()
            .context("this program's path has no directory")?
            .to_owned();
        let bins = Bins {
            edge: dir.join("edge"),
            client: dir.join("edge-client"),
            me,
        };
        for bin in [&bins.edge, &bins.client] {
            if !bin.is_file() {
                bail!(
                    "{} is missing: build it with `cargo build --release -p edge -p edge-client` (or run without --no-build)",
                    bin.display()
                );
            }
        }
        Ok(bins)
    }
}

/// Directories and files one server uses.
#[derive(Debug, Clone)]
pub struct ServerDirs {
    /// The config file ([`CONFIG`]).
    pub config: PathBuf,
    /// The certs dir (shared by every server of a run: the dev CA is made once).
    pub certs: PathBuf,
    /// The data dir (fresh per server).
    pub data: PathBuf,
    /// Where the server's stderr (its log) goes.
    pub log: PathBuf,
}

impl ServerDirs {
    fn env<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        clear_edge_env(command)
            .env("EDGE_CONFIG", &self.config)
            .env("EDGE_CERTS_DIR", &self.certs)
            .env("EDGE_DATA_DIR", &self.data)
    }
}

/// A running `edge serve`.
#[derive(Debug)]
pub struct EdgeServer {
    guard: Guard,
    /// The address it listens on.
    pub addr: SocketAddr,
    dirs: ServerDirs,
}

/// The line `edge serve` prints when ready.
const READY: &str = "edge listening on ";

impl EdgeServer {
    /// Starts `edge serve` and waits for its ready line.
    pub fn start(bins: &Bins, dirs: &ServerDirs) -> anyhow::Result<EdgeServer> {
        EdgeServer::start_with_env(bins, dirs, &[])
    }

    /// [`EdgeServer::start`] with settings in `env` (`EDGE_...` variables) over the config.
    pub fn start_with_env(
        bins: &Bins,
        dirs: &ServerDirs,
        env: &[(&str, String)],
    ) -> anyhow::Result<EdgeServer> {
        std::fs::create_dir_all(&dirs.data)?;
        let log = std::fs::File::create(&dirs.log)
            .with_context(|| format!("cannot create {}", dirs.log.display()))?;
        let mut command = Command::new(&bins.edge);
        dirs.env(&mut command)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut guard = Guard::spawn(&mut command, "edge serve")?;
        let stdout = guard.stdout().context("edge serve's stdout")?;
        let addr = wait_ready(stdout, READY, &dirs.log)?;
        Ok(EdgeServer {
            guard,
            addr,
            dirs: dirs.clone(),
        })
    }

    /// CPU time so far and peak RSS, from /proc.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        proc_usage(self.guard.pid())
    }

    /// Starts its peak RSS over from what it holds now (Linux `clear_refs` 5), so that the
    /// next [`EdgeServer::usage`] gives the peak of what follows.
    pub fn reset_peak_rss(&self) -> anyhow::Result<()> {
        let path = format!("/proc/{}/clear_refs", self.guard.pid());
        std::fs::write(&path, "5").with_context(|| format!("cannot write {path}"))
    }

    /// The store file.
    pub fn store_path(&self) -> PathBuf {
        self.dirs.data.join("edge.redb")
    }

    /// Reads its usage, sends SIGTERM and waits for a clean exit. Returns the usage and the
    /// store file's size after the exit.
    pub fn stop(mut self) -> anyhow::Result<(Usage, u64)> {
        let usage = self.usage()?;
        self.guard.signal(Signal::SIGTERM)?;
        match self.guard.wait_for(Duration::from_secs(20))? {
            Some(status) if status.success() => {}
            Some(status) => bail!(
                "edge serve exited with {status} on SIGTERM (log: {})",
                self.dirs.log.display()
            ),
            None => bail!(
                "edge serve did not exit within 20 s of SIGTERM (log: {})",
                self.dirs.log.display()
            ),
        }
        let store = crate::stage::file_size(&self.store_path());
        Ok((usage, store))
    }
}

/// Waits up to 30 s for a line starting with `ready` on `stdout` and parses the address after
/// it. Keeps draining the stream afterwards so the child never blocks on a full pipe.
pub fn wait_ready(
    stdout: std::process::ChildStdout,
    ready: &'static str,
    log: &Path,
) -> anyhow::Result<SocketAddr> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(addr) = line.strip_prefix(ready) {
                    let _ = tx.send(addr.trim().to_owned());
                    sent = true;
                }
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).map_err(|e| {
        let what = match e {
            mpsc::RecvTimeoutError::Timeout => format!("no `{ready}ADDR` line within 30 s"),
            mpsc::RecvTimeoutError::Disconnected => "it exited before it was ready".to_owned(),
        };
        anyhow::anyhow!("{what}; log: {}\n{}", log.display(), tail(log))
    })?;
    addr.parse()
        .with_context(|| format!("cannot parse the address in `{ready}{addr}`"))
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Mints a token with `edge token issue` for the certs dir's key.
pub fn mint_token(bins: &Bins, dirs: &ServerDirs) -> anyhow::Result<String> {
    let mut command = Command::new(&bins.edge);
    dirs.env(&mut command).args([
        "token",
        "issue",
        "--sub",
        "bench",
        "--scope",
        "ports:write stats:write primes:write primes:read blobs:write blobs:read sources:read",
        "--ttl",
        "1h",
    ]);
    let output = command
        .stdin(Stdio::null())
        .output()
        .context("cannot run `edge token issue`")?;
    if !output.status.success() {
        bail!(
            "`edge token issue` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let token = String::from_utf8(output.stdout)
        .context("`edge token issue` printed no UTF-8")?
        .trim()
        .to_owned();
    if token.is_empty() {
        bail!("`edge token issue` printed no token");
    }
    Ok(token)
}

/// The HTTP/3 discard server (`edge-bench discard`), a child of this process.
#[derive(Debug)]
pub struct DiscardServer {
    guard: Guard,
    /// Its address.
    pub addr: SocketAddr,
}

impl DiscardServer {
    /// Starts it with the dev certificate in `certs`.
    pub fn start(bins: &Bins, certs: &Path, log: &Path) -> anyhow::Result<DiscardServer> {
        DiscardServer::start_serving(bins, certs, log, None)
    }

    /// Starts it, serving `file_bytes` bytes as blob `N` when given.
    pub fn start_serving(
        bins: &Bins,
        certs: &Path,
        log: &Path,
        file_bytes: Option<u64>,
    ) -> anyhow::Result<DiscardServer> {
        let log_file = std::fs::File::create(log)?;
        let mut command = Command::new(&bins.me);
        command.arg("discard").arg("--certs").arg(certs);
        if let Some(bytes) = file_bytes {
            command.arg("--file-bytes").arg(bytes.to_string());
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut guard = Guard::spawn(&mut command, "edge-bench discard")?;
        let stdout = guard.stdout().context("discard's stdout")?;
        let addr = wait_ready(stdout, crate::discard::READY, log)?;
        Ok(DiscardServer { guard, addr })
    }

    /// Its CPU time so far and peak RSS, from /proc.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        proc_usage(self.guard.pid())
    }

    /// Its usage, then it is killed.
    pub fn stop(self) -> anyhow::Result<Usage> {
        let usage = proc_usage(self.guard.pid())?;
        drop(self.guard);
        Ok(usage)
    }
}

/// What a benchmark needs to start its own servers and clients: the binaries, the shared
/// config and certs, a directory for data and logs, and a token.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The programs.
    pub bins: Bins,
    /// The config file ([`CONFIG`]).
    pub config: PathBuf,
    /// The certs dir (its `ca.pem` is the dev CA clients trust).
    pub certs: PathBuf,
    /// Where data dirs and logs go.
    pub tmp: PathBuf,
    /// A token with `ports:write stats:write primes:write primes:read blobs:write blobs:read`.
    pub token: String,
}

impl Setup {
    /// Fresh dirs for one server, named after `what`.
    pub fn dirs(&self, what: &str) -> ServerDirs {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = self.tmp.join(format!("{what}-s{n}"));
        ServerDirs {
            config: self.config.clone(),
            certs: self.certs.clone(),
            data: base.join("data"),
            log: base.with_extension("log"),
        }
    }

    /// The dev CA.
    pub fn ca(&self) -> PathBuf {
        self.certs.join("ca.pem")
    }

    /// What a client of the server at `addr` connects with: the dev CA and the token.
    pub fn client_config(&self, addr: SocketAddr) -> edge_client::ClientConfig {
        edge_client::ClientConfig {
            server: format!("https://{addr}"),
            ca: Some(self.ca()),
            token: Some(self.token.clone()),
        }
    }

    /// Uploads `file` to the server at `addr` with `edge-client upload --json`, its events
    /// also to `events`. Returns the time from starting the client to its final event (the
    /// upload, without the connection's close, which waits 3 probe timeouts for the
    /// server's acknowledgement: about half a second at 100 ms RTT), the client's wall time,
    /// and the final event. At most `limit`: then it is killed.
    pub fn upload(
        &self,
        addr: SocketAddr,
        file: &Path,
        events: &Path,
        limit: Duration,
    ) -> anyhow::Result<Uploaded> {
        self.upload_with(addr, file, events, limit, &[])
    }

    /// [`Setup::upload`] with more `edge-client upload` arguments (e.g. `--tcp`).
    pub fn upload_with(
        &self,
        addr: SocketAddr,
        file: &Path,
        events: &Path,
        limit: Duration,
        extra: &[&str],
    ) -> anyhow::Result<Uploaded> {
        let mut args: Vec<std::ffi::OsString> = vec!["upload".into()];
        args.extend(extra.iter().map(Into::into));
        args.push(file.into());
        self.client_job(addr, &args, events, limit)
    }

    /// Runs `edge-client ARGS --task ports` (a job) against `addr` with `--json`, writing its
    /// events to `events`; times it to its final event.
    pub fn client_job(
        &self,
        addr: SocketAddr,
        args: &[std::ffi::OsString],
        events: &Path,
        limit: Duration,
    ) -> anyhow::Result<Uploaded> {
        let mut command = Command::new(&self.bins.client);
        clear_edge_env(&mut command)
            .args(args)
            .args(["--task", "ports", "--server"])
            .arg(format!("https://{addr}"))
            .arg("--ca")
            .arg(self.ca())
            .args(["--token", &self.token, "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let started = std::time::Instant::now();
        let mut guard = Guard::spawn(&mut command, "edge-client upload")?;
        let stdout = guard.stdout().context("edge-client's stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((std::time::Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let deadline = started + limit;
        let mut log = std::fs::File::create(events)?;
        let mut last = None;
        // Until the client closes its stdout (it exits) or the limit passes.
        while let Ok((at, line)) =
            rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            use std::io::Write as _;
            writeln!(log, "{line}")?;
            if let Ok(event) = serde_json::from_str::<edge_proto::Event>(&line) {
                if event.is_final() && last.is_none() {
                    last = Some((at.duration_since(started).as_secs_f64(), event));
                }
            }
        }
        let status = guard
            .wait_for(deadline.saturating_duration_since(std::time::Instant::now()))?
            .with_context(|| format!("edge-client upload took longer than {limit:?}"))?;
        let wall_s = started.elapsed().as_secs_f64();
        let (to_final_s, last) = last.with_context(|| {
            format!("edge-client exited with {status} and printed no final event")
        })?;
        Ok(Uploaded {
            to_final_s,
            wall_s,
            last,
        })
    }
}

/// How one `edge-client upload` went.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// Seconds from starting the client to its final event.
    pub to_final_s: f64,
    /// The client's wall time (with the connection's close), seconds.
    pub wall_s: f64,
    /// The final event.
    pub last: edge_proto::Event,
}
