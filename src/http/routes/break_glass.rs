//! `/t/{tenant}/auth/break-glass/…`: a break-glass account's enrollment and passkey sign-in,
//! with no identity provider (see `signin::break_glass`). Each POST must carry this server's
//! `Origin`; every refusal spends from the source address's failure budget and, like every
//! success, is a security event in the tenant's trail.

use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::passkeys::{WebauthnCredential, settle};
use super::signin::SignInTenant;
use crate::audit::Trail;
use crate::crypto::random_token;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::JsonBody;
use crate::http::pipeline::authn::spend_failure;
use crate::http::pipeline::context::request_meta;
use crate::identity::IdentityError;
use crate::signin::break_glass;
use crate::signin::passkeys::{PasskeyError, PasskeyRefusal};
use crate::signin::sessions::{self, Opened, PreLogin};
use crate::tenancy::work::{Change, SignIn, WriteTx};

/// An enrollment token, as the operator received it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "fgb_3q2-…"}))]
pub struct Enrollment {
    pub token: String,
}

/// The break-glass account signing in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "break-glass@acme.example"}))]
pub struct BreakGlassLogin {
    pub email: String,
}

/// A break-glass session, opened.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakGlassSession {
    pub user_id: Uuid,
    pub session_id: Uuid,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub expires_at: DateTime<Utc>,
}

/// Refuses a request without this server's `Origin`: these steps set cookies for the browser.
fn same_origin(page: &SignInTenant, req: &HttpRequest) -> Result<(), ApiError> {
    if sessions::same_origin(req, &page.state().settings.public_url) {
        Ok(())
    } else {
        Err(IdentityError::ForeignOrigin.into())
    }
}

/// The write transaction of break-glass step `action`.
async fn begin(
    page: &SignInTenant,
    req: &HttpRequest,
    action: &'static str,
) -> Result<WriteTx, ApiError> {
    let proof = SignIn::break_glass(action);
    Ok(WriteTx::sign_in(
        page.shared_state(),
        &page.tenant().slug,
        &request_meta(req),
        &proof,
    )
    .await?)
}

/// The outcome of a step, its refusal (if any) on record as a security event and spent from the
/// source address's failure budget.
async fn settled<T>(
    page: &SignInTenant,
    req: &HttpRequest,
    tx: WriteTx,
    subject: &str,
    outcome: Result<T, PasskeyError>,
) -> Result<(T, WriteTx), ApiError> {
    let refused = matches!(outcome, Err(PasskeyError::Refused(_)));
    let refusal = Change::new("break_glass_account", subject, 401);
    let refusal = match &outcome {
        // The account's sessions ended with it (on every replica: no `keeping_sessions`).
        Err(PasskeyError::Refused(PasskeyRefusal::CounterRegression)) => {
            refusal.detail("security_event", "passkey_cloned")
        }
        _ => refusal
            .keeping_sessions()
            .detail("security_event", "break_glass_refused"),
    };
    let settled = settle(tx, refusal, outcome).await;
    if refused {
        spend_failure(page.state(), Trail::from(&page.tenant().slug), req).await;
    }
    settled
}

/// The session cookie of `opened` in the page's tenant, and its description.
fn signed_in(page: &SignInTenant, user_id: Uuid, opened: &Opened) -> HttpResponse {
    let cookie = sessions::host_cookie(
        sessions::cookie_name(&page.tenant().slug),
        opened.token.expose_secret().to_owned(),
        opened.session.expires_at - Utc::now(),
    );
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .cookie(cookie)
        .cookie(sessions::removal(
            PreLogin::Passkey.name(&page.tenant().slug),
        ))
        .json(BreakGlassSession {
            user_id,
            session_id: opened.session.id,
            expires_at: opened.session.expires_at,
        })
}

/// Spend a break-glass enrollment token.
///
/// Opens a 15-minute session in which the account can only enroll a passkey
/// (`…/webauthn/register/start` and `finish`) and assert with it. 401 `passkey_refused` for an
/// unknown, used or expired token.
#[utoipa::path(
    post,
    path = "/break-glass/enroll",
    tag = "sign-in",
    responses((status = 200, body = BreakGlassSession), (status = 401, description = "Refused (`passkey_refused`)"), (status = 403, description = "Foreign `Origin`"))
)]
pub async fn enroll(
    page: SignInTenant,
    req: HttpRequest,
    body: JsonBody<Enrollment>,
) -> Result<HttpResponse, ApiError> {
    same_origin(&page, &req)?;
    let token = body.parse().await?.token;
    let proof = SignIn::break_glass("auth.break_glass_enroll");
    let tx = begin(&page, &req, "auth.break_glass_enroll").await?;
    let outcome = break_glass::enroll(&tx, &proof, &token, &request_meta(&req)).await;
    let (opened, tx) = settled(&page, &req, tx, "enrollment", outcome).await?;
    let user = opened.session.user_id;
    tx.commit(
        Change::new("session", opened.session.id, 200)
            .by("user", user)
            .detail("security_event", "break_glass_enrollment"),
    )
    .await?;
    tracing::warn!(tenant = %page.tenant().slug, %user, "break-glass enrollment token used");
    Ok(signed_in(&page, user, &opened))
}

/// Begin a break-glass sign-in.
///
/// The request options for `navigator.credentials.get` with the account's passkeys; the
/// challenge stays on the server, bound to a pre-login cookie set now. Any email that is not a
/// break-glass account with a passkey is 401 `passkey_refused`, alike.
#[utoipa::path(
    post,
    path = "/break-glass/start",
    tag = "sign-in",
    responses((status = 200, description = "`{\"publicKey\": …request options…}`", body = Object), (status = 401, description = "Refused (`passkey_refused`)"))
)]
pub async fn start(
    page: SignInTenant,
    req: HttpRequest,
    body: JsonBody<BreakGlassLogin>,
) -> Result<HttpResponse, ApiError> {
    same_origin(&page, &req)?;
    let email = body.parse().await?.email.trim().to_lowercase();
    let binding = random_token::<32>().map_err(|e| ApiError::internal("break_glass", e))?;
    let tx = begin(&page, &req, "auth.break_glass_start").await?;
    let outcome = break_glass::begin(&page.state().passkeys, &tx, &email, &binding).await;
    let ((user, options), tx) = settled(&page, &req, tx, "unknown", outcome).await?;
    // Anyone who knows the address can start: the account is what is asked about, not who asks.
    tx.commit(Change::new("break_glass_account", user, 200))
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .cookie(PreLogin::Passkey.cookie(&page.tenant().slug, binding, break_glass::LOGIN_LIFE))
        .json(options))
}

/// Finish a break-glass sign-in.
///
/// The assertion for the challenge of this browser's pre-login cookie; 200 with a session of at
/// most an hour (an MFA-complete Admin session). Refused assertions (another origin, no user
/// verification, a replay, another account's passkey, a cloned counter) are 401
/// `passkey_refused`.
#[utoipa::path(
    post,
    path = "/break-glass/finish",
    tag = "sign-in",
    responses((status = 200, body = BreakGlassSession), (status = 401, description = "Refused (`passkey_refused`)"))
)]
pub async fn finish(
    page: SignInTenant,
    req: HttpRequest,
    body: JsonBody<WebauthnCredential>,
) -> Result<HttpResponse, ApiError> {
    same_origin(&page, &req)?;
    let assertion = body.parse().await?.parse()?;
    let Some(binding) = req.cookie(&PreLogin::Passkey.name(&page.tenant().slug)) else {
        return Err(ApiError::new(
            ErrorCode::PasskeyRefused,
            "No sign-in is waiting in this browser: start again.",
        ));
    };
    let proof = SignIn::break_glass("auth.break_glass_login");
    let tx = begin(&page, &req, "auth.break_glass_login").await?;
    let outcome = break_glass::finish(
        &page.state().passkeys,
        &tx,
        &proof,
        binding.value(),
        &assertion,
        &request_meta(&req),
    )
    .await;
    let ((user, opened), tx) = settled(&page, &req, tx, "unknown", outcome).await?;
    tx.commit(
        Change::new("session", opened.session.id, 200)
            .by("user", user)
            .detail("security_event", "break_glass_sign_in")
            .detail("expires_at", opened.session.expires_at.to_rfc3339()),
    )
    .await?;
    tracing::warn!(tenant = %page.tenant().slug, %user, "break-glass account signed in");
    Ok(signed_in(&page, user, &opened))
}
