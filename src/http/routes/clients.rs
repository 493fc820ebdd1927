//! `/t/{tenant}/api/v1/clients`: OAuth clients of service accounts, for the token endpoint's
//! client-credentials grant. They are credentials like API keys, under the same permissions.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::oauth_client;
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
use crate::identity::tokens::{CLIENT_PREFIX, revoke_client};
use crate::tenancy::work::Change;

/// An OAuth client to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "nightly export", "service_account_id": "01939a4e-8f00-7000-8000-000000000001"}))]
pub struct CreateClient {
    pub name: String,
    /// The service account the client's tokens act as.
    pub service_account_id: Uuid,
}

/// An OAuth client as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientView {
    pub id: Uuid,
    pub name: String,
    /// What the token endpoint calls `client_id`.
    pub client_id: String,
    pub service_account_id: Uuid,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::optional::serialize")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<oauth_client::Model> for ClientView {
    fn from(m: oauth_client::Model) -> Self {
        ClientView {
            id: m.id,
            name: m.name,
            client_id: format!("{CLIENT_PREFIX}{}", m.lookup),
            service_account_id: m.service_account_id,
            created_at: m.created_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// A client just made: its secret is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedClient {
    pub client_secret: String,
    #[serde(flatten)]
    pub details: ClientView,
}

/// A page of clients (the schema `ClientPage`).
pub type ClientPage = Page<ClientView>;

/// Make an OAuth client for a service account.
///
/// The response holds the client secret; it is stored only as a keyed hash. The client's
/// tokens act as its account, so nobody makes one for an account that may do what they may not.
#[utoipa::path(
    post,
    path = "/clients",
    tag = "api-keys",
    responses((status = 201, body = IssuedClient))
)]
pub async fn create_client(
    auth: Authorized<ApiKeyCreate>,
    body: JsonBody<CreateClient>,
) -> Result<HttpResponse, ApiError> {
    let CreateClient {
        name,
        service_account_id,
    } = body.parse().await?;
    let name = clean_name(&name, 100).map_err(|m| ApiError::invalid_field("name", m))?;
    let read = auth.read().await?;
    let account = service_accounts::get(&read, service_account_id).await?;
    read.commit().await?;
    if account.is_none() {
        return Err(ApiError::no_such("service_account_id", "service account"));
    }
    auth.refuse_escalation(None, &Subject::service_account(service_account_id))
        .await?;
    let tx = auth.write().await?;
    let made = auth
        .access_tokens()
        .create_client(
            auth.api_keys(),
            &tx,
            auth.allowed(),
            auth.slug(),
            &name,
            service_account_id,
        )
        .await?;
    tx.commit(
        Change::new("oauth_client", made.record.id, 201)
            .detail("service_account_id", service_account_id.to_string()),
    )
    .await?;
    Ok(HttpResponse::Created().json(IssuedClient {
        client_secret: made.secret.expose_secret().to_owned(),
        details: made.record.into(),
    }))
}

/// List OAuth clients.
#[utoipa::path(
    get,
    path = "/clients",
    tag = "api-keys",
    responses((status = 200, body = ClientPage))
)]
pub async fn list_clients(
    auth: Authorized<ApiKeyRead>,
    query: web::Query<ListParams>,
) -> Result<web::Json<ClientPage>, ApiError> {
    let limit = query.limit()?;
    let tx = auth.read().await?;
    let rows = directory::page_by_id::<oauth_client::Entity>(
        &tx,
        oauth_client::Column::Id,
        query.after,
        limit,
    )
    .await?;
    tx.commit().await?;
    Ok(web::Json(Page::of(
        rows,
        limit,
        |c| c.id.to_string(),
        ClientView::from,
    )))
}

/// Revoke an OAuth client.
///
/// The client gets no more tokens, and the tokens it has stop working on the next request.
#[utoipa::path(
    delete,
    path = "/clients/{id}",
    tag = "api-keys",
    responses((status = 204, description = "Revoked"))
)]
pub async fn delete_client(
    auth: Authorized<ApiKeyRevoke>,
    id: PathId,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.write().await?;
    revoke_client(&tx, auth.allowed(), id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    tx.commit(Change::new("oauth_client", id.0, 204).invalidating())
        .await?;
    // Its payload keys (http/jose) die with it; the credential no longer authenticates, so a
    // failure here leaves only an unusable record, and the revocation stands.
    if let Err(e) = forget_credential(auth.keystore(), auth.slug().as_str(), id.0).await {
        tracing::warn!(error = %e, "the payload keys of a revoked credential were not destroyed");
    }
    Ok(HttpResponse::NoContent().finish())
}
