//! The keys of encrypted payloads: the tenant's RSA key pair that requests are encrypted to,
//! and each API key's or OAuth client's own keys (a shared `dir` key, a registered public key
//! that responses are encrypted to).
//!
//! Invariants:
//! - The tenant's key pair is made once, on first use, and kept in the key store as a record
//!   (PKCS#8 DER) created with [`KeyStore::create_record`], so concurrent replicas agree on one
//!   pair. Its parsed form is cached per slug (bounded, with a time to live) and forgotten with
//!   the tenant's other cached state, on every replica.
//! - A credential's keys are one key-store record named after the credential, read on each use
//!   (never cached), so a new `dir` key replaces the old one at once on every replica.
//! - The shared key leaves Flowgate once, in the answer that made it; [`DirKey`] and
//!   [`TenantKey`] print as redacted.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwe::alg::rsaes::{RsaesJweDecrypter, RsaesJweEncrypter};
use josekit::jwe::{JweDecrypter as _, JweEncrypter as _, JweHeader, RSA_OAEP_256};
use josekit::jwk::Jwk;
use josekit::jwk::KeyPair as _;
use josekit::jwk::alg::rsa::RsaKeyPair;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;
use zeroize::{Zeroize as _, Zeroizing};

use crate::http::error::{ApiError, ErrorCode};
use crate::identity::{AccountCredential, Principal};
use crate::keystore::{KeyName, KeyStore, KeyStoreError, Purpose};
use crate::tenancy::{TenantCache, Turns};

/// The size of a tenant's RSA key: 3072 bits is 128-bit security (NIST SP 800-57), the
/// strength of the AES-256-GCM content it protects the key of, and good past 2030, where 2048
/// bits (112-bit) is not. It costs a few milliseconds per `RSA-OAEP-256` request and one
/// generation per tenant; `dir` requests never touch it.
pub const TENANT_KEY_BITS: u32 = 3072;

/// The sizes of public keys clients may register.
const CLIENT_KEY_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// Parsed tenant key pairs, by slug: forgotten with the rest of a tenant's cached state
/// (`AppState::forget_tenant`), so a deleted tenant's key leaves memory at once.
///
/// Invariant: a tenant's key is read or made by one request at a time; the requests that miss
/// it together (anyone may ask for a tenant's JWKS) wait for that one, rather than each
/// generating an RSA key on the blocking pool.
pub struct TenantKeys {
    keys: TenantCache<Arc<TenantKey>>,
    loading: Turns,
}

impl Default for TenantKeys {
    fn default() -> Self {
        TenantKeys {
            keys: TenantCache::with_ttl(
                NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN),
                Duration::from_secs(3600),
            ),
            loading: Turns::default(),
        }
    }
}

/// The tenant's RSA key pair for `RSA-OAEP-256`.
pub struct TenantKey {
    decrypter: RsaesJweDecrypter,
    kid: String,
    /// The public key as published in the JWKS.
    public_jwk: Value,
}

impl std::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TenantKey {
    fn from_der(der: &[u8]) -> anyhow::Result<Self> {
        let pair = RsaKeyPair::from_der(der)?;
        let mut public = pair.to_jwk_public_key();
        let kid = thumbprint(&public)?;
        public.set_key_id(&kid);
        public.set_key_use("enc");
        public.set_algorithm(RSA_OAEP_256.to_string());
        Ok(TenantKey {
            decrypter: RSA_OAEP_256.decrypter_from_der(der)?,
            public_jwk: Value::Object(public.as_ref().clone()),
            kid,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The content key `encrypted` holds, or `None` when it does not decrypt to 32 bytes.
    pub fn unwrap_content_key(&self, encrypted: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        let key = self
            .decrypter
            .decrypt(
                Some(encrypted),
                &josekit::jwe::enc::A256GCM,
                &JweHeader::new(),
            )
            .ok()?;
        let key = Zeroizing::new(key.into_owned());
        let key: &[u8; 32] = key.as_slice().try_into().ok()?;
        Some(Zeroizing::new(*key))
    }

    /// The public key with `use` `enc`, `alg` `RSA-OAEP-256` and its RFC 7638 thumbprint as `kid`.
    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }
}

impl TenantKeys {
    pub fn forget(&self, slug: &str) {
        self.keys.invalidate(slug);
    }

    pub fn forget_all(&self) {
        self.keys.clear();
    }

    /// The tenant's encryption key, made on first use.
    pub async fn get(
        &self,
        keystore: &dyn KeyStore,
        slug: &str,
    ) -> Result<Arc<TenantKey>, KeyStoreError> {
        self.keys
            .get_or_try_load_in_turn(&self.loading, slug, || async {
                let name = KeyName::new(slug, Purpose::PayloadEncryption);
                let der = match keystore.record(&name).await? {
                    Some(der) => Zeroizing::new(der),
                    None => {
                        let made = tokio::task::spawn_blocking(|| {
                            RsaKeyPair::generate(TENANT_KEY_BITS)
                                .map(|p| Zeroizing::new(p.to_der_private_key()))
                        })
                        .await
                        .map_err(anyhow::Error::from)?
                        .map_err(anyhow::Error::from)?;
                        Zeroizing::new(keystore.create_record(&name, &made).await?)
                    }
                };
                Ok(Arc::new(TenantKey::from_der(&der)?))
            })
            .await
    }
}

/// A credential's shared AES-256 key for `dir`, ready for AES-256-GCM (aws-lc-rs clears the
/// expanded key when it is dropped).
pub struct DirKey {
    aead: LessSafeKey,
    kid: String,
}

impl std::fmt::Debug for DirKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl DirKey {
    /// A shared key from its 32 bytes.
    pub fn new(key: &[u8; 32], kid: &str) -> Self {
        DirKey {
            aead: content_key(key),
            kid: kid.to_owned(),
        }
    }

    fn from_slice(key: &[u8], kid: &str) -> anyhow::Result<Self> {
        let key: &[u8; 32] = key
            .try_into()
            .map_err(|_| anyhow::anyhow!("a stored shared key is not 32 bytes"))?;
        Ok(DirKey::new(key, kid))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn aead(&self) -> &LessSafeKey {
        &self.aead
    }
}

/// A new random AES-256 key, cleared when dropped.
pub fn random_key() -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(key.as_mut_slice())
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(key)
}

/// An AES-256-GCM key from its 32 bytes (a length the type guarantees, so it cannot fail).
pub fn content_key(key: &[u8; 32]) -> LessSafeKey {
    #[allow(clippy::expect_used)]
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("AES-256 takes a 32-byte key"))
}

/// A public key a client registered, that its responses are encrypted to.
pub struct PublicKey {
    encrypter: RsaesJweEncrypter,
    kid: String,
}

impl PublicKey {
    /// Checks a JWK a client sent: an RSA public key of 2048 to 8192 bits for `RSA-OAEP-256`
    /// encryption, without any private part. The error says what is wrong, for a 422.
    pub fn parse(jwk: &Map<String, Value>) -> Result<Self, &'static str> {
        if jwk.get("kty").and_then(Value::as_str) != Some("RSA") {
            return Err("must be an RSA key (`kty` `RSA`)");
        }
        if ["d", "p", "q", "dp", "dq", "qi", "oth"]
            .iter()
            .any(|k| jwk.contains_key(*k))
        {
            return Err("must be a public key: it holds private parts");
        }
        if jwk.get("use").is_some_and(|u| u != "enc") {
            return Err("`use` must be `enc`");
        }
        if jwk.get("alg").is_some_and(|a| a != "RSA-OAEP-256") {
            return Err("`alg` must be `RSA-OAEP-256`");
        }
        let n = jwk
            .get("n")
            .and_then(Value::as_str)
            .and_then(|n| URL_SAFE_NO_PAD.decode(n).ok())
            .ok_or("`n` must be the base64url modulus")?;
        if !CLIENT_KEY_BITS.contains(&significant_bits(&n)) {
            return Err("the modulus must have 2048 to 8192 bits");
        }
        // 65537, as every key generator makes: a tiny exponent (1 makes RSA the identity) would
        // let anyone read the content keys wrapped for this client.
        let e = jwk
            .get("e")
            .and_then(Value::as_str)
            .and_then(|e| URL_SAFE_NO_PAD.decode(e).ok())
            .ok_or("`e` must be the base64url exponent")?;
        if significant_bytes(&e) != [1, 0, 1] {
            return Err("the exponent `e` must be 65537 (AQAB)");
        }
        let parsed = Jwk::from_map(jwk.clone()).map_err(|_| "is not a valid JWK")?;
        let kid = match jwk.get("kid") {
            Some(Value::String(kid)) if !kid.is_empty() && kid.len() <= 128 => kid.clone(),
            Some(_) => return Err("`kid` must be a string of 1 to 128 characters"),
            None => thumbprint(&parsed).map_err(|_| "is not a valid RSA key")?,
        };
        let encrypter = RSA_OAEP_256
            .encrypter_from_jwk(&parsed)
            .map_err(|_| "is not a valid RSA key")?;
        Ok(PublicKey { encrypter, kid })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `key` encrypted to this public key with RSA-OAEP-256.
    pub fn wrap_content_key(&self, key: &[u8; 32]) -> anyhow::Result<Vec<u8>> {
        let mut header = JweHeader::new();
        self.encrypter
            .encrypt(key, &JweHeader::new(), &mut header)?
            .ok_or_else(|| anyhow::anyhow!("RSA-OAEP-256 gave no encrypted key"))
    }
}

/// Whom a response is encrypted to.
pub enum Recipient {
    Dir(Arc<DirKey>),
    Rsa(Arc<PublicKey>),
}

impl Recipient {
    pub fn kid(&self) -> &str {
        match self {
            Recipient::Dir(key) => key.kid(),
            Recipient::Rsa(key) => key.kid(),
        }
    }
}

/// A credential's keys, as the key store keeps them.
#[derive(Default, Serialize, Deserialize)]
struct Stored {
    /// The shared key, base64url.
    dir: Option<StoredDir>,
    /// The registered public JWK.
    public_jwk: Option<Map<String, Value>>,
}

#[derive(Serialize, Deserialize)]
struct StoredDir {
    k: String,
    kid: String,
}

impl Drop for StoredDir {
    fn drop(&mut self) {
        self.k.zeroize();
    }
}

/// The keys of one credential (API key or OAuth client).
#[derive(Default)]
pub struct ClientKeys {
    pub dir: Option<Arc<DirKey>>,
    pub public: Option<Arc<PublicKey>>,
    /// The registered public key is one the current rules refuse (registered before they were
    /// tightened): nothing is encrypted to it, and nothing else stands in for it.
    pub public_refused: bool,
}

const PUBLIC_KEY_REFUSED: &str = "This credential's registered public key is one the current \
     rules refuse (RSA of 2048 to 8192 bits, exponent 65537), so no response is encrypted to \
     it: register a new one (`…/payload-key`).";

impl ClientKeys {
    /// Where a response is encrypted to when the request did not say: the registered public
    /// key, else the shared key. A registered key that the rules refuse is a 406: the response
    /// goes neither to the shared key nor in the clear in its place.
    pub fn recipient(&self) -> Result<Option<Recipient>, ApiError> {
        if self.public_refused {
            return Err(ApiError::new(ErrorCode::NotAcceptable, PUBLIC_KEY_REFUSED));
        }
        Ok(self
            .public
            .clone()
            .map(Recipient::Rsa)
            .or_else(|| self.dir.clone().map(Recipient::Dir)))
    }
}

/// The API key or OAuth client whose keys the principal's request uses; people and outside
/// issuers' tokens have none.
pub fn credential_of(principal: &Principal) -> Option<Uuid> {
    match principal {
        Principal::ServiceAccount {
            credential: AccountCredential::ApiKey(id),
            ..
        }
        | Principal::ServiceAccount {
            credential: AccountCredential::AccessToken { client: id },
            ..
        } => Some(*id),
        _ => None,
    }
}

fn record_name(slug: &str, credential: Uuid) -> KeyName {
    KeyName::item(slug, Purpose::PayloadClientKey, &credential)
}

/// A credential's record as it is, and its bytes (`None`: no record).
async fn stored(
    keystore: &dyn KeyStore,
    slug: &str,
    credential: Uuid,
) -> Result<(Stored, Option<Zeroizing<Vec<u8>>>), KeyStoreError> {
    match keystore.record(&record_name(slug, credential)).await? {
        None => Ok((Stored::default(), None)),
        Some(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let parsed = serde_json::from_slice(&bytes).map_err(anyhow::Error::from)?;
            Ok((parsed, Some(bytes)))
        }
    }
}

/// Replaces the record `before` held with `stored`; returns what to put back if the change does
/// not commit.
async fn store(
    keystore: &dyn KeyStore,
    slug: &str,
    credential: Uuid,
    stored: &Stored,
    before: Option<Zeroizing<Vec<u8>>>,
) -> Result<Previous, KeyStoreError> {
    let bytes = Zeroizing::new(serde_json::to_vec(stored).map_err(anyhow::Error::from)?);
    keystore
        .put_record(&record_name(slug, credential), &bytes)
        .await?;
    Ok(Previous {
        before,
        written: bytes,
    })
}

/// What a credential's key record held before a change, and what the change wrote: the record
/// is put back when the change's audit event does not commit, so no key is in force that the
/// trail does not show. (Changes of one credential take turns: each holds its credential's row
/// locked from reading the record to its commit.)
pub struct Previous {
    before: Option<Zeroizing<Vec<u8>>>,
    written: Zeroizing<Vec<u8>>,
}

impl Previous {
    /// Puts the record back as it was, unless another change has replaced it since (that one
    /// stands); a failure is logged (never the key), not returned: the caller is already
    /// answering with the error that made it undo.
    pub async fn restore(self, keystore: &dyn KeyStore, slug: &str, credential: Uuid) {
        let name = record_name(slug, credential);
        let ours = match keystore.record(&name).await {
            Ok(current) => current.is_some_and(|c| c == *self.written),
            Err(e) => {
                tracing::warn!(error = %e, tenant = slug, %credential,
                    "could not read a credential's payload keys to put them back");
                return;
            }
        };
        if !ours {
            return;
        }
        let restored = match &self.before {
            Some(bytes) => keystore.put_record(&name, bytes).await,
            None => keystore.delete_record(&name).await,
        };
        if let Err(e) = restored {
            tracing::warn!(error = %e, tenant = slug, %credential,
                "could not put back a credential's payload keys after its change failed");
        }
    }
}

/// The keys of `credential`, from the key store.
pub async fn client_keys(
    keystore: &dyn KeyStore,
    slug: &str,
    credential: Uuid,
) -> Result<ClientKeys, KeyStoreError> {
    let (stored, _) = stored(keystore, slug, credential).await?;
    let dir = match stored.dir {
        None => None,
        Some(dir) => {
            let key = Zeroizing::new(
                URL_SAFE_NO_PAD
                    .decode(&dir.k)
                    .map_err(anyhow::Error::from)?,
            );
            Some(Arc::new(DirKey::from_slice(&key, &dir.kid)?))
        }
    };
    // A key registered before a rule was tightened (an exponent other than 65537, a modulus
    // of odd size) is not in force: see `ClientKeys::recipient`.
    let mut public_refused = false;
    let public = stored
        .public_jwk
        .and_then(|jwk| match PublicKey::parse(&jwk) {
            Ok(key) => Some(Arc::new(key)),
            Err(why) => {
                tracing::warn!(tenant = slug, %credential, reason = why,
                "a registered public key is refused by the current rules and not used");
                public_refused = true;
                None
            }
        });
    Ok(ClientKeys {
        dir,
        public,
        public_refused,
    })
}

/// A shared key just made: its JWK (`kty` `oct`) is shown once.
pub struct IssuedDirKey {
    pub kid: String,
    /// The key, base64url: for the one answer that hands it out, nowhere else.
    pub k: Zeroizing<String>,
}

/// Makes a new shared key for `credential`, replacing the one it had (see [`Previous`]).
pub async fn issue_dir_key(
    keystore: &dyn KeyStore,
    slug: &str,
    credential: Uuid,
) -> Result<(IssuedDirKey, Previous), KeyStoreError> {
    let key = random_key()?;
    let issued = IssuedDirKey {
        kid: crate::crypto::random_token::<12>()?,
        k: Zeroizing::new(URL_SAFE_NO_PAD.encode(key.as_slice())),
    };
    let (mut record, before) = stored(keystore, slug, credential).await?;
    record.dir = Some(StoredDir {
        k: issued.k.to_string(),
        kid: issued.kid.clone(),
    });
    let previous = store(keystore, slug, credential, &record, before).await?;
    Ok((issued, previous))
}

/// Registers `jwk` (checked with [`PublicKey::parse`]) as the key `credential`'s responses are
/// encrypted to; returns its `kid` (and see [`Previous`]).
pub async fn register_public_key(
    keystore: &dyn KeyStore,
    slug: &str,
    credential: Uuid,
    jwk: Map<String, Value>,
    key: &PublicKey,
) -> Result<(String, Previous), KeyStoreError> {
    let (mut record, before) = stored(keystore, slug, credential).await?;
    record.public_jwk = Some(jwk);
    let previous = store(keystore, slug, credential, &record, before).await?;
    Ok((key.kid().to_owned(), previous))
}

/// Destroys `credential`'s keys (it was revoked).
pub async fn forget_credential(
    keystore: &dyn KeyStore,
    slug: &str,
    credential: Uuid,
) -> Result<(), KeyStoreError> {
    keystore.delete_record(&record_name(slug, credential)).await
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of an RSA public JWK.
fn thumbprint(jwk: &Jwk) -> anyhow::Result<String> {
    let (Some(Value::String(e)), Some(Value::String(n))) = (jwk.parameter("e"), jwk.parameter("n"))
    else {
        anyhow::bail!("not an RSA public key");
    };
    // The members in lexicographic order, no whitespace (RFC 7638 section 3.2).
    let canonical = serde_json::json!({"e": e, "kty": "RSA", "n": n}).to_string();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    Ok(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

/// `bytes`, a big-endian unsigned integer, without its leading zero bytes.
fn significant_bytes(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// The bit length of `bytes`, a big-endian unsigned integer.
fn significant_bits(bytes: &[u8]) -> usize {
    match significant_bytes(bytes) {
        [] => 0,
        [first, ..] => significant_bytes(bytes).len() * 8 - first.leading_zeros() as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(n: &[u8], e: &[u8]) -> Map<String, Value> {
        let mut jwk = Map::new();
        jwk.insert("kty".into(), "RSA".into());
        jwk.insert("n".into(), URL_SAFE_NO_PAD.encode(n).into());
        jwk.insert("e".into(), URL_SAFE_NO_PAD.encode(e).into());
        jwk
    }

    #[tokio::test]
    async fn a_stored_public_key_the_rules_now_refuse_is_not_in_force() {
        let dir = std::env::temp_dir().join(format!("flowgate-keys-{}", Uuid::new_v4()));
        let keystore = crate::keystore::LocalKeyStore::open(&dir, None).unwrap();
        let credential = Uuid::new_v4();
        let mut modulus = vec![0xc5u8; 256];
        modulus[255] |= 1;
        for (e, in_force) in [(&[3u8][..], false), (&[1, 0, 1][..], true)] {
            let record = Stored {
                dir: Some(StoredDir {
                    k: URL_SAFE_NO_PAD.encode([7u8; 32]),
                    kid: "shared".into(),
                }),
                public_jwk: Some(jwk(&modulus, e)),
            };
            let bytes = serde_json::to_vec(&record).unwrap();
            keystore
                .put_record(&record_name("acme", credential), &bytes)
                .await
                .unwrap();
            let keys = client_keys(&keystore, "acme", credential).await.unwrap();
            assert_eq!(keys.public.is_some(), in_force, "e = {e:?}");
            // Refused, it stands in for nothing: not the shared key, not the clear.
            assert_eq!(keys.recipient().is_err(), !in_force, "e = {e:?}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_client_key_needs_the_usual_exponent_and_a_whole_modulus() {
        let mut modulus = vec![0xC5; 256];
        modulus[255] |= 1;
        // A 2041-bit modulus is not 2048 bits, whatever its byte count.
        let mut short = modulus.clone();
        short[0] = 0x01;
        assert_eq!(
            significant_bits(&short),
            2041,
            "the bits of the leading byte count"
        );
        assert!(PublicKey::parse(&jwk(&short, &[1, 0, 1])).is_err());
        // e = 1 makes RSA the identity; e = 3 is refused too.
        for e in [&[1u8][..], &[3], &[0, 1]] {
            let refused = PublicKey::parse(&jwk(&modulus, e)).err();
            assert_eq!(refused, Some("the exponent `e` must be 65537 (AQAB)"));
        }
        assert_eq!(significant_bits(&modulus), 2048);
        assert_eq!(significant_bytes(&[0, 0, 1, 0, 1]), [1, 0, 1]);
    }
}
