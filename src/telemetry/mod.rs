//! Logs, metrics, traces and security events.
//!
//! Logs are JSON lines on stdout with the request id on every line of a request; spans that see
//! credentials skip their fields. The server collects them in memory and writes them from a
//! thread of its own ([`log_buffer`]), so a slow stdout never slows a request: lines beyond the
//! buffer are dropped and counted (`flowgate_log_lines_dropped_total`); the audit trail, not the
//! log, is the record.
//! Metrics are Prometheus text, served on `/metrics`, and the same over OTLP when exporting
//! ([`otlp`]). Label values come from small fixed sets (never from request text: a route is the
//! matched template, not the path) so a caller cannot grow the series.
//! Traces ([`trace`]) and security events ([`security`]) are exported over OTLP.

mod json_line;
mod log_buffer;
pub mod otlp;
pub mod security;
pub mod trace;
mod warn_gate;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

pub use log_buffer::Flusher;
use log_buffer::{LineWriter, LogBuffer};
pub use warn_gate::WarnGate;

/// The server's log buffer, once its logging is installed (for the dropped-lines metric).
static SERVER_LOG: OnceLock<Arc<LogBuffer>> = OnceLock::new();

/// Where log lines go: the server logs to stdout; commands keep stdout for their output.
#[derive(Debug, Clone, Copy)]
pub enum LogTarget {
    Stdout,
    Stderr,
}

/// Installs the JSON log subscriber once; later calls (tests) keep the first. The server's
/// lines are written by the flusher returned: keep it until exit, when it writes the last ones.
pub fn init_logging(filter: &str, target: LogTarget) -> Option<Flusher> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .event_format(json_line::JsonLine)
        .with_env_filter(filter);
    match target {
        LogTarget::Stdout => {
            let buffer = Arc::new(LogBuffer::default());
            let flusher = Flusher::start(Arc::clone(&buffer), std::io::stdout()).ok()?;
            let lines = Arc::clone(&buffer);
            builder
                .with_writer(move || LineWriter(Arc::clone(&lines)))
                .try_init()
                .ok()?;
            let _ = SERVER_LOG.set(buffer);
            Some(flusher)
        }
        LogTarget::Stderr => {
            let _ = builder.with_writer(std::io::stderr).try_init();
            None
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    signal: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    signal: &'static str,
}

/// The process's metrics, recorded by every part of it.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Exports the connection pools' saturation over OTLP (`flowgate.db.pool.in_use`, by pool), read
/// from `usage` (name, in use, size) at each export; nothing when not exporting.
pub fn observe_pools(usage: impl Fn() -> Vec<(&'static str, u32, u32)> + Send + Sync + 'static) {
    if let Some(meter) = otlp::meter() {
        // Kept by the meter provider for the life of the process.
        let _gauge = meter
            .i64_observable_gauge("flowgate.db.pool.in_use")
            .with_description("Tenant database connections handed out, and the pool size")
            .with_callback(move |observer| {
                for (pool, in_use, size) in usage() {
                    observer.observe(
                        i64::from(in_use),
                        &[
                            KeyValue::new("pool", pool),
                            KeyValue::new("size", i64::from(size)),
                        ],
                    );
                }
            })
            .build();
    }
}

/// The route label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    decisions: Family<DecisionLabels, Counter>,
    logins: Family<LoginLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    audit_batch: Histogram,
    audit_lag: Histogram,
    dropped_log_lines: Counter,
    /// The dropped lines already added to `dropped_log_lines`.
    dropped_log_lines_seen: AtomicU64,
    telemetry_dropped: Family<SignalLabels, Counter>,
    telemetry_failures: Family<SignalLabels, Counter>,
    signals: Family<KindLabels, Counter>,
    signal_feed_dropped: Counter,
    signals_dropped: Counter,
    alerts: Family<OutcomeLabels, Counter>,
    caches: Family<CacheLabels, Counter>,
    pool_in_use: Family<PoolLabels, Gauge>,
    pool_size: Family<PoolLabels, Gauge>,
    /// Renders one at a time: each brings the loss counters up to the exporters' counts.
    render_lock: std::sync::Mutex<()>,
    /// The same measurements over OTLP, when exporting.
    otel: Option<Instruments>,
}

/// The OpenTelemetry instruments mirroring the Prometheus ones.
struct Instruments {
    duration: opentelemetry::metrics::Histogram<f64>,
    decisions: opentelemetry::metrics::Counter<u64>,
    logins: opentelemetry::metrics::Counter<u64>,
    rate_limited: opentelemetry::metrics::Counter<u64>,
    audit_batch: opentelemetry::metrics::Histogram<u64>,
    audit_lag: opentelemetry::metrics::Histogram<f64>,
    caches: opentelemetry::metrics::Counter<u64>,
}

impl Instruments {
    fn new(meter: &opentelemetry::metrics::Meter) -> Self {
        Instruments {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Time to answer HTTP requests")
                .build(),
            decisions: meter
                .u64_counter("flowgate.authz.decisions")
                .with_description("Authorization decisions")
                .build(),
            logins: meter
                .u64_counter("flowgate.logins")
                .with_description("Sign-ins and credential checks, by method and outcome")
                .build(),
            rate_limited: meter
                .u64_counter("flowgate.rate_limit.refusals")
                .with_description("Requests refused by a rate limit")
                .build(),
            audit_batch: meter
                .u64_histogram("flowgate.audit.batch.size")
                .with_description("Events appended by one flush of the audit writer")
                .build(),
            audit_lag: meter
                .f64_histogram("flowgate.audit.lag")
                .with_unit("s")
                .with_description("Time from an event to its flush being durable")
                .build(),
            caches: meter
                .u64_counter("flowgate.cache.lookups")
                .with_description("Lookups of the in-memory records authentication reads")
                .build(),
        }
    }
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("flowgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        let logins = Family::<LoginLabels, Counter>::default();
        let rate_limited = Family::<LimitLabels, Counter>::default();
        let audit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let audit_lag = duration_histogram();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests",
            latency.clone(),
        );
        registry.register(
            "authz_decisions",
            "Authorization decisions",
            decisions.clone(),
        );
        registry.register(
            "logins",
            "Sign-ins and credential checks, by method and outcome",
            logins.clone(),
        );
        registry.register(
            "rate_limit_refusals",
            "Requests refused by a rate limit",
            rate_limited.clone(),
        );
        registry.register(
            "audit_batch_size",
            "Events appended by one flush of the audit writer",
            audit_batch.clone(),
        );
        registry.register(
            "audit_lag_seconds",
            "Time from an event to its flush being durable",
            audit_lag.clone(),
        );
        let dropped_log_lines = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log queue was full",
            dropped_log_lines.clone(),
        );
        let telemetry_dropped = Family::<SignalLabels, Counter>::default();
        registry.register(
            "telemetry_dropped",
            "Spans and log records dropped because the export queue was full",
            telemetry_dropped.clone(),
        );
        let telemetry_failures = Family::<SignalLabels, Counter>::default();
        registry.register(
            "telemetry_export_failures",
            "OTLP exports that failed",
            telemetry_failures.clone(),
        );
        let signals = Family::<KindLabels, Counter>::default();
        registry.register(
            "signals",
            "Security signals raised, by kind",
            signals.clone(),
        );
        let signal_feed_dropped = Counter::default();
        registry.register(
            "signal_events_dropped",
            "Audit events the detectors never saw because their feed was full",
            signal_feed_dropped.clone(),
        );
        let signals_dropped = Counter::default();
        registry.register(
            "signals_dropped",
            "Signals not raised because their tenant had too many being raised at once",
            signals_dropped.clone(),
        );
        let alerts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "alerts",
            "Alert webhook deliveries, by outcome (delivered, failed, dropped)",
            alerts.clone(),
        );
        let caches = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Lookups of the in-memory records authentication reads, by cache and outcome (hit, miss)",
            caches.clone(),
        );
        let pool_in_use = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections_in_use",
            "Tenant database connections handed out (PostgreSQL)",
            pool_in_use.clone(),
        );
        let pool_size = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections_max",
            "Size of each tenant connection pool (PostgreSQL)",
            pool_size.clone(),
        );
        Metrics {
            registry,
            caches,
            pool_in_use,
            pool_size,
            signals,
            signal_feed_dropped,
            signals_dropped,
            alerts,
            requests,
            latency,
            decisions,
            logins,
            rate_limited,
            audit_batch,
            audit_lag,
            dropped_log_lines,
            dropped_log_lines_seen: AtomicU64::new(0),
            telemetry_dropped,
            telemetry_failures,
            render_lock: std::sync::Mutex::new(()),
            otel: otlp::meter().map(Instruments::new),
        }
    }

    /// A request answered: `route` is the matched template ([`UNMATCHED_ROUTE`] when none).
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method,
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        if let Some(otel) = &self.otel {
            otel.duration.record(
                elapsed.as_secs_f64(),
                &[
                    KeyValue::new("http.request.method", method),
                    KeyValue::new("http.route", route.to_owned()),
                    KeyValue::new("http.response.status_code", i64::from(status)),
                ],
            );
        }
    }

    pub fn observe_decision(&self, allowed: bool) {
        let decision = if allowed { "allow" } else { "deny" };
        self.decisions
            .get_or_create(&DecisionLabels { decision })
            .inc();
        if let Some(otel) = &self.otel {
            otel.decisions
                .add(1, &[KeyValue::new("decision", decision)]);
        }
    }

    /// A sign-in or credential check by `method` (`sso`, `passkey`, …).
    pub fn observe_login(&self, method: &'static str, succeeded: bool) {
        let outcome = if succeeded { "success" } else { "failure" };
        self.logins
            .get_or_create(&LoginLabels { method, outcome })
            .inc();
        if let Some(otel) = &self.otel {
            otel.logins.add(
                1,
                &[
                    KeyValue::new("method", method),
                    KeyValue::new("outcome", outcome),
                ],
            );
        }
    }

    /// A request refused by the rate limit named `limit`.
    pub fn observe_rate_limited(&self, limit: &'static str) {
        self.rate_limited
            .get_or_create(&LimitLabels { limit })
            .inc();
        if let Some(otel) = &self.otel {
            otel.rate_limited.add(1, &[KeyValue::new("limit", limit)]);
        }
    }

    /// A flush of the audit writer: `events` appended, the oldest `lag` after it happened.
    pub fn observe_audit_flush(&self, events: usize, lag: Duration) {
        self.audit_batch.observe(events as f64);
        self.audit_lag.observe(lag.as_secs_f64());
        if let Some(otel) = &self.otel {
            otel.audit_batch.record(events as u64, &[]);
            otel.audit_lag.record(lag.as_secs_f64(), &[]);
        }
    }

    /// A lookup of the in-memory records of `cache`.
    pub fn observe_cache(&self, cache: &'static str, hit: bool) {
        let outcome = if hit { "hit" } else { "miss" };
        self.caches
            .get_or_create(&CacheLabels { cache, outcome })
            .inc();
        if let Some(otel) = &self.otel {
            otel.caches.add(
                1,
                &[
                    KeyValue::new("cache", cache),
                    KeyValue::new("outcome", outcome),
                ],
            );
        }
    }

    /// A security signal of `kind` raised.
    pub fn observe_signal(&self, kind: &'static str) {
        self.signals
            .get_or_create(&KindLabels { signal: kind })
            .inc();
    }

    /// A signal not raised: its tenant had too many being raised at once.
    pub fn observe_signal_dropped(&self) {
        self.signals_dropped.inc();
    }

    /// `events` the detectors will never see (their feed was full).
    pub fn observe_signal_feed_dropped(&self, events: usize) {
        self.signal_feed_dropped.inc_by(events as u64);
    }

    /// An alert webhook delivery that ended with `outcome`.
    pub fn observe_alert(&self, outcome: &'static str) {
        self.alerts.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The Prometheus text exposition, with the connection pools' `pools` usage (name, in use,
    /// size).
    pub fn render(&self, pools: &[(&'static str, u32, u32)]) -> String {
        let _one_at_a_time = self.render_lock.lock().unwrap_or_else(|p| p.into_inner());
        for &(pool, in_use, size) in pools {
            let labels = PoolLabels { pool };
            self.pool_in_use
                .get_or_create(&labels)
                .set(i64::from(in_use));
            self.pool_size.get_or_create(&labels).set(i64::from(size));
        }
        if let Some(log) = SERVER_LOG.get() {
            let now = log.dropped();
            let before = self.dropped_log_lines_seen.swap(now, Ordering::Relaxed);
            self.dropped_log_lines.inc_by(now.saturating_sub(before));
        }
        let losses = otlp::losses();
        for (family, signal, count) in [
            (&self.telemetry_dropped, "traces", &losses.dropped_spans),
            (&self.telemetry_dropped, "logs", &losses.dropped_logs),
            (
                &self.telemetry_failures,
                "traces",
                &losses.failed_span_exports,
            ),
            (&self.telemetry_failures, "logs", &losses.failed_log_exports),
            (
                &self.telemetry_failures,
                "metrics",
                &losses.failed_metric_exports,
            ),
        ] {
            let counter = family.get_or_create(&SignalLabels { signal });
            let now = count.load(Ordering::Relaxed);
            counter.inc_by(now.saturating_sub(counter.get()));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}
