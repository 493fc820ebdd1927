//! The two migrators of Flowgate.
//!
//! [`ControlMigrator`] owns the control plane (schema `flowgate` on PostgreSQL, the control-plane
//! file on SQLite). [`TenantMigrator`] owns one tenant's tables and runs once per tenant schema or
//! file. Every migration runs in a transaction on both databases, so a crash never leaves a
//! half-migrated tenant behind.

pub use sea_orm_migration::prelude::*;

mod audit_trail;
mod control;
mod tenant;

/// The hash that the first audit event of every trail chains to.
pub const AUDIT_GENESIS_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// Migrates the control plane.
pub struct ControlMigrator;

#[async_trait::async_trait]
impl MigratorTrait for ControlMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(control::m20261129_000001_control::Migration),
            Box::new(control::m20261201_000001_platform_audit::Migration),
            Box::new(control::m20261202_000001_tenant_rate_limits::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "flowgate_migrations".into_iden()
    }
}

/// Migrates one tenant's schema or file.
pub struct TenantMigrator;

#[async_trait::async_trait]
impl MigratorTrait for TenantMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(tenant::m20261129_000001_spine::Migration),
            Box::new(tenant::m20261129_000002_authz::Migration),
            Box::new(tenant::m20261203_000001_signin::Migration),
            Box::new(tenant::m20261203_000002_clients::Migration),
            Box::new(tenant::m20261203_000003_saml::Migration),
            Box::new(tenant::m20261203_000004_trusted_issuers::Migration),
            Box::new(tenant::m20261203_000005_secrets::Migration),
            Box::new(tenant::m20261203_000006_passkeys::Migration),
            Box::new(tenant::m20261203_000007_break_glass::Migration),
            Box::new(tenant::m20261203_000008_session_assertions::Migration),
            Box::new(tenant::m20261203_000009_passkey_models::Migration),
            Box::new(tenant::m20261204_000001_service_account_status::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "flowgate_tenant_migrations".into_iden()
    }
}
