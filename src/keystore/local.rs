//! The local key store: one sealed file per key under `<data>/keystore/tenants/<slug>/`.
//!
//! Each file is `FGK1 || nonce || AES-256-GCM(ciphertext || tag)` under a key-encryption key:
//! the file `FLOWGATE_KEK_FILE` names, or else one generated at `<data>/keystore/kek` (mode
//! 0600). The key's name is the additional authenticated data, so a file copied to another name
//! or tenant does not open.
//!
//! What protects what: the KEK protects every tenant key at rest. When it lives in the data
//! directory (the embedded default), a copy of that directory is a copy of every key; keep it
//! elsewhere (`FLOWGATE_KEK_FILE`, a mounted secret) and a stolen data directory or backup opens
//! nothing. Plaintext key bytes are wiped from memory when dropped.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::{KeyName, KeyStore, KeyStoreError, SecretBytes};
use crate::crypto::random_bytes;
use crate::files::{create_private_dir, replace_private, write_new_private};

const MAGIC: &[u8; 4] = b"FGK1";
const SIGNATURE_PREFIX: &str = "local:v1:";

pub struct LocalKeyStore {
    dir: PathBuf,
    kek: LessSafeKey,
    /// Serializes rotations of wrapping-key rings (one process owns a local store).
    rotations: tokio::sync::Mutex<()>,
}

/// Prefix of the texts [`KeyStore::wrap`] makes here.
const WRAP_PREFIX: &str = "local";
/// Bytes of one version in a wrapping-key ring (the ring is their concatenation, version 1
/// first).
const RING_KEY_LEN: usize = 32;

impl LocalKeyStore {
    /// Opens the store in `dir`, creating the directory when absent. The key-encryption key is
    /// read from `kek_file` (32 bytes, raw, hex or base64), or else from `<dir>/kek`, generated
    /// on first use.
    pub fn open(dir: &Path, kek_file: Option<&Path>) -> anyhow::Result<Self> {
        create_private_dir(dir)?;
        let (kek_path, kek) = match kek_file {
            Some(path) => (path.to_owned(), read_kek(path)?),
            None => {
                let path = dir.join("kek");
                tracing::warn!(kek = %path.display(), "the local key store's key-encryption key is kept beside the keys it protects; set FLOWGATE_KEK_FILE to keep it elsewhere");
                (path.clone(), generated_kek(&path)?)
            }
        };
        let key = UnboundKey::new(&AES_256_GCM, &kek)
            .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", kek_path.display()))?;
        Ok(LocalKeyStore {
            dir: dir.to_owned(),
            kek: LessSafeKey::new(key),
            rotations: tokio::sync::Mutex::new(()),
        })
    }

    fn file(&self, name: &KeyName) -> PathBuf {
        self.dir.join(format!("{}.sealed", name.path()))
    }

    fn seal(&self, name: &KeyName, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        let mut buf = plaintext.to_vec();
        self.kek
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.path().as_bytes()),
                &mut buf,
            )
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        Ok([MAGIC.as_slice(), &nonce, &buf].concat())
    }

    fn open_sealed(&self, name: &KeyName, sealed: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let body = sealed
            .strip_prefix(MAGIC.as_slice())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or_else(|| anyhow::anyhow!("{} is not a sealed key file", name.path()))?;
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| anyhow::anyhow!("bad nonce in {}", name.path()))?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let plain = self
            .kek
            .open_in_place(nonce, Aad::from(name.path().as_bytes()), &mut buf)
            .map_err(|_| anyhow::anyhow!("{} does not open under this store's key", name.path()))?;
        Ok(Zeroizing::new(plain.to_vec()))
    }

    /// Reads the key `name`, or creates it with `generate` if no file exists. When two callers
    /// race, the first link wins and both read the winner's file.
    fn get_or_create(
        &self,
        name: &KeyName,
        generate: impl FnOnce() -> anyhow::Result<Zeroizing<Vec<u8>>>,
    ) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let path = self.file(name);
        match std::fs::read(&path) {
            Ok(sealed) => return self.open_sealed(name, &sealed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        let sealed = self.seal(name, &generate()?)?;
        match write_new_private(&path, &sealed) {
            Ok(()) => Ok(()),
            Err(e) if is_already_exists(&e) => Ok(()),
            Err(e) => Err(e),
        }?;
        self.open_sealed(name, &std::fs::read(&path)?)
    }

    /// The versions of the wrapping key `name`, version 1 first; `None` when it does not exist.
    fn ring(&self, name: &KeyName) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
        match std::fs::read(self.file(name)) {
            Ok(sealed) => Ok(Some(self.open_sealed(name, &sealed)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::from(e).context("reading a wrapping key")),
        }
    }

    fn ring_or_create(&self, name: &KeyName) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        self.get_or_create(name, || {
            Ok(Zeroizing::new(random_bytes::<RING_KEY_LEN>()?.to_vec()))
        })
    }

    fn seal_with(ring: &[u8], name: &KeyName, plaintext: &[u8]) -> anyhow::Result<String> {
        let version = ring.len() / RING_KEY_LEN;
        let key = ring_key(ring, version).context("empty wrapping key ring")?;
        let nonce = random_bytes::<NONCE_LEN>()?;
        let mut buf = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(wrap_aad(name, version).as_bytes()),
            &mut buf,
        )
        .map_err(|_| anyhow::anyhow!("wrapping failed"))?;
        Ok(format!(
            "{WRAP_PREFIX}:v{version}:{}",
            STANDARD.encode([nonce.as_slice(), &buf].concat())
        ))
    }

    fn open_with(ring: &[u8], name: &KeyName, wrapped: &str) -> Option<Zeroizing<Vec<u8>>> {
        let version = super::wrapped_version(wrapped)?;
        let body = wrapped.strip_prefix(&format!("{WRAP_PREFIX}:v{version}:"))?;
        let key = ring_key(ring, usize::try_from(version).ok()?)?;
        let bytes = STANDARD.decode(body).ok()?;
        if bytes.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let plain = key
            .open_in_place(
                nonce,
                Aad::from(wrap_aad(name, version as usize).as_bytes()),
                &mut buf,
            )
            .ok()?;
        Some(Zeroizing::new(plain.to_vec()))
    }

    fn signing_key(&self, name: &KeyName) -> anyhow::Result<Ed25519KeyPair> {
        let pkcs8 = self.get_or_create(name, || {
            Ok(Zeroizing::new(
                Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| anyhow::anyhow!("Ed25519 key generation failed"))?
                    .as_ref()
                    .to_vec(),
            ))
        })?;
        Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| anyhow::anyhow!("bad Ed25519 key"))
    }
}

#[async_trait::async_trait]
impl KeyStore for LocalKeyStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn check(&self) -> Result<(), KeyStoreError> {
        if self.dir.is_dir() {
            Ok(())
        } else {
            Err(KeyStoreError::Unavailable(
                "the key store directory is gone".into(),
            ))
        }
    }

    async fn secret(&self, name: &KeyName) -> Result<SecretBytes, KeyStoreError> {
        let bytes =
            self.get_or_create(name, || Ok(Zeroizing::new(random_bytes::<32>()?.to_vec())))?;
        Ok(SecretBytes::from(bytes.to_vec()))
    }

    async fn sign(&self, name: &KeyName, message: &[u8]) -> Result<String, KeyStoreError> {
        let key = self.signing_key(name)?;
        Ok(format!(
            "{SIGNATURE_PREFIX}{}",
            STANDARD.encode(key.sign(message).as_ref())
        ))
    }

    async fn verify(
        &self,
        name: &KeyName,
        message: &[u8],
        signature: &str,
    ) -> Result<bool, KeyStoreError> {
        let Some(sig) = signature
            .strip_prefix(SIGNATURE_PREFIX)
            .and_then(|s| STANDARD.decode(s).ok())
        else {
            return Ok(false);
        };
        let key = self.signing_key(name)?;
        let public = UnparsedPublicKey::new(&ED25519, key.public_key().as_ref());
        Ok(public.verify(message, &sig).is_ok())
    }

    async fn put_record(&self, name: &KeyName, value: &[u8]) -> Result<(), KeyStoreError> {
        let path = self.file(name);
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        Ok(replace_private(&path, &self.seal(name, value)?)?)
    }

    async fn create_record(&self, name: &KeyName, value: &[u8]) -> Result<Vec<u8>, KeyStoreError> {
        Ok(self
            .get_or_create(name, || Ok(Zeroizing::new(value.to_vec())))?
            .to_vec())
    }

    async fn wrap(&self, name: &KeyName, plaintext: &[u8]) -> Result<String, KeyStoreError> {
        let ring = self.ring_or_create(name)?;
        Ok(Self::seal_with(&ring, name, plaintext)?)
    }

    async fn unwrap(
        &self,
        name: &KeyName,
        wrapped: &str,
    ) -> Result<Option<SecretBytes>, KeyStoreError> {
        let Some(ring) = self.ring(name)? else {
            return Ok(None);
        };
        Ok(Self::open_with(&ring, name, wrapped).map(|plain| SecretBytes::from(plain.to_vec())))
    }

    async fn rotate_wrapping_key(&self, name: &KeyName) -> Result<u32, KeyStoreError> {
        let _one_at_a_time = self.rotations.lock().await;
        let mut ring = self.ring_or_create(name)?;
        ring.extend_from_slice(&random_bytes::<RING_KEY_LEN>()?);
        let path = self.file(name);
        replace_private(&path, &self.seal(name, &ring)?)?;
        Ok(u32::try_from(ring.len() / RING_KEY_LEN).context("too many versions")?)
    }

    async fn wrapping_version(&self, name: &KeyName) -> Result<Option<u32>, KeyStoreError> {
        Ok(self
            .ring(name)?
            .map(|ring| u32::try_from(ring.len() / RING_KEY_LEN).unwrap_or(u32::MAX)))
    }

    async fn rewrap(&self, name: &KeyName, wrapped: &str) -> Result<Option<String>, KeyStoreError> {
        let Some(ring) = self.ring(name)? else {
            return Ok(None);
        };
        match Self::open_with(&ring, name, wrapped) {
            Some(plain) => Ok(Some(Self::seal_with(&ring, name, &plain)?)),
            None => Ok(None),
        }
    }

    async fn record(&self, name: &KeyName) -> Result<Option<Vec<u8>>, KeyStoreError> {
        match std::fs::read(self.file(name)) {
            Ok(sealed) => Ok(Some(self.open_sealed(name, &sealed)?.to_vec())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::from(e).context("reading a record").into()),
        }
    }

    async fn delete_record(&self, name: &KeyName) -> Result<(), KeyStoreError> {
        match std::fs::remove_file(self.file(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow::Error::from(e).context("deleting a record").into()),
        }
    }

    async fn destroy_tenant(&self, slug: &str) -> Result<(), KeyStoreError> {
        let dir = self.dir.join("tenants").join(slug);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow::Error::from(e)
                .context("destroying tenant keys")
                .into()),
        }
    }
}

impl std::fmt::Debug for LocalKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Version `version` (from 1) of a wrapping-key ring.
fn ring_key(ring: &[u8], version: usize) -> Option<LessSafeKey> {
    let start = version.checked_sub(1)?.checked_mul(RING_KEY_LEN)?;
    let bytes = ring.get(start..start + RING_KEY_LEN)?;
    Some(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).ok()?))
}

/// What a wrapped text is bound to: the key's name and version, so that it opens under no other.
fn wrap_aad(name: &KeyName, version: usize) -> String {
    format!("{}:v{version}", name.path())
}

/// The KEK in `path`: 32 raw bytes, or 64 hex digits, or base64 of 32 bytes.
fn read_kek(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let bytes =
        Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    if bytes.len() == 32 {
        return Ok(bytes);
    }
    let text = std::str::from_utf8(&bytes).unwrap_or("").trim();
    let decoded = Zeroizing::new(
        hex::decode(text)
            .ok()
            .or_else(|| STANDARD.decode(text).ok())
            .unwrap_or_default(),
    );
    anyhow::ensure!(
        decoded.len() == 32,
        "{} must hold a 32-byte key (raw, hex or base64)",
        path.display()
    );
    Ok(decoded)
}

/// The KEK generated at `path` on first use (by whichever replica links it first).
fn generated_kek(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Zeroizing::new(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = Zeroizing::new(random_bytes::<32>()?.to_vec());
            match write_new_private(path, &bytes) {
                Err(e) if !is_already_exists(&e) => return Err(e),
                _ => {}
            }
            Ok(Zeroizing::new(std::fs::read(path)?))
        }
        Err(e) => Err(e).context("reading the key-encryption key"),
    }
}

fn is_already_exists(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::Purpose;
    use secrecy::ExposeSecret as _;

    fn store() -> (LocalKeyStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("flowgate-ks-{}", uuid::Uuid::new_v4()));
        (LocalKeyStore::open(&dir, None).unwrap(), dir)
    }

    #[tokio::test]
    async fn a_secret_is_created_once_and_read_back() {
        let (ks, dir) = store();
        let name = KeyName::new("acme", Purpose::ApiKeyPepper);
        let first = ks.secret(&name).await.unwrap();
        let again = LocalKeyStore::open(&dir, None)
            .unwrap()
            .secret(&name)
            .await
            .unwrap();
        assert_eq!(first.expose_secret(), again.expose_secret());
        assert_eq!(first.expose_secret().len(), 32);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// With the KEK kept outside the data directory, a copy of that directory opens nothing.
    #[tokio::test]
    async fn keys_sealed_under_an_outside_kek_do_not_open_without_it() {
        let dir = std::env::temp_dir().join(format!("flowgate-ks-{}", uuid::Uuid::new_v4()));
        let outside = std::env::temp_dir().join(format!("flowgate-kek-{}", uuid::Uuid::new_v4()));
        std::fs::write(&outside, hex::encode([7u8; 32])).unwrap();
        let name = KeyName::new("acme", Purpose::ApiKeyPepper);
        let ks = LocalKeyStore::open(&dir, Some(&outside)).unwrap();
        let first = ks.secret(&name).await.unwrap();
        assert!(
            !dir.join("kek").exists(),
            "no KEK is written beside the keys"
        );
        let again = LocalKeyStore::open(&dir, Some(&outside)).unwrap();
        assert_eq!(
            again.secret(&name).await.unwrap().expose_secret(),
            first.expose_secret()
        );
        // The copied directory alone: a store there makes its own KEK, and the keys do not open.
        let thief = LocalKeyStore::open(&dir, None).unwrap();
        assert!(thief.secret(&name).await.is_err());
        std::fs::write(&outside, b"too short").unwrap();
        assert!(LocalKeyStore::open(&dir, Some(&outside)).is_err());
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_file(outside).unwrap();
    }

    #[tokio::test]
    async fn a_sealed_file_moved_to_another_tenant_does_not_open() {
        let (ks, dir) = store();
        let a = KeyName::new("acme", Purpose::ApiKeyPepper);
        let b = KeyName::new("beta", Purpose::ApiKeyPepper);
        ks.secret(&a).await.unwrap();
        std::fs::create_dir_all(ks.file(&b).parent().unwrap()).unwrap();
        std::fs::copy(ks.file(&a), ks.file(&b)).unwrap();
        assert!(ks.secret(&b).await.is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn signatures_verify_and_forgeries_do_not() {
        let (ks, dir) = store();
        let name = KeyName::new("acme", Purpose::AuditSigning);
        let sig = ks.sign(&name, b"checkpoint 7").await.unwrap();
        assert!(ks.verify(&name, b"checkpoint 7", &sig).await.unwrap());
        assert!(!ks.verify(&name, b"checkpoint 8", &sig).await.unwrap());
        assert!(
            !ks.verify(&name, b"checkpoint 7", "local:v1:AAAA")
                .await
                .unwrap()
        );
        ks.destroy_tenant("acme").await.unwrap();
        assert!(!ks.file(&name).exists());
        // A new key appears on next use; the old signature does not verify under it.
        assert!(!ks.verify(&name, b"checkpoint 7", &sig).await.unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
