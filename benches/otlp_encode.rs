//! Encoding one OTLP export request of 512 records shaped like Flowgate's (audit log records: a
//! 900-byte OCSF body and six attributes; request spans: ids, times and eight attributes), two
//! ways side by side in one run: built whole and encoded by prost (`encode_to_vec`), and framed
//! record by record (`telemetry::otlp::export_request`, what the export threads do). Both
//! include making the records' messages, as the threads do.
//!
//! `cargo bench --bench otlp_encode` prints the time per record of each and their ratio.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use flowgate::telemetry::otlp::export_request;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

const BATCH: usize = 512;

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn log_record(n: usize) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_764_900_000_000_000_000 + n as u64,
        observed_time_unix_nano: 1_764_900_000_000_000_500 + n as u64,
        severity_number: 9,
        severity_text: "INFO".to_owned(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue("o".repeat(900))),
        }),
        attributes: vec![
            text("flowgate.tenant", "bench"),
            int("flowgate.audit.seq", n as i64),
            text("flowgate.audit.hash", &"a".repeat(64)),
            text("flowgate.audit.action", "user.list"),
            text(
                "flowgate.request_id",
                "0193a7c4-5f7e-7c1a-9d2b-3e4f5a6b7c8d",
            ),
            int("ocsf.class_uid", 6003),
        ],
        event_name: "flowgate.audit".to_owned(),
        ..Default::default()
    }
}

fn span(n: usize) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: (n as u64).to_be_bytes().to_vec(),
        name: "GET /t/{tenant}/api/v1/users".to_owned(),
        kind: 2,
        start_time_unix_nano: 1_764_900_000_000_000_000 + n as u64,
        end_time_unix_nano: 1_764_900_000_000_090_000 + n as u64,
        attributes: vec![
            text("http.request.method", "GET"),
            text("http.route", "/t/{tenant}/api/v1/users"),
            int("http.response.status_code", 200),
            text("flowgate.tenant", "bench"),
            text("flowgate.principal.type", "service_account"),
            text(
                "flowgate.principal.id",
                "0193a7c4-5f7e-7c1a-9d2b-3e4f5a6b7c8d",
            ),
            text("flowgate.action", "user.list"),
            text("flowgate.decision", "allow"),
        ],
        ..Default::default()
    }
}

fn resource() -> Resource {
    Resource {
        attributes: vec![text("service.name", "flowgate"), text("host.name", "bench")],
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "flowgate".to_owned(),
        version: "0.1.0".to_owned(),
        ..Default::default()
    }
}

fn whole_logs() -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource()),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: (0..BATCH).map(log_record).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn framed_logs() -> Vec<u8> {
    export_request(&resource(), "", &scope(), (0..BATCH).map(log_record))
}

fn whole_spans() -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans: (0..BATCH).map(span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn framed_spans() -> Vec<u8> {
    export_request(&resource(), "", &scope(), (0..BATCH).map(span))
}

/// Median nanoseconds per record of `encode`, over rounds of about 0.2 s.
fn per_record(encode: fn() -> Vec<u8>) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..9 {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < Duration::from_millis(200) {
            black_box(encode());
            n += 1;
        }
        rounds.push(start.elapsed().as_nanos() as f64 / f64::from(n) / BATCH as f64);
    }
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    assert_eq!(whole_logs(), framed_logs());
    assert_eq!(whole_spans(), framed_spans());
    println!("512 records    whole (prost)   framed   framed/whole");
    for (name, whole, framed) in [
        (
            "log records",
            whole_logs as fn() -> Vec<u8>,
            framed_logs as fn() -> Vec<u8>,
        ),
        ("spans", whole_spans, framed_spans),
    ] {
        let (whole, framed) = (per_record(whole), per_record(framed));
        println!(
            "{name:<12}  {whole:>9.0} ns   {framed:>6.0} ns   {:.2}",
            framed / whole
        );
    }
}
