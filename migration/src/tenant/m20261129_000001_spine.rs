//! Users, service accounts, groups, role bindings, API keys and the audit chain.

use sea_orm_migration::{prelude::*, schema::*};

use crate::AUDIT_GENESIS_HASH;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in tables() {
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
        manager
            .exec_stmt(
                Query::insert()
                    .into_table("audit_head")
                    .columns(["id", "seq", "hash"])
                    .values_panic([1.into(), 0i64.into(), AUDIT_GENESIS_HASH.into()])
                    .to_owned(),
            )
            .await
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
        Table::create()
            .table("audit_events")
            .col(big_integer("seq").primary_key())
            .col(uuid("id"))
            .col(timestamp_with_time_zone("occurred_at"))
            .col(string("request_id"))
            .col(string("actor_type"))
            .col(string("actor_id"))
            .col(string("action"))
            .col(string("resource_type"))
            .col(string_null("resource_id"))
            .col(string("decision"))
            .col(integer("status"))
            .col(string_null("source_ip"))
            .col(text_null("user_agent"))
            .col(json("details"))
            .col(string("prev_hash"))
            .col(string("hash"))
            .to_owned(),
        Table::create()
            .table("audit_head")
            .col(integer("id").primary_key())
            .col(big_integer("seq"))
            .col(string("hash"))
            .to_owned(),
        Table::create()
            .table("audit_checkpoints")
            .col(big_integer("seq").primary_key())
            .col(string("hash"))
            .col(timestamp_with_time_zone("created_at"))
            .col(text("signature"))
            .to_owned(),
    ]
}
