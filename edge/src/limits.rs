//! Per-subject limits, across connections: how many jobs one token subject may run at once,
//! and how fast it may start them (a token bucket). Past a limit a job is refused with
//! `rate_limited` and a `retry_after`.

use crate::config::LimitsConfig;
use crate::jobs::Refusal;
use edge_proto::ErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Subjects remembered before idle ones are forgotten (bounds the table's memory).
const MAX_SUBJECTS: usize = 10_000;

/// One subject's use.
#[derive(Debug)]
struct Subject {
    running: usize,
    tokens: f64,
    refilled: Instant,
}

/// The limits, shared by every connection.
#[derive(Debug)]
pub(crate) struct Limits {
    config: LimitsConfig,
    subjects: Mutex<HashMap<String, Subject>>,
}

/// A running job's place in its subject's count; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Arc<Limits>,
    sub: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(subject) = self.limits.lock().get_mut(&self.sub) {
            subject.running = subject.running.saturating_sub(1);
        }
    }
}

impl Limits {
    pub(crate) fn new(config: LimitsConfig) -> Arc<Limits> {
        Arc::new(Limits {
            config,
            subjects: Mutex::new(HashMap::new()),
        })
    }

    /// Admits one more job of `sub`, or says when to retry.
    pub(crate) fn admit(self: &Arc<Self>, sub: &str) -> Result<Admission, Refusal> {
        let rate = self.config.job_starts_per_sec.max(0.001);
        let burst = f64::from(self.config.job_start_burst.max(1));
        let mut subjects = self.lock();
        if subjects.len() >= MAX_SUBJECTS && !subjects.contains_key(sub) {
            subjects.retain(|_, s| s.running > 0);
        }
        let now = Instant::now();
        let subject = subjects.entry(sub.to_owned()).or_insert(Subject {
            running: 0,
            tokens: burst,
            refilled: now,
        });
        subject.tokens =
            (subject.tokens + now.duration_since(subject.refilled).as_secs_f64() * rate).min(burst);
        subject.refilled = now;
        if subject.running >= self.config.max_jobs_per_sub {
            return Err(limited(
                format!("`{sub}` already runs {} jobs, the most allowed at once (limits.max_jobs_per_sub)", subject.running),
                1,
            ));
        }
        if subject.tokens < 1.0 {
            let wait = ((1.0 - subject.tokens) / rate).ceil().max(1.0) as u64;
            return Err(limited(
                format!("`{sub}` starts jobs faster than {rate}/s (limits.job_starts_per_sec)"),
                wait,
            ));
        }
        subject.tokens -= 1.0;
        subject.running += 1;
        Ok(Admission {
            limits: self.clone(),
            sub: sub.to_owned(),
        })
    }

    /// The most body bytes one job may send, if limited.
    pub(crate) fn max_upload_bytes(&self) -> Option<u64> {
        (self.config.max_upload_bytes > 0).then_some(self.config.max_upload_bytes)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Subject>> {
        // The table holds plain counters: a panic while it is locked leaves it usable.
        self.subjects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn limited(message: String, retry_after: u64) -> Refusal {
    Refusal {
        code: ErrorCode::RateLimited,
        message: format!("{message}; retry in {retry_after} s"),
        retry_after: Some(retry_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_jobs: usize, rate: f64, burst: u32) -> Arc<Limits> {
        Limits::new(LimitsConfig {
            max_jobs_per_sub: max_jobs,
            job_starts_per_sec: rate,
            job_start_burst: burst,
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn concurrent_jobs_are_capped_per_subject() {
        let limits = limits(2, 1000.0, 100);
        let a = limits.admit("alice").unwrap();
        let _b = limits.admit("alice").unwrap();
        let refused = limits.admit("alice").unwrap_err();
        assert_eq!(
            (refused.code, refused.retry_after),
            (ErrorCode::RateLimited, Some(1))
        );
        assert!(
            limits.admit("bob").is_ok(),
            "other subjects are not affected"
        );
        drop(a);
        assert!(
            limits.admit("alice").is_ok(),
            "a finished job frees its place"
        );
    }

    #[test]
    fn starts_are_a_token_bucket() {
        let limits = limits(100, 0.5, 2);
        let _first = limits.admit("alice").unwrap();
        let _second = limits.admit("alice").unwrap();
        let refused = limits.admit("alice").unwrap_err();
        assert_eq!(refused.retry_after, Some(2), "{}", refused.message);
        assert!(refused.message.contains("job_starts_per_sec"));
    }
}
