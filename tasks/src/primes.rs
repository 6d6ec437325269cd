//! The `primes` plugin: answers each record `n` with the n-th prime (`p(1) = 2`), sent back
//! at once as a `result` event, and `GET /v1/primes/{n}` for one answer.
//!
//! The sieving is `primal`'s: the first [`TABLE_PRIMES`] primes are kept in a table built once
//! (4 MiB, about 20 ms), so small `n` cost a lookup; a larger `n` is found with a segmented
//! sieve (bounded memory whatever `n` is), at most [`heavy_slots`] at once in the whole
//! process so that many large `n` cannot take every core from other jobs. Nothing is stored.

use crate::reads::{Page, PageRequest, ReadError, Reads};
use crate::record::{shorten, Body, CsvRow, Record, Rejection};
use crate::table::Storage;
use crate::task::{Context, ParamError, Plugin, Task, TaskError};
use edge_proto::reads::Column;
use edge_proto::{Format, Summary};
use serde_json::{json, Map, Value};
use std::sync::{Condvar, Mutex, OnceLock};

/// The largest `n` answered unless `limits.max_prime_n` says otherwise (the 10⁹-th prime is
/// 22,801,763,489; finding it takes about 12 s of one core).
pub const DEFAULT_MAX_N: u64 = 1_000_000_000;

/// The largest `limits.max_prime_n` the server takes (finding that prime takes minutes).
pub const LARGEST_MAX_N: u64 = 10_000_000_000;

/// How many primes the lookup table holds (up to 16,290,047): 4 MiB.
pub const TABLE_PRIMES: usize = 1 << 20;

/// The largest page of `GET /v1/primes?after=&limit=`.
const MAX_PAGE: usize = 1000;

/// The plugin's registration.
pub const PLUGIN: Plugin = Plugin {
    name: "primes",
    description: "Answers each record n (a whole number from 1) with the n-th prime, p(1) = 2, as a `result` event {\"index\", \"n\", \"prime\"} sent as soon as it is found. Stores nothing.",
    formats: &[Format::Lines, Format::Json, Format::Ndjson, Format::Csv],
    schema: r#"{"type": "integer", "minimum": 1, "description": "n, which prime to find (p(1) = 2), at most limits.max_prime_n: a line of text, an element of a top-level JSON array, an NDJSON value, or the only CSV column"}"#,
    csv_columns: None,
    create,
    storage: Storage::NONE,
    reads: Some(Reads {
        scope: "primes:read",
        item: "prime",
        filters: &[],
        max_page: MAX_PAGE,
        columns: &[Column::new("N", "/n"), Column::new("PRIME", "/prime")],
        one: read_one,
        page: read_page,
        history: None,
        content: None,
        delete: None,
    }),
    revert: None,
    prune: None,
};

fn create(params: &Map<String, Value>, context: &Context) -> Result<Box<dyn Task>, ParamError> {
    if let Some(name) = params.keys().next() {
        return Err(ParamError(format!(
            "task `primes` takes no parameters (got `{name}`)"
        )));
    }
    Ok(Box::new(PrimesTask {
        max_n: context.limits.max_prime_n,
        answer: None,
        answered: 0,
        largest: None,
    }))
}

struct PrimesTask {
    max_n: u64,
    /// The answer to the record just taken, until the pipeline asks for it.
    answer: Option<(u64, u64)>,
    answered: u64,
    /// The largest `n` answered, and its prime.
    largest: Option<(u64, u64)>,
}

impl Task for PrimesTask {
    fn record(&mut self, record: &Record<'_>) -> Result<(), Rejection> {
        let n = match record.body {
            Body::Text(text) => parse_text(text)?,
            Body::Json(bytes) => parse_json(bytes)?,
            Body::Csv(row) => parse_text(only_cell(&row)?)?,
        };
        let n = check(n, self.max_n).map_err(Rejection::invalid)?;
        let prime = nth_prime(n);
        self.answer = Some((n, prime));
        self.answered += 1;
        if self.largest.is_none_or(|(largest, _)| n > largest) {
            self.largest = Some((n, prime));
        }
        Ok(())
    }

    fn answer(&mut self) -> Option<Map<String, Value>> {
        let (n, prime) = self.answer.take()?;
        let mut fields = Map::new();
        fields.insert("n".into(), n.into());
        fields.insert("prime".into(), prime.into());
        Some(fields)
    }

    fn state(&self) -> Option<Value> {
        Some(json!({"answered": self.answered, "largest": self.largest}))
    }

    fn restore(&mut self, state: &Value) -> Result<(), TaskError> {
        let answered = state.get("answered").and_then(Value::as_u64);
        let largest = state
            .get("largest")
            .map(|v| serde_json::from_value::<Option<(u64, u64)>>(v.clone()));
        match (answered, largest) {
            (Some(answered), Some(Ok(largest))) => {
                self.answered = answered;
                self.largest = largest;
                Ok(())
            }
            _ => Err(TaskError::Refused {
                code: edge_proto::ErrorCode::NotResumable,
                message: format!("the job's cursor holds no state of primes: {state}"),
            }),
        }
    }

    fn summary(&self) -> Summary {
        json!({
            "answered": self.answered,
            "largest_n": self.largest.map(|(n, _)| n),
            "largest_prime": self.largest.map(|(_, p)| p),
        })
    }
}

/// The n-th prime, `p(1) = 2`. `n` must be at least 1.
pub fn nth_prime(n: u64) -> u64 {
    debug_assert!(n >= 1, "primes count from p(1)");
    let index = usize::try_from(n - 1).unwrap_or(usize::MAX);
    if let Some(&prime) = table().get(index) {
        return u64::from(prime);
    }
    let _slot = HeavySlot::take();
    let n = usize::try_from(n).expect("n is at most LARGEST_MAX_N, which fits a 64-bit usize");
    primal::StreamingSieve::nth_prime(n) as u64
}

/// The first [`TABLE_PRIMES`] primes, built on first use.
fn table() -> &'static [u32] {
    static TABLE: OnceLock<Vec<u32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // The sieve holds one bit per number coprime to 30 up to the bound: about 0.5 MiB,
        // dropped once the table is built.
        let sieve = primal::Sieve::new(16_290_048);
        sieve
            .primes_from(0)
            .take(TABLE_PRIMES)
            .map(|p| u32::try_from(p).expect("the table's primes are below 2^24"))
            .collect()
    })
}

/// How many large `n` may be sieved at once in the process: one core in two (at least one),
/// counted once.
pub fn heavy_slots() -> usize {
    static SLOTS: OnceLock<usize> = OnceLock::new();
    *SLOTS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)))
}

/// A place among the [`heavy_slots`] sieving at once, given back on drop.
struct HeavySlot;

static HEAVY: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

impl HeavySlot {
    fn take() -> HeavySlot {
        let (busy, freed) = &HEAVY;
        let limit = heavy_slots();
        let mut busy = busy.lock().unwrap_or_else(|e| e.into_inner());
        while *busy >= limit {
            busy = freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy += 1;
        HeavySlot
    }
}

impl Drop for HeavySlot {
    fn drop(&mut self) {
        let (busy, freed) = &HEAVY;
        let mut busy = busy.lock().unwrap_or_else(|e| e.into_inner());
        *busy -= 1;
        freed.notify_one();
    }
}

/// `n` if it is from 1 to `max`, or why not.
fn check(n: u64, max: u64) -> Result<u64, String> {
    match n {
        0 => Err("n must be at least 1 (p(1) = 2)".into()),
        n if n > max => Err(format!(
            "n = {n} is above {max}, the largest this server answers (limits.max_prime_n)"
        )),
        n => Ok(n),
    }
}

fn parse_text(text: &str) -> Result<u64, Rejection> {
    let text = text.trim();
    text.parse()
        .map_err(|_| not_a_whole_number(&format!("`{}`", shorten(text))))
}

fn parse_json(bytes: &[u8]) -> Result<u64, Rejection> {
    let value = crate::record::json_value(bytes)?;
    value
        .as_u64()
        .ok_or_else(|| not_a_whole_number(&crate::record::found(&value)))
}

fn only_cell<'a>(row: &CsvRow<'a>) -> Result<&'a str, Rejection> {
    match row.columns().len() {
        1 => Ok(row.fields().next().map_or("", |(_, cell)| cell)),
        _ => Err(Rejection::invalid(format!(
            "the CSV has several columns ({}): send one column of n",
            row.columns().join(", ")
        ))),
    }
}

fn not_a_whole_number(found: &str) -> Rejection {
    Rejection::invalid(format!("expected a whole number n >= 1, found {found}"))
}

/// `GET /v1/primes/{n}`: `{"n", "prime"}`.
fn read_one(context: &Context, key: &str) -> Result<Option<Value>, ReadError> {
    let n = key
        .parse::<u64>()
        .map_err(|_| format!("`{}` is not a whole number n >= 1", shorten(key)))
        .and_then(|n| check(n, context.limits.max_prime_n))
        .map_err(ReadError::BadParams)?;
    Ok(Some(json!({"n": n, "prime": nth_prime(n)})))
}

/// `GET /v1/primes?after=N&limit=K`: the primes p(N+1) to p(N+K), `{"n", "prime"}` each.
fn read_page(context: &Context, request: &PageRequest<'_>) -> Result<Page, ReadError> {
    let max = context.limits.max_prime_n;
    let after = match request.after {
        None => 0,
        Some(after) => after
            .parse::<u64>()
            .ok()
            .filter(|&after| after < max)
            .ok_or_else(|| {
                ReadError::BadParams(format!(
                    "`after` must be a whole number from 0 to {} (limits.max_prime_n - 1)",
                    max - 1
                ))
            })?,
    };
    let last = after.saturating_add(request.limit as u64).min(max);
    let mut items = Vec::with_capacity(request.limit);
    let mut prime = 0;
    for n in after + 1..=last {
        prime = match prime {
            0 => nth_prime(n),
            previous => next_prime(previous),
        };
        items.push(json!({"n": n, "prime": prime}));
    }
    Ok(Page {
        items,
        next: (last < max).then(|| last.to_string()),
    })
}

/// The first prime above `p`.
fn next_prime(p: u64) -> u64 {
    (p + 1..)
        .find(|&candidate| primal::is_prime(candidate))
        .expect("there is always a next prime")
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_proto::ErrorCode;

    fn context() -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = crate::Store::open(&dir.path().join("s.redb"), &Default::default())
            .expect("a new store");
        (dir, Context::new(store))
    }

    fn text(t: &str) -> Record<'_> {
        Record {
            index: 0,
            offset: 0,
            end: 0,
            key: None,
            body: Body::Text(t),
        }
    }

    #[test]
    fn known_primes_in_and_beyond_the_table() {
        for (n, p) in [
            (1, 2),
            (2, 3),
            (3, 5),
            (4, 7),
            (10, 29),
            (1_000, 7_919),
            (100_000, 1_299_709),
            (1_048_576, 16_290_047),
            (1_048_577, 16_290_073),
            (2_000_000, 32_452_843),
        ] {
            assert_eq!(nth_prime(n), p, "p({n})");
        }
    }

    #[test]
    fn the_table_agrees_with_the_streaming_sieve_at_its_edges() {
        let last = TABLE_PRIMES as u64;
        for n in [last - 1, last, last + 1] {
            assert_eq!(
                nth_prime(n),
                primal::StreamingSieve::nth_prime(n as usize) as u64
            );
        }
    }

    #[test]
    fn each_record_is_answered_once_and_bad_ones_are_refused() {
        let (_dir, context) = context();
        let mut task = create(&Map::new(), &context).expect("no parameters");
        task.record(&text(" 10 ")).expect("a good n");
        let answer = task.answer().expect("an answer");
        assert_eq!(Value::Object(answer), json!({"n": 10, "prime": 29}));
        assert!(task.answer().is_none(), "an answer is given once");

        for (record, says) in [
            (text("0"), "at least 1"),
            (text("-3"), "`-3`"),
            (text("1.5"), "`1.5`"),
            (text("ten"), "`ten`"),
            (text("1000000001"), "limits.max_prime_n"),
        ] {
            let err = task.record(&record).expect_err("a bad n");
            assert_eq!(err.code, ErrorCode::InvalidRecord);
            assert!(err.message.contains(says), "{}", err.message);
            assert!(task.answer().is_none());
        }
        let json = |b: &'static [u8]| Record {
            index: 1,
            offset: 0,
            end: 0,
            key: None,
            body: Body::Json(b),
        };
        task.record(&json(b"100")).expect("a JSON number");
        assert_eq!(task.answer().expect("an answer")["prime"], 541);
        assert!(task.record(&json(b"\"5\"")).is_err());
        assert_eq!(task.summary()["answered"], 2);
        assert_eq!(task.summary()["largest_prime"], 541);
    }

    #[test]
    fn the_configured_maximum_holds_for_jobs_and_reads() {
        let (_dir, mut context) = context();
        context.limits = context.limits.with_max_prime_n(50);
        let mut task = create(&Map::new(), &context).expect("no parameters");
        task.record(&text("50")).expect("at the maximum");
        assert!(task.record(&text("51")).is_err());

        let reads = PLUGIN.reads.expect("primes has reads");
        assert_eq!(reads.read_one(&context, "50").expect("p(50)")["prime"], 229);
        assert!(matches!(
            reads.read_one(&context, "51"),
            Err(ReadError::BadParams(m)) if m.contains("limits.max_prime_n")
        ));
        assert!(matches!(
            reads.read_one(&context, "x"),
            Err(ReadError::BadParams(_))
        ));
        let page = reads
            .read_page(&context, &[("after".into(), "45".into())])
            .expect("the last page");
        assert_eq!(page["items"].as_array().map(Vec::len), Some(5));
        assert_eq!(page["next"], Value::Null);
    }

    #[test]
    fn pages_list_consecutive_primes_beyond_the_table_too() {
        let (_dir, context) = context();
        let reads = PLUGIN.reads.expect("primes has reads");
        let params = |after: u64| {
            [
                ("after".to_owned(), after.to_string()),
                ("limit".to_owned(), "5".to_owned()),
            ]
        };
        let page = reads.read_page(&context, &params(0)).expect("a page");
        let primes: Vec<u64> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|item| item["prime"].as_u64())
            .collect();
        assert_eq!(primes, [2, 3, 5, 7, 11]);
        assert_eq!(page["next"], "5");

        let after = TABLE_PRIMES as u64 - 2;
        let page = reads.read_page(&context, &params(after)).expect("a page");
        for item in page["items"].as_array().expect("items") {
            let n = item["n"].as_u64().expect("n");
            assert_eq!(
                item["prime"].as_u64(),
                Some(primal::StreamingSieve::nth_prime(n as usize) as u64)
            );
        }
    }

    #[test]
    fn parameters_are_refused() {
        let (_dir, context) = context();
        let mut params = Map::new();
        params.insert("fast".into(), json!(true));
        let err = create(&params, &context).err().expect("refused");
        assert!(err.0.contains("`fast`"), "{}", err.0);
    }
}
