//! Routing: a request's method and path to its handler, after the token and the scope the
//! route needs (but for the web page and `/healthz`, served without one); `404` for an
//! unknown path, `405` for a method the route does not take.

use super::read::{
    list_jobs, list_source_files, read_history, read_item, read_job, read_page, revert_job, tasks,
};
use super::respond::{refuse, refuse_job, refuse_method, respond};
use super::upload::upload;
use super::{content, events, login, page, resumable};
use super::{Resolver, Stream};
use crate::auth::{delete_scope, ADMIN_SCOPE, JOBS_READ_SCOPE, SOURCES_READ_SCOPE};
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::window::ConnectionWindow;
use edge_proto::ErrorCode;
use edge_tasks::reads::Reads;
use edge_tasks::{Plugin, Registry};
use http::{Method, Request, StatusCode};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// A resource the server has, by path.
#[derive(Debug, Clone, Copy)]
enum Route<'a> {
    Health,
    /// `POST /v1/login`: a name and a password for a token.
    Login,
    /// `GET /v1/sources/files`: the server files jobs may read.
    SourceFiles,
    Tasks,
    /// A page of a plugin's items: `/v1/<task>`.
    Items(Reads),
    /// One item of a plugin: `/v1/<task>/{key}` (`DELETE` too, where items can be deleted).
    Item(&'static Plugin, Reads, &'a str),
    /// The versions of an item that jobs replaced: `/v1/<task>/{key}/history`.
    History(Reads, &'a str),
    /// `POST /v1/jobs/{id}/revert`: undo a job.
    Revert(&'a str),
    /// `GET /v1/jobs/{id}/events`: a job's events, replayed then live.
    JobEvents(&'a str),
    Jobs,
    /// `GET` one job's record; `PUT`/`POST` a job of the task named.
    Job(&'a str),
    /// A resumable job's upload resource, `/v1/uploads/{id}`: `HEAD` its offset, `PATCH`
    /// the rest of its body, `DELETE` to cancel it.
    Upload(&'a str),
}

impl<'a> Route<'a> {
    /// The route of a path's segments, `None` for a path the server does not have. A
    /// plugin's read endpoints are routes when the plugin has them.
    fn of(segments: &[&'a str], registry: &Registry) -> Option<Route<'a>> {
        Some(match segments {
            ["healthz"] => Route::Health,
            ["v1", "login"] => Route::Login,
            ["v1", "sources", "files"] => Route::SourceFiles,
            ["v1", "tasks"] => Route::Tasks,
            ["v1", "jobs"] => Route::Jobs,
            ["v1", "jobs", id_or_task] => Route::Job(id_or_task),
            ["v1", "jobs", id, "revert"] => Route::Revert(id),
            ["v1", "jobs", id, "events"] => Route::JobEvents(id),
            ["v1", "uploads", id] => Route::Upload(id),
            ["v1", task] => Route::Items(registry.find(task)?.reads?),
            ["v1", task, key] => {
                let plugin = registry.find(task)?;
                Route::Item(plugin, plugin.reads?, key)
            }
            ["v1", task, key, "history"] => {
                let reads = registry.find(task)?.reads?;
                reads.history?;
                Route::History(reads, key)
            }
            _ => return None,
        })
    }

    /// The methods the route takes, as an `Allow` header says them.
    fn allow(self) -> &'static str {
        match self {
            Route::Job(_) => "GET, HEAD, PUT, POST",
            Route::Upload(_) => "GET, HEAD, PATCH, DELETE",
            Route::Login => "POST",
            Route::Revert(_) => "POST",
            Route::Item(_, reads, _) if reads.delete.is_some() => "GET, HEAD, DELETE",
            _ => "GET, HEAD",
        }
    }

    fn allows(self, method: &Method) -> bool {
        match self {
            Route::Job(_) if method == Method::PUT || method == Method::POST => true,
            Route::Upload(_) if method == Method::PATCH || method == Method::DELETE => true,
            Route::Revert(_) | Route::Login => method == Method::POST,
            Route::Item(_, reads, _) if method == Method::DELETE => reads.delete.is_some(),
            _ => method == Method::GET || method == Method::HEAD,
        }
    }

    /// The scope this route needs beyond a valid token (an upload's is its task's, checked
    /// when the job starts).
    fn scope(self, method: &Method) -> Option<Cow<'static, str>> {
        match self {
            Route::Item(plugin, _, _) if method == Method::DELETE => {
                Some(Cow::Owned(delete_scope(plugin.name)))
            }
            Route::Items(reads) | Route::Item(_, reads, _) | Route::History(reads, _) => {
                Some(Cow::Borrowed(reads.scope))
            }
            Route::Revert(_) => Some(Cow::Borrowed(ADMIN_SCOPE)),
            Route::Jobs | Route::JobEvents(_) => Some(Cow::Borrowed(JOBS_READ_SCOPE)),
            Route::SourceFiles => Some(Cow::Borrowed(SOURCES_READ_SCOPE)),
            Route::Job(_) if method == Method::GET || method == Method::HEAD => {
                Some(Cow::Borrowed(JOBS_READ_SCOPE))
            }
            _ => None,
        }
    }
}

/// What a request's connection gives its handlers.
#[derive(Clone)]
pub(crate) struct Connection {
    /// The server.
    pub service: Arc<Service>,
    /// A QUIC connection's receive window, which an upload's body counts toward (HTTP/3).
    pub window: Option<Arc<ConnectionWindow>>,
    /// Cancelled once a request of the connection held a valid token.
    pub authorised: CancellationToken,
    /// The server's shutdown.
    pub shutdown: Shutdown,
    /// The client's address.
    pub peer: IpAddr,
}

/// Answers one HTTP/3 request: reads its headers, then [`route`]s it.
pub(super) async fn handle(resolver: Resolver, connection: Connection) {
    let (request, h3) = match resolver.resolve_request().await {
        Ok(resolved) => resolved,
        Err(e) => {
            debug!("unreadable request: {e}");
            return;
        }
    };
    let head = request.method() == Method::HEAD;
    route(request, Stream::h3(h3, head), connection).await
}

/// Answers one request, over any transport: checks its token, method and scope, and routes
/// it. `HEAD` is answered as `GET` without the body.
pub(crate) async fn route(request: Request<()>, mut stream: Stream, connection: Connection) {
    let Connection {
        service,
        window,
        authorised,
        shutdown,
        peer,
    } = connection;
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    debug!(%method, %path, "request");
    // The web page and its files need no token: the page asks its user for one.
    if let Some(asset) = page::find(&path) {
        return page::serve(&mut stream, &method, asset, request.headers()).await;
    }
    let route = Route::of(&segments, service.store.registry());
    if matches!(route, Some(Route::Health)) {
        if !Route::Health.allows(&method) {
            return refuse_method(&mut stream, &method, Route::Health.allow()).await;
        }
        let (healthy, body) = service.health(&shutdown);
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return respond(&mut stream, status, &body).await;
    }
    if matches!(route, Some(Route::Login)) {
        if !Route::Login.allows(&method) {
            return refuse_method(&mut stream, &method, Route::Login.allow()).await;
        }
        let content_type = request.headers().get("content-type");
        let content_type = content_type.and_then(|v| v.to_str().ok());
        return login::login(&mut stream, &service, content_type, peer).await;
    }
    // Everything but the health check and signing in needs a valid token, checked before
    // any body byte.
    let grant = match service.authorize(bearer(&request)) {
        Ok(grant) => grant,
        Err(e) => return refuse_job(&mut stream, &service, e.into()).await,
    };
    authorised.cancel();
    let Some(route) = route else {
        let message = format!("no such resource: {path}");
        return refuse(&mut stream, StatusCode::NOT_FOUND, "not_found", &message).await;
    };
    if !route.allows(&method) {
        return refuse_method(&mut stream, &method, route.allow()).await;
    }
    if let Some(scope) = route.scope(&method).filter(|scope| !grant.allows(scope)) {
        let message = format!(
            "the token of `{}` does not hold the scope `{scope}`",
            grant.sub
        );
        service.metrics.rejected(ErrorCode::Forbidden);
        return refuse(&mut stream, StatusCode::FORBIDDEN, "forbidden", &message).await;
    }
    let query = request.uri().query();
    match route {
        Route::Health | Route::Login => unreachable!("answered above"),
        Route::Tasks => {
            let tasks = tasks(service.store.registry());
            respond(&mut stream, StatusCode::OK, &tasks).await
        }
        Route::Items(reads) => read_page(&mut stream, &service, reads, query).await,
        Route::Item(_, reads, key) if method == Method::DELETE => {
            content::delete(&mut stream, &service, reads, percent_decode(key), &grant).await
        }
        Route::Item(_, reads, key) if reads.content.is_some() => {
            let headers = request.headers();
            content::serve(&mut stream, &service, reads, percent_decode(key), headers).await
        }
        Route::Item(_, reads, key) => {
            read_item(&mut stream, &service, reads, percent_decode(key)).await
        }
        Route::History(reads, key) => {
            read_history(&mut stream, &service, reads, percent_decode(key), query).await
        }
        Route::Revert(id) => revert_job(&mut stream, &service, percent_decode(id), &grant).await,
        Route::JobEvents(id) => {
            let (id, headers) = (percent_decode(id), request.headers());
            events::watch(&mut stream, &service, id, &grant, headers, query, &shutdown).await
        }
        Route::Jobs => list_jobs(&mut stream, &service, query, &grant).await,
        Route::SourceFiles => list_source_files(&mut stream, &service, query).await,
        Route::Job(task) if method == Method::PUT || method == Method::POST => {
            let task = percent_decode(task);
            upload(request, stream, task, grant, service, window, shutdown).await
        }
        Route::Job(id) => read_job(&mut stream, &service, percent_decode(id), &grant).await,
        Route::Upload(id) if method == Method::PATCH => {
            let id = percent_decode(id);
            resumable::append(request, stream, id, grant, service, window, shutdown).await
        }
        Route::Upload(id) if method == Method::DELETE => {
            resumable::cancel(&mut stream, &service, percent_decode(id), &grant).await
        }
        Route::Upload(id) => {
            resumable::offset(&mut stream, &service, percent_decode(id), &grant).await
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

/// `key=value` pairs of a query string, decoded as `application/x-www-form-urlencoded`
/// (`+` is a space, invalid escapes are kept as they are).
pub(super) fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// A path segment with its `%XX` escapes decoded (`+` stays `+`); invalid escapes are kept.
pub(super) fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
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
        assert_eq!(percent_decode("a%2Fb%zz%+c"), "a/b%zz%+c");
        assert!(parse_query(None).is_empty());
    }

    #[test]
    fn every_route_says_which_methods_it_takes() {
        let registry = Registry::builtin();
        let job = Route::of(&["v1", "jobs", "stats"], &registry).unwrap();
        assert!(matches!(job, Route::Job("stats")));
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::POST] {
            assert!(job.allows(&method), "{method}");
        }
        assert!(!job.allows(&Method::DELETE));
        for segments in [
            &["healthz"][..],
            &["v1", "tasks"],
            &["v1", "ports"],
            &["v1", "ports", "AEAJM"],
            &["v1", "jobs"],
        ] {
            let route = Route::of(segments, &registry).unwrap();
            assert!(route.allows(&Method::HEAD) && !route.allows(&Method::PUT));
            assert_eq!(route.allow(), "GET, HEAD");
        }
        assert!(Route::of(&["v1", "nothing"], &registry).is_none());
        assert!(
            Route::of(&["v1", "stats"], &registry).is_none(),
            "a task with nothing to read has no read route"
        );
        let port = Route::of(&["v1", "ports", "AEAJM"], &registry).unwrap();
        assert_eq!(port.scope(&Method::GET).as_deref(), Some("ports:read"));
        assert!(
            !port.allows(&Method::DELETE),
            "ports are not deleted one by one"
        );
        assert_eq!(job.scope(&Method::HEAD).as_deref(), Some("jobs:read"));
        assert_eq!(job.scope(&Method::PUT), None);
        let blob = Route::of(&["v1", "blobs", "cat.jpg"], &registry).unwrap();
        assert!(blob.allows(&Method::DELETE));
        assert_eq!(blob.allow(), "GET, HEAD, DELETE");
        assert_eq!(blob.scope(&Method::DELETE).as_deref(), Some("blobs:delete"));
        assert_eq!(blob.scope(&Method::GET).as_deref(), Some("blobs:read"));
    }
}
