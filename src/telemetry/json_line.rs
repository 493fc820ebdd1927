//! Log events as JSON lines, with the request they belong to.
//!
//! The shape is tracing-subscriber's JSON (`timestamp`, `level`, `fields`, `target`, `span`), so
//! log pipelines read it alike; the request (`span.request_id`, `method`, `path`, `trace_id`,
//! `span_id`) comes from the request's task-local context rather than from a tracing span:
//! entering and leaving a span at every poll of a request, and formatting its fields, cost a
//! third of `/healthz` at `info`.
//!
//! Invariant: every string is escaped as JSON requires (quotes, backslashes, control
//! characters), so a value cannot break out of its field or forge another line.

use std::fmt::{self, Write as _};

use chrono::{SecondsFormat, Utc};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::http::request_id;

/// Formats each event as one JSON line.
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":\"");
        line.push_str(&Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true));
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push_str("\",\"fields\":{");
        let mut fields = Fields {
            line: &mut line,
            first: true,
        };
        event.record(&mut fields);
        line.push_str("},\"target\":");
        push_str(&mut line, meta.target());
        if let Some(request) = request_id::current_request() {
            line.push_str(",\"span\":{\"request_id\":");
            push_str(&mut line, &request.id);
            line.push_str(",\"method\":");
            push_str(&mut line, &request.method);
            line.push_str(",\"path\":");
            push_str(&mut line, &request.path);
            let _ = write!(
                line,
                ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
                request.trace.trace_id, request.trace.span_id
            );
            line.push_str(",\"name\":\"request\"}");
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Writes an event's fields as the members of a JSON object.
struct Fields<'a> {
    line: &'a mut String,
    first: bool,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        if !self.first {
            self.line.push(',');
        }
        self.first = false;
        push_str(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_str(self.line, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.line, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.line, "{value}");
        } else {
            self.line.push_str("null");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        push_str(self.line, &format!("{value:?}"));
    }
}

/// Appends `value` as a JSON string.
fn push_str(line: &mut String, value: &str) {
    line.push('"');
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(line, "\\u{:04x}", c as u32);
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_cannot_break_out_of_their_field() {
        let mut line = String::new();
        push_str(&mut line, "a\"b\\c\nd\u{0001}e\u{2028}");
        assert_eq!(line, r#""a\"b\\c\nd\u0001e\u2028""#);
        let parsed: String = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{0001}e\u{2028}");
    }
}
