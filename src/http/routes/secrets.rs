//! `/t/{tenant}/api/v1/secrets` and the tenant's key-encryption key (`/encryption-key`).
//!
//! Values are write-only unless the caller holds `secret.read` on the secret: no answer but
//! `GET …/secrets/{name}/value` carries one, and no audit event or error ever does.

use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::{secret, secret_version};
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::openapi::Required;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{ListParams, Page};
use crate::authz::actions::{
    EncryptionKeyRotate, SecretList, SecretRead, SecretWrite, SettingsRead,
};
use crate::authz::schema::EntityKind;
use crate::directory::clean_name;
use crate::http::contract::{Contract, Documented};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::{JsonBody, PathId};
use crate::http::pipeline::authz::{Authorized, OnFolder, OnSecret};
use crate::secrets::envelope::KeyStatus;
use crate::secrets::{self, NewSecret, ValueError};
use crate::tenancy::work::{Change, TenantContext};
use crate::tenancy::{is_foreign_key_violation, is_unique_violation};

/// A secret to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "erp-token", "value": "s3cr3t", "labels": {"system": "erp"}}))]
pub struct CreateSecret {
    /// 1–100 letters, digits, `.`, `_`, `-`; processes refer to it as `${secret:NAME}`.
    #[schema(example = "erp-token")]
    pub name: String,
    /// The value (at most 64 KiB); never shown again except to `secret.read`.
    #[schema(value_type = String, write_only)]
    pub value: SecretString,
    /// The folder to keep it in (deciding `secret.write` there as well); the tenant's root when
    /// absent.
    pub folder_id: Option<Uuid>,
    pub description: Option<String>,
    /// String labels (at most 20).
    #[schema(value_type = Option<Object>)]
    pub labels: Option<serde_json::Value>,
}

/// A new version of a secret's value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"value": "n3w-s3cr3t", "grace_seconds": 3600}))]
pub struct RotateSecret {
    #[schema(value_type = String, write_only)]
    pub value: SecretString,
    /// How long the version it replaces stays readable (default a day, at most 30 days).
    #[schema(minimum = 0, maximum = 2592000)]
    pub grace_seconds: Option<u64>,
}

/// One version of a secret (never its value).
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretVersionView {
    pub version: i32,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    /// When a replaced version stops being readable; null for the current one.
    #[serde(serialize_with = "crate::http::timestamp::optional::serialize")]
    pub readable_until: Option<DateTime<Utc>>,
}

/// A secret's name, place and metadata (never its value).
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretView {
    pub id: Uuid,
    pub name: String,
    pub folder_id: Option<Uuid>,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub labels: serde_json::Value,
    pub current_version: i32,
    /// The readable versions, newest first.
    pub versions: Vec<SecretVersionView>,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// A page of secrets (the schema `SecretPage`).
pub type SecretPage = Page<SecretView>;

/// A secret's value, for a holder of `secret.read`.
#[derive(Serialize, ToSchema)]
pub struct SecretValue {
    pub name: String,
    pub version: i32,
    pub value: String,
}

/// Which version of a secret to read.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ValueParams {
    /// A version still readable (the current one when absent).
    #[param(minimum = 1)]
    pub version: Option<i32>,
}

/// The `{name}` of a secret path; one no secret could have is 404.
#[derive(Debug, Clone)]
pub struct SecretName(pub String);

impl FromRequest for SecretName {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            req.match_info()
                .get("name")
                .filter(|n| secrets::check_name(n).is_ok())
                .map(|n| SecretName(n.to_owned()))
                .ok_or_else(ApiError::not_found),
        )
    }
}

impl Documented for SecretName {
    fn document(contract: &mut Contract) {
        contract.parameters(vec![
            ParameterBuilder::new()
                .name("name")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The secret's name."))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")),
                ))
                .build(),
        ]);
        contract.errors(&[ErrorCode::NotFound]);
    }
}

fn view(secret: secret::Model, versions: Vec<secret_version::Model>) -> SecretView {
    let now = Utc::now();
    SecretView {
        id: secret.id,
        name: secret.name,
        folder_id: secret.folder_id,
        description: secret.description,
        labels: secret.labels,
        current_version: secret.current_version,
        versions: versions
            .into_iter()
            .filter(|v| v.readable_until.is_none_or(|until| until > now))
            .map(|v| SecretVersionView {
                version: v.version,
                created_at: v.created_at,
                readable_until: v.readable_until,
            })
            .collect(),
        created_at: secret.created_at,
        updated_at: secret.updated_at,
    }
}

/// At most this many labels, each key ≤ 64 and value ≤ 256 characters.
const MAX_LABELS: usize = 20;

fn labels(value: Option<serde_json::Value>) -> Result<serde_json::Value, ApiError> {
    let labels = match value {
        None => return Ok(serde_json::json!({})),
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => {
            return Err(ApiError::invalid_field("labels", "must be a JSON object"));
        }
    };
    let fits = labels.len() <= MAX_LABELS
        && labels.iter().all(|(k, v)| {
            !k.is_empty() && k.len() <= 64 && v.as_str().is_some_and(|v| v.len() <= 256)
        });
    if !fits {
        return Err(ApiError::invalid_field(
            "labels",
            format!("at most {MAX_LABELS} string labels (keys ≤ 64, values ≤ 256 characters)"),
        ));
    }
    Ok(serde_json::Value::Object(labels))
}

fn value_field(value: &SecretString) -> Result<(), ApiError> {
    secrets::check_value(value).map_err(|m| ApiError::invalid_field("value", m))
}

/// The secret to create, checked, and the folder it names.
async fn new_secret(
    body: JsonBody<CreateSecret>,
) -> Result<(CreateSecret, serde_json::Value), ApiError> {
    let body = body.parse().await?;
    secrets::check_name(&body.name).map_err(|m| ApiError::invalid_field("name", m))?;
    value_field(&body.value)?;
    if let Some(d) = &body.description {
        clean_name(d, 500).map_err(|m| ApiError::invalid_field("description", m))?;
    }
    let labels = labels(body.labels.clone())?;
    Ok((body, labels))
}

/// Writes the value to the key store, then the rows with their audit event; a value whose rows
/// did not commit is destroyed again.
async fn store_new(
    auth: &Authorized<SecretWrite, impl crate::http::pipeline::authz::Target>,
    body: CreateSecret,
    labels: serde_json::Value,
    folder_id: Option<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let slug = auth.slug().as_str().to_owned();
    let version_id = Uuid::now_v7();
    secrets::put_value(auth.keystore(), &slug, version_id, &body.value).await?;
    let stored = async {
        let tx = auth.write().await?;
        let new = NewSecret {
            name: body.name,
            folder_id,
            description: body.description.map(|d| d.trim().to_owned()),
            labels,
            version_id,
        };
        let secret = match secrets::create(&tx, auth.allowed(), new).await {
            Err(e) if is_unique_violation(&e) => {
                return Err(ApiError::conflict("A secret with this name exists."));
            }
            // The folder was deleted since the request was authorized.
            Err(e) if is_foreign_key_violation(&e) => return Err(ApiError::not_found()),
            other => other?,
        };
        let versions = secrets::versions(tx.conn(), secret.id).await?;
        tx.commit(
            Change::new("secret", secret.id, 201)
                .detail("name", secret.name.clone())
                .detail("version", 1),
        )
        .await?;
        Ok(view(secret, versions))
    }
    .await;
    match stored {
        Ok(view) => Ok(HttpResponse::Created().json(view)),
        Err(e) => {
            abandon_value(auth, version_id).await;
            Err(e)
        }
    }
}

/// Destroys the value written as version `version_id` for a change that failed, once the
/// version is known not to be stored: a commit can fail after committing, and a stored version
/// must keep its value. A value whose version cannot be looked up stays (named by an id nothing
/// refers to, it is destroyed with the tenant's keys).
async fn abandon_value(auth: &TenantContext, version_id: Uuid) {
    let stored = async {
        let tx = auth.read().await?;
        let stored = secrets::version_stored(&tx, version_id).await?;
        tx.commit().await?;
        Ok::<_, ApiError>(stored)
    }
    .await;
    match stored {
        Ok(false) => {
            secrets::discard_values(auth.keystore(), auth.slug().as_str(), &[version_id]).await;
        }
        Ok(true) => {
            tracing::warn!(version = %version_id, "a secret change answered as failed was committed; its value stays");
        }
        Err(e) => {
            tracing::warn!(error = %e, version = %version_id, "kept the value of a failed secret change: whether it was stored is unknown");
        }
    }
}

/// Create a secret.
///
/// The value goes to the key store (Vault KV v2 under the tenant's path, or the local sealed
/// store) and is never answered. With `folder_id`, `secret.write` is decided on that folder as
/// well; a caller allowed only in a folder creates there with `POST /folders/{id}/secrets`.
#[utoipa::path(
    post,
    path = "/secrets",
    tag = "secrets",
    responses((status = 201, body = SecretView), (status = 409, description = "The name is taken"))
)]
pub async fn create_secret(
    auth: Authorized<SecretWrite>,
    body: JsonBody<CreateSecret>,
) -> Result<HttpResponse, ApiError> {
    let (body, labels) = new_secret(body).await?;
    if let Some(folder) = body.folder_id {
        let resource = auth
            .policies()
            .folder(folder)
            .ok_or_else(ApiError::not_found)?;
        auth.authorize::<SecretWrite>(resource)?;
    }
    let folder = body.folder_id;
    store_new(&auth, body, labels, folder).await
}

/// Create a secret in a folder.
#[utoipa::path(
    post,
    path = "/folders/{id}/secrets",
    tag = "secrets",
    responses((status = 201, body = SecretView), (status = 409, description = "The name is taken"))
)]
pub async fn create_folder_secret(
    auth: Authorized<SecretWrite, OnFolder>,
    folder: PathId,
    body: JsonBody<CreateSecret>,
) -> Result<HttpResponse, ApiError> {
    let (body, labels) = new_secret(body).await?;
    if body.folder_id.is_some_and(|f| f != folder.0) {
        return Err(ApiError::invalid_field(
            "folder_id",
            "must be absent or the folder of the path",
        ));
    }
    store_new(&auth, body, labels, Some(folder.0)).await
}

/// List secrets: names, versions, folders and labels, never values.
///
/// Only those the caller may list, each decided on its own.
#[utoipa::path(
    get,
    path = "/secrets",
    tag = "secrets",
    responses((status = 200, body = SecretPage))
)]
pub async fn list_secrets(
    auth: Authorized<SecretList>,
    query: web::Query<ListParams>,
) -> Result<web::Json<SecretPage>, ApiError> {
    let limit = query.limit()?;
    let tx = auth.read().await?;
    let page = Page::filtered(
        query.after,
        limit,
        None,
        async |after, n| Ok(secrets::page(&tx, after, n).await?),
        |s| s.id,
        |s| visible(&auth, s),
        |s| s,
    )
    .await?;
    let ids: Vec<Uuid> = page.items.iter().map(|s| s.id).collect();
    let mut versions = secret_version::Entity::find()
        .filter(secret_version::Column::SecretId.is_in(ids))
        .all(&tx)
        .await?;
    tx.commit().await?;
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    Ok(web::Json(Page {
        items: page
            .items
            .into_iter()
            .map(|s| {
                let own = versions
                    .iter()
                    .filter(|v| v.secret_id == s.id)
                    .cloned()
                    .collect();
                view(s, own)
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

fn visible(request: &TenantContext, secret: &secret::Model) -> bool {
    request
        .policies()
        .resource_in(EntityKind::Secret, secret.id.to_string(), secret.folder_id)
        .is_some_and(|r| request.may::<SecretList>(&r))
}

/// Get a secret's metadata and versions (never its value).
#[utoipa::path(
    get,
    path = "/secrets/{name}",
    tag = "secrets",
    responses((status = 200, body = SecretView))
)]
pub async fn get_secret(
    auth: Authorized<SecretList, OnSecret>,
    name: SecretName,
) -> Result<web::Json<SecretView>, ApiError> {
    let tx = auth.read().await?;
    // The secret the decision was about: the name may have been given to another since.
    let secret = secrets::by_name(&tx, &name.0)
        .await?
        .filter(|s| secrets::decided_on(auth.allowed(), s.id))
        .ok_or_else(ApiError::not_found)?;
    let versions = secrets::versions(&tx, secret.id).await?;
    tx.commit().await?;
    Ok(web::Json(view(secret, versions)))
}

/// Read a secret's value.
///
/// Requires `secret.read` on the secret (not `secret.use`, which lets processes use it without
/// anyone seeing it). The audit event names the version read, never the value. A replaced
/// version is readable until its `readable_until`.
#[utoipa::path(
    get,
    path = "/secrets/{name}/value",
    tag = "secrets",
    responses((status = 200, body = SecretValue))
)]
pub async fn read_secret_value(
    auth: Authorized<SecretRead, OnSecret>,
    name: SecretName,
    query: web::Query<ValueParams>,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.read().await?;
    let secret = secrets::by_name(&tx, &name.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    auth.note_detail("name", secret.name.clone());
    let read = secrets::read_value(
        &tx,
        auth.keystore(),
        auth.slug().as_str(),
        auth.allowed(),
        &secret,
        query.version,
    )
    .await;
    tx.commit().await?;
    let (version, value) = read.map_err(value_error)?;
    auth.note_detail("version", version);
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(SecretValue {
            name: secret.name,
            version,
            value: value.expose_secret().to_owned(),
        }))
}

fn value_error(e: ValueError) -> ApiError {
    match e {
        ValueError::NoVersion(_) => ApiError::not_found(),
        ValueError::KeyStore(e) => e.into(),
        ValueError::Db(e) => e.into(),
    }
}

/// Rotate a secret: its value becomes a new version.
///
/// The version it replaces stays readable for `grace_seconds` (default a day); versions whose
/// grace is over are destroyed.
#[utoipa::path(
    put,
    path = "/secrets/{name}",
    tag = "secrets",
    responses((status = 200, body = SecretView), (status = 409, description = "Rotated concurrently; retry"))
)]
pub async fn rotate_secret(
    auth: Authorized<SecretWrite, OnSecret>,
    name: SecretName,
    body: JsonBody<RotateSecret>,
) -> Result<web::Json<SecretView>, ApiError> {
    let body = body.parse().await?;
    value_field(&body.value)?;
    let grace = match body.grace_seconds.map(Duration::from_secs) {
        None => secrets::DEFAULT_GRACE,
        Some(g) if g <= secrets::MAX_GRACE => g,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "grace_seconds",
                "must be at most 2592000 (30 days)",
            ));
        }
    };
    let slug = auth.slug().as_str().to_owned();
    let version_id = Uuid::now_v7();
    secrets::put_value(auth.keystore(), &slug, version_id, &body.value).await?;
    let rotated = async {
        let tx = auth.write().await?;
        let existing = secrets::lock_by_name(&tx, &name.0)
            .await?
            .ok_or_else(ApiError::not_found)?;
        let rotated = match secrets::rotate(&tx, auth.allowed(), existing, version_id, grace).await
        {
            Err(e) if is_unique_violation(&e) => {
                return Err(ApiError::conflict(
                    "The secret was rotated concurrently; retry.",
                ));
            }
            other => other?.ok_or_else(ApiError::not_found)?,
        };
        let versions = secrets::versions(tx.conn(), rotated.secret.id).await?;
        // Before the commit, like a deletion: once their rows are gone nothing refers to these
        // values, and a failure here keeps the rows (expired, unreadable) for the next
        // rotation to destroy again.
        secrets::destroy_values(auth.keystore(), &slug, &rotated.expired).await?;
        tx.commit(
            Change::new("secret", rotated.secret.id, 200)
                .detail("name", rotated.secret.name.clone())
                .detail("version", rotated.secret.current_version)
                .detail("grace_seconds", grace.as_secs()),
        )
        .await?;
        Ok((rotated, versions))
    }
    .await;
    match rotated {
        Ok((rotated, versions)) => {
            if let Some(ended) = rotated.ended {
                secrets::discard_values(auth.keystore(), &slug, &[ended]).await;
            }
            Ok(web::Json(view(rotated.secret, versions)))
        }
        Err(e) => {
            abandon_value(&auth, version_id).await;
            Err(e)
        }
    }
}

/// Delete a secret and destroy every version's value.
///
/// The values are destroyed before the deletion is recorded, so that a deletion answered 204
/// left no value behind. A deletion that fails on the way (the key store unreachable: 503; the
/// record refused: 5xx) leaves the secret in place with some or all of its values destroyed,
/// those versions no longer readable (404), never again; deleting it again completes it.
#[utoipa::path(
    delete,
    path = "/secrets/{name}",
    tag = "secrets",
    responses((status = 204, description = "Deleted and destroyed"))
)]
pub async fn delete_secret(
    auth: Authorized<SecretWrite, OnSecret>,
    name: SecretName,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.write().await?;
    let existing = secrets::lock_by_name(&tx, &name.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let versions = secrets::delete(&tx, auth.allowed(), existing.id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    // Destroyed before the deletion commits: with the key store down, nothing changes (503).
    secrets::destroy_values(auth.keystore(), auth.slug().as_str(), &versions).await?;
    tx.commit(Change::new("secret", existing.id, 204).detail("name", existing.name))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The tenant's key-encryption key: its version and how far its data keys are re-wrapped.
#[utoipa::path(
    get,
    path = "/encryption-key",
    tag = "secrets",
    responses((status = 200, body = KeyStatus))
)]
pub async fn get_encryption_key(
    auth: Authorized<SettingsRead>,
) -> Result<web::Json<KeyStatus>, ApiError> {
    Ok(web::Json(
        auth.envelope()
            .status(auth.slug())
            .await
            .map_err(envelope_error)?,
    ))
}

/// Rotate the tenant's key-encryption key.
///
/// Adds a key version at once; the tenant's data keys are then re-wrapped under it in the
/// background (follow `data_keys_current` at `GET /encryption-key`). Everything sealed stays
/// readable throughout.
#[utoipa::path(
    post,
    path = "/encryption-key/rotate",
    tag = "secrets",
    responses((status = 202, body = KeyStatus))
)]
pub async fn rotate_encryption_key(
    auth: Authorized<EncryptionKeyRotate>,
) -> Result<HttpResponse, ApiError> {
    let envelope = auth.envelope();
    let slug = auth.slug().clone();
    let version = envelope.rotate(&slug).await.map_err(envelope_error)?;
    auth.note_detail("version", version);
    let background = std::sync::Arc::clone(envelope);
    let rewrap_slug = slug.clone();
    tokio::spawn(async move {
        if let Err(e) = background.rewrap(&rewrap_slug, |_, _| {}).await {
            tracing::warn!(tenant = %rewrap_slug, error = %e, "re-wrapping data keys stopped; rotate again to resume");
        }
    });
    let status = envelope.status(&slug).await.map_err(envelope_error)?;
    Ok(HttpResponse::Accepted().json(status))
}

fn envelope_error(e: crate::secrets::envelope::EnvelopeError) -> ApiError {
    use crate::secrets::envelope::EnvelopeError;
    match e {
        EnvelopeError::KeyStore(e) => e.into(),
        EnvelopeError::Tenancy(e) => e.into(),
        EnvelopeError::Malformed | EnvelopeError::Undecryptable => {
            ApiError::internal("envelope", e)
        }
    }
}
