//! Trace export over OTLP (HTTP with protobuf bodies), for a collector such as the
//! OpenTelemetry Collector, Jaeger or Tempo.
//!
//! On only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set:
//! otherwise no layer is installed and tracing costs what it did before. The exporter reads the
//! other standard variables itself (`OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`,
//! `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`). Spans are sent
//! in batches from a thread of their own, so a slow collector never holds up a request.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{Layer, registry::LookupSpan};

/// The service name spans carry when `OTEL_SERVICE_NAME` does not say otherwise.
const SERVICE_NAME: &str = "orders";

/// The export pipeline while it runs: dropping it sends what is still buffered.
pub struct Exporter(SdkTracerProvider);

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(error) = self.0.shutdown() {
            eprintln!("could not send the last spans to the OTLP endpoint: {error}");
        }
    }
}

/// Whether the environment asks for export.
fn configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// The layer that exports spans, and the pipeline behind it, when the environment asks for
/// export; `Ok(None)` when it does not. An endpoint that cannot be used is an error, so that a
/// misconfigured deployment says so at start.
pub fn layer<S>()
-> Result<Option<(impl Layer<S>, Exporter)>, opentelemetry_otlp::ExporterBuildError>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    if !configured() {
        return Ok(None);
    }
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer(SERVICE_NAME);
    Ok(Some((
        tracing_opentelemetry::layer().with_tracer(tracer),
        Exporter(provider),
    )))
}
