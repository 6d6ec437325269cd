//! Synthetic port files shaped like `samples/ports.json`, streamed to disk.
//!
//! Record `g` of the sorted order belongs to template code `c` (every real code of
//! `samples/ports.json`, sorted, gets `N / 1634` records, the first `N % 1634` codes one more)
//! and is that code's `j`-th record: its key is the code followed by six digits that increase
//! with `j`, so sorted order is key order. The digits, coordinates and `code` are drawn from a
//! hash of the seed, the code and `j`: the same seed gives the same records whatever the
//! order and format. The shuffled order is a seeded permutation of the sorted positions (a
//! Feistel network with cycle walking), so nothing is held in memory but one record.

use anyhow::{bail, Context as _};
use serde_json::{Map, Value};
use std::io::Write;

/// The real sample every record is modelled on.
const SAMPLE: &str = include_str!("../../samples/ports.json");

/// Distinct six-digit suffixes per code.
const SUFFIXES: u64 = 1_000_000;

/// The order of the records in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Ascending key order.
    Sorted,
    /// A seeded random permutation.
    Shuffled,
}

impl Order {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Sorted => "sorted",
            Order::Shuffled => "shuffled",
        }
    }
}

/// The file format written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    /// One top-level object keyed by the record key, pretty-printed like `samples/ports.json`.
    Json,
    /// One compact record per line; the key is `unlocs[0]`.
    Ndjson,
    /// A header row, then one row per record; lists `;`-separated; the key is `unlocs[0]`.
    Csv,
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 11] = [
    "name", "city", "country", "alias", "regions", "lon", "lat", "province", "timezone", "unlocs",
    "code",
];

/// The templates: every record of `samples/ports.json`, by code, sorted.
#[derive(Debug)]
pub struct Generator {
    templates: Vec<(String, Map<String, Value>)>,
    records: u64,
    seed: u64,
    /// Every this many records (by sorted position) gets another name: a second upload
    /// that changes some records of the first.
    changed_every: Option<u64>,
}

impl Generator {
    /// A generator of `records` records from `seed`.
    pub fn new(records: u64, seed: u64) -> anyhow::Result<Generator> {
        let sample: Map<String, Value> =
            serde_json::from_str(SAMPLE).context("the embedded samples/ports.json")?;
        let mut templates: Vec<(String, Map<String, Value>)> = sample
            .into_iter()
            .filter_map(|(code, value)| match value {
                Value::Object(port) => Some((code, port)),
                _ => None,
            })
            .collect();
        templates.sort_by(|a, b| a.0.cmp(&b.0));
        if templates.is_empty() {
            bail!("the embedded samples/ports.json holds no ports");
        }
        let max = templates.len() as u64 * SUFFIXES;
        if records > max {
            bail!("at most {max} records can have distinct keys (asked for {records})");
        }
        Ok(Generator {
            templates,
            records,
            seed,
            changed_every: None,
        })
    }

    /// The same records, but every `every`-th (sorted position 0, `every`, ...) renamed: the
    /// file a second upload that changes `1/every` of the records sends.
    pub fn with_changes(mut self, every: u64) -> Generator {
        self.changed_every = Some(every.max(1));
        self
    }

    /// How many records the generator makes.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The sorted position of the record written at `position` in `order`.
    pub fn sorted_index(&self, order: Order, position: u64) -> u64 {
        match order {
            Order::Sorted => position,
            Order::Shuffled => permute(position, self.records, self.seed),
        }
    }

    /// The record at sorted position `g`: its key and its port object.
    pub fn record(&self, g: u64) -> (String, Map<String, Value>) {
        let t = self.templates.len() as u64;
        let (q, r) = (self.records / t, self.records % t);
        let (c, j, count) = if g < r * (q + 1) {
            (g / (q + 1), g % (q + 1), q + 1)
        } else {
            let rest = g - r * (q + 1);
            (r + rest / q, rest % q, q)
        };
        let (code, template) = &self.templates[c as usize];
        let stride = SUFFIXES / count.max(1);
        let h = mix(self.seed ^ mix(c.wrapping_add(0x9e37)) ^ mix(j.wrapping_add(1) << 20));
        let suffix = j * stride + h % stride.max(1);
        let key = format!("{code}{suffix:06}");
        let mut port = port_from(template, key.clone(), h);
        if self
            .changed_every
            .is_some_and(|every| g.is_multiple_of(every))
        {
            let name = port.get("name").and_then(Value::as_str).unwrap_or("");
            let renamed = format!("{name} (renamed)");
            port.insert("name".into(), Value::String(renamed));
        }
        (key, port)
    }
}

/// The template's fields in its order, with this record's key, coordinates and code.
fn port_from(template: &Map<String, Value>, key: String, h: u64) -> Map<String, Value> {
    let mut port = Map::new();
    for (field, value) in template {
        let value = match (field.as_str(), value) {
            ("unlocs", Value::Array(rest)) => {
                let mut unlocs = vec![Value::String(key.clone())];
                unlocs.extend(rest.iter().skip(1).map(list_item));
                Value::Array(unlocs)
            }
            ("alias" | "regions", Value::Array(items)) => {
                Value::Array(items.iter().map(list_item).collect())
            }
            ("coordinates", Value::Array(lonlat)) if lonlat.len() == 2 => {
                let lon = lonlat[0].as_f64().unwrap_or(0.0);
                let lat = lonlat[1].as_f64().unwrap_or(0.0);
                let jitter = |bits: u64| ((bits % 100_001) as f64 - 50_000.0) * 1e-6;
                Value::Array(vec![
                    number(round7((lon + jitter(h >> 8)).clamp(-180.0, 180.0))),
                    number(round7((lat + jitter(h >> 32)).clamp(-90.0, 90.0))),
                ])
            }
            ("code", Value::String(_)) => Value::String(format!("{:05}", (h >> 40) % 100_000)),
            (_, value) => value.clone(),
        };
        port.insert(field.clone(), value);
    }
    if !port.contains_key("unlocs") {
        port.insert("unlocs".into(), Value::Array(vec![Value::String(key)]));
    }
    port
}

/// A list item without `;` (the CSV list separator), so every format carries the same data.
fn list_item(item: &Value) -> Value {
    match item {
        Value::String(s) => Value::String(s.replace(';', ",")),
        other => other.clone(),
    }
}

fn round7(x: f64) -> f64 {
    (x * 1e7).round() / 1e7
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// splitmix64's finaliser: a good 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded bijection of `0..n`: a four-round Feistel network on the smallest even number of
/// bits that holds `n`, walking the cycle until the value falls inside `0..n`.
fn permute(x: u64, n: u64, seed: u64) -> u64 {
    if n <= 1 {
        return x;
    }
    let mut bits = 64 - (n - 1).leading_zeros();
    bits += bits % 2;
    let half = bits / 2;
    let mask = (1u64 << half) - 1;
    let mut v = x;
    loop {
        let (mut left, mut right) = (v >> half, v & mask);
        for round in 0..4u64 {
            let f = mix(right ^ mix(seed ^ (round << 56))) & mask;
            (left, right) = (right, left ^ f);
        }
        v = (left << half) | right;
        if v < n {
            return v;
        }
    }
}

/// Writes `generator`'s records in `order` and `format` to `out`. Returns the bytes written.
pub fn write(
    generator: &Generator,
    order: Order,
    format: FileFormat,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let mut out = Counting { inner: out, n: 0 };
    let mut buf = Vec::with_capacity(1024);
    match format {
        FileFormat::Json if generator.records() == 0 => out.write_all(b"{}\n")?,
        FileFormat::Json => out.write_all(b"{\n")?,
        FileFormat::Csv => {
            out.write_all(CSV_COLUMNS.join(",").as_bytes())?;
            out.write_all(b"\n")?;
        }
        FileFormat::Ndjson => {}
    }
    for position in 0..generator.records() {
        if position % 65_536 == 0 && crate::proc::interrupted() {
            bail!("interrupted");
        }
        let (key, port) = generator.record(generator.sorted_index(order, position));
        buf.clear();
        match format {
            FileFormat::Json => {
                if position > 0 {
                    buf.extend_from_slice(b",\n");
                }
                buf.extend_from_slice(b"  ");
                serde_json::to_writer(&mut buf, &key)?;
                buf.extend_from_slice(b": ");
                let mut pretty = Vec::with_capacity(512);
                let formatter = serde_json::ser::PrettyFormatter::with_indent(b"  ");
                let mut ser = serde_json::Serializer::with_formatter(&mut pretty, formatter);
                serde::Serialize::serialize(&port, &mut ser)?;
                for &b in &pretty {
                    buf.push(b);
                    if b == b'\n' {
                        buf.extend_from_slice(b"  ");
                    }
                }
            }
            FileFormat::Ndjson => {
                serde_json::to_writer(&mut buf, &port)?;
                buf.push(b'\n');
            }
            FileFormat::Csv => csv_row(&port, &mut buf),
        }
        out.write_all(&buf)?;
    }
    if format == FileFormat::Json && generator.records() > 0 {
        out.write_all(b"\n}\n")?;
    }
    out.flush()?;
    Ok(out.n)
}

/// One CSV row of `port` in [`CSV_COLUMNS`] order, RFC 4180 quoting where needed.
fn csv_row(port: &Map<String, Value>, buf: &mut Vec<u8>) {
    let coordinate = |i: usize| {
        port.get("coordinates")
            .and_then(|c| c.get(i))
            .map(Value::to_string)
            .unwrap_or_default()
    };
    for (i, column) in CSV_COLUMNS.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        let cell = match *column {
            "lon" => coordinate(0),
            "lat" => coordinate(1),
            field => match port.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(";"),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            },
        };
        if cell.contains([',', '"', '\n', '\r']) {
            buf.push(b'"');
            buf.extend_from_slice(cell.replace('"', "\"\"").as_bytes());
            buf.push(b'"');
        } else {
            buf.extend_from_slice(cell.as_bytes());
        }
    }
    buf.push(b'\n');
}

/// Counts the bytes written through it.
struct Counting<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_permutation_is_a_bijection() {
        for n in [1u64, 2, 3, 7, 100, 1634, 4097] {
            let seen: HashSet<u64> = (0..n).map(|x| permute(x, n, 42)).collect();
            assert_eq!(seen.len() as u64, n);
            assert!(seen.iter().all(|&v| v < n));
        }
        assert_ne!(
            (0..100).map(|x| permute(x, 100, 1)).collect::<Vec<_>>(),
            (0..100).collect::<Vec<_>>()
        );
    }

    #[test]
    fn sorted_keys_increase_and_are_unique() {
        for n in [1u64, 1633, 1634, 5000] {
            let g = Generator::new(n, 7).unwrap();
            let keys: Vec<String> = (0..n).map(|i| g.record(i).0).collect();
            assert!(keys.windows(2).all(|w| w[0] < w[1]), "n = {n}");
            assert!(keys.iter().all(|k| k.len() == 11));
        }
    }

    #[test]
    fn every_format_holds_the_same_records_and_the_seed_decides() {
        let g = Generator::new(3000, 3).unwrap();
        let mut json = Vec::new();
        write(&g, Order::Shuffled, FileFormat::Json, &mut json).unwrap();
        let doc: Map<String, Value> = serde_json::from_slice(&json).unwrap();
        assert_eq!(doc.len(), 3000);
        let mut ndjson = Vec::new();
        write(&g, Order::Sorted, FileFormat::Ndjson, &mut ndjson).unwrap();
        let lines: Vec<Map<String, Value>> = ndjson
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3000);
        for port in &lines {
            let key = port["unlocs"][0].as_str().unwrap();
            assert_eq!(&doc[key], &Value::Object(port.clone()));
        }
        let mut csv = Vec::new();
        write(&g, Order::Sorted, FileFormat::Csv, &mut csv).unwrap();
        assert_eq!(csv.iter().filter(|&&b| b == b'\n').count(), 3001);
        let mut again = Vec::new();
        write(
            &Generator::new(3000, 3).unwrap(),
            Order::Shuffled,
            FileFormat::Json,
            &mut again,
        )
        .unwrap();
        assert_eq!(json, again);
        let mut other = Vec::new();
        write(
            &Generator::new(3000, 4).unwrap(),
            Order::Shuffled,
            FileFormat::Json,
            &mut other,
        )
        .unwrap();
        assert_ne!(json, other);
    }
}
