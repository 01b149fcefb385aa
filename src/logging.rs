//! Sluice's log output, set up once by `main`: `text` (one human-readable line per event,
//! field values quoted logfmt-style wherever they need it) or `json` (one JSON object per
//! line: `timestamp`, `level`, `target`, `message`, then the event's fields). Colours only
//! when stderr is a terminal and `NO_COLOR` is unset or empty; whatever a message carries,
//! no escape byte reaches a pipe (control characters are written as `\u001b`-style text).
//! Knows nothing about requests; what gets logged is decided where it happens.

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::io::IsTerminal as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FmtContext;
#[cfg(test)]
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::registry::LookupSpan;

/// The shape of Sluice's log lines (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL target: message key=value …`, values quoted where needed.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber: `filter` (`SLUICE_LOG` syntax, `info` when unset or
/// invalid) on stderr, in `format`, coloured only on a terminal without `NO_COLOR` (its value
/// given as `no_color`).
pub fn init(format: LogFormat, filter: Option<&str>, no_color: Option<&OsStr>) {
    let filter = filter
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let ansi = use_colour(std::io::stderr().is_terminal(), no_color);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).fmt_fields(TextFields).init(),
        LogFormat::Json => builder.with_ansi(false).event_format(JsonLines).init(),
    }
}

/// A subscriber in `format` writing to `writer`, for tests of the formats.
#[cfg(test)]
pub(crate) fn subscriber<W>(format: LogFormat, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("trace"))
        .with_writer(writer)
        .with_ansi(false);
    match format {
        LogFormat::Text => Box::new(builder.fmt_fields(TextFields).finish()),
        LogFormat::Json => Box::new(builder.event_format(JsonLines).finish()),
    }
}

/// Colours only for a person at a terminal, and never when `NO_COLOR` is set to anything
/// but the empty string (no-color.org).
pub(crate) fn use_colour(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Text-format fields: the message as is (so user log lines and tracebacks stay
/// readable), then ` name=value` with the value quoted when it is empty or holds a space,
/// `=`, `"`, `\` or a control character.
pub(crate) struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_, '_> {
    fn separate(&mut self) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        Ok(())
    }

    fn text(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.separate()?;
            if field.name() == "message" {
                return write_message(self.writer, value);
            }
            write!(self.writer, "{}=", field_name(field))?;
            write_value(self.writer, value)
        })();
    }

    fn plain(&mut self, field: &Field, value: &dyn fmt::Display) {
        if self.result.is_ok() {
            self.result = self
                .separate()
                .and_then(|()| write!(self.writer, "{}={value}", field_name(field)));
        }
    }
}

impl Visit for TextVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, &format!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.plain(field, &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.plain(field, &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.plain(field, &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.plain(field, &value);
    }
}

/// `r#type` is written `type`.
fn field_name(field: &Field) -> &str {
    field.name().trim_start_matches("r#")
}

/// A message as is, line breaks and tabs included, other control characters escaped.
fn write_message(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.write_char(c)?,
            c if c.is_control() => write!(out, "\\u{:04x}", u32::from(c))?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// A value bare when it is one plain token, else in double quotes with `"`, `\` and
/// control characters escaped; so every line splits the same way.
pub(crate) fn write_value(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c == '\\' || c.is_control());
    if bare {
        return out.write_str(value);
    }
    out.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if c.is_control() => write!(out, "\\u{:04x}", u32::from(c))?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// The JSON format: `{"timestamp":…,"level":…,"target":…,"message":…,<fields>}` per line.
/// Numbers and booleans stay JSON numbers and booleans; everything else is a string.
pub(crate) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":");
        push_json_str(&mut line, &timestamp);
        line.push_str(",\"level\":");
        push_json_str(&mut line, meta.level().as_str());
        line.push_str(",\"target\":");
        push_json_str(&mut line, meta.target());
        let mut fields = JsonVisitor {
            message: None,
            rest: String::new(),
        };
        event.record(&mut fields);
        line.push_str(",\"message\":");
        push_json_str(&mut line, fields.message.as_deref().unwrap_or(""));
        line.push_str(&fields.rest);
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

struct JsonVisitor {
    message: Option<String>,
    /// `,"name":value` for each field but the message, in the order they were recorded.
    rest: String,
}

impl JsonVisitor {
    fn key(&mut self, field: &Field) {
        self.rest.push(',');
        push_json_str(&mut self.rest, field_name(field));
        self.rest.push(':');
    }

    fn number(&mut self, field: &Field, value: impl fmt::Display) {
        self.key(field);
        let _ = write!(self.rest, "{value}");
    }
}

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.key(field);
            push_json_str(&mut self.rest, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.number(field, value);
        } else {
            self.record_str(field, &value.to_string());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, value);
    }
}

fn push_json_str(out: &mut String, value: &str) {
    // Serialising a &str into a String cannot fail.
    if let Ok(quoted) = serde_json::to_string(value) {
        out.push_str(&quoted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    fn capture(format: LogFormat, log: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        tracing::subscriber::with_default(subscriber(format, buffer.clone()), log);
        String::from_utf8(buffer.0.lock().unwrap().clone()).expect("utf-8")
    }

    fn sample() {
        let error = "worker w-1 went away before answering";
        tracing::warn!(
            method = "GET",
            path = "/api/a b",
            %error,
            empty = "",
            quote = "say \"hi\"",
            count = 3u64,
            ok = true,
            "request failed"
        );
        tracing::info!(target: "function", invocation_id = "abc", logger = "root", "line one\nline two \u{1b}[31mred");
    }

    #[test]
    fn text_values_are_quoted_consistently_and_nothing_escapes_a_pipe() {
        let out = capture(LogFormat::Text, sample);
        assert!(!out.contains('\u{1b}'), "{out}");
        let first = out.lines().next().expect("a line");
        assert!(first.contains(" WARN "), "{first}");
        assert!(
            first.ends_with(
                r#"request failed method=GET path="/api/a b" error="worker w-1 went away before answering" empty="" quote="say \"hi\"" count=3 ok=true"#
            ),
            "{first}"
        );
        assert!(
            out.contains(
                "function: line one\nline two \\u001b[31mred invocation_id=abc logger=root"
            ),
            "{out}"
        );
    }

    #[test]
    fn json_lines_parse_and_keep_every_field() {
        let out = capture(LogFormat::Json, sample);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        let warn = &lines[0];
        assert_eq!(warn["level"], "WARN");
        assert_eq!(warn["target"], module_path!());
        assert_eq!(warn["message"], "request failed");
        assert_eq!(warn["path"], "/api/a b");
        assert_eq!(warn["error"], "worker w-1 went away before answering");
        assert_eq!(warn["count"], 3);
        assert_eq!(warn["ok"], true);
        assert!(warn["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        let function = &lines[1];
        assert_eq!(function["target"], "function");
        assert_eq!(function["message"], "line one\nline two \u{1b}[31mred");
        assert_eq!(function["invocation_id"], "abc");
        assert!(!out.contains('\u{1b}'), "JSON escapes control characters");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
}
