//! Encrypted payloads on the tenant API: JWE compact serialization, `Content-Type:
//! application/jose` (RFC 7516). The JOSE library `josekit` handles the keys (JWKs, the
//! RSA-OAEP-256 encryption of a content key); the compact form and the A256GCM content are
//! ours, over aws-lc-rs's AEAD and SIMD base64url, because they are the whole cost of a large
//! body (`benches/jwe.rs`).
//!
//! Invariants:
//! - Only `enc` `A256GCM` with `alg` `dir` (the calling credential's shared key) or
//!   `RSA-OAEP-256` (the tenant's encryption key) is accepted. A `zip` or `crit` header, any
//!   other algorithm, or a key segment that does not fit the algorithm is refused (400
//!   `unsupported_jwe`) before any key is touched.
//! - The protected header is bounded ([`MAX_HEADER`] encoded bytes) before a JSON parser sees
//!   it; the body limit already bounds the whole request.
//! - Every failure to decrypt — a tampered tag, a truncated token, a wrong key, a bad OAEP
//!   padding — is the same 400 `invalid_jwe` with one fixed text, so no answer tells which step
//!   failed, and no library text reaches the client or the log. An RSA-encrypted content key
//!   that does not decrypt is replaced by a random one and the content decryption fails as it
//!   would for a bad tag (RFC 7516 section 11.5), so timing does not tell the steps apart either.
//! - Every JWE Flowgate makes has a fresh random 96-bit IV. With a `dir` key that bounds a key
//!   to 2^32 answers (NIST SP 800-38D, section 8.3); a credential gets a new key far sooner.
//! - Keys live in types whose `Debug` is redacted ([`keys`]); nothing here logs a payload or a
//!   key.
//! - A decrypted body goes through exactly the JSON parsing and limits of a plaintext body
//!   (`extract::JsonBody`); a response is encrypted only after its handler produced it
//!   ([`negotiate`]).

pub mod keys;
pub mod negotiate;

use aws_lc_rs::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce};
use base64_simd::URL_SAFE_NO_PAD as B64;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::error::{ApiError, ErrorCode};
use keys::{DirKey, Recipient, TenantKey, content_key, random_key};

/// The media type of an encrypted body.
/// What this replica caches about tenants' encrypted payloads; part of `AppState`, forgotten with
/// a tenant's other cached state. (Which operations require encryption is a tenant setting,
/// cached with the others.)
#[derive(Default)]
pub struct PayloadCaches {
    pub tenant_keys: keys::TenantKeys,
}

impl PayloadCaches {
    pub fn forget_tenant(&self, slug: &str) {
        self.tenant_keys.forget(slug);
    }

    pub fn forget_all(&self) {
        self.tenant_keys.forget_all();
    }
}

pub const MEDIA_TYPE: &str = "application/jose";

/// The longest base64url protected header accepted (1.5 KiB of JSON): far more than any
/// header of the accepted algorithms needs.
pub const MAX_HEADER: usize = 2048;

/// The longest base64url encrypted key accepted: an RSA-OAEP-256 key of 8192 bits.
const MAX_ENCRYPTED_KEY: usize = 1366;

/// The base64url lengths of A256GCM's 12-byte IV and 16-byte tag.
const IV_B64: usize = 16;
const TAG_B64: usize = 22;

/// The content encryption, the only one accepted and produced.
const ENC: &str = "A256GCM";

/// The key management of a JWE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// The calling credential's shared AES-256 key.
    Dir,
    /// A content key wrapped to an RSA key.
    RsaOaep256,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Dir => "dir",
            Alg::RsaOaep256 => "RSA-OAEP-256",
        }
    }
}

/// Why a JWE was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JweError {
    /// Not a compact JWE, or it does not decrypt: one answer whatever the step.
    #[error("the JWE could not be decrypted")]
    Invalid,
    /// A well-formed JWE of an algorithm or feature Flowgate does not accept.
    #[error("{0}")]
    Unsupported(&'static str),
}

impl From<JweError> for ApiError {
    fn from(e: JweError) -> Self {
        match e {
            JweError::Invalid => ApiError::new(
                ErrorCode::InvalidJwe,
                "The body is not a JWE that decrypts with the key its header names.",
            ),
            JweError::Unsupported(why) => ApiError::new(
                ErrorCode::UnsupportedJwe,
                format!("{why}; send `alg` `dir` or `RSA-OAEP-256` with `enc` `A256GCM`."),
            ),
        }
    }
}

/// A compact JWE whose protected header passed the screening, not yet decrypted.
#[derive(Debug)]
pub struct Screened<'a> {
    pub alg: Alg,
    /// The `kid` the sender named, if any.
    pub kid: Option<String>,
    /// The protected header as sent (base64url): the additional authenticated data.
    header: &'a [u8],
    /// The other four segments, base64url.
    encrypted_key: &'a [u8],
    iv: &'a [u8],
    ciphertext: &'a [u8],
    tag: &'a [u8],
}

/// Checks the shape and the protected header of a compact JWE, bounded, before any key is used.
pub fn screen(compact: &[u8]) -> Result<Screened<'_>, JweError> {
    let (header, encrypted_key, iv, ciphertext, tag) =
        segments(compact.trim_ascii()).ok_or(JweError::Invalid)?;
    let decoded = B64.decode_to_vec(header).map_err(|_| JweError::Invalid)?;
    let fields: Map<String, Value> =
        serde_json::from_slice(&decoded).map_err(|_| JweError::Invalid)?;
    if fields.contains_key("zip") {
        return Err(JweError::Unsupported(
            "compressed payloads (`zip`) are refused",
        ));
    }
    if fields.contains_key("crit") {
        return Err(JweError::Unsupported(
            "critical header extensions (`crit`) are refused",
        ));
    }
    if fields.get("enc").and_then(Value::as_str) != Some(ENC) {
        return Err(JweError::Unsupported(
            "the content encryption is not A256GCM",
        ));
    }
    let alg = match fields.get("alg").and_then(Value::as_str) {
        Some("dir") => Alg::Dir,
        Some("RSA-OAEP-256") => Alg::RsaOaep256,
        _ => {
            return Err(JweError::Unsupported(
                "the key management algorithm is not accepted",
            ));
        }
    };
    // `dir` has no encrypted key; RSA-OAEP-256 must have one. A256GCM has a 96-bit IV and a
    // full 128-bit tag: a shorter tag would be checked only as far as it goes, so it must
    // never reach the AEAD.
    if encrypted_key.is_empty() != (alg == Alg::Dir) || iv.len() != IV_B64 || tag.len() != TAG_B64 {
        return Err(JweError::Invalid);
    }
    let kid = match fields.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JweError::Invalid),
    };
    Ok(Screened {
        alg,
        kid,
        header,
        encrypted_key,
        iv,
        ciphertext,
        tag,
    })
}

/// The five segments of a compact JWE. Only the short ones are scanned for their dot (each
/// within its bound) and the tag from the end, never the ciphertext: a stray dot there fails its
/// base64url decoding instead.
#[allow(clippy::type_complexity)]
fn segments(compact: &[u8]) -> Option<(&[u8], &[u8], &[u8], &[u8], &[u8])> {
    fn next(rest: &[u8], bound: usize) -> Option<(&[u8], &[u8])> {
        let at = rest.iter().take(bound + 1).position(|b| *b == b'.')?;
        Some((&rest[..at], &rest[at + 1..]))
    }
    let (header, rest) = next(compact, MAX_HEADER)?;
    let (encrypted_key, rest) = next(rest, MAX_ENCRYPTED_KEY)?;
    let (iv, rest) = next(rest, IV_B64)?;
    let (ciphertext, tag) = rest.split_at(rest.len().checked_sub(TAG_B64 + 1)?);
    let tag = tag.strip_prefix(b".")?;
    Some((header, encrypted_key, iv, ciphertext, tag))
}

impl Screened<'_> {
    /// Decrypts with the calling credential's shared key.
    pub fn decrypt_dir(&self, key: &DirKey) -> Result<Vec<u8>, JweError> {
        if self.alg != Alg::Dir || self.kid.as_deref().is_some_and(|kid| kid != key.kid()) {
            return Err(JweError::Invalid);
        }
        self.open(key.aead())
    }

    /// Decrypts with the tenant's RSA key.
    pub fn decrypt_rsa(&self, key: &TenantKey) -> Result<Vec<u8>, JweError> {
        if self.alg != Alg::RsaOaep256 || self.kid.as_deref().is_some_and(|kid| kid != key.kid()) {
            return Err(JweError::Invalid);
        }
        let encrypted_key = B64
            .decode_to_vec(self.encrypted_key)
            .map_err(|_| JweError::Invalid)?;
        let content = match key.unwrap_content_key(&encrypted_key) {
            Some(content) => content,
            None => random_key().map_err(|_| JweError::Invalid)?,
        };
        self.open(&content_key(&content))
    }

    /// Checks the tag and decrypts the content, in place in one buffer.
    fn open(&self, aead: &LessSafeKey) -> Result<Vec<u8>, JweError> {
        let iv: [u8; NONCE_LEN] = B64
            .decode_to_vec(self.iv)
            .ok()
            .and_then(|iv| iv.try_into().ok())
            .ok_or(JweError::Invalid)?;
        let mut content =
            Vec::with_capacity(B64.estimated_decoded_length(self.ciphertext.len()) + TAG_LEN);
        B64.decode_append(self.ciphertext, &mut content)
            .and_then(|()| B64.decode_append(self.tag, &mut content))
            .map_err(|_| JweError::Invalid)?;
        let plaintext = aead
            .open_in_place(
                Nonce::assume_unique_for_key(iv),
                Aad::from(self.header),
                &mut content,
            )
            .map_err(|_| JweError::Invalid)?
            .len();
        content.truncate(plaintext);
        Ok(content)
    }
}

/// A256GCM's tag length in bytes.
const TAG_LEN: usize = 16;

/// Encrypts `payload` to `recipient` as a compact JWE with `enc` A256GCM, in place (the buffer
/// holds ciphertext afterwards, and is cleared when dropped). `cty` names the payload's media
/// type when it is not JSON.
pub fn seal(
    mut payload: Zeroizing<Vec<u8>>,
    recipient: &Recipient,
    cty: Option<&str>,
) -> Result<String, ApiError> {
    let failed = |e: &dyn std::fmt::Display| {
        ApiError::internal("jose", anyhow::anyhow!("encrypting a response: {e}"))
    };
    let content;
    let (alg, aead, encrypted_key) = match recipient {
        Recipient::Dir(key) => (Alg::Dir, key.aead(), Vec::new()),
        Recipient::Rsa(key) => {
            let random = random_key().map_err(|e| failed(&e))?;
            let encrypted = key.wrap_content_key(&random).map_err(|e| failed(&e))?;
            content = content_key(&random);
            (Alg::RsaOaep256, &content, encrypted)
        }
    };
    let mut header = serde_json::json!({"alg": alg.name(), "enc": ENC, "kid": recipient.kid()});
    if let Some(cty) = cty {
        header["cty"] = Value::from(cty);
    }
    let header = B64.encode_to_string(header.to_string());
    let iv = crate::crypto::random_bytes::<NONCE_LEN>().map_err(|e| failed(&e))?;
    let tag = aead
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(header.as_bytes()),
            payload.as_mut_slice(),
        )
        .map_err(|e| failed(&e))?;
    let ciphertext = payload.as_slice();
    let mut compact = String::with_capacity(
        header.len()
            + B64.encoded_length(encrypted_key.len())
            + IV_B64
            + B64.encoded_length(ciphertext.len())
            + TAG_B64
            + 4,
    );
    compact.push_str(&header);
    for segment in [&encrypted_key[..], &iv, ciphertext, tag.as_ref()] {
        compact.push('.');
        B64.encode_append(segment, &mut compact);
    }
    Ok(compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(header: &Value, key: &str) -> String {
        let header = B64.encode_to_string(header.to_string());
        format!("{header}.{key}.aXZpdml2aXZpdml2.Y2lwaGVy.dGFndGFndGFndGFndGFnZw")
    }

    #[test]
    fn only_dir_and_rsa_oaep_256_with_a256gcm_pass_the_screen() {
        let dir = compact(&serde_json::json!({"alg": "dir", "enc": "A256GCM"}), "");
        assert_eq!(screen(dir.as_bytes()).unwrap().alg, Alg::Dir);
        let rsa = compact(
            &serde_json::json!({"alg": "RSA-OAEP-256", "enc": "A256GCM"}),
            "a2V5",
        );
        assert_eq!(screen(rsa.as_bytes()).unwrap().alg, Alg::RsaOaep256);
        for (header, key) in [
            (
                serde_json::json!({"alg": "RSA1_5", "enc": "A256GCM"}),
                "a2V5",
            ),
            (
                serde_json::json!({"alg": "A128KW", "enc": "A256GCM"}),
                "a2V5",
            ),
            (serde_json::json!({"alg": "dir", "enc": "A128GCM"}), ""),
            (
                serde_json::json!({"alg": "dir", "enc": "A256GCM", "zip": "DEF"}),
                "",
            ),
            (
                serde_json::json!({"alg": "dir", "enc": "A256GCM", "crit": ["exp"], "exp": 1}),
                "",
            ),
        ] {
            assert!(matches!(
                screen(compact(&header, key).as_bytes()),
                Err(JweError::Unsupported(_))
            ));
        }
    }

    #[test]
    fn malformed_and_oversized_headers_are_invalid_before_any_parse() {
        let dir_with_key = compact(&serde_json::json!({"alg": "dir", "enc": "A256GCM"}), "a2V5");
        assert_eq!(
            screen(dir_with_key.as_bytes()).unwrap_err(),
            JweError::Invalid
        );
        assert_eq!(screen(b"a.b.c.d").unwrap_err(), JweError::Invalid);
        assert_eq!(screen(b"a.b.c.d.e.f").unwrap_err(), JweError::Invalid);
        assert_eq!(screen(b"!!.b.c.d.e").unwrap_err(), JweError::Invalid);
        let short_tag = dir_with_key
            .replace("a2V5", "")
            .replace("dGFndGFndGFndGFndGFnZw", "dGFndGFn");
        assert_eq!(screen(short_tag.as_bytes()).unwrap_err(), JweError::Invalid);
        let padded = "x".repeat(MAX_HEADER);
        let big = compact(
            &serde_json::json!({"alg": "dir", "enc": "A256GCM", "pad": padded}),
            "",
        );
        assert_eq!(screen(big.as_bytes()).unwrap_err(), JweError::Invalid);
    }
}
