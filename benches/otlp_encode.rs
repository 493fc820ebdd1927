//! Encoding one OTLP logs export request of 512 audit events shaped like a page read's (an OCSF
//! body of about 900 bytes and six attributes), two ways side by side in one run: making
//! `opentelemetry-proto`'s messages (the OCSF body serialized into a `String`, the attributes
//! converted by the protocol crate) and encoding the request with prost, as the export threads
//! did; and writing each record straight into the request's bytes (`Signal::encode` of
//! `telemetry::security::AuditRecord`, what they do now). Both include serializing the OCSF
//! events. Spans are written by the same attribute writer (`telemetry::otlp::wire`).
//!
//! `cargo bench --bench otlp_encode` prints the time per record of each and their ratio.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use entity::tenant::audit_event;
use flowgate::telemetry::otlp::ship::Signal as _;
use flowgate::telemetry::security::{AuditRecord, ocsf_class, write_ocsf};
use flowgate::telemetry::trace::unix_nanos;
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::transform::common::tonic::{Attributes, ResourceAttributesWithSchema};
use opentelemetry_sdk::Resource;
use prost::Message as _;

const BATCH: usize = 512;

fn rows() -> Arc<[audit_event::Model]> {
    (0..BATCH)
        .map(|n| audit_event::Model {
            seq: n as i64 + 1,
            id: uuid::Uuid::new_v4(),
            occurred_at: chrono::Utc::now(),
            request_id: "0193a7c45f7e7c1a9d2b3e4f5a6b7c8d".into(),
            actor_type: "service_account".into(),
            actor_id: "0193a7c4-5f7e-7c1a-9d2b-3e4f5a6b7c8d".into(),
            action: "user.list".into(),
            resource_type: "tenant".into(),
            resource_id: Some("bench".into()),
            decision: "allow".into(),
            status: 200,
            source_ip: Some("127.0.0.1".into()),
            user_agent: Some("wrk".into()),
            details: serde_json::json!({"method": "GET", "path": "/t/bench/api/v1/users",
                "credential_id": "0193a7c4-5f7e-7c1a-9d2b-3e4f5a6b7c8d", "policies": ["admin"]}),
            prev_hash: "b".repeat(64),
            hash: "a".repeat(64),
        })
        .collect::<Vec<_>>()
        .into()
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("flowgate")
        .with_attribute(KeyValue::new("host.name", "bench"))
        .build()
}

/// The log record of `row` as `opentelemetry-proto`'s message.
fn message(trail: &str, row: &audit_event::Model, observed: SystemTime) -> LogRecord {
    let mut body = Vec::with_capacity(1536);
    write_ocsf(trail, row, &mut body);
    LogRecord {
        time_unix_nano: unix_nanos(row.occurred_at.into()),
        observed_time_unix_nano: unix_nanos(observed),
        severity_number: 9,
        severity_text: "INFO".to_owned(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(
                String::from_utf8(body).unwrap(),
            )),
        }),
        attributes: Attributes::from(vec![
            KeyValue::new("flowgate.tenant", trail.to_owned()),
            KeyValue::new("flowgate.audit.seq", row.seq),
            KeyValue::new("flowgate.audit.hash", row.hash.clone()),
            KeyValue::new("flowgate.audit.action", row.action.clone()),
            KeyValue::new("flowgate.request_id", row.request_id.clone()),
            KeyValue::new(
                "ocsf.class_uid",
                i64::from(ocsf_class(&row.action).class_uid),
            ),
        ])
        .0,
        event_name: "flowgate.audit".to_owned(),
        ..Default::default()
    }
}

fn with_messages(rows: &Arc<[audit_event::Model]>, resource: &Resource) -> Vec<u8> {
    let observed = SystemTime::now();
    let converted = ResourceAttributesWithSchema::from(resource);
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: converted.attributes.0,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "flowgate".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                log_records: rows.iter().map(|r| message("bench", r, observed)).collect(),
                schema_url: String::new(),
            }],
            schema_url: converted.schema_url.unwrap_or_default(),
        }],
    }
    .encode_to_vec()
}

fn written(rows: &Arc<[audit_event::Model]>, resource: &Resource) -> Vec<u8> {
    let observed = SystemTime::now();
    let trail: Arc<str> = Arc::from("bench");
    let batch = (0..rows.len())
        .map(|index| AuditRecord::new(Arc::clone(&trail), Arc::clone(rows), index, observed))
        .collect();
    AuditRecord::encode(batch, resource)
}

type Encode = fn(&Arc<[audit_event::Model]>, &Resource) -> Vec<u8>;

/// Median nanoseconds per record of `encode`, over rounds of about 0.2 s.
fn per_record(encode: Encode, rows: &Arc<[audit_event::Model]>, resource: &Resource) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..9 {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < Duration::from_millis(200) {
            black_box(encode(rows, resource));
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
    let (rows, resource) = (rows(), resource());
    // The same request, but for the observed times each makes.
    let decode = |bytes: Vec<u8>| {
        let mut request = ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
        for record in &mut request.resource_logs[0].scope_logs[0].log_records {
            record.observed_time_unix_nano = 0;
        }
        request
    };
    assert_eq!(
        decode(with_messages(&rows, &resource)),
        decode(written(&rows, &resource))
    );
    println!("512 audit log records   prost messages   written   written/messages");
    let messages = per_record(with_messages, &rows, &resource);
    let written = per_record(written, &rows, &resource);
    println!(
        "per record              {messages:>11.0} ns   {written:>5.0} ns   {:.2}",
        written / messages
    );
}
