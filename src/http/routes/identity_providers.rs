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
use crate::signin::outbound::Outbound;
use crate::signin::providers::{self, Mappings, OidcSettings, Preset, SamlSettings, Settings};
use crate::signin::saml::IdpMetadata;
use crate::signin::sessions;
use crate::tenancy::is_unique_violation;
use crate::tenancy::work::{Change, TenantContext, WriteTx};

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
    /// Email domains whose people this provider signs in; when it lists any, a first sign-in
    /// whose address is elsewhere is refused (`email_outside_domains`).
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// Flowgate attribute → claim (OIDC) or attribute name (SAML).
    #[serde(default)]
    pub claim_mappings: BTreeMap<String, String>,
    /// Provider group → Flowgate group name.
    #[serde(default)]
    pub group_mappings: BTreeMap<String, String>,
    /// The claim (OIDC) or attribute (SAML) holding the groups (default `groups`).
    pub groups_claim: Option<String>,
    /// The provider's authentication methods or contexts that count as the tenant's second
    /// factor: `amr` values or an `acr` (OIDC), `AuthnContextClassRef`s (SAML). Empty (the
    /// default): the provider's MFA is not trusted and Flowgate asks for a passkey.
    #[serde(default)]
    pub trusted_mfa: Vec<String>,
    /// Azure AD: directories (`tid`) whose users may sign in.
    #[serde(default)]
    pub allowed_tenants: Vec<String>,
    /// Google: the Workspace domain (`hd`) users must belong to.
    pub hosted_domain: Option<String>,
    /// SAML: the provider's metadata document (this or `metadata_url`).
    pub metadata_xml: Option<String>,
    /// SAML: where the provider's metadata document is published; fetched when saved.
    pub metadata_url: Option<String>,
    /// SAML: the attribute holding the user's email (default `email`; else an email-format
    /// NameID is used).
    pub email_attribute: Option<String>,
    /// SAML: the attribute holding the user's display name (default `name`).
    pub name_attribute: Option<String>,
}

/// Changes to an identity provider; fields left out keep their value. A provider's kind does
/// not change, and fields of the other kind are refused.
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
    pub trusted_mfa: Option<Vec<String>>,
    pub allowed_tenants: Option<Vec<String>>,
    pub hosted_domain: Option<String>,
    /// SAML: a new metadata document.
    pub metadata_xml: Option<String>,
    /// SAML: fetch the metadata again, from this URL.
    pub metadata_url: Option<String>,
    pub email_attribute: Option<String>,
    pub name_attribute: Option<String>,
}

/// An identity provider as the API shows it: never its secret. Fields of the other kind are
/// left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityProviderView {
    pub id: Uuid,
    pub name: String,
    pub kind: ProviderKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Whether a client secret is kept for the provider (OIDC).
    pub client_secret_set: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    pub email_domains: Vec<String>,
    pub claim_mappings: BTreeMap<String, String>,
    pub group_mappings: BTreeMap<String, String>,
    pub groups_claim: String,
    /// What of the provider's own MFA counts as the tenant's second factor.
    pub trusted_mfa: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_tenants: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosted_domain: Option<String>,
    /// OIDC: the redirect URI to register at the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// SAML: where the metadata was fetched from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_url: Option<String>,
    /// SAML: the provider's entity id (the issuer of its assertions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp_entity_id: Option<String>,
    /// SAML: SHA-256 fingerprints of the provider's signing certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_fingerprints: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_attribute: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_attribute: Option<String>,
    /// SAML: Flowgate's entity id for this provider, which is also where its SP metadata is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sp_entity_id: Option<String>,
    /// SAML: the Assertion Consumer Service URL to register at the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acs_url: Option<String>,
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
            "{}/t/{}/auth/{}/{}",
            context.public_url(),
            context.slug(),
            settings.kind(),
            row.id
        );
        let mappings = settings.mappings().clone();
        let mut view = IdentityProviderView {
            id: row.id,
            name: row.name,
            kind: ProviderKind::Oidc,
            preset: None,
            issuer: None,
            client_id: None,
            client_secret_set: false,
            scopes: None,
            email_domains: mappings.email_domains,
            claim_mappings: mappings.claim_mappings,
            group_mappings: mappings.group_mappings,
            groups_claim: mappings.groups_claim,
            trusted_mfa: mappings.trusted_mfa,
            allowed_tenants: None,
            hosted_domain: None,
            redirect_uri: None,
            metadata_url: None,
            idp_entity_id: None,
            certificate_fingerprints: None,
            email_attribute: None,
            name_attribute: None,
            sp_entity_id: None,
            acs_url: None,
            login_url: format!("{base}/login"),
            created_at: row.created_at,
            updated_at: row.updated_at,
        };
        match settings {
            Settings::Oidc(oidc) => {
                view.preset = Some(oidc.preset);
                view.issuer = Some(oidc.issuer);
                view.client_id = Some(oidc.client_id);
                view.client_secret_set = true;
                view.scopes = Some(oidc.scopes);
                view.allowed_tenants = Some(oidc.allowed_tenants);
                view.hosted_domain = oidc.hosted_domain;
                view.redirect_uri = Some(format!("{base}/callback"));
            }
            Settings::Saml(saml) => {
                let metadata = IdpMetadata::read(&saml.metadata_xml).map_err(|e| {
                    ApiError::internal("signin", anyhow::anyhow!("stored SAML metadata: {e}"))
                })?;
                view.kind = ProviderKind::Saml;
                view.metadata_url = saml.metadata_url;
                view.idp_entity_id = Some(metadata.entity_id().to_owned());
                view.certificate_fingerprints = Some(metadata.fingerprints());
                view.email_attribute = Some(saml.email_attribute);
                view.name_attribute = Some(saml.name_attribute);
                view.sp_entity_id = Some(format!("{base}/metadata"));
                view.acs_url = Some(format!("{base}/acs"));
            }
        }
        Ok(view)
    }
}

/// Collects the problems of a body, field by field, to answer them all at once.
#[derive(Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, field: &str, message: &str) {
        self.0.push((field.to_owned(), message.to_owned()));
    }

    /// Refuses each field that is given although the provider's kind has no use for it.
    fn foreign(&mut self, kind: &str, given: &[(&str, bool)]) {
        for (field, present) in given {
            if *present {
                self.add(field, &format!("is not a setting of {kind} providers"));
            }
        }
    }

    fn required(&mut self, field: &str, value: Option<String>) -> String {
        value.unwrap_or_else(|| {
            self.add(field, "is required");
            String::new()
        })
    }

    fn into_result(mut self, settings: &Settings) -> Result<(), ApiError> {
        if self.0.is_empty() {
            self.0 = settings.check();
        }
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(invalid(self.0))
        }
    }
}

impl CreateIdentityProvider {
    /// The checked name, settings and (OIDC) client secret; a SAML provider's metadata is
    /// fetched from its `metadata_url` here.
    async fn validate(
        self,
        outbound: &Outbound,
    ) -> Result<(String, Settings, Option<String>), ApiError> {
        let mut problems = Problems::default();
        let name = clean_name(&self.name, 200)
            .map_err(|m| problems.add("name", &m))
            .unwrap_or_default();
        let mappings = Mappings {
            email_domains: lower(self.email_domains),
            claim_mappings: self.claim_mappings,
            group_mappings: self.group_mappings,
            groups_claim: self.groups_claim.unwrap_or_else(|| "groups".into()),
            trusted_mfa: self.trusted_mfa,
        };
        let (settings, secret) = match self.kind {
            ProviderKind::Oidc => {
                problems.foreign(
                    "OIDC",
                    &[
                        ("metadata_xml", self.metadata_xml.is_some()),
                        ("metadata_url", self.metadata_url.is_some()),
                        ("email_attribute", self.email_attribute.is_some()),
                        ("name_attribute", self.name_attribute.is_some()),
                    ],
                );
                let issuer = problems.required("issuer", self.issuer);
                let client_id = problems.required("client_id", self.client_id);
                let secret = problems.required("client_secret", self.client_secret);
                if let Some(message) = secret_problem(&secret) {
                    problems.add("client_secret", message);
                }
                let oidc = OidcSettings {
                    preset: self.preset.unwrap_or(Preset::Generic),
                    issuer: issuer.trim_end_matches('/').to_owned(),
                    client_id,
                    scopes: self
                        .scopes
                        .unwrap_or_else(|| vec!["email".into(), "profile".into()]),
                    mappings,
                    allowed_tenants: self.allowed_tenants,
                    hosted_domain: self.hosted_domain.map(|d| d.to_lowercase()),
                };
                (Settings::Oidc(oidc), Some(secret))
            }
            ProviderKind::Saml => {
                problems.foreign(
                    "SAML",
                    &[
                        ("preset", self.preset.is_some()),
                        ("issuer", self.issuer.is_some()),
                        ("client_id", self.client_id.is_some()),
                        ("client_secret", self.client_secret.is_some()),
                        ("scopes", self.scopes.is_some()),
                        ("allowed_tenants", !self.allowed_tenants.is_empty()),
                        ("hosted_domain", self.hosted_domain.is_some()),
                    ],
                );
                let metadata_xml = match (self.metadata_xml, &self.metadata_url) {
                    (Some(xml), None) => xml,
                    (None, Some(url)) if problems.0.is_empty() => {
                        fetch_metadata(outbound, url).await?
                    }
                    (None, Some(_)) => String::new(),
                    _ => {
                        problems.add(
                            "metadata_xml",
                            "give exactly one of metadata_xml and metadata_url",
                        );
                        String::new()
                    }
                };
                let saml = SamlSettings {
                    metadata_url: self.metadata_url,
                    metadata_xml,
                    email_attribute: self.email_attribute.unwrap_or_else(|| "email".into()),
                    name_attribute: self.name_attribute.unwrap_or_else(|| "name".into()),
                    mappings,
                };
                (Settings::Saml(saml), None)
            }
        };
        problems.into_result(&settings)?;
        Ok((name, settings, secret))
    }
}

/// Fetches a SAML provider's metadata from `url` (which must be a provider URL: https, or http
/// on the loopback interface, at an address providers may have); a failure is the field's
/// problem.
async fn fetch_metadata(outbound: &Outbound, url: &str) -> Result<String, ApiError> {
    if let Some(message) = providers::url_problem(url) {
        return Err(ApiError::invalid_field("metadata_url", message));
    }
    outbound.get_xml(url).await.map_err(|e| {
        // The reason stays in the server's log: told to the caller, it would map the network
        // behind Flowgate for whoever may configure a provider.
        tracing::warn!(error = %e, "a SAML provider's metadata could not be fetched");
        ApiError::invalid_field(
            "metadata_url",
            "the metadata could not be fetched (no answer, an error status, or an address \
             providers may not have); the server's log says which",
        )
    })
}

impl UpdateIdentityProvider {
    /// The stored provider with these changes, checked; with the new client secret, if any.
    async fn apply(
        self,
        name: String,
        settings: Settings,
        outbound: &Outbound,
    ) -> Result<(String, Settings, Option<String>), ApiError> {
        let name = match self.name {
            Some(name) => clean_name(&name, 200).map_err(|m| ApiError::invalid_field("name", m))?,
            None => name,
        };
        let mut problems = Problems::default();
        let settings = match settings {
            Settings::Oidc(mut oidc) => {
                problems.foreign(
                    "OIDC",
                    &[
                        ("metadata_xml", self.metadata_xml.is_some()),
                        ("metadata_url", self.metadata_url.is_some()),
                        ("email_attribute", self.email_attribute.is_some()),
                        ("name_attribute", self.name_attribute.is_some()),
                    ],
                );
                if let Some(secret) = &self.client_secret
                    && let Some(message) = secret_problem(secret)
                {
                    problems.add("client_secret", message);
                }
                macro_rules! set {
                    ($($field:ident),*) => {$(
                        if let Some(value) = self.$field {
                            oidc.$field = value;
                        }
                    )*};
                }
                set!(preset, client_id, scopes, allowed_tenants);
                if let Some(issuer) = self.issuer {
                    oidc.issuer = issuer.trim_end_matches('/').to_owned();
                }
                if let Some(domain) = self.hosted_domain {
                    oidc.hosted_domain = Some(domain.to_lowercase());
                }
                update_mappings(
                    &mut oidc.mappings,
                    self.email_domains,
                    self.claim_mappings,
                    self.group_mappings,
                    self.groups_claim,
                    self.trusted_mfa,
                );
                Settings::Oidc(oidc)
            }
            Settings::Saml(mut saml) => {
                problems.foreign(
                    "SAML",
                    &[
                        ("preset", self.preset.is_some()),
                        ("issuer", self.issuer.is_some()),
                        ("client_id", self.client_id.is_some()),
                        ("client_secret", self.client_secret.is_some()),
                        ("scopes", self.scopes.is_some()),
                        ("allowed_tenants", self.allowed_tenants.is_some()),
                        ("hosted_domain", self.hosted_domain.is_some()),
                    ],
                );
                match (self.metadata_xml, self.metadata_url) {
                    (Some(_), Some(_)) => problems.add(
                        "metadata_xml",
                        "give at most one of metadata_xml and metadata_url",
                    ),
                    (Some(xml), None) => {
                        saml.metadata_xml = xml;
                        saml.metadata_url = None;
                    }
                    (None, Some(url)) if problems.0.is_empty() => {
                        saml.metadata_xml = fetch_metadata(outbound, &url).await?;
                        saml.metadata_url = Some(url);
                    }
                    _ => {}
                }
                if let Some(attribute) = self.email_attribute {
                    saml.email_attribute = attribute;
                }
                if let Some(attribute) = self.name_attribute {
                    saml.name_attribute = attribute;
                }
                update_mappings(
                    &mut saml.mappings,
                    self.email_domains,
                    self.claim_mappings,
                    self.group_mappings,
                    self.groups_claim,
                    self.trusted_mfa,
                );
                Settings::Saml(saml)
            }
        };
        problems.into_result(&settings)?;
        Ok((name, settings, self.client_secret))
    }
}

fn update_mappings(
    mappings: &mut Mappings,
    email_domains: Option<Vec<String>>,
    claim_mappings: Option<BTreeMap<String, String>>,
    group_mappings: Option<BTreeMap<String, String>>,
    groups_claim: Option<String>,
    trusted_mfa: Option<Vec<String>>,
) {
    if let Some(domains) = email_domains {
        mappings.email_domains = lower(domains);
    }
    if let Some(claims) = claim_mappings {
        mappings.claim_mappings = claims;
    }
    if let Some(groups) = group_mappings {
        mappings.group_mappings = groups;
    }
    if let Some(claim) = groups_claim {
        mappings.groups_claim = claim;
    }
    if let Some(trusted) = trusted_mfa {
        mappings.trusted_mfa = trusted;
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
/// every attribute a mapping fills can take any value the provider sends, every mapped group's
/// bindings are granted to whoever the provider says belongs to it, and every policy naming a
/// mapped group reaches (a permit) or lets go of (a forbid) whomever the provider puts in or
/// leaves out.
async fn refuse_escalation(auth: &TenantContext, settings: &Settings) -> Result<(), ApiError> {
    let settings = settings.mappings();
    let claims: BTreeSet<String> = settings.claim_mappings.keys().cloned().collect();
    let missing = auth
        .engine()
        .claims_not_delegable(auth.policies(), &auth.grantor(), &claims);
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
    let groups: Vec<String> = groups.into_iter().map(|g| g.id.to_string()).collect();
    // The provider adds and removes the mapped groups' members: the policies naming them reach
    // whomever it says, with the claims they already carry.
    let missing = auth
        .engine()
        .membership_not_delegable(auth.policies(), &auth.grantor(), &groups);
    if !missing.is_empty() {
        return Err(auth.refuse_delegation(&missing).into());
    }
    let member = Subject {
        kind: EntityKind::User,
        id: Uuid::new_v4().to_string(),
        groups,
        tags: BTreeMap::new(),
    };
    Ok(auth.refuse_escalation(None, &member).await?)
}

/// Refuses a change of whom the provider's sign-ins come from (an OIDC issuer; a SAML entity id
/// or signing certificate) or a widening of the second factors it is trusted for, unless the
/// caller holds every action throughout the tenant. People who signed in through the provider
/// are found again by its subject: whoever controls the new issuer can sign in as any of them,
/// with the second factor the tenant asks of them, and so hold whatever they hold.
fn refuse_repointing(
    auth: &TenantContext,
    before: &Settings,
    after: &Settings,
) -> Result<(), ApiError> {
    if !repointed(before, after) {
        return Ok(());
    }
    let missing = auth
        .engine()
        .tenant_not_delegable(auth.policies(), &auth.grantor());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(auth.refuse_delegation(&missing).into())
    }
}

/// Whether `after` trusts sign-ins from elsewhere than `before`, or more of their second
/// factors.
fn repointed(before: &Settings, after: &Settings) -> bool {
    let trusted = &before.mappings().trusted_mfa;
    if after
        .mappings()
        .trusted_mfa
        .iter()
        .any(|v| !trusted.contains(v))
    {
        return true;
    }
    match (before, after) {
        (Settings::Oidc(before), Settings::Oidc(after)) => before.issuer != after.issuer,
        // Dropping a certificate narrows the trust; a new one, or a new entity, widens it.
        (Settings::Saml(before), Settings::Saml(after)) => {
            before.metadata_xml != after.metadata_xml
                && match (
                    IdpMetadata::read(&before.metadata_xml),
                    IdpMetadata::read(&after.metadata_xml),
                ) {
                    (Ok(before), Ok(after)) => {
                        let trusted = before.fingerprints();
                        before.entity_id() != after.entity_id()
                            || after.fingerprints().iter().any(|f| !trusted.contains(f))
                    }
                    _ => true,
                }
        }
        _ => true,
    }
}

/// `change` with what the audit trail says of a provider's settings: its kind and whom it
/// trusts.
fn described(change: Change, settings: &Settings) -> Change {
    let change = change
        .detail("kind", settings.kind())
        // Trusting a provider's MFA lowers what the tenant asks of its people: on record.
        .detail("trusted_mfa", settings.mappings().trusted_mfa.clone());
    match settings {
        Settings::Oidc(oidc) => change
            .detail(
                "preset",
                serde_json::to_value(oidc.preset).unwrap_or_default(),
            )
            .detail("issuer", oidc.issuer.clone()),
        Settings::Saml(saml) => match IdpMetadata::read(&saml.metadata_xml) {
            Ok(metadata) => change
                .detail("idp_entity_id", metadata.entity_id())
                .detail("certificate_fingerprints", metadata.fingerprints()),
            Err(_) => change,
        },
    }
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
    let (name, settings, secret) = body.parse().await?.validate(auth.outbound()).await?;
    refuse_escalation(&auth, &settings).await?;
    let id = Uuid::now_v7();
    let slug = auth.slug().as_str();
    if let Some(secret) = &secret {
        providers::store_client_secret(auth.keystore(), slug, id, secret).await?;
    }
    let created = save_new(&auth, id, name, &settings).await;
    if created.is_err() && secret.is_some() {
        put_back_client_secret(&auth, id, None).await;
    }
    Ok(HttpResponse::Created().json(IdentityProviderView::of(&auth, created?)?))
}

/// Writes a new provider's row and its audit event.
async fn save_new(
    auth: &Authorized<IdentityProviderManage>,
    id: Uuid,
    name: String,
    settings: &Settings,
) -> Result<identity_provider::Model, ApiError> {
    let tx = auth.write().await?;
    let row = match providers::create(&tx, auth.allowed(), id, name, settings).await {
        Err(e) if is_unique_violation(&e) => return Err(name_taken()),
        other => other?,
    };
    tx.commit(described(
        Change::new("identity_provider", row.id, 201),
        settings,
    ))
    .await?;
    Ok(row)
}

fn name_taken() -> ApiError {
    ApiError::conflict("An identity provider with this name exists.")
}

/// Puts provider `id`'s client secret back as it was before a change that failed (`None`: there
/// was none), so that a refused change leaves the provider as it was. A failure to is logged:
/// the change's own error is the caller's answer.
async fn put_back_client_secret(auth: &TenantContext, id: Uuid, previous: Option<String>) {
    let slug = auth.slug().as_str();
    let restored = match &previous {
        Some(secret) => providers::store_client_secret(auth.keystore(), slug, id, secret).await,
        None => providers::destroy_client_secret(auth.keystore(), slug, id).await,
    };
    if let Err(e) = restored {
        tracing::error!(error = %e, provider = %id, "could not put back a provider's client secret after a failed change");
    }
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
///
/// Narrowing `trusted_mfa` withdraws the second factor the provider's MFA gave its live
/// sessions: they owe a passkey assertion again where the tenant asks for one. Re-pointing the
/// provider (a new OIDC issuer, a SAML entity id or signing certificate not trusted before) or
/// widening `trusted_mfa` needs every action throughout the tenant: whoever runs the new issuer
/// could sign in as anyone who signed in through this provider. A provider changed by another
/// request while this one was checked is 409: read it again.
#[utoipa::path(
    patch,
    path = "/identity-providers/{id}",
    tag = "identity-providers",
    responses((status = 200, body = IdentityProviderView), (status = 409, description = "The name is taken, or the provider changed meanwhile"))
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
    let before = stored.clone();
    let (name, settings, secret) = changes
        .apply(existing.name.clone(), stored, auth.outbound())
        .await?;
    refuse_escalation(&auth, &settings).await?;
    refuse_repointing(&auth, &before, &settings)?;
    let change = Update {
        name,
        settings: &settings,
        before: &before,
        secret: secret.as_deref(),
    };
    let saved = save_update(&auth, existing, change).await;
    // Also after a failure: a commit can fail after committing.
    auth.sign_ins().forget(id.0);
    Ok(web::Json(IdentityProviderView::of(&auth, saved?)?))
}

/// A checked change of a provider.
struct Update<'a> {
    name: String,
    settings: &'a Settings,
    before: &'a Settings,
    /// The new client secret, if the change rotates it.
    secret: Option<&'a str>,
}

/// Saves `change` of the provider `existing` as it was read and checked: 409 if the provider
/// changed since (a concurrent change, such as another admin's narrowing of `trusted_mfa`, is
/// never overwritten by one checked against what it replaced).
///
/// The row stays locked from that comparison to the commit, and a new client secret is written
/// to the key store inside it, so that changes of one provider take turns at the secret too. A
/// change that fails before its commit puts the secret it replaced back under that lock; one
/// whose commit fails puts it back only once the row, locked again, shows the change was not
/// stored (a commit can fail after committing, and a rotated secret must not come back).
async fn save_update(
    auth: &Authorized<IdentityProviderManage>,
    existing: identity_provider::Model,
    change: Update<'_>,
) -> Result<identity_provider::Model, ApiError> {
    let id = existing.id;
    let tx = auth.write().await?;
    match providers::lock(&tx, id).await? {
        None => return Err(ApiError::not_found()),
        Some(current) if current != existing => {
            return Err(ApiError::conflict(
                "The identity provider changed while this change was checked; read it again.",
            ));
        }
        Some(_) => {}
    }
    let previous = match change.secret {
        Some(secret) => {
            let slug = auth.slug().as_str();
            let previous = providers::client_secret(auth.keystore(), slug, id).await?;
            providers::store_client_secret(auth.keystore(), slug, id, secret).await?;
            Some(previous)
        }
        None => None,
    };
    let (row, record) = match write_update(&tx, auth, existing.clone(), &change).await {
        Ok(written) => written,
        Err(e) => {
            if let Some(previous) = previous {
                put_back_client_secret(auth, id, previous).await;
            }
            return Err(e);
        }
    };
    match tx.commit(record).await {
        Ok(()) => Ok(row),
        Err(e) => {
            if let Some(previous) = previous {
                put_back_unless_stored(auth, &existing, previous).await;
            }
            Err(e.into())
        }
    }
}

/// After a change of provider `before` whose commit failed: puts back the client secret it
/// replaced if the row, locked again, is still `before` (the change was not stored). Stored, or
/// changed since by another, or unknown, the secret stays as it is.
async fn put_back_unless_stored(
    auth: &Authorized<IdentityProviderManage>,
    before: &identity_provider::Model,
    previous: Option<String>,
) {
    let unchanged = async {
        let tx = auth.write().await?;
        let unchanged = providers::lock(&tx, before.id).await?.as_ref() == Some(before);
        if unchanged {
            put_back_client_secret(auth, before.id, previous).await;
        }
        // Nothing was written: the transaction only held the lock.
        drop(tx);
        Ok::<_, ApiError>(unchanged)
    };
    match unchanged.await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(provider = %before.id, "a provider change answered as failed was stored, or followed by another; its client secret stays")
        }
        Err(e) => {
            tracing::warn!(error = %e, provider = %before.id, "kept the client secret of a provider change whose commit failed: whether it was stored is unknown")
        }
    }
}

/// Writes a provider's changed row and withdraws the provider's MFA from its sessions where
/// `trusted_mfa` narrowed; returns the row and the change's record.
async fn write_update(
    tx: &WriteTx,
    auth: &Authorized<IdentityProviderManage>,
    existing: identity_provider::Model,
    change: &Update<'_>,
) -> Result<(identity_provider::Model, Change), ApiError> {
    let updated = providers::update(
        tx,
        auth.allowed(),
        existing,
        change.name.clone(),
        change.settings,
    );
    let row = match updated.await {
        Err(e) if is_unique_violation(&e) => return Err(name_taken()),
        other => other?,
    };
    let trusted_now = &change.settings.mappings().trusted_mfa;
    let distrusted = change
        .before
        .mappings()
        .trusted_mfa
        .iter()
        .any(|v| !trusted_now.contains(v));
    let downgraded = if distrusted {
        sessions::distrust_provider_mfa(tx, auth.allowed(), row.id).await?
    } else {
        0
    };
    let record = described(
        Change::new("identity_provider", row.id, 200),
        change.settings,
    )
    .detail("client_secret_rotated", change.secret.is_some())
    .detail("sessions_mfa_withdrawn", downgraded);
    Ok((row, record))
}

/// Delete an identity provider.
///
/// Its users stay, with their groups; the sessions it opened end (nothing vouches for them any
/// more), and no one signs in through it again.
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
    let ended = sessions::end_provider_sessions(&tx, auth.allowed(), id.0).await?;
    tx.commit(Change::new("identity_provider", id.0, 204).detail("sessions_ended", ended))
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
