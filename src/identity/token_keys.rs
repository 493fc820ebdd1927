//! A tenant's token-signing keys: the ring of Ed25519 keys its access tokens are signed and
//! checked with, rotated with overlap.
//!
//! Invariants:
//! - The newest key of the ring signs; every key of the ring verifies and is published in the
//!   tenant's JWKS. A key leaves the ring only [`OVERLAP`] after it stopped signing, when every
//!   token it signed has expired: rotating never ends a token early.
//! - The ring is one key-store record (the seeds are secrets: sealed locally, or in Vault). A
//!   tenant that never rotated has a ring of one key, the key store's token-signing secret.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{DecodingKey, EncodingKey};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use sea_orm::{ConnectionTrait as _, DbBackend, DbErr, Statement};

use crate::crypto::{random_bytes, sha256_hex};
use crate::keystore::{KeyName, KeyStore, KeyStoreError, Purpose};
use crate::tenancy::work::WriteTx;

/// How long a key keeps verifying after it stopped signing: longer than any token lives.
pub const OVERLAP: Duration = Duration::minutes(15);
/// Most keys a ring holds at once: rotating again while it is full waits for the oldest
/// retired key's overlap to end, so that the published key set stays small.
pub const MAX_KEYS: usize = 4;

/// One key of the ring, ready to sign and verify.
pub struct TenantKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The public key, base64url (the JWK's `x`).
    pub x: String,
    pub created_at: Option<DateTime<Utc>>,
    /// When it stopped signing, if it did.
    pub retired_at: Option<DateTime<Utc>>,
}

/// A tenant's keys, oldest first; the last one signs.
pub struct KeyRing {
    keys: Vec<TenantKey>,
}

impl KeyRing {
    /// The key that signs.
    pub fn current(&self) -> Option<&TenantKey> {
        self.keys.last()
    }

    /// The key `kid`, if the ring holds it and it still verifies now (a ring cached since
    /// before the key's overlap ended must not keep it alive).
    pub fn find(&self, kid: &str) -> Option<&TenantKey> {
        self.keys().into_iter().find(|k| k.kid == kid)
    }

    /// The keys that verify now, oldest first.
    pub fn keys(&self) -> Vec<&TenantKey> {
        let now = Utc::now();
        self.keys
            .iter()
            .filter(|k| k.retired_at.is_none_or(|at| at + OVERLAP > now))
            .collect()
    }

    /// The ring's public keys that verify now, as a JWK set.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<_> = self
            .keys()
            .into_iter()
            .map(|key| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": key.x,
                    "kid": key.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

/// The ring as the key store keeps it.
#[derive(Serialize, Deserialize)]
struct Stored {
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    /// The Ed25519 seed, base64url.
    seed: String,
    /// None for the key store's original token-signing secret.
    created_at: Option<DateTime<Utc>>,
    retired_at: Option<DateTime<Utc>>,
}

fn ring_name(slug: &str) -> KeyName {
    KeyName::new(slug, Purpose::TokenKeyring)
}

/// Tenant `slug`'s ring, without the keys past their overlap.
pub async fn load(keystore: &dyn KeyStore, slug: &str) -> Result<KeyRing, KeyStoreError> {
    let stored = stored(keystore, slug).await?;
    let now = Utc::now();
    let keys = stored
        .keys
        .iter()
        .filter(|k| k.retired_at.is_none_or(|at| at + OVERLAP > now))
        .map(|k| {
            let seed = Zeroizing::new(decode_seed(&k.seed)?);
            let mut key = tenant_key(&seed)?;
            key.created_at = k.created_at;
            key.retired_at = k.retired_at;
            Ok(key)
        })
        .collect::<Result<Vec<_>, KeyStoreError>>()?;
    Ok(KeyRing { keys })
}

/// A rotation done: its new key, and the ring it replaced.
pub struct Rotation {
    pub kid: String,
    /// The stored ring before, `None` when the key store held the seed alone.
    replaced: Option<Zeroizing<Vec<u8>>>,
}

/// Rotates tenant `slug`'s ring: a new key signs from now on, the one before keeps verifying for
/// [`OVERLAP`], and keys past their overlap are dropped. The caller holds
/// [`serialize_rotations`]: the ring is read and written back whole.
pub async fn rotate(keystore: &dyn KeyStore, slug: &str) -> Result<Rotation, KeyStoreError> {
    let replaced = keystore.record(&ring_name(slug)).await?.map(Zeroizing::new);
    let mut stored = match &replaced {
        Some(bytes) => parse(slug, bytes)?,
        None => seed_alone(keystore, slug).await?,
    };
    let now = Utc::now();
    stored
        .keys
        .retain(|k| k.retired_at.is_none_or(|at| at + OVERLAP > now));
    for key in &mut stored.keys {
        key.retired_at.get_or_insert(now);
    }
    let seed = Zeroizing::new(random_bytes::<32>()?);
    let kid = tenant_key(seed.as_slice())?.kid;
    stored.keys.push(StoredKey {
        seed: URL_SAFE_NO_PAD.encode(seed.as_slice()),
        created_at: Some(now),
        retired_at: None,
    });
    let bytes = Zeroizing::new(
        serde_json::to_vec(&stored).map_err(|e| anyhow::anyhow!("the token key ring: {e}"))?,
    );
    keystore.put_record(&ring_name(slug), &bytes).await?;
    Ok(Rotation { kid, replaced })
}

/// Takes back the key `rotation` added: its change did not commit, so the key must not sign.
/// The caller holds [`serialize_rotations`] again (the hold of the rotation itself ended with
/// the transaction that failed, so another rotation may have committed since).
///
/// While the key still signs no rotation came after it, and the ring it replaced is put back
/// whole. Once a later rotation has retired it, only the key leaves the ring: the later
/// rotation's key is on record and goes on signing.
pub async fn undo(
    keystore: &dyn KeyStore,
    slug: &str,
    rotation: Rotation,
) -> Result<(), KeyStoreError> {
    let name = ring_name(slug);
    let Some(current) = keystore.record(&name).await?.map(Zeroizing::new) else {
        return Ok(());
    };
    let mut stored = parse(slug, &current)?;
    let mut added = None;
    for (at, key) in stored.keys.iter().enumerate() {
        let seed = Zeroizing::new(decode_seed(&key.seed)?);
        if tenant_key(&seed)?.kid == rotation.kid {
            added = Some((at, key.retired_at.is_none()));
        }
    }
    match (added, rotation.replaced) {
        (None, _) => Ok(()),
        (Some((_, true)), Some(bytes)) => keystore.put_record(&name, &bytes).await,
        (Some((_, true)), None) => keystore.delete_record(&name).await,
        (Some((at, false)), _) => {
            stored.keys.remove(at);
            let bytes = Zeroizing::new(
                serde_json::to_vec(&stored)
                    .map_err(|e| anyhow::anyhow!("the token key ring: {e}"))?,
            );
            keystore.put_record(&name, &bytes).await
        }
    }
}

/// Makes the tenant's rotations wait for each other until `tx` ends, so that none writes back a
/// ring that lacks another's new key: on PostgreSQL a transaction-scoped advisory lock, on
/// SQLite the write transaction itself (it holds the file's write lock).
pub async fn serialize_rotations(tx: &WriteTx) -> Result<(), DbErr> {
    if tx.conn().get_database_backend() == DbBackend::Postgres {
        tx.conn()
            .execute_raw(Statement::from_string(
                DbBackend::Postgres,
                // Any constant: the lock lives in the tenant's own database session.
                "SELECT pg_advisory_xact_lock(7236510463001)",
            ))
            .await?;
    }
    Ok(())
}

/// The stored ring, or the ring of the key store's token-signing secret alone.
async fn stored(keystore: &dyn KeyStore, slug: &str) -> Result<Stored, KeyStoreError> {
    match keystore.record(&ring_name(slug)).await? {
        Some(bytes) => parse(slug, &Zeroizing::new(bytes)),
        None => seed_alone(keystore, slug).await,
    }
}

fn parse(slug: &str, bytes: &[u8]) -> Result<Stored, KeyStoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("the token key ring of {slug} is unreadable: {e}").into())
}

/// The ring of the key store's token-signing secret alone (a tenant that never rotated).
async fn seed_alone(keystore: &dyn KeyStore, slug: &str) -> Result<Stored, KeyStoreError> {
    let seed = keystore
        .secret(&KeyName::new(slug, Purpose::TokenSigning))
        .await?;
    Ok(Stored {
        keys: vec![StoredKey {
            seed: URL_SAFE_NO_PAD.encode(seed.expose_secret()),
            created_at: None,
            retired_at: None,
        }],
    })
}

fn decode_seed(seed: &str) -> Result<Vec<u8>, KeyStoreError> {
    URL_SAFE_NO_PAD
        .decode(seed)
        .map_err(|_| anyhow::anyhow!("a token key seed is not base64url").into())
}

/// The key of Ed25519 `seed`; its `kid` is the first 16 hex digits of its public key's SHA-256.
fn tenant_key(seed: &[u8]) -> Result<TenantKey, KeyStoreError> {
    let pair = Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|_| anyhow::anyhow!("the token-signing seed is not an Ed25519 seed"))?;
    let public = pair.public_key().as_ref().to_vec();
    // PKCS#8 v1 of an Ed25519 private key (RFC 8410): a fixed prefix, then the seed.
    let mut pkcs8 = Zeroizing::new(
        hex::decode("302e020100300506032b657004220420")
            .map_err(|e| anyhow::anyhow!("PKCS#8 prefix: {e}"))?,
    );
    pkcs8.extend_from_slice(seed);
    Ok(TenantKey {
        kid: sha256_hex(&public)[..16].to_owned(),
        encoding: EncodingKey::from_ed_der(&pkcs8),
        decoding: DecodingKey::from_ed_der(&public),
        x: URL_SAFE_NO_PAD.encode(&public),
        created_at: None,
        retired_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kids(ring: &KeyRing) -> Vec<String> {
        ring.keys().iter().map(|k| k.kid.clone()).collect()
    }

    #[tokio::test]
    async fn an_undone_rotation_takes_back_its_key_and_no_later_one() {
        let dir = std::env::temp_dir().join(format!("flowgate-ring-{}", uuid::Uuid::new_v4()));
        let store = crate::keystore::LocalKeyStore::open(&dir, None).unwrap();
        let first = load(&store, "acme").await.unwrap();

        // Undone while its key still signs: the ring it replaced is back, whole.
        let failed = rotate(&store, "acme").await.unwrap();
        undo(&store, "acme", failed).await.unwrap();
        assert_eq!(kids(&load(&store, "acme").await.unwrap()), kids(&first));
        let kept = rotate(&store, "acme").await.unwrap();
        let second = load(&store, "acme").await.unwrap();

        // Undone after another rotation committed over it: only its own key leaves.
        let failed = rotate(&store, "acme").await.unwrap();
        let failed_kid = failed.kid.clone();
        let later = rotate(&store, "acme").await.unwrap();
        undo(&store, "acme", failed).await.unwrap();
        let ring = load(&store, "acme").await.unwrap();
        assert_eq!(
            ring.current().map(|k| k.kid.clone()),
            Some(later.kid.clone())
        );
        assert!(ring.find(&failed_kid).is_none());
        assert!(ring.find(&kept.kid).is_some());
        let mut expected = kids(&second);
        expected.push(later.kid);
        assert_eq!(kids(&ring), expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_past_its_overlap_neither_verifies_nor_is_published() {
        let now = Utc::now();
        let mut old = tenant_key(&[1u8; 32]).unwrap();
        old.retired_at = Some(now - OVERLAP - Duration::minutes(1));
        let mut recent = tenant_key(&[2u8; 32]).unwrap();
        recent.retired_at = Some(now - Duration::minutes(1));
        let current = tenant_key(&[3u8; 32]).unwrap();
        let (old_kid, recent_kid, current_kid) =
            (old.kid.clone(), recent.kid.clone(), current.kid.clone());
        // As a ring cached since before the old key's overlap ended would hold them.
        let ring = KeyRing {
            keys: vec![old, recent, current],
        };
        assert!(ring.find(&old_kid).is_none());
        assert!(ring.find(&recent_kid).is_some());
        assert_eq!(ring.current().map(|k| k.kid.clone()), Some(current_kid));
        let published = ring.jwks()["keys"].as_array().unwrap().len();
        assert_eq!(published, 2);
    }
}
