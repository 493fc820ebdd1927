//! Stage 1, the request's context: its id and span, its access-log line and metrics, and the
//! hardening headers of its response. Every request passes it, on every listener.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{Error, HttpMessage as _, HttpRequest, web};

use crate::app::AppState;
use crate::audit::RequestMeta;
use crate::http::request_id;
use crate::telemetry::{self, trace::RequestTrace};

/// The address of the client, behind the deployment's trusted proxies (see
/// [`crate::net::proxies`]): what every source-address control (rate limits, failed
/// authentications, `context.source_ip`, audit rows, sessions, signals) counts.
pub fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    match req.extensions().get::<ClientAddress>() {
        Some(client) => Some(client.0),
        None => req.peer_addr().map(|a| a.ip().to_canonical()),
    }
}

/// The client's address, found once when the request enters the pipeline, where a trusted proxy
/// named one other than the peer (otherwise the peer is the client, and nothing is kept).
#[derive(Debug, Clone, Copy)]
struct ClientAddress(IpAddr);

/// Who is asking from where, for the audit trail.
pub fn request_meta(req: &HttpRequest) -> RequestMeta {
    RequestMeta {
        request_id: req
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .unwrap_or_default(),
        source_ip: client_ip(req).map(|ip| ip.to_string()),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        method: Some(req.method().to_string()),
        path: Some(req.path().to_owned()),
    }
}

/// The request id of a request, as a request extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Runs the rest of the pipeline (`inner`) within the request's context: an id and a trace
/// (which every log line of the request carries), an access-log line, metrics, the request's
/// span and the hardening headers.
pub async fn within<F, Fut>(
    req: ServiceRequest,
    inner: F,
) -> Result<ServiceResponse<BoxBody>, Error>
where
    F: FnOnce(ServiceRequest) -> Fut,
    Fut: Future<Output = Result<ServiceResponse<BoxBody>, Error>>,
{
    let id = request_id::generate();
    req.extensions_mut().insert(RequestId(id.clone()));
    let state = req.app_data::<web::Data<AppState>>().cloned();
    if let (Some(state), Some(peer)) = (&state, req.peer_addr()) {
        let client = state
            .settings
            .trusted_proxies
            .client(peer.ip(), req.headers());
        if client != peer.ip().to_canonical() {
            req.extensions_mut().insert(ClientAddress(client));
        }
    }
    let hsts = state.as_ref().is_none_or(|s| s.settings.hsts);
    let docs = req.path().starts_with("/docs");
    let method = req.method().to_string();
    let started = Instant::now();
    let header_id = id.clone();
    let traceparent = req
        .headers()
        .get(HeaderName::from_static("traceparent"))
        .and_then(|v| v.to_str().ok());
    let current = Arc::new(request_id::Current {
        id,
        trace: RequestTrace::start(traceparent, &method),
        method,
        path: req.path().to_owned(),
    });
    request_id::scope(Arc::clone(&current), async move {
        // Handlers and extractors turn their errors into responses inside this scope; an `Err`
        // here could only come from a middleware and is rendered by actix itself.
        let mut res = inner(req).await?;
        if let Ok(value) = HeaderValue::from_str(&header_id) {
            res.headers_mut()
                .insert(HeaderName::from_static("x-request-id"), value);
        }
        add_security_headers(res.headers_mut(), hsts, docs);
        let status = res.status().as_u16();
        let elapsed = started.elapsed();
        let route = res.request().match_pattern();
        let route = route.as_deref().unwrap_or(telemetry::UNMATCHED_ROUTE);
        telemetry::metrics().observe_request(&current.method, route, status, elapsed);
        current.trace.end(&current.method, route, status);
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
        Ok(res)
    })
    .await
}

/// Hardening headers on every response; HSTS unless switched off.
fn add_security_headers(headers: &mut HeaderMap, hsts: bool, docs: bool) {
    if hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::REFERRER_POLICY) {
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    // The docs UI is our own vendored Swagger UI: scripts and styles from this origin only.
    let csp = if docs {
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    } else {
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    };
    // A page that set its own policy (the login page, which runs its own script) keeps it.
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(csp),
        );
    }
    if !docs && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}
