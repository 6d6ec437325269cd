//! Items that are files (a plugin's [`Content`], e.g. `blobs`): `GET` and `HEAD` stream an
//! item's bytes with `Content-Type`, `Content-Length`, `ETag` and `Last-Modified`, honour
//! `If-None-Match` (304) and one `Range` (206, or 416), and `DELETE` removes an item.
//!
//! The bytes are read off the runtime, from one snapshot of the store, and cross a bounded
//! channel: a slow reader holds the store read back, never more than a few chunks in memory.

use super::read::{answer, read_failure};
use super::respond::refuse;
use super::Stream;
use crate::auth::Grant;
use crate::service::Service;
use bytes::Bytes;
use edge_tasks::reads::{Content, ContentInfo, ReadError, Reads};
use edge_tasks::task::JobRef;
use http::{HeaderMap, Response, StatusCode};
use std::ops::Range;
use tokio::sync::mpsc;
use tracing::debug;

/// Pieces read ahead of the client, at most (each up to a chunk of the store, about 1 MiB).
const READ_AHEAD: usize = 4;

/// `GET`/`HEAD /v1/<task>/{key}` for a plugin whose items are files.
pub(super) async fn serve(
    stream: &mut Stream,
    service: &Service,
    reads: Reads,
    key: String,
    headers: &HeaderMap,
) {
    let Some(open) = reads.content else {
        return;
    };
    let context = service.context();
    let item = reads.item;
    let opened = tokio::task::spawn_blocking(move || {
        open(&context, &key)?.ok_or_else(|| ReadError::NotFound(format!("no {item} `{key}`")))
    })
    .await;
    let content = match opened {
        Ok(Ok(content)) => content,
        Ok(Err(e)) => {
            let (status, code, message) = read_failure(e);
            return refuse(stream, status, code, &message).await;
        }
        Err(_) => {
            let message = "the read failed";
            return refuse(
                stream,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                message,
            )
            .await;
        }
    };
    let info = content.info().clone();
    let etag = format!("\"{}\"", info.etag);
    let base = Response::builder()
        .header("etag", &etag)
        .header("last-modified", httpdate::fmt_http_date(info.modified))
        .header("accept-ranges", "bytes")
        .header("cache-control", "private, no-cache")
        // A stored file is served as data, never as a page of this origin: no sniffing a
        // type, no scripts (an uploaded HTML or SVG file cannot act for the site).
        .header("x-content-type-options", "nosniff")
        .header("content-security-policy", "sandbox");
    if let Some(tags) = headers.get("if-none-match").and_then(|v| v.to_str().ok()) {
        if matches_any(tags, &info.etag) {
            let response = base
                .status(StatusCode::NOT_MODIFIED)
                .body(())
                .expect("a response of valid parts");
            let _ = stream.send_response(response).await;
            let _ = stream.finish().await;
            return;
        }
    }
    let wanted = requested_range(headers, &info);
    let (status, range, response) = match wanted {
        Wanted::All => (StatusCode::OK, 0..info.size, base),
        Wanted::Part(range) => {
            let content_range = format!("bytes {}-{}/{}", range.start, range.end - 1, info.size);
            let response = base.header("content-range", content_range);
            (StatusCode::PARTIAL_CONTENT, range, response)
        }
        Wanted::Unsatisfiable => {
            let response = base
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header("content-range", format!("bytes */{}", info.size))
                .header("content-length", 0)
                .body(())
                .expect("a response of valid parts");
            let _ = stream.send_response(response).await;
            let _ = stream.finish().await;
            return;
        }
    };
    let response = response
        .status(status)
        .header("content-type", &info.content_type)
        .header("content-length", range.end - range.start)
        .body(())
        .expect("a response of valid parts");
    if stream.send_response(response).await.is_err() {
        return;
    }
    if !stream.head {
        if let Err(e) = send_bytes(stream, content, range).await {
            debug!("a file's bytes stopped: {e}");
            stream.abort().await;
            return;
        }
    }
    let _ = stream.finish().await;
}

/// Streams `range` of `content` to the client.
async fn send_bytes(
    stream: &mut Stream,
    mut content: Box<dyn Content>,
    range: Range<u64>,
) -> Result<(), String> {
    let (send, mut received) = mpsc::channel::<Result<Bytes, String>>(READ_AHEAD);
    let reader = tokio::task::spawn_blocking(move || {
        let read = content.read(range, &mut |piece| send.blocking_send(Ok(piece)).is_ok());
        if let Err(e) = read {
            let _ = send.blocking_send(Err(e.to_string()));
        }
    });
    while let Some(piece) = received.recv().await {
        let piece = piece?;
        if stream.send_data(piece).await.is_err() {
            // The client went away: dropping the receiver stops the reader.
            drop(received);
            let _ = reader.await;
            return Err("the client stopped reading".into());
        }
    }
    let _ = reader.await;
    Ok(())
}

/// `DELETE /v1/<task>/{key}`: removes one item (the route checked the scope).
pub(super) async fn delete(
    stream: &mut Stream,
    service: &Service,
    reads: Reads,
    key: String,
    grant: &Grant,
) {
    let Some(delete) = reads.delete else {
        return;
    };
    let by = JobRef {
        id: crate::jobs::new_job_id(service.store.slot()),
        sub: grant.sub.clone(),
    };
    let item = reads.item;
    answer(stream, service, move |context| {
        delete(context, &key, &by)?.ok_or_else(|| ReadError::NotFound(format!("no {item} `{key}`")))
    })
    .await
}

/// What a request's `Range` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    /// Everything: no `Range`, one that is not `bytes=`, several ranges, or an `If-Range`
    /// that no longer matches.
    All,
    /// One range, within the size.
    Part(Range<u64>),
    /// One range that starts past the end (416).
    Unsatisfiable,
}

/// The part a request's `Range` (and `If-Range`) asks for (RFC 9110 §14).
fn requested_range(headers: &HeaderMap, info: &ContentInfo) -> Wanted {
    let Some(range) = headers.get("range").and_then(|v| v.to_str().ok()) else {
        return Wanted::All;
    };
    if let Some(condition) = headers.get("if-range").and_then(|v| v.to_str().ok()) {
        // Only a strong tag is compared; a date (or a weak tag) serves the whole file.
        if condition.trim() != format!("\"{}\"", info.etag) {
            return Wanted::All;
        }
    }
    parse_range(range, info.size)
}

fn parse_range(range: &str, size: u64) -> Wanted {
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Wanted::All;
    };
    if spec.contains(',') {
        return Wanted::All;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::All;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        // `bytes=-N`: the last N bytes.
        (true, _, Some(suffix)) if suffix > 0 && size > 0 => {
            Wanted::Part(size.saturating_sub(suffix)..size)
        }
        (true, _, Some(_)) => Wanted::Unsatisfiable,
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if start >= size {
                return Wanted::Unsatisfiable;
            }
            match end {
                Some(end) if end < start => Wanted::All,
                Some(end) => Wanted::Part(start..end.saturating_add(1).min(size)),
                None => Wanted::Part(start..size),
            }
        }
        _ => Wanted::All,
    }
}

/// Whether an `If-None-Match` value names `etag` (or is `*`); weak tags match too (RFC 9110
/// §13.1.2 compares weakly).
fn matches_any(tags: &str, etag: &str) -> bool {
    tags.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"') == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-0", 10), Wanted::Part(0..1));
        assert_eq!(parse_range("bytes=2-5", 10), Wanted::Part(2..6));
        assert_eq!(parse_range("bytes=2-", 10), Wanted::Part(2..10));
        assert_eq!(parse_range("bytes=5-100", 10), Wanted::Part(5..10));
        assert_eq!(parse_range("bytes=-3", 10), Wanted::Part(7..10));
        assert_eq!(parse_range("bytes=-30", 10), Wanted::Part(0..10));
        assert_eq!(parse_range("bytes=10-", 10), Wanted::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Wanted::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Wanted::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,4-5", 10), Wanted::All);
        assert_eq!(parse_range("bytes=5-2", 10), Wanted::All);
        assert_eq!(parse_range("items=0-1", 10), Wanted::All);
        assert_eq!(parse_range("bytes=x-1", 10), Wanted::All);
    }

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(matches_any("\"abc\"", "abc"));
        assert!(matches_any("\"x\", W/\"abc\"", "abc"));
        assert!(matches_any("*", "abc"));
        assert!(!matches_any("\"abcd\"", "abc"));
    }

    #[test]
    fn an_if_range_that_no_longer_matches_serves_everything() {
        let info = ContentInfo {
            size: 10,
            content_type: "text/plain".into(),
            etag: "abc".into(),
            modified: std::time::SystemTime::UNIX_EPOCH,
        };
        let mut headers = HeaderMap::new();
        headers.insert("range", "bytes=0-1".parse().unwrap());
        assert_eq!(requested_range(&headers, &info), Wanted::Part(0..2));
        headers.insert("if-range", "\"old\"".parse().unwrap());
        assert_eq!(requested_range(&headers, &info), Wanted::All);
        headers.insert("if-range", "\"abc\"".parse().unwrap());
        assert_eq!(requested_range(&headers, &info), Wanted::Part(0..2));
    }
}
