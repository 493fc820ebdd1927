//! Custom roles, claim-based policies with their history, folders and processes.

use sea_orm_migration::{prelude::*, schema::*};

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
                    .name("folders_parent")
                    .table("folders")
                    .col("parent_id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("processes_folder")
                    .table("processes")
                    .col("folder_id")
                    .to_owned(),
            )
            .await?;
        // One binding per role, subject and scope; the tenant scope has no id, and NULLs are
        // distinct in a unique index, hence the COALESCE (both databases index expressions).
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX role_bindings_unique ON role_bindings \
                 (role, subject_type, subject_id, scope_type, COALESCE(scope_id, ''))",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("policy_versions_policy")
                    .table("policy_versions")
                    .col("policy_id")
                    .col("version")
                    .unique()
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
            .table("roles")
            .col(pk_uuid("id"))
            .col(string_uniq("name"))
            .col(text("description"))
            .col(json("actions"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .to_owned(),
        Table::create()
            .table("policies")
            .col(pk_uuid("id"))
            .col(string_uniq("name"))
            .col(text("description"))
            .col(text("text"))
            .col(integer("version"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .to_owned(),
        Table::create()
            .table("policy_versions")
            .col(pk_uuid("id"))
            .col(uuid("policy_id"))
            .col(string("name"))
            .col(integer("version"))
            // Absent for the version that records the deletion.
            .col(text_null("text"))
            .col(string("actor_type"))
            .col(string("actor_id"))
            .col(timestamp_with_time_zone("created_at"))
            .to_owned(),
        Table::create()
            .table("folders")
            .col(pk_uuid("id"))
            .col(string("name"))
            .col(uuid_null("parent_id"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .foreign_key(
                ForeignKey::create()
                    .from("folders", "parent_id")
                    .to("folders", "id")
                    .on_delete(ForeignKeyAction::Restrict),
            )
            .to_owned(),
        Table::create()
            .table("processes")
            .col(pk_uuid("id"))
            .col(string("name"))
            .col(uuid_null("folder_id"))
            .col(json("definition"))
            .col(integer("version"))
            .col(integer_null("published_version"))
            .col(timestamp_with_time_zone_null("published_at"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .foreign_key(
                ForeignKey::create()
                    .from("processes", "folder_id")
                    .to("folders", "id")
                    .on_delete(ForeignKeyAction::Restrict),
            )
            .to_owned(),
    ]
}
