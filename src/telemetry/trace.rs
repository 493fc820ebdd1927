//! Trace context: the W3C `traceparent` a caller sends, the request's own span, and the child
//! spans of what a request waits for (the database, the key store, outbound calls).
//!
//! Every request has a trace id and a span id, exported or not: they are on every log line and
//! in every problem response, so a caller's report can be found in the logs. A valid
//! `traceparent` from the caller makes the request part of the caller's trace; an invalid one is
//! ignored (W3C Trace Context: restart the trace). When OTLP export is on
//! ([`super::otlp`]) the request's span is a real SDK span, ended with its route, status and the
//! facts the pipeline learnt (tenant, principal, action, decision); spans never carry a
//! credential, a secret value, a query string or a request body — only ids.

use std::future::Future;
use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};

use super::otlp;

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
    /// The request's SDK span, when spans are exported.
    exported: Option<Context>,
}

impl RequestTrace {
    /// Starts the trace of a request with `method`, under the caller's `traceparent` if valid.
    pub fn start(traceparent: Option<&str>, method: &str) -> Self {
        let parent = traceparent.and_then(TraceParent::parse);
        if let Some(tracer) = otlp::tracer() {
            let parent_cx = match parent {
                Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                    p.trace_id,
                    p.span_id,
                    if p.sampled {
                        TraceFlags::SAMPLED
                    } else {
                        TraceFlags::default()
                    },
                    true,
                    TraceState::default(),
                )),
                None => Context::new(),
            };
            let span = tracer
                .span_builder(method.to_owned())
                .with_kind(SpanKind::Server)
                .with_attributes([KeyValue::new("http.request.method", method.to_owned())])
                .start_with_context(tracer, &parent_cx);
            let context = span.span_context().clone();
            return RequestTrace {
                trace_id: context.trace_id(),
                span_id: context.span_id(),
                sampled: context.is_sampled(),
                exported: Some(parent_cx.with_span(span)),
            };
        }
        let random = uuid::Uuid::new_v4().as_u128();
        RequestTrace {
            trace_id: parent.map_or(TraceId::from(random), |p| p.trace_id),
            span_id: SpanId::from((random as u64) ^ ((random >> 64) as u64) | 1),
            sampled: parent.is_some_and(|p| p.sampled),
            exported: None,
        }
    }

    /// Adds `attributes` to the request's span (nothing when spans are not exported).
    pub fn annotate(&self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(cx) = &self.exported {
            cx.span().set_attributes(attributes());
        }
    }

    /// Ends the request's span: named by its `method` and `route` template, with the
    /// response's `status`.
    pub fn end(&self, method: &str, route: &str, status: u16) {
        let Some(cx) = &self.exported else {
            return;
        };
        let span = cx.span();
        span.update_name(format!("{method} {route}"));
        span.set_attributes([
            KeyValue::new("http.route", route.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ]);
        if status >= 500 {
            span.set_status(Status::error(format!("HTTP {status}")));
        }
        span.end();
    }

    /// The `traceparent` naming this request's span, for calls it makes elsewhere.
    pub fn traceparent(&self) -> String {
        TraceParent::header(self.trace_id, self.span_id, self.sampled)
    }

    /// A child span of this request named `name`, started now (nothing when not exported).
    fn child(
        &self,
        name: &'static str,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Child {
        let (Some(cx), Some(tracer)) = (&self.exported, otlp::tracer()) else {
            return Child {
                span: None,
                traceparent: Some(self.traceparent()),
            };
        };
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(SystemTime::now())
            .with_attributes(attributes())
            .start_with_context(tracer, cx);
        let context = span.span_context();
        let traceparent =
            TraceParent::header(context.trace_id(), context.span_id(), context.is_sampled());
        Child {
            span: Some(span),
            traceparent: Some(traceparent),
        }
    }
}

/// A child span in progress; ended by [`Child::end`].
pub struct Child {
    span: Option<opentelemetry_sdk::trace::Span>,
    /// What a call this span makes elsewhere sends as its `traceparent`: this span when
    /// exported, else the request's own span (the trace is propagated either way).
    traceparent: Option<String>,
}

impl Child {
    /// The `traceparent` for an outbound call made within this span; none outside a request.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// Ends the span, marked as failed with `error` if there was one (a kind, never a message
    /// that could quote input).
    pub fn end(mut self, error: Option<&'static str>) {
        if let Some(span) = self.span.as_mut() {
            if let Some(kind) = error {
                span.set_status(Status::error(kind));
            }
            span.end();
        }
    }
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
