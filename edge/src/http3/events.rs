//! `GET /v1/jobs/{id}/events`: a job's events for a watcher, from the start (or after
//! `?after=N`, or `Last-Event-ID`), then live until the final event: NDJSON, or Server-Sent
//! Events when the request accepts `text/event-stream`. A job no longer kept in memory
//! replays its final event from the job history.

use super::respond::refuse;
use super::routes::parse_query;
use super::Stream;
use crate::auth::Grant;
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::watch::{self, Feed};
use bytes::Bytes;
use edge_tasks::history;
use http::{HeaderMap, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Names a job by the reference its upload gave (`?ref=`) in place of its id.
const REFERENCE_PREFIX: &str = "ref:";

/// How often an idle Server-Sent Events stream gets a comment, so that proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Streams job `id`'s events to a watcher holding `grant` (`jobs:read`; their own jobs only,
/// unless `admin`).
pub(super) async fn watch(
    stream: &mut Stream,
    service: &Service,
    id: String,
    grant: &Grant,
    headers: &HeaderMap,
    query: Option<&str>,
    shutdown: &Shutdown,
) {
    let after = match after(headers, query) {
        Ok(after) => after,
        Err(message) => {
            return refuse(stream, StatusCode::BAD_REQUEST, "bad_params", &message).await
        }
    };
    let sse = headers
        .get_all("accept")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    let visible = |sub: &str| grant.is_admin() || grant.sub == sub;
    // `ref:<reference>`: the job an upload of the watcher's named with `?ref=`.
    let id = match id.strip_prefix(REFERENCE_PREFIX) {
        Some(reference) => {
            let sub = (!grant.is_admin()).then_some(grant.sub.as_str());
            match service.feeds.resolve(sub, reference) {
                Some(job) => job,
                None => {
                    let message = format!("no job with the reference `{reference}` (yet)");
                    return refuse(stream, StatusCode::NOT_FOUND, "not_found", &message).await;
                }
            }
        }
        None => id,
    };
    let source = match service.feeds.find(&id) {
        Some(feed) if visible(&feed.sub) => Source::Live(feed),
        Some(_) => Source::None,
        None => from_history(service, &id, grant).await,
    };
    let not_found = format!("no job `{id}`");
    let source = match source {
        Source::None => {
            return refuse(stream, StatusCode::NOT_FOUND, "not_found", &not_found).await
        }
        source => source,
    };
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    let response = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .header("cache-control", "no-cache")
        .body(())
        .expect("a response of static parts is valid");
    if stream.send_response(response).await.is_err() || stream.head {
        let _ = stream.finish().await;
        return;
    }
    match source {
        Source::Live(feed) => follow(stream, &feed, after, sse, shutdown).await,
        Source::Final(name, line) => {
            if after < 1 {
                let _ = stream.send_data(encode(sse, 1, name, line)).await;
            }
        }
        Source::None => {}
    }
    let _ = stream.finish().await;
}

/// Where a watcher's events come from.
enum Source {
    /// The job's feed (running, or recently finished).
    Live(Arc<Feed>),
    /// Only its final event (as event 1), rebuilt from the job history.
    Final(&'static str, Bytes),
    /// No job the watcher may see.
    None,
}

/// The final event of a job no longer in memory, from its history record.
async fn from_history(service: &Service, id: &str, grant: &Grant) -> Source {
    let (store, id) = (service.store.clone(), id.to_owned());
    let record = tokio::task::spawn_blocking(move || history::get(&store, &id)).await;
    let Ok(Ok(Some(record))) = record else {
        return Source::None;
    };
    let visible = grant.is_admin() || record.sub.as_deref() == Some(grant.sub.as_str());
    match watch::final_event(&record) {
        Some(event) if visible => Source::Final(event.name(), Bytes::from(event.to_line())),
        _ => Source::None,
    }
}

/// Sends the feed's events after `after`, then each new one, until the final event, the
/// client's going away, or the server's shutdown.
async fn follow(stream: &mut Stream, feed: &Feed, mut after: u64, sse: bool, shutdown: &Shutdown) {
    loop {
        let batch = feed.after(after);
        for (number, name, line) in batch.events {
            after = number;
            if stream
                .send_data(encode(sse, number, name, line))
                .await
                .is_err()
            {
                return;
            }
        }
        if batch.ended {
            return;
        }
        tokio::select! {
            () = feed.changed_since(after) => {}
            () = shutdown.draining() => return,
            () = tokio::time::sleep(KEEPALIVE), if sse => {
                if stream.send_data(Bytes::from_static(b":\n\n")).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Event `number` (its NDJSON line) as the watcher reads it: the line, or an SSE event.
fn encode(sse: bool, number: u64, name: &str, line: Bytes) -> Bytes {
    if sse {
        watch::sse(number, name, &line)
    } else {
        line
    }
}

/// The number of the last event the watcher has: `?after=N`, else `Last-Event-ID`, else 0.
fn after(headers: &HeaderMap, query: Option<&str>) -> Result<u64, String> {
    let mut after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    for (key, value) in parse_query(query) {
        match key.as_str() {
            "after" => after = Some(value),
            other => return Err(format!("unknown parameter `{other}` (use after)")),
        }
    }
    match after {
        None => Ok(0),
        Some(n) => n
            .trim()
            .parse()
            .map_err(|_| format!("`after` (or Last-Event-ID) is an event number, not `{n}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_comes_from_the_query_or_the_last_event_id() {
        let mut headers = HeaderMap::new();
        assert_eq!(after(&headers, None), Ok(0));
        headers.insert("last-event-id", "12".parse().unwrap());
        assert_eq!(after(&headers, None), Ok(12));
        assert_eq!(after(&headers, Some("after=3")), Ok(3));
        assert!(after(&headers, Some("after=x")).is_err());
        assert!(after(&headers, Some("from=3")).is_err());
    }
}
