//! Nasty inputs run through the real pipeline (decoder -> task -> redb store), each with the
//! outcome a demanding user should get: every record stored or reported with its position and
//! reason, nothing crashing, and a failure that names the problem and where it is.
//!
//! # Cases
//!
//! Each case is a file `tests/fixtures/nasty/<case>.expect`. Its input is, in this order of
//! precedence: the file named by an `input:` line, the bytes built by a `generate:` line (large
//! inputs — a 2 MiB string, nesting 100,000 deep — are built here, never committed), or the one
//! other file of the folder named `<case>.<ext>`. Every case also needs one line in
//! [`cases!`] below, so that it is its own test (a test checks that none is missing).
//!
//! # The `.expect` format
//!
//! One `field: value` per line; blank lines and lines starting with `#` are ignored.
//!
//! ```text
//! # what the case is about
//! task: ports                  # required: the task plugin (`ports`, `stats`)
//! format: ndjson               # required: json | ndjson | lines | sniff (sniff: no format given)
//! input: garbage.bin           # optional, see above
//! generate: json_deep_100k     # optional, see above (one of `generate()`'s names)
//! max_record_bytes: 256        # optional decoder limits (default: the server's defaults)
//! max_depth: 64
//! accepted: lines              # optional: the format of the `accepted` event
//! final: done                  # required: done
//!                              #   | failed <code> [@<offset>] [~ <text in the message>]
//!                              #   | rejected <code> [~ <text in the message>]
//! records: 3                   # required (not for rejected): records decoded, good and bad
//! committed: 2                 # required (not for rejected): records committed
//! errors: 1                    # required (not for rejected): records reported as errors
//! error: 1 @17 invalid_json key=HUGE1 ~ EOF while parsing
//!                              # one line per `record_error` event, in order and all of them:
//!                              # index, @byte offset, code, the key if the event has one
//!                              # (none written = the event must have none), and optionally
//!                              # `~` and a text the message must contain
//! summary: {"count": 2}        # optional: fields the final summary must have, with values
//! stored: SHALL AFTER          # optional (ports): exactly the keys in the store afterwards
//! port: DUPL2 Second           # optional (ports): the stored name of one port
//! known_bug: <what is wrong>   # optional: the file says what SHOULD happen, the pipeline
//!                              # does not yet; a mismatch is printed, not failed
//! ```
//!
//! Every case runs several times, each in a fresh temporary store, with its bytes fed whole
//! and in odd-sized chunks (1 byte at a time for small inputs, 3, 7, 1000, 4093, 65536); every
//! run must match the file, and beyond the file every run must keep the pipeline's promises:
//! `accepted` first and exactly one final event last, `records == committed + errors`, record
//! errors in index order, `committed` events only growing and ending at the final count.

use bytes::Bytes;
use edge_proto::{ErrorCode, Event, Format};
use edge_tasks::pipeline::{self, Input, JobSpec, Settings, Source};
use edge_tasks::store::StoreOptions;
use edge_tasks::{ports, registry, Context, Store};
use serde_json::Value;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One test per case; `every_case_has_a_test` checks that this list matches the folder.
macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        const CASES: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() {
                run_case(stringify!($name));
            }
        )*
    };
}

cases!(
    json_deep,
    json_deep_100k,
    json_deep_unclosed_100k,
    ndjson_deep,
    ndjson_deep_100k,
    ndjson_huge_string,
    ndjson_huge_indented,
    ndjson_huge_string_2mib,
    json_huge_string,
    json_huge_string_2mib,
    lines_huge_line_2mib,
    bom_ndjson,
    bom_json,
    bom_lines,
    bom_partial_ndjson,
    bom_partial_json,
    crlf_ndjson,
    crlf_lines,
    crlf_json,
    ndjson_truncated,
    json_truncated,
    json_unbalanced,
    json_extra_bracket,
    json_trailing_comma,
    garbage_json,
    garbage_ndjson,
    garbage_lines,
    garbage_sniff,
    invalid_utf8_ndjson,
    invalid_utf8_json,
    invalid_utf8_lines,
    surrogate_ndjson,
    surrogate_json,
    lone_surrogate_ndjson,
    lone_surrogate_key_json,
    nan_lines,
    nan_ndjson,
    empty_json,
    empty_ndjson,
    empty_lines,
    empty_sniff,
    whitespace_json,
    whitespace_ndjson,
    whitespace_lines,
    whitespace_sniff,
    duplicate_field_ndjson,
    duplicate_field_json,
);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nasty")
}

#[test]
fn every_case_has_a_test() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures())
        .expect("the fixtures folder")
        .map(|entry| entry.expect("a folder entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "expect"))
        .map(|path| stem(&path))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.to_string()).collect();
    listed.sort();
    assert_eq!(
        listed, on_disk,
        "the `cases!` list and the .expect files differ"
    );
}

#[test]
fn every_input_file_is_used() {
    let cases: Vec<Expect> = CASES.iter().map(|c| Expect::load(c)).collect();
    for entry in std::fs::read_dir(fixtures()).expect("the fixtures folder") {
        let path = entry.expect("a folder entry").path();
        if path.extension().is_some_and(|e| e == "expect") {
            continue;
        }
        assert!(
            cases.iter().any(|c| c.input == Some(path.clone())),
            "{} is the input of no case",
            path.display()
        );
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// How the job ends.
#[derive(Debug, Clone, PartialEq)]
enum Final {
    Done,
    Failed {
        code: ErrorCode,
        offset: Option<u64>,
        message: Option<String>,
    },
    Rejected {
        code: ErrorCode,
        message: Option<String>,
    },
}

/// One expected `record_error`.
#[derive(Debug, Clone, PartialEq)]
struct ErrorLine {
    index: u64,
    offset: u64,
    code: ErrorCode,
    key: Option<String>,
    message: Option<String>,
}

/// A parsed `.expect` file.
#[derive(Debug)]
struct Expect {
    name: String,
    task: String,
    format: Option<Format>,
    input: Option<PathBuf>,
    generate: Option<String>,
    limits: edge_tasks::decode::Limits,
    accepted: Option<Format>,
    last: Final,
    counts: Option<(u64, u64, u64)>,
    errors: Vec<ErrorLine>,
    summary: Option<serde_json::Map<String, Value>>,
    stored: Option<Vec<String>>,
    ports: Vec<(String, String)>,
    known_bug: Option<String>,
}

fn code(text: &str) -> ErrorCode {
    match serde_json::from_value(Value::String(text.to_owned())) {
        Ok(ErrorCode::Other) | Err(_) => panic!("unknown error code `{text}`"),
        Ok(code) => code,
    }
}

/// Splits `text ~ message` into the text and the message.
fn with_message(text: &str) -> (&str, Option<String>) {
    match text.split_once(" ~ ") {
        Some((head, message)) => (head.trim(), Some(message.trim().to_owned())),
        None => (text.trim(), None),
    }
}

fn offset(word: &str) -> u64 {
    word.strip_prefix('@')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("`{word}` is not an offset like @17"))
}

fn number(value: &str) -> u64 {
    value
        .parse()
        .unwrap_or_else(|_| panic!("`{value}` is not a count"))
}

impl Expect {
    fn load(name: &str) -> Expect {
        let path = fixtures().join(format!("{name}.expect"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut expect = Expect {
            name: name.to_owned(),
            task: String::new(),
            format: None,
            input: None,
            generate: None,
            limits: Default::default(),
            accepted: None,
            last: Final::Done,
            counts: None,
            errors: Vec::new(),
            summary: None,
            stored: None,
            ports: Vec::new(),
            known_bug: None,
        };
        let (mut format, mut last, mut counts) = (false, false, [None::<u64>; 3]);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((field, value)) = line.split_once(':') else {
                panic!("{name}.expect:{}: not `field: value`: {line}", n + 1)
            };
            let value = value.trim();
            match field.trim() {
                "task" => expect.task = value.to_owned(),
                "format" => {
                    format = true;
                    expect.format = match value {
                        "sniff" => None,
                        f => Some(f.parse().expect("a format")),
                    }
                }
                "input" => expect.input = Some(fixtures().join(value)),
                "generate" => expect.generate = Some(value.to_owned()),
                "max_record_bytes" => expect.limits.max_record_bytes = number(value) as usize,
                "max_depth" => expect.limits.max_depth = number(value) as usize,
                "accepted" => expect.accepted = Some(value.parse().expect("a format")),
                "final" => {
                    last = true;
                    expect.last = parse_final(value);
                }
                "records" => counts[0] = Some(number(value)),
                "committed" => counts[1] = Some(number(value)),
                "errors" => counts[2] = Some(number(value)),
                "error" => expect.errors.push(parse_error(value)),
                "summary" => {
                    expect.summary = Some(serde_json::from_str(value).expect("a JSON object"))
                }
                "stored" => {
                    expect.stored = Some(value.split_whitespace().map(str::to_owned).collect())
                }
                "port" => {
                    let (key, name) = value.split_once(' ').expect("`port: KEY NAME`");
                    expect.ports.push((key.to_owned(), name.trim().to_owned()));
                }
                "known_bug" => expect.known_bug = Some(value.to_owned()),
                other => panic!("{name}.expect:{}: unknown field `{other}`", n + 1),
            }
        }
        assert!(!expect.task.is_empty(), "{name}.expect: no `task:`");
        assert!(format, "{name}.expect: no `format:`");
        assert!(last, "{name}.expect: no `final:`");
        expect.counts = match counts {
            [Some(r), Some(c), Some(e)] => Some((r, c, e)),
            [None, None, None] if matches!(expect.last, Final::Rejected { .. }) => None,
            _ => panic!("{name}.expect: `records:`, `committed:` and `errors:` are required"),
        };
        if expect.input.is_none() && expect.generate.is_none() {
            expect.input = Some(sibling(name));
        }
        expect
    }

    fn bytes(&self) -> Vec<u8> {
        match (&self.input, &self.generate) {
            (Some(path), None) => {
                std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            }
            (None, Some(name)) => generate(name),
            _ => panic!(
                "{}.expect: give `input:` or `generate:`, not both",
                self.name
            ),
        }
    }
}

/// The one other file named `<name>.<ext>`.
fn sibling(name: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("the fixtures folder")
        .map(|entry| entry.expect("a folder entry").path())
        .filter(|p| stem(p) == name && p.extension().is_some_and(|e| e != "expect"))
        .collect();
    match found.as_slice() {
        [one] => one.clone(),
        _ => panic!(
            "{name}.expect: no `input:` and {} files named {name}.*",
            found.len()
        ),
    }
}

fn parse_final(value: &str) -> Final {
    let (head, message) = with_message(value);
    let words: Vec<&str> = head.split_whitespace().collect();
    match words.as_slice() {
        ["done"] => Final::Done,
        ["failed", c] => Final::Failed {
            code: code(c),
            offset: None,
            message,
        },
        ["failed", c, at] => Final::Failed {
            code: code(c),
            offset: Some(offset(at)),
            message,
        },
        ["rejected", c] => Final::Rejected {
            code: code(c),
            message,
        },
        _ => panic!("`final: {value}`: expected done, failed CODE [@OFFSET] or rejected CODE"),
    }
}

fn parse_error(value: &str) -> ErrorLine {
    let (head, message) = with_message(value);
    let words: Vec<&str> = head.split_whitespace().collect();
    let (index, at, c, key) = match words.as_slice() {
        [index, at, c] => (index, at, c, None),
        [index, at, c, key] => (
            index,
            at,
            c,
            Some(
                key.strip_prefix("key=")
                    .unwrap_or_else(|| panic!("`{key}` is not key=KEY"))
                    .to_owned(),
            ),
        ),
        _ => panic!("`error: {value}`: expected INDEX @OFFSET CODE [key=KEY] [~ MESSAGE]"),
    };
    ErrorLine {
        index: number(index),
        offset: offset(at),
        code: code(c),
        key,
        message,
    }
}

/// Large inputs, built here rather than committed.
fn generate(name: &str) -> Vec<u8> {
    const DEEP: usize = 100_000;
    const HUGE: usize = 2 * 1024 * 1024;
    let deep = || [vec![b'['; DEEP], vec![b']'; DEEP]].concat();
    let huge = || vec![b'x'; HUGE];
    match name {
        // [first, 100k-deep array, last]: the first record is 36 bytes from offset 1.
        "json_deep_100k" => [
            &br#"[{"name":"First","unlocs":["FIRST"]},"#[..],
            &deep(),
            br#",{"name":"Last","unlocs":["LAST1"]}]"#,
        ]
        .concat(),
        // [first, then 100k `[` and the end of the upload.
        "json_deep_unclosed_100k" => [
            &br#"[{"name":"First","unlocs":["FIRST"]},"#[..],
            &vec![b'['; DEEP],
        ]
        .concat(),
        "ndjson_deep_100k" => [
            &b"{\"name\":\"First\",\"unlocs\":[\"FIRST\"]}\n"[..],
            &deep(),
            b"\n{\"name\":\"Last\",\"unlocs\":[\"LAST1\"]}\n",
        ]
        .concat(),
        "ndjson_huge_string_2mib" => [
            &b"{\"name\":\"First\",\"unlocs\":[\"FIRST\"]}\n"[..],
            b"{\"unlocs\":[\"HUGE1\"],\"name\":\"",
            &huge(),
            b"\"}\n{\"name\":\"Last\",\"unlocs\":[\"LAST1\"]}\n",
        ]
        .concat(),
        "json_huge_string_2mib" => [
            &b"{\"FIRST\": {\"name\": \"First\"},\n \"HUGE1\": {\"name\": \""[..],
            &huge(),
            b"\"},\n \"LAST1\": {\"name\": \"Last\"}}\n",
        ]
        .concat(),
        "lines_huge_line_2mib" => [&b"1\n"[..], &vec![b'9'; HUGE], b"\n2\n"].concat(),
        other => panic!("no generator named `{other}`"),
    }
}

/// Hands out prepared chunks, then `End`.
struct Chunks(VecDeque<Bytes>);

impl Source for Chunks {
    fn next(&mut self, _wait: Duration) -> Input {
        match self.0.pop_front() {
            Some(chunk) => Input::Chunk(chunk),
            None => Input::End,
        }
    }
}

/// What one run did.
#[derive(Debug)]
struct Outcome {
    events: Vec<Event>,
    last: Event,
    stored: Vec<(String, ports::Port)>,
}

fn run_once(expect: &Expect, body: &[u8], chunk: usize) -> Outcome {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default())
        .expect("a fresh store");
    let plugin = registry::find(&expect.task)
        .unwrap_or_else(|| panic!("{}: no task `{}`", expect.name, expect.task));
    let task = (plugin.create)(&Default::default(), &Context::new(store.clone()))
        .expect("no parameters are fine");
    let spec = JobSpec {
        job: format!("nasty-{}", expect.name),
        upload_stream: Some(2),
        task: expect.task.clone(),
        format: expect.format,
        name: None,
        size: Some(body.len() as u64),
        source: None,
        unchanged: false,
        sha256: None,
        atomic: false,
    };
    let settings = Settings {
        // Small batches: records before a failure must have been committed for real.
        commit_records: 2,
        limits: expect.limits,
        ..Settings::default()
    };
    let mut source = Chunks(
        body.chunks(chunk.max(1))
            .map(Bytes::copy_from_slice)
            .collect(),
    );
    let mut events = Vec::new();
    let report = pipeline::run(&spec, plugin, task, &mut source, &settings, &mut |e| {
        events.push(e)
    });
    Outcome {
        events,
        last: report.last,
        stored: all_ports(&store),
    }
}

fn all_ports(store: &Store) -> Vec<(String, ports::Port)> {
    let mut all = Vec::new();
    let mut after = None::<String>;
    loop {
        let query = ports::ListQuery {
            country: None,
            after: after.as_deref(),
            limit: ports::MAX_PAGE,
        };
        let page = ports::list(store, &query).expect("the store lists its ports");
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

/// The record errors of a run, as `error:` lines.
fn record_errors(events: &[Event]) -> Vec<ErrorLine> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RecordError {
                index,
                offset,
                key,
                code,
                message,
            } => Some(ErrorLine {
                index: *index,
                offset: *offset,
                code: *code,
                key: key.clone(),
                message: Some(message.clone()),
            }),
            _ => None,
        })
        .collect()
}

/// The run written as an `.expect` file would say it (full messages), for failure reports.
fn render(outcome: &Outcome) -> String {
    let mut out = Vec::new();
    if let Some(Event::Accepted { format, .. }) = outcome.events.first() {
        out.push(format!("accepted: {format}"));
    }
    let (records, committed, errors) = match &outcome.last {
        Event::Done {
            records,
            committed,
            errors,
            ..
        } => {
            out.push("final: done".into());
            (records, committed, errors)
        }
        Event::Failed {
            code,
            message,
            committed,
            records,
            errors,
            offset,
            ..
        } => {
            let at = offset.map(|o| format!(" @{o}")).unwrap_or_default();
            out.push(format!("final: failed {code}{at} ~ {message}"));
            (records, committed, errors)
        }
        Event::Rejected { code, message, .. } => {
            out.push(format!("final: rejected {code} ~ {message}"));
            return out.join("\n");
        }
        other => return format!("last event: {other:?}"),
    };
    out.push(format!("records: {records}"));
    out.push(format!("committed: {committed}"));
    out.push(format!("errors: {errors}"));
    for e in record_errors(&outcome.events) {
        let key = e.key.map(|k| format!(" key={k}")).unwrap_or_default();
        let message = e.message.unwrap_or_default();
        out.push(format!(
            "error: {} @{} {}{key} ~ {message}",
            e.index, e.offset, e.code
        ));
    }
    if let Event::Done { summary, .. } = &outcome.last {
        out.push(format!("summary: {summary}"));
    }
    let keys: Vec<&str> = outcome.stored.iter().map(|(k, _)| k.as_str()).collect();
    out.push(format!("stored: {}", keys.join(" ")));
    out.join("\n")
}

/// Where the run differs from the file, one line each.
fn compare(expect: &Expect, outcome: &Outcome) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            wrong.push(what);
        }
    };
    let contains = |message: &str, want: &Option<String>| {
        want.as_ref().is_none_or(|w| message.contains(w.as_str()))
    };

    if let Some(want) = expect.accepted {
        let got = match outcome.events.first() {
            Some(Event::Accepted { format, .. }) => Some(*format),
            _ => None,
        };
        check(
            got == Some(want),
            format!("accepted: want {want}, got {got:?}"),
        );
    }
    let counts = match (&expect.last, &outcome.last) {
        (
            Final::Done,
            Event::Done {
                records,
                committed,
                errors,
                ..
            },
        ) => Some((*records, *committed, *errors)),
        (
            Final::Failed {
                code,
                offset,
                message,
            },
            Event::Failed {
                code: got_code,
                message: got_message,
                committed,
                records,
                errors,
                offset: got_offset,
                ..
            },
        ) => {
            check(
                code == got_code && (offset.is_none() || offset == got_offset),
                format!(
                    "final: want failed {code} @{offset:?}, got failed {got_code} @{got_offset:?}"
                ),
            );
            check(
                contains(got_message, message),
                format!("final message: want {message:?} in {got_message:?}"),
            );
            Some((*records, *committed, *errors))
        }
        (
            Final::Rejected { code, message },
            Event::Rejected {
                code: got_code,
                message: got_message,
                ..
            },
        ) => {
            check(
                code == got_code,
                format!("final: want rejected {code}, got rejected {got_code}"),
            );
            check(
                contains(got_message, message),
                format!("final message: want {message:?} in {got_message:?}"),
            );
            None
        }
        (want, got) => {
            check(false, format!("final: want {want:?}, got {got:?}"));
            None
        }
    };
    if let (Some(want), Some(got)) = (expect.counts, counts) {
        check(
            want == got,
            format!("(records, committed, errors): want {want:?}, got {got:?}"),
        );
    }

    let got = record_errors(&outcome.events);
    if got.len() != expect.errors.len() {
        check(
            false,
            format!(
                "record errors: want {}, got {}",
                expect.errors.len(),
                got.len()
            ),
        );
    }
    for (want, got) in expect.errors.iter().zip(&got) {
        let same = want.index == got.index
            && want.offset == got.offset
            && want.code == got.code
            && want.key == got.key
            && contains(got.message.as_deref().unwrap_or_default(), &want.message);
        check(
            same,
            format!(
                "record error: want {} @{} {} key={:?} ~ {:?}, got {} @{} {} key={:?} ~ {:?}",
                want.index,
                want.offset,
                want.code,
                want.key,
                want.message,
                got.index,
                got.offset,
                got.code,
                got.key,
                got.message
            ),
        );
    }

    if let Some(want) = &expect.summary {
        match &outcome.last {
            Event::Done { summary, .. } => {
                for (field, value) in want {
                    check(
                        summary.get(field) == Some(value),
                        format!(
                            "summary.{field}: want {value}, got {:?}",
                            summary.get(field)
                        ),
                    );
                }
            }
            other => check(
                false,
                format!("summary: the job did not end done: {other:?}"),
            ),
        }
    }
    if let Some(want) = &expect.stored {
        let got: Vec<&String> = outcome.stored.iter().map(|(k, _)| k).collect();
        let mut want: Vec<&String> = want.iter().collect();
        want.sort();
        check(got == want, format!("stored: want {want:?}, got {got:?}"));
    }
    for (key, name) in &expect.ports {
        let got = outcome
            .stored
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, p)| p.name.as_str());
        check(
            got == Some(name.as_str()),
            format!("port {key}: want name {name:?}, got {got:?}"),
        );
    }
    wrong
}

/// The promises every run keeps, whatever the expect file says.
fn promises(outcome: &Outcome) -> Vec<String> {
    let mut wrong = Vec::new();
    let events = &outcome.events;
    let finals = events.iter().filter(|e| e.is_final()).count();
    if finals != 1 || events.last() != Some(&outcome.last) {
        wrong.push(format!(
            "{finals} final events; the last event is not the report's"
        ));
    }
    match events.first() {
        Some(Event::Accepted { .. }) => {}
        Some(Event::Rejected { .. }) if events.len() == 1 => {}
        first => wrong.push(format!("the first event is {first:?}")),
    }
    let counts = match &outcome.last {
        Event::Done {
            records,
            committed,
            errors,
            ..
        }
        | Event::Failed {
            records,
            committed,
            errors,
            ..
        } => Some((*records, *committed, *errors)),
        _ => None,
    };
    if let Some((records, committed, errors)) = counts {
        if records != committed + errors {
            wrong.push(format!(
                "records {records} != committed {committed} + errors {errors}: a record was lost"
            ));
        }
        let sent = record_errors(events).len() as u64;
        if sent != errors {
            wrong.push(format!(
                "{errors} errors counted, {sent} record_error events"
            ));
        }
        let commits: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::Committed { records, .. } => Some(*records),
                _ => None,
            })
            .collect();
        if commits.windows(2).any(|w| w[0] >= w[1])
            || commits.last().copied().unwrap_or(0) != committed
        {
            wrong.push(format!(
                "committed events {commits:?} do not grow to {committed}"
            ));
        }
    }
    let indexes: Vec<u64> = record_errors(events).iter().map(|e| e.index).collect();
    if indexes.windows(2).any(|w| w[0] >= w[1]) {
        wrong.push(format!("record errors out of order: {indexes:?}"));
    }
    wrong
}

/// The part of a run that must not depend on chunking: record errors and the final event
/// (as JSON, without its duration, nor the bytes read before a failure: the job stops
/// reading inside the chunk that holds the fault).
fn essence(outcome: &Outcome) -> (Vec<ErrorLine>, Value) {
    let mut last = serde_json::to_value(&outcome.last).expect("events serialize");
    if let Some(fields) = last.as_object_mut() {
        fields.remove("duration_ms");
        if matches!(outcome.last, Event::Failed { .. }) {
            fields.remove("bytes");
        }
    }
    (record_errors(&outcome.events), last)
}

fn run_case(name: &str) {
    let expect = Expect::load(name);
    let body = expect.bytes();
    let mut sizes = vec![usize::MAX];
    if body.len() <= 8 * 1024 {
        sizes.extend([1, 3]);
    }
    sizes.extend([7, 1000, 4093, 65_536]);

    let mut report = Vec::new();
    let mut first: Option<(Vec<ErrorLine>, Value)> = None;
    let mut rendered = None;
    for size in sizes {
        let outcome = run_once(&expect, &body, size);
        let chunking = if size == usize::MAX {
            "whole".to_owned()
        } else {
            format!("{size}-byte chunks")
        };
        let mut wrong = compare(&expect, &outcome);
        wrong.extend(promises(&outcome));
        let essence = essence(&outcome);
        match &first {
            None => first = Some(essence),
            Some(whole) if *whole != essence => {
                wrong.push(format!("differs from the whole run: {essence:?}"))
            }
            Some(_) => {}
        }
        if !wrong.is_empty() {
            report.push(format!("{chunking}:\n  {}", wrong.join("\n  ")));
            rendered.get_or_insert_with(|| render(&outcome));
        }
    }

    match (&expect.known_bug, report.is_empty()) {
        (None, true) => {}
        (None, false) => panic!(
            "{name}: the pipeline's outcome differs from {name}.expect\n{}\n\nwhat it did:\n{}",
            report.join("\n"),
            rendered.unwrap_or_default()
        ),
        (Some(bug), false) => eprintln!(
            "KNOWN BUG in {name} (not failed): {bug}\n{}\n\nwhat it did:\n{}",
            report.join("\n"),
            rendered.unwrap_or_default()
        ),
        (Some(bug), true) => {
            eprintln!("{name}: the known bug seems fixed (remove its `known_bug:` line): {bug}")
        }
    }
}
