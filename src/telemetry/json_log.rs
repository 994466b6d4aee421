//! The log's JSON lines, written straight into the line as each field is visited.
//!
//! One line per event: `timestamp`, `level`, `message` and the event's other fields at the top
//! level, then `target`, then `span`: the fields of the span the event happened in, and its
//! `name`. tracing-subscriber's own JSON format writes the same shape, but builds a map of
//! values for every span, parses it back from text whenever a field is recorded or an event
//! is written inside the span, and validates every piece it writes as UTF-8 again; at a line
//! per request that was a fifth of a small request's CPU. Here a span's fields are kept as the
//! text of JSON members (`"name":value,...`), appended to when a field is recorded, and copied
//! into each event's line as they are.

use std::fmt::{self, Write as _};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_log::NormalizeEvent;
use tracing_subscriber::{
    field::RecordFields,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::Writer,
        time::{FormatTime, SystemTime},
    },
    registry::LookupSpan,
};

/// Formats each event as one JSON line (see the module docs).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events from the `log` crate (dependencies' logs) carry their real target in fields.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());

        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(metadata.level().as_str())?;
        writer.write_char('"')?;
        let mut members = Members::continuing(&mut writer);
        event.record(&mut members);
        members.result?;
        writer.write_str(",\"target\":")?;
        write_string(&mut writer, metadata.target())?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>()
                && !fields.fields.is_empty()
            {
                writer.write_str(&fields.fields)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            write_string(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

/// Keeps each span's fields as the text of JSON object members, for [`JsonLines`] to copy.
pub struct JsonMembers;

impl<'writer> FormatFields<'writer> for JsonMembers {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut members = Members::first(&mut writer);
        fields.record(&mut members);
        members.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &span::Record<'_>,
    ) -> fmt::Result {
        let mut members = if current.fields.is_empty() {
            Members::first(&mut current.fields)
        } else {
            Members::continuing(&mut current.fields)
        };
        fields.record(&mut members);
        members.result
    }
}

/// Writes each field it visits as a JSON member, `"name":value`, separated by commas.
struct Members<'a, W: fmt::Write> {
    out: &'a mut W,
    /// Whether a member must be preceded by a comma.
    separate: bool,
    result: fmt::Result,
}

impl<'a, W: fmt::Write> Members<'a, W> {
    /// Members that begin an object's text.
    fn first(out: &'a mut W) -> Self {
        Self {
            out,
            separate: false,
            result: Ok(()),
        }
    }

    /// Members that follow others already written.
    fn continuing(out: &'a mut W) -> Self {
        Self {
            out,
            separate: true,
            result: Ok(()),
        }
    }

    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if self.separate {
                self.out.write_char(',')?;
            }
            self.separate = true;
            write_string(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: fmt::Write> Visit for Members<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| write_string(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.member(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; Rust writes finite floats without an exponent.
        self.member(field, |out| {
            if value.is_finite() {
                write!(out, "{value}")
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Also what `%value` (Display) fields and the message arrive as.
        self.member(field, |out| {
            out.write_char('"')?;
            write!(Escaping(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `text` as a JSON string.
fn write_string(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaping(out).write_str(text)?;
    out.write_char('"')
}

/// Writes what it is given as the inside of a JSON string: quotes, backslashes and control
/// characters escaped, everything else as it is.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain_from = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[plain_from..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain_from = at + 1;
        }
        self.0.write_str(&text[plain_from..])
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use serde_json::{Value, json};
    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt};

    use super::*;

    /// Collects what the log writes, for the tests to read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// The lines `log` writes, parsed as JSON (each must be).
    fn lines_of(log: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(captured.clone())
                .event_format(JsonLines)
                .fmt_fields(JsonMembers),
        );
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}"))
            })
            .collect()
    }

    #[test]
    fn an_event_in_a_span_has_its_fields_the_span_s_and_the_span_s_later_ones() {
        let lines = lines_of(|| {
            let span = tracing::info_span!(
                "request",
                request_id = "r-1",
                method = %"GET",
                key = tracing::field::Empty
            );
            span.record("key", "tester");
            span.in_scope(|| {
                tracing::info!(
                    status = 200u16,
                    latency_ms = 1.5,
                    cached = false,
                    "request served"
                );
            });
        });
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "request served");
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_ms"], 1.5);
        assert_eq!(line["cached"], false);
        assert_eq!(
            line["span"],
            json!({"request_id": "r-1", "method": "GET", "key": "tester", "name": "request"})
        );
        assert!(line["target"].as_str().unwrap().contains("json_log"));
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
            "{timestamp}"
        );
    }

    #[test]
    fn text_with_quotes_backslashes_and_control_characters_stays_one_json_line() {
        let awkward = "a \"quoted\" \\ path\nwith\ttabs, a bell \u{7} and ünïcödé";
        let lines = lines_of(|| {
            let span = tracing::info_span!("outer", path = awkward);
            span.in_scope(|| tracing::warn!(error = %awkward, "failed: {awkward}"));
            tracing::error!(nan = f64::NAN, big = u128::MAX, negative = -5i64);
        });
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["error"], awkward);
        assert_eq!(lines[0]["message"], format!("failed: {awkward}"));
        assert_eq!(lines[0]["span"]["path"], awkward);
        assert_eq!(lines[1]["nan"], Value::Null);
        assert_eq!(lines[1]["negative"], -5);
        assert_eq!(lines[1]["big"].to_string(), u128::MAX.to_string());
        assert!(lines[1].get("span").is_none(), "outside any span");
    }

    #[test]
    fn a_span_with_no_fields_until_one_is_recorded_is_still_an_object() {
        let lines = lines_of(|| {
            let span = tracing::info_span!("work", id = tracing::field::Empty);
            span.in_scope(|| tracing::info!("before"));
            span.record("id", 7);
            span.in_scope(|| tracing::info!("after"));
        });
        assert_eq!(lines[0]["span"], json!({"name": "work"}));
        assert_eq!(lines[1]["span"], json!({"id": 7, "name": "work"}));
    }
}
