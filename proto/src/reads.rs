//! How a task's stored items are read back: the description of its read endpoints that
//! `GET /v1/tasks` carries, and the table the read commands print (`edge <task> list`,
//! `edge-client <task> list`), written once for both.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

/// The page size when a request (or a read command) gives no `limit`.
pub const DEFAULT_PAGE: usize = 100;

/// The query parameters every list endpoint takes besides the task's own filters.
pub const PAGE_PARAMS: [&str; 2] = ["limit", "after"];

/// A task's read endpoints: `GET /v1/<task>/{key}` (one item) and `GET /v1/<task>?...` (a page
/// of items in key order, `{"items":[...],"next":...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadsInfo {
    /// The scope a token needs to read, e.g. `ports:read`.
    pub scope: Cow<'static, str>,
    /// What one item is called, e.g. `port` (for messages: "no port `X`").
    pub item: Cow<'static, str>,
    /// The list endpoint's filters (query parameters besides `limit` and `after`).
    pub filters: Cow<'static, [Filter]>,
    /// The largest `limit`.
    pub max_page: usize,
    /// The columns a list is printed with, for people.
    pub columns: Cow<'static, [Column]>,
    /// Whether `GET /v1/<task>/{key}/history` serves the versions jobs replaced (items
    /// `{"job","sub","time","replaced"}`, newest first).
    #[serde(default)]
    pub history: bool,
    /// Whether items are files: `GET /v1/<task>/{key}` streams an item's bytes (with its
    /// `Content-Type`, `ETag`, `Last-Modified`; `Range` and `If-None-Match` honoured), and the
    /// read commands' `get KEY -o FILE` saves them.
    #[serde(default)]
    pub content: bool,
    /// Whether `DELETE /v1/<task>/{key}` (scope `<task>:delete`) removes an item, and the read
    /// commands have `rm KEY`.
    #[serde(default)]
    pub delete: bool,
}

/// A filter of a list endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// The query parameter (and the read commands' `--NAME` option), e.g. `country`.
    pub name: Cow<'static, str>,
    /// What it keeps, for help texts.
    pub help: Cow<'static, str>,
}

impl Filter {
    /// A filter, in a `const`.
    pub const fn new(name: &'static str, help: &'static str) -> Filter {
        Filter {
            name: Cow::Borrowed(name),
            help: Cow::Borrowed(help),
        }
    }
}

/// A column of the table a list is printed as: a header and where the cell's value is in
/// each item (a JSON pointer, RFC 6901).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column's header, e.g. `NAME`.
    pub header: Cow<'static, str>,
    /// The JSON pointer into an item, e.g. `/port/name`.
    pub pointer: Cow<'static, str>,
}

impl Column {
    /// A column, in a `const`.
    pub const fn new(header: &'static str, pointer: &'static str) -> Column {
        Column {
            header: Cow::Borrowed(header),
            pointer: Cow::Borrowed(pointer),
        }
    }
}

/// A page of items as a table: a header line, then one line per item, each column as wide as
/// its widest cell. A missing or null value prints as `-`, a list of values as its items
/// joined by `,`, text as it is (tabs and line breaks as spaces, so that one item stays one
/// line).
pub fn table(columns: &[Column], items: &[Value]) -> Vec<String> {
    let header = columns.iter().map(|c| c.header.to_string()).collect();
    let rows = items.iter().map(|item| {
        columns
            .iter()
            .map(|column| cell(item.pointer(&column.pointer)))
            .collect()
    });
    align(std::iter::once(header).chain(rows).collect())
}

/// Rows of cells as lines whose columns line up: each column as wide as its widest cell, two
/// spaces between columns, nothing after the last.
pub fn align(rows: Vec<Vec<String>>) -> Vec<String> {
    let mut widths: Vec<usize> = Vec::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            line
        })
        .collect()
}

fn cell(value: Option<&Value>) -> String {
    let text = match value {
        None | Some(Value::Null) => return "-".into(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| cell(Some(item)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    };
    text.replace(['\t', '\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILTERS: &[Filter] = &[Filter::new("country", "only this country")];
    const KEY_COLUMN: &[Column] = &[Column::new("KEY", "/key")];

    #[test]
    fn a_page_prints_one_line_per_item_under_its_headers() {
        const COLUMNS: &[Column] = &[
            Column::new("KEY", "/key"),
            Column::new("NAME", "/port/name"),
            Column::new("COUNTRY", "/port/country"),
            Column::new("COORDINATES", "/port/coordinates"),
        ];
        let items = [
            json!({"key": "AEAJM", "port": {"name": "Ajman", "country": "UAE", "coordinates": [55.5, 25.4]}}),
            json!({"key": "X", "port": {"name": "two\tlines\nhere", "country": null}}),
        ];
        assert_eq!(
            table(COLUMNS, &items),
            [
                "KEY    NAME            COUNTRY  COORDINATES",
                "AEAJM  Ajman           UAE      55.5,25.4",
                "X      two lines here  -        -",
            ]
        );
    }

    #[test]
    fn the_description_reads_back_as_it_was_written() {
        let info = ReadsInfo {
            scope: "ports:read".into(),
            item: "port".into(),
            filters: Cow::Borrowed(FILTERS),
            max_page: 1000,
            columns: Cow::Borrowed(KEY_COLUMN),
            history: true,
            content: false,
            delete: false,
        };
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<ReadsInfo>(&json).unwrap(), info);
    }
}
