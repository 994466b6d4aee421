//! Telemetry: logging, here; the metrics of [`metrics`]; and, when configured, the export of
//! spans to an OpenTelemetry collector ([`otlp`]).
//!
//! Logs are JSON lines when the output is not a terminal (for log collectors), readable text
//! when it is. `RUST_LOG` sets the level (default `info`). What a caller controls is written
//! [`bounded`], and the lines anyone can cause at will are [`sampling`]'s, so that no caller
//! can make the log grow faster than a line of a few hundred bytes per request it sends, or
//! than a line a second for requests without a key.

pub mod bounded;
pub mod metrics;
mod otlp;
pub mod sampling;

use std::io::IsTerminal;

use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{self, FilterExt, LevelFilter},
    fmt,
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

/// What keeps telemetry going until the process ends: dropping it writes out the log lines not
/// yet written and flushes the spans not yet exported.
pub struct Telemetry {
    _log: tracing_appender::non_blocking::WorkerGuard,
    _exporter: Option<otlp::Exporter>,
}

/// The target of the storage layer's spans (see [`init`]).
const STORAGE_SPANS: &str = "orders::storage";

/// Installs the global subscriber, logging at `default_level` unless `RUST_LOG` says
/// otherwise, and exporting spans when OTLP is configured (see [`otlp`]). Call once, first
/// thing, and keep what it returns until the end.
///
/// Log lines are written by a thread of their own, which writes all the lines that came while
/// it wrote the last ones at once: one write a line was a tenth of a small request's CPU under
/// load. No line is dropped: a request waits rather than lose its line.
///
/// The storage calls' spans are for trace export (they show where a request's time went); the
/// log shows each event in its request's span, and never builds those spans for itself, so
/// without an exporter they cost nothing.
pub fn init(default_level: &str) -> Telemetry {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let (writer, log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_LINES_WAITING)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(
            LOG_BUFFER_BYTES,
            std::io::stderr(),
        ));
    // A line: `timestamp`, `level`, `message` and the event's other fields, `target`, and
    // `span` (the request's: its fields and its name).
    let log: Box<dyn Layer<Registry> + Send + Sync> = if std::io::stderr().is_terminal() {
        fmt::layer().with_writer(writer).boxed()
    } else {
        json_subscriber::fmt::layer()
            .with_writer(writer)
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    };
    let levels = filter();
    // Said outright: a filter of unknown level would have every dependency's `log` record
    // made, up to trace, only to be thrown away.
    let max_level = levels.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let log_filter = levels.and(
        filter::filter_fn(|metadata| {
            !(metadata.is_span() && metadata.target().starts_with(STORAGE_SPANS))
        })
        .with_max_level_hint(max_level),
    );
    let (export, exporter, export_error) = match otlp::layer() {
        Ok(Some((layer, exporter))) => (Some(layer.with_filter(filter())), Some(exporter), None),
        Ok(None) => (None, None, None),
        Err(error) => (None, None, Some(error)),
    };
    tracing_subscriber::registry()
        .with(log.with_filter(log_filter))
        .with(export)
        .init();
    if let Some(error) = export_error {
        tracing::error!(%error, "spans are not exported: the OTLP exporter could not be set up");
    }
    Telemetry {
        _log: log_guard,
        _exporter: exporter,
    }
}

/// How many lines may wait for the writing thread before requests wait for it: room for a
/// burst, and a channel that stays small (its slots are allocated at once; the default of
/// 128,000 took 4 MB).
const LOG_LINES_WAITING: usize = 4096;

/// How much of the log the writing thread gathers before it writes (it writes sooner when no
/// more lines are waiting).
const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// For tests: logs only when `TEST_LOG` is set, and never fails if a subscriber exists.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let _ = fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

/// An error and all its causes on one line, for the log.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
