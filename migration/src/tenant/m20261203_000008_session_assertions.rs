//! When a session last passed a passkey assertion, apart from how strongly it signed in: an
//! identity provider's trusted MFA completes the sign-in but is no fresh assertion for step-up.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("sessions")
                    .add_column(timestamp_with_time_zone_null("passkey_asserted_at"))
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
