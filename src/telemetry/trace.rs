//! Trace context: the W3C `traceparent` a caller sends, the request's own span, and the child
//! spans of what a request waits for (the database, the key store, outbound calls).
//!
//! Every request has a trace id and a span id, exported or not: they are on every log line and
//! in every problem response, so a caller's report can be found in the logs. A valid
//! `traceparent` from the caller makes the request part of the caller's trace; an invalid one is
//! ignored (W3C Trace Context: restart the trace). When OTLP export is on ([`super::otlp`]) and
//! the SDK's sampler (`OTEL_TRACES_SAMPLER`) keeps the trace, the request's span is recorded in
//! a compact form ([`FinishedSpan`]) and ended with its route, status and the facts the pipeline
//! learnt (tenant, principal, action, decision); the export thread turns it into OTLP. Spans
//! never carry a credential, a secret value, a query string or a request body — only ids.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_proto::tonic::trace::v1 as proto;
use opentelemetry_sdk::trace::SamplingDecision;

use super::otlp::{self, ship::Signal, wire};

/// The `traceparent` a caller sent: the trace the request joins and its parent span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` header value (W3C Trace Context level 1): `None` for anything
    /// malformed, an all-zero id, or the forbidden version `ff`. A later version is read by its
    /// first four fields, as the specification asks.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let fields = value.get(..55)?;
        let rest = &value[55..];
        let mut parts = fields.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let well_formed = lower_hex(version, 2)
            && lower_hex(trace, 32)
            && lower_hex(span, 16)
            && lower_hex(flags, 2);
        if !well_formed
            || version == "ff"
            || (version == "00" && !rest.is_empty())
            || (!rest.is_empty() && !rest.starts_with('-'))
        {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(span).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then_some(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The header value naming `span_id` of `trace_id` as the parent.
    pub fn header(trace_id: TraceId, span_id: SpanId, sampled: bool) -> String {
        format!("00-{trace_id}-{span_id}-{:02x}", u8::from(sampled))
    }
}

/// A request's place in a trace.
#[derive(Debug)]
pub struct RequestTrace {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
    /// The request's span as it is being recorded: only when spans are exported and the
    /// sampler keeps this trace.
    recording: Option<Recording>,
}

/// What a request's span has gathered before it ends.
#[derive(Debug)]
struct Recording {
    /// The caller's span, when the caller sent a valid `traceparent`.
    parent: Option<SpanId>,
    start: SystemTime,
    attributes: Mutex<Vec<KeyValue>>,
}

impl RequestTrace {
    /// Starts the trace of a request with `method`, under the caller's `traceparent` if valid.
    pub fn start(traceparent: Option<&str>, method: &str) -> Self {
        let parent = traceparent.and_then(TraceParent::parse);
        let Some(exporting) = otlp::exporting() else {
            let random = uuid::Uuid::new_v4().as_u128();
            return RequestTrace {
                trace_id: parent.map_or(TraceId::from(random), |p| p.trace_id),
                span_id: SpanId::from((random as u64) ^ ((random >> 64) as u64) | 1),
                sampled: parent.is_some_and(|p| p.sampled),
                recording: None,
            };
        };
        let trace_id = parent.map_or_else(|| exporting.ids.new_trace_id(), |p| p.trace_id);
        let parent_cx = parent.map(|p| {
            let flags = if p.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            Context::new().with_remote_span_context(SpanContext::new(
                p.trace_id,
                p.span_id,
                flags,
                true,
                TraceState::default(),
            ))
        });
        let sampled = exporting
            .sampler
            .should_sample(
                parent_cx.as_ref(),
                trace_id,
                method,
                &SpanKind::Server,
                &[],
                &[],
            )
            .decision
            == SamplingDecision::RecordAndSample;
        RequestTrace {
            trace_id,
            span_id: exporting.ids.new_span_id(),
            sampled,
            recording: sampled.then(|| Recording {
                parent: parent.map(|p| p.span_id),
                start: SystemTime::now(),
                attributes: Mutex::new(Vec::with_capacity(12)),
            }),
        }
    }

    /// Adds `attributes` to the request's span (nothing when it is not recorded).
    pub fn annotate(&self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(recording) = &self.recording {
            lock(&recording.attributes).extend(attributes());
        }
    }

    /// Ends the request's span: named by its `method` and `route` template, with the
    /// response's `status`, and queued for export.
    pub fn end(&self, method: &str, route: &str, status: u16) {
        let (Some(recording), Some(exporting)) = (&self.recording, otlp::exporting()) else {
            return;
        };
        let mut attributes = std::mem::take(&mut *lock(&recording.attributes));
        attributes.extend([
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("http.route", route.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ]);
        exporting.spans.ship(FinishedSpan {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: recording.parent,
            name: format!("{method} {route}").into(),
            kind: SpanKind::Server,
            start: recording.start,
            end: SystemTime::now(),
            attributes,
            error: (status >= 500).then(|| format!("HTTP {status}").into()),
        });
    }

    /// The `traceparent` naming this request's span, for calls it makes elsewhere.
    pub fn traceparent(&self) -> String {
        TraceParent::header(self.trace_id, self.span_id, self.sampled)
    }

    /// A child span of this request named `name`, started now (recorded only when the
    /// request's span is).
    fn child(
        &self,
        name: &'static str,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Child {
        let Some(exporting) = otlp::exporting().filter(|_| self.recording.is_some()) else {
            return Child {
                span: None,
                traceparent: Some(self.traceparent()),
            };
        };
        let span_id = exporting.ids.new_span_id();
        Child {
            span: Some(FinishedSpan {
                trace_id: self.trace_id,
                span_id,
                parent: Some(self.span_id),
                name: name.into(),
                kind,
                start: SystemTime::now(),
                end: SystemTime::UNIX_EPOCH,
                attributes: attributes(),
                error: None,
            }),
            traceparent: Some(TraceParent::header(self.trace_id, span_id, true)),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A child span in progress; ended by [`Child::end`].
pub struct Child {
    span: Option<FinishedSpan>,
    /// What a call this span makes elsewhere sends as its `traceparent`: this span when
    /// recorded, else the request's own span (the trace is propagated either way).
    traceparent: Option<String>,
}

impl Child {
    /// The `traceparent` for an outbound call made within this span; none outside a request.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// Ends the span, marked as failed with `error` if there was one (a kind, never a message
    /// that could quote input), and queues it for export.
    pub fn end(self, error: Option<&'static str>) {
        if let (Some(mut span), Some(exporting)) = (self.span, otlp::exporting()) {
            span.end = SystemTime::now();
            span.error = error.map(Cow::Borrowed);
            exporting.spans.ship(span);
        }
    }
}

/// A span that has ended, as it waits for export: ids, times and attributes, nothing else.
#[derive(Debug)]
pub struct FinishedSpan {
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
    /// Why it failed, when it did (the span's status is then an error).
    error: Option<Cow<'static, str>>,
}

impl Signal for FinishedSpan {
    const NAME: &'static str = "traces";
    /// A request's span, with its attributes.
    const RECORD_BYTES: usize = 512;

    fn write(&self, out: &mut Vec<u8>) {
        let kind = match self.kind {
            SpanKind::Client => proto::span::SpanKind::Client,
            SpanKind::Server => proto::span::SpanKind::Server,
            SpanKind::Producer => proto::span::SpanKind::Producer,
            SpanKind::Consumer => proto::span::SpanKind::Consumer,
            SpanKind::Internal => proto::span::SpanKind::Internal,
        };
        wire::bytes(1, &self.trace_id.to_bytes(), out);
        wire::bytes(2, &self.span_id.to_bytes(), out);
        if let Some(parent) = self.parent {
            wire::bytes(4, &parent.to_bytes(), out);
        }
        wire::bytes(5, self.name.as_bytes(), out);
        wire::unsigned(6, kind as u64, out);
        wire::fixed64(7, unix_nanos(self.start), out);
        wire::fixed64(8, unix_nanos(self.end), out);
        wire::attributes(9, &self.attributes, out);
        if let Some(message) = &self.error {
            wire::delimited(15, out, |status| {
                wire::bytes(2, message.as_bytes(), status);
                wire::unsigned(3, proto::status::StatusCode::Error as u64, status);
            });
        }
        wire::fixed32(16, u32::from(TraceFlags::SAMPLED.to_u8()), out);
    }
}

/// Nanoseconds since the Unix epoch (0 for a time before it).
pub fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Starts a child span of the current request (none outside a request or when not exported).
pub fn child(
    name: &'static str,
    kind: SpanKind,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Child {
    match crate::http::request_id::current_request() {
        Some(current) => current.trace.child(name, kind, attributes),
        None => Child {
            span: None,
            traceparent: None,
        },
    }
}

/// Adds `attributes` to the current request's span (nothing outside a request or when not
/// exported; `attributes` is then not even called).
pub fn annotate(attributes: impl FnOnce() -> Vec<KeyValue>) {
    if let Some(current) = crate::http::request_id::current_request() {
        current.trace.annotate(attributes);
    }
}

/// Runs `work` as a child span `name` of the current request; a span whose result is an `Err`
/// is marked failed.
pub async fn traced<T, E, F>(
    name: &'static str,
    attributes: impl FnOnce() -> Vec<KeyValue>,
    work: F,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let span = child(name, SpanKind::Internal, attributes);
    let result = work.await;
    span.end(result.as_ref().err().map(|_| "error"));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_sdk::Resource;
    use prost::Message as _;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled);
        assert_eq!(
            TraceParent::header(parent.trace_id, parent.span_id, true),
            VALID
        );
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        let parent = TraceParent::parse(later).unwrap();
        assert!(!parent.sampled);
    }

    /// What is written decodes (prost) as the span it stands for, a request's span under a
    /// caller's and a failed child span alike; and a batch as the export request of them all.
    #[test]
    fn spans_decode_as_their_messages() {
        let parent = TraceParent::parse(VALID).unwrap();
        let start = SystemTime::now();
        let end = start + std::time::Duration::from_millis(3);
        let attributes = vec![
            KeyValue::new("flowgate.tenant", "acme"),
            KeyValue::new("http.response.status_code", 200_i64),
        ];
        let spans = [
            FinishedSpan {
                trace_id: parent.trace_id,
                span_id: SpanId::from(7),
                parent: Some(parent.span_id),
                name: "GET /t/{tenant}/api/v1/users".into(),
                kind: SpanKind::Server,
                start,
                end,
                attributes: attributes.clone(),
                error: None,
            },
            FinishedSpan {
                trace_id: parent.trace_id,
                span_id: SpanId::from(8),
                parent: None,
                name: "db".into(),
                kind: SpanKind::Client,
                start,
                end,
                attributes: Vec::new(),
                error: Some("error".into()),
            },
        ];
        let expected = [
            proto::Span {
                trace_id: parent.trace_id.to_bytes().to_vec(),
                span_id: 7_u64.to_be_bytes().to_vec(),
                parent_span_id: parent.span_id.to_bytes().to_vec(),
                flags: 1,
                name: "GET /t/{tenant}/api/v1/users".to_owned(),
                kind: proto::span::SpanKind::Server as i32,
                start_time_unix_nano: unix_nanos(start),
                end_time_unix_nano: unix_nanos(end),
                attributes: opentelemetry_proto::transform::common::tonic::Attributes::from(
                    attributes,
                )
                .0,
                ..Default::default()
            },
            proto::Span {
                trace_id: parent.trace_id.to_bytes().to_vec(),
                span_id: 8_u64.to_be_bytes().to_vec(),
                flags: 1,
                name: "db".to_owned(),
                kind: proto::span::SpanKind::Client as i32,
                start_time_unix_nano: unix_nanos(start),
                end_time_unix_nano: unix_nanos(end),
                status: Some(proto::Status {
                    message: "error".to_owned(),
                    code: proto::status::StatusCode::Error as i32,
                }),
                ..Default::default()
            },
        ];
        for (span, expected) in spans.iter().zip(&expected) {
            let mut written = Vec::new();
            span.write(&mut written);
            assert_eq!(&proto::Span::decode(written.as_slice()).unwrap(), expected);
        }
        let request = FinishedSpan::encode(spans.into(), &Resource::builder_empty().build());
        let decoded = ExportTraceServiceRequest::decode(request.as_slice()).unwrap();
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans, expected);
    }

    #[test]
    fn without_export_a_request_keeps_the_callers_trace() {
        let trace = RequestTrace::start(Some(VALID), "GET");
        assert_eq!(
            trace.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(trace.span_id, SpanId::INVALID);
        let own = RequestTrace::start(None, "GET");
        assert_ne!(own.trace_id, TraceId::INVALID);
        assert_ne!(own.trace_id, trace.trace_id);
    }
}
