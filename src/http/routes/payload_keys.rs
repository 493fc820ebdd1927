//! `/t/{tenant}/api/v1/api-keys/{id}/payload-key` and `/clients/{id}/payload-key`: the keys of a
//! credential's encrypted payloads (see `http::jose`).
//!
//! A credential's shared `dir` key decrypts what it sends and what it receives, so handing one
//! out is as sensitive as issuing the credential: the same permission (`api_key.create`) and the
//! same no-escalation rule on the credential's service account. The key is in the answer that
//! made it and nowhere else; the audit event names the credential and the key id only.

use actix_web::{HttpResponse, web};
use entity::tenant::{api_key, oauth_client};
use sea_orm::{EntityTrait as _, QuerySelect as _};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::authz::Subject;
use crate::authz::actions::ApiKeyCreate;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, PathId};
use crate::http::jose::keys::{PublicKey, issue_dir_key, register_public_key};
use crate::http::pipeline::authz::Authorized;
use crate::tenancy::work::{Change, WriteTx};

/// A shared AES-256 key for `alg` `dir`, as a JWK. `k` is shown this once.
#[derive(Serialize, ToSchema)]
pub struct PayloadKeyJwk {
    /// `oct`.
    #[schema(example = "oct")]
    pub kty: &'static str,
    /// The key, base64url (32 bytes).
    pub k: String,
    /// Put it in the JWE header's `kid` (optional in requests; responses carry it).
    pub kid: String,
    /// `dir`.
    #[schema(example = "dir")]
    pub alg: &'static str,
    /// `enc`.
    #[serde(rename = "use")]
    #[schema(example = "enc")]
    pub key_use: &'static str,
}

/// A public key to encrypt a credential's responses to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"public_jwk": {"kty": "RSA", "n": "sXch…", "e": "AQAB", "kid": "client-2026", "use": "enc", "alg": "RSA-OAEP-256"}}))]
pub struct RegisterPublicKey {
    /// An RSA public JWK of 2048 to 8192 bits (`use` `enc` and `alg` `RSA-OAEP-256` if given;
    /// no private parts). Without a `kid`, its RFC 7638 thumbprint is the `kid`.
    #[schema(value_type = Object)]
    pub public_jwk: Map<String, Value>,
}

/// The public key a credential's responses are encrypted to.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKeyView {
    /// The `kid` responses carry.
    pub kid: String,
}

/// The kind of credential of the path.
#[derive(Clone, Copy)]
enum Credential {
    ApiKey,
    Client,
}

impl Credential {
    fn audit_kind(self) -> &'static str {
        match self {
            Credential::ApiKey => "api_key",
            Credential::Client => "oauth_client",
        }
    }

    /// Locks the row of the live credential `id` until `tx` ends, so that changes of its key
    /// record take turns (each reads the record and writes it whole); 404 if it is gone or
    /// revoked meanwhile.
    async fn lock(self, tx: &WriteTx, id: Uuid) -> Result<(), ApiError> {
        let live = match self {
            Credential::ApiKey => api_key::Entity::find_by_id(id)
                .lock_exclusive()
                .one(tx.conn())
                .await?
                .is_some_and(|k| k.revoked_at.is_none()),
            Credential::Client => oauth_client::Entity::find_by_id(id)
                .lock_exclusive()
                .one(tx.conn())
                .await?
                .is_some_and(|c| c.revoked_at.is_none()),
        };
        if live {
            Ok(())
        } else {
            Err(ApiError::not_found())
        }
    }

    /// The service account of the live credential `id`; a missing or revoked one is 404.
    async fn account(self, auth: &Authorized<ApiKeyCreate>, id: Uuid) -> Result<Uuid, ApiError> {
        let tx = auth.read().await?;
        let account = match self {
            Credential::ApiKey => api_key::Entity::find_by_id(id)
                .one(&tx)
                .await?
                .filter(|k| k.revoked_at.is_none())
                .map(|k| k.service_account_id),
            Credential::Client => oauth_client::Entity::find_by_id(id)
                .one(&tx)
                .await?
                .filter(|c| c.revoked_at.is_none())
                .map(|c| c.service_account_id),
        };
        tx.commit().await?;
        account.ok_or_else(ApiError::not_found)
    }
}

async fn issue(
    auth: Authorized<ApiKeyCreate>,
    credential: Credential,
    id: Uuid,
) -> Result<HttpResponse, ApiError> {
    let account = credential.account(&auth, id).await?;
    // The key reads everything the credential's account may read: no more than the caller may.
    auth.refuse_escalation(None, &Subject::service_account(account))
        .await?;
    let tx = auth.write().await?;
    credential.lock(&tx, id).await?;
    let (issued, previous) = issue_dir_key(auth.keystore(), auth.slug().as_str(), id).await?;
    let change = Change::new(credential.audit_kind(), id, 201)
        .detail("payload_key", "dir")
        .detail("kid", issued.kid.clone());
    if let Err(e) = tx.commit(change).await {
        previous
            .restore(auth.keystore(), auth.slug().as_str(), id)
            .await;
        return Err(e.into());
    }
    Ok(HttpResponse::Created().json(PayloadKeyJwk {
        kty: "oct",
        k: issued.k.to_string(),
        kid: issued.kid,
        alg: "dir",
        key_use: "enc",
    }))
}

async fn register(
    auth: Authorized<ApiKeyCreate>,
    credential: Credential,
    id: Uuid,
    body: JsonBody<RegisterPublicKey>,
) -> Result<web::Json<PublicKeyView>, ApiError> {
    let RegisterPublicKey { public_jwk } = body.parse().await?;
    let key =
        PublicKey::parse(&public_jwk).map_err(|m| ApiError::invalid_field("public_jwk", m))?;
    let account = credential.account(&auth, id).await?;
    auth.refuse_escalation(None, &Subject::service_account(account))
        .await?;
    let tx = auth.write().await?;
    credential.lock(&tx, id).await?;
    let (kid, previous) =
        register_public_key(auth.keystore(), auth.slug().as_str(), id, public_jwk, &key).await?;
    let change = Change::new(credential.audit_kind(), id, 200)
        .detail("payload_key", "public")
        .detail("kid", kid.clone());
    if let Err(e) = tx.commit(change).await {
        previous
            .restore(auth.keystore(), auth.slug().as_str(), id)
            .await;
        return Err(e.into());
    }
    Ok(web::Json(PublicKeyView { kid }))
}

/// Make a shared payload key for an API key.
///
/// A new AES-256 key for `alg` `dir` JWEs (`enc` `A256GCM`), replacing the key's previous one
/// at once. The answer holds it as a JWK, this once. Nobody makes one for a key whose service
/// account may do what they may not (403 naming the actions).
#[utoipa::path(
    post,
    path = "/api-keys/{id}/payload-key",
    tag = "api-keys",
    responses((status = 201, body = PayloadKeyJwk))
)]
pub async fn create_api_key_payload_key(
    auth: Authorized<ApiKeyCreate>,
    id: PathId,
) -> Result<HttpResponse, ApiError> {
    issue(auth, Credential::ApiKey, id.0).await
}

/// Register the public key an API key's responses are encrypted to.
///
/// Encrypted responses to this key's requests go to it (`RSA-OAEP-256`), unless the request
/// itself used the shared key. Replaces the previous one.
#[utoipa::path(
    put,
    path = "/api-keys/{id}/payload-key",
    tag = "api-keys",
    responses((status = 200, body = PublicKeyView))
)]
pub async fn update_api_key_payload_key(
    auth: Authorized<ApiKeyCreate>,
    id: PathId,
    body: JsonBody<RegisterPublicKey>,
) -> Result<web::Json<PublicKeyView>, ApiError> {
    register(auth, Credential::ApiKey, id.0, body).await
}

/// Make a shared payload key for an OAuth client.
///
/// As for an API key: for the requests made with the client's access tokens.
#[utoipa::path(
    post,
    path = "/clients/{id}/payload-key",
    tag = "api-keys",
    responses((status = 201, body = PayloadKeyJwk))
)]
pub async fn create_client_payload_key(
    auth: Authorized<ApiKeyCreate>,
    id: PathId,
) -> Result<HttpResponse, ApiError> {
    issue(auth, Credential::Client, id.0).await
}

/// Register the public key an OAuth client's responses are encrypted to.
#[utoipa::path(
    put,
    path = "/clients/{id}/payload-key",
    tag = "api-keys",
    responses((status = 200, body = PublicKeyView))
)]
pub async fn update_client_payload_key(
    auth: Authorized<ApiKeyCreate>,
    id: PathId,
    body: JsonBody<RegisterPublicKey>,
) -> Result<web::Json<PublicKeyView>, ApiError> {
    register(auth, Credential::Client, id.0, body).await
}
