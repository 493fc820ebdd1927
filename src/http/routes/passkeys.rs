//! Passkeys of the signed-in person: the WebAuthn ceremonies under `/t/{tenant}/auth/webauthn`
//! (session cookie only, like every sign-in change: this server's `Origin` is required) and
//! the person's list of passkeys under `/me/credentials`.
//!
//! Every ceremony step, success or refusal, is an audit event naming the session and, once
//! known, the passkey; never a challenge, signature or key.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use entity::tenant::passkey;
use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, EntityTrait as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::signin::SignInTenant;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::{JsonBody, PathId};
use crate::http::pipeline::authz::Caller;
use crate::http::pipeline::context::request_meta;
use crate::identity::{IdentityError, Principal};
use crate::signin::passkeys::{MAX_NAME, PasskeyError, PasskeyRefusal, passkeys_of};
use crate::signin::sessions;
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
    fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T, ApiError> {
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
}

impl From<passkey::Model> for PasskeyView {
    fn from(row: passkey::Model) -> Self {
        PasskeyView {
            id: row.id,
            name: row.name,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            flagged_at: row.flagged_at,
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

/// The session of the request's cookie: its user, the session, and the proof of `action`.
async fn signed_in(
    page: &SignInTenant,
    req: &HttpRequest,
    action: &'static str,
) -> Result<(Uuid, Uuid, WriteTx), ApiError> {
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
    Ok((principal.id(), session, tx))
}

/// The outcome of a ceremony step: its value, with `tx` to commit the success; or, for a
/// refusal, `tx` committed with the reason on record and 401 `passkey_refused`. Other errors
/// leave nothing behind.
async fn settle<T>(
    tx: WriteTx,
    user: Uuid,
    session: Uuid,
    outcome: Result<T, PasskeyError>,
) -> Result<(T, WriteTx), ApiError> {
    let refusal = match outcome {
        Ok(value) => return Ok((value, tx)),
        Err(PasskeyError::Refused(refusal)) => refusal,
        Err(PasskeyError::Db(e)) => return Err(e.into()),
        Err(PasskeyError::Unexpected(e)) => {
            return Err(ApiError::internal("webauthn", anyhow::anyhow!(e)));
        }
    };
    let change = Change::new("session", session, 401)
        .by("user", user)
        .detail("reason", refusal.to_string());
    tx.commit(change).await?;
    let message = match refusal {
        PasskeyRefusal::NoPasskey => "No usable passkey is registered: enroll one first.",
        PasskeyRefusal::NoCeremony => "No ceremony is waiting: start again.",
        PasskeyRefusal::Unavailable => {
            "Passkeys need this server's public URL to name a domain, not an address."
        }
        _ => "The passkey was refused.",
    };
    Err(ApiError::new(ErrorCode::PasskeyRefused, message))
}

/// Begin registering a passkey.
///
/// For the signed-in person (session cookie): the creation options for
/// `navigator.credentials.create`. User verification is required.
#[utoipa::path(
    post,
    path = "/webauthn/register/start",
    tag = "sign-in",
    responses((status = 200, description = "`{\"publicKey\": …creation options…}`", body = Object), (status = 401, description = "No live session"))
)]
pub async fn register_start(
    page: SignInTenant,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (user, session, tx) = signed_in(&page, &req, "auth.webauthn_register_start").await?;
    let person = crate::directory::users::get(tx.conn(), user)
        .await?
        .ok_or(IdentityError::MissingCredentials)?;
    let outcome = page
        .state()
        .passkeys
        .begin_registration(&tx, session, &person)
        .await;
    let (options, tx) = settle(tx, user, session, outcome).await?;
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
    page: SignInTenant,
    req: HttpRequest,
    query: web::Query<RegisterParams>,
    body: JsonBody<WebauthnCredential>,
) -> Result<HttpResponse, ApiError> {
    let name = passkey_name(query.into_inner().name.as_deref().unwrap_or("Passkey"))?;
    let credential = body.parse().await?.parse()?;
    let (user, session, tx) = signed_in(&page, &req, "auth.webauthn_register").await?;
    let outcome = page
        .state()
        .passkeys
        .finish_registration(&tx, session, user, &credential, &name)
        .await;
    let (created, tx) = settle(tx, user, session, outcome).await?;
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
    page: SignInTenant,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let (user, session, tx) = signed_in(&page, &req, "auth.webauthn_authenticate_start").await?;
    let outcome = page
        .state()
        .passkeys
        .begin_authentication(&tx, session, user)
        .await;
    let (options, tx) = settle(tx, user, session, outcome).await?;
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
    page: SignInTenant,
    req: HttpRequest,
    body: JsonBody<WebauthnCredential>,
) -> Result<HttpResponse, ApiError> {
    let assertion = body.parse().await?.parse()?;
    let (user, session, tx) = signed_in(&page, &req, "auth.webauthn_authenticate").await?;
    let outcome = page
        .state()
        .passkeys
        .finish_authentication(&tx, session, user, &assertion)
        .await;
    let (used, tx) = settle(tx, user, session, outcome).await?;
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
pub async fn list_my_credentials(caller: Caller) -> Result<web::Json<PasskeyList>, ApiError> {
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
