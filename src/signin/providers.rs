//! A tenant's identity providers: their settings, checked once when written, and their client
//! secrets, which live in the key store and never come back out.
//!
//! Invariants:
//! - A stored provider's `config` is a [`ProviderSettings`] that passed [`ProviderSettings::check`];
//!   nothing else is ever written there, and it never holds a secret.
//! - A provider's client secret is the key-store record named by its id; it is written before
//!   the provider's row commits and destroyed after the row is gone, so a row never names a
//!   secret that does not exist.

use std::collections::BTreeMap;

use chrono::Utc;
use entity::tenant::identity_provider;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait as _,
    QuerySelect as _,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::authz::actions::IdentityProviderManage;
use crate::keystore::{KeyName, KeyStore, KeyStoreError, Purpose};
use crate::tenancy::work::{Permit, WriteTx};

/// The provider families whose habits Flowgate knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Any OpenID provider that follows the specification.
    Generic,
    /// Microsoft Entra ID (Azure AD): one directory's v2.0 issuer, or the multi-tenant
    /// `organizations` or `common` endpoint limited to `allowed_tenants`.
    AzureAd,
    /// Okta, the org or a custom authorization server.
    Okta,
    /// Google Workspace.
    Google,
}

/// What every kind of provider holds beside how to talk to it: whose people it signs in, and
/// how what it says about them becomes their attributes and groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mappings {
    /// Email domains whose people this provider signs in (the login page's chooser); when it
    /// lists any, it vouches for no address elsewhere.
    pub email_domains: Vec<String>,
    /// Flowgate attribute → the claim (OIDC) or attribute (SAML) that fills it at every sign-in.
    pub claim_mappings: BTreeMap<String, String>,
    /// The provider's group name → the Flowgate group it grants.
    pub group_mappings: BTreeMap<String, String>,
    /// The claim (OIDC) or attribute (SAML) holding the user's groups.
    pub groups_claim: String,
    /// The authentication methods or contexts of this provider that count as the tenant's
    /// second factor: a sign-in whose `amr` or `acr` (OIDC), or `AuthnContextClassRef` (SAML),
    /// names one of them is MFA-complete. Empty (the default): the provider's own MFA is not
    /// trusted, and Flowgate asks for a passkey.
    #[serde(default)]
    pub trusted_mfa: Vec<String>,
}

/// An OpenID provider's settings, as stored and shown (never the client secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcSettings {
    pub preset: Preset,
    /// The issuer identifier: discovery is `{issuer}/.well-known/openid-configuration`, and
    /// ID tokens must carry exactly this `iss` (except at Azure AD's multi-tenant endpoints,
    /// whose tokens carry their directory's issuer: see [`MultiTenantIssuer`]).
    pub issuer: String,
    pub client_id: String,
    /// Scopes asked for beside `openid`.
    pub scopes: Vec<String>,
    #[serde(flatten)]
    pub mappings: Mappings,
    /// Azure AD: directories (`tid`) whose users may sign in; empty means the issuer's own,
    /// and is refused with the multi-tenant endpoints (which would admit every directory).
    pub allowed_tenants: Vec<String>,
    /// Google: the Workspace domain (`hd`) every user must belong to.
    pub hosted_domain: Option<String>,
}

/// A SAML identity provider's settings: its metadata document, kept as given (or as fetched
/// from `metadata_url` when the provider was saved), and how its attributes are read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamlSettings {
    /// Where the metadata was fetched from, when it was.
    pub metadata_url: Option<String>,
    pub metadata_xml: String,
    /// The attribute holding the user's email (else an email-format NameID is used).
    pub email_attribute: String,
    /// The attribute holding the user's display name.
    pub name_attribute: String,
    #[serde(flatten)]
    pub mappings: Mappings,
}

/// A stored provider's settings, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settings {
    Oidc(OidcSettings),
    Saml(SamlSettings),
}

impl Settings {
    /// The `kind` column of the provider's row.
    pub fn kind(&self) -> &'static str {
        match self {
            Settings::Oidc(_) => "oidc",
            Settings::Saml(_) => "saml",
        }
    }

    pub fn mappings(&self) -> &Mappings {
        match self {
            Settings::Oidc(oidc) => &oidc.mappings,
            Settings::Saml(saml) => &saml.mappings,
        }
    }

    /// Checks the settings as a whole; every problem names its field.
    pub fn check(&self) -> Vec<FieldProblem> {
        match self {
            Settings::Oidc(oidc) => oidc.check(),
            Settings::Saml(saml) => saml.check(),
        }
    }

    fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Settings::Oidc(oidc) => serde_json::to_value(oidc),
            Settings::Saml(saml) => serde_json::to_value(saml),
        }
    }
}

/// Longest lists and strings a provider's settings may hold.
pub const MAX_ENTRIES: usize = 64;
const MAX_VALUE: usize = 256;

/// A problem with one field of a provider's settings.
pub type FieldProblem = (String, String);

impl OidcSettings {
    /// Checks the settings as a whole; every problem names its field.
    pub fn check(&self) -> Vec<FieldProblem> {
        let mut problems = self.mappings.check();
        let mut problem = |field: &str, message: &str| {
            problems.push((field.to_owned(), message.to_owned()));
        };
        match url_problem(&self.issuer) {
            Some(message) => problem("issuer", message),
            None if self.preset == Preset::AzureAd => {
                if self.multi_tenant_issuer().is_some() {
                    if self.allowed_tenants.is_empty() {
                        problem(
                            "allowed_tenants",
                            "required with the organizations or common endpoint",
                        );
                    }
                } else if azure_directory(&self.issuer).is_none() {
                    problem(
                        "issuer",
                        "an Azure AD issuer is https://login.microsoftonline.com/<directory id>/v2.0, \
                         or the organizations or common endpoint \
                         (https://login.microsoftonline.com/organizations/v2.0, …/common/v2.0)",
                    );
                }
            }
            None => {}
        }
        if !is_token(&self.client_id) {
            problem("client_id", "must be 1 to 256 visible characters");
        }
        if self.scopes.len() > MAX_ENTRIES || !self.scopes.iter().all(|s| is_scope(s)) {
            problem("scopes", "at most 64 scopes of visible characters");
        }
        if self.allowed_tenants.len() > MAX_ENTRIES
            || !self
                .allowed_tenants
                .iter()
                .all(|t| Uuid::parse_str(t).is_ok())
        {
            problem("allowed_tenants", "at most 64 directory ids (UUIDs)");
        }
        if !self.allowed_tenants.is_empty() && self.preset != Preset::AzureAd {
            problem("allowed_tenants", "only for the azure_ad preset");
        }
        match (&self.hosted_domain, self.preset) {
            (Some(domain), Preset::Google) if !is_domain(domain) => {
                problem("hosted_domain", "must be a domain name such as example.com");
            }
            (Some(_), preset) if preset != Preset::Google => {
                problem("hosted_domain", "only for the google preset");
            }
            _ => {}
        }
        problems
    }

    /// The Azure AD directory the issuer names.
    pub fn azure_directory(&self) -> Option<&str> {
        azure_directory(&self.issuer)
    }

    /// The issuers behind an `azure_ad` provider at Microsoft's `organizations` or `common`
    /// endpoint; `None` for every other provider, whose tokens carry exactly its issuer.
    pub fn multi_tenant_issuer(&self) -> Option<MultiTenantIssuer> {
        if self.preset != Preset::AzureAd {
            return None;
        }
        MultiTenantIssuer::of(&self.issuer)
    }

    /// Whether `allowed_tenants` names directory `tid` (directory ids compare as UUIDs, in any
    /// letter case); never when it is empty.
    pub fn admits_directory(&self, tid: &str) -> bool {
        Uuid::parse_str(tid).is_ok_and(|tid| {
            self.allowed_tenants
                .iter()
                .any(|allowed| Uuid::parse_str(allowed).is_ok_and(|allowed| allowed == tid))
        })
    }
}

/// Microsoft's host for Entra ID sign-in.
const AZURE_HOST: &str = "https://login.microsoftonline.com";
/// The path segments of Entra ID's multi-tenant endpoints.
const MULTI_TENANT_ENDPOINTS: [&str; 2] = ["organizations", "common"];
/// What a multi-tenant endpoint's discovery document has where a directory id goes.
pub const DIRECTORY_PLACEHOLDER: &str = "{tenantid}";

/// Entra ID's `organizations` or `common` endpoint: one discovery document for many directories,
/// whose `issuer` is the template `{base}/{tenantid}/v2.0` and whose ID tokens each carry their
/// own directory's issuer `{base}/<tid>/v2.0`.
///
/// Invariant: `base` is `https://login.microsoftonline.com`, or a loopback origin and path (a
/// local test provider), so that the template names exactly the endpoint configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiTenantIssuer {
    base: String,
}

impl MultiTenantIssuer {
    /// The multi-tenant endpoint `issuer` is, if it is one: `…/organizations/v2.0` or
    /// `…/common/v2.0` at Microsoft's host, or under any path of a loopback origin.
    fn of(issuer: &str) -> Option<Self> {
        let issuer = issuer.trim_end_matches('/');
        let url = url::Url::parse(issuer).ok()?;
        if url.query().is_some() || url.fragment().is_some() {
            return None;
        }
        let base = MULTI_TENANT_ENDPOINTS
            .iter()
            .find_map(|endpoint| issuer.strip_suffix(&format!("/{endpoint}/v2.0")))?;
        (base == AZURE_HOST || is_loopback(&url)).then(|| MultiTenantIssuer {
            base: base.to_owned(),
        })
    }

    /// The `issuer` its discovery document must carry: `{base}/{tenantid}/v2.0`.
    pub fn template(&self) -> String {
        self.for_directory(DIRECTORY_PLACEHOLDER)
    }

    /// The issuer of directory `tid`'s ID tokens.
    pub fn for_directory(&self, tid: &str) -> String {
        format!("{}/{tid}/v2.0", self.base)
    }

    /// Whether `iss` is the issuer of some directory at this endpoint (RFC 9207's `iss` on a
    /// callback, before the token names which directory it must be).
    pub fn names_a_directory(&self, iss: &str) -> bool {
        iss.strip_prefix(self.base.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.strip_suffix("/v2.0"))
            .is_some_and(is_directory_id)
    }
}

/// A directory id as Entra ID writes it: a UUID in its hyphenated form.
pub fn is_directory_id(value: &str) -> bool {
    value.len() == 36 && Uuid::parse_str(value).is_ok()
}

impl Mappings {
    /// Checks the mappings; every problem names its field.
    pub fn check(&self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, message: &str| {
            problems.push((field.to_owned(), message.to_owned()));
        };
        if self.email_domains.len() > MAX_ENTRIES
            || !self.email_domains.iter().all(|d| is_domain(d))
        {
            problem(
                "email_domains",
                "at most 64 lower-case domain names such as example.com",
            );
        }
        if self.claim_mappings.len() > MAX_ENTRIES
            || !self
                .claim_mappings
                .iter()
                .all(|(attr, claim)| is_attribute(attr) && is_token(claim))
        {
            problem(
                "claim_mappings",
                "at most 64 entries; keys are attribute names (lower-case letters, digits and `_`), \
                 values claim names",
            );
        }
        if self.group_mappings.len() > MAX_ENTRIES
            || !self
                .group_mappings
                .iter()
                .all(|(idp, ours)| is_token(idp) && is_token(ours))
        {
            problem("group_mappings", "at most 64 entries of non-empty names");
        }
        if !is_token(&self.groups_claim) {
            problem("groups_claim", "must be a claim name");
        }
        if self.trusted_mfa.len() > MAX_TRUSTED_MFA || !self.trusted_mfa.iter().all(|v| is_token(v))
        {
            problem(
                "trusted_mfa",
                "at most 16 method or context names (`mfa`, `hwk`, a SAML class URI…)",
            );
        }
        problems
    }
}

impl SamlSettings {
    /// Checks the settings as a whole; every problem names its field.
    pub fn check(&self) -> Vec<FieldProblem> {
        let mut problems = self.mappings.check();
        if let Some(message) = self.metadata_url.as_deref().and_then(url_problem) {
            problems.push(("metadata_url".into(), message.into()));
        }
        if let Err(message) = super::saml::IdpMetadata::read(&self.metadata_xml) {
            problems.push(("metadata_xml".into(), message));
        }
        for (field, value) in [
            ("email_attribute", &self.email_attribute),
            ("name_attribute", &self.name_attribute),
        ] {
            if !is_token(value) {
                problems.push((field.into(), "must be an attribute name".into()));
            }
        }
        problems
    }
}

/// Why `address` cannot be a provider's issuer or metadata URL, if it cannot: an `https` URL
/// without query, fragment or credentials (plain `http` only on the loopback interface, for
/// local providers).
pub fn url_problem(address: &str) -> Option<&'static str> {
    let Ok(url) = url::Url::parse(address) else {
        return Some("must be an absolute URL");
    };
    if !is_secure_transport(&url) {
        return Some("must be an https:// URL");
    }
    if url.query().is_some() || url.fragment().is_some() || address.len() > 512 {
        return Some("must have no query or fragment and be at most 512 characters");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some("must not carry credentials");
    }
    None
}

/// Whether `url` reaches a provider safely: `https`, or plain `http` only on the loopback
/// interface (local providers).
pub fn is_secure_transport(url: &url::Url) -> bool {
    url.scheme() == "https" || (url.scheme() == "http" && is_loopback(url))
}

/// Whether `url` is on the loopback interface (where local test providers run).
fn is_loopback(url: &url::Url) -> bool {
    matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

/// The directory id of an Azure AD v2.0 issuer (`…/<directory id>/v2.0`).
fn azure_directory(issuer: &str) -> Option<&str> {
    let path = issuer.trim_end_matches('/').strip_suffix("/v2.0")?;
    let directory = path.rsplit('/').next()?;
    Uuid::parse_str(directory).ok().map(|_| directory)
}

/// The most authentication methods or contexts a provider is trusted for.
const MAX_TRUSTED_MFA: usize = 16;

fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_VALUE
        && !value.chars().any(|c| c.is_control() || c.is_whitespace())
}

fn is_scope(value: &str) -> bool {
    is_token(value)
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
}

fn is_attribute(value: &str) -> bool {
    let mut chars = value.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && value.len() <= 64
}

/// A lower-case DNS name with at least two labels.
pub fn is_domain(value: &str) -> bool {
    value.len() <= 253
        && value.contains('.')
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// The settings stored in `row`, read by its kind.
pub fn settings(row: &identity_provider::Model) -> Result<Settings, serde_json::Error> {
    let config = row.config.clone();
    Ok(match row.kind.as_str() {
        "saml" => Settings::Saml(serde_json::from_value(config)?),
        _ => Settings::Oidc(serde_json::from_value(config)?),
    })
}

fn secret_name(slug: &str, id: Uuid) -> KeyName {
    KeyName::item(slug, Purpose::IdpClientSecret, &id)
}

/// The client secret of provider `id`.
pub async fn client_secret(
    keystore: &dyn KeyStore,
    slug: &str,
    id: Uuid,
) -> Result<Option<String>, KeyStoreError> {
    let Some(bytes) = keystore.record(&secret_name(slug, id)).await? else {
        return Ok(None);
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| anyhow::anyhow!("the client secret of {id} is not text").into())
}

/// Keeps `secret` as the client secret of provider `id`.
pub async fn store_client_secret(
    keystore: &dyn KeyStore,
    slug: &str,
    id: Uuid,
    secret: &str,
) -> Result<(), KeyStoreError> {
    keystore
        .put_record(&secret_name(slug, id), secret.as_bytes())
        .await
}

/// Destroys the client secret of provider `id`.
pub async fn destroy_client_secret(
    keystore: &dyn KeyStore,
    slug: &str,
    id: Uuid,
) -> Result<(), KeyStoreError> {
    keystore.delete_record(&secret_name(slug, id)).await
}

pub async fn create(
    tx: &WriteTx,
    _: &impl Permit<IdentityProviderManage>,
    id: Uuid,
    name: String,
    settings: &Settings,
) -> Result<identity_provider::Model, DbErr> {
    let now = Utc::now();
    identity_provider::ActiveModel {
        id: Set(id),
        name: Set(name),
        kind: Set(settings.kind().into()),
        config: Set(to_json(settings)?),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(tx.conn())
    .await
}

pub async fn update(
    tx: &WriteTx,
    _: &impl Permit<IdentityProviderManage>,
    existing: identity_provider::Model,
    name: String,
    settings: &Settings,
) -> Result<identity_provider::Model, DbErr> {
    if existing.kind != settings.kind() {
        return Err(DbErr::Custom(format!(
            "provider {} is {}, not {}",
            existing.id,
            existing.kind,
            settings.kind()
        )));
    }
    let mut row: identity_provider::ActiveModel = existing.into();
    row.name = Set(name);
    row.config = Set(to_json(settings)?);
    row.updated_at = Set(Utc::now());
    row.update(tx.conn()).await
}

/// Deletes provider `id` with its users' identities at it (the users stay) and its logins in
/// progress; `false` when the tenant has no such provider.
pub async fn delete(
    tx: &WriteTx,
    _: &impl Permit<IdentityProviderManage>,
    id: Uuid,
) -> Result<bool, DbErr> {
    let deleted = identity_provider::Entity::delete_by_id(id)
        .exec(tx.conn())
        .await?;
    Ok(deleted.rows_affected == 1)
}

pub async fn get(
    conn: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<identity_provider::Model>, DbErr> {
    identity_provider::Entity::find_by_id(id).one(conn).await
}

/// Provider `id`, locked until the transaction ends (on PostgreSQL; SQLite's write transaction
/// holds the file): changes of one provider take turns.
pub async fn lock(tx: &WriteTx, id: Uuid) -> Result<Option<identity_provider::Model>, DbErr> {
    identity_provider::Entity::find_by_id(id)
        .lock_exclusive()
        .one(tx.conn())
        .await
}

fn to_json(settings: &Settings) -> Result<serde_json::Value, DbErr> {
    settings.to_json().map_err(|e| DbErr::Custom(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic() -> OidcSettings {
        OidcSettings {
            preset: Preset::Generic,
            issuer: "https://idp.example.com".into(),
            client_id: "flowgate".into(),
            scopes: vec!["email".into(), "profile".into()],
            mappings: Mappings {
                email_domains: vec!["example.com".into()],
                claim_mappings: BTreeMap::from([("department".into(), "dept".into())]),
                group_mappings: BTreeMap::from([("Finance".into(), "finance".into())]),
                groups_claim: "groups".into(),
                trusted_mfa: Vec::new(),
            },
            allowed_tenants: Vec::new(),
            hosted_domain: None,
        }
    }

    fn fields(settings: &OidcSettings) -> Vec<String> {
        settings.check().into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn good_settings_pass() {
        assert!(generic().check().is_empty());
    }

    #[test]
    fn issuers_are_https_except_on_loopback() {
        for (issuer, ok) in [
            ("https://idp.example.com/oauth2/default", true),
            ("http://127.0.0.1:8080/x", true),
            ("http://idp.example.com", false),
            ("https://idp.example.com/?a=b", false),
            ("https://user:pw@idp.example.com", false),
            ("idp.example.com", false),
            ("javascript:alert(1)", false),
        ] {
            let settings = OidcSettings {
                issuer: issuer.into(),
                ..generic()
            };
            assert_eq!(fields(&settings).is_empty(), ok, "{issuer}");
        }
    }

    #[test]
    fn presets_check_their_own_fields() {
        let azure = OidcSettings {
            preset: Preset::AzureAd,
            issuer: "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0".into(),
            ..generic()
        };
        assert_eq!(fields(&azure), ["issuer"]);
        let azure = OidcSettings {
            issuer: "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"
                .into(),
            ..azure
        };
        assert!(fields(&azure).is_empty());
        assert_eq!(
            azure.azure_directory(),
            Some("9188040d-6c67-4c5b-b112-36a304b66dad")
        );
        assert_eq!(azure.multi_tenant_issuer(), None);
        let misplaced = OidcSettings {
            hosted_domain: Some("example.com".into()),
            allowed_tenants: vec!["not-a-uuid".into()],
            ..generic()
        };
        assert_eq!(
            fields(&misplaced),
            ["allowed_tenants", "allowed_tenants", "hosted_domain"]
        );
    }

    const DIRECTORY: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn azure(issuer: &str, allowed_tenants: &[&str]) -> OidcSettings {
        OidcSettings {
            preset: Preset::AzureAd,
            issuer: issuer.into(),
            allowed_tenants: allowed_tenants.iter().map(|t| (*t).to_owned()).collect(),
            ..generic()
        }
    }

    #[test]
    fn azure_multi_tenant_endpoints_need_a_list_of_directories() {
        for issuer in [
            "https://login.microsoftonline.com/organizations/v2.0",
            "https://login.microsoftonline.com/common/v2.0",
            "http://127.0.0.1:8080/organizations/v2.0",
            "http://localhost:8080/idp/common/v2.0/",
        ] {
            assert_eq!(fields(&azure(issuer, &[])), ["allowed_tenants"], "{issuer}");
            let limited = azure(issuer, &[DIRECTORY]);
            assert!(fields(&limited).is_empty(), "{issuer}");
            assert!(limited.multi_tenant_issuer().is_some(), "{issuer}");
            assert_eq!(limited.azure_directory(), None, "{issuer}");
        }
        // Only Microsoft's own endpoints (or a local test provider), only for the azure_ad preset.
        for issuer in [
            "https://login.microsoftonline.com/tenant/organizations/v2.0",
            "https://login.example.com/organizations/v2.0",
            "https://login.microsoftonline.com.evil.example/common/v2.0",
            "https://login.microsoftonline.com/consumers/v2.0",
            "https://login.microsoftonline.com/organizations",
        ] {
            assert_eq!(fields(&azure(issuer, &[DIRECTORY])), ["issuer"], "{issuer}");
        }
        let generic = OidcSettings {
            issuer: "https://login.microsoftonline.com/organizations/v2.0".into(),
            ..generic()
        };
        assert!(fields(&generic).is_empty());
        assert_eq!(generic.multi_tenant_issuer(), None);
    }

    #[test]
    fn a_multi_tenant_endpoint_issues_per_directory() {
        let issuers = azure("https://login.microsoftonline.com/organizations/v2.0", &[])
            .multi_tenant_issuer()
            .unwrap();
        assert_eq!(
            issuers.template(),
            "https://login.microsoftonline.com/{tenantid}/v2.0"
        );
        assert_eq!(
            issuers.for_directory(DIRECTORY),
            format!("https://login.microsoftonline.com/{DIRECTORY}/v2.0")
        );
        assert!(issuers.names_a_directory(&issuers.for_directory(DIRECTORY)));
        for foreign in [
            issuers.template(),
            "https://login.microsoftonline.com/organizations/v2.0".to_owned(),
            format!("https://login.microsoftonline.com/{DIRECTORY}/v2.0/x"),
            format!("https://login.microsoftonline.com/x/{DIRECTORY}/v2.0"),
            format!("https://evil.example/{DIRECTORY}/v2.0"),
            format!(
                "https://login.microsoftonline.com/{}/v2.0",
                DIRECTORY.replace('-', "")
            ),
        ] {
            assert!(!issuers.names_a_directory(&foreign), "{foreign}");
        }
        let local = azure("http://127.0.0.1:4000/common/v2.0", &[])
            .multi_tenant_issuer()
            .unwrap();
        assert_eq!(local.template(), "http://127.0.0.1:4000/{tenantid}/v2.0");
    }

    #[test]
    fn allowed_directories_compare_as_uuids() {
        let settings = azure(
            "https://login.microsoftonline.com/common/v2.0",
            &[&DIRECTORY.to_uppercase()],
        );
        assert!(settings.admits_directory(DIRECTORY));
        assert!(!settings.admits_directory("00000000-0000-0000-0000-000000000001"));
        assert!(!settings.admits_directory("not-a-uuid"));
        assert!(
            !azure("https://login.microsoftonline.com/common/v2.0", &[])
                .admits_directory(DIRECTORY)
        );
    }

    #[test]
    fn domains_and_attributes_are_strict() {
        assert!(is_domain("example.com") && is_domain("a-b.example.co.uk"));
        for bad in [
            "example",
            "Example.com",
            "-a.com",
            "a..com",
            "a.com.",
            "exa mple.com",
        ] {
            assert!(!is_domain(bad), "{bad}");
        }
        assert!(is_attribute("department") && !is_attribute("Department") && !is_attribute("1x"));
    }
}
