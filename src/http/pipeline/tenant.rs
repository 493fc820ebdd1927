//! Stage 2, tenant resolution: the `{tenant}` of the path becomes the live tenant it names, with
//! no credential involved, so that routes which need none (a sign-in callback, a JWKS document)
//! can live under a tenant too.
//!
//! Invariants: only a slug that can exist is looked up, and only an active or suspended tenant
//! is resolved; one being made or deleted is as unknown as one that never was. A resolved
//! tenant comes with the request's visit, counted before its status was read, which the caller
//! keeps until the response is made (a deletion waits for it).

use std::sync::Arc;

use actix_web::HttpRequest;

use crate::app::AppState;
use crate::http::error::ApiError;
use crate::tenancy::{Slug, TenancyError, Tenant, TenantStatus, Visit};

/// The live tenant the path names, and the request's visit to it; 404 when there is none.
pub async fn resolve(
    state: &AppState,
    req: &HttpRequest,
) -> Result<(Arc<Tenant>, Visit), ApiError> {
    let slug = req
        .match_info()
        .get("tenant")
        .and_then(|s| Slug::parse(s).ok())
        .ok_or_else(ApiError::not_found)?;
    let visit = state.tenants.enter(&slug);
    match state.tenants.get(&slug).await {
        Ok(t) if matches!(t.status, TenantStatus::Active | TenantStatus::Suspended) => {
            Ok((t, visit))
        }
        Ok(_) | Err(TenancyError::NotFound(_)) => Err(ApiError::not_found()),
        Err(e) => Err(e.into()),
    }
}
