//! The platform's own audit trail: operator calls, failed operator logins, tenant deletions.

use sea_orm_migration::prelude::*;

use crate::audit_trail;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in audit_trail::tables() {
            manager.create_table(table).await?;
        }
        manager.exec_stmt(audit_trail::genesis()).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
