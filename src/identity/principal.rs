//! The authenticated caller of a tenant request.

use uuid::Uuid;

/// Who made a tenant request; produced only by successful authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A service account that presented one of its API keys.
    ServiceAccount { id: Uuid, api_key_id: Uuid },
}

impl Principal {
    /// `service_account`, as recorded in the audit trail and used in role-binding subjects.
    pub fn actor_type(&self) -> &'static str {
        match self {
            Principal::ServiceAccount { .. } => "service_account",
        }
    }

    pub fn actor_id(&self) -> String {
        match self {
            Principal::ServiceAccount { id, .. } => id.to_string(),
        }
    }
}
