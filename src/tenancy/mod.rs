//! Tenancy: who the tenants are and where each one's data lives.
//!
//! Invariants:
//! - Everything that acts on a tenant's data goes through its unit of work ([`work`]):
//!   a principal's context, its decisions and proofs, and transactions that carry the audit.
//! - A tenant's data is reachable only through [`Databases::begin`], which confines the
//!   transaction to that tenant: on PostgreSQL it sets the tenant schema transaction-locally on
//!   a pool whose default search path names no real schema (a forgotten schema fails, it never
//!   reads another tenant); on SQLite it picks the tenant's own file.
//! - Schema and file names come from a validated [`Slug`], never from raw request text.
//! - Per-tenant structures (connection pools, caches) are bounded and opened lazily.

mod cache;
mod db;
mod in_flight;
mod postgres;
mod registry;
pub mod slug;
mod sqlite;
mod turns;
mod tx;
pub mod work;

pub use cache::TenantCache;
pub use db::{
    Access, CONTROL_SCHEMA, Databases, DbKind, is_foreign_key_violation, is_unique_violation,
};
pub use in_flight::Visit;
pub use postgres::PgTx;
pub use registry::{Environment, Tenant, TenantRateLimits, TenantRegistry, TenantStatus};
pub use slug::{Slug, SlugError};
pub use sqlite::open as open_sqlite;
pub use turns::{Turn, Turns};
pub use tx::Tx;

/// Errors of the tenancy layer.
#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("tenant `{0}` already exists")]
    AlreadyExists(String),
    #[error("no tenant `{0}`")]
    NotFound(String),
    #[error("the database is unavailable")]
    Unavailable(#[source] sea_orm::DbErr),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sea_orm::DbErr> for TenancyError {
    fn from(e: sea_orm::DbErr) -> Self {
        if db::is_connection_error(&e) {
            TenancyError::Unavailable(e)
        } else {
            TenancyError::Unexpected(e.into())
        }
    }
}
