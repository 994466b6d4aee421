//! Telemetry: logging, here; the metrics of [`metrics`]; and, when configured, the export of
//! spans to an OpenTelemetry collector ([`otlp`]).
//!
//! Logs are JSON lines when the output is not a terminal (for log collectors), readable text
//! when it is. `RUST_LOG` sets the level (default `info`).

mod json_log;
pub mod metrics;
mod otlp;

use std::io::IsTerminal;

use tracing_subscriber::{
    EnvFilter, Layer, Registry, fmt, layer::SubscriberExt, util::SubscriberInitExt,
};

/// What keeps telemetry going until the process ends: dropping it flushes the spans not yet
/// exported.
pub struct Telemetry {
    _exporter: Option<otlp::Exporter>,
}

/// Installs the global subscriber, logging at `default_level` unless `RUST_LOG` says
/// otherwise, and exporting spans when OTLP is configured (see [`otlp`]). Call once, first
/// thing, and keep what it returns until the end.
pub fn init(default_level: &str) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let log = fmt::layer().with_writer(std::io::stderr);
    let log: Box<dyn Layer<Registry> + Send + Sync> = if std::io::stderr().is_terminal() {
        log.boxed()
    } else {
        log.event_format(json_log::JsonLines)
            .fmt_fields(json_log::JsonMembers)
            .boxed()
    };
    let (export, exporter, export_error) = match otlp::layer() {
        Ok(Some((layer, exporter))) => (Some(layer), Some(exporter), None),
        Ok(None) => (None, None, None),
        Err(error) => (None, None, Some(error)),
    };
    tracing_subscriber::registry()
        .with(log)
        .with(export)
        .with(filter)
        .init();
    if let Some(error) = export_error {
        tracing::error!(%error, "spans are not exported: the OTLP exporter could not be set up");
    }
    Telemetry {
        _exporter: exporter,
    }
}

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
