//! Stage 3, authentication: a chain of authenticators turns the request's credential into one
//! [`Principal`] of the resolved tenant.
//!
//! Invariants:
//! - Each authenticator recognises its own kind of credential and says nothing about others;
//!   the first that recognises the request's credential decides, and its refusal is final (a
//!   bad API key is not retried as another kind of token).
//! - A credential no authenticator recognises is invalid, and no credential at all is missing:
//!   authentication fails closed.
//! - A service account's credential of any kind proves nothing while the account is disabled:
//!   one check after the chain, so a new authenticator cannot forget it.

use actix_web::HttpRequest;
use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use futures_util::future::LocalBoxFuture;

use super::audit::respond_audited;
use super::context::{client_ip, request_meta};
use super::rate_limit::{record_trip, trip_event};
use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, Trail};
use crate::http::error::ApiError;
use crate::http::extract::bearer_token;
use crate::identity::api_key::PREFIX as API_KEY_PREFIX;
use crate::identity::federation::unverified_issuer;
use crate::identity::tokens::{self, Holder};
use crate::identity::{IdentityError, InvalidReason, Principal};
use crate::tenancy::Tenant;
use crate::tenancy::work::acted_by;

/// One way for a caller to prove who they are.
pub trait Authenticator: Sync {
    /// `None` when the request carries no credential of this kind; otherwise the principal it
    /// proves, or why it proves none.
    fn authenticate<'a>(
        &'a self,
        state: &'a AppState,
        tenant: &'a Tenant,
        req: &'a HttpRequest,
    ) -> LocalBoxFuture<'a, Option<Result<Principal, IdentityError>>>;
}

/// `Authorization: Bearer fgk_…`: an API key of one of the tenant's service accounts.
pub struct ApiKey;

impl Authenticator for ApiKey {
    fn authenticate<'a>(
        &'a self,
        state: &'a AppState,
        tenant: &'a Tenant,
        req: &'a HttpRequest,
    ) -> LocalBoxFuture<'a, Option<Result<Principal, IdentityError>>> {
        Box::pin(async move {
            let token = bearer_token(req).filter(|t| t.starts_with(API_KEY_PREFIX))?;
            Some(
                state
                    .api_keys
                    .authenticate(&state.dbs, &tenant.slug, token)
                    .await,
            )
        })
    }
}

/// `Authorization: Bearer eyJ…`: an access token the tenant issued to one of its clients, or to a
/// person for the session they exchanged for it (which must still be live), or a token of an
/// outside issuer the tenant trusts for one of its service accounts.
pub struct AccessToken;

impl Authenticator for AccessToken {
    fn authenticate<'a>(
        &'a self,
        state: &'a AppState,
        tenant: &'a Tenant,
        req: &'a HttpRequest,
    ) -> LocalBoxFuture<'a, Option<Result<Principal, IdentityError>>> {
        Box::pin(async move {
            let token = bearer_token(req).filter(|t| t.starts_with("ey") && t.contains('.'))?;
            if token.len() > MAX_JWT {
                return Some(Err(IdentityError::InvalidCredentials(
                    InvalidReason::Malformed,
                )));
            }
            let public_url = &state.settings.public_url;
            if let Some(outside) = unverified_issuer(token)
                .filter(|iss| *iss != tokens::issuer(public_url, &tenant.slug))
            {
                return Some(
                    state
                        .federation
                        .authenticate(&state.dbs, &tenant.slug, &outside, token)
                        .await,
                );
            }
            let holder = state
                .tokens
                .authenticate(&state.dbs, &tenant.slug, public_url, token)
                .await;
            Some(match holder {
                Ok(Holder::Account(principal)) => Ok(principal),
                Ok(Holder::Person {
                    user,
                    session,
                    asserted_at,
                }) => {
                    crate::signin::sessions::exchanged(state, tenant, user, session, asserted_at)
                        .await
                }
                Err(e) => Err(e),
            })
        })
    }
}

/// Longest bearer JWT looked at (its claims are parsed to route it).
const MAX_JWT: usize = 8 * 1024;

/// The tenant's `__Host-` session cookie: a person signed in through an identity provider.
pub struct SessionCookie;

impl Authenticator for SessionCookie {
    fn authenticate<'a>(
        &'a self,
        state: &'a AppState,
        tenant: &'a Tenant,
        req: &'a HttpRequest,
    ) -> LocalBoxFuture<'a, Option<Result<Principal, IdentityError>>> {
        Box::pin(crate::signin::sessions::authenticate(state, tenant, req))
    }
}

/// The authenticators of tenant requests, in the order they are asked. A bearer credential
/// wins over a cookie: an API client that also holds a browser's cookie is the client.
const CHAIN: &[&dyn Authenticator] = &[&ApiKey, &AccessToken, &SessionCookie];

/// A credential that proved no principal: why, and, when the credential was genuine but its
/// service account is disabled, whose it was (the trail names them; the caller is not told).
#[derive(Debug)]
pub struct Refused {
    pub error: IdentityError,
    pub disabled: Option<Principal>,
}

impl From<IdentityError> for Refused {
    fn from(error: IdentityError) -> Self {
        Refused {
            error,
            disabled: None,
        }
    }
}

/// The principal the request's credential proves in `tenant`.
pub async fn authenticate(
    state: &AppState,
    tenant: &Tenant,
    req: &HttpRequest,
) -> Result<Principal, Refused> {
    if cfg!(feature = "insecure-bench") {
        // The benchmark's baseline: no authentication, authorization or audit at all.
        return Ok(Principal::ServiceAccount {
            id: uuid::Uuid::nil(),
            credential: crate::identity::AccountCredential::ApiKey(uuid::Uuid::nil()),
        });
    }
    for authenticator in CHAIN {
        if let Some(outcome) = authenticator.authenticate(state, tenant, req).await {
            let principal = outcome?;
            if let Principal::ServiceAccount { id, .. } = &principal
                && let Err(error) = state
                    .account_statuses
                    .ensure_active(&state.dbs, &tenant.slug, *id)
                    .await
            {
                return Err(Refused {
                    error,
                    disabled: Some(principal),
                });
            }
            return Ok(principal);
        }
    }
    Err(match bearer_token(req) {
        None => IdentityError::MissingCredentials,
        Some(_) => IdentityError::InvalidCredentials(InvalidReason::Malformed),
    }
    .into())
}

/// Answers a caller who proved no principal: 401, with a failure spent from the source
/// address's budget (the trip that blocks it recorded once) when the credential is what failed
/// (a store that could not be reached answers 503 and spends nothing). A failed attempt at a tenant is
/// recorded in its trail; at a tenant that does not exist (`None`) the answer is the same as for
/// a wrong credential and no tenant's trail is touched, so the answer tells nobody which slugs
/// exist.
pub async fn refuse(
    state: &AppState,
    tenant: Option<&Tenant>,
    req: ServiceRequest,
    refused: impl Into<Refused>,
) -> ServiceResponse<BoxBody> {
    let Refused { error, disabled } = refused.into();
    let trail = tenant.map_or(Trail::Platform, |t| Trail::from(&t.slug));
    // A credential presented and wrong is always spent and recorded (a page elsewhere cannot
    // attach one: browsers send no `Authorization` across sites, and no session cookie on a
    // site's images or frames); anything else only up to the source's recording quota.
    let spends = error.spends_failure_budget();
    if spends {
        spend_failure(state, trail.clone(), req.request()).await;
    }
    let recorded = spends || (tenant.is_some() && records_unspent(state, req.request()));
    let meta = request_meta(req.request());
    let reason = error.audit_reason();
    let res = req.error_response(ApiError::from(error));
    if tenant.is_none() || !recorded {
        return res;
    }
    let mut event = AuditEvent::new(&meta, "auth.authenticate", "tenant")
        .outcome(Outcome::None, res.status().as_u16())
        .detail("reason", reason);
    if let Some(holder) = &disabled {
        event = acted_by(event, holder);
    }
    respond_audited(state, trail, event, res).await
}

/// Whether the browser says another site started this request (`Sec-Fetch-Site: cross-site` or
/// `same-site`). A page elsewhere can make its visitors' browsers fail at a sign-in callback as
/// often as it likes, and those refusals must not spend the failure budget of the visitors'
/// network (an office behind one address would be locked out by any web page). Only browsers
/// send it unasked; a script that sends it itself gains nothing by it where it is used: a
/// callback's refusal of a login that is not this browser's guesses nothing, and the token
/// endpoint refuses such a request before any lookup.
pub fn started_elsewhere(req: &HttpRequest) -> bool {
    req.headers()
        .get("sec-fetch-site")
        .is_some_and(|site| matches!(site.as_bytes(), b"cross-site" | b"same-site"))
}

/// Whether a refusal of `req` that spends no failure budget is still recorded (see
/// [`crate::http::pipeline::rate_limit::Limits::records_unspent`]).
pub fn records_unspent(state: &AppState, req: &HttpRequest) -> bool {
    client_ip(req).is_none_or(|ip| state.limits.records_unspent(ip))
}

/// Spends a failure from the budget of the request's source address; the trip that blocks the
/// address is recorded in `trail`, once.
pub async fn spend_failure(state: &AppState, trail: Trail, req: &HttpRequest) {
    if let Some(ip) = client_ip(req)
        && let Some(trip) = state.limits.failed(ip).await
    {
        record_trip(state, trail, trip_event(&request_meta(req), &trip)).await;
    }
}

/// The error for a tenant that does not exist, as the caller's credential would have got it.
pub fn unknown_tenant(req: &HttpRequest) -> IdentityError {
    match bearer_token(req) {
        None => IdentityError::MissingCredentials,
        Some(_) => IdentityError::InvalidCredentials(InvalidReason::UnknownKey),
    }
}
