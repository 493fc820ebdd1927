//! Export over OTLP/HTTP (protobuf) when `FLOWGATE_OTLP_ENDPOINT` is set: traces to
//! `/v1/traces`, metrics to `/v1/metrics`, logs (every audit event, see [`super::security`]) to
//! `/v1/logs`.
//!
//! Invariant: exporting never waits inside a request. Spans and log records are kept in a compact
//! form of our own ([`super::trace::FinishedSpan`], [`super::security::AuditRecord`]) and put in
//! bounded queues that threads of their own drain, write straight into the protocol's bytes
//! record by record ([`wire`], framed by [`export_request`]), and post ([`ship`]); a record
//! that finds its queue full is dropped and counted
//! (`flowgate_telemetry_dropped_total{signal}`), and an export that fails is counted
//! (`flowgate_telemetry_export_failures_total{signal}`) and logged at most once a minute per
//! signal. The OpenTelemetry SDK's span and log pipelines did the same with about three times
//! the work per request (its span objects, processors and conversions; `benches/load.sh`, the
//! exporting read), so only metrics go through the SDK (its periodic reader and OTLP exporter).
//!
//! The standard `OTEL_*` variables are honoured: `OTEL_EXPORTER_OTLP_HEADERS` (and the
//! per-signal `…_TRACES_HEADERS`, `…_LOGS_HEADERS`, `…_METRICS_HEADERS`), `OTEL_SERVICE_NAME`
//! (default `flowgate`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and its argument (read
//! by the SDK's own sampler), the batch delays and sizes (`OTEL_BSP_*`, `OTEL_BLRP_*`) and the
//! metric interval; the queue sizes are ours.

mod frame;
pub mod ship;
pub mod wire;

pub use frame::export_request;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{IdGenerator, ShouldSample};

use super::WarnGate;
use super::security::AuditRecord;
use super::trace::FinishedSpan;
use ship::{Destination, Shipper};

/// Longest a collector may take to answer one export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// An exporter's failures are logged at most this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);
/// How long stopping waits for what is queued to be posted, per signal.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// What the process exports with, once started.
pub struct Exporting {
    pub spans: Shipper<FinishedSpan>,
    pub logs: Shipper<AuditRecord>,
    /// Which traces are recorded (`OTEL_TRACES_SAMPLER`, read by the SDK).
    pub sampler: Box<dyn ShouldSample>,
    /// Trace and span ids (the SDK's random generator, thread-local).
    pub ids: Box<dyn IdGenerator>,
    meter: opentelemetry::metrics::Meter,
}

static EXPORTING: OnceLock<Exporting> = OnceLock::new();

/// Counts of what was dropped and what failed, by signal, for `/metrics`.
#[derive(Debug, Default)]
pub struct Losses {
    pub dropped_spans: AtomicU64,
    pub dropped_logs: AtomicU64,
    pub failed_span_exports: AtomicU64,
    pub failed_log_exports: AtomicU64,
    pub failed_metric_exports: AtomicU64,
}

static LOSSES: Losses = Losses {
    dropped_spans: AtomicU64::new(0),
    dropped_logs: AtomicU64::new(0),
    failed_span_exports: AtomicU64::new(0),
    failed_log_exports: AtomicU64::new(0),
    failed_metric_exports: AtomicU64::new(0),
};

/// The process's export losses so far.
pub fn losses() -> &'static Losses {
    &LOSSES
}

/// What the process exports with, when exporting.
pub fn exporting() -> Option<&'static Exporting> {
    EXPORTING.get()
}

/// The meter, when metrics are exported.
pub fn meter() -> Option<&'static opentelemetry::metrics::Meter> {
    EXPORTING.get().map(|e| &e.meter)
}

/// Held while exporting; dropping it posts what is queued and stops the metric reader.
pub struct Exporters {
    metrics: SdkMeterProvider,
}

impl Drop for Exporters {
    fn drop(&mut self) {
        if let Some(exporting) = EXPORTING.get() {
            exporting.spans.flush(FLUSH_WAIT);
            exporting.logs.flush(FLUSH_WAIT);
        }
        // Shutting down exports the last metrics; a collector that is down costs the timeout.
        let _ = self.metrics.shutdown();
    }
}

/// Starts exporting to `endpoint` (an OTLP/HTTP base URL). Call before the async runtime
/// starts (the blocking HTTP clients must not be made or dropped inside it), once per process.
pub fn start(endpoint: &str) -> anyhow::Result<Exporters> {
    let base = endpoint.trim_end_matches('/');
    let resource = resource();
    let client = || {
        reqwest::blocking::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
    };
    let spans = Shipper::start(
        Destination::from_env(base, "/v1/traces", "TRACES", "OTEL_BSP", 5000),
        client()?,
        resource.clone(),
        &LOSSES.dropped_spans,
        Failures::new("traces", &LOSSES.failed_span_exports),
    )?;
    let logs = Shipper::start(
        Destination::from_env(base, "/v1/logs", "LOGS", "OTEL_BLRP", 1000),
        client()?,
        resource.clone(),
        &LOSSES.dropped_logs,
        Failures::new("logs", &LOSSES.failed_log_exports),
    )?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(format!("{base}/v1/metrics"))
        .with_timeout(EXPORT_TIMEOUT)
        .with_temporality(Temporality::Cumulative)
        .build()?;
    let metrics = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(
            PeriodicReader::builder(Counted {
                inner: metrics,
                failures: Failures::new("metrics", &LOSSES.failed_metric_exports),
            })
            .build(),
        )
        .build();
    let traces = opentelemetry_sdk::trace::Config::default();
    let exporting = Exporting {
        spans,
        logs,
        sampler: traces.sampler,
        ids: traces.id_generator,
        meter: metrics.meter("flowgate"),
    };
    if EXPORTING.set(exporting).is_err() {
        anyhow::bail!("telemetry export was already started");
    }
    Ok(Exporters { metrics })
}

/// The service's resource: `service.name` is `flowgate` unless `OTEL_SERVICE_NAME` (or
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) names it otherwise.
fn resource() -> Resource {
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attrs| {
            attrs
                .split(',')
                .any(|a| a.trim().starts_with("service.name="))
        });
    let builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if named {
        builder.build()
    } else {
        builder.with_service_name("flowgate").build()
    }
}

/// The SDK's metric exporter, with its failures counted and logged.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    failures: Failures,
}

impl<E: PushMetricExporter> PushMetricExporter for Counted<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if let Err(e) = &result {
            // The SDK's error names the collector's address and status, never our data.
            self.failures.note(&e.to_string());
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// An exporter's failures: counted, and logged at most once per [`FAILURE_LOG_EVERY`].
#[derive(Debug)]
pub struct Failures {
    signal: &'static str,
    count: &'static AtomicU64,
    logged: WarnGate,
}

impl Failures {
    pub fn new(signal: &'static str, count: &'static AtomicU64) -> Self {
        Failures {
            signal,
            count,
            logged: WarnGate::new(FAILURE_LOG_EVERY),
        }
    }

    /// Counts a failed export; `error` says what failed (the collector's address and answer,
    /// never what was exported).
    pub fn note(&self, error: &str) {
        let failures = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if self.logged.due() {
            tracing::warn!(
                signal = self.signal,
                failures,
                error,
                "OTLP export failed; telemetry is being dropped until the collector answers"
            );
        }
    }
}

/// The service's resource as OTLP, and its schema URL.
pub fn resource_proto(
    resource: &Resource,
) -> (opentelemetry_proto::tonic::resource::v1::Resource, String) {
    let converted =
        opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema::from(resource);
    (
        opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: converted.attributes.0,
            ..Default::default()
        },
        converted.schema_url.unwrap_or_default(),
    )
}

/// The instrumentation scope of everything Flowgate exports.
pub fn scope() -> opentelemetry_proto::tonic::common::v1::InstrumentationScope {
    opentelemetry_proto::tonic::common::v1::InstrumentationScope {
        name: "flowgate".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}
