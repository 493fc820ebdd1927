//! `/t/{tenant}/api/v1/service-accounts`

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::service_account;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::account_status::{AccountKind, changed_meanwhile, refuse_disabling, status_change};
use super::{ListParams, Page};
use crate::authz::Subject;
use crate::authz::actions::{ServiceAccountCreate, ServiceAccountDisable, ServiceAccountRead};
use crate::directory::{self, AccountStatus, clean_name, service_accounts};
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, PathId};
use crate::http::pipeline::authz::Authorized;
use crate::tenancy::is_unique_violation;
use crate::tenancy::work::Change;

/// A service account to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "billing-sync"}))]
pub struct CreateServiceAccount {
    /// Unique within the tenant.
    #[schema(example = "billing-sync")]
    pub name: String,
}

/// A service account as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceAccountView {
    pub id: Uuid,
    pub name: String,
    /// A disabled account's credentials all stop working.
    pub status: AccountStatus,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
}

impl From<service_account::Model> for ServiceAccountView {
    fn from(m: service_account::Model) -> Self {
        ServiceAccountView {
            id: m.id,
            name: m.name,
            status: AccountStatus::parse(&m.status),
            created_at: m.created_at,
        }
    }
}

/// A page of service accounts (the schema `ServiceAccountPage`).
pub type ServiceAccountPage = Page<ServiceAccountView>;

/// Create a service account.
#[utoipa::path(
    post,
    path = "/service-accounts",
    tag = "service-accounts",
    responses((status = 201, body = ServiceAccountView), (status = 409, description = "The name is taken"))
)]
pub async fn create_service_account(
    auth: Authorized<ServiceAccountCreate>,
    body: JsonBody<CreateServiceAccount>,
) -> Result<HttpResponse, ApiError> {
    let name = clean_name(&body.parse().await?.name, 100)
        .map_err(|m| ApiError::invalid_field("name", m))?;
    let tx = auth.write().await?;
    let account = match service_accounts::create(&tx, auth.allowed(), name).await {
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict(
                "A service account with this name exists.",
            ));
        }
        other => other?,
    };
    tx.commit(Change::new("service_account", account.id, 201))
        .await?;
    Ok(HttpResponse::Created().json(ServiceAccountView::from(account)))
}

/// List service accounts.
#[utoipa::path(
    get,
    path = "/service-accounts",
    tag = "service-accounts",
    responses((status = 200, body = ServiceAccountPage))
)]
pub async fn list_service_accounts(
    auth: Authorized<ServiceAccountRead>,
    query: web::Query<ListParams>,
) -> Result<web::Json<Page<ServiceAccountView>>, ApiError> {
    let limit = query.limit()?;
    let tx = auth.read().await?;
    let rows = directory::page_by_id::<service_account::Entity>(
        &tx,
        service_account::Column::Id,
        query.after,
        limit,
    )
    .await?;
    tx.commit().await?;
    Ok(web::Json(Page::of(
        rows,
        limit,
        |a| a.id.to_string(),
        ServiceAccountView::from,
    )))
}

/// Get a service account.
#[utoipa::path(
    get,
    path = "/service-accounts/{id}",
    tag = "service-accounts",
    responses((status = 200, body = ServiceAccountView))
)]
pub async fn get_service_account(
    auth: Authorized<ServiceAccountRead>,
    id: PathId,
) -> Result<web::Json<ServiceAccountView>, ApiError> {
    let tx = auth.read().await?;
    let account = service_accounts::get(&tx, id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    tx.commit().await?;
    Ok(web::Json(account.into()))
}

/// Disable a service account.
///
/// Every credential of the account stops working: its API keys, its OAuth clients and the
/// access tokens they were issued, the tokens of the issuers trusted for it (on PostgreSQL at
/// once on every replica; otherwise within a minute). Enabling it gives them back. No one
/// disables the account they act as (409).
#[utoipa::path(
    post,
    path = "/service-accounts/{id}/disable",
    tag = "service-accounts",
    responses(
        (status = 200, body = ServiceAccountView),
        (status = 409, description = "The caller's own account, or the status changed meanwhile")
    )
)]
pub async fn disable_service_account(
    auth: Authorized<ServiceAccountDisable>,
    id: PathId,
) -> Result<web::Json<ServiceAccountView>, ApiError> {
    set_status(auth, id.0, AccountStatus::Disabled).await
}

/// Enable a disabled service account.
///
/// Its credentials work again (unexpired tokens included), with everything its roles grant:
/// the caller must hold all of that (403 naming what is missing).
#[utoipa::path(
    post,
    path = "/service-accounts/{id}/enable",
    tag = "service-accounts",
    responses(
        (status = 200, body = ServiceAccountView),
        (status = 409, description = "The status changed meanwhile")
    )
)]
pub async fn enable_service_account(
    auth: Authorized<ServiceAccountDisable>,
    id: PathId,
) -> Result<web::Json<ServiceAccountView>, ApiError> {
    set_status(auth, id.0, AccountStatus::Active).await
}

/// Moves service account `id` to `status` (nothing to do when it is there already).
async fn set_status(
    auth: Authorized<ServiceAccountDisable>,
    id: Uuid,
    status: AccountStatus,
) -> Result<web::Json<ServiceAccountView>, ApiError> {
    let read = auth.read().await?;
    let existing = service_accounts::get(&read, id).await?;
    read.commit().await?;
    let existing = existing.ok_or_else(ApiError::not_found)?;
    let before = AccountStatus::parse(&existing.status);
    if before == status {
        return Ok(web::Json(existing.into()));
    }
    match status {
        AccountStatus::Disabled => refuse_disabling(&auth, id, false)?,
        // Everything the account's roles grant comes back with it.
        AccountStatus::Active => {
            auth.refuse_escalation(None, &Subject::service_account(id))
                .await?
        }
    }
    let tx = auth.write().await?;
    let locked = service_accounts::get_locked(&tx, id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if locked.status != existing.status {
        return Err(changed_meanwhile());
    }
    let account = service_accounts::set_status(&tx, auth.allowed(), locked, status).await?;
    let change = status_change(AccountKind::ServiceAccount, id, before, status).invalidating();
    tx.commit(change).await?;
    Ok(web::Json(account.into()))
}
