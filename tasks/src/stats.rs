//! The `stats` plugin: online count, mean, sample variance, standard deviation, min and max
//! of a stream of numbers (Welford's algorithm: one pass, constant memory, numerically stable).

use crate::record::{shorten, Body, CsvRow, Record, Rejection};
use crate::table::Storage;
use crate::task::{Context, ParamError, Plugin, Task, TaskError};
use edge_proto::{Format, Summary};
use serde_json::{json, Map, Value};

/// The plugin's registration.
pub const PLUGIN: Plugin = Plugin {
    name: "stats",
    description: "Computes count, mean, sample variance (n-1), standard deviation, min and max of numbers, online; variance and stddev are null for fewer than two numbers. Stores nothing.",
    formats: &[Format::Lines, Format::Json, Format::Ndjson, Format::Csv],
    schema: r#"{"type": "number", "description": "one finite number per record: a line of text, an element of a top-level JSON array, an NDJSON value, or a CSV column (the only one, or the one named by the parameter column=NAME)"}"#,
    // The parameter column=NAME picks a column of any header.
    csv_columns: None,
    create,
    storage: Storage::NONE,
    reads: None,
    revert: None,
    prune: None,
};

fn create(params: &Map<String, Value>, _context: &Context) -> Result<Box<dyn Task>, ParamError> {
    let mut task = StatsTask::default();
    for (name, value) in params {
        match (name.as_str(), value) {
            ("column", Value::String(column)) if !column.trim().is_empty() => {
                task.column = Some(column.trim().to_owned());
            }
            ("column", _) => {
                return Err(ParamError(
                    "parameter `column` must name a CSV column, e.g. column=price".into(),
                ))
            }
            (other, _) => {
                return Err(ParamError(format!(
                    "task `stats` takes only the parameter `column` (got `{other}`)"
                )))
            }
        }
    }
    Ok(Box::new(task))
}

/// Running figures of a series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Welford {
    count: u64,
    mean: f64,
    /// Sum of squared differences from the mean.
    m2: f64,
    min: f64,
    max: f64,
}

impl Welford {
    /// Adds one value.
    pub fn push(&mut self, x: f64) {
        self.count += 1;
        if self.count == 1 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// The figures as they are kept with a job's cursor: the count, then the bits of the
    /// mean, the squared differences, the min and the max (exact, whatever the values).
    pub fn save(&self) -> Value {
        json!([
            self.count,
            self.mean.to_bits(),
            self.m2.to_bits(),
            self.min.to_bits(),
            self.max.to_bits()
        ])
    }

    /// Figures [`Welford::save`] gave, or `None` if `saved` is not such.
    pub fn load(saved: &Value) -> Option<Welford> {
        let fields: [u64; 5] = serde_json::from_value(saved.clone()).ok()?;
        let [count, mean, m2, min, max] = fields;
        Some(Welford {
            count,
            mean: f64::from_bits(mean),
            m2: f64::from_bits(m2),
            min: f64::from_bits(min),
            max: f64::from_bits(max),
        })
    }

    /// How many values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean, if any value.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// The sample variance (n-1), if at least two values.
    pub fn variance(&self) -> Option<f64> {
        (self.count > 1).then(|| self.m2 / (self.count - 1) as f64)
    }

    /// The figures as JSON (`null` where undefined).
    pub fn to_json(&self) -> Value {
        let some = |v: f64| (self.count > 0).then_some(v);
        json!({
            "count": self.count,
            "mean": self.mean(),
            "variance": self.variance(),
            "stddev": self.variance().map(f64::sqrt),
            "min": some(self.min),
            "max": some(self.max),
        })
    }
}

#[derive(Debug, Default)]
struct StatsTask {
    figures: Welford,
    /// The CSV column to read (`column=NAME`).
    column: Option<String>,
}

impl Task for StatsTask {
    fn record(&mut self, record: &Record<'_>) -> Result<(), Rejection> {
        let x = match record.body {
            Body::Text(text) => parse_text(text)?,
            Body::Json(bytes) => parse_json(bytes)?,
            Body::Csv(row) => {
                let (column, cell) = self.cell(&row)?;
                parse_text(cell).map_err(|r| Rejection {
                    message: format!("column `{column}`: {}", r.message),
                    ..r
                })?
            }
        };
        self.figures.push(x);
        Ok(())
    }

    fn progress(&self) -> Option<Value> {
        Some(self.figures.to_json())
    }

    /// The running figures, bit for bit (a resumed job's figures equal an uncut one's).
    fn state(&self) -> Option<Value> {
        Some(self.figures.save())
    }

    fn restore(&mut self, state: &Value) -> Result<(), TaskError> {
        self.figures = Welford::load(state).ok_or_else(|| TaskError::Refused {
            code: edge_proto::ErrorCode::NotResumable,
            message: format!("the job's cursor holds no figures of stats: {state}"),
        })?;
        Ok(())
    }

    fn summary(&self) -> Summary {
        self.figures.to_json()
    }
}

impl StatsTask {
    /// The cell of a CSV row that holds the number: the `column` parameter's, or the only one.
    fn cell<'a>(&self, row: &CsvRow<'a>) -> Result<(&'a str, &'a str), Rejection> {
        let columns = || row.columns().join(", ");
        match &self.column {
            Some(name) => row.fields().find(|(c, _)| c == name).ok_or_else(|| {
                Rejection::invalid(format!(
                    "no column `{name}` in the CSV header (it has: {})",
                    columns()
                ))
            }),
            None if row.columns().len() == 1 => Ok(row.fields().next().unwrap_or(("", ""))),
            None => Err(Rejection::invalid(format!(
                "the CSV has several columns ({}): pick one with the parameter column=NAME",
                columns()
            ))),
        }
    }
}

fn parse_text(text: &str) -> Result<f64, Rejection> {
    let text = text.trim();
    let x: f64 = text
        .parse()
        .map_err(|_| not_a_number(&format!("`{}`", shorten(text))))?;
    finite(x, text)
}

fn parse_json(bytes: &[u8]) -> Result<f64, Rejection> {
    match crate::record::json_value(bytes)? {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| not_a_number("a number out of range")),
        other => Err(not_a_number(&crate::record::found(&other))),
    }
}

fn finite(x: f64, text: &str) -> Result<f64, Rejection> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(not_a_number(&format!(
            "`{}` (only finite numbers count)",
            shorten(text)
        )))
    }
}

fn not_a_number(found: &str) -> Rejection {
    Rejection::invalid(format!("expected a number, found {found}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_proto::ErrorCode;
    use proptest::prelude::*;

    fn close(got: f64, want: f64) {
        let scale = want.abs().max(1e-300);
        assert!(((got - want) / scale).abs() < 1e-9, "{got} vs {want}");
    }

    #[test]
    fn a_known_series() {
        let mut w = Welford::default();
        (1..=1000).for_each(|i| w.push(f64::from(i)));
        assert_eq!(w.count(), 1000);
        let figures = w.to_json();
        assert_eq!(figures["min"], 1.0);
        assert_eq!(figures["max"], 1000.0);
        close(w.mean().unwrap(), 500.5);
        close(w.variance().unwrap(), 1000.0 * 1001.0 / 12.0);
    }

    #[test]
    fn a_large_offset_does_not_lose_precision() {
        let mut w = Welford::default();
        [4.0, 7.0, 13.0, 16.0].iter().for_each(|x| w.push(1e9 + x));
        close(w.mean().unwrap(), 1e9 + 10.0);
        close(w.variance().unwrap(), 30.0);

        // The naive sum-of-squares formula loses every digit of this variance in f64.
        let mut w = Welford::default();
        (1..=1000).for_each(|i| w.push(1e9 + f64::from(i)));
        assert_eq!(w.count(), 1000);
        assert_eq!(w.to_json()["min"], 1e9 + 1.0);
        assert_eq!(w.to_json()["max"], 1e9 + 1000.0);
        close(w.mean().unwrap(), 1e9 + 500.5);
        close(w.variance().unwrap(), 1000.0 * 1001.0 / 12.0);
        close(
            w.to_json()["stddev"].as_f64().unwrap(),
            (1000.0f64 * 1001.0 / 12.0).sqrt(),
        );
    }

    #[test]
    fn undefined_figures_are_null() {
        let w = Welford::default();
        assert_eq!(
            w.to_json(),
            json!({"count":0,"mean":null,"variance":null,"stddev":null,"min":null,"max":null})
        );
        let mut one = Welford::default();
        one.push(3.0);
        assert_eq!(one.to_json()["variance"], Value::Null);
        assert_eq!(one.to_json()["mean"], 3.0);
    }

    #[test]
    fn non_numbers_are_rejected_with_what_was_found() {
        let mut task = StatsTask::default();
        let text = |t| Record {
            index: 0,
            offset: 0,
            end: 0,
            key: None,
            body: Body::Text(t),
        };
        let json = |b: &'static str| Record {
            index: 0,
            offset: 0,
            end: 0,
            key: None,
            body: Body::Json(b.as_bytes()),
        };
        for (record, found) in [
            (text("abc"), "`abc`"),
            (text("NaN"), "only finite"),
            (text("inf"), "only finite"),
            (json("\"12\""), "string"),
            (json("{}"), "object"),
            (json("true"), "boolean"),
        ] {
            let err = task.record(&record).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidRecord);
            assert!(err.message.contains(found), "{}", err.message);
        }
        assert_eq!(
            task.record(&json("[1")).unwrap_err().code,
            ErrorCode::InvalidJson
        );
        task.record(&text(" 2.5 ")).unwrap();
        task.record(&json("-1e2")).unwrap();
        assert_eq!(task.summary()["count"], 2);
    }

    #[test]
    fn parameters_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(&dir.path().join("s.redb"), &Default::default()).unwrap();
        let mut params = Map::new();
        params.insert("colum".into(), json!("x"));
        let err = create(&params, &Context::new(store.clone())).err().unwrap();
        assert!(
            err.0.contains("`colum`") && err.0.contains("`column`"),
            "{}",
            err.0
        );
        let mut params = Map::new();
        params.insert("column".into(), json!(3));
        let err = create(&params, &Context::new(store)).err().unwrap();
        assert!(err.0.contains("column=price"), "{}", err.0);
    }

    proptest! {
        #[test]
        fn matches_a_two_pass_computation(xs in proptest::collection::vec(-1e6f64..1e6, 2..200)) {
            let mut w = Welford::default();
            xs.iter().for_each(|&x| w.push(x));
            let n = xs.len() as f64;
            let mean = xs.iter().sum::<f64>() / n;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
            prop_assert!((w.mean().unwrap() - mean).abs() <= 1e-9 * mean.abs().max(1.0));
            prop_assert!((w.variance().unwrap() - var).abs() <= 1e-9 * var.abs().max(1.0));
            prop_assert_eq!(w.to_json()["min"].as_f64().unwrap(), xs.iter().cloned().fold(f64::INFINITY, f64::min));
        }
    }
}
