//! `/t/{tenant}/api/v1/users`

use std::collections::{BTreeMap, BTreeSet};

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::user;
use sea_orm::{EntityTrait as _, QuerySelect as _};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::account_status::{AccountKind, changed_meanwhile, refuse_disabling, status_change};
use super::{ListParams, Page};
use crate::authz::actions::{UserCreate, UserDisable, UserRead, UserUpdate};
use crate::authz::bindings::SubjectType;
use crate::authz::{Subject, load_subject};
use crate::directory::{self, AccountStatus, clean_name, users};
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{JsonBody, PathId};
use crate::http::pipeline::authz::Authorized;
use crate::signin::{break_glass, sessions};
use crate::tenancy::is_unique_violation;
use crate::tenancy::work::Change;

/// A user to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com", "display_name": "Ada Lovelace"}))]
pub struct CreateUser {
    /// Unique within the tenant (compared case-insensitively).
    #[schema(example = "ada@example.com")]
    pub email: String,
    #[schema(example = "Ada Lovelace")]
    pub display_name: String,
}

/// Changes to a user. `attributes` is merged: a key set to `null` is removed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"display_name": "Ada King", "attributes": {"department": "Finance", "region": "US", "clearance": null}}))]
pub struct UpdateUser {
    pub display_name: Option<String>,
    /// Claims the policies see as entity tags (`principal.getTag("region")`).
    #[schema(example = json!({"department": "Finance", "region": "US"}))]
    pub attributes: Option<BTreeMap<String, Option<String>>>,
}

/// Most attributes a user can carry, and the longest key and value.
const MAX_ATTRIBUTES: usize = 64;
const MAX_ATTRIBUTE_KEY: usize = 64;
const MAX_ATTRIBUTE_VALUE: usize = 1024;

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    /// Claims the authorization engine sees as entity tags.
    pub attributes: BTreeMap<String, String>,
    pub status: AccountStatus,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl From<user::Model> for UserView {
    fn from(m: user::Model) -> Self {
        UserView {
            id: m.id,
            email: m.email,
            display_name: m.display_name,
            attributes: serde_json::from_value(m.attributes).unwrap_or_default(),
            status: AccountStatus::parse(&m.status),
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

impl CreateUser {
    fn validate(self) -> Result<users::NewUser, ApiError> {
        let email = users::clean_email(&self.email);
        let display_name = clean_name(&self.display_name, 200);
        match (email, display_name) {
            (Ok(email), Ok(display_name)) => Ok(users::NewUser {
                email,
                display_name,
            }),
            (email, display_name) => Err(ApiError::validation(
                [("email", email.err()), ("display_name", display_name.err())]
                    .into_iter()
                    .filter_map(|(field, e)| {
                        e.map(|message| FieldError {
                            field: field.into(),
                            message,
                        })
                    })
                    .collect(),
            )),
        }
    }
}

/// A page of users (the schema `UserPage`).
pub type UserPage = Page<UserView>;

/// Create a user.
#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    responses((status = 201, body = UserView), (status = 409, description = "The email is taken"))
)]
pub async fn create_user(
    auth: Authorized<UserCreate>,
    body: JsonBody<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let new = body.parse().await?.validate()?;
    let tx = auth.write().await?;
    let user = match users::create(&tx, auth.allowed(), new).await {
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict("A user with this email exists."));
        }
        other => other?,
    };
    tx.commit(Change::new("user", user.id, 201)).await?;
    Ok(HttpResponse::Created().json(UserView::from(user)))
}

/// Merges `changes` into `attributes`, checking keys (`[a-z][a-z0-9_]*`, at most 64) and values.
fn merge_attributes(
    attributes: &mut BTreeMap<String, String>,
    changes: BTreeMap<String, Option<String>>,
) -> Result<(), ApiError> {
    for (key, value) in changes {
        let mut chars = key.chars();
        let key_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && key.len() <= MAX_ATTRIBUTE_KEY;
        if !key_ok {
            return Err(ApiError::invalid_field(
                &format!("attributes.{key}"),
                "keys are lower-case letters, digits and `_`, starting with a letter, at most 64",
            ));
        }
        match value {
            None => {
                attributes.remove(&key);
            }
            Some(v)
                if v.chars().count() > MAX_ATTRIBUTE_VALUE || v.chars().any(char::is_control) =>
            {
                return Err(ApiError::invalid_field(
                    &format!("attributes.{key}"),
                    "values are at most 1024 characters, without control characters",
                ));
            }
            Some(v) => {
                attributes.insert(key, v);
            }
        }
    }
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(ApiError::invalid_field(
            "attributes",
            format!("at most {MAX_ATTRIBUTES} attributes"),
        ));
    }
    Ok(())
}

/// Change a user's name or attributes.
///
/// Attributes are the claims that claim-based policies read; they take effect on the user's
/// next request. The caller must hold everything new attributes would give the user (403
/// naming what is missing).
#[utoipa::path(
    patch,
    path = "/users/{id}",
    tag = "users",
    responses(
        (status = 200, body = UserView),
        (status = 409, description = "The attributes changed meanwhile")
    )
)]
pub async fn update_user(
    auth: Authorized<UserUpdate>,
    id: PathId,
    body: JsonBody<UpdateUser>,
) -> Result<web::Json<UserView>, ApiError> {
    let body = body.parse().await?;
    let display_name = body
        .display_name
        .map(|n| clean_name(&n, 200).map_err(|m| ApiError::invalid_field("display_name", m)))
        .transpose()?;
    // Checked on what a read sees, outside the write transaction (the escalation check may
    // make thousands of decisions); the write then proceeds only on the same claims.
    let read = auth.read().await?;
    let existing = users::get(&read, id.0).await?;
    let current = load_subject(&read, SubjectType::User, id.0).await?;
    read.commit().await?;
    let (Some(existing), Some(current)) = (existing, current) else {
        return Err(ApiError::not_found());
    };
    let mut attributes: BTreeMap<String, String> =
        serde_json::from_value(existing.attributes.clone()).unwrap_or_default();
    let before = attributes.clone();
    if let Some(changes) = body.attributes {
        merge_attributes(&mut attributes, changes)?;
    }
    if attributes != before {
        // Claims are what claim-based policies grant on: the caller must hold whatever the
        // policies reading the changed claims decide, and the user may gain nothing (in the
        // default context) that the caller lacks.
        let changed: BTreeSet<String> = before
            .keys()
            .chain(attributes.keys())
            .filter(|k| before.get(*k) != attributes.get(*k))
            .cloned()
            .collect();
        let missing =
            auth.engine()
                .claims_not_delegable(auth.policies(), &auth.grantor(), &changed);
        if !missing.is_empty() {
            return Err(auth.refuse_delegation(&missing).into());
        }
        let updated = Subject {
            tags: attributes.clone(),
            ..current.clone()
        };
        auth.refuse_escalation(Some(&current), &updated).await?;
    }
    let tx = auth.write().await?;
    // Locked on PostgreSQL (SQLite's write transaction holds the file): concurrent changes of
    // one user's claims take turns, and the second sees the first.
    let Some(locked) = user::Entity::find_by_id(id.0)
        .lock_exclusive()
        .one(tx.conn())
        .await?
    else {
        return Err(ApiError::not_found());
    };
    if locked.attributes != existing.attributes {
        return Err(ApiError::conflict(
            "The user's attributes changed meanwhile; read them again and retry.",
        ));
    }
    let user = users::update(&tx, auth.allowed(), locked, display_name, &attributes).await?;
    let change = Change::new("user", user.id, 200)
        .detail("attributes_before", serde_json::json!(before))
        .detail("attributes_after", serde_json::json!(attributes));
    tx.commit(change).await?;
    Ok(web::Json(user.into()))
}

/// Disable a user.
///
/// The person can no longer sign in, and every session of theirs ends (with the access tokens
/// exchanged for them); enabling them later brings none back. No one disables themselves or
/// the tenant's break-glass account (409).
#[utoipa::path(
    post,
    path = "/users/{id}/disable",
    tag = "users",
    responses(
        (status = 200, body = UserView),
        (status = 409, description = "The caller's own or the break-glass account, or the status changed meanwhile")
    )
)]
pub async fn disable_user(
    auth: Authorized<UserDisable>,
    id: PathId,
) -> Result<web::Json<UserView>, ApiError> {
    set_status(auth, id.0, AccountStatus::Disabled).await
}

/// Enable a disabled user.
///
/// The person may sign in again, with everything their roles and groups grant: the caller must
/// hold all of that (403 naming what is missing).
#[utoipa::path(
    post,
    path = "/users/{id}/enable",
    tag = "users",
    responses(
        (status = 200, body = UserView),
        (status = 409, description = "The status changed meanwhile")
    )
)]
pub async fn enable_user(
    auth: Authorized<UserDisable>,
    id: PathId,
) -> Result<web::Json<UserView>, ApiError> {
    set_status(auth, id.0, AccountStatus::Active).await
}

/// Moves user `id` to `status` (nothing to do when it is there already).
async fn set_status(
    auth: Authorized<UserDisable>,
    id: Uuid,
    status: AccountStatus,
) -> Result<web::Json<UserView>, ApiError> {
    // Reads only what the direction's check needs: the break-glass flag to disable, the
    // person's groups and attributes to enable.
    let read = auth.read().await?;
    let existing = users::get(&read, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let before = AccountStatus::parse(&existing.status);
    if before == status {
        read.commit().await?;
        return Ok(web::Json(existing.into()));
    }
    match status {
        AccountStatus::Disabled => {
            let break_glass = break_glass::is_break_glass(&read, id).await?;
            read.commit().await?;
            refuse_disabling(&auth, id, break_glass)?;
        }
        // A disabled person can do nothing: enabling them gives back all their grants.
        AccountStatus::Active => {
            let subject = load_subject(&read, SubjectType::User, id)
                .await?
                .ok_or_else(ApiError::not_found)?;
            read.commit().await?;
            auth.refuse_escalation(None, &subject).await?;
        }
    }
    let tx = auth.write().await?;
    let locked = users::get_locked(&tx, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if locked.status != existing.status {
        return Err(changed_meanwhile());
    }
    let user = users::set_status(&tx, auth.allowed(), locked, status).await?;
    let ended = match status {
        AccountStatus::Disabled => sessions::revoke_all(&tx, auth.allowed(), id).await?,
        AccountStatus::Active => 0,
    };
    let change =
        status_change(AccountKind::User, id, before, status).detail("sessions_ended", ended);
    tx.commit(change).await?;
    Ok(web::Json(user.into()))
}

/// List users.
#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    responses((status = 200, body = UserPage))
)]
pub async fn list_users(
    auth: Authorized<UserRead>,
    query: web::Query<ListParams>,
) -> Result<web::Json<Page<UserView>>, ApiError> {
    let limit = query.limit()?;
    let tx = auth.read().await?;
    let rows =
        directory::page_by_id::<user::Entity>(&tx, user::Column::Id, query.after, limit).await?;
    tx.commit().await?;
    Ok(web::Json(Page::of(
        rows,
        limit,
        |u| u.id.to_string(),
        UserView::from,
    )))
}

/// Get a user.
#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    responses((status = 200, body = UserView))
)]
pub async fn get_user(
    auth: Authorized<UserRead>,
    id: PathId,
) -> Result<web::Json<UserView>, ApiError> {
    let tx = auth.read().await?;
    let user = users::get(&tx, id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    tx.commit().await?;
    Ok(web::Json(user.into()))
}
