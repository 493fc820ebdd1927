//! The authenticated caller of a tenant request.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::authz::Subject;

/// Who made a tenant request; produced only by successful authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A service account, by one of its API keys or an access token of one of its clients.
    ServiceAccount {
        id: Uuid,
        credential: AccountCredential,
    },
    /// A person of the tenant, signed in through one of its identity providers.
    User {
        id: Uuid,
        credential: UserCredential,
        /// The user as the policy engine sees them (groups, attributes), read when the
        /// credential was checked.
        subject: Arc<Subject>,
    },
}

/// How a service account proved who it is on this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountCredential {
    /// The API key with this id.
    ApiKey(Uuid),
    /// An access token issued to the OAuth client with this id.
    AccessToken { client: Uuid },
    /// A token of an outside issuer the tenant trusts (the trust with this id).
    Federated { trust: Uuid },
}

/// How a user proved who they are on this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCredential {
    /// A browser session's cookie.
    Session {
        id: Uuid,
        /// Where the session stands with the tenant's second factor.
        second_factor: SecondFactor,
        /// When the session last passed a passkey assertion (a provider's trusted MFA passes
        /// the second factor but is no assertion: step-up asks for one).
        passkey_asserted_at: Option<DateTime<Utc>>,
        /// When the user last proved themselves strongly (at the provider, or with a passkey
        /// once the second factor is passed).
        strong_auth_at: DateTime<Utc>,
        /// The session's absolute end.
        expires_at: DateTime<Utc>,
    },
    /// An access token exchanged for the browser session `session` (for scripts); only a
    /// session that owes no second factor is exchanged or honoured.
    AccessToken {
        session: Uuid,
        /// When the session last passed a passkey assertion, if it did.
        asserted_at: Option<DateTime<Utc>>,
    },
}

/// Where a person's sign-in stands with the second factor the tenant asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    /// A passkey assertion was passed in this session.
    Passed,
    /// The tenant asks for one this session has not given: only `/me`, the person's list of
    /// passkeys and the WebAuthn ceremonies are open to it.
    Owed,
    /// The tenant does not ask for one of this person.
    NotAsked,
}

impl Principal {
    /// `service_account` or `user`, as recorded in the audit trail and used in role-binding
    /// subjects.
    pub fn actor_type(&self) -> &'static str {
        match self {
            Principal::ServiceAccount { .. } => "service_account",
            Principal::User { .. } => "user",
        }
    }

    /// The id of the service account or user.
    pub fn id(&self) -> Uuid {
        match self {
            Principal::ServiceAccount { id, .. } | Principal::User { id, .. } => *id,
        }
    }

    pub fn actor_id(&self) -> String {
        self.id().to_string()
    }

    /// The browser session behind the request: the session cookie's, or the one a person's
    /// access token was exchanged for.
    pub fn session_id(&self) -> Option<Uuid> {
        match self {
            Principal::User {
                credential:
                    UserCredential::Session { id, .. } | UserCredential::AccessToken { session: id, .. },
                ..
            } => Some(*id),
            Principal::ServiceAccount { .. } => None,
        }
    }

    /// Which credential of a service account authenticated the request, for the audit trail
    /// (so that an investigation knows which key to revoke): the API key's id, the OAuth
    /// client's, or the trust's. `None` for a person, whose session is on record elsewhere.
    pub fn credential_id(&self) -> Option<Uuid> {
        match self {
            Principal::ServiceAccount { credential, .. } => Some(match credential {
                AccountCredential::ApiKey(id)
                | AccountCredential::AccessToken { client: id }
                | AccountCredential::Federated { trust: id } => *id,
            }),
            Principal::User { .. } => None,
        }
    }

    /// Whether the caller is a person whose session still owes the tenant a second factor.
    pub fn owes_second_factor(&self) -> bool {
        matches!(
            self,
            Principal::User {
                credential: UserCredential::Session {
                    second_factor: SecondFactor::Owed,
                    ..
                },
                ..
            }
        )
    }

    /// When a person last passed a passkey assertion in the session behind this request; `None`
    /// for a service account or a session that passed none.
    pub fn asserted_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Principal::User {
                credential:
                    UserCredential::Session {
                        passkey_asserted_at,
                        ..
                    },
                ..
            } => *passkey_asserted_at,
            Principal::User {
                credential: UserCredential::AccessToken { asserted_at, .. },
                ..
            } => *asserted_at,
            _ => None,
        }
    }

    /// The kind of credential that authenticated the request, for the audit trail.
    pub fn credential_kind(&self) -> &'static str {
        match self {
            Principal::ServiceAccount {
                credential: AccountCredential::ApiKey(_),
                ..
            } => "api_key",
            Principal::ServiceAccount {
                credential: AccountCredential::AccessToken { .. },
                ..
            } => "access_token",
            Principal::ServiceAccount {
                credential: AccountCredential::Federated { .. },
                ..
            } => "federated_token",
            Principal::User {
                credential: UserCredential::Session { .. },
                ..
            } => "session",
            Principal::User {
                credential: UserCredential::AccessToken { .. },
                ..
            } => "access_token",
        }
    }
}
