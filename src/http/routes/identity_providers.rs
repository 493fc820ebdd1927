//! `/t/{tenant}/api/v1/identity-providers`

use std::collections::{BTreeMap, BTreeSet};

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::{group, identity_provider};
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ListParams, Page};
use crate::authz::Subject;
use crate::authz::actions::{IdentityProviderManage, IdentityProviderRead};
use crate::authz::schema::EntityKind;
use crate::directory::{self, clean_name};
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{JsonBody, PathId};
use crate::http::pipeline::authz::Authorized;
use crate::signin::providers::{self, Preset, ProviderSettings};
use crate::tenancy::is_unique_violation;
use crate::tenancy::work::{Change, TenantContext};

/// The kinds of identity provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Oidc,
    Saml,
}

/// An identity provider to configure.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Contoso Entra ID",
    "kind": "oidc",
    "preset": "azure_ad",
    "issuer": "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
    "client_id": "6731de76-14a6-49ae-97bc-6eba6914391e",
    "client_secret": "the secret from the app registration",
    "email_domains": ["contoso.com"],
    "claim_mappings": {"department": "department"},
    "group_mappings": {"b6a1a5c2-finance-group-object-id": "finance"}
}))]
pub struct CreateIdentityProvider {
    /// Unique within the tenant.
    pub name: String,
    pub kind: ProviderKind,
    /// OIDC: the provider family (default `generic`).
    pub preset: Option<Preset>,
    /// OIDC: the issuer identifier (discovery is `{issuer}/.well-known/openid-configuration`).
    pub issuer: Option<String>,
    /// OIDC: the client id registered at the provider.
    pub client_id: Option<String>,
    /// OIDC: the client secret; kept in the key store and never shown again.
    pub client_secret: Option<String>,
    /// OIDC: scopes beside `openid` (default `email profile`).
    pub scopes: Option<Vec<String>>,
    /// Email domains whose people this provider signs in.
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// Flowgate attribute → claim.
    #[serde(default)]
    pub claim_mappings: BTreeMap<String, String>,
    /// Provider group → Flowgate group name.
    #[serde(default)]
    pub group_mappings: BTreeMap<String, String>,
    /// The claim holding the groups (default `groups`).
    pub groups_claim: Option<String>,
    /// Azure AD: directories (`tid`) whose users may sign in.
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    /// Google: the Workspace domain (`hd`) users must belong to.
    pub hosted_domain: Option<String>,
    /// SAML: the provider's metadata document.
    pub metadata_xml: Option<String>,
    /// SAML: where the provider's metadata document is published.
    pub metadata_url: Option<String>,
}

/// Changes to an identity provider; fields left out keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email_domains": ["contoso.com", "contoso.co.uk"], "client_secret": "a rotated secret"}))]
pub struct UpdateIdentityProvider {
    pub name: Option<String>,
    pub preset: Option<Preset>,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    /// A new client secret (kept in the key store).
    pub client_secret: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub email_domains: Option<Vec<String>>,
    pub claim_mappings: Option<BTreeMap<String, String>>,
    pub group_mappings: Option<BTreeMap<String, String>>,
    pub groups_claim: Option<String>,
    pub allowed_tenants: Option<Vec<String>>,
    pub hosted_domain: Option<String>,
}

/// An identity provider as the API shows it: never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityProviderView {
    pub id: Uuid,
    pub name: String,
    pub kind: ProviderKind,
    pub preset: Preset,
    pub issuer: String,
    pub client_id: String,
    /// Whether a client secret is kept for the provider.
    pub client_secret_set: bool,
    pub scopes: Vec<String>,
    pub email_domains: Vec<String>,
    pub claim_mappings: BTreeMap<String, String>,
    pub group_mappings: BTreeMap<String, String>,
    pub groups_claim: String,
    pub allowed_tenants: Vec<String>,
    pub hosted_domain: Option<String>,
    /// The redirect URI to register at the provider.
    pub redirect_uri: String,
    /// Where a browser begins signing in with this provider.
    pub login_url: String,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// A page of identity providers (the schema `IdentityProviderPage`).
pub type IdentityProviderPage = Page<IdentityProviderView>;

/// Longest client secret accepted.
const MAX_SECRET: usize = 1024;

impl IdentityProviderView {
    fn of(context: &TenantContext, row: identity_provider::Model) -> Result<Self, ApiError> {
        let settings = providers::settings(&row)
            .map_err(|e| ApiError::internal("signin", anyhow::anyhow!("stored provider: {e}")))?;
        let base = format!(
            "{}/t/{}/auth/oidc/{}",
            context.public_url(),
            context.slug(),
            row.id
        );
        Ok(IdentityProviderView {
            id: row.id,
            name: row.name,
            kind: ProviderKind::Oidc,
            preset: settings.preset,
            issuer: settings.issuer,
            client_id: settings.client_id,
            client_secret_set: true,
            scopes: settings.scopes,
            email_domains: settings.email_domains,
            claim_mappings: settings.claim_mappings,
            group_mappings: settings.group_mappings,
            groups_claim: settings.groups_claim,
            allowed_tenants: settings.allowed_tenants,
            hosted_domain: settings.hosted_domain,
            redirect_uri: format!("{base}/callback"),
            login_url: format!("{base}/login"),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl CreateIdentityProvider {
    /// The checked name, settings and client secret.
    fn validate(self) -> Result<(String, ProviderSettings, String), ApiError> {
        if self.kind == ProviderKind::Saml {
            return Err(ApiError::invalid_field(
                "kind",
                "SAML identity providers are not available yet; use an OpenID Connect provider",
            ));
        }
        let mut problems = Vec::new();
        let name = clean_name(&self.name, 200)
            .map_err(|m| problems.push(("name".to_owned(), m)))
            .unwrap_or_default();
        for (field, given) in [
            ("metadata_xml", self.metadata_xml.is_some()),
            ("metadata_url", self.metadata_url.is_some()),
        ] {
            if given {
                problems.push((field.into(), "only for SAML providers".into()));
            }
        }
        let required = |field: &str, value: Option<String>, problems: &mut Vec<_>| {
            value.unwrap_or_else(|| {
                problems.push((
                    field.to_owned(),
                    "is required for an OIDC provider".to_owned(),
                ));
                String::new()
            })
        };
        let issuer = required("issuer", self.issuer, &mut problems);
        let client_id = required("client_id", self.client_id, &mut problems);
        let secret = required("client_secret", self.client_secret, &mut problems);
        if let Some(message) = secret_problem(&secret) {
            problems.push(("client_secret".into(), message.into()));
        }
        let settings = ProviderSettings {
            preset: self.preset.unwrap_or(Preset::Generic),
            issuer: issuer.trim_end_matches('/').to_owned(),
            client_id,
            scopes: self
                .scopes
                .unwrap_or_else(|| vec!["email".into(), "profile".into()]),
            email_domains: lower(self.email_domains),
            claim_mappings: self.claim_mappings,
            group_mappings: self.group_mappings,
            groups_claim: self.groups_claim.unwrap_or_else(|| "groups".into()),
            allowed_tenants: self.allowed_tenants,
            hosted_domain: self.hosted_domain.map(|d| d.to_lowercase()),
        };
        if problems.is_empty() {
            problems = settings.check();
        }
        if problems.is_empty() {
            Ok((name, settings, secret))
        } else {
            Err(invalid(problems))
        }
    }
}

impl UpdateIdentityProvider {
    /// The stored provider with these changes, checked.
    fn apply(
        self,
        name: String,
        mut settings: ProviderSettings,
    ) -> Result<(String, ProviderSettings, Option<String>), ApiError> {
        let name = match self.name {
            Some(name) => clean_name(&name, 200).map_err(|m| ApiError::invalid_field("name", m))?,
            None => name,
        };
        if let Some(secret) = &self.client_secret
            && let Some(message) = secret_problem(secret)
        {
            return Err(ApiError::invalid_field("client_secret", message));
        }
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(value) = self.$field {
                    settings.$field = value;
                }
            )*};
        }
        set!(
            preset,
            client_id,
            scopes,
            claim_mappings,
            group_mappings,
            groups_claim,
            allowed_tenants
        );
        if let Some(issuer) = self.issuer {
            settings.issuer = issuer.trim_end_matches('/').to_owned();
        }
        if let Some(domains) = self.email_domains {
            settings.email_domains = lower(domains);
        }
        if let Some(domain) = self.hosted_domain {
            settings.hosted_domain = Some(domain.to_lowercase());
        }
        let problems = settings.check();
        if problems.is_empty() {
            Ok((name, settings, self.client_secret))
        } else {
            Err(invalid(problems))
        }
    }
}

fn secret_problem(secret: &str) -> Option<&'static str> {
    (secret.is_empty() || secret.len() > MAX_SECRET || secret.chars().any(char::is_control))
        .then_some("must be 1 to 1024 characters without control characters")
}

fn lower(values: Vec<String>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| v.trim().to_lowercase())
        .collect()
}

fn invalid(problems: Vec<(String, String)>) -> ApiError {
    ApiError::validation(
        problems
            .into_iter()
            .map(|(field, message)| FieldError { field, message })
            .collect(),
    )
}

/// Refuses mappings that would let the provider hand its users more than the caller holds:
/// every attribute a mapping fills can take any value the provider sends, and every mapped
/// group's bindings are granted to whoever the provider says belongs to it.
async fn refuse_escalation(
    auth: &TenantContext,
    settings: &ProviderSettings,
) -> Result<(), ApiError> {
    let claims: BTreeSet<String> = settings.claim_mappings.keys().cloned().collect();
    let missing = auth
        .engine()
        .claims_not_delegable(auth.policies(), auth.subject(), &claims);
    if !missing.is_empty() {
        return Err(auth.refuse_delegation(&missing).into());
    }
    let names: Vec<&String> = settings.group_mappings.values().collect();
    if names.is_empty() {
        return Ok(());
    }
    let tx = auth.read().await?;
    let groups = group::Entity::find()
        .filter(group::Column::Name.is_in(names))
        .all(&tx)
        .await?;
    tx.commit().await?;
    let member = Subject {
        kind: EntityKind::User,
        id: Uuid::new_v4().to_string(),
        groups: groups.into_iter().map(|g| g.id.to_string()).collect(),
        tags: BTreeMap::new(),
    };
    Ok(auth.refuse_escalation(None, &member).await?)
}

/// Configure an identity provider.
///
/// The client secret goes to the key store and is never shown again. Mappings are checked like
/// grants: a mapped group's bindings and the policies reading a mapped attribute must be within
/// what the caller holds.
#[utoipa::path(
    post,
    path = "/identity-providers",
    tag = "identity-providers",
    responses((status = 201, body = IdentityProviderView), (status = 409, description = "The name is taken"))
)]
pub async fn create_identity_provider(
    auth: Authorized<IdentityProviderManage>,
    body: JsonBody<CreateIdentityProvider>,
) -> Result<HttpResponse, ApiError> {
    let (name, settings, secret) = body.parse().await?.validate()?;
    refuse_escalation(&auth, &settings).await?;
    let id = Uuid::now_v7();
    providers::store_client_secret(auth.keystore(), auth.slug().as_str(), id, &secret).await?;
    let tx = auth.write().await?;
    let row = match providers::create(&tx, auth.allowed(), id, name, &settings).await {
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict(
                "An identity provider with this name exists.",
            ));
        }
        other => other?,
    };
    tx.commit(
        Change::new("identity_provider", row.id, 201)
            .detail(
                "preset",
                serde_json::to_value(settings.preset).unwrap_or_default(),
            )
            .detail("issuer", settings.issuer.clone()),
    )
    .await?;
    Ok(HttpResponse::Created().json(IdentityProviderView::of(&auth, row)?))
}

/// List identity providers.
#[utoipa::path(
    get,
    path = "/identity-providers",
    tag = "identity-providers",
    responses((status = 200, body = IdentityProviderPage))
)]
pub async fn list_identity_providers(
    auth: Authorized<IdentityProviderRead>,
    query: web::Query<ListParams>,
) -> Result<web::Json<IdentityProviderPage>, ApiError> {
    let limit = query.limit()?;
    let tx = auth.read().await?;
    let rows = directory::page_by_id::<identity_provider::Entity>(
        &tx,
        identity_provider::Column::Id,
        query.after,
        limit,
    )
    .await?;
    tx.commit().await?;
    Ok(web::Json(Page::try_of(
        rows,
        limit,
        |p| p.id.to_string(),
        |row| IdentityProviderView::of(&auth, row),
    )?))
}

/// Get an identity provider.
#[utoipa::path(
    get,
    path = "/identity-providers/{id}",
    tag = "identity-providers",
    responses((status = 200, body = IdentityProviderView))
)]
pub async fn get_identity_provider(
    auth: Authorized<IdentityProviderRead>,
    id: PathId,
) -> Result<web::Json<IdentityProviderView>, ApiError> {
    let tx = auth.read().await?;
    let row = providers::get(&tx, id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    tx.commit().await?;
    Ok(web::Json(IdentityProviderView::of(&auth, row)?))
}

/// Change an identity provider.
#[utoipa::path(
    patch,
    path = "/identity-providers/{id}",
    tag = "identity-providers",
    responses((status = 200, body = IdentityProviderView), (status = 409, description = "The name is taken"))
)]
pub async fn update_identity_provider(
    auth: Authorized<IdentityProviderManage>,
    id: PathId,
    body: JsonBody<UpdateIdentityProvider>,
) -> Result<web::Json<IdentityProviderView>, ApiError> {
    let changes = body.parse().await?;
    let read = auth.read().await?;
    let existing = providers::get(&read, id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    read.commit().await?;
    let stored = providers::settings(&existing)
        .map_err(|e| ApiError::internal("signin", anyhow::anyhow!("stored provider: {e}")))?;
    let (name, settings, secret) = changes.apply(existing.name.clone(), stored)?;
    refuse_escalation(&auth, &settings).await?;
    if let Some(secret) = &secret {
        providers::store_client_secret(auth.keystore(), auth.slug().as_str(), id.0, secret).await?;
    }
    let tx = auth.write().await?;
    let row = match providers::update(&tx, auth.allowed(), existing, name, &settings).await {
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict(
                "An identity provider with this name exists.",
            ));
        }
        other => other?,
    };
    tx.commit(
        Change::new("identity_provider", row.id, 200)
            .detail("issuer", settings.issuer.clone())
            .detail("client_secret_rotated", secret.is_some()),
    )
    .await?;
    auth.sign_ins().forget(row.id);
    Ok(web::Json(IdentityProviderView::of(&auth, row)?))
}

/// Delete an identity provider.
///
/// Its users stay (with their groups and sessions until these end); they can no longer sign in
/// through it.
#[utoipa::path(
    delete,
    path = "/identity-providers/{id}",
    tag = "identity-providers",
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete_identity_provider(
    auth: Authorized<IdentityProviderManage>,
    id: PathId,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.write().await?;
    if !providers::delete(&tx, auth.allowed(), id.0).await? {
        return Err(ApiError::not_found());
    }
    tx.commit(Change::new("identity_provider", id.0, 204))
        .await?;
    auth.sign_ins().forget(id.0);
    if let Err(e) =
        providers::destroy_client_secret(auth.keystore(), auth.slug().as_str(), id.0).await
    {
        // The provider is gone; its secret, named by an id nothing refers to any more, waits
        // for the tenant's keys to be destroyed.
        tracing::warn!(error = %e, provider = %id.0, "could not destroy a deleted provider's client secret");
    }
    Ok(HttpResponse::NoContent().finish())
}
