//! A plugin's read endpoints: what it declares ([`Reads`]), and the one place that turns a
//! request for them (a key, or query parameters) into an answer. The HTTP/3 API
//! (`GET /v1/<task>/{key}`, `GET /v1/<task>?...`), `edge <task> get|list` (the store file,
//! offline) and, through the API, `edge-client <task> get|list` all answer through here.

use crate::store::StoreError;
use crate::task::{Context, JobRef};
use bytes::Bytes;
use edge_proto::reads::{Column, Filter, ReadsInfo, DEFAULT_PAGE, PAGE_PARAMS};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::ops::Range;
use std::time::SystemTime;

/// Reads one item by key: `Ok(None)` when there is none; [`ReadError::BadParams`] for a key
/// that cannot name one.
pub type ReadOne = fn(context: &Context, key: &str) -> Result<Option<Value>, ReadError>;

/// Reads one page of items in key order.
pub type ReadPage = fn(context: &Context, request: &PageRequest<'_>) -> Result<Page, ReadError>;

/// Reads one page of an item's history, newest first: items `{"job","sub","time","replaced"}`
/// (`request.after` is the `job` of the previous page's last item).
pub type ReadHistory =
    fn(context: &Context, key: &str, request: &PageRequest<'_>) -> Result<Page, ReadError>;

/// Opens an item's bytes, for a plugin whose items are files: `Ok(None)` when there is none.
/// What it returns reads one snapshot: a replacement stored meanwhile is not mixed in.
pub type OpenContent =
    fn(context: &Context, key: &str) -> Result<Option<Box<dyn Content>>, ReadError>;

/// Deletes one item as `by` (`DELETE /v1/<task>/{key}`, scope `<task>:delete`): its report,
/// or `Ok(None)` when there is none.
pub type DeleteItem =
    fn(context: &Context, key: &str, by: &JobRef) -> Result<Option<Value>, ReadError>;

/// The bytes of one stored file and what HTTP says of them.
pub trait Content: Send {
    /// Its size, type, entity tag and time.
    fn info(&self) -> &ContentInfo;

    /// Reads the bytes in `range` (within `0..size`) in order, in pieces of any size, handing
    /// each to `out`; stops early when `out` returns `false` (the reader went away).
    fn read(
        &mut self,
        range: Range<u64>,
        out: &mut dyn FnMut(Bytes) -> bool,
    ) -> Result<(), ReadError>;
}

/// What HTTP says of a stored file: `Content-Length`, `Content-Type`, `ETag`,
/// `Last-Modified`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentInfo {
    /// Its size in bytes.
    pub size: u64,
    /// Its media type, e.g. `image/jpeg`.
    pub content_type: String,
    /// A strong entity tag, without the quotes (the digest of its bytes).
    pub etag: String,
    /// When it was stored.
    pub modified: SystemTime,
}

/// What a plugin offers to read back its items.
#[derive(Debug, Clone, Copy)]
pub struct Reads {
    /// The scope a token needs, e.g. `ports:read`.
    pub scope: &'static str,
    /// What one item is called, e.g. `port`.
    pub item: &'static str,
    /// The filters the list takes (query parameters besides `limit` and `after`).
    pub filters: &'static [Filter],
    /// The largest page.
    pub max_page: usize,
    /// The columns a page is printed with (`edge <task> list`, `edge-client <task> list`).
    pub columns: &'static [Column],
    /// `GET /v1/<task>/{key}`: the item as JSON.
    pub one: ReadOne,
    /// `GET /v1/<task>?...`: a page of items as JSON, in key order.
    pub page: ReadPage,
    /// `GET /v1/<task>/{key}/history?limit=&after=`: the versions of an item that jobs
    /// replaced, newest first, if the task keeps them.
    pub history: Option<ReadHistory>,
    /// For items that are files: `GET /v1/<task>/{key}` streams the item's bytes (with
    /// `Range` and `If-None-Match`) instead of answering JSON, and `get KEY -o FILE` saves
    /// them; [`Reads::one`] then answers the item's description (the list's items).
    pub content: Option<OpenContent>,
    /// `DELETE /v1/<task>/{key}` (scope `<task>:delete`) and `rm KEY`, if items can be
    /// deleted one by one.
    pub delete: Option<DeleteItem>,
}

/// A request for a page, checked against the plugin's [`Reads`].
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<'a> {
    filters: &'a [(String, String)],
    /// Only keys strictly after this one (the previous page's `next`).
    pub after: Option<&'a str>,
    /// The page size, 1 to the plugin's `max_page`.
    pub limit: usize,
}

impl PageRequest<'_> {
    /// The value of filter `name`, when the request gives it.
    pub fn filter(&self, name: &str) -> Option<&str> {
        self.filters
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One page of items.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The items, in key order.
    pub items: Vec<Value>,
    /// The cursor for the next page (`after`), or `None` on the last page.
    pub next: Option<String>,
}

/// Why a read has no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Nothing is stored under the key (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// A query parameter is unknown or out of range (HTTP 400 `bad_params`).
    #[error("{0}")]
    BadParams(String),
    /// What was asked cannot be done in the present state, e.g. reverting a job that still
    /// runs (HTTP 409 `conflict`).
    #[error("{0}")]
    Conflict(String),
    /// The store failed (HTTP 500 `store_error`).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Reads {
    /// The description `GET /v1/tasks` gives of these endpoints.
    pub fn info(&self) -> ReadsInfo {
        ReadsInfo {
            scope: Cow::Borrowed(self.scope),
            item: Cow::Borrowed(self.item),
            filters: Cow::Borrowed(self.filters),
            max_page: self.max_page,
            columns: Cow::Borrowed(self.columns),
            history: self.history.is_some(),
            content: self.content.is_some(),
            delete: self.delete.is_some(),
        }
    }

    /// A page of an item's history, `{"items":[...],"next":...}` (newest first), for query
    /// parameters `limit` and `after`; [`ReadError::NotFound`] when the task keeps none.
    pub fn read_history(
        &self,
        context: &Context,
        key: &str,
        params: &[(String, String)],
    ) -> Result<Value, ReadError> {
        let Some(history) = self.history else {
            return Err(ReadError::NotFound(format!(
                "{}s have no history",
                self.item
            )));
        };
        let request = self.request(params, &[])?;
        let page = history(context, key, &request)?;
        Ok(json!({"items": page.items, "next": page.next}))
    }

    /// One item by key, or [`ReadError::NotFound`] naming it.
    pub fn read_one(&self, context: &Context, key: &str) -> Result<Value, ReadError> {
        (self.one)(context, key)?
            .ok_or_else(|| ReadError::NotFound(format!("no {} `{key}`", self.item)))
    }

    /// A page of items, `{"items":[...],"next":...}`, for query parameters `params` (already
    /// percent-decoded): `limit`, `after` and the plugin's filters; anything else is refused
    /// with a message that lists what is taken.
    pub fn read_page(
        &self,
        context: &Context,
        params: &[(String, String)],
    ) -> Result<Value, ReadError> {
        let request = self.request(params, self.filters)?;
        let page = (self.page)(context, &request)?;
        Ok(json!({"items": page.items, "next": page.next}))
    }

    /// The page `params` ask for: `limit`, `after` and `filters`; anything else is refused
    /// with a message that lists what is taken.
    fn request<'p>(
        &self,
        params: &'p [(String, String)],
        filters: &[Filter],
    ) -> Result<PageRequest<'p>, ReadError> {
        let mut after = None;
        let mut limit = DEFAULT_PAGE.min(self.max_page);
        for (key, value) in params {
            match key.as_str() {
                "after" => after = Some(value.as_str()),
                "limit" => limit = self.limit(value)?,
                name if filters.iter().any(|f| f.name == name) => {}
                other => {
                    let taken: Vec<&str> = filters
                        .iter()
                        .map(|f| f.name.as_ref())
                        .chain(PAGE_PARAMS)
                        .collect();
                    return Err(ReadError::BadParams(format!(
                        "unknown parameter `{other}` (use {})",
                        taken.join(", ")
                    )));
                }
            }
        }
        Ok(PageRequest {
            filters: params,
            after,
            limit,
        })
    }

    fn limit(&self, value: &str) -> Result<usize, ReadError> {
        match value.parse::<usize>() {
            Ok(n) if (1..=self.max_page).contains(&n) => Ok(n),
            _ => Err(ReadError::BadParams(format!(
                "`limit` must be a number from 1 to {}",
                self.max_page
            ))),
        }
    }
}
