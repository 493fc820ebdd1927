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
        /// Whether the session passed a second factor.
        mfa: bool,
        /// When the user last proved themselves strongly.
        strong_auth_at: DateTime<Utc>,
        /// The session's absolute end.
        expires_at: DateTime<Utc>,
    },
    /// An access token exchanged for the browser session `session` (for scripts).
    AccessToken { session: Uuid },
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
