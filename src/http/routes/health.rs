//! `/healthz`, `/readyz` and `/metrics`.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::http::contract::Public;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::pipeline::operator::{MetricsRead, Operator};

/// Liveness and readiness answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, body = Health))
)]
pub async fn healthz(_: Public) -> web::Json<Health> {
    web::Json(Health { status: "ok" })
}

/// Readiness: the database and the key store answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "The database or the key store is down (`dependency_unavailable`).")
    )
)]
pub async fn readyz(_: Public, state: web::Data<AppState>) -> Result<web::Json<Health>, ApiError> {
    match state.ready().await {
        Ok(()) => Ok(web::Json(Health { status: "ok" })),
        Err(why) => {
            tracing::warn!(reason = %why, "not ready");
            Err(ApiError::new(
                ErrorCode::DependencyUnavailable,
                "A dependency is unavailable.",
            ))
        }
    }
}

/// Prometheus metrics.
///
/// The internal admin listener serves the same without a token.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, content_type = "text/plain", body = String, description = "Prometheus text exposition"))
)]
pub async fn metrics(_operator: Operator<MetricsRead>, state: web::Data<AppState>) -> HttpResponse {
    render_metrics(&state)
}

/// The metrics response (the process's, see [`crate::telemetry::metrics`]), shared with the
/// admin listener.
pub fn render_metrics(state: &AppState) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::telemetry::metrics().render(&state.dbs.pool_usage()))
}
