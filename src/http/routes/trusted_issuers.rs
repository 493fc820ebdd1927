//! `/t/{tenant}/api/v1/trusted-issuers`: outside JWT issuers whose tokens act as one of the
//! tenant's service accounts (workload identity federation). A trust is a credential of its
//! account, like an API key: the same permissions and the same no-escalation rule.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::trusted_issuer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ListParams, Page};
use crate::authz::Subject;
use crate::authz::actions::{ApiKeyCreate, ApiKeyRead, ApiKeyRevoke};
use crate::directory::{self, clean_name, service_accounts};
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{JsonBody, PathId};
use crate::http::pipeline::authz::Authorized;
use crate::identity::trust::{self, NewTrust};
use crate::signin::providers::url_problem;
use crate::tenancy::is_unique_violation;
use crate::tenancy::work::Change;

/// Most audiences, and required claims, of one trust.
const MAX_ENTRIES: usize = 32;
/// Longest issuer, audience, claim name or claim value.
const MAX_VALUE: usize = 512;

/// An outside issuer to trust.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "deploy pipeline",
    "issuer": "https://token.actions.githubusercontent.com",
    "jwks_url": "https://token.actions.githubusercontent.com/.well-known/jwks",
    "audiences": ["https://flowgate.example.com/t/acme"],
    "required_claims": {"repository": "acme/deploy", "ref": "refs/heads/main"},
    "service_account_id": "01939a4e-8f00-7000-8000-000000000001"
}))]
pub struct CreateTrustedIssuer {
    pub name: String,
    /// The `iss` of its tokens, exactly.
    pub issuer: String,
    /// Where its public keys (a JWK set) are published: https.
    pub jwks_url: String,
    /// A token's `aud` must name one of these (1 to 32).
    pub audiences: Vec<String>,
    /// Claims a token must carry, with these values (for a list claim: among its items); at
    /// least one naming the workload (`iss`, `aud`, `exp`, `nbf`, `iat` and `jti` do not).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub required_claims: BTreeMap<String, Value>,
    /// The service account its tokens act as.
    pub service_account_id: Uuid,
}

/// A trusted issuer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrustedIssuerView {
    pub id: Uuid,
    pub name: String,
    pub issuer: String,
    pub jwks_url: String,
    pub audiences: Vec<String>,
    #[schema(value_type = Object)]
    pub required_claims: Value,
    pub service_account_id: Uuid,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
}

/// A page of trusted issuers (the schema `TrustedIssuerPage`).
pub type TrustedIssuerPage = Page<TrustedIssuerView>;

impl From<trusted_issuer::Model> for TrustedIssuerView {
    fn from(m: trusted_issuer::Model) -> Self {
        TrustedIssuerView {
            id: m.id,
            name: m.name,
            issuer: m.issuer,
            jwks_url: m.jwks_url,
            audiences: serde_json::from_value(m.audiences).unwrap_or_default(),
            required_claims: m.required_claims,
            service_account_id: m.service_account_id,
            created_at: m.created_at,
        }
    }
}

impl CreateTrustedIssuer {
    /// The checked trust; `tenants_prefix` (`{public url}/t/`) starts every issuer of this
    /// Flowgate's tenants, which no trust may name.
    fn validate(self, tenants_prefix: &str) -> Result<NewTrust, ApiError> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: &str| {
            problems.push(FieldError {
                field: field.to_owned(),
                message: message.to_owned(),
            });
        };
        let name = clean_name(&self.name, 100)
            .map_err(|m| problem("name", &m))
            .unwrap_or_default();
        let issuer = self.issuer.trim().to_owned();
        if !is_text(&issuer) {
            problem("issuer", "must be 1 to 512 visible characters");
        } else if issuer.starts_with(tenants_prefix) {
            problem(
                "issuer",
                "is a tenant of this Flowgate (whose tokens are for that tenant only)",
            );
        }
        if let Some(message) = url_problem(&self.jwks_url) {
            problem("jwks_url", message);
        }
        if self.audiences.is_empty()
            || self.audiences.len() > MAX_ENTRIES
            || !self.audiences.iter().all(|a| is_text(a))
        {
            problem("audiences", "1 to 32 audiences of visible characters");
        }
        let scalar = |v: &Value| match v {
            Value::String(s) => is_text(s),
            Value::Bool(_) | Value::Number(_) => true,
            _ => false,
        };
        // Claims every token of the issuer carries, whatever workload it was minted for.
        const EVERY_TOKENS: [&str; 6] = ["iss", "aud", "exp", "nbf", "iat", "jti"];
        if self
            .required_claims
            .keys()
            .all(|name| EVERY_TOKENS.contains(&name.as_str()))
        {
            // An issuer such as a CI system mints tokens for every workload it runs, for any
            // audience asked: without a claim naming the workload, all of them would be trusted.
            problem(
                "required_claims",
                "name at least one claim that identifies the workload (sub, repository, …)",
            );
        } else if self.required_claims.len() > MAX_ENTRIES
            || !self
                .required_claims
                .iter()
                .all(|(name, value)| is_text(name) && scalar(value))
        {
            problem(
                "required_claims",
                "at most 32 claims, each a name and a text, number or boolean value",
            );
        }
        if !problems.is_empty() {
            return Err(ApiError::validation(problems));
        }
        Ok(NewTrust {
            name,
            issuer,
            jwks_url: self.jwks_url,
            audiences: self.audiences,
            required_claims: self.required_claims.into_iter().collect(),
            service_account_id: self.service_account_id,
        })
    }
}

fn is_text(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE
        && !value.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Trust an outside JWT issuer for a service account.
///
/// Tokens of `issuer`, signed by a key of `jwks_url`, for one of `audiences` and carrying every
/// `required_claims`, then act as the service account (send them as `Authorization: Bearer`).
/// Nobody trusts an issuer for an account that may do what they may not.
#[utoipa::path(
    post,
    path = "/trusted-issuers",
    tag = "api-keys",
    responses((status = 201, body = TrustedIssuerView), (status = 409, description = "The name or issuer is taken"))
)]
pub async fn create_trusted_issuer(
    auth: Authorized<ApiKeyCreate>,
    body: JsonBody<CreateTrustedIssuer>,
) -> Result<HttpResponse, ApiError> {
    let tenants_prefix = format!("{}/t/", auth.public_url());
    let new = body.parse().await?.validate(&tenants_prefix)?;
    let read = auth.read().await?;
    let account = service_accounts::get(&read, new.service_account_id).await?;
    read.commit().await?;
    if account.is_none() {
        return Err(ApiError::no_such("service_account_id", "service account"));
    }
    auth.refuse_escalation(None, &Subject::service_account(new.service_account_id))
        .await?;
    let tx = auth.write().await?;
    let row = match trust::create(&tx, auth.allowed(), new).await {
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict(
                "A trust with this name or for this issuer exists.",
            ));
        }
        other => other?,
    };
    tx.commit(
        Change::new("trusted_issuer", row.id, 201)
            .invalidating()
            .detail("issuer", row.issuer.clone())
            .detail("service_account_id", row.service_account_id.to_string()),
    )
    .await?;
    Ok(HttpResponse::Created().json(TrustedIssuerView::from(row)))
}

/// List trusted issuers.
#[utoipa::path(
    get,
    path = "/trusted-issuers",
    tag = "api-keys",
    responses((status = 200, body = TrustedIssuerPage))
)]
pub async fn list_trusted_issuers(
    auth: Authorized<ApiKeyRead>,
    query: web::Query<ListParams>,
) -> Result<web::Json<TrustedIssuerPage>, ApiError> {
    let limit = query.limit()?;
    let tx = auth.read().await?;
    let rows = directory::page_by_id::<trusted_issuer::Entity>(
        &tx,
        trusted_issuer::Column::Id,
        query.after,
        limit,
    )
    .await?;
    tx.commit().await?;
    Ok(web::Json(Page::of(
        rows,
        limit,
        |t| t.id.to_string(),
        TrustedIssuerView::from,
    )))
}

/// Stop trusting an issuer.
///
/// Its tokens stop working on the next request.
#[utoipa::path(
    delete,
    path = "/trusted-issuers/{id}",
    tag = "api-keys",
    responses((status = 204, description = "Removed"))
)]
pub async fn delete_trusted_issuer(
    auth: Authorized<ApiKeyRevoke>,
    id: PathId,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.write().await?;
    if !trust::delete(&tx, auth.allowed(), id.0).await? {
        return Err(ApiError::not_found());
    }
    tx.commit(Change::new("trusted_issuer", id.0, 204).invalidating())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
