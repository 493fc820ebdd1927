//! The request id: made once per request by the outermost middleware and visible to everything
//! that runs inside that request (error bodies, audit events, log lines).

use std::future::Future;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// A new request id.
pub fn generate() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Runs `fut` with `id` as the current request id.
pub async fn scope<F: Future>(id: String, fut: F) -> F::Output {
    REQUEST_ID.scope(id, fut).await
}

/// The current request id, or `-` outside a request.
pub fn current() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_owned())
}
