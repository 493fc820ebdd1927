//! Trusted issuers: outside JWT issuers whose tokens act as one of the tenant's service
//! accounts (workload identity federation).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("trusted_issuers")
                    .col(pk_uuid("id"))
                    .col(string_uniq("name"))
                    // The `iss` its tokens carry; one trust per issuer.
                    .col(string_uniq("issuer"))
                    .col(string("jwks_url"))
                    // JSON array: a token's `aud` must name one of them.
                    .col(json("audiences"))
                    // JSON object claim → required value.
                    .col(json("required_claims"))
                    .col(uuid("service_account_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("trusted_issuers", "service_account_id")
                            .to("service_accounts", "id")
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
