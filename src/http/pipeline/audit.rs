//! Stage 7, audit: no response leaves before its audit event is durable.
//!
//! Invariant: a call that leaves no trace is not answered. Changes commit their event with
//! their data ([`crate::tenancy::work::WriteTx`]); every other outcome — reads, denials, failed
//! authentications, errors — is appended here through the group-commit writer, and if that
//! fails the caller gets the audit failure instead of the response.

use actix_web::ResponseError as _;
use actix_web::body::BoxBody;
use actix_web::dev::ServiceResponse;

use crate::app::AppState;
use crate::audit::{AuditEvent, Trail};
use crate::http::error::ApiError;
use crate::tenancy::work::TenantContext;

/// Sends `res` once `event` is durable in `trail`.
pub async fn respond_audited(
    state: &AppState,
    trail: impl Into<Trail>,
    event: AuditEvent,
    res: ServiceResponse<BoxBody>,
) -> ServiceResponse<BoxBody> {
    let recorded = state.audit.record(trail, event).await;
    answer(recorded.map_err(ApiError::from), res)
}

/// Sends `res` once the tenant work that produced it is on record.
pub async fn finish(
    context: &TenantContext,
    res: ServiceResponse<BoxBody>,
) -> ServiceResponse<BoxBody> {
    let recorded = context.finish(res.status().as_u16()).await;
    answer(recorded.map_err(ApiError::from), res)
}

fn answer(
    recorded: Result<(), ApiError>,
    res: ServiceResponse<BoxBody>,
) -> ServiceResponse<BoxBody> {
    match recorded {
        Ok(()) => res,
        Err(e) => {
            let (req, _) = res.into_parts();
            ServiceResponse::new(req, e.error_response())
        }
    }
}
