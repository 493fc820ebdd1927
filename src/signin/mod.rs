//! Sign-in: a tenant's staff prove who they are at one of the tenant's identity providers, and
//! leave with a session.
//!
//! The flow, one module a step: [`providers`] holds each provider's settings and secret;
//! [`oidc`] runs the authorization code flow with an OpenID provider, and [`saml`] the Web
//! Browser SSO profile with a SAML provider, each verifying what the provider vouches for; [`provisioning`] turns the vouched-for claims into the tenant's user, attributes and
//! groups (just in time); [`sessions`] opens the server-side session behind the browser's
//! cookie and finds it again on later requests; [`outbound`] is the HTTP client for providers.
//!
//! Invariants:
//! - Every refusal has a [`Refusal`] reason that goes into the audit trail; the browser is told
//!   only that sign-in failed and what a person can do about it. No code, token, assertion or
//!   secret is ever logged, audited or shown.
//! - A user is found by provider and subject, never by email alone.

pub mod break_glass;
pub mod logins;
pub mod oidc;
pub mod outbound;
pub mod passkeys;
pub mod providers;
pub mod provisioning;
pub mod saml;
pub mod sessions;
pub mod settings;

use chrono::{DateTime, Utc};
use openidconnect::{ClaimsVerificationError, SignatureVerificationError};
use serde_json::{Map, Value};

use crate::keystore::KeyStoreError;
use crate::tenancy::TenancyError;
use crate::tenancy::work::WorkError;

/// Why a sign-in was refused: recorded in the audit trail, never detailed to the browser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the login is unknown, used or expired")]
    UnknownState,
    #[error("the login was begun in another browser")]
    ForeignBrowser,
    #[error("the provider answered with an error: {0}")]
    ProviderError(String),
    #[error("the provider refused the code: {0}")]
    CodeRejected(String),
    #[error("the token response carries no ID token")]
    NoIdToken,
    #[error("the ID token or assertion is malformed")]
    Malformed,
    #[error("the ID token is not signed with an allowed algorithm")]
    DisallowedAlgorithm,
    #[error("the ID token's or assertion's signature does not verify, or it is unsigned")]
    BadSignature,
    #[error("the ID token names a key the provider does not publish")]
    UnknownKey,
    #[error("the ID token or assertion is from another issuer")]
    WrongIssuer,
    #[error("the ID token or assertion is for another client")]
    WrongAudience,
    #[error("the ID token or assertion is expired or not yet valid")]
    Expired,
    #[error("the SAML response is addressed to another service")]
    WrongRecipient,
    #[error("the SAML response answers no login of this browser")]
    Unsolicited,
    #[error("the SAML response is too large, too deep, has a DTD, or not exactly one assertion")]
    Structure,
    #[error("the SAML assertion names a transient subject")]
    TransientSubject,
    #[error("the SAML assertion was already used")]
    Replayed,
    #[error("the ID token's nonce does not match the login")]
    WrongNonce,
    #[error("the ID token's at_hash does not match the access token")]
    AccessTokenHash,
    #[error("the user belongs to a directory this provider does not admit")]
    WrongDirectory,
    #[error("the user is not in the required hosted domain")]
    WrongDomain,
    #[error("the provider did not verify the user's email")]
    EmailNotVerified,
    #[error("the provider sent no usable email address")]
    NoEmail,
    #[error("another user already has this email address")]
    EmailTaken,
    #[error("the provider asserted an email address outside its email domains")]
    EmailOutsideDomains,
    #[error("the user is deactivated")]
    UserDisabled,
    #[error("another sign-in of the same person made the user first")]
    Concurrent,
}

impl Refusal {
    /// Whether the refusal came before a login begun in this browser was found: an unknown,
    /// used or expired login, one begun elsewhere, or a form that could not be read. Another
    /// site can make a browser arrive so; it cannot reach a login of the browser's own.
    pub fn names_no_login_of_this_browser(&self) -> bool {
        matches!(
            self,
            Refusal::UnknownState | Refusal::ForeignBrowser | Refusal::Structure
        )
    }

    /// The audit trail's name of the reason.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownState => "unknown_state",
            Refusal::ForeignBrowser => "foreign_browser",
            Refusal::ProviderError(_) => "provider_error",
            Refusal::CodeRejected(_) => "code_rejected",
            Refusal::NoIdToken => "no_id_token",
            Refusal::Malformed => "malformed_id_token",
            Refusal::DisallowedAlgorithm => "disallowed_algorithm",
            Refusal::BadSignature => "bad_signature",
            Refusal::UnknownKey => "unknown_key",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::Expired => "expired",
            Refusal::WrongRecipient => "wrong_recipient",
            Refusal::Unsolicited => "unsolicited_response",
            Refusal::Structure => "unacceptable_structure",
            Refusal::TransientSubject => "transient_subject",
            Refusal::Replayed => "replayed_assertion",
            Refusal::WrongNonce => "wrong_nonce",
            Refusal::AccessTokenHash => "at_hash_mismatch",
            Refusal::WrongDirectory => "wrong_directory",
            Refusal::WrongDomain => "wrong_hosted_domain",
            Refusal::EmailNotVerified => "email_not_verified",
            Refusal::NoEmail => "no_email",
            Refusal::EmailTaken => "email_taken",
            Refusal::EmailOutsideDomains => "email_outside_domains",
            Refusal::UserDisabled => "user_disabled",
            Refusal::Concurrent => "concurrent_sign_in",
        }
    }

    /// What a person is told.
    pub fn advice(&self) -> &'static str {
        match self {
            Refusal::UnknownState | Refusal::ForeignBrowser | Refusal::Replayed => {
                "This sign-in link was already used, has expired or was opened in another browser. Start again."
            }
            Refusal::EmailTaken => {
                "An account with your email address exists but is not linked to this identity provider. Ask your administrator."
            }
            Refusal::UserDisabled => "Your account is deactivated. Ask your administrator.",
            Refusal::Concurrent => "You were signing in twice at once. Start again.",
            Refusal::WrongDirectory
            | Refusal::WrongDomain
            | Refusal::EmailNotVerified
            | Refusal::EmailOutsideDomains => {
                "Your account at the identity provider is not admitted to this tenant."
            }
            _ => {
                "The identity provider's answer could not be accepted. Try again, or ask your administrator."
            }
        }
    }

    fn from_verification(e: &ClaimsVerificationError) -> Self {
        match e {
            ClaimsVerificationError::Expired(_) => Refusal::Expired,
            ClaimsVerificationError::InvalidAudience(_) => Refusal::WrongAudience,
            ClaimsVerificationError::InvalidIssuer(_) => Refusal::WrongIssuer,
            ClaimsVerificationError::InvalidNonce(_) => Refusal::WrongNonce,
            ClaimsVerificationError::SignatureVerification(e) => match e {
                SignatureVerificationError::NoMatchingKey => Refusal::UnknownKey,
                SignatureVerificationError::DisallowedAlg(_)
                | SignatureVerificationError::NoSignature
                | SignatureVerificationError::UnsupportedAlg(_) => Refusal::DisallowedAlgorithm,
                _ => Refusal::BadSignature,
            },
            _ => Refusal::Malformed,
        }
    }
}

/// A person an identity provider vouched for: every claim of a verified ID token, or every
/// attribute of a verified SAML assertion. Made only by [`oidc`] and [`saml`], after
/// verification.
#[derive(Debug)]
pub struct Vouched {
    subject: String,
    claims: Map<String, Value>,
    authenticated_at: DateTime<Utc>,
    /// How the provider says it authenticated the person: the ID token's `amr` values and
    /// `acr`, or the SAML assertion's `AuthnContextClassRef`s.
    methods: Vec<String>,
}

impl Vouched {
    pub(super) fn new(
        subject: String,
        claims: Map<String, Value>,
        authenticated_at: DateTime<Utc>,
        methods: Vec<String>,
    ) -> Self {
        Vouched {
            subject,
            claims,
            authenticated_at,
            methods,
        }
    }

    /// Whether the provider authenticated the person with one of `trusted` (its settings'
    /// `trusted_mfa`): then its own MFA stands for the tenant's second factor.
    pub fn passed_trusted_mfa(&self, trusted: &[String]) -> bool {
        self.methods.iter().any(|m| trusted.contains(m))
    }

    /// The provider's subject identifier of the person.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Every claim of the verified ID token.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// When the provider authenticated the person (`auth_time`, else the token's `iat`).
    pub fn authenticated_at(&self) -> DateTime<Utc> {
        self.authenticated_at
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The person cannot be signed in, for the reason given.
    #[error("sign-in refused: {0}")]
    Refused(#[from] Refusal),
    /// The provider could not be reached or answered nonsense (discovery, keys).
    #[error("the identity provider is unavailable: {0}")]
    Provider(String),
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    /// Opening the session failed (the store, the random source).
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    #[error(transparent)]
    Work(#[from] WorkError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sea_orm::DbErr> for SignInError {
    /// A unique violation is a concurrent sign-in of the same new person (the user, an
    /// identity or a mapped group made twice): the loser starts again.
    fn from(e: sea_orm::DbErr) -> Self {
        if crate::tenancy::is_unique_violation(&e) {
            SignInError::Refused(Refusal::Concurrent)
        } else {
            SignInError::Tenancy(e.into())
        }
    }
}
