//! The authenticator model (AAGUID) each passkey reported at registration, so a tenant's list
//! of allowed models applies to passkeys already registered as well as to new ones. Passkeys
//! registered before have none recorded.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("passkeys")
                    .add_column(uuid_null("aaguid"))
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
