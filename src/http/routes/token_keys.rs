//! `/t/{tenant}/api/v1/token-keys`: the keys that sign the tenant's access tokens, and their
//! rotation. The public keys are also at `/t/{tenant}/.well-known/jwks.json`.

use actix_web::web;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::authz::actions::{SettingsRead, TokenKeyRotate};
use crate::http::error::ApiError;
use crate::http::pipeline::authz::Authorized;
use crate::identity::token_keys::{self, KeyRing, MAX_KEYS, OVERLAP};
use crate::tenancy::work::Change;

/// One token-signing key (its public part's id; never the key).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenKeyView {
    /// The `kid` of the tokens it signs.
    pub kid: String,
    /// Whether it signs new tokens (the newest key does).
    pub current: bool,
    /// When it was made by a rotation; none for the tenant's first key.
    #[serde(serialize_with = "crate::http::timestamp::optional::serialize")]
    pub created_at: Option<DateTime<Utc>>,
    /// When it stopped signing; it verifies until `verifies_until`.
    #[serde(serialize_with = "crate::http::timestamp::optional::serialize")]
    pub retired_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::http::timestamp::optional::serialize")]
    pub verifies_until: Option<DateTime<Utc>>,
}

/// The tenant's token-signing keys, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenKeys {
    pub keys: Vec<TokenKeyView>,
}

impl From<&KeyRing> for TokenKeys {
    fn from(ring: &KeyRing) -> Self {
        let current = ring.current().map(|k| k.kid.clone());
        TokenKeys {
            keys: ring
                .keys()
                .into_iter()
                .map(|key| TokenKeyView {
                    current: current.as_deref() == Some(key.kid.as_str()),
                    kid: key.kid.clone(),
                    created_at: key.created_at,
                    retired_at: key.retired_at,
                    verifies_until: key.retired_at.map(|at| at + OVERLAP),
                })
                .collect(),
        }
    }
}

/// List the token-signing keys.
#[utoipa::path(
    get,
    path = "/token-keys",
    tag = "settings",
    responses((status = 200, body = TokenKeys))
)]
pub async fn list_token_keys(
    auth: Authorized<SettingsRead>,
) -> Result<web::Json<TokenKeys>, ApiError> {
    let ring = auth.access_tokens().ring(auth.slug()).await?;
    Ok(web::Json(TokenKeys::from(ring.as_ref())))
}

/// Rotate the token-signing key.
///
/// A new key signs from now on and is published at once; the previous one keeps verifying the
/// tokens it signed for 15 minutes (longer than any token lives), so nobody's token stops
/// early. Keys past that overlap leave the ring. A ring holds at most four keys: a rotation
/// while it is full is 409. A rotation whose audit event cannot be recorded changes nothing.
#[utoipa::path(
    post,
    path = "/token-keys/rotate",
    tag = "settings",
    responses((status = 200, body = TokenKeys), (status = 409, description = "The key ring is full"))
)]
pub async fn rotate_token_key(
    auth: Authorized<TokenKeyRotate>,
) -> Result<web::Json<TokenKeys>, ApiError> {
    let tx = auth.write().await?;
    token_keys::serialize_rotations(&tx).await?;
    let ring = token_keys::load(auth.keystore(), auth.slug().as_str()).await?;
    if ring.keys().len() >= MAX_KEYS {
        return Err(ApiError::conflict(
            "The tenant's key ring is full: rotate again once the oldest retired key's 15-minute \
             overlap has ended.",
        ));
    }
    let rotation = auth.access_tokens().rotate(auth.slug()).await?;
    let committed = tx
        .commit(
            Change::new("token_key", &rotation.kid, 200)
                .invalidating()
                .detail("overlap_minutes", OVERLAP.num_minutes()),
        )
        .await;
    if let Err(e) = committed {
        take_back(&auth, rotation).await;
        return Err(e.into());
    }
    let ring = auth.access_tokens().ring(auth.slug()).await?;
    Ok(web::Json(TokenKeys::from(ring.as_ref())))
}

/// Takes back a rotation whose change did not commit (not on record, so not in force), holding
/// the tenant's rotations again so that none committed meanwhile is taken back with it. When
/// the database cannot be reached to hold them the key is taken back all the same: a rotation
/// racing it then keeps the key, retired.
async fn take_back(auth: &Authorized<TokenKeyRotate>, rotation: token_keys::Rotation) {
    let held = match auth.write().await {
        Ok(tx) => token_keys::serialize_rotations(&tx).await.ok().map(|()| tx),
        Err(_) => None,
    };
    if held.is_none() {
        tracing::warn!("taking back a token key rotation without holding the tenant's rotations");
    }
    if let Err(undo) = auth
        .access_tokens()
        .undo_rotation(auth.slug(), rotation)
        .await
    {
        tracing::error!(error = %undo, "a token key rotation that did not commit could not be undone");
    }
    // The transaction only held the rotations: it ends without a change.
    drop(held);
}
