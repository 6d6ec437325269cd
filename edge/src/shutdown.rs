//! How the server stops, as every task sees it: one value, cloned into each connection, job,
//! request and helper, instead of a token per step spread over the modules.
//!
//! Shutdown has two steps. **Draining** starts when the owner of the server cancels the token
//! it gave [`crate::Server::run`] (Ctrl-C, SIGTERM, a test): no new connections, jobs or
//! requests (HTTP/3 GOAWAY, `edge/1` jobs told with a `draining` event), `/healthz` says
//! `draining`, and running jobs go on. **Abort** comes when the grace period
//! (`jobs.shutdown_grace_secs`) is over with jobs still running: each commits what it has and
//! ends `failed` with `shutdown`.

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The server's shutdown, for the tasks that watch it.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    draining: CancellationToken,
    abort: CancellationToken,
}

impl Shutdown {
    /// A shutdown that starts draining when `draining` is cancelled.
    pub(crate) fn new(draining: CancellationToken) -> Shutdown {
        Shutdown {
            draining,
            abort: CancellationToken::new(),
        }
    }

    /// Whether draining has started.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Completes once draining has started.
    pub(crate) fn draining(&self) -> WaitForCancellationFuture<'_> {
        self.draining.cancelled()
    }

    /// Ends the grace period: running jobs commit what they have and end.
    pub(crate) fn abort(&self) {
        self.abort.cancel();
    }

    /// Completes once the grace period is over.
    pub(crate) fn aborted(&self) -> WaitForCancellationFuture<'_> {
        self.abort.cancelled()
    }

    /// Whether the grace period is over.
    #[cfg(test)]
    pub(crate) fn is_aborted(&self) -> bool {
        self.abort.is_cancelled()
    }

    /// Draining as a token, for code outside this crate that stops with it (the history's
    /// pruning loop in `edge-tasks`).
    pub(crate) fn draining_token(&self) -> CancellationToken {
        self.draining.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_comes_first_and_abort_only_when_asked() {
        let token = CancellationToken::new();
        let shutdown = Shutdown::new(token.clone());
        let seen_by_a_task = shutdown.clone();
        assert!(!seen_by_a_task.is_draining() && !seen_by_a_task.is_aborted());
        token.cancel();
        assert!(seen_by_a_task.is_draining());
        assert!(
            !seen_by_a_task.is_aborted(),
            "draining alone aborts nothing"
        );
        shutdown.abort();
        assert!(seen_by_a_task.is_aborted());
    }
}
