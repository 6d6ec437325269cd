//! Watched folders: a file that lands in one and stays unchanged (size and time) for its
//! `settle_secs` becomes a job of the folder's task, run as the folder's subject; then it
//! moves to `done/` (the job ended `done`) or `failed/` (anything else) inside the folder.
//!
//! Once only, also across restarts: the file is claimed in the store (committed) before its
//! job starts, and the claim goes once the file has moved. A claim found at start means the
//! server stopped in between: the file is moved by its job's outcome in the job history (a
//! job cut off counts as failed), never run again. Files whose names start with `.` or end in
//! `.part`, `.partial` or `.tmp` are left alone (still being written), as are folders.
//!
//! The folder is looked at every second; its files run one at a time, in name order.

use super::internal::Internal;
use super::Watched;
use crate::jobs;
use crate::service::Service;
use crate::shutdown::Shutdown;
use edge_proto::Event;
use edge_tasks::claims::{self, Claim};
use edge_tasks::history;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};
use tracing::{info, warn, Instrument};

/// How often a watched folder is looked at.
const POLL: Duration = Duration::from_secs(1);

/// Where a file goes once its job is done, inside its folder.
const DONE: &str = "done";
/// Where a file goes once its job failed (or was refused, or cut off).
const FAILED: &str = "failed";

/// Watches every watched folder until the server drains.
pub(crate) async fn watch_folders(service: Arc<Service>, shutdown: Shutdown) {
    let mut folders = tokio::task::JoinSet::new();
    for folder in service.sources.watched.clone() {
        let span = tracing::info_span!("watch", folder = %folder.name);
        folders.spawn(watch_folder(service.clone(), folder, shutdown.clone()).instrument(span));
    }
    while folders.join_next().await.is_some() {}
}

/// What was seen of a file: its size and time, and since when they have not changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    size: u64,
    modified_ns: u128,
    since: Instant,
}

async fn watch_folder(service: Arc<Service>, folder: Watched, shutdown: Shutdown) {
    recover(&service, &folder).await;
    let settle = Duration::from_secs(folder.watch.settle_secs);
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.draining() => return,
            _ = poll.tick() => {}
        }
        let path = folder.path.clone();
        let files = match tokio::task::spawn_blocking(move || scan(&path)).await {
            Ok(Ok(files)) => files,
            Ok(Err(e)) => {
                warn!(
                    "cannot read the watched folder {}: {e}",
                    folder.path.display()
                );
                continue;
            }
            Err(_) => continue,
        };
        let now = Instant::now();
        seen.retain(|name, _| files.iter().any(|(n, _, _)| n == name));
        let mut settled = Vec::new();
        for (name, size, modified_ns) in files {
            let entry = seen.entry(name.clone()).or_insert(Seen {
                size,
                modified_ns,
                since: now,
            });
            if (entry.size, entry.modified_ns) != (size, modified_ns) {
                *entry = Seen {
                    size,
                    modified_ns,
                    since: now,
                };
            } else if now.duration_since(entry.since) >= settle {
                settled.push((name, size, modified_ns));
            }
        }
        for (name, size, modified_ns) in settled {
            if shutdown.is_draining() {
                return;
            }
            if take(&service, &folder, &name, size, modified_ns, &shutdown).await {
                seen.remove(&name);
            }
        }
    }
}

/// The regular files at the top of `folder` that may be taken: (name, size, time in ns),
/// in name order.
fn scan(folder: &Path) -> std::io::Result<Vec<(String, u64, u128)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let in_progress = name.starts_with('.')
            || [".part", ".partial", ".tmp"]
                .iter()
                .any(|suffix| name.ends_with(suffix));
        if in_progress {
            continue;
        }
        let meta = entry.metadata()?;
        if !meta.file_type().is_file() {
            continue;
        }
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        files.push((name, meta.len(), modified_ns));
    }
    files.sort();
    Ok(files)
}

/// Runs `file`'s job and moves it by the outcome. `false` when it is not taken now (the
/// subject's limits), to be tried again.
async fn take(
    service: &Arc<Service>,
    folder: &Watched,
    file: &str,
    size: u64,
    modified_ns: u128,
    shutdown: &Shutdown,
) -> bool {
    let sub = folder.subject();
    let grant = internal(folder).grant();
    let Ok(admission) = service.limits.admit(&sub) else {
        return false;
    };
    let claimed_name = format!("{}/{file}", folder.name);
    let opened = match service
        .sources
        .open(
            &format!("file:{claimed_name}"),
            &grant,
            &service.store,
            false,
        )
        .await
    {
        Ok(opened) => opened,
        Err(refusal) => {
            warn!(file, "a watched file cannot be read: {}", refusal.message);
            return false;
        }
    };
    let job = jobs::new_job_id(service.store.slot());
    let claim = Claim {
        job: job.clone(),
        size,
        modified_ns,
    };
    let (store, name) = (service.store.clone(), claimed_name.clone());
    let claimed = tokio::task::spawn_blocking(move || claims::claim(&store, &name, &claim)).await;
    match claimed {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return false,
        Ok(Err(e)) => {
            warn!(file, "cannot claim a watched file: {e}");
            return false;
        }
        Err(_) => return false,
    }
    let last = internal(folder)
        .run(service, job, opened, admission, shutdown)
        .await;
    let succeeded = matches!(last, Some(Event::Done { .. }));
    settle(service, folder, file, succeeded).await;
    true
}

/// Moves `file` to `done/` or `failed/` and drops its claim.
async fn settle(service: &Service, folder: &Watched, file: &str, succeeded: bool) {
    let to = if succeeded { DONE } else { FAILED };
    let (path, file_owned) = (folder.path.clone(), file.to_owned());
    let moved = tokio::task::spawn_blocking(move || move_into(&path, &file_owned, to)).await;
    match moved {
        Ok(Ok(target)) => info!(file, to = %target.display(), "watched file moved"),
        Ok(Err(e)) => warn!(file, "cannot move a watched file to {to}/: {e}"),
        Err(_) => {}
    }
    let (store, name) = (service.store.clone(), format!("{}/{file}", folder.name));
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || claims::release(&store, &name)).await {
        warn!(file, "cannot drop the claim on a watched file: {e}");
    }
}

/// Moves `folder/file` into `folder/to/`, under another name if that one is taken.
fn move_into(folder: &Path, file: &str, to: &str) -> std::io::Result<PathBuf> {
    let dir = folder.join(to);
    std::fs::create_dir_all(&dir)?;
    let mut target = dir.join(file);
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{file}.{n}"));
        n += 1;
    }
    std::fs::rename(folder.join(file), &target)?;
    Ok(target)
}

/// Files claimed when the server last stopped: moved by their job's outcome, never run again.
async fn recover(service: &Service, folder: &Watched) {
    let store = service.store.clone();
    let name = folder.name.clone();
    let found = tokio::task::spawn_blocking(move || {
        let claims = claims::list(&store, &name)?;
        let mut outcomes = Vec::new();
        for (file, claim) in claims {
            let record = history::get(&store, &claim.job)?;
            outcomes.push((file, record.is_some_and(|r| r.outcome == "done")));
        }
        Ok::<_, edge_tasks::StoreError>(outcomes)
    })
    .await;
    let Ok(Ok(outcomes)) = found else {
        warn!("cannot read the claims of the watched folder");
        return;
    };
    for (claimed, succeeded) in outcomes {
        let file = claimed
            .strip_prefix(&format!("{}/", folder.name))
            .unwrap_or(&claimed);
        info!(
            file,
            "a watched file was taken before the server stopped: moved by its job's outcome"
        );
        if folder.path.join(file).is_file() {
            settle(service, folder, file, succeeded).await;
        } else {
            let (store, claimed) = (service.store.clone(), claimed.clone());
            let _ = tokio::task::spawn_blocking(move || claims::release(&store, &claimed)).await;
        }
    }
}

/// How a folder's jobs run.
fn internal(folder: &Watched) -> Internal<'_> {
    Internal {
        transport: "watch",
        sub: folder.watch.sub.as_deref().unwrap_or(&folder.default_sub),
        task: &folder.watch.task,
        format: folder.watch.format,
        params: &folder.watch.params,
    }
}
