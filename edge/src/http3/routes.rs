//! Routing: a request's method and path to its handler, after the token and the scope the
//! route needs; `404` for an unknown path, `405` for a method the route does not take.

use super::read::{list_jobs, read_item, read_job, read_page, tasks};
use super::respond::{refuse, refuse_job, respond};
use super::upload::upload;
use super::Resolver;
use crate::server::Service;
use crate::window::ConnectionWindow;
use edge_proto::ErrorCode;
use http::{Method, Request, StatusCode};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Answers one request: reads its headers, checks its token and scope, and routes it.
pub(super) async fn handle(
    resolver: Resolver,
    service: Arc<Service>,
    window: Arc<ConnectionWindow>,
    authorised: CancellationToken,
    shutdown: CancellationToken,
) {
    let (request, mut stream) = match resolver.resolve_request().await {
        Ok(resolved) => resolved,
        Err(e) => {
            debug!("unreadable request: {e}");
            return;
        }
    };
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    debug!(%method, %path, "request");
    if (&method, segments.as_slice()) == (&Method::GET, ["healthz"].as_slice()) {
        let (healthy, body) = service.health(&shutdown);
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return respond(&mut stream, status, &body).await;
    }
    // Everything but the health check needs a valid token, checked before any body byte.
    let grant = match service.authorize(bearer(&request)) {
        Ok(grant) => grant,
        Err(e) => return refuse_job(&mut stream, &service, e.into()).await,
    };
    authorised.cancel();
    // A plugin's read endpoints: `/v1/<task>` and `/v1/<task>/{key}`.
    let reads = match segments.as_slice() {
        ["v1", task] | ["v1", task, _] => service.store.registry().find(task).and_then(|p| p.reads),
        _ => None,
    };
    let read_scope = match segments.as_slice() {
        ["v1", "jobs", ..] if method == Method::GET => Some("jobs:read"),
        _ => reads.map(|reads| reads.scope),
    };
    if let Some(scope) = read_scope.filter(|scope| !grant.allows(scope)) {
        let message = format!(
            "the token of `{}` does not hold the scope `{scope}`",
            grant.sub
        );
        service.metrics.rejected(ErrorCode::Forbidden);
        return refuse(&mut stream, StatusCode::FORBIDDEN, "forbidden", &message).await;
    }
    match (method, segments.as_slice()) {
        (Method::GET, ["v1", "tasks"]) => {
            let tasks = tasks(service.store.registry());
            respond(&mut stream, StatusCode::OK, &tasks).await
        }
        (Method::GET, ["v1", "jobs"]) => {
            list_jobs(&mut stream, &service, request.uri().query(), &grant).await
        }
        (Method::GET, ["v1", "jobs", id]) => {
            let id = percent_decode(id);
            read_job(&mut stream, &service, id, &grant).await
        }
        (Method::PUT | Method::POST, ["v1", "jobs", task]) => {
            let task = percent_decode(task);
            upload(request, stream, task, grant, service, window, shutdown).await
        }
        (Method::GET, ["v1", _, key]) if reads.is_some() => {
            let (reads, key) = (reads.expect("checked by the guard"), percent_decode(key));
            read_item(&mut stream, &service, reads, key).await
        }
        (Method::GET, ["v1", _]) if reads.is_some() => {
            let reads = reads.expect("checked by the guard");
            read_page(&mut stream, &service, reads, request.uri().query()).await
        }
        (_, ["v1", "jobs", _]) => {
            refuse(
                &mut stream,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use PUT or POST to upload a job",
            )
            .await
        }
        _ => {
            refuse(
                &mut stream,
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no such resource: {path}"),
            )
            .await
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(request: &Request<()>) -> Option<&str> {
    let value = request.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// `key=value` pairs of a query string, percent-decoded (`+` is a space).
pub(super) fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&key.replace('+', " ")),
                percent_decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are.
pub(super) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded() {
        let pairs = parse_query(Some("country=United+Arab%20Emirates&limit=5&after=&x"));
        assert_eq!(
            pairs,
            vec![
                ("country".into(), "United Arab Emirates".into()),
                ("limit".into(), "5".into()),
                ("after".into(), "".into()),
                ("x".into(), "".into()),
            ]
        );
        assert_eq!(percent_decode("a%2Fb%zz%"), "a/b%zz%");
        assert!(parse_query(None).is_empty());
    }
}
