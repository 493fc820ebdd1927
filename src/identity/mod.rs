//! Identity: who is calling.
//!
//! Invariants:
//! - Authentication fails closed: anything but a well-formed, known, unrevoked, unexpired
//!   credential is [`IdentityError::InvalidCredentials`], and the client is not told which check
//!   failed (the audit trail is, through [`IdentityError::audit_reason`]).
//! - Credentials are compared in constant time and never logged, returned or audited.

pub mod accounts;
pub mod api_key;
pub mod federation;
pub mod operator;
mod principal;
pub(crate) mod records;
pub mod token_keys;
pub mod tokens;
pub mod trust;

pub use principal::{AccountCredential, Principal, SecondFactor, UserCredential};

use crate::keystore::KeyStoreError;
use crate::tenancy::TenancyError;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no credentials were presented")]
    MissingCredentials,
    #[error("the credentials are not valid")]
    InvalidCredentials(InvalidReason),
    /// A change authenticated by a session cookie came without this server's `Origin`.
    #[error("a cookie-authenticated change came from a foreign or unknown origin")]
    ForeignOrigin,
    /// The session behind a person's access token still owes the tenant a second factor.
    #[error("the session has not passed the second factor the tenant requires")]
    SecondFactorOwed,
    #[error("the identity store is unavailable")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Why a credential was refused; recorded in the audit trail, never sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    Malformed,
    UnknownKey,
    WrongSecret,
    Revoked,
    Expired,
    /// The credential's account (a service account, or a session's person) is disabled.
    AccountDisabled,
}

impl IdentityError {
    /// Whether a credential the caller presented is what failed (unknown, wrong, expired,
    /// revoked, of a disabled account): only such a refusal spends the source's failure budget.
    /// No credential, one sent from another origin, or a session still owing its passkey guessed
    /// nothing, and a page elsewhere can make its visitors' browsers send any of these; a store
    /// that could not be reached is no one's failure.
    pub fn spends_failure_budget(&self) -> bool {
        matches!(self, IdentityError::InvalidCredentials(_))
    }

    /// The reason to record in the audit trail.
    pub fn audit_reason(&self) -> &'static str {
        match self {
            IdentityError::MissingCredentials => "missing_credentials",
            IdentityError::InvalidCredentials(InvalidReason::Malformed) => "malformed_credentials",
            IdentityError::InvalidCredentials(InvalidReason::UnknownKey) => "unknown_key",
            IdentityError::InvalidCredentials(InvalidReason::WrongSecret) => "wrong_secret",
            IdentityError::InvalidCredentials(InvalidReason::Revoked) => "revoked_key",
            IdentityError::InvalidCredentials(InvalidReason::Expired) => "expired_key",
            IdentityError::InvalidCredentials(InvalidReason::AccountDisabled) => "account_disabled",
            IdentityError::ForeignOrigin => "foreign_origin",
            IdentityError::SecondFactorOwed => "second_factor_owed",
            IdentityError::Unavailable(_) => "identity_store_unavailable",
            IdentityError::Unexpected(_) => "identity_error",
        }
    }
}

impl From<TenancyError> for IdentityError {
    fn from(e: TenancyError) -> Self {
        match e {
            TenancyError::Unavailable(e) => IdentityError::Unavailable(e.to_string()),
            other => IdentityError::Unexpected(other.into()),
        }
    }
}

impl From<KeyStoreError> for IdentityError {
    fn from(e: KeyStoreError) -> Self {
        match e {
            KeyStoreError::Unavailable(why) => IdentityError::Unavailable(why),
            KeyStoreError::Unexpected(e) => IdentityError::Unexpected(e),
        }
    }
}

impl From<sea_orm::DbErr> for IdentityError {
    fn from(e: sea_orm::DbErr) -> Self {
        TenancyError::from(e).into()
    }
}
