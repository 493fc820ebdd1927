//! The key store: where tenant keys live, behind one trait with two backends.
//!
//! Invariants:
//! - Key material never leaves this module except as [`SecretBytes`], whose `Debug` is redacted,
//!   or as signatures. Nothing here logs key material.
//! - [`KeyStore::secret`] is create-once: concurrent first calls for one name agree on one value
//!   (the local store links files without replacing, Vault uses check-and-set), so a keyed hash
//!   written by one replica verifies on every other.
//! - [`KeyStore::destroy_tenant`] removes every key and record of the tenant; it is idempotent.

mod local;
mod traced;
mod vault;
mod vault_session;

use std::sync::Arc;

use secrecy::SecretSlice;

pub use local::LocalKeyStore;
pub use vault::VaultKeyStore;

use crate::config::{KeyStoreSettings, Settings};

/// Secret bytes that cannot be printed.
pub type SecretBytes = SecretSlice<u8>;

/// What a tenant key is for; each purpose is one key per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// The HMAC key under which the tenant's API keys are hashed.
    ApiKeyPepper,
    /// The Ed25519 key that signs the tenant's audit checkpoints.
    AuditSigning,
    /// Not a key: the newest signed audit checkpoint, kept where the database cannot rewrite it.
    AuditAnchor,
    /// The seed of the Ed25519 key that signs the tenant's access tokens (until the first
    /// rotation).
    TokenSigning,
    /// Not a key: the ring of the tenant's token-signing keys, once rotated.
    TokenKeyring,
    /// Records, one per identity provider (the name's item): the client secret Flowgate
    /// presents to the tenant's OIDC provider.
    IdpClientSecret,
    /// Not a key: the tenant's RSA key pair (PKCS#8) that clients encrypt request payloads to
    /// (`RSA-OAEP-256`, published in the tenant's JWKS with `use: enc`).
    PayloadEncryption,
    /// Records, one per API key or OAuth client (the name's item): the keys that client's
    /// encrypted payloads use (its shared `dir` key, its registered public key).
    PayloadClientKey,
    /// Records, one per version of a tenant secret (the name's item): the secret's value.
    SecretValue,
    /// The tenant's key-encryption key, under which its data keys are wrapped (a transit key in
    /// Vault; a ring of versions sealed by the local store's KEK otherwise).
    DataKek,
}

impl Purpose {
    /// The purposes of one key per tenant.
    pub const ALL: [Purpose; 7] = [
        Purpose::ApiKeyPepper,
        Purpose::AuditSigning,
        Purpose::AuditAnchor,
        Purpose::TokenSigning,
        Purpose::TokenKeyring,
        Purpose::PayloadEncryption,
        Purpose::DataKek,
    ];

    /// The purposes of records kept per item (several per tenant).
    pub const PER_ITEM: [Purpose; 3] = [
        Purpose::IdpClientSecret,
        Purpose::PayloadClientKey,
        Purpose::SecretValue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::ApiKeyPepper => "api-key-pepper",
            Purpose::AuditSigning => "audit-signing",
            Purpose::AuditAnchor => "audit-anchor",
            Purpose::TokenSigning => "token-signing",
            Purpose::TokenKeyring => "token-keyring",
            Purpose::IdpClientSecret => "idp-client-secret",
            Purpose::PayloadEncryption => "payload-encryption",
            Purpose::PayloadClientKey => "payload-client-key",
            Purpose::SecretValue => "secret-value",
            Purpose::DataKek => "data-kek",
        }
    }
}

/// The name of one tenant key or record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyName {
    pub tenant: String,
    pub purpose: Purpose,
    /// Which one of several records of a per-item purpose (an identity provider's id).
    pub item: Option<String>,
}

impl KeyName {
    pub fn new(tenant: &str, purpose: Purpose) -> Self {
        KeyName {
            tenant: tenant.to_owned(),
            purpose,
            item: None,
        }
    }

    /// The record `item` of a per-item purpose; `item` is an id (letters, digits, `-`).
    pub fn item(tenant: &str, purpose: Purpose, item: &uuid::Uuid) -> Self {
        KeyName {
            tenant: tenant.to_owned(),
            purpose,
            item: Some(item.to_string()),
        }
    }

    /// `tenants/<slug>/<purpose>[/<item>]`: a stable, unambiguous name (slugs and items
    /// contain no `/`).
    pub fn path(&self) -> String {
        match &self.item {
            None => format!("tenants/{}/{}", self.tenant, self.purpose.as_str()),
            Some(item) => format!("tenants/{}/{}/{item}", self.tenant, self.purpose.as_str()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The backend cannot be reached or is sealed; callers answer 503.
    #[error("the key store is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A place that keeps tenant keys. Implemented by the local store and by Vault/OpenBao.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync {
    /// `local` or `vault`, for logs and the readiness report.
    fn backend(&self) -> &'static str;

    /// Succeeds when the backend can serve requests now.
    async fn check(&self) -> Result<(), KeyStoreError>;

    /// The 32-byte secret called `name`, created on first use.
    async fn secret(&self, name: &KeyName) -> Result<SecretBytes, KeyStoreError>;

    /// Signs `message` with the signing key called `name` (created on first use); the result is
    /// self-describing text that [`KeyStore::verify`] accepts.
    async fn sign(&self, name: &KeyName, message: &[u8]) -> Result<String, KeyStoreError>;

    /// Whether `signature` is a valid signature of `message` by the key called `name`.
    async fn verify(
        &self,
        name: &KeyName,
        message: &[u8],
        signature: &str,
    ) -> Result<bool, KeyStoreError>;

    /// Keeps `value` under `name`, replacing what was there: a small record that must live
    /// outside the database, such as the newest audit checkpoint.
    async fn put_record(&self, name: &KeyName, value: &[u8]) -> Result<(), KeyStoreError>;

    /// Keeps `value` under `name` unless a record is there already, and returns the record kept:
    /// concurrent creators (on any replica) all get the first one's value.
    async fn create_record(&self, name: &KeyName, value: &[u8]) -> Result<Vec<u8>, KeyStoreError>;

    /// The record kept under `name`, if any.
    async fn record(&self, name: &KeyName) -> Result<Option<Vec<u8>>, KeyStoreError>;

    /// Destroys the record kept under `name`; destroying a missing record changes nothing.
    async fn delete_record(&self, name: &KeyName) -> Result<(), KeyStoreError>;

    /// Wraps `plaintext` (a data key) under the newest version of the key-encryption key `name`
    /// (created on first use). The result names the version: `<backend>:v<N>:<ciphertext>`.
    async fn wrap(&self, name: &KeyName, plaintext: &[u8]) -> Result<String, KeyStoreError>;

    /// Unwraps what [`KeyStore::wrap`] made under any version of `name`; `None` when it does not
    /// open here (another key, a tampered text, a destroyed key). Never creates a key.
    async fn unwrap(
        &self,
        name: &KeyName,
        wrapped: &str,
    ) -> Result<Option<SecretBytes>, KeyStoreError>;

    /// Adds a version to the key-encryption key `name` (created at version 1 if absent) and
    /// returns the newest version; earlier versions keep unwrapping.
    async fn rotate_wrapping_key(&self, name: &KeyName) -> Result<u32, KeyStoreError>;

    /// The newest version of the key-encryption key `name`, if it exists.
    async fn wrapping_version(&self, name: &KeyName) -> Result<Option<u32>, KeyStoreError>;

    /// `wrapped` wrapped again under the newest version of `name`, without the plaintext leaving
    /// the backend (Vault) or this call (local); `None` when it does not open.
    async fn rewrap(&self, name: &KeyName, wrapped: &str) -> Result<Option<String>, KeyStoreError>;

    /// Forgets what is cached about the keys of `slug` (another replica may have destroyed
    /// them); the next use asks the backend again.
    fn forget(&self, _slug: &str) {}

    /// Destroys every key of the tenant `slug`.
    async fn destroy_tenant(&self, slug: &str) -> Result<(), KeyStoreError>;
}

/// The version of the key-encryption key that `wrapped` (a [`KeyStore::wrap`] result) was
/// wrapped under.
pub fn wrapped_version(wrapped: &str) -> Option<u32> {
    let mut parts = wrapped.splitn(3, ':');
    let (_backend, version, _rest) = (parts.next()?, parts.next()?, parts.next()?);
    version.strip_prefix('v')?.parse().ok()
}

/// Opens the key store the settings name; its calls are child spans of the requests that make
/// them.
pub async fn open(settings: &Settings) -> anyhow::Result<Arc<dyn KeyStore>> {
    let store: Arc<dyn KeyStore> = match &settings.keystore {
        KeyStoreSettings::Local { kek_file } => Arc::new(LocalKeyStore::open(
            &settings.data_dir.join("keystore"),
            kek_file.as_deref(),
        )?),
        KeyStoreSettings::Vault {
            addr,
            auth,
            kv_mount,
            transit_mount,
        } => Arc::new(VaultKeyStore::connect(addr, auth.clone(), kv_mount, transit_mount).await?),
    };
    Ok(Arc::new(traced::Traced::new(store)))
}
