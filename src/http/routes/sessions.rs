//! Browser sessions: a person's own (`/t/{tenant}/api/v1/me/sessions`) and, for whoever holds
//! `session.read` / `session.revoke`, anyone's (`/users/{id}/sessions`, `/sessions/{id}`).
//! Ending a session takes effect on its next request: sessions are looked up at every request.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::session;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ListParams, Page};
use crate::authz::actions::{SessionRead, SessionRevoke};
use crate::directory::users;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::PathId;
use crate::http::pipeline::authz::{Authorized, Caller};
use crate::identity::Principal;
use crate::signin::sessions;
use crate::tenancy::work::{Change, SignIn, WriteTx};

/// A browser session as listed: never its token.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub user_id: Uuid,
    /// How it was opened: `oidc` or `saml`.
    pub method: String,
    /// The identity provider it was opened through.
    pub identity_provider_id: Option<Uuid>,
    /// `sso`, or `sso+mfa` once a second factor was passed.
    pub level: String,
    /// Whether this is the session of the request listing it.
    pub current: bool,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub last_seen_at: DateTime<Utc>,
    /// Its absolute end.
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub expires_at: DateTime<Utc>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A page of sessions (the schema `SessionPage`).
pub type SessionPage = Page<SessionView>;

impl SessionView {
    fn of(row: session::Model, current: Option<Uuid>) -> Self {
        SessionView {
            current: current == Some(row.id),
            id: row.id,
            user_id: row.user_id,
            method: row.method,
            identity_provider_id: row.idp_id,
            level: row.level,
            created_at: row.created_at,
            last_seen_at: row.last_seen_at,
            expires_at: row.expires_at,
            source_ip: row.source_ip,
            user_agent: row.user_agent,
        }
    }
}

/// My sessions.
///
/// The caller's live browser sessions, on every device; a service account has none.
#[utoipa::path(
    get,
    path = "/me/sessions",
    tag = "me",
    params(ListParams),
    responses((status = 200, body = SessionPage))
)]
pub async fn list_my_sessions(
    caller: Caller,
    query: web::Query<ListParams>,
) -> Result<web::Json<SessionPage>, ApiError> {
    let limit = query.limit()?;
    let Principal::User { id, .. } = caller.principal() else {
        return Ok(web::Json(Page {
            items: Vec::new(),
            next_cursor: None,
        }));
    };
    let tx = caller.read().await?;
    let rows = sessions::live(&tx, *id, query.after, limit).await?;
    tx.commit().await?;
    let current = caller.principal().session_id();
    Ok(web::Json(Page::try_of(
        rows,
        limit,
        |s| s.id.to_string(),
        |row| Ok::<_, ApiError>(SessionView::of(row, current)),
    )?))
}

/// Refuses a person's session that has not passed a second factor (see
/// [`sessions::may_end_other_sessions`]) ending other sessions of `user`, when `user` is that
/// person: holding `session.revoke` does not let an identity-provider password alone sign its
/// owner out of the sessions that passed it.
async fn refuse_ending_own_others(
    tx: &WriteTx,
    principal: &Principal,
    user: Uuid,
) -> Result<(), ApiError> {
    let own = matches!(principal, Principal::User { id, .. } if *id == user);
    if own && !sessions::may_end_other_sessions(tx.conn(), principal).await? {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "Ending another of your sessions needs this one to have passed your passkey: \
             assert with it first.",
        ));
    }
    Ok(())
}

/// End one of my sessions.
///
/// Signs that device out (the current session too, if named: prefer `POST /auth/logout`,
/// which also clears the cookie). 404 when the caller has no such live session. Ending another
/// session needs this one to have passed a second factor when the person has a passkey (403
/// otherwise): an identity-provider password alone does not sign the person out elsewhere.
#[utoipa::path(
    delete,
    path = "/me/sessions/{id}",
    tag = "me",
    responses((status = 204, description = "Ended"))
)]
pub async fn delete_my_session(caller: Caller, id: PathId) -> Result<HttpResponse, ApiError> {
    let Some((proof, user)) = SignIn::own_sessions(caller.principal(), "auth.session_revoke")
    else {
        return Err(ApiError::not_found());
    };
    let tx = caller.write_own(&proof).await?;
    if caller.principal().session_id() != Some(id.0) {
        refuse_ending_own_others(&tx, caller.principal(), user).await?;
    }
    if !sessions::revoke(&tx, &proof, user, id.0).await? {
        return Err(ApiError::not_found());
    }
    tx.commit(Change::new("session", id.0, 204).by("user", user))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// List a user's sessions.
#[utoipa::path(
    get,
    path = "/users/{id}/sessions",
    tag = "users",
    params(ListParams),
    responses((status = 200, body = SessionPage))
)]
pub async fn list_user_sessions(
    auth: Authorized<SessionRead>,
    id: PathId,
    query: web::Query<ListParams>,
) -> Result<web::Json<SessionPage>, ApiError> {
    let limit = query.limit()?;
    let tx = auth.read().await?;
    users::get(&tx, id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let rows = sessions::live(&tx, id.0, query.after, limit).await?;
    tx.commit().await?;
    let current = auth.principal().session_id();
    Ok(web::Json(Page::try_of(
        rows,
        limit,
        |s| s.id.to_string(),
        |row| Ok::<_, ApiError>(SessionView::of(row, current)),
    )?))
}

/// End all of a user's sessions.
///
/// Signs the user out on every device; they can sign in again (deactivate the user to stop
/// that).
#[utoipa::path(
    delete,
    path = "/users/{id}/sessions",
    tag = "users",
    responses((status = 204, description = "Ended"))
)]
pub async fn delete_user_sessions(
    auth: Authorized<SessionRevoke>,
    id: PathId,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.write().await?;
    users::get(tx.conn(), id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    refuse_ending_own_others(&tx, auth.principal(), id.0).await?;
    let ended = sessions::revoke_all(&tx, auth.allowed(), id.0).await?;
    tx.commit(Change::new("user", id.0, 204).detail("sessions_ended", ended))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// End a session.
///
/// Signs one device of its user out. 404 when there is no such live session.
#[utoipa::path(
    delete,
    path = "/sessions/{id}",
    tag = "users",
    responses((status = 204, description = "Ended"))
)]
pub async fn delete_session(
    auth: Authorized<SessionRevoke>,
    id: PathId,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.write().await?;
    let Some(row) = sessions::get(tx.conn(), id.0).await? else {
        return Err(ApiError::not_found());
    };
    if auth.principal().session_id() != Some(row.id) {
        refuse_ending_own_others(&tx, auth.principal(), row.user_id).await?;
    }
    if !sessions::revoke(&tx, auth.allowed(), row.user_id, row.id).await? {
        return Err(ApiError::not_found());
    }
    tx.commit(Change::new("session", id.0, 204).detail("user_id", row.user_id.to_string()))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
