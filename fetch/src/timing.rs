//! The time caps of one fetch: each step runs under its own cap and under what is left of
//! the total, and a timeout says which of the two passed.

use crate::error::{FetchError, Timeout};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// When the whole fetch must be done (if ever), started with the fetch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    end: Option<Instant>,
    total: Duration,
}

impl Deadline {
    /// The deadline `total` from now; none for a zero `total`.
    pub(crate) fn start(total: Duration) -> Deadline {
        Deadline {
            end: (!total.is_zero()).then(|| Instant::now() + total),
            total,
        }
    }

    /// Runs `step` for at most `limit` (none when zero) and at most until the deadline.
    pub(crate) async fn run<F: Future>(
        &self,
        which: Timeout,
        limit: Duration,
        step: F,
    ) -> Result<F::Output, FetchError> {
        let own = (!limit.is_zero()).then(|| Instant::now() + limit);
        let (end, which, after) = match (own, self.end) {
            (Some(own), Some(end)) if end <= own => (Some(end), Timeout::Total, self.total),
            (Some(own), _) => (Some(own), which, limit),
            (None, end) => (end, Timeout::Total, self.total),
        };
        match end {
            Some(end) => tokio::time::timeout_at(end, step)
                .await
                .map_err(|_| FetchError::Timeout { which, after }),
            None => Ok(step.await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sooner_cap_is_the_one_reported() {
        let slow = || tokio::time::sleep(Duration::from_secs(10));
        let deadline = Deadline::start(Duration::from_millis(200));
        let own = deadline
            .run(Timeout::Idle, Duration::from_millis(20), slow())
            .await;
        assert!(matches!(
            own,
            Err(FetchError::Timeout {
                which: Timeout::Idle,
                ..
            })
        ));
        let total = deadline
            .run(Timeout::Idle, Duration::from_secs(9), slow())
            .await;
        assert!(matches!(
            total,
            Err(FetchError::Timeout {
                which: Timeout::Total,
                ..
            })
        ));
        let quick = || tokio::time::sleep(Duration::from_millis(10));
        let none = Deadline::start(Duration::ZERO)
            .run(Timeout::Idle, Duration::ZERO, quick())
            .await;
        assert!(none.is_ok());
    }
}
