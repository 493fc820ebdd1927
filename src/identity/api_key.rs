//! API keys: `fgk_` followed by a 16-character lookup id and a 43-character secret.
//!
//! Only the lookup id (not secret) and an HMAC-SHA256 of the whole key under the tenant's pepper
//! are stored; the pepper lives in the key store, so a stolen database alone cannot confirm a
//! guessed key. Keys are shown once, at issue.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::tenant::api_key;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use super::records::RecordIndex;
use super::{AccountCredential, IdentityError, InvalidReason, Principal};
use crate::authz::actions::{ApiKeyCreate, ApiKeyRevoke};
use crate::crypto::{constant_time_eq, hmac_sha256_hex, random_token};
use crate::keystore::{KeyName, KeyStore, KeyStoreError, Purpose, SecretBytes};
use crate::tenancy::work::{Permit, WriteTx};
use crate::tenancy::{Access, Databases, Slug, TenantCache};

pub const PREFIX: &str = "fgk_";
const LOOKUP_LEN: usize = 16;
const SECRET_LEN: usize = 43;
/// Tenants whose pepper is kept in memory.
const CACHED_PEPPERS: usize = 10_000;
/// Tenants whose recently used key records are kept in memory, and keys per tenant.
const CACHED_KEY_TENANTS: usize = 1_000;
const CACHED_KEYS_PER_TENANT: usize = 1_024;
/// Longest a cached key record is trusted without a reload. Revocation drops the tenant's
/// records at once (and on other replicas through the invalidation channel); this only bounds
/// the damage of a lost notification.
const KEY_RECORD_TTL: Duration = Duration::from_secs(60);

/// A freshly issued key; `key` is shown to the caller once and never stored.
pub struct IssuedKey {
    pub record: api_key::Model,
    pub key: SecretString,
}

/// Issues and checks API keys. Checking a recently used key needs no database: its record and
/// the tenant's pepper are cached, and the check is one HMAC and a constant-time comparison.
pub struct ApiKeys {
    keystore: Arc<dyn KeyStore>,
    peppers: TenantCache<Arc<SecretBytes>>,
    records: RecordIndex<api_key::Model>,
}

impl ApiKeys {
    pub fn new(keystore: Arc<dyn KeyStore>) -> Self {
        let peppers = NonZeroUsize::new(CACHED_PEPPERS).unwrap_or(NonZeroUsize::MIN);
        ApiKeys {
            keystore,
            peppers: TenantCache::new(peppers),
            records: RecordIndex::new(
                "api_keys",
                CACHED_KEY_TENANTS,
                CACHED_KEYS_PER_TENANT,
                Some(KEY_RECORD_TTL),
            ),
        }
    }

    /// Creates a key for `service_account_id` inside the caller's transaction.
    pub async fn issue(
        &self,
        tx: &WriteTx,
        _: &impl Permit<ApiKeyCreate>,
        slug: &Slug,
        name: &str,
        service_account_id: Uuid,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<IssuedKey, IdentityError> {
        let lookup = random_token::<12>()?;
        let key = SecretString::from(format!("{PREFIX}{lookup}{}", random_token::<32>()?));
        let record = api_key::ActiveModel {
            id: Set(Uuid::new_v4()),
            name: Set(name.to_owned()),
            service_account_id: Set(service_account_id),
            secret_hash: Set(self.hash(slug, &key).await?),
            lookup: Set(lookup),
            created_at: Set(Utc::now()),
            expires_at: Set(expires_at),
            revoked_at: Set(None),
        }
        .insert(tx.conn())
        .await?;
        Ok(IssuedKey { record, key })
    }

    /// The principal that `token` authenticates in tenant `slug`.
    pub async fn authenticate(
        &self,
        dbs: &Databases,
        slug: &Slug,
        token: &str,
    ) -> Result<Principal, IdentityError> {
        let invalid = IdentityError::InvalidCredentials;
        let lookup = parse_lookup(token).ok_or(invalid(InvalidReason::Malformed))?;
        let record = self
            .record(dbs, slug, lookup)
            .await?
            .ok_or(invalid(InvalidReason::UnknownKey))?;
        let presented = self.hash(slug, &SecretString::from(token)).await?;
        if !constant_time_eq(presented.as_bytes(), record.secret_hash.as_bytes()) {
            return Err(invalid(InvalidReason::WrongSecret));
        }
        if record.revoked_at.is_some() {
            return Err(invalid(InvalidReason::Revoked));
        }
        if record.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(invalid(InvalidReason::Expired));
        }
        Ok(Principal::ServiceAccount {
            id: record.service_account_id,
            credential: AccountCredential::ApiKey(record.id),
        })
    }

    /// The record of the key with `lookup`, from the cache or the database.
    #[expect(
        clippy::disallowed_methods,
        reason = "authentication reads key records before any principal exists"
    )]
    async fn record(
        &self,
        dbs: &Databases,
        slug: &Slug,
        lookup: &str,
    ) -> Result<Option<api_key::Model>, IdentityError> {
        self.records
            .get_or_load(slug.as_str(), lookup, || async {
                let tx = dbs.begin(slug, Access::Read).await?;
                let record = api_key::Entity::find()
                    .filter(api_key::Column::Lookup.eq(lookup))
                    .one(&tx)
                    .await?;
                tx.commit().await?;
                Ok(record)
            })
            .await
    }

    /// Forgets everything cached about `slug`: key records (after a revocation) and its pepper
    /// (after its deletion, perhaps on another replica).
    pub fn forget_tenant(&self, slug: &str) {
        self.records.forget(slug);
        self.peppers.invalidate(slug);
    }

    /// Forgets every cached key record.
    pub fn forget_all_keys(&self) {
        self.records.clear();
    }

    /// The keyed hash (HMAC-SHA256 under the tenant's pepper) of `key`: how API keys and client
    /// secrets are stored.
    pub(crate) async fn hash(
        &self,
        slug: &Slug,
        key: &SecretString,
    ) -> Result<String, KeyStoreError> {
        let pepper = self
            .peppers
            .get_or_try_load(slug.as_str(), || async {
                let name = KeyName::new(slug.as_str(), Purpose::ApiKeyPepper);
                Ok::<_, KeyStoreError>(Arc::new(self.keystore.secret(&name).await?))
            })
            .await?;
        Ok(hmac_sha256_hex(
            pepper.expose_secret(),
            key.expose_secret().as_bytes(),
        ))
    }
}

/// Revokes the key `id` (revoking a revoked key changes nothing); `None` when the tenant has no
/// such key. The key stops working once the tenant's cached records are dropped, which the
/// change's commit does.
pub async fn revoke(
    tx: &WriteTx,
    _: &impl Permit<ApiKeyRevoke>,
    id: Uuid,
) -> Result<Option<api_key::Model>, sea_orm::DbErr> {
    let Some(key) = api_key::Entity::find_by_id(id).one(tx.conn()).await? else {
        return Ok(None);
    };
    if key.revoked_at.is_some() {
        return Ok(Some(key));
    }
    let mut key: api_key::ActiveModel = key.into();
    key.revoked_at = Set(Some(Utc::now()));
    key.update(tx.conn()).await.map(Some)
}

/// The lookup part of a well-formed key, or `None`.
fn parse_lookup(token: &str) -> Option<&str> {
    let body = token.strip_prefix(PREFIX)?;
    let well_formed = body.len() == LOOKUP_LEN + SECRET_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| &body[..LOOKUP_LEN])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_well_formed_keys() {
        let key = format!(
            "{PREFIX}{}{}",
            "a".repeat(LOOKUP_LEN),
            "b".repeat(SECRET_LEN)
        );
        assert_eq!(parse_lookup(&key), Some("a".repeat(LOOKUP_LEN).as_str()));
        assert_eq!(parse_lookup(&key[1..]), None);
        assert_eq!(parse_lookup(&format!("{key}c")), None);
        assert_eq!(parse_lookup(&key.replace('b', "é")), None);
        assert_eq!(parse_lookup("fgk_"), None);
    }

    #[test]
    fn generated_tokens_have_the_documented_lengths() {
        assert_eq!(random_token::<12>().unwrap().len(), LOOKUP_LEN);
        assert_eq!(random_token::<32>().unwrap().len(), SECRET_LEN);
    }
}
