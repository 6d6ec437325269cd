//! Decode -> store -> read back round trips: generated port records written as a JSON object,
//! a JSON array, NDJSON and CSV, cut into arbitrary chunks, come back out of the store equal
//! to what was written.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use edge_proto::{Event, Format};
use edge_tasks::pipeline::{self, Input, JobSpec, Settings, Source};
use edge_tasks::ports::{self, ListQuery, Port};
use edge_tasks::store::StoreOptions;
use edge_tasks::{registry, Context, Store};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::time::Duration;

/// Chunks, then the end.
struct Chunks(VecDeque<Bytes>);

impl Source for Chunks {
    fn next(&mut self, _wait: Duration) -> Input {
        match self.0.pop_front() {
            Some(chunk) => Input::Chunk(chunk),
            None => Input::End,
        }
    }
}

/// Text that survives every format, CSV's trimming and `;` lists included.
fn text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9é\"', ]{0,10}[A-Za-z0-9é\"',]"
}

fn port(index: usize) -> impl Strategy<Value = Port> {
    (
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::collection::vec("[A-Za-z0-9 ]{0,6}[A-Za-z0-9]", 0..3),
        proptest::option::of((-180.0f64..=180.0, -90.0f64..=90.0)),
        proptest::option::of("[A-Za-z]{1,8}/[A-Za-z_]{1,10}"),
    )
        .prop_map(
            move |(name, city, country, alias, coordinates, timezone)| Port {
                name,
                city,
                country,
                alias,
                regions: Vec::new(),
                coordinates: coordinates.map(|(lon, lat)| [lon, lat]),
                province: None,
                timezone,
                unlocs: vec![format!("K{index:05}")],
                code: None,
            },
        )
}

fn ports() -> impl Strategy<Value = Vec<Port>> {
    (0usize..12).prop_flat_map(|n| (0..n).map(port).collect::<Vec<_>>())
}

fn csv_cell(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// The ports written in `format`.
fn encode(ports: &[Port], format: Format) -> Vec<u8> {
    match format {
        Format::Json => {
            let object: serde_json::Map<String, Value> = ports
                .iter()
                .map(|p| (p.unlocs[0].clone(), serde_json::to_value(p).unwrap()))
                .collect();
            serde_json::to_vec_pretty(&object).unwrap()
        }
        Format::Ndjson => ports
            .iter()
            .flat_map(|p| {
                let mut line = serde_json::to_vec(p).unwrap();
                line.push(b'\n');
                line
            })
            .collect(),
        Format::Csv => {
            let mut csv = String::from("name,city,country,alias,lon,lat,timezone,unlocs\r\n");
            for p in ports {
                let (lon, lat) = match p.coordinates {
                    Some([lon, lat]) => (lon.to_string(), lat.to_string()),
                    None => (String::new(), String::new()),
                };
                let cells = [
                    csv_cell(&p.name),
                    csv_cell(p.city.as_deref().unwrap_or("")),
                    csv_cell(p.country.as_deref().unwrap_or("")),
                    csv_cell(&p.alias.join(";")),
                    lon,
                    lat,
                    csv_cell(p.timezone.as_deref().unwrap_or("")),
                    csv_cell(&p.unlocs.join(";")),
                ];
                csv.push_str(&cells.join(","));
                csv.push_str("\r\n");
            }
            csv.into_bytes()
        }
        Format::Lines | Format::Raw => unreachable!("ports come as json, ndjson or csv"),
    }
}

/// Uploads `body` as a `ports` job in chunks cut at `cuts`; returns the store's ports.
fn store_of(body: &[u8], format: Format, cuts: &[usize]) -> Vec<(String, Port)> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
    let plugin = registry::find("ports").unwrap();
    let task = (plugin.create)(&Default::default(), &Context::new(store.clone())).unwrap();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = VecDeque::new();
    let mut last = 0;
    for p in points.into_iter().chain([body.len()]) {
        if p > last {
            chunks.push_back(Bytes::copy_from_slice(&body[last..p]));
            last = p;
        }
    }
    let spec = JobSpec {
        job: "j".into(),
        upload_stream: None,
        task: "ports".into(),
        format: Some(format),
        name: None,
        size: None,
        source: None,
        unchanged: false,
        sha256: None,
        atomic: false,
    };
    let settings = Settings {
        commit_records: 3,
        ..Settings::default()
    };
    let report = pipeline::run(
        &spec,
        plugin,
        task,
        &mut Chunks(chunks),
        &settings,
        &mut |_| {},
    );
    assert!(
        matches!(report.last, Event::Done { errors: 0, .. }),
        "{format}: {:?}",
        report.last
    );
    let query = ListQuery {
        country: None,
        after: None,
        limit: ports::MAX_PAGE,
    };
    ports::list(&store, &query).unwrap().items
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn ports_round_trip_through_every_format(
        ports in ports(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let expected: Vec<(String, Port)> =
            ports.iter().map(|p| (p.unlocs[0].clone(), p.clone())).collect();
        for format in [Format::Json, Format::Ndjson, Format::Csv] {
            let body = encode(&ports, format);
            prop_assert_eq!(&store_of(&body, format, &cuts), &expected, "{}", format);
        }
        // A JSON array of the same records is stored the same way too.
        let array = json!(ports).to_string().into_bytes();
        prop_assert_eq!(&store_of(&array, Format::Json, &cuts), &expected, "array");
    }
}
