//! The platform operator's stages 3 and 7: the credential and the operation it names, and the
//! platform audit trail.
//!
//! Every operator endpoint takes an [`Operator<A>`] argument, whose type names the operation
//! (`Operator<TenantDelete>`) and whose extraction checks the operator token in constant time.
//! [`audit`] then records every call that reached such an argument, allowed or refused, in the
//! platform's own trail before the response leaves: a call that leaves no trace is not
//! answered.

use std::marker::PhantomData;

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceResponse};
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use super::audit::respond_audited;
use super::authn::records_unspent;
use super::context::{client_ip, request_meta};
use super::rate_limit::{Refusal, record_trip, trip_event};
use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, Trail};
use crate::http::contract::{Contract, Documented, Guard, Requirement, Security};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::bearer_token;
use crate::identity::operator::OperatorAuthority;
use crate::tenancy::Slug;

/// An operation of the platform operator, named in its audit events.
pub trait OperatorAction: 'static {
    const NAME: &'static str;
}

macro_rules! operator_actions {
    ($($(#[$doc:meta])* $marker:ident = $name:literal;)*) => {
        $(
            $(#[$doc])*
            pub struct $marker;

            impl OperatorAction for $marker {
                const NAME: &'static str = $name;
            }
        )*
    };
}

operator_actions! {
    /// Onboard a tenant.
    TenantCreate = "tenant.create";
    /// List tenants.
    TenantList = "tenant.list";
    /// Read one tenant.
    TenantRead = "tenant.read";
    /// Set a tenant's own rate limits.
    TenantLimit = "tenant.limit";
    /// Suspend a tenant.
    TenantSuspend = "tenant.suspend";
    /// Resume a tenant.
    TenantResume = "tenant.resume";
    /// Create a tenant's break-glass account, or issue it a new enrollment.
    TenantBreakGlass = "tenant.break_glass";
    /// Delete a tenant with its data and keys.
    TenantDelete = "tenant.delete";
    /// Read the platform audit trail.
    PlatformAuditRead = "platform_audit.read";
    /// Verify the platform audit trail.
    PlatformAuditVerify = "platform_audit.verify";
    /// Read the Prometheus metrics.
    MetricsRead = "metrics.read";
}

/// What an operator call was, noted by [`Operator`] for [`record`].
#[derive(Debug, Clone, Copy)]
struct OperatorCall {
    action: &'static str,
    /// `None` when the token was accepted, else why not.
    refused: Option<&'static str>,
    /// The failure that spent its source address's budget, to be audited once.
    trip: Option<Refusal>,
    /// Whether the call is recorded: a refusal that spent no budget (no token) only while its
    /// source's recording quota lasts.
    recorded: bool,
}

/// A caller that presented the platform operator token, for the operation `A`.
pub struct Operator<A: OperatorAction> {
    authority: OperatorAuthority,
    _operation: PhantomData<A>,
}

impl<A: OperatorAction> FromRequest for Operator<A> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Self::check(&req).await })
    }
}

impl<A: OperatorAction> Operator<A> {
    /// The operator's authority, which platform operations on tenants require.
    pub fn authority(&self) -> &OperatorAuthority {
        &self.authority
    }

    /// Checks the operator token, spending the source address's failure budget on a bad one,
    /// and notes the call for [`audit`].
    async fn check(req: &HttpRequest) -> Result<Self, ApiError> {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return Err(ApiError::internal(
                "http",
                anyhow::anyhow!("application state missing"),
            ));
        };
        let (refused, result) = match bearer_token(req) {
            None => (
                Some("missing_credentials"),
                Err(ApiError::new(
                    ErrorCode::Unauthenticated,
                    "Send `Authorization: Bearer <operator token>`.",
                )),
            ),
            Some(token) => match state.operator.verify(token) {
                Some(authority) => (
                    None,
                    Ok(Operator {
                        authority,
                        _operation: PhantomData,
                    }),
                ),
                None => (
                    Some("invalid_operator_token"),
                    Err(ApiError::new(
                        ErrorCode::InvalidCredentials,
                        "The operator token is not valid.",
                    )),
                ),
            },
        };
        // A missing token guessed nothing (a page elsewhere can make browsers send none).
        let guessed = refused.is_some() && bearer_token(req).is_some();
        let trip = match guessed.then(|| client_ip(req)).flatten() {
            Some(client) => state.limits.failed(client).await,
            None => None,
        };
        let recorded = refused.is_none() || guessed || records_unspent(state, req);
        req.extensions_mut().insert(OperatorCall {
            action: A::NAME,
            refused,
            trip,
            recorded,
        });
        result
    }
}

/// An operator operation: the operator token, and what checking it and auditing the call can
/// answer.
impl<A: OperatorAction> Documented for Operator<A> {
    fn document(contract: &mut Contract) {
        contract.security = Some(Security::Operator);
        contract.requirement = Some(Requirement {
            action: A::NAME,
            on: None,
            sensitive: false,
        });
        contract.errors(&[
            ErrorCode::Unauthenticated,
            ErrorCode::InvalidCredentials,
            ErrorCode::RateLimited,
            ErrorCode::DependencyUnavailable,
        ]);
    }
}

impl<A: OperatorAction> Guard for Operator<A> {}

/// Records an operator call (one that reached an [`Operator`] argument), allowed or refused,
/// in the platform trail before it is answered; other responses pass untouched.
pub async fn record(state: &AppState, res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let Some(call) = res
        .request()
        .extensions()
        .get::<OperatorCall>()
        .copied()
        .filter(|call| call.recorded)
    else {
        return res;
    };
    let meta = request_meta(res.request());
    // Only a slug that can exist is recorded: the path is the caller's text.
    let tenant = res
        .request()
        .match_info()
        .get("slug")
        .and_then(|s| Slug::parse(s).ok())
        .map(|s| s.to_string());
    let mut event = AuditEvent::new(
        &meta,
        call.action,
        if tenant.is_some() {
            "tenant"
        } else {
            "platform"
        },
    )
    .outcome(
        if call.refused.is_some() {
            Outcome::None
        } else {
            Outcome::Allow
        },
        res.status().as_u16(),
    );
    event.resource_id = tenant;
    event = match call.refused {
        None => event.actor("operator", "platform"),
        Some(reason) => event.detail("reason", reason),
    };
    if let Some(trip) = &call.trip {
        record_trip(state, Trail::Platform, trip_event(&meta, trip)).await;
    }
    respond_audited(state, Trail::Platform, event, res).await
}
