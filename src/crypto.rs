//! Small cryptographic helpers over aws-lc-rs, the one crypto provider of the binary.
//!
//! Invariants: every random value comes from the OS-seeded RNG of aws-lc-rs; secret comparisons
//! go through [`constant_time_eq`]; nothing here logs its inputs.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `N` random bytes from the system RNG.
pub fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(bytes)
}

/// A random token of `N` bytes, base64url without padding.
pub fn random_token<const N: usize>() -> anyhow::Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<N>()?))
}

/// HMAC-SHA256 of `message` under `key`, hex encoded.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hex::encode(hmac::sign(&key, message).as_ref())
}

/// SHA-256 of `message`, hex encoded.
pub fn sha256_hex(message: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, message).as_ref())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.ct_eq(b).into()
}
