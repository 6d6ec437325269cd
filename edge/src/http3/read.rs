//! The JSON read API: tasks, ports and job history, read from the store off the runtime.

use super::respond::{refuse, respond};
use super::routes::parse_query;
use super::Stream;
use crate::auth::Grant;
use crate::server::Service;
use edge_tasks::{history, ports, registry, Store, StoreError};
use http::StatusCode;
use serde_json::{json, Value};

/// Every task with its description, formats and record schema.
pub(super) fn tasks() -> Value {
    let tasks: Vec<Value> = registry::PLUGINS
        .iter()
        .map(|plugin| {
            json!({
                "name": plugin.name,
                "description": plugin.description,
                "formats": plugin.formats.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                "schema": serde_json::from_str::<Value>(plugin.schema).unwrap_or(Value::Null),
            })
        })
        .collect();
    json!({ "tasks": tasks })
}

pub(super) async fn read_port(stream: &mut Stream, service: &Service, code: String) {
    let not_found = format!("no port `{code}`");
    let lookup = move |store: &Store| Ok(ports::get(store, &code)?.map(|port| json!(port)));
    answer(stream, service, not_found, lookup).await
}

pub(super) async fn list_ports(stream: &mut Stream, service: &Service, query: Option<&str>) {
    let (mut country, mut after, mut limit) = (None, None, 100);
    for (key, value) in parse_query(query) {
        let parsed = match key.as_str() {
            "country" => {
                country = Some(value);
                Ok(())
            }
            "after" => {
                after = Some(value);
                Ok(())
            }
            "limit" => parse_limit(&value, ports::MAX_PAGE).map(|n| limit = n),
            other => Err(format!(
                "unknown parameter `{other}` (use country, limit, after)"
            )),
        };
        if let Err(message) = parsed {
            return refuse(stream, StatusCode::BAD_REQUEST, "bad_params", &message).await;
        }
    }
    let list = move |store: &Store| {
        let query = ports::ListQuery {
            country: country.as_deref(),
            after: after.as_deref(),
            limit,
        };
        let page = ports::list(store, &query)?;
        let items: Vec<Value> = page
            .items
            .iter()
            .map(|(key, port)| json!({"key": key, "port": port}))
            .collect();
        Ok(Some(json!({"items": items, "next": page.next})))
    };
    answer(stream, service, String::new(), list).await
}

pub(super) async fn read_job(stream: &mut Stream, service: &Service, id: String, grant: &Grant) {
    let not_found = format!("no job `{id}`");
    // Others' jobs do not exist for a token that is not an administrator's.
    let sub = (!grant.is_admin()).then(|| grant.sub.clone());
    let lookup = move |store: &Store| {
        let record = history::get(store, &id)?;
        let visible = record.filter(|r| sub.is_none() || r.sub == sub);
        Ok(visible.map(|record| json!(record)))
    };
    answer(stream, service, not_found, lookup).await
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
    let list = move |store: &Store| {
        let (items, next) = history::list(store, before.as_deref(), limit, sub.as_deref())?;
        Ok(Some(json!({"items": items, "next": next})))
    };
    answer(stream, service, String::new(), list).await
}

/// A page size from 1 to `max`.
fn parse_limit(value: &str, max: usize) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("`limit` must be a number from 1 to {max}")),
    }
}

/// Answers with what `read` finds in the store (run off the async runtime): `200` with it,
/// `404` with `not_found` when it finds nothing, `500` when the store fails.
async fn answer<F>(stream: &mut Stream, service: &Service, not_found: String, read: F)
where
    F: FnOnce(&Store) -> Result<Option<Value>, StoreError> + Send + 'static,
{
    let store = service.store.clone();
    match tokio::task::spawn_blocking(move || read(&store)).await {
        Ok(Ok(Some(body))) => respond(stream, StatusCode::OK, &body).await,
        Ok(Ok(None)) => refuse(stream, StatusCode::NOT_FOUND, "not_found", &not_found).await,
        Ok(Err(e)) => {
            refuse(
                stream,
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                &e.to_string(),
            )
            .await
        }
        Err(_) => {
            refuse(
                stream,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the read failed",
            )
            .await
        }
    }
}
