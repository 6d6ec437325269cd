//! The `ports` plugin: sea-port records upserted into the store, keyed by UN/LOCODE.
//!
//! Records are validated and encoded as they arrive (in the binary form that
//! `ports/codec.rs` documents) and appended to a batch. [`Task::start_commit`] sorts the batch
//! by key and hands it to the store's writer, which writes it in its next transaction; the
//! job decodes on meanwhile. Only once that commit returned does [`Task::finish_commit`] count
//! the batch as inserted, updated or unchanged.

use crate::reads::{self, PageRequest, Reads};
use crate::record::{Body, CsvRow, Record, Rejection};
use crate::store::{Change, Store, StoreError, Sync, Ticket};
use crate::table::Storage;
use crate::task::{Context, ParamError, Plugin, Task, TaskError};
use edge_proto::reads::{Column, Filter};
use edge_proto::{ErrorCode, Format, Summary};
use redb::ReadableTableMetadata;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

mod codec;
mod stored;
pub use stored::StoredPort;
pub(crate) use stored::PORTS;

/// The longest key accepted, in bytes.
const MAX_KEY_BYTES: usize = 64;

/// The largest page [`list`] returns.
pub const MAX_PAGE: usize = 1000;

/// The plugin's registration.
pub const PLUGIN: Plugin = Plugin {
    name: "ports",
    description: "Upserts sea-port records into the store, keyed by UN/LOCODE (the object key, or unlocs[0] for array, NDJSON and CSV records); counts inserted, updated and unchanged. CSV: the header names the fields; coordinates as lon and lat columns or one \"lon,lat\" cell; alias, regions and unlocs separated by ;.",
    formats: &[Format::Json, Format::Ndjson, Format::Csv],
    schema: SCHEMA,
    create,
    storage: Storage {
        version: stored::VERSION,
        tables: &[&PORTS],
        migrate: Some(stored::migrate),
    },
    reads: Some(Reads {
        scope: "ports:read",
        item: "port",
        filters: &[Filter::new(
            "country",
            "only ports of this country (exact, case-insensitive), e.g. \"United Arab Emirates\"",
        )],
        max_page: MAX_PAGE,
        columns: &[
            Column::new("KEY", "/key"),
            Column::new("NAME", "/port/name"),
            Column::new("COUNTRY", "/port/country"),
            Column::new("COORDINATES", "/port/coordinates"),
        ],
        one: read_one,
        page: read_page,
    }),
};

const SCHEMA: &str = r#"{
  "type": "object",
  "required": ["name"],
  "additionalProperties": false,
  "properties": {
    "name": {"type": "string", "minLength": 1},
    "city": {"type": "string"},
    "country": {"type": "string"},
    "province": {"type": "string"},
    "timezone": {"type": "string"},
    "code": {"type": "string"},
    "alias": {"type": "array", "items": {"type": "string"}},
    "regions": {"type": "array", "items": {"type": "string"}},
    "unlocs": {"type": "array", "items": {"type": "string"}},
    "coordinates": {"type": "array", "prefixItems": [
      {"type": "number", "minimum": -180, "maximum": 180, "description": "longitude"},
      {"type": "number", "minimum": -90, "maximum": 90, "description": "latitude"}
    ], "minItems": 2, "maxItems": 2}
  }
}"#;

/// One sea port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// The port's name (required).
    pub name: String,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Other names.
    #[serde(default)]
    pub alias: Vec<String>,
    /// Regions.
    #[serde(default)]
    pub regions: Vec<String>,
    /// `[longitude, latitude]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<[f64; 2]>,
    /// Province or state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province: Option<String>,
    /// IANA time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// UN/LOCODEs of the port.
    #[serde(default)]
    pub unlocs: Vec<String>,
    /// A numeric code, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// A port as it arrives, its strings borrowed from the record (copied only when they hold an
/// escape): the fast path from JSON to the stored form, with no allocation per field. Same
/// fields as [`Port`]. A record it refuses is parsed again as a [`Port`], which names what is
/// wrong.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArrivingPort<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(default, borrow)]
    city: Option<Text<'a>>,
    #[serde(default, borrow)]
    country: Option<Text<'a>>,
    #[serde(default, borrow)]
    alias: Vec<Text<'a>>,
    #[serde(default, borrow)]
    regions: Vec<Text<'a>>,
    #[serde(default)]
    coordinates: Option<[f64; 2]>,
    #[serde(default, borrow)]
    province: Option<Text<'a>>,
    #[serde(default, borrow)]
    timezone: Option<Text<'a>>,
    #[serde(default, borrow)]
    unlocs: Vec<Text<'a>>,
    #[serde(default, borrow)]
    code: Option<Text<'a>>,
}

impl<'a> ArrivingPort<'a> {
    fn fields(&self) -> codec::Fields<'_, Text<'a>> {
        codec::Fields {
            name: self.name.as_ref(),
            city: self.city.as_ref().map(AsRef::as_ref),
            country: self.country.as_ref().map(AsRef::as_ref),
            alias: &self.alias,
            regions: &self.regions,
            coordinates: self.coordinates,
            province: self.province.as_ref().map(AsRef::as_ref),
            timezone: self.timezone.as_ref().map(AsRef::as_ref),
            unlocs: &self.unlocs,
            code: self.code.as_ref().map(AsRef::as_ref),
        }
    }
}

/// A JSON string borrowed from the record, or decoded into its own buffer when it holds an
/// escape (serde's own `Cow<str>` never borrows inside an `Option` or a `Vec`).
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Text<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E>(self, text: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

/// Checks what the type cannot: a non-blank name and coordinates in range.
fn validate(name: &str, coordinates: Option<[f64; 2]>) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("field `name` must not be empty".into());
    }
    if let Some([lon, lat]) = coordinates {
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(format!(
                "field `coordinates`: longitude {lon} is outside [-180, 180]"
            ));
        }
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(format!(
                "field `coordinates`: latitude {lat} is outside [-90, 90]"
            ));
        }
    }
    Ok(())
}

impl Port {
    /// Its fields, borrowed, for the encoder.
    fn fields(&self) -> codec::Fields<'_, String> {
        codec::Fields {
            name: &self.name,
            city: self.city.as_deref(),
            country: self.country.as_deref(),
            alias: &self.alias,
            regions: &self.regions,
            coordinates: self.coordinates,
            province: self.province.as_deref(),
            timezone: self.timezone.as_deref(),
            unlocs: &self.unlocs,
            code: self.code.as_deref(),
        }
    }
}

fn create(params: &Map<String, Value>, context: &Context) -> Result<Box<dyn Task>, ParamError> {
    if let Some(name) = params.keys().next() {
        return Err(ParamError(format!(
            "task `ports` takes no parameters (got `{name}`)"
        )));
    }
    Ok(Box::new(PortsTask {
        store: context.store.clone(),
        batch: Batch::default(),
        in_flight: None,
        spare: None,
        totals: Counts::default(),
    }))
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    inserted: u64,
    updated: u64,
    unchanged: u64,
}

/// One `ports` job.
struct PortsTask {
    store: Store,
    /// Accepted records not yet handed to the store.
    batch: Batch,
    /// The commit running in the store's writer, if any, and the batch it writes.
    in_flight: Option<(Ticket<Counts>, Arc<Batch>)>,
    /// The last written batch, emptied, to fill next: two buffers take turns, so a long job
    /// allocates its batches once.
    spare: Option<Batch>,
    /// Counts of committed batches.
    totals: Counts,
}

impl Task for PortsTask {
    fn record(&mut self, record: &Record<'_>) -> Result<(), Rejection> {
        let from_csv;
        let bytes = match record.body {
            Body::Json(bytes) => bytes,
            Body::Csv(row) => {
                from_csv = csv_to_json(&row)?;
                from_csv.as_slice()
            }
            Body::Text(_) => return Err(Rejection::invalid("a port record must be a JSON object")),
        };
        // The record is checked as UTF-8 once, in one pass; parsing it as `str` then skips
        // serde_json's check of every string on its own.
        let fast = std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| serde_json::from_str::<ArrivingPort<'_>>(text).ok());
        if let Some(port) = fast {
            return self.batch.push(record.key, &port.fields());
        }
        let port = parse(bytes).map_err(|r| {
            let key = record
                .key
                .map(str::to_owned)
                .or_else(|| key_of_bad_record(bytes));
            r.with_key(key)
        })?;
        self.batch.push(record.key, &port.fields())
    }

    fn commit(&mut self) -> Result<(), TaskError> {
        self.start_commit()?;
        self.finish_commit(true).unwrap_or(Ok(()))
    }

    fn start_commit(&mut self) -> Result<(), TaskError> {
        // One commit at a time per job: its batches land in upload order.
        if let Some(Err(e)) = self.finish_commit(true) {
            return Err(e);
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        let next = self.spare.take().unwrap_or_default();
        let mut batch = std::mem::replace(&mut self.batch, next);
        batch.sort();
        let batch = Arc::new(batch);
        let ticket = self.store.submit(SharedBatch(batch.clone()), Sync::Now);
        self.in_flight = Some((ticket, batch));
        Ok(())
    }

    fn finish_commit(&mut self, wait: bool) -> Option<Result<(), TaskError>> {
        let Some((ticket, _)) = &mut self.in_flight else {
            return Some(Ok(()));
        };
        // Without `wait`, a commit still running gives `None` here.
        let answer = if wait { None } else { Some(ticket.try_wait()?) };
        let (ticket, batch) = self.in_flight.take()?;
        let answer = answer.unwrap_or_else(|| ticket.wait());
        // The writer dropped its handle before answering.
        if let Ok(mut batch) = Arc::try_unwrap(batch) {
            batch.clear();
            self.spare = Some(batch);
        }
        Some(answer.map_err(TaskError::from).map(|counts| {
            self.totals.inserted += counts.inserted;
            self.totals.updated += counts.updated;
            self.totals.unchanged += counts.unchanged;
        }))
    }

    fn pending_bytes(&self) -> usize {
        self.batch.bytes.len()
    }

    fn summary(&self) -> Summary {
        json!({
            "inserted": self.totals.inserted,
            "updated": self.totals.updated,
            "unchanged": self.totals.unchanged,
        })
    }
}

/// The port fields that hold lists; in CSV their items are separated by `;`.
const LIST_FIELDS: [&str; 3] = ["alias", "regions", "unlocs"];

/// A CSV row as the JSON object of a port: columns name the fields; empty cells are absent;
/// `alias`, `regions` and `unlocs` are `;`-separated lists; `coordinates` is one `"lon,lat"`
/// cell or the two columns `lon` and `lat`. Other columns pass through, so that the port's
/// own checks name them. Text is kept as it is (RFC 4180: spaces are part of a field).
fn csv_to_json(row: &CsvRow<'_>) -> Result<Vec<u8>, Rejection> {
    let mut port = Map::new();
    let (mut lon, mut lat) = (None, None);
    for (column, cell) in row.fields() {
        let value = match column {
            _ if cell.is_empty() => continue,
            "lon" => {
                lon = Some(number(column, cell)?);
                continue;
            }
            "lat" => {
                lat = Some(number(column, cell)?);
                continue;
            }
            "coordinates" => {
                let (x, y) = cell.split_once(',').ok_or_else(|| {
                    Rejection::invalid(format!(
                        "field `coordinates`: expected \"lon,lat\", found `{cell}`"
                    ))
                })?;
                json!([
                    number("coordinates", x.trim())?,
                    number("coordinates", y.trim())?
                ])
            }
            list if LIST_FIELDS.contains(&list) => Value::Array(
                cell.split(';')
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.to_owned()))
                    .collect(),
            ),
            _ => Value::String(cell.to_owned()),
        };
        port.insert(column.to_owned(), value);
    }
    match (lon, lat) {
        (None, None) => {}
        (Some(lon), Some(lat)) if !port.contains_key("coordinates") => {
            port.insert("coordinates".into(), json!([lon, lat]));
        }
        (Some(_), Some(_)) => {
            return Err(Rejection::invalid(
                "give coordinates either as `coordinates` or as `lon` and `lat`, not both",
            ))
        }
        _ => {
            return Err(Rejection::invalid(
                "field `coordinates`: `lon` and `lat` must both be given",
            ))
        }
    }
    Ok(serde_json::to_vec(&port).expect("a map of strings and finite numbers always serializes"))
}

/// A finite number from a CSV cell, or a rejection naming the field.
fn number(field: &str, cell: &str) -> Result<f64, Rejection> {
    let cell = cell.trim();
    match cell.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(Rejection::invalid(format!(
            "field `{field}`: expected a finite number, found `{cell}`"
        ))),
    }
}

/// Parses one record, telling syntax errors from wrong shapes.
fn parse(bytes: &[u8]) -> Result<Port, Rejection> {
    let e = match serde_json::from_slice::<Port>(bytes) {
        Ok(port) => return Ok(port),
        Err(e) => e,
    };
    if e.is_syntax() || e.is_eof() {
        return Err(Rejection {
            key: None,
            code: ErrorCode::InvalidJson,
            message: crate::record::json_reason(&e, bytes),
        });
    }
    // Bad records are rare: parse again, tracking the path, so the message names the field.
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let message = match serde_path_to_error::deserialize::<_, Port>(&mut deserializer) {
        Err(e) if e.path().to_string() != "." => format!("field `{}`: {}", e.path(), e.inner()),
        _ => e.to_string(),
    };
    Err(Rejection::invalid(message))
}

/// The `unlocs[0]` of a record that did not parse as a port, if it has one (for the error).
fn key_of_bad_record(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Unlocs {
        #[serde(default)]
        unlocs: Vec<String>,
    }
    let parsed: Unlocs = serde_json::from_slice(bytes).ok()?;
    parsed.unlocs.into_iter().next()
}

/// Accepted ports waiting for a commit, kept in one buffer: every key and encoded value back
/// to back, and where each one is. A batch of many thousand records is a few allocations.
#[derive(Debug, Default)]
struct Batch {
    /// Keys and values, back to back.
    bytes: Vec<u8>,
    /// Where each record is in `bytes`, in upload order (until sorted).
    entries: Vec<Entry>,
}

/// One record of a [`Batch`]: its key at `bytes[start..start + key_len]`, its value right
/// after it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: usize,
    key_len: usize,
    value_len: usize,
}

impl Batch {
    /// Checks a parsed port and its key (the record's, or else `unlocs[0]`), then appends
    /// both.
    fn push<S: AsRef<str>>(
        &mut self,
        key: Option<&str>,
        port: &codec::Fields<'_, S>,
    ) -> Result<(), Rejection> {
        let key = match key {
            Some(key) => key,
            None => port.unlocs.first().map(AsRef::as_ref).ok_or_else(|| {
                Rejection::invalid(
                    "missing key: a record outside a top-level object needs `unlocs[0]`",
                )
            })?,
        };
        let with_key = |r: Rejection| r.with_key(Some(key.to_owned()));
        if key.trim().is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(with_key(Rejection::invalid(format!(
                "the key must be 1 to {MAX_KEY_BYTES} bytes long"
            ))));
        }
        validate(port.name, port.coordinates).map_err(|m| with_key(Rejection::invalid(m)))?;
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key.as_bytes());
        codec::encode_fields(port, &mut self.bytes);
        self.entries.push(Entry {
            start,
            key_len: key.len(),
            value_len: self.bytes.len() - start - key.len(),
        });
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the batch, keeping its buffers.
    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    fn key(&self, entry: &Entry) -> &str {
        let key = &self.bytes[entry.start..entry.start + entry.key_len];
        std::str::from_utf8(key).expect("keys are pushed as str")
    }

    fn value(&self, entry: &Entry) -> &[u8] {
        let start = entry.start + entry.key_len;
        &self.bytes[start..start + entry.value_len]
    }

    /// Sorts by key: sorted inserts touch far fewer B-tree pages. Repeats of one key stay in
    /// upload order (their place in the buffer breaks the tie), so the last one wins.
    fn sort(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_unstable_by(|a, b| self.key(a).cmp(self.key(b)).then(a.start.cmp(&b.start)));
        self.entries = entries;
    }
}

/// A batch shared with the store's writer while it is written.
struct SharedBatch(Arc<Batch>);

impl Change for SharedBatch {
    type Output = Counts;

    /// Writes the batch; the counts hold only once the writer's commit returned.
    fn apply(&mut self, txn: &redb::WriteTransaction) -> Result<Counts, StoreError> {
        let batch = &self.0;
        let mut table = txn
            .open_table(PORTS)
            .map_err(StoreError::redb("open ports table"))?;
        let mut counts = Counts::default();
        for entry in &batch.entries {
            let value = batch.value(entry);
            let old = table
                .insert(batch.key(entry), StoredPort::from_encoded(value))
                .map_err(StoreError::redb("write port"))?;
            match old {
                None => counts.inserted += 1,
                Some(old) if old.value() == StoredPort::from_encoded(value) => {
                    counts.unchanged += 1
                }
                Some(_) => counts.updated += 1,
            }
        }
        Ok(counts)
    }
}

/// The port stored under `code`, if any.
pub fn get(store: &Store, code: &str) -> Result<Option<Port>, StoreError> {
    let txn = store.read()?;
    let table = txn
        .open_table(PORTS)
        .map_err(StoreError::redb("open ports table"))?;
    let value = table.get(code).map_err(StoreError::redb("read port"))?;
    value.map(|v| v.value().port(code)).transpose()
}

/// `GET /v1/ports/{code}`: the port as JSON.
fn read_one(store: &Store, code: &str) -> Result<Option<Value>, StoreError> {
    Ok(get(store, code)?.map(|port| json!(port)))
}

/// `GET /v1/ports?country=&limit=&after=`: items `{"key", "port"}`.
fn read_page(store: &Store, request: &PageRequest<'_>) -> Result<reads::Page, StoreError> {
    let query = ListQuery {
        country: request.filter("country"),
        after: request.after,
        limit: request.limit,
    };
    let page = list(store, &query)?;
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
        let port = value.value().port(key)?;
        let wanted = query.country.is_none_or(|c| {
            port.country
                .as_deref()
                .is_some_and(|pc| same_country(pc, c))
        });
        if !wanted {
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
    let txn = store.read()?;
    let table = txn
        .open_table(PORTS)
        .map_err(StoreError::redb("open ports table"))?;
    table.len().map_err(StoreError::redb("count ports"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    #[test]
    fn the_fast_path_stores_what_the_full_parse_stores_escapes_included() {
        let records: [&[u8]; 3] = [
            br#"{"name":"Ajman","city":"Ajman","alias":["a","b"],"coordinates":[55.5,25.4],"unlocs":["AEAJM"],"code":"52000"}"#,
            // Escapes (as Python's json.dumps writes non-ASCII) are decoded into a buffer.
            br#"{"name":"Caf\u00e9 \"Port\"","country":"C\u00f4te d'Ivoire","regions":["West\nAfrica"],"unlocs":["CI\u0041BJ"],"timezone":null}"#,
            br#"{"name":"x","unlocs":[]}"#,
        ];
        for bytes in records {
            let fast: ArrivingPort<'_> = serde_json::from_slice(bytes).unwrap();
            let mut from_fast = Vec::new();
            codec::encode_fields(&fast.fields(), &mut from_fast);
            let full: Port = serde_json::from_slice(bytes).unwrap();
            let mut from_full = Vec::new();
            codec::encode(&full, &mut from_full);
            assert_eq!(from_fast, from_full, "{}", String::from_utf8_lossy(bytes));
            assert_eq!(codec::decode(&from_fast).unwrap(), full);
        }
        // The fast path refuses what the full parse refuses (and the full parse names it).
        for bad in [
            &br#"{"name":"x","colour":"red"}"#[..],
            br#"{"name":7}"#,
            br#"{"city":"y"}"#,
        ] {
            assert!(serde_json::from_slice::<ArrivingPort<'_>>(bad).is_err());
            assert!(parse(bad).is_err());
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
        (dir, store)
    }

    fn task(store: &Store) -> Box<dyn Task> {
        create(
            &Map::new(),
            &Context {
                store: store.clone(),
            },
        )
        .unwrap()
    }

    fn json_record<'a>(index: u64, key: Option<&'a str>, body: &'a str) -> Record<'a> {
        Record {
            index,
            offset: 0,
            key,
            body: Body::Json(body.as_bytes()),
        }
    }

    #[test]
    fn records_are_validated_with_the_field_named() {
        let (_dir, store) = store();
        let mut task = task(&store);
        let cases = [
            (
                Some("K1"),
                r#"{"city":"x"}"#,
                ErrorCode::InvalidRecord,
                "name",
            ),
            (
                Some("K2"),
                r#"{"name":" "}"#,
                ErrorCode::InvalidRecord,
                "name",
            ),
            (
                Some("K3"),
                r#"{"name":"a","coordinates":[200,1]}"#,
                ErrorCode::InvalidRecord,
                "longitude",
            ),
            (
                Some("K4"),
                r#"{"name":"a","coordinates":[1,-91]}"#,
                ErrorCode::InvalidRecord,
                "latitude",
            ),
            (
                Some("K5"),
                r#"{"name":"a","coordinates":["x",1]}"#,
                ErrorCode::InvalidRecord,
                "coordinates",
            ),
            (
                Some("K6"),
                r#"{"name":"a","name":"b"}"#,
                ErrorCode::InvalidRecord,
                "name",
            ),
            (
                Some("K7"),
                r#"{"name":"a","colour":"red"}"#,
                ErrorCode::InvalidRecord,
                "colour",
            ),
            (Some("K8"), r#"{"name":"a""#, ErrorCode::InvalidJson, ""),
            (None, r#"{"name":"a"}"#, ErrorCode::InvalidRecord, "unlocs"),
            (
                None,
                r#"{"city":"a","unlocs":["K9"]}"#,
                ErrorCode::InvalidRecord,
                "name",
            ),
            (
                None,
                r#"{"name":"a","unlocs":[]}"#,
                ErrorCode::InvalidRecord,
                "unlocs",
            ),
        ];
        for (key, body, code, field) in cases {
            let err = task.record(&json_record(0, key, body)).unwrap_err();
            assert_eq!(err.code, code, "{body}: {err:?}");
            assert!(err.message.contains(field), "{body}: {}", err.message);
            let want_key = key.or(body.contains("K9").then_some("K9"));
            assert_eq!(err.key.as_deref(), want_key, "{body}");
        }
        let text = Record {
            index: 0,
            offset: 0,
            key: None,
            body: Body::Text("x"),
        };
        assert!(task.record(&text).is_err());
    }

    #[test]
    fn commits_count_inserted_updated_and_unchanged() {
        let (_dir, store) = store();
        let mut task = task(&store);
        task.record(&json_record(0, Some("B"), r#"{"name":"b"}"#))
            .unwrap();
        task.record(&json_record(1, Some("A"), r#"{"name":"a"}"#))
            .unwrap();
        assert_eq!(
            get(&store, "A").unwrap(),
            None,
            "nothing is visible before the commit"
        );
        task.commit().unwrap();
        task.record(&json_record(2, Some("A"), r#"{"name":"a"}"#))
            .unwrap();
        task.record(&json_record(3, Some("B"), r#"{"name":"b2"}"#))
            .unwrap();
        task.record(&json_record(4, Some("B"), r#"{"name":"b3"}"#))
            .unwrap();
        task.commit().unwrap();
        assert_eq!(
            task.summary(),
            json!({"inserted": 2, "updated": 2, "unchanged": 1})
        );
        assert_eq!(
            get(&store, "B").unwrap().unwrap().name,
            "b3",
            "the last repeat of a key wins"
        );
        assert_eq!(count(&store).unwrap(), 2);
    }

    #[test]
    fn array_records_are_keyed_by_their_first_unloc() {
        let (_dir, store) = store();
        let mut task = task(&store);
        task.record(&json_record(
            0,
            None,
            r#"{"name":"Ajman","unlocs":["AEAJM","X"]}"#,
        ))
        .unwrap();
        task.commit().unwrap();
        assert_eq!(get(&store, "AEAJM").unwrap().unwrap().name, "Ajman");
    }

    #[test]
    fn list_pages_walk_every_key_once() {
        let (_dir, store) = store();
        let mut task = task(&store);
        for i in 0..250 {
            let country = if i % 2 == 0 { "Even" } else { "Odd" };
            let body = format!(r#"{{"name":"p{i}","country":"{country}"}}"#);
            let key = format!("K{i:03}");
            task.record(&json_record(i, Some(&key), &body)).unwrap();
        }
        task.commit().unwrap();
        let mut seen = Vec::new();
        let mut after = None::<String>;
        loop {
            let page = list(
                &store,
                &ListQuery {
                    country: None,
                    after: after.as_deref(),
                    limit: 100,
                },
            )
            .unwrap();
            seen.extend(page.items.into_iter().map(|(k, _)| k));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let want: Vec<String> = (0..250).map(|i| format!("K{i:03}")).collect();
        assert_eq!(seen, want);

        let page = list(
            &store,
            &ListQuery {
                country: Some("odd"),
                after: None,
                limit: 1000,
            },
        )
        .unwrap();
        assert_eq!(page.items.len(), 125);
        assert!(page.next.is_none());
        let exact = list(
            &store,
            &ListQuery {
                country: None,
                after: None,
                limit: 250,
            },
        )
        .unwrap();
        assert_eq!(
            (exact.items.len(), exact.next),
            (250, None),
            "a page that ends exactly at the end has no next"
        );
    }

    #[test]
    fn the_country_filter_ignores_case_beyond_ascii() {
        let (_dir, store) = store();
        let mut task = task(&store);
        let countries = ["Côte d'Ivoire", "Réunion", "Cote d'Ivoire"];
        for (i, country) in countries.iter().enumerate() {
            let body = format!(r#"{{"name":"p{i}","country":"{country}"}}"#);
            let key = format!("K{i}");
            task.record(&json_record(i as u64, Some(&key), &body))
                .unwrap();
        }
        task.commit().unwrap();
        let keys = |country| {
            let query = ListQuery {
                country: Some(country),
                after: None,
                limit: 10,
            };
            let page = list(&store, &query).unwrap();
            page.items.into_iter().map(|(k, _)| k).collect::<Vec<_>>()
        };
        assert_eq!(keys("CÔTE D'IVOIRE"), ["K0"]);
        assert_eq!(keys("réunion"), ["K1"]);
        assert_eq!(keys("cote d'ivoire"), ["K2"]);
        assert!(keys("Côte").is_empty(), "the match is exact");
    }
}
