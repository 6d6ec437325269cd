//! `edge serve`: logging, the runtime, signals (Ctrl-C and SIGTERM drain, SIGHUP reloads the
//! certificate), and the server until it stops.

use super::LogFormat;
use crate::config::Config;
use crate::server::Server;
use anyhow::Context as _;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub(super) fn serve(config: &Config, log_format: LogFormat) -> anyhow::Result<ExitCode> {
    crate::logging::init(log_format == LogFormat::Json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("edge")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config)?;
        let addr = server.local_addr();
        if let Some(ca) = server.dev_ca() {
            info!(
                "using dev certificates; clients trust them with the CA {} (edge-client --ca {0})",
                ca.display()
            );
        }
        info!(store = %config.store_path().display(), "store open");
        if let Some(admin) = server.admin_addr() {
            info!("admin listener on http://{admin} (/metrics, /healthz)");
        }
        let shutdown = CancellationToken::new();
        // The handlers are in place before the ready line: a SIGTERM right after it drains
        // the server instead of killing it.
        let (stops, hangups) = (stop_signals()?, hangups()?);
        tokio::spawn(on_signal(stops, shutdown.clone()));
        tokio::spawn(reload_on_sighup(hangups, server.certificates()));
        announce(addr);
        server.run(shutdown).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The one line scripts wait for.
fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "edge listening on {addr}");
    let _ = out.flush();
}

/// SIGINT (Ctrl-C) and SIGTERM, caught from now on.
fn stop_signals() -> anyhow::Result<(Signal, Signal)> {
    let catch = |kind| signal(kind).context("cannot catch SIGINT and SIGTERM");
    Ok((
        catch(SignalKind::interrupt())?,
        catch(SignalKind::terminate())?,
    ))
}

/// SIGHUP, caught from now on.
fn hangups() -> anyhow::Result<Signal> {
    signal(SignalKind::hangup()).context("cannot catch SIGHUP")
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn on_signal((mut interrupt, mut terminate): (Signal, Signal), shutdown: CancellationToken) {
    tokio::select! {
        _ = interrupt.recv() => {},
        _ = terminate.recv() => {},
    }
    info!("signal received");
    shutdown.cancel();
}

/// Reloads the certificate on every SIGHUP.
async fn reload_on_sighup(
    mut hangups: Signal,
    certificates: std::sync::Arc<crate::certs::Certificates>,
) {
    while hangups.recv().await.is_some() {
        certificates.reload_and_log("SIGHUP");
    }
}
