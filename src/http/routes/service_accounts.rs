//! `/t/{tenant}/api/v1/service-accounts`

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::service_account;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ListParams, Page};
use crate::authz::actions::{ServiceAccountCreate, ServiceAccountRead, ServiceAccountUpdate};
use crate::authz::bindings::SubjectType;
use crate::authz::load_subject;
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

/// Changes to a service account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "disabled"}))]
pub struct UpdateServiceAccount {
    /// `disabled` stops every credential of the account at once (its API keys, its OAuth
    /// clients and the tokens they were issued, trusted issuers' tokens); `active` restores
    /// them.
    pub status: Option<AccountStatus>,
}

/// A service account as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceAccountView {
    pub id: Uuid,
    pub name: String,
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

/// Disable or enable a service account.
///
/// A disabled account's credentials all stop working at once, on every replica; enabling it
/// gives back everything its roles grant, so the caller must hold all of that (403 naming what
/// is missing). No one disables the account they are acting as (409).
#[utoipa::path(
    patch,
    path = "/service-accounts/{id}",
    tag = "service-accounts",
    responses(
        (status = 200, body = ServiceAccountView),
        (status = 409, description = "The caller's own account cannot be disabled")
    )
)]
pub async fn update_service_account(
    auth: Authorized<ServiceAccountUpdate>,
    id: PathId,
    body: JsonBody<UpdateServiceAccount>,
) -> Result<web::Json<ServiceAccountView>, ApiError> {
    let body = body.parse().await?;
    let read = auth.read().await?;
    let existing = service_accounts::get(&read, id.0).await?;
    let subject = load_subject(&read, SubjectType::ServiceAccount, id.0).await?;
    read.commit().await?;
    let (Some(existing), Some(subject)) = (existing, subject) else {
        return Err(ApiError::not_found());
    };
    let before = AccountStatus::parse(&existing.status);
    let status = body.status.unwrap_or(before);
    if status == before {
        return Ok(web::Json(existing.into()));
    }
    match status {
        AccountStatus::Disabled if auth.principal().id() == existing.id => {
            return Err(ApiError::conflict(
                "A service account cannot disable itself; use another account.",
            ));
        }
        AccountStatus::Disabled => {}
        // Everything the account's roles grant comes back with it.
        AccountStatus::Active => auth.refuse_escalation(None, &subject).await?,
    }
    let tx = auth.write().await?;
    let account = service_accounts::get(tx.conn(), existing.id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let account = service_accounts::set_status(&tx, auth.allowed(), account, status).await?;
    let change = Change::new("service_account", account.id, 200)
        .detail("status_before", before.as_str())
        .detail("status_after", status.as_str())
        .invalidating();
    tx.commit(change).await?;
    Ok(web::Json(account.into()))
}
