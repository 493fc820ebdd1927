//! Logs and metrics.
//!
//! Logs are JSON lines on stdout with the request id on every line of a request; spans that see
//! credentials skip their fields. The server collects them in memory and writes them from a
//! thread of its own ([`log_buffer`]), so a slow stdout never slows a request: lines beyond the
//! buffer are dropped and counted (`flowgate_log_lines_dropped_total`); the audit trail, not the
//! log, is the record.
//! Metrics are Prometheus text, served on `/metrics`. Label values come from small fixed sets
//! (never from request text) so a caller cannot grow the series.

mod json_line;
mod log_buffer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

pub use log_buffer::Flusher;
use log_buffer::{LineWriter, LogBuffer};

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
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    decisions: Family<DecisionLabels, Counter>,
    dropped_log_lines: Counter,
    /// The dropped lines already added to `dropped_log_lines`.
    dropped_log_lines_seen: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flowgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        let decisions = Family::<DecisionLabels, Counter>::default();
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
        let dropped_log_lines = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log queue was full",
            dropped_log_lines.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            decisions,
            dropped_log_lines,
            dropped_log_lines_seen: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn observe_request(&self, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                status,
            })
            .inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    pub fn observe_decision(&self, allowed: bool) {
        let decision = if allowed { "allow" } else { "deny" };
        self.decisions
            .get_or_create(&DecisionLabels { decision })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        if let Some(log) = SERVER_LOG.get() {
            let now = log.dropped();
            let before = self.dropped_log_lines_seen.swap(now, Ordering::Relaxed);
            self.dropped_log_lines.inc_by(now.saturating_sub(before));
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
