//! How `edge-client` shows jobs: a progress bar per file on a terminal, a clean line log
//! otherwise, and the exit code that sums them up.

use edge_proto::{ErrorCode, Event};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How one job ended, as an exit status (worst wins across jobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// `done` with no record errors: 0.
    Clean = 0,
    /// `done` with record errors: 1.
    RecordErrors = 1,
    /// `failed` or `rejected`: 2.
    Failed = 2,
    /// No connection (or TLS failure): 3.
    NoConnection = 3,
    /// Cancelled with Ctrl-C: 130 (128 + SIGINT, as a shell reports a process it
    /// interrupted).
    Cancelled = 130,
}

impl Outcome {
    /// Says why connecting failed (on stderr) and how the command ends: 3 when the server
    /// could not be reached or trusted, 2 otherwise.
    pub fn not_connected(error: &crate::ClientError) -> Outcome {
        eprintln!("edge-client: {error}");
        if error.is_connect() {
            Outcome::NoConnection
        } else {
            Outcome::Failed
        }
    }

    /// The outcome a final event stands for.
    pub fn of(last: &Event) -> Outcome {
        match last {
            Event::Done { errors: 0, .. } => Outcome::Clean,
            Event::Done { .. } => Outcome::RecordErrors,
            Event::Failed {
                code: ErrorCode::Cancelled,
                ..
            } => Outcome::Cancelled,
            _ => Outcome::Failed,
        }
    }

    /// The process exit code.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self as u8)
    }
}

/// The worst of several outcomes (clean if none).
pub fn worst(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
    outcomes.into_iter().max().unwrap_or(Outcome::Clean)
}

/// Writes the line log for one job: meaningful events only, `committed` at most once a second.
#[derive(Debug)]
pub struct LineLog {
    name: String,
    last_committed: Option<Instant>,
}

impl LineLog {
    /// A log for the job uploading `name`.
    pub fn new(name: impl Into<String>) -> LineLog {
        LineLog {
            name: name.into(),
            last_committed: None,
        }
    }

    /// The line to print for `event`, if any.
    pub fn line(&mut self, event: &Event) -> Option<String> {
        let name = &self.name;
        match event {
            Event::Accepted { job, format, .. } => {
                Some(format!("{name}: accepted as job {job} ({format})"))
            }
            // A blob's commits keep bytes, not records: the progress line says enough.
            Event::Committed { records: 0, .. } => None,
            Event::Committed { records, .. } => {
                let due = self
                    .last_committed
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                due.then(|| {
                    self.last_committed = Some(Instant::now());
                    format!("{name}: {records} records committed")
                })
            }
            Event::RecordError { .. } => record_error(name, event),
            Event::Resumed {
                job,
                offset,
                committed,
                ..
            } => Some(format!(
                "{name}: resumed job {job} at byte {offset} ({committed} records committed before it)"
            )),
            Event::Draining { grace_secs } => Some(format!(
                "{name}: the server is shutting down; the job has {grace_secs} s to finish"
            )),
            Event::Done { .. } | Event::Failed { .. } | Event::Rejected { .. } => {
                Some(summary(name, event))
            }
            _ => None,
        }
    }
}

/// The line for a `record_error` event (`None` for any other event).
pub fn record_error(name: &str, event: &Event) -> Option<String> {
    let Event::RecordError {
        index,
        offset,
        key,
        code,
        message,
    } = event
    else {
        return None;
    };
    let key = key.as_ref().map(|k| format!(" ({k})")).unwrap_or_default();
    Some(format!(
        "{name}: record {index} at byte {offset}{key}: {code}: {message}"
    ))
}

/// The closing line for a job's final event.
pub fn summary(name: &str, last: &Event) -> String {
    match last {
        Event::Done {
            unchanged: true, ..
        } => format!("{name}: done: unchanged since the last fetch, nothing read"),
        Event::Done {
            records,
            committed,
            errors,
            duration_ms,
            summary,
            ..
        } => {
            let figures = match summary.as_object() {
                Some(fields) if !fields.is_empty() => {
                    let parts: Vec<String> = fields
                        .iter()
                        .map(|(k, v)| format!("{k} {}", figure(v)))
                        .collect();
                    format!(" ({})", parts.join(", "))
                }
                _ => String::new(),
            };
            format!("{name}: done: {records} records, {committed} committed, {errors} errors in {duration_ms} ms{figures}")
        }
        Event::Failed {
            code: ErrorCode::Cancelled,
            committed,
            ..
        } => format!("{name}: cancelled: {committed} records committed"),
        Event::Failed {
            code,
            message,
            committed,
            ..
        } => {
            format!("{name}: failed ({code}): {message}; {committed} records committed before it")
        }
        Event::Rejected { code, message, .. } => format!("{name}: rejected ({code}): {message}"),
        other => format!("{name}: ended with {}", other.name()),
    }
}

fn figure(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) if v.is_f64() => format!("{x:.6}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned(),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_proto::Format;
    use serde_json::json;

    fn done(errors: u64) -> Event {
        Event::Done {
            job: "j".into(),
            bytes: 10,
            records: 3,
            committed: 3 - errors,
            errors,
            duration_ms: 7,
            summary: json!({"inserted": 3, "mean": 2.5}),
            first_errors: Vec::new(),
            unchanged: false,
            sha256: None,
        }
    }

    #[test]
    fn exit_codes_fold_to_the_worst() {
        let failed = Event::Failed {
            job: "j".into(),
            code: ErrorCode::SyntaxError,
            message: "m".into(),
            committed: 0,
            bytes: 0,
            records: 0,
            errors: 0,
            offset: None,
            first_errors: Vec::new(),
        };
        assert_eq!(Outcome::of(&done(0)), Outcome::Clean);
        assert_eq!(Outcome::of(&done(1)), Outcome::RecordErrors);
        assert_eq!(Outcome::of(&failed), Outcome::Failed);
        assert_eq!(
            worst([Outcome::Clean, Outcome::RecordErrors]),
            Outcome::RecordErrors
        );
        assert_eq!(
            worst([
                Outcome::RecordErrors,
                Outcome::NoConnection,
                Outcome::Failed
            ]),
            Outcome::NoConnection
        );
        assert_eq!(worst([]), Outcome::Clean);
    }

    #[test]
    fn the_line_log() {
        let mut log = LineLog::new("ports.json");
        let accepted = Event::Accepted {
            job: "j1".into(),
            upload_stream: Some(2),
            task: "ports".into(),
            format: Format::Json,
            name: None,
            size: None,
            source: None,
        };
        assert_eq!(
            log.line(&accepted).unwrap(),
            "ports.json: accepted as job j1 (json)"
        );
        assert_eq!(
            log.line(&Event::Committed {
                records: 5,
                offset: 50
            })
            .unwrap(),
            "ports.json: 5 records committed"
        );
        assert_eq!(
            log.line(&Event::Committed {
                records: 9,
                offset: 90
            }),
            None,
            "at most once a second"
        );
        assert_eq!(
            log.line(&Event::Progress {
                bytes: 1,
                records: 1,
                errors: 0
            }),
            None
        );
        let error = Event::RecordError {
            index: 4,
            offset: 99,
            key: Some("K".into()),
            code: ErrorCode::InvalidRecord,
            message: "missing field `name`".into(),
        };
        assert_eq!(
            log.line(&error).unwrap(),
            "ports.json: record 4 at byte 99 (K): invalid_record: missing field `name`"
        );
        assert_eq!(
            log.line(&done(1)).unwrap(),
            "ports.json: done: 3 records, 2 committed, 1 errors in 7 ms (inserted 3, mean 2.5)"
        );
    }
}
