//! The request pipeline: every request passes the same stages, in this order, one stage a file.
//!
//! 1. [`context`]: the request id and span, the access log, metrics, hardening headers; then the
//!    source address's rate limit (stage 4's first checkpoint, before any credential is read).
//! 2. [`tenant`]: the `{tenant}` of the path, resolved without any credential.
//! 3. [`authn`]: a chain of authenticators turns the credential into one principal.
//! 4. [`rate_limit`]: the principal's and the tenant's rates; then a suspended tenant is refused
//!    and the principal's unit of work ([`TenantContext`]) opened with the tenant's policies.
//! 5. [`authz`]: the handler's first argument, `Authorized<A, T>`, is the decision and the
//!    proof that changes require.
//! 6. the handler, which reads its body only now, and changes data only in a write transaction
//!    that commits its audit event.
//! 7. [`audit`]: any outcome not yet on record is appended before the response leaves.
//!
//! Platform routes take the operator's credential at stage 3 and are recorded in the
//! platform's trail at stage 7 ([`operator`]). Each function below runs its stages top to
//! bottom: the order is the code's order, not that of `.wrap` calls.

pub mod audit;
pub mod authn;
pub mod authz;
pub mod context;
pub mod operator;
pub mod rate_limit;
pub mod tenant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _, web};
use opentelemetry::KeyValue;

use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome};
use crate::http::error::{ApiError, ErrorCode};
use crate::identity::Principal;
use crate::telemetry;
use crate::tenancy::work::TenantContext;
use crate::tenancy::{Tenant, TenantStatus};

/// Every request, on the public listener: stage 1, the source address's limit and, for operator
/// calls, the platform trail.
pub async fn every_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    context::within(req, |req| async move {
        let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
            return Ok(req.error_response(missing_state()));
        };
        // Until the response: the audit writer batches for at most half the requests under way.
        let _under_way = state.audit.under_way();
        let req = match rate_limit::admit_source(&state, req).await {
            Ok(req) => req,
            Err(refused) => return Ok(refused),
        };
        let res = next.call(req).await?.map_into_boxed_body();
        Ok(operator::record(&state, res).await)
    })
    .await
}

/// Requests to the internal admin listener: stage 1 only (the network is its boundary).
pub async fn admin_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    context::within(req, |req| async move {
        Ok(next.call(req).await?.map_into_boxed_body())
    })
    .await
}

/// Requests to a tenant's API, `/t/{tenant}/api/v1/…`: stages 2 to 7.
pub async fn tenant_api(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(req.error_response(missing_state()));
    };
    // The visit lasts until the response is made: a deletion of the tenant waits for it.
    let (tenant, _visit) = match tenant::resolve(&state, req.request()).await {
        Ok(resolved) => resolved,
        Err(e) if e.code() == ErrorCode::NotFound => {
            let error = authn::unknown_tenant(req.request());
            return Ok(authn::refuse(&state, None, req, error).await);
        }
        Err(e) => return Ok(req.error_response(e)),
    };
    telemetry::trace::annotate(|| vec![KeyValue::new("flowgate.tenant", tenant.slug.to_string())]);
    let principal = match authn::authenticate(&state, &tenant, req.request()).await {
        Ok(principal) => principal,
        Err(e) => return Ok(authn::refuse(&state, Some(&tenant), req, e).await),
    };
    let req = match rate_limit::admit_principal(&state, &tenant, &principal, req).await {
        Ok(req) => req,
        Err(refused) => return Ok(refused),
    };
    if tenant.status == TenantStatus::Suspended {
        let error = ApiError::new(ErrorCode::TenantSuspended, "This tenant is suspended.");
        return Ok(refuse(&state, &tenant, &principal, req, error, "tenant_suspended").await);
    }
    let meta = context::request_meta(req.request());
    let opened = TenantContext::open(
        state.clone().into_inner(),
        tenant.clone(),
        principal.clone(),
        meta,
    )
    .await;
    let context = match opened {
        Ok(context) => context,
        Err(e) => {
            let error = ApiError::from(e);
            return Ok(refuse(
                &state,
                &tenant,
                &principal,
                req,
                error,
                "policies_unavailable",
            )
            .await);
        }
    };
    req.extensions_mut().insert(context.clone());
    let res = next.call(req).await?.map_into_boxed_body();
    let res = audit::finish(&context, res).await;
    telemetry::trace::annotate(|| context.span_attributes());
    Ok(res)
}

/// Answers an authenticated principal with `error` before its work could start, on record in
/// the tenant's trail with `reason`.
async fn refuse(
    state: &AppState,
    tenant: &Tenant,
    principal: &Principal,
    req: ServiceRequest,
    error: ApiError,
    reason: &'static str,
) -> ServiceResponse<BoxBody> {
    let meta = context::request_meta(req.request());
    let event =
        crate::tenancy::work::acted_by(AuditEvent::new(&meta, "request", "tenant"), principal)
            .outcome(Outcome::None, error.code().status().as_u16())
            .detail("reason", reason);
    audit::respond_audited(state, &tenant.slug, event, req.error_response(error)).await
}

fn missing_state() -> ApiError {
    ApiError::internal("http", anyhow::anyhow!("application state missing"))
}
