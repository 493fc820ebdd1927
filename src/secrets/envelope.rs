//! Per-tenant envelope encryption of fields (sensitive process variables and form fields).
//!
//! Each tenant has a key-encryption key in the key store (a Vault transit key, or a ring sealed
//! by the local store's KEK). Fields are sealed with AES-256-GCM under a data key; data keys are
//! kept in the tenant's `data_keys` table only wrapped under the KEK, each naming the KEK version
//! that wraps it.
//!
//! Invariants:
//! - A sealed field is `fge1.<data key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`, bound (as AEAD
//!   associated data) to its tenant, its data key and the caller's field label: moved to another
//!   tenant or field, it does not open.
//! - Plain data keys exist only in memory, cached at most [`KEY_TTL`]; destroying the tenant's
//!   KEK (tenant deletion) makes every copy of its data keys, backups included, useless.
//! - Rotating the KEK adds a version; the data keys are then re-wrapped under it in the
//!   background, one compare-and-set update each, while every sealed field stays readable.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use entity::tenant::data_key;
use lru::LruCache;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _,
};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::authz::{Action, Resource};
use crate::crypto::random_bytes;
use crate::keystore::{KeyName, KeyStore, KeyStoreError, Purpose, wrapped_version};
use crate::tenancy::work::{TenantContext, WriteTx};
use crate::tenancy::{Access, Databases, Slug, TenancyError};

/// How long an unwrapped data key is kept in memory.
pub const KEY_TTL: Duration = Duration::from_secs(300);
/// How many unwrapped data keys are kept (over all tenants).
const CACHED_KEYS: usize = 1024;
const PREFIX: &str = "fge1";
/// What a caller not allowed to see a field is shown instead.
pub const MASK: &str = "********";

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not a sealed field.
    #[error("the value is not a sealed field")]
    Malformed,
    /// Its data key is gone or does not open, or the field was altered or moved.
    #[error("the sealed field cannot be opened")]
    Undecryptable,
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
}

impl From<sea_orm::DbErr> for EnvelopeError {
    fn from(e: sea_orm::DbErr) -> Self {
        EnvelopeError::Tenancy(e.into())
    }
}

/// A field as a caller may see it.
#[derive(Debug)]
pub enum Revealed {
    Plain(SecretString),
    /// The caller may not see it: show [`MASK`].
    Masked,
}

/// The tenant's KEK and how far its data keys are re-wrapped.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct KeyStatus {
    /// `local` or `vault`.
    pub backend: &'static str,
    /// The newest KEK version (0 before the first use).
    pub version: u32,
    /// Data keys of the tenant.
    pub data_keys: u64,
    /// Data keys wrapped under the newest version.
    pub data_keys_current: u64,
    /// Whether a re-wrap is running on this replica.
    pub rewrapping: bool,
}

struct CachedKey {
    key: Arc<LessSafeKey>,
    at: Instant,
}

pub struct Envelope {
    keystore: Arc<dyn KeyStore>,
    dbs: Arc<Databases>,
    keys: Mutex<LruCache<(String, Uuid), CachedKey>>,
    /// Tenants whose data keys are being re-wrapped here.
    rewraps: Mutex<HashSet<String>>,
}

fn kek(slug: &str) -> KeyName {
    KeyName::new(slug, Purpose::DataKek)
}

fn aad(slug: &str, key_id: Uuid, field: &str) -> String {
    format!("flowgate-field:v1:{slug}:{key_id}:{field}")
}

impl Envelope {
    pub fn new(keystore: Arc<dyn KeyStore>, dbs: Arc<Databases>) -> Self {
        Envelope {
            keystore,
            dbs,
            keys: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHED_KEYS).unwrap_or(NonZeroUsize::MIN),
            )),
            rewraps: Mutex::new(HashSet::new()),
        }
    }

    fn cache(&self) -> MutexGuard<'_, LruCache<(String, Uuid), CachedKey>> {
        // A cache: a panic elsewhere leaves it consistent.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running(&self) -> MutexGuard<'_, HashSet<String>> {
        self.rewraps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the tenant's unwrapped data keys (its KEK was destroyed or rotated elsewhere).
    pub fn forget_tenant(&self, slug: &str) {
        let mut cache = self.cache();
        let gone: Vec<_> = cache
            .iter()
            .filter(|((s, _), _)| s == slug)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            cache.pop(&key);
        }
    }

    /// Seals `plaintext` for the tenant of `work`, as the field `field` (a label the reader must
    /// name again), inside the change `tx`; makes the tenant's first data key if it has none.
    pub async fn seal(
        &self,
        work: &TenantContext,
        tx: &WriteTx,
        field: &str,
        plaintext: &[u8],
    ) -> Result<String, EnvelopeError> {
        let slug = work.slug().as_str();
        let newest = data_key::Entity::find()
            .order_by_desc(data_key::Column::Id)
            .one(tx.conn())
            .await?;
        let (id, key) = match newest {
            Some(row) => (row.id, self.data_key(slug, &row).await?),
            None => self.new_data_key(slug, tx).await?,
        };
        let nonce = random_bytes::<NONCE_LEN>().map_err(KeyStoreError::from)?;
        let mut buf = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(slug, id, field).as_bytes()),
            &mut buf,
        )
        .map_err(|_| KeyStoreError::Unexpected(anyhow::anyhow!("sealing a field failed")))?;
        Ok(format!(
            "{PREFIX}.{}.{}",
            id.simple(),
            URL_SAFE_NO_PAD.encode([nonce.as_slice(), &buf].concat())
        ))
    }

    /// Opens the field `field` sealed by [`Envelope::seal`] for the tenant `slug`.
    pub async fn open(
        &self,
        slug: &str,
        conn: &impl ConnectionTrait,
        field: &str,
        sealed: &str,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(PREFIX), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(EnvelopeError::Malformed);
        };
        let id = Uuid::try_parse(id).map_err(|_| EnvelopeError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| EnvelopeError::Malformed)?;
        if bytes.len() <= NONCE_LEN {
            return Err(EnvelopeError::Malformed);
        }
        let key = match self.cached(slug, id) {
            Some(key) => key,
            None => {
                let row = data_key::Entity::find_by_id(id)
                    .one(conn)
                    .await?
                    .ok_or(EnvelopeError::Undecryptable)?;
                self.data_key(slug, &row).await?
            }
        };
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| EnvelopeError::Malformed)?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let plain = key
            .open_in_place(nonce, Aad::from(aad(slug, id, field).as_bytes()), &mut buf)
            .map_err(|_| EnvelopeError::Undecryptable)?;
        Ok(Zeroizing::new(plain.to_vec()))
    }

    /// The field for the principal of `work`: in plain text when it may do `A` on `resource`,
    /// else masked (without touching any key).
    pub async fn reveal<A: Action>(
        &self,
        work: &TenantContext,
        resource: &Resource,
        field: &str,
        sealed: &str,
    ) -> Result<Revealed, EnvelopeError> {
        if !work.may::<A>(resource) {
            return Ok(Revealed::Masked);
        }
        let tx = work.read().await?;
        let plain = self.open(work.slug().as_str(), &tx, field, sealed).await?;
        tx.commit().await?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| EnvelopeError::Undecryptable)?;
        Ok(Revealed::Plain(SecretString::from(text)))
    }

    fn cached(&self, slug: &str, id: Uuid) -> Option<Arc<LessSafeKey>> {
        let mut cache = self.cache();
        let key = (slug.to_owned(), id);
        match cache.get(&key) {
            Some(entry) if entry.at.elapsed() < KEY_TTL => Some(Arc::clone(&entry.key)),
            Some(_) => {
                cache.pop(&key);
                None
            }
            None => None,
        }
    }

    /// The plain key of `row`, unwrapped by the key store (and cached).
    async fn data_key(
        &self,
        slug: &str,
        row: &data_key::Model,
    ) -> Result<Arc<LessSafeKey>, EnvelopeError> {
        if let Some(key) = self.cached(slug, row.id) {
            return Ok(key);
        }
        let plain = self
            .keystore
            .unwrap(&kek(slug), &row.wrapped)
            .await?
            .ok_or(EnvelopeError::Undecryptable)?;
        let key = Arc::new(aead_key(plain.expose_secret()).ok_or(EnvelopeError::Undecryptable)?);
        self.cache().put(
            (slug.to_owned(), row.id),
            CachedKey {
                key: Arc::clone(&key),
                at: Instant::now(),
            },
        );
        Ok(key)
    }

    async fn new_data_key(
        &self,
        slug: &str,
        tx: &WriteTx,
    ) -> Result<(Uuid, Arc<LessSafeKey>), EnvelopeError> {
        let plain = Zeroizing::new(random_bytes::<32>().map_err(KeyStoreError::from)?);
        let wrapped = self.keystore.wrap(&kek(slug), plain.as_slice()).await?;
        let row = data_key::ActiveModel {
            id: Set(Uuid::now_v7()),
            kek_version: Set(version_of(&wrapped)),
            wrapped: Set(wrapped),
            created_at: Set(Utc::now()),
        }
        .insert(tx.conn())
        .await?;
        let key = Arc::new(aead_key(plain.as_slice()).ok_or(EnvelopeError::Undecryptable)?);
        Ok((row.id, key))
    }

    /// The tenant's KEK version and how many data keys are wrapped under it.
    pub async fn status(&self, slug: &Slug) -> Result<KeyStatus, EnvelopeError> {
        let version = self
            .keystore
            .wrapping_version(&kek(slug.as_str()))
            .await?
            .unwrap_or(0);
        let tx = self.begin(slug, Access::Read).await?;
        let data_keys = data_key::Entity::find().count(&tx).await?;
        let data_keys_current = data_key::Entity::find()
            .filter(data_key::Column::KekVersion.eq(i64::from(version)))
            .count(&tx)
            .await?;
        tx.commit().await?;
        Ok(KeyStatus {
            backend: self.keystore.backend(),
            version,
            data_keys,
            data_keys_current,
            rewrapping: self.running().contains(slug.as_str()),
        })
    }

    /// Adds a version to the tenant's KEK; returns it. Data keys still need [`Self::rewrap`].
    pub async fn rotate(&self, slug: &Slug) -> Result<u32, EnvelopeError> {
        let version = self
            .keystore
            .rotate_wrapping_key(&kek(slug.as_str()))
            .await?;
        self.forget_tenant(slug.as_str());
        Ok(version)
    }

    /// Re-wraps every data key of the tenant that is not under the newest KEK version, telling
    /// `progress` (done, total) after each; returns how many were re-wrapped. One run per tenant
    /// at a time on this replica; concurrent runs elsewhere are harmless (compare-and-set).
    pub async fn rewrap(
        &self,
        slug: &Slug,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, EnvelopeError> {
        if !self.running().insert(slug.as_str().to_owned()) {
            return Ok(0);
        }
        let result = self.rewrap_all(slug, &mut progress).await;
        self.running().remove(slug.as_str());
        result
    }

    async fn rewrap_all(
        &self,
        slug: &Slug,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<u64, EnvelopeError> {
        let name = kek(slug.as_str());
        let Some(version) = self.keystore.wrapping_version(&name).await? else {
            return Ok(0);
        };
        let tx = self.begin(slug, Access::Read).await?;
        let stale = data_key::Entity::find()
            .filter(data_key::Column::KekVersion.ne(i64::from(version)))
            .all(&tx)
            .await?;
        tx.commit().await?;
        let total = stale.len() as u64;
        let mut done = 0;
        for row in stale {
            let Some(rewrapped) = self.keystore.rewrap(&name, &row.wrapped).await? else {
                tracing::warn!(tenant = %slug, data_key = %row.id, "a data key does not unwrap under the tenant's key; left as it is");
                continue;
            };
            let tx = self.begin(slug, Access::Write).await?;
            data_key::Entity::update_many()
                .col_expr(
                    data_key::Column::KekVersion,
                    sea_orm::sea_query::Expr::value(version_of(&rewrapped)),
                )
                .col_expr(
                    data_key::Column::Wrapped,
                    sea_orm::sea_query::Expr::value(rewrapped),
                )
                .filter(data_key::Column::Id.eq(row.id))
                .filter(data_key::Column::Wrapped.eq(row.wrapped))
                .exec(&tx)
                .await?;
            tx.commit().await?;
            done += 1;
            progress(done, total);
        }
        Ok(done)
    }

    /// The envelope's own table, outside any principal's work: its rows are wrapped keys that no
    /// API shows, changed only by the re-wrap, which the rotation's audit event covers.
    #[expect(
        clippy::disallowed_methods,
        reason = "the envelope's key table, outside any principal's work"
    )]
    async fn begin(&self, slug: &Slug, access: Access) -> Result<crate::tenancy::Tx, TenancyError> {
        self.dbs.begin(slug, access).await
    }
}

/// The KEK version a wrapped data key names (0 if it names none).
fn version_of(wrapped: &str) -> i32 {
    wrapped_version(wrapped)
        .and_then(|v| i32::try_from(v).ok())
        .unwrap_or(0)
}

fn aead_key(bytes: &[u8]) -> Option<LessSafeKey> {
    Some(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).ok()?))
}
