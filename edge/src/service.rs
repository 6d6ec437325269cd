//! What every connection, job and request of the server shares: the store, the token gate,
//! the limits, the settings of jobs, the metrics and the certificate.

use crate::auth::{AuthError, DenyList, Grant, Verifier};
use crate::limits::Limits;
use crate::shutdown::Shutdown;
use edge_tasks::pipeline::Settings;
use edge_tasks::task::TaskLimits;
use edge_tasks::{Context, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// What every connection and job of the server shares.
#[derive(Debug)]
pub(crate) struct Service {
    /// The store every task writes to.
    pub store: Store,
    /// The limits task plugins enforce (`[limits]`).
    pub task_limits: TaskLimits,
    /// Checks every job's and request's token.
    pub auth: Verifier,
    /// Revoked token ids (the store holds the durable copy).
    pub revoked: Arc<DenyList>,
    /// Per-subject limits.
    pub limits: Arc<Limits>,
    /// Job slots: at most `jobs.max_running` pipelines run at once.
    pub job_slots: Semaphore,
    /// How pipelines commit and report.
    pub settings: Settings,
    /// How long a client has to send its job header.
    pub header_timeout: Duration,
    /// How long a new connection has to present a valid token.
    pub auth_timeout: Duration,
    /// How long running jobs may go on once the server starts shutting down.
    pub grace: Duration,
    /// The counters `/metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The server certificate (reloadable).
    pub certificates: Arc<crate::certs::Certificates>,
    /// The slowest upload the server waits for.
    pub pace: crate::jobs::Pace,
    /// The range of every connection's receive window.
    pub window_bounds: crate::window::Bounds,
    /// The server-wide budget of receive-window bytes above the floors.
    pub window_budget: Arc<crate::window::Budget>,
    /// The events of running and recently finished jobs, for watchers.
    pub feeds: Arc<crate::watch::Feeds>,
    /// Signing in with a name and a password.
    pub login: crate::login::Login,
    /// What jobs may read their bodies from besides their uploads.
    pub sources: crate::sources::Sources,
    /// The resumable jobs running on this node.
    pub attached: Arc<crate::resumes::Attached>,
    /// How long a cut-off job stays resumable (`jobs.resume_window`).
    pub resume_window: Duration,
}

impl Service {
    /// The health check's answer (both listeners): healthy unless draining or the store is
    /// away (the PostgreSQL store down: a load balancer sends clients elsewhere); the
    /// certificate's expiry, with a warning within 14 days of it.
    pub(crate) fn health(&self, shutdown: &Shutdown) -> (bool, serde_json::Value) {
        let certificate = self.certificates.info();
        let reachable = self.store.is_reachable();
        let status = match (shutdown.is_draining(), reachable) {
            (true, _) => "draining",
            (false, false) => "store_unavailable",
            (false, true) => "ok",
        };
        let mut report = serde_json::json!({
            "status": status,
            "certificate": {"expires": certificate.expires, "days_left": certificate.days_left},
        });
        if let Some(warning) = certificate.warning() {
            report["certificate"]["warning"] = serde_json::Value::String(warning);
        }
        (status == "ok", report)
    }

    /// What a task plugin gets to start a job or answer a read.
    pub(crate) fn context(&self) -> Context {
        let mut context = Context::new(self.store.clone());
        context.limits = self.task_limits;
        context
    }

    /// Verifies a token and checks its id against the deny-list (in memory: no I/O on the
    /// runtime); returns what it allows.
    pub(crate) fn authorize(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        let grant = self.auth.verify(token)?;
        if self.revoked.is_revoked(&grant.jti, grant.exp)
            || self.revoked.is_subject_revoked(&grant.sub, grant.iat)
        {
            return Err(AuthError::Revoked);
        }
        Ok(grant)
    }
}
