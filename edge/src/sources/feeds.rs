//! Feeds (`[[sources.feeds]]`): a URL fetched as a job of its task at start and then every
//! `every`, asking the origin first whether it changed (`if_changed`: a 304 ends the job at
//! once, `unchanged`). A fetch that fails (`source_failed`: an error status, a timeout...) is
//! tried again after `retry_secs`, doubling, up to `retries` times, then the feed waits for
//! its next turn. Each feed runs in one loop, so it never runs twice at once. Its jobs are in
//! the job history (transport `feed`, subject `feed:<name>`), and `edge_feed_runs_total`
//! counts its runs by outcome.

use super::internal::Internal;
use crate::config::FeedConfig;
use crate::jobs;
use crate::service::Service;
use crate::shutdown::Shutdown;
use edge_proto::{ErrorCode, Event};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn, Instrument};

/// Runs every feed until the server drains.
pub(crate) async fn run_feeds(service: Arc<Service>, feeds: Vec<FeedConfig>, shutdown: Shutdown) {
    let mut running = tokio::task::JoinSet::new();
    for feed in feeds {
        let Ok(period) = feed.period() else {
            continue;
        };
        let span = tracing::info_span!("feed", feed = %feed.name());
        running.spawn(run_feed(service.clone(), feed, period, shutdown.clone()).instrument(span));
    }
    while running.join_next().await.is_some() {}
}

/// How one run of a feed went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Done,
    Unchanged,
    /// Worth trying again soon (the origin failed, or the subject's limits said wait).
    Retry,
    /// Not worth trying again before the next turn (the URL is refused, the task refused it).
    Failed,
}

async fn run_feed(service: Arc<Service>, feed: FeedConfig, period: Duration, shutdown: Shutdown) {
    let sub = feed
        .sub
        .clone()
        .unwrap_or_else(|| format!("feed:{}", feed.name()));
    loop {
        let mut delay = Duration::from_secs(feed.retry_secs.max(1));
        let mut tries = 0;
        loop {
            let run = run_once(&service, &feed, &sub, &shutdown).await;
            let outcome = match run {
                Run::Done => "done",
                Run::Unchanged => "unchanged",
                Run::Retry if tries < feed.retries => "retry",
                Run::Retry | Run::Failed => "failed",
            };
            service.metrics.feed_run(feed.name(), outcome);
            if outcome != "retry" {
                break;
            }
            tries += 1;
            info!(
                in_secs = delay.as_secs(),
                "the feed's fetch failed; trying again"
            );
            if !wait(delay, &shutdown).await {
                return;
            }
            delay = (delay * 2).min(period);
        }
        if !wait(period, &shutdown).await {
            return;
        }
    }
}

/// Waits `delay`; `false` when the server drains first.
async fn wait(delay: Duration, shutdown: &Shutdown) -> bool {
    tokio::select! {
        _ = shutdown.draining() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// One fetch of the feed as a job.
async fn run_once(
    service: &Arc<Service>,
    feed: &FeedConfig,
    sub: &str,
    shutdown: &Shutdown,
) -> Run {
    let internal = Internal {
        transport: "feed",
        sub,
        task: &feed.task,
        format: feed.format,
        params: &feed.params,
    };
    let Ok(admission) = service.limits.admit(sub) else {
        return Run::Retry;
    };
    let grant = internal.grant();
    let opened = service
        .sources
        .open(&feed.url, &grant, &service.store, feed.if_changed)
        .await;
    let opened = match opened {
        Ok(opened) => opened,
        Err(refusal) => {
            warn!("the feed's URL is refused: {}", refusal.message);
            return Run::Failed;
        }
    };
    let last = internal
        .run(
            service,
            jobs::new_job_id(service.store.slot()),
            opened,
            admission,
            shutdown,
        )
        .await;
    match last {
        Some(Event::Done {
            unchanged: true, ..
        }) => Run::Unchanged,
        Some(Event::Done { .. }) => Run::Done,
        Some(Event::Failed {
            code: ErrorCode::SourceFailed,
            ..
        }) => Run::Retry,
        _ => Run::Failed,
    }
}
