//! SAML sign-in: the assertions already used, so that none signs anybody in twice.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("saml_assertions")
                    // SHA-256 of the provider's id and the assertion's `ID`.
                    .col(string("id").primary_key())
                    .col(uuid("idp_id"))
                    // When the assertion stops being acceptable anyway (its NotOnOrAfter).
                    .col(timestamp_with_time_zone("expires_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("saml_assertions", "idp_id")
                            .to("identity_providers", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
