//! The stages of a run, one method each: in-process stages as child processes, end to end
//! through a real server, curl into the discard server, and `sqlite-utils insert`.

use super::figures::Sample;
use super::setup::{find_curl, on_path};
use crate::proc::{clear_edge_env, Guard, Measured, Usage};
use crate::server::{self, Bins, DiscardServer, EdgeServer, ServerDirs};
use crate::stage::StageKind;
use anyhow::{bail, Context as _};
use edge_proto::Event;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The running benchmark: binaries, directories, the token, what was skipped and what broke.
pub(super) struct Bench {
    pub(super) bins: Bins,
    pub(super) tmp: PathBuf,
    pub(super) certs: PathBuf,
    pub(super) config: PathBuf,
    pub(super) token: String,
    pub(super) curl: Option<PathBuf>,
    pub(super) sqlite: Option<PathBuf>,
    pub(super) serial: u64,
    pub(super) failures: Vec<String>,
}

impl Bench {
    /// Binaries, a temporary directory with the config and certs, and a token: starts a
    /// first server so that the dev CA exists, mints the token, stops it.
    pub(super) fn new(tmp: &Path) -> anyhow::Result<Bench> {
        let bins = Bins::locate()?;
        let certs = tmp.join("certs");
        let config = tmp.join("edge.toml");
        std::fs::write(&config, server::CONFIG)?;
        let mut bench = Bench {
            bins,
            tmp: tmp.to_owned(),
            certs,
            config,
            token: String::new(),
            curl: find_curl(),
            sqlite: on_path("sqlite-utils"),
            serial: 0,
            failures: Vec::new(),
        };
        let dirs = bench.dirs("warmup");
        let first = EdgeServer::start(&bench.bins, &dirs)?;
        bench.token = server::mint_token(&bench.bins, &dirs)?;
        first.stop()?;
        let _ = std::fs::remove_dir_all(&dirs.data);
        Ok(bench)
    }

    pub(super) fn fresh(&mut self, what: &str) -> PathBuf {
        self.serial += 1;
        self.tmp.join(format!("{what}-{}", self.serial))
    }

    pub(super) fn dirs(&mut self, what: &str) -> ServerDirs {
        let base = self.fresh(what);
        ServerDirs {
            config: self.config.clone(),
            certs: self.certs.clone(),
            data: base.join("data"),
            log: self.tmp.join(format!(
                "{}.log",
                base.file_name().unwrap_or_default().to_string_lossy()
            )),
        }
    }

    pub(super) fn ca(&self) -> PathBuf {
        self.certs.join("ca.pem")
    }

    pub(super) fn setup(&self) -> crate::server::Setup {
        crate::server::Setup {
            bins: self.bins.clone(),
            config: self.config.clone(),
            certs: self.certs.clone(),
            tmp: self.tmp.clone(),
            token: self.token.clone(),
        }
    }

    /// Runs `edge-bench stage KIND` in a child and checks its counts.
    pub(super) fn stage(
        &mut self,
        kind: StageKind,
        file: &Path,
        expect: u64,
    ) -> anyhow::Result<Sample> {
        let dir = self.fresh("stage");
        let log = self.tmp.join(format!(
            "{}.log",
            dir.file_name().unwrap_or_default().to_string_lossy()
        ));
        let report = crate::stage::run_child(&self.bins.me, kind, file, &dir, &log, expect);
        let _ = std::fs::remove_dir_all(&dir);
        let report = report?;
        let stage_usage = report.usage;
        Ok(Sample {
            wall_s: report.usage.wall_s,
            bytes: report.bytes,
            records: report.records,
            main: Some(stage_usage),
            client: None,
            store_bytes: report.store_bytes,
            raw_kv_bytes: report.raw_kv_bytes,
            server_job_s: None,
        })
    }

    /// Runs `program args` under `edge-bench measure`, its stdout to `out`.
    pub(super) fn measured(
        &mut self,
        program: &Path,
        args: &[&std::ffi::OsStr],
        out: &Path,
    ) -> anyhow::Result<Measured> {
        let base = self.fresh("measure");
        let report = base.with_extension("json");
        let log = base.with_extension("log");
        let mut command = Command::new(&self.bins.me);
        clear_edge_env(&mut command)
            .arg("measure")
            .arg("--report")
            .arg(&report)
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out)?)
            .stderr(std::fs::File::create(&log)?);
        let mut guard = Guard::spawn(&mut command, &program.display().to_string())?;
        let status = guard.wait()?;
        if !status.success() {
            bail!(
                "edge-bench measure exited with {status}: {}",
                server::tail(&log)
            );
        }
        let measured: Measured = serde_json::from_slice(&std::fs::read(&report)?)
            .context("unreadable measure report")?;
        if measured.code != Some(0) {
            bail!(
                "{} exited with {:?} (signal {:?}): {}",
                program.display(),
                measured.code,
                measured.signal,
                server::tail(&log)
            );
        }
        let _ = std::fs::remove_file(&report);
        Ok(measured)
    }

    /// Uploads `file` to a fresh server with `edge-client` (or curl, with `curl` set).
    pub(super) fn end_to_end(
        &mut self,
        file: &Path,
        bytes: u64,
        expect: u64,
        curl: Option<&Path>,
    ) -> anyhow::Result<Sample> {
        let dirs = self.dirs(if curl.is_some() { "h3" } else { "edge1" });
        let server = EdgeServer::start(&self.bins, &dirs)?;
        let before = server.usage()?;
        let out = dirs.data.with_extension("out");
        let url = format!("https://{}", server.addr);
        let ca = self.ca();
        let auth = format!("authorization: Bearer {}", self.token);
        let jobs_url = format!("{url}/v1/jobs/ports");
        let token = self.token.clone();
        let measured = match curl {
            None => {
                let client = self.bins.client.clone();
                let args: Vec<&std::ffi::OsStr> = vec![
                    "upload".as_ref(),
                    file.as_os_str(),
                    "--task".as_ref(),
                    "ports".as_ref(),
                    "--server".as_ref(),
                    url.as_ref(),
                    "--ca".as_ref(),
                    ca.as_os_str(),
                    "--token".as_ref(),
                    token.as_ref(),
                    "--json".as_ref(),
                ];
                self.measured(&client, &args, &out)
            }
            Some(curl) => {
                let args: Vec<&std::ffi::OsStr> = vec![
                    "--http3-only".as_ref(),
                    "-sS".as_ref(),
                    "--cacert".as_ref(),
                    ca.as_os_str(),
                    "-H".as_ref(),
                    auth.as_ref(),
                    "-T".as_ref(),
                    file.as_os_str(),
                    jobs_url.as_ref(),
                    "-o".as_ref(),
                    out.as_os_str(),
                ];
                let sink = dirs.data.with_extension("stdout");
                self.measured(curl, &args, &sink)
            }
        };
        let (after, store_bytes) = server.stop()?;
        let measured = measured?;
        let last = last_event(&out)?;
        let _ = std::fs::remove_dir_all(dirs.data.parent().unwrap_or(&dirs.data));
        let server_job_s = match last {
            Event::Done {
                committed,
                errors,
                duration_ms,
                ..
            } if committed == expect && errors == 0 => duration_ms as f64 / 1e3,
            other => bail!("expected done with {expect} committed, got {other:?}"),
        };
        Ok(Sample {
            wall_s: measured.usage.wall_s,
            bytes,
            records: expect,
            main: Some(Usage {
                wall_s: measured.usage.wall_s,
                user_s: after.user_s - before.user_s,
                sys_s: after.sys_s - before.sys_s,
                max_rss_kib: after.max_rss_kib,
                write_bytes: after.write_bytes.saturating_sub(before.write_bytes),
            }),
            client: Some(measured.usage),
            store_bytes: Some(store_bytes),
            raw_kv_bytes: None,
            server_job_s: Some(server_job_s),
        })
    }

    /// curl uploads `file` into the discard server.
    pub(super) fn curl_discard(
        &mut self,
        curl: &Path,
        file: &Path,
        bytes: u64,
        records: u64,
    ) -> anyhow::Result<Sample> {
        let base = self.fresh("discard");
        let log = base.with_extension("log");
        let out = base.with_extension("out");
        let discard = DiscardServer::start(&self.bins, &self.certs, &log)?;
        let ca = self.ca();
        let url = format!("https://{}/discard", discard.addr);
        let args: Vec<&std::ffi::OsStr> = vec![
            "--http3-only".as_ref(),
            "-sS".as_ref(),
            "--cacert".as_ref(),
            ca.as_os_str(),
            "-T".as_ref(),
            file.as_os_str(),
            url.as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ];
        let sink = base.with_extension("stdout");
        let measured = self.measured(curl, &args, &sink);
        let server_usage = discard.stop()?;
        let measured = measured?;
        let answer: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out)?).context("the discard server's answer")?;
        if answer["bytes"].as_u64() != Some(bytes) {
            bail!("the discard server read {answer} of {bytes} bytes");
        }
        Ok(Sample {
            wall_s: measured.usage.wall_s,
            bytes,
            records,
            main: Some(server_usage),
            client: Some(measured.usage),
            store_bytes: None,
            raw_kv_bytes: None,
            server_job_s: None,
        })
    }

    /// `sqlite-utils insert DB ports FILE --nl --pk unlocs --alter`, then a row count.
    pub(super) fn sqlite(
        &mut self,
        sqlite: &Path,
        ndjson: &Path,
        bytes: u64,
        expect: u64,
    ) -> anyhow::Result<Sample> {
        let base = self.fresh("sqlite");
        let db = base.with_extension("db");
        let out = base.with_extension("out");
        let args: Vec<&std::ffi::OsStr> = vec![
            "insert".as_ref(),
            db.as_os_str(),
            "ports".as_ref(),
            ndjson.as_os_str(),
            "--nl".as_ref(),
            "--pk".as_ref(),
            "unlocs".as_ref(),
            "--alter".as_ref(),
        ];
        let measured = self.measured(sqlite, &args, &out)?;
        let count = Command::new(sqlite)
            .arg("query")
            .arg(&db)
            .arg("select count(*) as n from ports")
            .stdin(Stdio::null())
            .output()
            .context("cannot count the rows")?;
        let rows: serde_json::Value =
            serde_json::from_slice(&count.stdout).context("sqlite-utils query output")?;
        let n = rows[0]["n"].as_u64();
        let store_bytes = crate::stage::file_size(&db);
        let _ = std::fs::remove_file(&db);
        if n != Some(expect) {
            bail!("expected {expect} rows in SQLite, found {rows}");
        }
        Ok(Sample {
            wall_s: measured.usage.wall_s,
            bytes,
            records: expect,
            main: None,
            client: Some(measured.usage),
            store_bytes: Some(store_bytes),
            raw_kv_bytes: None,
            server_job_s: None,
        })
    }
}

/// The last event in an NDJSON file of events.
pub(super) fn last_event(path: &Path) -> anyhow::Result<Event> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the events in {}", path.display()))?;
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("no events in {}", path.display()))?;
    serde_json::from_str(line).with_context(|| format!("not an event: {line}"))
}
