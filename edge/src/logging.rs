//! Logging setup: `tracing` to stderr, one line per event for people (`--log-format human`,
//! what journald stores) or one JSON object per line (`--log-format json`).
//!
//! Log lines carry strings a peer chose: task and file names, header values, paths, token
//! subjects, and error messages quoting any of them. None of them may forge a log line or
//! steer a terminal, so in the human format every field value and every message is escaped
//! here, once, for all call sites: control characters (C0, DEL, C1: `\n`, `\r`, `\t`, `\0`,
//! `\u{1b}`...) and the Unicode line separators and bidirectional overrides become escapes.
//! As a last guard, any line break left inside one event's text (where no field put it) is
//! escaped on its way out. The JSON format escapes through `serde_json`, which leaves DEL, the
//! C1 controls (NEL, U+0085, is a line break to some readers) and the Unicode separators and
//! overrides raw: those are escaped (`\u0085`) on the way out, so that its lines hold no
//! control character either.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber (`json`: one JSON object per line). `RUST_LOG` filters
/// (default `info`).
pub(crate) fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json {
        logs.with_writer(OneLinePerEvent::json(std::io::stderr))
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
    } else {
        logs.with_writer(OneLinePerEvent::human(std::io::stderr))
            .fmt_fields(EscapedFields)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// Writes `text` with every character that could break a line, steer a terminal or reorder
/// what a reader sees replaced by an escape.
pub(crate) struct Escaped<'a, W: ?Sized>(pub(crate) &'a mut W);

/// Whether `c` is written as an escape.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' // line and paragraph separators
                | '\u{200e}' | '\u{200f}' // directional marks
                | '\u{202a}'..='\u{202e}' // bidirectional embeddings and overrides
                | '\u{2066}'..='\u{2069}' // bidirectional isolates
        )
}

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(needs_escape) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                '\0' => self.0.write_str("\\0")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

/// The human format's field formatter: as tracing-subscriber's default (`name=value`, the
/// message bare, strings quoted), with every value and the message escaped.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EscapedFields;

impl<'a> MakeVisitor<Writer<'a>> for EscapedFields {
    type Visitor = EscapingVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> EscapingVisitor<'a> {
        EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's or span's fields (see [`EscapedFields`]).
pub(crate) struct EscapingVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let name = field.name();
        // tracing-log's metadata fields, shown elsewhere in the line.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = (|| {
            self.writer.write_str(separator)?;
            if name != "message" {
                let name = name.strip_prefix("r#").unwrap_or(name);
                if self.writer.has_ansi_escapes() {
                    write!(self.writer, "\x1b[3m{name}\x1b[0m\x1b[2m=\x1b[0m")?;
                } else {
                    write!(self.writer, "{name}=")?;
                }
            }
            Escaped(&mut self.writer).write_fmt(value)
        })();
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, format_args!("{value}"));
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, format_args!("{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for EscapingVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for EscapingVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// A writer of formatted events (tracing-subscriber writes each event with one `write_all`)
/// that keeps each event on its one line: in the human format, a line break inside the event
/// is escaped (its fields are escaped already); in the JSON format, every character of
/// [`needs_escape`] but the closing line break becomes a JSON escape (they can only be inside
/// strings there, where the escape means the same).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OneLinePerEvent<M> {
    make: M,
    json: bool,
}

impl<M> OneLinePerEvent<M> {
    /// For the human format.
    pub(crate) fn human(make: M) -> Self {
        OneLinePerEvent { make, json: false }
    }

    /// For the JSON format.
    pub(crate) fn json(make: M) -> Self {
        OneLinePerEvent { make, json: true }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLinePerEvent<M> {
    type Writer = OneLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLine {
            inner: self.make.make_writer(),
            json: self.json,
        }
    }
}

/// See [`OneLinePerEvent`].
#[derive(Debug)]
pub(crate) struct OneLine<W> {
    inner: W,
    json: bool,
}

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, event: &[u8]) -> std::io::Result<usize> {
        let body = event.strip_suffix(b"\n").unwrap_or(event);
        let ending = &event[body.len()..];
        let escaped = if self.json {
            json_escaped(body)
        } else {
            human_escaped(body)
        };
        match escaped {
            None => self.inner.write_all(event)?,
            Some(mut line) => {
                line.extend_from_slice(ending);
                self.inner.write_all(&line)?;
            }
        }
        Ok(event.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A human event with its line breaks escaped (`None`: it has none).
fn human_escaped(body: &[u8]) -> Option<Vec<u8>> {
    if !body.iter().any(|&b| b == b'\n' || b == b'\r') {
        return None;
    }
    let mut line = Vec::with_capacity(body.len() + 8);
    for &b in body {
        match b {
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            b => line.push(b),
        }
    }
    Some(line)
}

/// A JSON event with what [`needs_escape`] as JSON escapes (`None`: nothing to escape).
fn json_escaped(body: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(body);
    if !text.contains(needs_escape) {
        return None;
    }
    let mut line = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if needs_escape(c) {
            line.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            line.push(c);
        }
    }
    Some(line.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// A peer's string with every kind of character that must not reach a log raw.
    const HOSTILE: &str = "a\nFAKE 2026-01-01T00:00:00Z  INFO forged\r\t\0\u{1b}[31m\u{7f}\u{85}\u{9b}\u{2028}\u{202e}z";

    fn human(ansi: bool, log: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(OneLinePerEvent::human(buffer.clone()))
            .fmt_fields(EscapedFields)
            .with_ansi(ansi)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[derive(Debug)]
    struct Failure(String);
    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Failure {}

    fn every_kind_of_field(peer: &str) {
        let span = tracing::info_span!("job", task = %peer, sub = peer, name = ?peer);
        let _entered = span.enter();
        let error = Failure(peer.to_owned());
        tracing::info!(
            display = %peer,
            debug = ?peer,
            string = peer,
            error = &error as &(dyn std::error::Error + 'static),
            "refused: {peer}"
        );
        tracing::warn!("{peer}");
    }

    #[test]
    fn peer_strings_cannot_forge_lines_or_steer_a_terminal() {
        for ansi in [false, true] {
            let text = human(ansi, || every_kind_of_field(HOSTILE));
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 2, "one line per event (ansi {ansi}):\n{text}");
            for line in &lines {
                assert!(line.contains("FAKE"), "the peer's text is there: {line}");
                for c in line.chars() {
                    assert!(
                        !needs_escape(c) || (ansi && c == '\u{1b}'),
                        "raw {c:?} in {line:?}"
                    );
                }
                if ansi {
                    // The only escape sequences are the formatter's own (`ESC[` and digits).
                    assert!(!line.contains("\u{1b}[31m"), "{line:?}");
                }
            }
            let first = lines[0];
            for shown in [
                "\\nFAKE",
                "\\r\\t\\0\\u{1b}[31m\\u{7f}\\u{85}\\u{9b}\\u{2028}\\u{202e}z",
            ] {
                assert!(first.contains(shown), "{shown} in {first}");
            }
        }
    }

    #[test]
    fn plain_fields_look_as_they_did() {
        let text = human(false, || {
            let span = tracing::info_span!("conn", remote = %"127.0.0.1:4433");
            let _entered = span.enter();
            tracing::info!(keys = ?["ed25519-1"], count = 3, name = "x y", "token keys loaded");
        });
        assert!(
            text.contains(
                r#"conn{remote=127.0.0.1:4433}: edge::logging::tests: token keys loaded keys=["ed25519-1"] count=3 name="x y""#
            ),
            "{text}"
        );
    }

    #[test]
    fn a_line_break_outside_the_fields_is_escaped_too() {
        use std::io::Write;
        let buffer = Buffer::default();
        let mut out = OneLinePerEvent::human(buffer.clone()).make_writer();
        out.write_all(b"one\ntwo\r\n").unwrap();
        out.write_all(b"three\n").unwrap();
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "one\\ntwo\\r\nthree\n");
    }

    #[test]
    fn the_json_format_escapes_every_string() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(OneLinePerEvent::json(buffer.clone()))
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .finish();
        tracing::subscriber::with_default(subscriber, || every_kind_of_field(HOSTILE));
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for line in lines {
            assert!(!line.contains(needs_escape), "{line:?}");
            assert!(
                line.contains(r"\u001b[31m\u007f\u0085\u009b\u2028\u202e"),
                "{line}"
            );
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(event["fields"]["message"]
                .as_str()
                .unwrap()
                .contains(HOSTILE));
            assert_eq!(event["span"]["sub"].as_str(), Some(HOSTILE), "{line}");
        }
    }
}
