//! Export over OTLP/HTTP (protobuf) when `FLOWGATE_OTLP_ENDPOINT` is set: traces to
//! `/v1/traces`, metrics to `/v1/metrics`, logs (every audit event, see [`super::security`]) to
//! `/v1/logs`.
//!
//! Invariant: exporting never waits inside a request. Spans and log records go into bounded
//! queues that the SDK's batch processors drain from threads of their own (with the blocking
//! HTTP client); a record that finds its queue full is dropped and counted
//! (`flowgate_telemetry_dropped_total{signal}`), and an export that fails is counted
//! (`flowgate_telemetry_export_failures_total{signal}`) and logged at most once a minute per
//! signal. The standard `OTEL_*` variables are read by the SDK: `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_SERVICE_NAME` (default `flowgate`), `OTEL_RESOURCE_ATTRIBUTES`, the batch delays and the
//! metric interval; the queue sizes are ours.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{logs::LoggerProvider as _, metrics::MeterProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    BatchLogProcessor, LogBatch, LogExporter, LogProcessor, SdkLogRecord, SdkLogger,
    SdkLoggerProvider,
};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};

/// Spans and log records waiting for export, each; beyond it they are dropped.
const QUEUE: usize = 4096;
/// Longest a collector may take to answer one export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// An exporter's failures are logged at most this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the process exports with, once started.
struct Exporting {
    tracer: SdkTracer,
    logger: SdkLogger,
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

/// The tracer, when spans are exported.
pub fn tracer() -> Option<&'static SdkTracer> {
    EXPORTING.get().map(|e| &e.tracer)
}

/// The logger, when logs are exported.
pub fn logger() -> Option<&'static SdkLogger> {
    EXPORTING.get().map(|e| &e.logger)
}

/// The meter, when metrics are exported.
pub fn meter() -> Option<&'static opentelemetry::metrics::Meter> {
    EXPORTING.get().map(|e| &e.meter)
}

/// The providers; dropping this flushes what is queued and stops the exporters' threads.
pub struct Exporters {
    traces: SdkTracerProvider,
    logs: SdkLoggerProvider,
    metrics: SdkMeterProvider,
}

impl Drop for Exporters {
    fn drop(&mut self) {
        // Shutting down flushes; a collector that is down only costs the export timeout.
        let _ = self.traces.shutdown();
        let _ = self.logs.shutdown();
        let _ = self.metrics.shutdown();
    }
}

/// Starts exporting to `endpoint` (an OTLP/HTTP base URL). Call before the async runtime
/// starts (the blocking HTTP client must not be made or dropped inside it), once per process.
pub fn start(endpoint: &str) -> anyhow::Result<Exporters> {
    let base = endpoint.trim_end_matches('/');
    let resource = resource();
    let timeout = EXPORT_TIMEOUT;
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{base}/v1/traces"))
        .with_timeout(timeout)
        .build()?;
    let logs = opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_endpoint(format!("{base}/v1/logs"))
        .with_timeout(timeout)
        .build()?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(format!("{base}/v1/metrics"))
        .with_timeout(timeout)
        .with_temporality(Temporality::Cumulative)
        .build()?;
    let spans_in_flight = Arc::new(AtomicUsize::new(0));
    let span_processor = BatchSpanProcessor::builder(Counted {
        inner: spans,
        in_flight: Arc::clone(&spans_in_flight),
        failures: Failures::new("traces", &LOSSES.failed_span_exports),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .build(),
    )
    .build();
    let traces = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_span_processor(Bounded {
            inner: span_processor,
            in_flight: spans_in_flight,
            dropped: &LOSSES.dropped_spans,
        })
        .build();
    let logs_in_flight = Arc::new(AtomicUsize::new(0));
    let log_processor = BatchLogProcessor::builder(Counted {
        inner: logs,
        in_flight: Arc::clone(&logs_in_flight),
        failures: Failures::new("logs", &LOSSES.failed_log_exports),
    })
    .with_batch_config(
        opentelemetry_sdk::logs::BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .build(),
    )
    .build();
    let logs = SdkLoggerProvider::builder()
        .with_resource(resource.clone())
        .with_log_processor(Bounded {
            inner: log_processor,
            in_flight: logs_in_flight,
            dropped: &LOSSES.dropped_logs,
        })
        .build();
    let metrics = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(
            PeriodicReader::builder(Counted {
                inner: metrics,
                in_flight: Arc::new(AtomicUsize::new(0)),
                failures: Failures::new("metrics", &LOSSES.failed_metric_exports),
            })
            .build(),
        )
        .build();
    let exporting = Exporting {
        tracer: traces.tracer("flowgate"),
        logger: logs.logger("flowgate"),
        meter: metrics.meter("flowgate"),
    };
    if EXPORTING.set(exporting).is_err() {
        anyhow::bail!("telemetry export was already started");
    }
    Ok(Exporters {
        traces,
        logs,
        metrics,
    })
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

/// A processor in front of the SDK's batch processor that keeps its queue from filling: a record
/// beyond [`QUEUE`] in flight is dropped here, where it is counted.
#[derive(Debug)]
struct Bounded<P> {
    inner: P,
    in_flight: Arc<AtomicUsize>,
    dropped: &'static AtomicU64,
}

impl<P> Bounded<P> {
    /// Takes a place in the queue, or counts a drop.
    fn admit(&self) -> bool {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= QUEUE {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // The batch processor keeps sampled spans only; only those are counted in.
        if span.span_context.is_sampled() && self.admit() {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<P: LogProcessor> LogProcessor for Bounded<P> {
    fn emit(&self, record: &mut SdkLogRecord, scope: &opentelemetry::InstrumentationScope) {
        if self.admit() {
            self.inner.emit(record, scope);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter that gives back the places of what it exported (sent or failed) and counts
/// and logs its failures.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    in_flight: Arc<AtomicUsize>,
    failures: Failures,
}

impl<E> Counted<E> {
    fn settle(&self, records: usize, result: OTelSdkResult) -> OTelSdkResult {
        self.in_flight.fetch_sub(records, Ordering::AcqRel);
        if let Err(e) = &result {
            self.failures.note(e);
        }
        result
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let records = batch.len();
        let result = self.inner.export(batch).await;
        self.settle(records, result)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for Counted<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let records = batch.iter().count();
        let result = self.inner.export(batch).await;
        self.settle(records, result)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Counted<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.settle(0, result)
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
struct Failures {
    signal: &'static str,
    count: &'static AtomicU64,
    logged_at: std::sync::Mutex<Option<Instant>>,
}

impl Failures {
    fn new(signal: &'static str, count: &'static AtomicU64) -> Self {
        Failures {
            signal,
            count,
            logged_at: std::sync::Mutex::new(None),
        }
    }

    fn note(&self, error: &opentelemetry_sdk::error::OTelSdkError) {
        let failures = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged_at = self.logged_at.lock().unwrap_or_else(|p| p.into_inner());
        if logged_at.is_none_or(|at| at.elapsed() >= FAILURE_LOG_EVERY) {
            *logged_at = Some(Instant::now());
            // The SDK's error names the collector's address and status, never our data.
            tracing::warn!(signal = self.signal, failures, error = %error, "OTLP export failed; telemetry is being dropped until the collector answers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_beyond_the_queue_are_dropped_and_counted_and_exports_give_their_places_back() {
        static DROPPED: AtomicU64 = AtomicU64::new(0);
        static FAILED: AtomicU64 = AtomicU64::new(0);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let bounded = Bounded {
            inner: (),
            in_flight: Arc::clone(&in_flight),
            dropped: &DROPPED,
        };
        for _ in 0..QUEUE {
            assert!(bounded.admit());
        }
        assert!(!bounded.admit(), "the queue is full");
        assert!(!bounded.admit());
        assert_eq!(DROPPED.load(Ordering::Relaxed), 2);
        assert_eq!(in_flight.load(Ordering::Relaxed), QUEUE);
        let exporter = Counted {
            inner: (),
            in_flight: Arc::clone(&in_flight),
            failures: Failures::new("traces", &FAILED),
        };
        // A failed export gives its places back too, and is counted.
        let failed = exporter.settle(
            10,
            Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                "collector down".into(),
            )),
        );
        assert!(failed.is_err());
        assert_eq!(FAILED.load(Ordering::Relaxed), 1);
        assert!(exporter.settle(QUEUE - 10, Ok(())).is_ok());
        assert_eq!(in_flight.load(Ordering::Relaxed), 0);
        assert!(bounded.admit(), "room again once exported");
    }
}
