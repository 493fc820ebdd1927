//! `/t/{tenant}/api/v1/me`: the caller, as Flowgate knows them.

use std::collections::BTreeMap;

use actix_web::web;
use chrono::{DateTime, Utc};
use entity::tenant::{group, group_member};
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::directory::{service_accounts, users};
use crate::http::error::ApiError;
use crate::http::pipeline::authz::Identified;
use crate::identity::{Principal, SecondFactor, UserCredential};

/// How the caller proved who they are on this request.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthInfo {
    /// `session` (a browser's cookie), `api_key` or `access_token`.
    pub method: &'static str,
    /// Whether a second factor (a passkey assertion) was passed.
    pub mfa: bool,
    /// Whether the tenant asks this session for a passkey assertion it has not passed yet:
    /// until it does, only `/me`, `/me/credentials` and the WebAuthn ceremonies answer.
    pub mfa_owed: bool,
    /// The session's id, for a session (or the session a person's access token was
    /// exchanged for).
    pub session_id: Option<Uuid>,
    /// When the caller last proved themselves strongly, for a session.
    #[serde(serialize_with = "crate::http::timestamp::optional::serialize")]
    pub strong_auth_at: Option<DateTime<Utc>>,
}

/// The caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub id: Uuid,
    /// `user` or `service_account`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A user's email; none for a service account.
    pub email: Option<String>,
    pub name: String,
    /// A user's attributes (claims), as policies see them.
    pub attributes: BTreeMap<String, String>,
    /// The names of the caller's groups.
    pub groups: Vec<String>,
    pub auth: AuthInfo,
}

/// Who am I?
#[utoipa::path(
    get,
    path = "/me",
    tag = "me",
    responses((status = 200, body = Me))
)]
pub async fn get_me(caller: Identified) -> Result<web::Json<Me>, ApiError> {
    let tx = caller.read().await?;
    let me = match caller.principal() {
        Principal::ServiceAccount { id, .. } => {
            let account = service_accounts::get(&tx, *id)
                .await?
                .ok_or_else(ApiError::not_found)?;
            Me {
                id: *id,
                kind: "service_account",
                email: None,
                name: account.name,
                attributes: BTreeMap::new(),
                groups: Vec::new(),
                auth: AuthInfo {
                    method: caller.principal().credential_kind(),
                    mfa: false,
                    mfa_owed: false,
                    session_id: None,
                    strong_auth_at: None,
                },
            }
        }
        Principal::User { id, credential, .. } => {
            let user = users::get(&tx, *id)
                .await?
                .ok_or_else(ApiError::not_found)?;
            let memberships = group_member::Entity::find()
                .filter(group_member::Column::UserId.eq(*id))
                .all(&tx)
                .await?;
            let mut groups: Vec<String> = group::Entity::find()
                .filter(group::Column::Id.is_in(memberships.into_iter().map(|m| m.group_id)))
                .all(&tx)
                .await?
                .into_iter()
                .map(|g| g.name)
                .collect();
            groups.sort();
            let (session_id, mfa, mfa_owed, strong_auth_at) = match credential {
                UserCredential::Session {
                    id,
                    second_factor,
                    strong_auth_at,
                    ..
                } => (
                    *id,
                    *second_factor == SecondFactor::Passed,
                    *second_factor == SecondFactor::Owed,
                    Some(*strong_auth_at),
                ),
                UserCredential::AccessToken {
                    session,
                    asserted_at,
                } => (*session, asserted_at.is_some(), false, None),
            };
            Me {
                id: *id,
                kind: "user",
                email: Some(user.email),
                name: user.display_name,
                attributes: serde_json::from_value(user.attributes).unwrap_or_default(),
                groups,
                auth: AuthInfo {
                    method: caller.principal().credential_kind(),
                    mfa,
                    mfa_owed,
                    session_id: Some(session_id),
                    strong_auth_at,
                },
            }
        }
    };
    tx.commit().await?;
    Ok(web::Json(me))
}
