//! `/healthz`, `/readyz` and `/metrics`.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::operator::{MetricsRead, Operator};

/// Liveness and readiness answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process answers.
///
/// Public.
#[utoipa::path(tag = "health", responses((status = 200, body = Health)))]
#[get("/healthz")]
pub async fn healthz() -> web::Json<Health> {
    web::Json(Health { status: "ok" })
}

/// Readiness: the database and the key store answer.
///
/// Public. 503 when a dependency is down.
#[utoipa::path(
    tag = "health",
    responses((status = 200, body = Health), (status = 503, body = crate::http::error::Problem))
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<web::Json<Health>, ApiError> {
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
/// Requires the operator token (the internal admin listener serves it without one).
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, content_type = "text/plain", body = String),
        (status = 401, body = crate::http::error::Problem)
    ),
    security(("operator" = []))
)]
#[get("/metrics")]
pub async fn metrics(_operator: Operator<MetricsRead>, state: web::Data<AppState>) -> HttpResponse {
    render_metrics(&state)
}

/// The metrics response, shared with the admin listener.
pub fn render_metrics(state: &AppState) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
