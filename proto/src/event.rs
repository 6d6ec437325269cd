//! Notification events: the NDJSON lines a server streams back for each job.
//!
//! Over `edge/1` they travel on the job's notification stream; over HTTP/3 they are the
//! response body. Every line is one JSON object whose `event` field names its kind. The first
//! event is `accepted` (or a lone `rejected`); the last is exactly one of `done` or `failed`.

use crate::{ErrorCode, Format};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A task's end-of-job summary (e.g. `ports`: `inserted`, `updated`, `unchanged`; `stats`:
/// `count`, `mean`, `variance`, `stddev`, `min`, `max`). Its shape belongs to the task.
pub type Summary = Value;

/// How many record errors a job's final event repeats.
pub const FIRST_ERRORS: usize = 5;

/// One bad record, as a job's final event repeats it: the same fields as `record_error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorSample {
    /// The record's index (0-based) among the upload's records.
    pub index: u64,
    /// The byte offset of the record's start in the upload body.
    pub offset: u64,
    /// The record's key, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Why it was not stored.
    pub code: ErrorCode,
    /// Why, for a person; names the field.
    pub message: String,
}

/// One notification line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The job started: the header was accepted and its format chosen.
    Accepted {
        /// The server's id for the job.
        job: String,
        /// The client's upload stream id (`edge/1`), so the client can pair this notification
        /// stream with its upload.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upload_stream: Option<u64>,
        /// The task that runs the job.
        task: String,
        /// The format the records are decoded from (given, or sniffed).
        format: Format,
        /// The file name from the header, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The upload size from the header, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        /// Where the server read the body from, for a job whose body is not the upload's
        /// (`{"file": "exports/ports.json"}`, or a URL with what its origin answered).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<Value>,
    },
    /// How far decoding has got (coalesced: a few per second).
    Progress {
        /// Body bytes read so far.
        bytes: u64,
        /// Records decoded so far (stored or not).
        records: u64,
        /// Records reported as errors so far.
        #[serde(default)]
        errors: u64,
    },
    /// Records durable in the store so far (cumulative). Sent only after the store's commit
    /// returned.
    Committed {
        /// Records committed so far.
        records: u64,
        /// Byte offset in the body just after the last committed record: a job cut off now
        /// resumes here (`resume`), and the bytes before it are never sent again. 0 from a
        /// server that does not say.
        #[serde(default)]
        offset: u64,
    },
    /// The job was resumed (`resume` in the header, or an HTTP upload resource appended to):
    /// the body goes on at `offset`, and the records before it are committed and are never
    /// applied again. Sent right after `accepted`, before any body byte is read.
    Resumed {
        /// The job id (the job keeps it).
        job: String,
        /// Where the body goes on: the byte just after the last committed record. The client
        /// sends the body from here.
        offset: u64,
        /// Records decoded before `offset` (stored or not): the next record's index.
        records: u64,
        /// Records committed before `offset`.
        committed: u64,
        /// The SHA-256 of the body's first `offset` bytes, as the server received them
        /// (lowercase hex): a client checks that its file starts with the same bytes before
        /// it sends the rest.
        prefix_sha256: String,
    },
    /// One record was not stored; the job goes on.
    RecordError {
        /// The record's index in the upload, from 0.
        index: u64,
        /// Byte offset of the record's start in the upload body.
        offset: u64,
        /// The record's key, if it could be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// What is wrong, as a stable code.
        code: ErrorCode,
        /// What is wrong, for a person; names the field where there is one.
        message: String,
    },
    /// A task's own running figures (e.g. `stats` running mean).
    Task {
        /// The task that sent it.
        task: String,
        /// The figures; their shape belongs to the task.
        data: Value,
    },
    /// A task's answer to one record (e.g. `primes`: `{"index":4,"n":5,"prime":11}`), sent as
    /// soon as it is ready, in record order. Only tasks that answer records send it; the
    /// fields besides `event` and `index` belong to the task. An answer says nothing of
    /// durability: `committed` does.
    Result {
        /// The record's index in the upload, from 0.
        index: u64,
        /// The task's answer.
        #[serde(flatten)]
        fields: Map<String, Value>,
    },
    /// The job finished: every record was stored or reported.
    Done {
        /// The job id.
        job: String,
        /// Body bytes read.
        bytes: u64,
        /// Records decoded (stored or not).
        records: u64,
        /// Records committed.
        committed: u64,
        /// Records reported as errors.
        errors: u64,
        /// Wall time from accept to done.
        duration_ms: u64,
        /// The task's summary.
        summary: Summary,
        /// The first few record errors (at most [`FIRST_ERRORS`]), whatever was sent one by one.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        first_errors: Vec<ErrorSample>,
        /// The source had not changed since its last fetch (a URL fetched with
        /// `if_changed=true` answered 304): nothing was read.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unchanged: bool,
        /// The body's SHA-256 (lowercase hex), when the client declared one and it matched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// The job stopped early; records committed before it stay committed.
    Failed {
        /// The job id.
        job: String,
        /// Why, as a stable code.
        code: ErrorCode,
        /// Why, for a person.
        message: String,
        /// Records committed before the failure.
        committed: u64,
        /// Body bytes read before the failure.
        #[serde(default)]
        bytes: u64,
        /// Records decoded before the failure.
        #[serde(default)]
        records: u64,
        /// Records reported as errors before the failure.
        #[serde(default)]
        errors: u64,
        /// Byte offset in the body where reading stopped, when the body itself is at fault.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// The first few record errors (at most [`FIRST_ERRORS`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        first_errors: Vec<ErrorSample>,
    },
    /// The job was refused before any byte of its body was decoded; nothing was stored.
    Rejected {
        /// Why, as a stable code.
        code: ErrorCode,
        /// Why, for a person, with what to do about it.
        message: String,
        /// Always 0: nothing was stored.
        committed: u64,
        /// The client's upload stream id (`edge/1`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upload_stream: Option<u64>,
        /// For `rate_limited`: seconds to wait before trying again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// The server is shutting down: the job has `grace_secs` to finish; past that it commits
    /// what it has and ends `failed` with `shutdown`. Not final.
    Draining {
        /// Seconds left before running jobs are stopped.
        grace_secs: u64,
    },
    /// An event this version of the contract does not know (from a newer server).
    #[serde(other)]
    Unknown,
}

impl Event {
    /// The event as one NDJSON line, `\n` included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = Vec::new();
        self.write_line(&mut line);
        line
    }

    /// Appends the event to `out` as one NDJSON line, `\n` included (for writing many events
    /// at once without a buffer each).
    pub fn write_line(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(&mut *out, self)
            .expect("events hold only strings, numbers and JSON values");
        out.push(b'\n');
    }

    /// Parses one NDJSON line.
    pub fn from_line(line: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(line)
    }

    /// Whether this event ends the job's event stream (`done`, `failed` or `rejected`).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Event::Done { .. } | Event::Failed { .. } | Event::Rejected { .. }
        )
    }

    /// The `event` field's value.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Accepted { .. } => "accepted",
            Event::Progress { .. } => "progress",
            Event::Committed { .. } => "committed",
            Event::Resumed { .. } => "resumed",
            Event::RecordError { .. } => "record_error",
            Event::Task { .. } => "task",
            Event::Result { .. } => "result",
            Event::Done { .. } => "done",
            Event::Failed { .. } => "failed",
            Event::Rejected { .. } => "rejected",
            Event::Draining { .. } => "draining",
            Event::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_names_are_stable() {
        let ev = Event::Accepted {
            job: "j1".into(),
            upload_stream: Some(2),
            task: "ports".into(),
            format: Format::Json,
            name: None,
            size: Some(10),
            source: None,
        };
        let v: Value = serde_json::from_slice(&ev.to_line()).unwrap();
        assert_eq!(
            v,
            json!({"event":"accepted","job":"j1","upload_stream":2,"task":"ports","format":"json","size":10})
        );

        let ev = Event::RecordError {
            index: 3,
            offset: 120,
            key: Some("AEAJM".into()),
            code: ErrorCode::InvalidRecord,
            message: "missing field `name`".into(),
        };
        let v: Value = serde_json::from_slice(&ev.to_line()).unwrap();
        assert_eq!(v["event"], "record_error");
        assert_eq!(v["code"], "invalid_record");
        assert_eq!(v["index"], 3);
        assert_eq!(v["offset"], 120);
    }

    #[test]
    fn lines_round_trip() {
        let events = [
            Event::Progress {
                bytes: 1,
                records: 2,
                errors: 0,
            },
            Event::Committed {
                records: 2,
                offset: 40,
            },
            Event::Task {
                task: "stats".into(),
                data: json!({"count": 2}),
            },
            Event::Result {
                index: 4,
                fields: json!({"n": 5, "prime": 11})
                    .as_object()
                    .cloned()
                    .expect("an object"),
            },
            Event::Done {
                job: "j".into(),
                bytes: 1,
                records: 2,
                committed: 2,
                errors: 0,
                duration_ms: 5,
                summary: json!({"inserted": 2}),
                first_errors: vec![ErrorSample {
                    index: 1,
                    offset: 7,
                    key: None,
                    code: ErrorCode::InvalidJson,
                    message: "expected value".into(),
                }],
                unchanged: false,
                sha256: None,
            },
            Event::Rejected {
                code: ErrorCode::UnknownTask,
                message: "no task `x`".into(),
                committed: 0,
                upload_stream: Some(6),
                retry_after: None,
            },
        ];
        for ev in events {
            let line = ev.to_line();
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(Event::from_line(&line).unwrap(), ev);
        }
    }

    #[test]
    fn a_result_is_flat_beside_its_index() {
        let ev = Event::from_line(br#"{"event":"result","index":4,"n":5,"prime":11}"#).unwrap();
        let Event::Result { index, fields } = &ev else {
            panic!("not a result: {ev:?}");
        };
        assert_eq!(*index, 4);
        assert_eq!(Value::Object(fields.clone()), json!({"n": 5, "prime": 11}));
        let v: Value = serde_json::from_slice(&ev.to_line()).unwrap();
        assert_eq!(
            v,
            json!({"event": "result", "index": 4, "n": 5, "prime": 11})
        );
    }

    #[test]
    fn unknown_events_are_tolerated() {
        let ev = Event::from_line(br#"{"event":"paused","in":30}"#).unwrap();
        assert_eq!(ev, Event::Unknown);
        assert!(!ev.is_final());
    }
}
