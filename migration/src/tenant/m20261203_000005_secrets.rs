//! Tenant secrets (names, folders and versions; the values live in the key store) and the data
//! keys of envelope encryption (wrapped under the tenant's key-encryption key).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("secrets")
                    .col(pk_uuid("id"))
                    .col(string_uniq("name"))
                    .col(uuid_null("folder_id"))
                    .col(string_null("description"))
                    // JSON object of string labels.
                    .col(json("labels"))
                    .col(integer("current_version"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("secrets", "folder_id")
                            .to("folders", "id")
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("secret_versions")
                    .col(pk_uuid("id"))
                    .col(uuid("secret_id"))
                    .col(integer("version"))
                    .col(timestamp_with_time_zone("created_at"))
                    // Set when a newer version replaced this one: readable until then.
                    .col(timestamp_with_time_zone_null("readable_until"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("secret_versions", "secret_id")
                            .to("secrets", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("secret_versions_secret")
                    .table("secret_versions")
                    .col("secret_id")
                    .col("version")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("data_keys")
                    .col(pk_uuid("id"))
                    // `<backend>:v<N>:…`, as the key store wrapped it.
                    .col(text("wrapped"))
                    .col(integer("kek_version"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
