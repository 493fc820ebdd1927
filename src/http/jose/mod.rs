//! Encrypted payloads on the tenant API: JWE compact serialization, `Content-Type:
//! application/jose` (RFC 7516), through the JOSE library `josekit`.
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
//!   failed, and no library text reaches the client or the log.
//! - Keys live in types whose `Debug` is redacted ([`keys`]); nothing here logs a payload or a
//!   key.
//! - A decrypted body goes through exactly the JSON parsing and limits of a plaintext body
//!   (`extract::JsonBody`); a response is encrypted only after its handler produced it
//!   ([`negotiate`]).

pub mod keys;
pub mod negotiate;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwe::{self, JweHeader};
use serde_json::{Map, Value};

use super::error::{ApiError, ErrorCode};
use keys::{DirKey, Recipient, TenantKey};

/// The media type of an encrypted body.
/// What this replica caches about tenants' encrypted payloads; part of `AppState`, forgotten with
/// a tenant's other cached state.
#[derive(Default)]
pub struct PayloadCaches {
    pub tenant_keys: keys::TenantKeys,
    pub requirements: negotiate::Requirements,
}

impl PayloadCaches {
    pub fn forget_tenant(&self, slug: &str) {
        self.tenant_keys.forget(slug);
        self.requirements.forget(slug);
    }

    pub fn forget_all(&self) {
        self.tenant_keys.forget_all();
        self.requirements.forget_all();
    }
}

pub const MEDIA_TYPE: &str = "application/jose";

/// The longest base64url protected header accepted (1.5 KiB of JSON): far more than any
/// header of the accepted algorithms needs.
pub const MAX_HEADER: usize = 2048;

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
    compact: &'a [u8],
}

/// Checks the shape and the protected header of a compact JWE, bounded, before any key is used.
pub fn screen(compact: &[u8]) -> Result<Screened<'_>, JweError> {
    let compact = compact.trim_ascii();
    let mut parts = compact.split(|b| *b == b'.');
    let (Some(header), Some(key), Some(iv), Some(_ciphertext), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(JweError::Invalid);
    };
    if header.len() > MAX_HEADER {
        return Err(JweError::Invalid);
    }
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JweError::Invalid)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&header).map_err(|_| JweError::Invalid)?;
    if header.contains_key("zip") {
        return Err(JweError::Unsupported(
            "compressed payloads (`zip`) are refused",
        ));
    }
    if header.contains_key("crit") {
        return Err(JweError::Unsupported(
            "critical header extensions (`crit`) are refused",
        ));
    }
    if header.get("enc").and_then(Value::as_str) != Some(ENC) {
        return Err(JweError::Unsupported(
            "the content encryption is not A256GCM",
        ));
    }
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("dir") => Alg::Dir,
        Some("RSA-OAEP-256") => Alg::RsaOaep256,
        _ => {
            return Err(JweError::Unsupported(
                "the key management algorithm is not accepted",
            ));
        }
    };
    // `dir` has no encrypted key; RSA-OAEP-256 must have one. A256GCM has a 96-bit IV and a
    // full 128-bit tag: OpenSSL would check a truncated tag as far as it goes, so a shorter one
    // must never reach it.
    if key.is_empty() != (alg == Alg::Dir) || iv.len() != IV_B64 || tag.len() != TAG_B64 {
        return Err(JweError::Invalid);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JweError::Invalid),
    };
    Ok(Screened { alg, kid, compact })
}

impl Screened<'_> {
    /// Decrypts with the calling credential's shared key.
    pub fn decrypt_dir(&self, key: &DirKey) -> Result<Vec<u8>, JweError> {
        if self.alg != Alg::Dir || self.kid.as_deref().is_some_and(|kid| kid != key.kid()) {
            return Err(JweError::Invalid);
        }
        let decrypter = key.decrypter().map_err(|_| JweError::Invalid)?;
        open(self.compact, &decrypter)
    }

    /// Decrypts with the tenant's RSA key.
    pub fn decrypt_rsa(&self, key: &TenantKey) -> Result<Vec<u8>, JweError> {
        if self.alg != Alg::RsaOaep256 || self.kid.as_deref().is_some_and(|kid| kid != key.kid()) {
            return Err(JweError::Invalid);
        }
        open(self.compact, key.decrypter())
    }
}

/// The JOSE library's codec (its registered algorithms are narrowed by [`screen`] first).
static CONTEXT: std::sync::LazyLock<jwe::JweContext> =
    std::sync::LazyLock::new(jwe::JweContext::new);

fn open(compact: &[u8], decrypter: &dyn jwe::JweDecrypter) -> Result<Vec<u8>, JweError> {
    CONTEXT
        .deserialize_compact(compact, decrypter)
        .map(|(payload, _)| payload)
        .map_err(|_| JweError::Invalid)
}

/// Encrypts `payload` to `recipient` as a compact JWE with `enc` A256GCM. `cty` names the
/// payload's media type when it is not JSON.
pub fn seal(payload: &[u8], recipient: &Recipient, cty: Option<&str>) -> Result<String, ApiError> {
    let mut header = JweHeader::new();
    header.set_content_encryption(ENC);
    header.set_key_id(recipient.kid());
    if let Some(cty) = cty {
        header.set_content_type(cty);
    }
    let sealed = match recipient {
        Recipient::Dir(key) => key
            .encrypter()
            .and_then(|e| CONTEXT.serialize_compact(payload, &header, &e)),
        Recipient::Rsa(key) => CONTEXT.serialize_compact(payload, &header, key.encrypter()),
    };
    sealed.map_err(|e| ApiError::internal("jose", anyhow::anyhow!("encrypting a response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(header: &Value, key: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
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
