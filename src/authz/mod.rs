//! Authorization: one Cedar policy engine per tenant decides every tenant request.
//!
//! Invariants:
//! - Every tenant endpoint names its [`Action`] in its signature (see
//!   `http::extract::Authorized`); there is no other way to reach a tenant handler.
//! - Decisions fail closed: an evaluation error, an unknown entity or an unparsable request is a
//!   denial, never an allow.
//! - Built-in roles are Cedar templates; each role binding is one link of a template to a
//!   subject (`?principal`) and a scope (`?resource`), so the policy set is the whole truth.
//! - A tenant's policy set is cached and dropped on any change to the tenant's bindings, on this
//!   replica at once and on the others through the invalidation channel.

pub mod actions;
pub mod bindings;
mod engine;
pub mod roles;
pub mod schema;

pub use actions::{Action, CATALOGUE};
pub use engine::{Decision, Policies, PolicyEngine, Resource, TenantPolicies};

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
