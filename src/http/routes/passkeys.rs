//! Passkeys of the signed-in person: the WebAuthn ceremonies under `/t/{tenant}/auth/webauthn`
//! (session cookie only, like every sign-in change: this server's `Origin` is required) and
//! the person's list of passkeys under `/me/credentials`.
//!
//! Every ceremony step, success or refusal, is an audit event naming the session and, once
//! known, the passkey; never a challenge, signature or key.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::passkey;
use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, EntityTrait as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::signin::SignInTenant;
use crate::authz::actions::{PasskeyReset, SessionRevoke};
use crate::http::contract::{Contract, Documented, Guard, Security};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::{JsonBody, PathId};
use crate::http::pipeline::authz::Authorized;
use crate::http::pipeline::authz::{Caller, Identified};
use crate::http::pipeline::context::request_meta;
use crate::identity::{IdentityError, Principal};
use crate::signin::break_glass::is_break_glass;
use crate::signin::passkeys::lock_person;
use crate::signin::passkeys::{MAX_NAME, PasskeyError, PasskeyRefusal, passkeys_of, remove, reset};
use crate::signin::sessions;
use crate::signin::settings::Mfa;
use crate::tenancy::work::{Change, SignIn, WriteTx};

/// A WebAuthn JSON form (`PublicKeyCredential`), binary fields in base64url, as the browser's
/// `navigator.credentials` answer serializes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(example = json!({"id": "mJQ2vTRvYkuSuGLM9sPBQg", "rawId": "mJQ2vTRvYkuSuGLM9sPBQg", "type": "public-key", "response": {"authenticatorData": "SZYN5YgO…", "clientDataJSON": "eyJ0eXBlIjoi…", "signature": "MEUCIQ…", "userHandle": null}, "extensions": {}}))]
pub struct WebauthnCredential {
    #[schema(value_type = Object)]
    credential: Value,
}

impl WebauthnCredential {
    pub(super) fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, ApiError> {
        serde_json::from_value(self.credential).map_err(|_| {
            ApiError::new(
                ErrorCode::MalformedRequest,
                "The body is not a WebAuthn credential of this ceremony.",
            )
        })
    }
}

/// The naming of a new passkey.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RegisterParams {
    /// A name for the passkey, 1 to 64 characters (default "Passkey").
    pub name: Option<String>,
}

/// A passkey, as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyView {
    pub id: Uuid,
    pub name: String,
    pub created_at: chrono::DateTime<Utc>,
    pub last_used_at: Option<chrono::DateTime<Utc>>,
    /// Set when its signature counter went backwards (a possible clone): refused since.
    pub flagged_at: Option<chrono::DateTime<Utc>>,
    /// The authenticator model (AAGUID) it reported at registration; the nil UUID when it
    /// reported none, absent when registered before models were recorded.
    pub aaguid: Option<Uuid>,
}

impl From<passkey::Model> for PasskeyView {
    fn from(row: passkey::Model) -> Self {
        PasskeyView {
            id: row.id,
            name: row.name,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            flagged_at: row.flagged_at,
            aaguid: row.aaguid,
        }
    }
}

/// The passkeys of the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyList {
    pub items: Vec<PasskeyView>,
}

/// A new name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "YubiKey 5C"}))]
pub struct RenamePasskey {
    pub name: String,
}

/// The guard of the WebAuthn ceremonies: the tenant's sign-in routes, documented as needing the
/// session cookie (each handler authenticates it, with its `Origin`, in [`signed_in`]).
pub struct CeremonyPage(SignInTenant);

impl actix_web::FromRequest for CeremonyPage {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let page = SignInTenant::from_request(req, payload);
        Box::pin(async move { Ok(CeremonyPage(page.await?)) })
    }
}

impl Documented for CeremonyPage {
    fn document(contract: &mut Contract) {
        SignInTenant::document(contract);
        contract.security = Some(Security::Session);
    }
}

impl Guard for CeremonyPage {}

impl std::ops::Deref for CeremonyPage {
    type Target = SignInTenant;

    fn deref(&self) -> &SignInTenant {
        &self.0
    }
}

/// The person of a ceremony step, signed in with their session cookie.
struct Ceremony {
    user: Uuid,
    session: Uuid,
    /// When the session last passed a passkey assertion.
    asserted_at: Option<DateTime<Utc>>,
    /// The write transaction of the step's action.
    tx: WriteTx,
    /// The person acting on their own sessions.
    proof: SignIn,
}

/// The session of the request's cookie, and the write transaction of `action`.
async fn signed_in(
    page: &SignInTenant,
    req: &HttpRequest,
    action: &'static str,
) -> Result<Ceremony, ApiError> {
    let principal = sessions::authenticate(page.shared_state(), page.tenant(), req)
        .await
        .unwrap_or(Err(IdentityError::MissingCredentials))?;
    let Some((proof, session)) = SignIn::own_session(&principal, action) else {
        return Err(IdentityError::MissingCredentials.into());
    };
    let tx = WriteTx::sign_in(
        page.shared_state(),
        &page.tenant().slug,
        &request_meta(req),
        &proof,
    )
    .await?;
    Ok(Ceremony {
        user: principal.id(),
        session,
        asserted_at: principal.asserted_at(),
        tx,
        proof,
    })
}

/// Whether an assertion made `at` is recent enough to add an authenticator (not just one made
/// earlier in the session): the tenant's step-up age, or its default where step-up is off.
async fn recent(page: &SignInTenant, at: Option<DateTime<Utc>>) -> Result<bool, ApiError> {
    let Some(at) = at else { return Ok(false) };
    let state = page.shared_state();
    let minutes = state
        .tenant_settings
        .get(&state.dbs, &page.tenant().slug)
        .await?
        .passkey_change_minutes();
    Ok(Utc::now() - at < chrono::Duration::minutes(minutes))
}

/// The refusal of a ceremony step of `user` in `session`, as recorded.
fn refusal(user: Uuid, session: Uuid) -> Change {
    Change::new("session", session, 401)
        .by("user", user)
        .keeping_sessions()
}

/// The refusal of an assertion whose counter went backwards: the passkey has a copy, and
/// whoever asserted with the copy first holds a session with its second factor passed. Every
/// session of `user` ends (this one too: it cannot tell which copy is the person's), on
/// every replica, and the refusal is a security event.
async fn cloned(
    tx: &WriteTx,
    proof: &SignIn,
    user: Uuid,
    session: Uuid,
) -> Result<Change, ApiError> {
    let ended = sessions::revoke_all::<SessionRevoke>(tx, proof, user).await?;
    Ok(Change::new("session", session, 401)
        .by("user", user)
        .detail("security_event", "passkey_cloned")
        .detail("sessions_ended", ended))
}

/// The outcome of a ceremony step: its value, with `tx` to commit the success; or, for a
/// refusal, `tx` committed with `refusal` and its reason on record, and 401 `passkey_refused`.
/// Other errors leave nothing behind.
pub(super) async fn settle<T>(
    tx: WriteTx,
    refusal: Change,
    outcome: Result<T, PasskeyError>,
) -> Result<(T, WriteTx), ApiError> {
    let refused = match outcome {
        Ok(value) => return Ok((value, tx)),
        Err(PasskeyError::Refused(refused)) => refused,
        Err(PasskeyError::Db(e)) => return Err(e.into()),
        Err(PasskeyError::Identity(e)) => return Err(e.into()),
        Err(PasskeyError::Unexpected(e)) => {
            return Err(ApiError::internal("webauthn", anyhow::anyhow!(e)));
        }
    };
    tx.commit(refusal.detail("reason", refused.to_string()))
        .await?;
    let message = match refused {
        PasskeyRefusal::NoPasskey => "No usable passkey is registered: enroll one first.",
        PasskeyRefusal::NoCeremony => "No ceremony is waiting: start again.",
        PasskeyRefusal::BadEnrollment => "The enrollment token is unknown, used or expired.",
        PasskeyRefusal::AssertFirst => {
            "You have a passkey: confirm with it (an assertion) before adding another."
        }
        PasskeyRefusal::Unavailable => {
            "Passkeys need this server's public URL to name a domain, not an address."
        }
        PasskeyRefusal::ModelNotAllowed(_) => {
            "The tenant does not allow this passkey's authenticator model."
        }
        _ => "The passkey was refused.",
    };
    Err(ApiError::new(ErrorCode::PasskeyRefused, message))
}

/// Begin registering a passkey.
///
/// For the signed-in person (session cookie): the creation options for
/// `navigator.credentials.create`. User verification is required. A person who has a passkey
/// adds another only after asserting with one in this session (`passkey_refused` otherwise).
#[utoipa::path(
    post,
    path = "/webauthn/register/start",
    tag = "sign-in",
    responses((status = 200, description = "`{\"publicKey\": …creation options…}`", body = Object), (status = 401, description = "No live session"))
)]
pub async fn register_start(
    page: CeremonyPage,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let Ceremony {
        user,
        session,
        asserted_at,
        tx,
        ..
    } = signed_in(&page, &req, "auth.webauthn_register_start").await?;
    let asserted = recent(&page, asserted_at).await?;
    let person = crate::directory::users::get(tx.conn(), user)
        .await?
        .ok_or(IdentityError::MissingCredentials)?;
    let outcome = page
        .state()
        .passkeys
        .begin_registration(&tx, session, &person, asserted)
        .await;
    let (options, tx) = settle(tx, refusal(user, session), outcome).await?;
    tx.commit(Change::new("session", session, 200).by("user", user))
        .await?;
    Ok(HttpResponse::Ok().json(options))
}

/// Finish registering a passkey.
///
/// The `PublicKeyCredential` the browser made; 201 with the new passkey. A credential of
/// another ceremony, origin or RP ID, or already registered, is 401 `passkey_refused`.
#[utoipa::path(
    post,
    path = "/webauthn/register/finish",
    tag = "sign-in",
    params(RegisterParams),
    responses((status = 201, body = PasskeyView), (status = 401, description = "Refused (`passkey_refused`)"))
)]
pub async fn register_finish(
    page: CeremonyPage,
    req: HttpRequest,
    query: web::Query<RegisterParams>,
    body: JsonBody<WebauthnCredential>,
) -> Result<HttpResponse, ApiError> {
    let name = passkey_name(query.into_inner().name.as_deref().unwrap_or("Passkey"))?;
    let credential = body.parse().await?.parse()?;
    let Ceremony {
        user,
        session,
        asserted_at,
        tx,
        ..
    } = signed_in(&page, &req, "auth.webauthn_register").await?;
    let asserted = recent(&page, asserted_at).await?;
    let outcome = page
        .state()
        .passkeys
        .finish_registration(&tx, session, user, asserted, &credential, &name)
        .await;
    let (created, tx) = settle(tx, refusal(user, session), outcome).await?;
    tx.commit(
        Change::new("passkey", created.id, 201)
            .by("user", user)
            .detail("session", session.to_string())
            .detail("name", created.name.clone()),
    )
    .await?;
    Ok(HttpResponse::Created().json(PasskeyView::from(created)))
}

/// Begin a passkey assertion.
///
/// The request options for `navigator.credentials.get`, listing the person's passkeys.
#[utoipa::path(
    post,
    path = "/webauthn/authenticate/start",
    tag = "sign-in",
    responses((status = 200, description = "`{\"publicKey\": …request options…}`", body = Object), (status = 401, description = "No live session, or no passkey (`passkey_refused`)"))
)]
pub async fn authenticate_start(
    page: CeremonyPage,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let Ceremony {
        user, session, tx, ..
    } = signed_in(&page, &req, "auth.webauthn_authenticate_start").await?;
    let outcome = page
        .state()
        .passkeys
        .begin_authentication(&tx, session, user)
        .await;
    let (options, tx) = settle(tx, refusal(user, session), outcome).await?;
    tx.commit(Change::new("session", session, 200).by("user", user))
        .await?;
    Ok(HttpResponse::Ok().json(options))
}

/// Finish a passkey assertion.
///
/// On success the session has passed its second factor, now (`/me` shows `"mfa": true`).
/// An assertion of another origin, RP ID, user or ceremony, without user verification, or with
/// a signature counter that went backwards (the passkey is flagged) is 401 `passkey_refused`.
#[utoipa::path(
    post,
    path = "/webauthn/authenticate/finish",
    tag = "sign-in",
    responses((status = 200, body = PasskeyView), (status = 401, description = "Refused (`passkey_refused`)"))
)]
pub async fn authenticate_finish(
    page: CeremonyPage,
    req: HttpRequest,
    body: JsonBody<WebauthnCredential>,
) -> Result<HttpResponse, ApiError> {
    let assertion = body.parse().await?.parse()?;
    let Ceremony {
        user,
        session,
        tx,
        proof,
        ..
    } = signed_in(&page, &req, "auth.webauthn_authenticate").await?;
    let outcome = page
        .state()
        .passkeys
        .finish_authentication(&tx, session, user, &assertion)
        .await;
    let refused = match &outcome {
        Err(PasskeyError::Refused(PasskeyRefusal::CounterRegression)) => {
            cloned(&tx, &proof, user, session).await?
        }
        _ => refusal(user, session),
    };
    let (used, tx) = settle(tx, refused, outcome).await?;
    tx.commit(
        Change::new("passkey", used.id, 200)
            .by("user", user)
            .detail("session", session.to_string()),
    )
    .await?;
    Ok(HttpResponse::Ok().json(PasskeyView::from(used)))
}

fn passkey_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1 to {MAX_NAME} printable characters"),
        ));
    }
    Ok(name.to_owned())
}

/// My passkeys.
///
/// The caller's passkeys (a service account has none).
#[utoipa::path(
    get,
    path = "/me/credentials",
    tag = "me",
    responses((status = 200, body = PasskeyList))
)]
pub async fn list_my_credentials(caller: Identified) -> Result<web::Json<PasskeyList>, ApiError> {
    let Principal::User { id, .. } = caller.principal() else {
        return Ok(web::Json(PasskeyList { items: Vec::new() }));
    };
    let tx = caller.read().await?;
    let rows = passkeys_of(&tx, *id).await?;
    tx.commit().await?;
    Ok(web::Json(PasskeyList {
        items: rows.into_iter().map(PasskeyView::from).collect(),
    }))
}

/// Rename one of my passkeys.
#[utoipa::path(
    patch,
    path = "/me/credentials/{id}",
    tag = "me",
    responses((status = 200, body = PasskeyView))
)]
pub async fn rename_my_credential(
    caller: Caller,
    id: PathId,
    body: JsonBody<RenamePasskey>,
) -> Result<web::Json<PasskeyView>, ApiError> {
    let name = passkey_name(&body.parse().await?.name)?;
    let Some((proof, user)) = SignIn::own_sessions(caller.principal(), "auth.passkey_rename")
    else {
        return Err(ApiError::not_found());
    };
    let tx = caller.write_own(&proof).await?;
    let row = passkey::Entity::find_by_id(id.0)
        .one(tx.conn())
        .await?
        .filter(|p| p.user_id == user)
        .ok_or_else(ApiError::not_found)?;
    let mut renamed: passkey::ActiveModel = row.into();
    renamed.name = Set(name.clone());
    let renamed = renamed.update(tx.conn()).await?;
    tx.commit(
        Change::new("passkey", id.0, 200)
            .by("user", user)
            .detail("name", name),
    )
    .await?;
    Ok(web::Json(renamed.into()))
}

/// Remove one of my passkeys.
///
/// Needs a passkey assertion in this session younger than the tenant's step-up age (5 minutes
/// when step-up is off): `step_up_required` otherwise. The last passkey cannot be removed while
/// the tenant requires MFA (409). The person's other sessions end: whoever asserted with the
/// removed passkey elsewhere is signed out.
#[utoipa::path(
    delete,
    path = "/me/credentials/{id}",
    tag = "me",
    responses((status = 204, description = "Removed"), (status = 401, description = "A fresh assertion is needed (`step_up_required`)"), (status = 409, description = "The last passkey while MFA is required"))
)]
pub async fn delete_my_credential(caller: Caller, id: PathId) -> Result<HttpResponse, ApiError> {
    let Some((proof, user)) = SignIn::own_sessions(caller.principal(), "auth.passkey_remove")
    else {
        return Err(ApiError::not_found());
    };
    let max_age = caller.settings().passkey_change_minutes();
    caller.fresh_assertion("auth.passkey_remove", max_age)?;
    let tx = caller.write_own(&proof).await?;
    // Concurrent removals of one person's passkeys take turns, so the last-one rule holds.
    lock_person(&tx, user).await?;
    let owned = passkeys_of(tx.conn(), user).await?;
    if !owned.iter().any(|p| p.id == id.0) {
        return Err(ApiError::not_found());
    }
    if owned.len() == 1 && caller.settings().mfa == Mfa::Required {
        return Err(ApiError::conflict(
            "This is your last passkey and the tenant requires one: enroll another first.",
        ));
    }
    if !remove(&tx, &proof, user, id.0).await? {
        return Err(ApiError::not_found());
    }
    // Whoever asserted with it elsewhere (a lost or cloned authenticator) is signed out.
    let current = caller.principal().session_id();
    let ended = sessions::revoke_others(&tx, &proof, user, current).await?;
    tx.commit(
        Change::new("passkey", id.0, 204)
            .by("user", user)
            .detail("other_sessions_ended", ended),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Reset a user's passkeys.
///
/// For a lost or stolen authenticator: removes all of the user's passkeys and ends all of
/// their sessions. They enroll a new one at their next sign-in. A break-glass account's are
/// the platform operator's to renew (409).
#[utoipa::path(
    delete,
    path = "/users/{id}/credentials",
    tag = "users",
    responses((status = 204, description = "Reset"), (status = 409, description = "A break-glass account (the operator renews it)"))
)]
pub async fn reset_user_credentials(
    auth: Authorized<PasskeyReset>,
    id: PathId,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.write().await?;
    crate::directory::users::get(tx.conn(), id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if is_break_glass(tx.conn(), id.0).await? {
        return Err(ApiError::conflict(
            "This is a break-glass account: only the platform operator issues it a new enrollment.",
        ));
    }
    let removed = reset(&tx, auth.allowed(), id.0).await?;
    let ended = sessions::revoke_all(&tx, auth.allowed(), id.0).await?;
    tx.commit(
        Change::new("user", id.0, 204)
            .detail("passkeys_removed", removed)
            .detail("sessions_ended", ended),
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
