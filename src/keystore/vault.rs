//! HashiCorp Vault / OpenBao backend: secrets in KV v2, signing keys in transit.
//!
//! Secrets live at `<kv mount>/flowgate/tenants/<slug>/<purpose>`; they are created with
//! check-and-set 0 so that two replicas creating the same secret agree. Records (the audit
//! anchor) live beside them and are replaced in place. Signing keys are transit
//! keys named `flowgate-t-<slug>-<purpose>` and never leave Vault.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use vaultrs::api::kv2::requests::SetSecretRequestOptions;
use vaultrs::api::transit::KeyType;
use vaultrs::api::transit::requests::{
    CreateKeyRequest, UpdateKeyConfigurationRequest, VerifySignedDataRequest,
};
use vaultrs::api::transit::responses::ReadKeyData;
use vaultrs::client::VaultClient;
use vaultrs::error::ClientError;
use vaultrs::{kv2, sys, token, transit};

use super::vault_session::Session;
use super::{KeyName, KeyStore, KeyStoreError, Purpose, SecretBytes};
use crate::config::VaultAuth;
use crate::crypto::random_bytes;

pub struct VaultKeyStore {
    session: Arc<Session>,
    kv_mount: String,
    transit_mount: String,
    /// Transit keys known to exist, so that signing does not re-create them each time.
    signing_keys: Mutex<HashSet<String>>,
}

#[derive(Serialize, Deserialize)]
struct StoredSecret {
    /// Base64 of the secret bytes.
    value: String,
}

impl VaultKeyStore {
    /// Connects (logging in when `auth` is AppRole) and makes sure the transit engine is
    /// mounted (when the token may do so); the token is kept fresh in the background.
    pub async fn connect(
        addr: &str,
        auth: VaultAuth,
        kv_mount: &str,
        transit_mount: &str,
    ) -> anyhow::Result<Self> {
        let store = VaultKeyStore {
            session: Session::open(addr, auth).await?,
            kv_mount: kv_mount.to_owned(),
            transit_mount: transit_mount.to_owned(),
            signing_keys: Mutex::new(HashSet::new()),
        };
        store.check().await?;
        store.ensure_transit_mount().await;
        Ok(store)
    }

    /// The client with the session's newest token.
    fn client(&self) -> Arc<VaultClient> {
        self.session.client()
    }

    async fn ensure_transit_mount(&self) {
        let mounted = sys::mount::list(&*self.client())
            .await
            .map(|mounts| mounts.contains_key(&format!("{}/", self.transit_mount)));
        if let Ok(false) = mounted
            && let Err(e) =
                sys::mount::enable(&*self.client(), &self.transit_mount, "transit", None).await
        {
            tracing::warn!(error = %e, mount = %self.transit_mount, "could not mount the transit engine; signing will fail until it is mounted");
        }
    }

    fn kv_path(name: &KeyName) -> String {
        format!("flowgate/{}", name.path())
    }

    fn transit_key(name: &KeyName) -> String {
        format!("flowgate-t-{}-{}", name.tenant, name.purpose.as_str())
    }

    async fn read_secret(&self, name: &KeyName) -> Result<Option<SecretBytes>, KeyStoreError> {
        match kv2::read::<StoredSecret>(&*self.client(), &self.kv_mount, &Self::kv_path(name)).await
        {
            Ok(stored) => {
                let bytes = STANDARD
                    .decode(stored.value)
                    .map_err(|_| anyhow::anyhow!("secret {} is not base64", name.path()))?;
                Ok(Some(SecretBytes::from(bytes)))
            }
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(map_error(e)),
        }
    }

    /// Makes sure the transit key `name` exists with the type `kind` (Ed25519 for signing,
    /// AES-256-GCM for wrapping); returns its transit name.
    async fn ensure_transit_key(
        &self,
        name: &KeyName,
        kind: KeyType,
    ) -> Result<String, KeyStoreError> {
        let key = Self::transit_key(name);
        if !self.known_keys().contains(&key) {
            // Creating an existing transit key changes nothing, so racing creators are harmless.
            transit::key::create(
                &*self.client(),
                &self.transit_mount,
                &key,
                Some(CreateKeyRequest::builder().key_type(kind)),
            )
            .await
            .map_err(map_error)?;
            self.known_keys().insert(key.clone());
        }
        Ok(key)
    }

    fn known_keys(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A plain set, changed one call at a time: a poisoned lock still holds a consistent one.
        self.signing_keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl KeyStore for VaultKeyStore {
    fn backend(&self) -> &'static str {
        "vault"
    }

    /// Looks up our own token: Vault answers, is unsealed, and accepts the token.
    async fn check(&self) -> Result<(), KeyStoreError> {
        match token::lookup_self(&*self.client()).await {
            Ok(_) => Ok(()),
            Err(ClientError::APIError { code: 403, .. }) => {
                Err(KeyStoreError::Unavailable("Vault refused the token".into()))
            }
            Err(e) => Err(map_error(e)),
        }
    }

    async fn secret(&self, name: &KeyName) -> Result<SecretBytes, KeyStoreError> {
        if let Some(secret) = self.read_secret(name).await? {
            return Ok(secret);
        }
        let kept = self.create_record(name, &random_bytes::<32>()?).await?;
        Ok(SecretBytes::from(kept))
    }

    async fn sign(&self, name: &KeyName, message: &[u8]) -> Result<String, KeyStoreError> {
        let key = self.ensure_transit_key(name, KeyType::Ed25519).await?;
        let signed = transit::data::sign(
            &*self.client(),
            &self.transit_mount,
            &key,
            &STANDARD.encode(message),
            None,
        )
        .await
        .map_err(map_error)?;
        Ok(signed.signature)
    }

    async fn verify(
        &self,
        name: &KeyName,
        message: &[u8],
        signature: &str,
    ) -> Result<bool, KeyStoreError> {
        let key = self.ensure_transit_key(name, KeyType::Ed25519).await?;
        let verified = transit::data::verify(
            &*self.client(),
            &self.transit_mount,
            &key,
            &STANDARD.encode(message),
            Some(VerifySignedDataRequest::builder().signature(signature)),
        )
        .await;
        match verified {
            Ok(response) => Ok(response.valid),
            // Vault answers 400 to a signature it cannot parse: that is a failed verification.
            Err(ClientError::APIError { code: 400, .. }) => Ok(false),
            Err(e) => Err(map_error(e)),
        }
    }

    async fn put_record(&self, name: &KeyName, value: &[u8]) -> Result<(), KeyStoreError> {
        let stored = StoredSecret {
            value: STANDARD.encode(value),
        };
        kv2::set(
            &*self.client(),
            &self.kv_mount,
            &Self::kv_path(name),
            &stored,
        )
        .await
        .map_err(map_error)?;
        Ok(())
    }

    async fn create_record(&self, name: &KeyName, value: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
        let fresh = StoredSecret {
            value: STANDARD.encode(value),
        };
        let created = kv2::set_with_options(
            &*self.client(),
            &self.kv_mount,
            &Self::kv_path(name),
            &fresh,
            SetSecretRequestOptions { cas: 0 },
        )
        .await;
        match created {
            // Either ours was written or another writer's won the check-and-set: read the winner.
            Ok(_) | Err(ClientError::APIError { code: 400, .. }) => {}
            Err(e) => return Err(map_error(e)),
        }
        let kept = self.read_secret(name).await?.ok_or_else(|| {
            KeyStoreError::Unexpected(anyhow::anyhow!(
                "record {} vanished after creation",
                name.path()
            ))
        })?;
        Ok(kept.expose_secret().to_vec())
    }

    async fn wrap(&self, name: &KeyName, plaintext: &[u8]) -> Result<String, KeyStoreError> {
        let key = self.ensure_transit_key(name, KeyType::Aes256Gcm96).await?;
        let wrapped = transit::data::encrypt(
            &*self.client(),
            &self.transit_mount,
            &key,
            &STANDARD.encode(plaintext),
            None,
        )
        .await
        .map_err(map_error)?;
        Ok(wrapped.ciphertext)
    }

    async fn unwrap(
        &self,
        name: &KeyName,
        wrapped: &str,
    ) -> Result<Option<SecretBytes>, KeyStoreError> {
        let key = Self::transit_key(name);
        match transit::data::decrypt(&*self.client(), &self.transit_mount, &key, wrapped, None)
            .await
        {
            Ok(plain) => Ok(STANDARD.decode(plain.plaintext).ok().map(SecretBytes::from)),
            // Vault answers 400 to a text that does not open and to a key that is gone.
            Err(ClientError::APIError {
                code: 400 | 404, ..
            }) => Ok(None),
            Err(e) => Err(map_error(e)),
        }
    }

    async fn rotate_wrapping_key(&self, name: &KeyName) -> Result<u32, KeyStoreError> {
        let key = self.ensure_transit_key(name, KeyType::Aes256Gcm96).await?;
        transit::key::rotate(&*self.client(), &self.transit_mount, &key)
            .await
            .map_err(map_error)?;
        self.wrapping_version(name).await?.ok_or_else(|| {
            KeyStoreError::Unexpected(anyhow::anyhow!("wrapping key {key} vanished"))
        })
    }

    async fn wrapping_version(&self, name: &KeyName) -> Result<Option<u32>, KeyStoreError> {
        let key = Self::transit_key(name);
        match transit::key::read(&*self.client(), &self.transit_mount, &key).await {
            Ok(read) => Ok(match read.keys {
                ReadKeyData::Symmetric(versions) => {
                    versions.keys().filter_map(|v| v.parse().ok()).max()
                }
                ReadKeyData::Asymmetric(_) => None,
            }),
            Err(ClientError::APIError { code: 404, .. }) => Ok(None),
            Err(e) => Err(map_error(e)),
        }
    }

    async fn rewrap(&self, name: &KeyName, wrapped: &str) -> Result<Option<String>, KeyStoreError> {
        let key = Self::transit_key(name);
        match transit::data::rewrap(&*self.client(), &self.transit_mount, &key, wrapped, None).await
        {
            Ok(rewrapped) => Ok(Some(rewrapped.ciphertext)),
            Err(ClientError::APIError {
                code: 400 | 404, ..
            }) => Ok(None),
            Err(e) => Err(map_error(e)),
        }
    }

    async fn record(&self, name: &KeyName) -> Result<Option<Vec<u8>>, KeyStoreError> {
        Ok(self
            .read_secret(name)
            .await?
            .map(|bytes| bytes.expose_secret().to_vec()))
    }

    fn forget(&self, slug: &str) {
        let prefix = format!("flowgate-t-{slug}-");
        self.known_keys().retain(|key| !key.starts_with(&prefix));
    }

    async fn delete_record(&self, name: &KeyName) -> Result<(), KeyStoreError> {
        match kv2::delete_metadata(&*self.client(), &self.kv_mount, &Self::kv_path(name)).await {
            Ok(()) | Err(ClientError::APIError { code: 404, .. }) => Ok(()),
            Err(e) => Err(map_error(e)),
        }
    }

    async fn destroy_tenant(&self, slug: &str) -> Result<(), KeyStoreError> {
        for purpose in Purpose::PER_ITEM {
            let folder = Self::kv_path(&KeyName::new(slug, purpose));
            let items = match kv2::list(&*self.client(), &self.kv_mount, &folder).await {
                Ok(items) => items,
                Err(ClientError::APIError { code: 404, .. }) => Vec::new(),
                Err(e) => return Err(map_error(e)),
            };
            for item in items {
                let path = format!("{folder}/{}", item.trim_end_matches('/'));
                match kv2::delete_metadata(&*self.client(), &self.kv_mount, &path).await {
                    Ok(()) | Err(ClientError::APIError { code: 404, .. }) => {}
                    Err(e) => return Err(map_error(e)),
                }
            }
        }
        for purpose in Purpose::ALL {
            let name = KeyName::new(slug, purpose);
            match kv2::delete_metadata(&*self.client(), &self.kv_mount, &Self::kv_path(&name)).await
            {
                Ok(()) | Err(ClientError::APIError { code: 404, .. }) => {}
                Err(e) => return Err(map_error(e)),
            }
            let key = Self::transit_key(&name);
            let allow = transit::key::update(
                &*self.client(),
                &self.transit_mount,
                &key,
                Some(UpdateKeyConfigurationRequest::builder().deletion_allowed(true)),
            )
            .await;
            match allow {
                Ok(()) => transit::key::delete(&*self.client(), &self.transit_mount, &key)
                    .await
                    .map_err(map_error)?,
                Err(ClientError::APIError {
                    code: 400 | 404, ..
                }) => {}
                Err(e) => return Err(map_error(e)),
            }
            self.known_keys().remove(&key);
        }
        Ok(())
    }
}

impl std::fmt::Debug for VaultKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKeyStore")
            .field("kv_mount", &self.kv_mount)
            .field("transit_mount", &self.transit_mount)
            .finish_non_exhaustive()
    }
}

/// Transport failures and server-side errors mean "unavailable"; the rest is unexpected. The
/// Vault error text never contains the token, so it may go into the log.
fn map_error(e: ClientError) -> KeyStoreError {
    match e {
        ClientError::APIError { code, .. } if code >= 500 || code == 429 => {
            KeyStoreError::Unavailable(format!("Vault answered {code}"))
        }
        // Our token was refused (expired before its renewal, or revoked): retry later.
        ClientError::APIError { code: 403, .. } => {
            KeyStoreError::Unavailable("Vault refused the token".into())
        }
        ClientError::RestClientError { .. } => KeyStoreError::Unavailable(e.to_string()),
        other => KeyStoreError::Unexpected(anyhow::Error::new(other)),
    }
}
