//! Users, service accounts, groups, role bindings, API keys and the audit chain.

use sea_orm_migration::{prelude::*, schema::*};

use crate::audit_trail;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in tables().into_iter().chain(audit_trail::tables()) {
            manager.create_table(table).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("role_bindings_subject")
                    .table("role_bindings")
                    .col("subject_type")
                    .col("subject_id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("group_members_user")
                    .table("group_members")
                    .col("user_id")
                    .to_owned(),
            )
            .await?;
        manager.exec_stmt(audit_trail::genesis()).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

fn tables() -> Vec<TableCreateStatement> {
    vec![
        Table::create()
            .table("users")
            .col(pk_uuid("id"))
            .col(string_uniq("email"))
            .col(string("display_name"))
            .col(json("attributes"))
            .col(string("status"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .to_owned(),
        Table::create()
            .table("service_accounts")
            .col(pk_uuid("id"))
            .col(string_uniq("name"))
            .col(timestamp_with_time_zone("created_at"))
            .to_owned(),
        Table::create()
            .table("groups")
            .col(pk_uuid("id"))
            .col(string_uniq("name"))
            .col(timestamp_with_time_zone("created_at"))
            .to_owned(),
        Table::create()
            .table("group_members")
            .col(uuid("group_id"))
            .col(uuid("user_id"))
            .col(timestamp_with_time_zone("created_at"))
            .primary_key(Index::create().col("group_id").col("user_id"))
            .foreign_key(
                ForeignKey::create()
                    .from("group_members", "group_id")
                    .to("groups", "id")
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .foreign_key(
                ForeignKey::create()
                    .from("group_members", "user_id")
                    .to("users", "id")
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .to_owned(),
        Table::create()
            .table("role_bindings")
            .col(pk_uuid("id"))
            .col(string("role"))
            .col(string("subject_type"))
            .col(uuid("subject_id"))
            .col(string("scope_type"))
            .col(string_null("scope_id"))
            .col(timestamp_with_time_zone("created_at"))
            .to_owned(),
        Table::create()
            .table("api_keys")
            .col(pk_uuid("id"))
            .col(string("name"))
            .col(uuid("service_account_id"))
            .col(string_uniq("lookup"))
            .col(string("secret_hash"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone_null("expires_at"))
            .col(timestamp_with_time_zone_null("revoked_at"))
            .foreign_key(
                ForeignKey::create()
                    .from("api_keys", "service_account_id")
                    .to("service_accounts", "id")
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .to_owned(),
    ]
}
