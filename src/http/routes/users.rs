//! `/t/{tenant}/api/v1/users`

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use entity::tenant::user;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{BodyErrors, IdParam, ListParams, Page, TenantErrors, TenantParam};
use crate::authz::actions::{UserCreate, UserRead};
use crate::directory::{self, clean_name, is_duplicate, users};
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{ApiJson, PathId};
use crate::http::tenant::{Authorized, Change};

/// A user to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Unique within the tenant (compared case-insensitively).
    #[schema(example = "ada@example.com")]
    pub email: String,
    #[schema(example = "Ada Lovelace")]
    pub display_name: String,
}

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    /// Claims the authorization engine sees as entity tags.
    pub attributes: BTreeMap<String, String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<user::Model> for UserView {
    fn from(m: user::Model) -> Self {
        UserView {
            id: m.id,
            email: m.email,
            display_name: m.display_name,
            attributes: serde_json::from_value(m.attributes).unwrap_or_default(),
            status: m.status,
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

/// Create a user.
///
/// Requires `user.create`.
#[utoipa::path(
    tag = "users",
    params(TenantParam),
    request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 409, body = crate::http::error::Problem, description = "The email is taken"), TenantErrors, BodyErrors),
    security(("bearer" = []))
)]
#[post("/users")]
pub async fn create_user(
    auth: Authorized<UserCreate>,
    body: ApiJson<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let new = body.0.validate()?;
    let tx = auth.write().await?;
    let user = match users::create(tx.conn(), new).await {
        Err(e) if is_duplicate(&e) => {
            return Err(ApiError::conflict("A user with this email exists."));
        }
        other => other?,
    };
    tx.commit(Change::new("user", user.id, 201)).await?;
    Ok(HttpResponse::Created().json(UserView::from(user)))
}

/// List users.
///
/// Requires `user.read`.
#[utoipa::path(
    tag = "users",
    params(TenantParam, ListParams),
    responses((status = 200, body = Page<UserView>), TenantErrors),
    security(("bearer" = []))
)]
#[get("/users")]
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
///
/// Requires `user.read`.
#[utoipa::path(
    tag = "users",
    params(TenantParam, IdParam),
    responses((status = 200, body = UserView), TenantErrors),
    security(("bearer" = []))
)]
#[get("/users/{id}")]
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
