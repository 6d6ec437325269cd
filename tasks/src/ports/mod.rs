//! The `ports` plugin: sea-port records upserted into the store, keyed by UN/LOCODE.
//!
//! Records are validated and encoded as they arrive (in the binary form that
//! `ports/codec.rs` documents) and appended to a batch. [`Task::start_commit`] sorts the batch
//! by key and hands it to the store's writer, which writes it in its next transaction; the
//! job decodes on meanwhile. Only once that commit returned does [`Task::finish_commit`] count
//! the batch as inserted, updated or unchanged.

//!
//! # Layout
//! - [`model`]: the [`Port`] record and its checks.
//! - `arriving`: the fast path from a record's JSON to the stored form.
//! - `csv`: ports from CSV rows.
//! - `task`: one job (batches, commits, counts).
//! - [`queries`]: reading ports back, and the read endpoints.
//! - `codec`: the binary form, byte by byte; `stored`: the table and its layouts.
//! - [`changes`]: the versions each job replaced, the history read and reverting a job.

use crate::reads::Reads;
use crate::table::Storage;
use crate::task::Plugin;
use edge_proto::reads::{Column, Filter};
use edge_proto::Format;

mod arriving;
pub mod changes;
mod codec;
mod csv;
pub mod model;
mod postgres;
pub mod queries;
mod stored;
mod task;

pub use model::Port;
pub use queries::{count, get, list, ListQuery, Page};
use queries::{read_one, read_page};
pub use stored::StoredPort;
pub(crate) use stored::PORTS;
use task::create;

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
    csv_columns: Some(&[
        "name",
        "city",
        "country",
        "alias",
        "regions",
        "coordinates",
        "lon",
        "lat",
        "province",
        "timezone",
        "unlocs",
        "code",
    ]),
    create,
    storage: Storage {
        version: stored::VERSION,
        tables: &[&PORTS, &changes::VERSIONS, &changes::JOB_CHANGES],
        migrate: Some(stored::migrate),
        postgres: postgres::SCHEMA,
        copy: Some(postgres::copy),
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
        history: Some(changes::read_history),
        content: None,
        delete: None,
    }),
    revert: Some(changes::revert),
    prune: Some(changes::prune),
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

#[cfg(test)]
mod tests {
    use super::arriving::ArrivingPort;
    use super::task::parse;
    use super::*;
    use crate::record::{Body, Record};
    use crate::store::StoreOptions;
    use crate::task::{Context, Task};
    use crate::Store;
    use edge_proto::ErrorCode;
    use serde_json::{json, Map};

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
        create(&Map::new(), &Context::new(store.clone())).unwrap()
    }

    fn json_record<'a>(index: u64, key: Option<&'a str>, body: &'a str) -> Record<'a> {
        Record {
            index,
            offset: 0,
            end: 0,
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
            end: 0,
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
