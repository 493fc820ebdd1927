//! Authorization: one Cedar policy engine per tenant decides every tenant request, for roles
//! (RBAC) and claims (CBAC) alike.
//!
//! Invariants:
//! - Every tenant endpoint names its [`Action`] in its signature (see
//!   `http::pipeline::authz::Authorized`; the tenant unit of work, `tenancy::work`, serves every other caller); there is no other way to reach a tenant handler.
//! - Decisions fail closed: an evaluation error, an unknown entity or an unparsable request is a
//!   denial, never an allow; and Cedar's `forbid` overrides every `permit`.
//! - Roles are Cedar templates; each role binding links a role's templates to a subject
//!   (`?principal`) and a scope (`?resource`). Claim-based policies are static Cedar policies
//!   validated against the published schema before they are stored.
//! - A decision reads no storage: the tenant's compiled policy set (and its folder tree) is
//!   cached, and dropped on any change to roles, bindings, policies or folders, on this replica
//!   at once and on the others through the invalidation channel.

pub mod actions;
pub mod bindings;
pub mod delegation;
mod engine;
pub mod impact;
pub mod policy_text;
pub mod roles;
pub mod rules;
pub mod schema;
mod service;

pub use actions::{Action, CATALOGUE};
pub use engine::{
    Binding, Decision, Facts, Grantor, MAX_FOLDER_DEPTH, PolicyEngine, Resource, Subject,
    TenantPolicies, TenantRules, policy_object,
};
pub use service::{Authz, StoredRules, load_subject, process_folder, resolve_resource};

use crate::tenancy::TenancyError;

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sea_orm::DbErr> for AuthzError {
    fn from(e: sea_orm::DbErr) -> Self {
        AuthzError::Tenancy(e.into())
    }
}
