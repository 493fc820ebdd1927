//! `/t/{tenant}/api/v1/api-keys`

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::api_key;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ListParams, Page};
use crate::authz::Subject;
use crate::authz::actions::{ApiKeyCreate, ApiKeyRead, ApiKeyRevoke};
use crate::directory::{self, clean_name, service_accounts};
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, PathId};
use crate::http::jose::keys::forget_credential;
use crate::http::pipeline::authz::Authorized;
use crate::identity::api_key::{PREFIX, revoke};
use crate::tenancy::work::Change;

/// An API key to issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ci pipeline", "service_account_id": "0192f0c4-7f9c-7d50-9e3f-4b6c8d0e2f3a", "expires_at": "2027-12-31T23:59:59Z"}))]
pub struct CreateApiKey {
    #[schema(example = "ci pipeline")]
    pub name: String,
    /// The service account the key authenticates as.
    pub service_account_id: Uuid,
    /// When the key stops working (RFC 3339, in the future); never if absent.
    #[serde(serialize_with = "crate::http::timestamp::optional::serialize")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// An API key as listed: never its secret part.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    pub service_account_id: Uuid,
    /// The public beginning of the key, to recognise it.
    #[schema(example = "fgk_Q2hhcmxlcyBCYWJi")]
    pub prefix: String,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::optional::serialize")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::http::timestamp::optional::serialize")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A newly issued key. `key` is shown this once and cannot be retrieved again.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedApiKey {
    #[schema(example = "fgk_…")]
    pub key: String,
    #[serde(flatten)]
    pub details: ApiKeyView,
}

impl From<api_key::Model> for ApiKeyView {
    fn from(m: api_key::Model) -> Self {
        ApiKeyView {
            id: m.id,
            name: m.name,
            service_account_id: m.service_account_id,
            prefix: format!("{PREFIX}{}", m.lookup),
            created_at: m.created_at,
            expires_at: m.expires_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// A page of API keys (the schema `ApiKeyPage`).
pub type ApiKeyPage = Page<ApiKeyView>;

/// Issue an API key for a service account.
///
/// The response holds the key; it is stored only as a keyed hash. A key acts as its account,
/// so nobody issues a key for an account that may do what they may not (403 naming the
/// actions).
#[utoipa::path(
    post,
    path = "/api-keys",
    tag = "api-keys",
    responses((status = 201, body = IssuedApiKey))
)]
pub async fn create_api_key(
    auth: Authorized<ApiKeyCreate>,
    body: JsonBody<CreateApiKey>,
) -> Result<HttpResponse, ApiError> {
    let CreateApiKey {
        name,
        service_account_id,
        expires_at,
    } = body.parse().await?;
    let name = clean_name(&name, 100).map_err(|m| ApiError::invalid_field("name", m))?;
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::invalid_field(
            "expires_at",
            "must be in the future",
        ));
    }
    let read = auth.read().await?;
    let account = service_accounts::get(&read, service_account_id).await?;
    read.commit().await?;
    if account.is_none() {
        return Err(ApiError::no_such("service_account_id", "service account"));
    }
    // A key acts as its account: issuing one must not give the caller more than they hold.
    auth.refuse_escalation(None, &Subject::service_account(service_account_id))
        .await?;
    let tx = auth.write().await?;
    let issued = auth
        .api_keys()
        .issue(
            &tx,
            auth.allowed(),
            auth.slug(),
            &name,
            service_account_id,
            expires_at,
        )
        .await?;
    let change = Change::new("api_key", issued.record.id, 201)
        .detail("service_account_id", service_account_id.to_string());
    tx.commit(change).await?;
    Ok(HttpResponse::Created().json(IssuedApiKey {
        key: issued.key.expose_secret().to_owned(),
        details: issued.record.into(),
    }))
}

/// List API keys.
#[utoipa::path(
    get,
    path = "/api-keys",
    tag = "api-keys",
    responses((status = 200, body = ApiKeyPage))
)]
pub async fn list_api_keys(
    auth: Authorized<ApiKeyRead>,
    query: web::Query<ListParams>,
) -> Result<web::Json<Page<ApiKeyView>>, ApiError> {
    let limit = query.limit()?;
    let tx = auth.read().await?;
    let rows =
        directory::page_by_id::<api_key::Entity>(&tx, api_key::Column::Id, query.after, limit)
            .await?;
    tx.commit().await?;
    Ok(web::Json(Page::of(
        rows,
        limit,
        |k| k.id.to_string(),
        ApiKeyView::from,
    )))
}

/// Revoke an API key.
///
/// The key stops working on the next request. Revoking a revoked key changes nothing.
#[utoipa::path(
    delete,
    path = "/api-keys/{id}",
    tag = "api-keys",
    responses((status = 204, description = "Revoked"))
)]
pub async fn delete_api_key(
    auth: Authorized<ApiKeyRevoke>,
    id: PathId,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.write().await?;
    revoke(&tx, auth.allowed(), id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    tx.commit(Change::new("api_key", id.0, 204).invalidating())
        .await?;
    // Its payload keys (http/jose) die with it; the credential no longer authenticates, so a
    // failure here leaves only an unusable record, and the revocation stands.
    if let Err(e) = forget_credential(auth.keystore(), auth.slug().as_str(), id.0).await {
        tracing::warn!(error = %e, "the payload keys of a revoked credential were not destroyed");
    }
    Ok(HttpResponse::NoContent().finish())
}
