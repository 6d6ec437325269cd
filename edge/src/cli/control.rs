//! `edge backup` and `edge status`, and how every command that needs the store while a server
//! may run reaches it: through the running server's control socket, or on the store itself.

use crate::config::Config;
use crate::config::StoreBackend;
use crate::control::{Reply, Request};
use anyhow::{bail, Context as _};
use edge_tasks::Registry;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub(super) fn backup(config: &Config, path: &Path) -> anyhow::Result<ExitCode> {
    if config.store.backend == StoreBackend::Postgres {
        let url = config
            .store
            .url
            .as_deref()
            .map(crate::config::redact_password);
        bail!(
            "the store is the PostgreSQL database {}: back it up with PostgreSQL's own tools, \
             e.g. `pg_dump --format=custom --file={} '<the store url>'` (a consistent copy while \
             edge runs), or continuous archiving for point-in-time recovery (docs/DEPLOY.md)",
            url.unwrap_or_default(),
            path.display()
        );
    }
    if !config.store_path().is_file() {
        bail!(
            "no store at {}: nothing to back up (pass --data-dir)",
            config.store_path().display()
        );
    }
    // The server may run in another directory: it gets an absolute path.
    let path = std::path::absolute(path)
        .with_context(|| format!("cannot use the path {}", path.display()))?;
    let reply = control(config, &Request::Backup { path })?;
    let report = reply
        .backup
        .ok_or_else(|| anyhow::anyhow!("the backup did not say what it wrote"))?;
    println!(
        "wrote {} ({} entries, {:.1} MB)",
        report.path.display(),
        report.entries,
        report.bytes as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let Some(reply) = crate::control::send(&config.data_dir, &Request::Status)? else {
        eprintln!(
            "edge: no server is running on {} (no answer on {})",
            config.data_dir.display(),
            crate::control::socket_path(&config.data_dir).display()
        );
        return Ok(ExitCode::from(1));
    };
    let Some(status) = reply.status else {
        bail!(
            "{}",
            reply
                .error
                .unwrap_or_else(|| "the server sent no status".into())
        );
    };
    if json {
        println!("{}", serde_json::to_string(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    let uptime = humantime::format_duration(Duration::from_secs(status.uptime_secs));
    println!("uptime        {uptime}");
    println!("connections   {}", status.connections_open);
    println!(
        "jobs running  {} ({} started)",
        status.jobs_running, status.jobs_started
    );
    println!(
        "committed     {} records, {:.0} records/s now",
        status.records_committed, status.records_per_sec
    );
    println!(
        "received      {:.1} MB, {:.2} MB/s now",
        status.bytes_received as f64 / 1e6,
        status.bytes_per_sec / 1e6
    );
    println!("store         {:.1} MB", status.store_bytes as f64 / 1e6);
    Ok(ExitCode::SUCCESS)
}

/// Carries out a store request through the running server's control socket, or on the store
/// directly when no server runs on the data dir.
pub(super) fn control(config: &Config, request: &Request) -> anyhow::Result<Reply> {
    let reply = match crate::control::send(&config.data_dir, request)? {
        Some(reply) => reply,
        None => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("cannot create the data dir {}", config.data_dir.display())
            })?;
            let store = config
                .open_store(Registry::builtin())
                .map_err(|e| match e {
                    edge_tasks::OpenError::InUse { path } => anyhow::anyhow!(
                        "the store {} is in use, but no server answers on {}: stop the process \
                         holding the store and try again",
                        path.display(),
                        crate::control::socket_path(&config.data_dir).display()
                    ),
                    e => e.into(),
                })?;
            crate::control::execute(&store, request)
        }
    };
    match reply.error {
        Some(error) if !reply.ok => bail!("{error}"),
        _ => Ok(reply),
    }
}
