//! The JSON read API: the tasks, each plugin's items (through its [`Reads`]) and the job
//! history, read from the store off the runtime.

use super::respond::{refuse, respond};
use super::routes::parse_query;
use super::Stream;
use crate::auth::Grant;
use crate::service::Service;
use edge_tasks::reads::{ReadError, Reads};
use edge_tasks::task::JobRef;
use edge_tasks::{history, Context, Registry};
use http::StatusCode;
use serde_json::{json, Value};

/// Every task with its description, formats, record schema and read endpoints.
pub(super) fn tasks(registry: &Registry) -> Value {
    let tasks: Vec<Value> = registry
        .plugins()
        .map(|plugin| {
            json!({
                "name": plugin.name,
                "description": plugin.description,
                "formats": plugin.formats.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                "schema": serde_json::from_str::<Value>(plugin.schema).unwrap_or(Value::Null),
                "reads": plugin.reads.map(|reads| reads.info()),
            })
        })
        .collect();
    json!({ "tasks": tasks })
}

/// `GET /v1/<task>/{key}`: one item of a plugin.
pub(super) async fn read_item(stream: &mut Stream, service: &Service, reads: Reads, key: String) {
    answer(stream, service, move |context| {
        reads.read_one(context, &key)
    })
    .await
}

/// `GET /v1/<task>?...`: a page of a plugin's items.
pub(super) async fn read_page(
    stream: &mut Stream,
    service: &Service,
    reads: Reads,
    query: Option<&str>,
) {
    let params = parse_query(query);
    answer(stream, service, move |context| {
        reads.read_page(context, &params)
    })
    .await
}

/// `GET /v1/<task>/{key}/history?...`: a page of an item's replaced versions, newest first.
pub(super) async fn read_history(
    stream: &mut Stream,
    service: &Service,
    reads: Reads,
    key: String,
    query: Option<&str>,
) {
    let params = parse_query(query);
    answer(stream, service, move |context| {
        reads.read_history(context, &key, &params)
    })
    .await
}

/// `POST /v1/jobs/{id}/revert` (scope `admin`): undoes the job through its task's plugin, as
/// a new job id run by the token's subject; answers the plugin's report.
pub(super) async fn revert_job(stream: &mut Stream, service: &Service, id: String, grant: &Grant) {
    let by = JobRef {
        id: crate::jobs::new_job_id(service.store.slot()),
        sub: grant.sub.clone(),
    };
    tracing::info!(job = %id, by = %by.id, sub = %by.sub, "reverting a job");
    answer(stream, service, move |context| {
        history::revert(context, &id, &by)
    })
    .await
}

pub(super) async fn read_job(stream: &mut Stream, service: &Service, id: String, grant: &Grant) {
    // Others' jobs do not exist for a token that is not an administrator's.
    let sub = (!grant.is_admin()).then(|| grant.sub.clone());
    let lookup = move |context: &Context| {
        let record = history::get(&context.store, &id)?;
        let visible = record.filter(|r| sub.is_none() || r.sub == sub);
        visible
            .map(|record| json!(record))
            .ok_or_else(|| ReadError::NotFound(format!("no job `{id}`")))
    };
    answer(stream, service, lookup).await
}

pub(super) async fn list_jobs(
    stream: &mut Stream,
    service: &Service,
    query: Option<&str>,
    grant: &Grant,
) {
    let sub = (!grant.is_admin()).then(|| grant.sub.clone());
    let (mut before, mut limit) = (None, 100);
    for (key, value) in parse_query(query) {
        let parsed = match key.as_str() {
            "before" => {
                before = Some(value);
                Ok(())
            }
            "limit" => parse_limit(&value, history::MAX_PAGE).map(|n| limit = n),
            other => Err(format!("unknown parameter `{other}` (use limit, before)")),
        };
        if let Err(message) = parsed {
            return refuse(stream, StatusCode::BAD_REQUEST, "bad_params", &message).await;
        }
    }
    let list = move |context: &Context| {
        let (items, next) =
            history::list(&context.store, before.as_deref(), limit, sub.as_deref())?;
        Ok(json!({"items": items, "next": next}))
    };
    answer(stream, service, list).await
}

/// `GET /v1/sources/files?dir=&limit=&after=` (scope `sources:read`): the files and folders
/// in an allowed folder that jobs may read (`source=file:<name>`), in name order; without
/// `dir`, the allowed folders.
pub(super) async fn list_source_files(stream: &mut Stream, service: &Service, query: Option<&str>) {
    let (mut dir, mut after, mut limit) = (String::new(), None, 100);
    for (key, value) in parse_query(query) {
        let parsed = match key.as_str() {
            "dir" => {
                dir = value;
                Ok(())
            }
            "after" => {
                after = Some(value).filter(|a| !a.is_empty());
                Ok(())
            }
            "limit" => parse_limit(&value, 1000).map(|n| limit = n),
            other => Err(format!(
                "unknown parameter `{other}` (use dir, limit, after)"
            )),
        };
        if let Err(message) = parsed {
            return refuse(stream, StatusCode::BAD_REQUEST, "bad_params", &message).await;
        }
    }
    let folders = service.sources.folders.clone();
    let list = move |_: &Context| {
        let entries = folders
            .list(&dir)
            .map_err(|e| ReadError::NotFound(e.to_string()))?;
        let mut items: Vec<_> = entries
            .into_iter()
            .filter(|e| after.as_ref().is_none_or(|after| e.name > *after))
            .take(limit + 1)
            .collect();
        let next = (items.len() > limit).then(|| {
            items.truncate(limit);
            items.last().map(|e| e.name.clone())
        });
        Ok(json!({"items": items, "next": next.flatten()}))
    };
    answer(stream, service, list).await
}

/// A page size from 1 to `max`.
fn parse_limit(value: &str, max: usize) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("`limit` must be a number from 1 to {max}")),
    }
}

/// Answers with what `read` finds in the store (run off the async runtime): `200` with it,
/// or the refusal [`read_failure`] gives.
pub(super) async fn answer<F>(stream: &mut Stream, service: &Service, read: F)
where
    F: FnOnce(&Context) -> Result<Value, ReadError> + Send + 'static,
{
    let context = service.context();
    let (status, code, message) = match tokio::task::spawn_blocking(move || read(&context)).await {
        Ok(Ok(body)) => return respond(stream, StatusCode::OK, &body).await,
        Ok(Err(e)) => read_failure(e),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the read failed".to_owned(),
        ),
    };
    refuse(stream, status, code, &message).await
}

/// The refusal for a read that failed: `404` when there is nothing, `400` for a bad
/// parameter, `409` for a conflict, `503` when the store is away (PostgreSQL down), `500`
/// when the store fails.
pub(super) fn read_failure(e: ReadError) -> (StatusCode, &'static str, String) {
    match e {
        ReadError::Store(e) if e.is_unavailable() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        ),
        ReadError::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message),
        ReadError::BadParams(message) => (StatusCode::BAD_REQUEST, "bad_params", message),
        ReadError::Conflict(message) => (StatusCode::CONFLICT, "conflict", message),
        e => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            e.to_string(),
        ),
    }
}
