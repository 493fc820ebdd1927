//! Logs and metrics.
//!
//! Logs are JSON lines on stdout with the request id on every line of a request; spans that see
//! credentials skip their fields. Metrics are Prometheus text, served on `/metrics`. Label values
//! come from small fixed sets (never from request text) so a caller cannot grow the series.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// Where log lines go: the server logs to stdout; commands keep stdout for their output.
#[derive(Debug, Clone, Copy)]
pub enum LogTarget {
    Stdout,
    Stderr,
}

/// Installs the JSON log subscriber once; later calls (tests) keep the first.
pub fn init_logging(filter: &str, target: LogTarget) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter);
    let _ = match target {
        LogTarget::Stdout => builder.with_writer(std::io::stdout).try_init(),
        LogTarget::Stderr => builder.with_writer(std::io::stderr).try_init(),
    };
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
        Metrics {
            registry,
            requests,
            latency,
            decisions,
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
