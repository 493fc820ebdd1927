//! A service account's status: a disabled account's credentials (API keys, OAuth clients and
//! their tokens, trusted issuers' tokens) all stop working until it is enabled again. Existing
//! accounts are active.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("service_accounts")
                    .add_column(string("status").default("active"))
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
