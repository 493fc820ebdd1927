//! The request id: made once per request by the outermost stage and visible to everything that
//! runs inside that request (error bodies, audit events, log lines).

use std::future::Future;
use std::sync::Arc;

use crate::telemetry::trace::RequestTrace;

/// What every log line written during a request says about it.
#[derive(Debug)]
pub struct Current {
    pub id: String,
    pub method: String,
    pub path: String,
    /// The request's place in its trace (the caller's `traceparent`, or a new trace).
    pub trace: RequestTrace,
}

tokio::task_local! {
    static CURRENT: Arc<Current>;
}

/// A new request id.
pub fn generate() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Runs `fut` as the request `current`.
pub async fn scope<F: Future>(current: Arc<Current>, fut: F) -> F::Output {
    CURRENT.scope(current, fut).await
}

/// The current request id, or `-` outside a request.
pub fn current() -> String {
    CURRENT
        .try_with(|c| c.id.clone())
        .unwrap_or_else(|_| "-".to_owned())
}

/// The current request's trace id, or `-` outside a request.
pub fn current_trace_id() -> String {
    CURRENT
        .try_with(|c| c.trace.trace_id.to_string())
        .unwrap_or_else(|_| "-".to_owned())
}

/// The current request, if any (for log lines).
pub fn current_request() -> Option<Arc<Current>> {
    CURRENT.try_with(Arc::clone).ok()
}
