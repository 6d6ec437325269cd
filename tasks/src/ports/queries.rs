//! Reading ports back: one by key, pages in key order (optionally of one country), the count;
//! and the plugin's read endpoints on top of them.

use super::model::Port;
use super::{MAX_PAGE, PORTS};
use crate::reads::{self, PageRequest, ReadError};
use crate::store::{Kind, Store, StoreError};
use crate::task::Context;
use redb::ReadableTableMetadata;
use serde_json::{json, Value};

/// The port stored under `code`, if any.
pub fn get(store: &Store, code: &str) -> Result<Option<Port>, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return super::postgres::get(pg, code);
    }
    let txn = store.read()?;
    let table = txn
        .open_table(PORTS)
        .map_err(StoreError::redb("open ports table"))?;
    let value = table.get(code).map_err(StoreError::redb("read port"))?;
    value.map(|v| v.value().decode(code)).transpose()
}

/// `GET /v1/ports/{code}`: the port as JSON.
pub(super) fn read_one(context: &Context, code: &str) -> Result<Option<Value>, ReadError> {
    Ok(get(&context.store, code)?.map(|port| json!(port)))
}

/// `GET /v1/ports?country=&limit=&after=`: items `{"key", "port"}`.
pub(super) fn read_page(
    context: &Context,
    request: &PageRequest<'_>,
) -> Result<reads::Page, ReadError> {
    let query = ListQuery {
        country: request.filter("country"),
        after: request.after,
        limit: request.limit,
    };
    let page = list(&context.store, &query)?;
    let items = page
        .items
        .iter()
        .map(|(key, port)| json!({"key": key, "port": port}))
        .collect();
    Ok(reads::Page {
        items,
        next: page.next,
    })
}

/// What [`list`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListQuery<'a> {
    /// Only ports of this country (exact, case-insensitive).
    pub country: Option<&'a str>,
    /// Only keys strictly after this one (the previous page's `next`).
    pub after: Option<&'a str>,
    /// Page size, clamped to 1..=[`MAX_PAGE`].
    pub limit: usize,
}

/// One page of ports in key order.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// (key, port) pairs in key order.
    pub items: Vec<(String, Port)>,
    /// The cursor for the next page (`after`), or `None` on the last page.
    pub next: Option<String>,
}

/// A page of ports in key order.
pub fn list(store: &Store, query: &ListQuery<'_>) -> Result<Page, StoreError> {
    let limit = query.limit.clamp(1, MAX_PAGE);
    if let Kind::Postgres(pg) = store.kind() {
        return list_postgres(pg, query, limit);
    }
    let txn = store.read()?;
    let table = txn
        .open_table(PORTS)
        .map_err(StoreError::redb("open ports table"))?;
    let range = match query.after {
        Some(after) => {
            table.range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
        }
        None => table.range::<&str>(..),
    }
    .map_err(StoreError::redb("list ports"))?;
    let mut items = Vec::new();
    for entry in range {
        let (key, value) = entry.map_err(StoreError::redb("list ports"))?;
        let key = key.value();
        let port = value.value().decode(key)?;
        if !wanted(&port, query.country) {
            continue;
        }
        if items.len() == limit {
            // One more exists: the page is full and the last key is the cursor.
            let next = items.last().map(|(k, _): &(String, Port)| k.clone());
            return Ok(Page { items, next });
        }
        items.push((key.to_owned(), port));
    }
    Ok(Page { items, next: None })
}

/// [`list`] in a PostgreSQL store: ports in key order, a screenful at a time, filtered here
/// (the values are the codec's bytes, as in redb).
fn list_postgres(
    pg: &crate::store::Pg,
    query: &ListQuery<'_>,
    limit: usize,
) -> Result<Page, StoreError> {
    let mut items: Vec<(String, Port)> = Vec::new();
    let mut after = query.after.map(str::to_owned);
    loop {
        let chunk = super::postgres::scan(pg, after.as_deref(), MAX_PAGE + 1)?;
        let ended = chunk.len() <= MAX_PAGE;
        after = chunk.last().map(|(key, _)| key.clone());
        for (key, port) in chunk {
            if !wanted(&port, query.country) {
                continue;
            }
            if items.len() == limit {
                let next = items.last().map(|(k, _)| k.clone());
                return Ok(Page { items, next });
            }
            items.push((key, port));
        }
        if ended {
            return Ok(Page { items, next: None });
        }
    }
}

/// Whether `port` is of `country` (any port when `None`).
fn wanted(port: &Port, country: Option<&str>) -> bool {
    country.is_none_or(|c| {
        port.country
            .as_deref()
            .is_some_and(|pc| same_country(pc, c))
    })
}

/// Whether two country names are equal ignoring case, non-ASCII letters included
/// ("Côte d'Ivoire" = "CÔTE D'IVOIRE"), without allocating.
fn same_country(stored: &str, wanted: &str) -> bool {
    stored.eq_ignore_ascii_case(wanted)
        || stored
            .chars()
            .flat_map(char::to_lowercase)
            .eq(wanted.chars().flat_map(char::to_lowercase))
}

/// How many ports the store holds.
pub fn count(store: &Store) -> Result<u64, StoreError> {
    if let Kind::Postgres(pg) = store.kind() {
        return super::postgres::count(pg);
    }
    let txn = store.read()?;
    let table = txn
        .open_table(PORTS)
        .map_err(StoreError::redb("open ports table"))?;
    table.len().map_err(StoreError::redb("count ports"))
}
