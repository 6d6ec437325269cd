//! Following a job from anywhere (`GET /v1/jobs/{id}/events`): each job's events, numbered
//! from 1, kept while it runs and for the last [`KEEP_FINISHED`] jobs after, so that any number
//! of watchers replay what they missed and then get the rest as it happens. Bounded: a job
//! keeps its last [`MAX_EVENTS`] events (and at most [`MAX_BYTES`] of them); a watcher that
//! asks for older ones starts at the oldest kept.

use bytes::Bytes;
use edge_proto::Event;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Events a job keeps for watchers, at most.
pub(crate) const MAX_EVENTS: usize = 1024;
/// Bytes of events a job keeps for watchers, at most.
pub(crate) const MAX_BYTES: usize = 1024 * 1024;
/// Finished jobs whose events are kept (the newest).
pub(crate) const KEEP_FINISHED: usize = 64;
/// Client references (`?ref=` of an upload) kept, the newest, to find their jobs by.
pub(crate) const KEEP_REFERENCES: usize = 1024;

/// The events of the running and recently finished jobs.
#[derive(Debug, Default)]
pub(crate) struct Feeds {
    inner: Mutex<FeedsInner>,
}

#[derive(Debug, Default)]
struct FeedsInner {
    running: HashMap<String, Arc<Feed>>,
    finished: VecDeque<(String, Arc<Feed>)>,
    /// `(sub, reference, job)`: the jobs that uploads named with a reference of their own.
    references: VecDeque<(String, String, String)>,
}

impl Feeds {
    /// Starts the feed of job `job`, run by `sub`.
    pub(crate) fn open(self: &Arc<Self>, job: &str, sub: &str) -> Publisher {
        let feed = Arc::new(Feed {
            sub: sub.to_owned(),
            state: Mutex::new(FeedState::default()),
            changed: tokio::sync::Notify::new(),
        });
        self.lock().running.insert(job.to_owned(), feed.clone());
        Publisher {
            feeds: self.clone(),
            job: job.to_owned(),
            feed,
            ended: false,
        }
    }

    /// Remembers that `sub`'s upload named `reference` is job `job` (a client that cannot
    /// read its upload's response before its body is sent, a browser, follows the job by it).
    pub(crate) fn refer(&self, sub: &str, reference: &str, job: &str) {
        let mut inner = self.lock();
        if inner.references.len() == KEEP_REFERENCES {
            inner.references.pop_front();
        }
        inner
            .references
            .push_back((sub.to_owned(), reference.to_owned(), job.to_owned()));
    }

    /// The job of `sub`'s newest upload named `reference` (any subject's for `sub` `None`).
    pub(crate) fn resolve(&self, sub: Option<&str>, reference: &str) -> Option<String> {
        let inner = self.lock();
        inner
            .references
            .iter()
            .rev()
            .find(|(s, r, _)| r == reference && sub.is_none_or(|sub| sub == s))
            .map(|(_, _, job)| job.clone())
    }

    /// The feed of job `job`, running or recently finished.
    pub(crate) fn find(&self, job: &str) -> Option<Arc<Feed>> {
        let inner = self.lock();
        inner.running.get(job).cloned().or_else(|| {
            inner
                .finished
                .iter()
                .find(|(id, _)| id == job)
                .map(|(_, feed)| feed.clone())
        })
    }

    fn finish(&self, job: &str) {
        let mut inner = self.lock();
        if let Some(feed) = inner.running.remove(job) {
            if inner.finished.len() == KEEP_FINISHED {
                inner.finished.pop_front();
            }
            inner.finished.push_back((job.to_owned(), feed));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One job's events.
#[derive(Debug)]
pub(crate) struct Feed {
    /// Who runs the job (a watcher who is not an administrator must be the same subject).
    pub sub: String,
    state: Mutex<FeedState>,
    changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct FeedState {
    /// The kept events: their number (from 1), their name and their NDJSON line.
    events: VecDeque<(u64, &'static str, Bytes)>,
    bytes: usize,
    /// The number the next event gets, less one.
    last: u64,
    /// The final event was published.
    ended: bool,
}

/// What a watcher gets from [`Feed::after`].
#[derive(Debug)]
pub(crate) struct Batch {
    /// Events numbered after the one asked for (from the oldest kept), in order.
    pub events: Vec<(u64, &'static str, Bytes)>,
    /// Whether the job's final event is among what was ever published (nothing follows).
    pub ended: bool,
}

impl Feed {
    /// The events after number `after`, and whether the job has ended.
    pub(crate) fn after(&self, after: u64) -> Batch {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Batch {
            events: state
                .events
                .iter()
                .filter(|(n, _, _)| *n > after)
                .cloned()
                .collect(),
            ended: state.ended,
        }
    }

    /// Waits until an event is published or the job ends; call [`Feed::after`] again then.
    /// (The wait is armed before it checks, so nothing published meanwhile is missed.)
    pub(crate) async fn changed_since(&self, after: u64) {
        let notified = self.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.last > after || state.ended {
                return;
            }
        }
        notified.await;
    }
}

/// The job's side of its feed: publishes its events; ends it (when the job ends, or when
/// dropped).
#[derive(Debug)]
pub(crate) struct Publisher {
    feeds: Arc<Feeds>,
    job: String,
    feed: Arc<Feed>,
    ended: bool,
}

impl Publisher {
    /// Publishes one event (its NDJSON line); the final one ends the feed.
    pub(crate) fn publish(&mut self, event: &Event, line: &[u8]) {
        if self.ended {
            return;
        }
        {
            let mut state = self.feed.state.lock().unwrap_or_else(|e| e.into_inner());
            state.last += 1;
            let number = state.last;
            state.bytes += line.len();
            state
                .events
                .push_back((number, event.name(), Bytes::copy_from_slice(line)));
            while state.events.len() > MAX_EVENTS
                || (state.bytes > MAX_BYTES && state.events.len() > 1)
            {
                if let Some((_, _, old)) = state.events.pop_front() {
                    state.bytes -= old.len();
                }
            }
            state.ended = event.is_final();
        }
        self.feed.changed.notify_waiters();
        if event.is_final() {
            self.end();
        }
    }

    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.feed
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ended = true;
            self.feed.changed.notify_waiters();
            self.feeds.finish(&self.job);
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.end();
    }
}

/// The final event of a job known only from its history record (no longer in memory): `done`,
/// `failed` or `rejected` with the record's counts (a `done` without its summary, which the
/// history does not keep). `None` for a job the history says still runs.
pub(crate) fn final_event(record: &edge_tasks::history::JobRecord) -> Option<Event> {
    use edge_proto::ErrorCode;
    let duration_ms = match (
        humantime::parse_rfc3339(&record.started),
        record.finished.as_deref().map(humantime::parse_rfc3339),
    ) {
        (Ok(started), Some(Ok(finished))) => finished
            .duration_since(started)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        _ => 0,
    };
    let message = record.message.clone().unwrap_or_default();
    Some(match record.outcome.as_str() {
        "running" => return None,
        "done" => Event::Done {
            job: record.job.clone(),
            bytes: record.bytes,
            records: record.records,
            committed: record.committed,
            errors: record.errors,
            duration_ms,
            summary: serde_json::Value::Null,
            first_errors: Vec::new(),
            unchanged: false,
            sha256: None,
        },
        "rejected" => Event::Rejected {
            code: record.code.unwrap_or(ErrorCode::Internal),
            message,
            committed: 0,
            upload_stream: None,
            retry_after: None,
        },
        _ => Event::Failed {
            job: record.job.clone(),
            code: record.code.unwrap_or(ErrorCode::Shutdown),
            message,
            committed: record.committed,
            bytes: record.bytes,
            records: record.records,
            errors: record.errors,
            offset: None,
            first_errors: Vec::new(),
        },
    })
}

/// Event `number`, named `name`, as Server-Sent Events (`id`, `event`, `data`) from its
/// NDJSON line.
pub(crate) fn sse(number: u64, name: &str, line: &[u8]) -> Bytes {
    let json = line.strip_suffix(b"\n").unwrap_or(line);
    let mut out = format!("id: {number}\nevent: {name}\ndata: ").into_bytes();
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_proto::Format;

    fn accepted() -> Event {
        Event::Accepted {
            job: "j".into(),
            upload_stream: None,
            task: "ports".into(),
            format: Format::Json,
            name: None,
            size: None,
            source: None,
        }
    }

    fn progress(bytes: u64) -> Event {
        Event::Progress {
            bytes,
            records: 0,
            errors: 0,
        }
    }

    fn publish(publisher: &mut Publisher, event: Event) {
        publisher.publish(&event, &event.to_line());
    }

    #[tokio::test]
    async fn watchers_replay_then_follow_until_the_final_event() {
        let feeds = Arc::new(Feeds::default());
        let mut publisher = feeds.open("j", "ann");
        publish(&mut publisher, accepted());
        let feed = feeds.find("j").unwrap();
        assert_eq!(feed.sub, "ann");
        let first = feed.after(0);
        assert_eq!((first.events.len(), first.ended), (1, false));
        assert_eq!(first.events[0].0, 1);
        let waiter = {
            let feed = feed.clone();
            tokio::spawn(async move { feed.changed_since(1).await })
        };
        tokio::task::yield_now().await;
        publish(&mut publisher, progress(10));
        waiter.await.unwrap();
        assert_eq!(feed.after(1).events.len(), 1);
        drop(publisher);
        assert!(feed.after(2).ended, "a job that went away has ended");
        feed.changed_since(2).await;
    }

    #[test]
    fn a_feed_keeps_its_last_events_and_finished_jobs_are_bounded() {
        let feeds = Arc::new(Feeds::default());
        let mut publisher = feeds.open("big", "ann");
        for i in 0..(MAX_EVENTS as u64 + 10) {
            publish(&mut publisher, progress(i));
        }
        let kept = feeds.find("big").unwrap().after(0).events;
        assert_eq!(kept.len(), MAX_EVENTS);
        assert_eq!(kept[0].0, 11, "the oldest went");
        drop(publisher);
        for i in 0..KEEP_FINISHED {
            drop(feeds.open(&format!("j{i}"), "ann"));
        }
        assert!(feeds.find("big").is_none(), "the oldest finished job went");
        assert!(feeds.find("j0").is_some());
    }

    #[test]
    fn events_read_as_server_sent_events() {
        let line = progress(5).to_line();
        assert_eq!(
            sse(7, "progress", &line),
            Bytes::from(
                "id: 7\nevent: progress\ndata: {\"event\":\"progress\",\"bytes\":5,\"records\":0,\"errors\":0}\n\n"
            )
        );
    }
}
