//! One OTLP export request of spans or log records, framed around records written one by one.
//!
//! prost encodes a message by asking each nested message its length at every level above it:
//! an export request built whole (request → resource's entry → scope's entry → record →
//! attribute → value) measured every attribute of every record five times. Here the records
//! are written as they are made ([`super::wire`]), each entry of the scope's (field 2), and the
//! two entries that enclose them are framed around their bytes. The bytes are those of the whole
//! message (fields in tag order, empty ones left out), as a test checks against prost's own
//! encoding.
//!
//! The frame is the one the traces and the logs requests share
//! (`opentelemetry/proto/collector/{trace,logs}/v1`): field 1 of the request is the resource's
//! entry (`ResourceSpans`, `ResourceLogs`), whose field 1 is the resource, 2 the scope's entry
//! and 3 the schema URL; field 1 of the scope's entry (`ScopeSpans`, `ScopeLogs`) is the
//! instrumentation scope, 2 each record, and 3 its schema URL (never set here).

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::wire::{framed_len, length_prefix};

/// Appends field `tag` holding `message`. A `Vec` always has room: prost's only error (a buffer
/// too small) cannot occur.
fn message_field(tag: u32, message: &impl Message, out: &mut Vec<u8>) {
    length_prefix(tag, message.encoded_len(), out);
    let _ = message.encode(out);
}

/// The export request of `encoded`, spans or log records each written as field 2 of the scope's
/// entry, from `resource` (with its schema URL) under `scope`.
pub fn export_request(
    resource: &Resource,
    schema_url: &str,
    scope: &InstrumentationScope,
    encoded: &[u8],
) -> Vec<u8> {
    let scope_entry = framed_len(1, scope.encoded_len()) + encoded.len();
    let schema = if schema_url.is_empty() {
        0
    } else {
        framed_len(3, schema_url.len())
    };
    let resource_entry =
        framed_len(1, resource.encoded_len()) + framed_len(2, scope_entry) + schema;
    let mut out = Vec::with_capacity(framed_len(1, resource_entry));
    length_prefix(1, resource_entry, &mut out);
    message_field(1, resource, &mut out);
    length_prefix(2, scope_entry, &mut out);
    message_field(1, scope, &mut out);
    out.extend_from_slice(encoded);
    if !schema_url.is_empty() {
        length_prefix(3, schema_url.len(), &mut out);
        out.extend_from_slice(schema_url.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn attribute(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..Default::default()
        }
    }

    fn resource() -> Resource {
        Resource {
            attributes: vec![attribute("service.name", "flowgate")],
            ..Default::default()
        }
    }

    fn scope() -> InstrumentationScope {
        InstrumentationScope {
            name: "flowgate".to_owned(),
            version: "1.2.3".to_owned(),
            ..Default::default()
        }
    }

    /// A record long enough that its length takes two varint bytes, and one that is short.
    fn records() -> Vec<LogRecord> {
        vec![
            LogRecord {
                time_unix_nano: 1,
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("x".repeat(300))),
                }),
                attributes: vec![attribute("flowgate.audit.seq", "7")],
                event_name: "flowgate.audit".to_owned(),
                ..Default::default()
            },
            LogRecord {
                severity_number: 13,
                ..Default::default()
            },
        ]
    }

    /// `records`, each as field 2 (how the export threads write theirs, with prost here).
    fn encoded<M: Message>(records: Vec<M>) -> Vec<u8> {
        let mut out = Vec::new();
        for record in records {
            message_field(2, &record, &mut out);
        }
        out
    }

    /// The framed request is byte for byte the message prost encodes whole, with and without a
    /// schema URL, for logs and for spans, and for a batch of none.
    #[test]
    fn the_framed_request_is_the_whole_message() {
        for schema_url in ["", "https://opentelemetry.io/schemas/1.30.0"] {
            let whole = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(resource()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope()),
                        log_records: records(),
                        schema_url: String::new(),
                    }],
                    schema_url: schema_url.to_owned(),
                }],
            };
            let framed = export_request(&resource(), schema_url, &scope(), &encoded(records()));
            assert_eq!(framed, whole.encode_to_vec());
            assert_eq!(
                ExportLogsServiceRequest::decode(framed.as_slice()).unwrap(),
                whole
            );
        }

        let spans = || {
            vec![Span {
                name: "GET /t/{tenant}/api/v1/users".to_owned(),
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                attributes: vec![attribute("flowgate.tenant", "acme")],
                ..Default::default()
            }]
        };
        let whole = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans: spans(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        assert_eq!(
            export_request(&resource(), "", &scope(), &encoded(spans())),
            whole.encode_to_vec()
        );

        let empty = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
        };
        assert_eq!(
            export_request(&resource(), "", &scope(), &[]),
            empty.encode_to_vec()
        );
    }
}
