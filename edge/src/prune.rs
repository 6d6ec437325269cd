//! What task plugins keep beyond their retention (`ports`: its change history), and the
//! state of cut-off jobs not resumed within `jobs.resume_window`, pruned at
//! start and then hourly through each plugin's [`Plugin::prune`](edge_tasks::Plugin), off the
//! async runtime. Pruning stops between two transactions once the server begins draining.

use edge_tasks::history::PRUNE_INTERVAL;
use edge_tasks::Context;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Prunes every plugin that prunes, now and every [`PRUNE_INTERVAL`], until `stop`.
pub(crate) async fn prune_plugins_periodically(context: Context, stop: CancellationToken) {
    let plugins: Vec<_> = context
        .store
        .registry()
        .plugins()
        .filter_map(|plugin| plugin.prune.map(|prune| (plugin.name, prune)))
        .collect();
    if plugins.is_empty() {
        return;
    }
    loop {
        for &(task, prune) in &plugins {
            let (context, stopping) = (context.clone(), stop.clone());
            let pruned = tokio::task::spawn_blocking(move || {
                prune(&context, SystemTime::now(), &|| stopping.is_cancelled())
            })
            .await;
            match pruned {
                Ok(Ok(0)) => {}
                Ok(Ok(deleted)) => info!(
                    task,
                    deleted, "pruned what the task keeps beyond its retention"
                ),
                Ok(Err(e)) => warn!(task, "cannot prune what the task keeps: {e}"),
                Err(e) => warn!(task, "the prune of what the task keeps failed: {e}"),
            }
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

/// Drops the cursors of jobs cut off longer than `window` ago (`jobs.resume_window`), now and
/// every [`PRUNE_INTERVAL`], until `stop`. (A resume checks the window itself; this frees
/// the store of jobs nobody resumed.)
pub(crate) async fn expire_cursors_periodically(
    store: edge_tasks::Store,
    window: std::time::Duration,
    stop: CancellationToken,
) {
    loop {
        let store = store.clone();
        let expired =
            tokio::task::spawn_blocking(move || edge_tasks::resume::expire(&store, window)).await;
        match expired {
            Ok(Ok(0)) => {}
            Ok(Ok(expired)) => info!(
                expired,
                "dropped the state of jobs not resumed within jobs.resume_window"
            ),
            Ok(Err(e)) => warn!("cannot drop the state of old cut-off jobs: {e}"),
            Err(e) => warn!("dropping the state of old cut-off jobs failed: {e}"),
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}
