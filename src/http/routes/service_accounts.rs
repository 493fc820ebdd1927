//! `/t/{tenant}/api/v1/service-accounts`

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::service_account;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ListParams, Page};
use crate::authz::actions::{ServiceAccountCreate, ServiceAccountRead};
use crate::directory::{self, clean_name, service_accounts};
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
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
}

impl From<service_account::Model> for ServiceAccountView {
    fn from(m: service_account::Model) -> Self {
        ServiceAccountView {
            id: m.id,
            name: m.name,
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
