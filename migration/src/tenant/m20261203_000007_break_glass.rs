//! Break-glass accounts: emergency local people of a tenant who sign in with a passkey only (no
//! identity provider), and the passkey sign-ins of those accounts in progress (bound to the
//! browser's pre-login cookie, each finished at most once).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("break_glass_accounts")
                    .col(pk_uuid("user_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    // SHA-256 (hex) of the one-time enrollment token, until it is used.
                    .col(string_null("enrollment_hash"))
                    .col(timestamp_with_time_zone_null("enrollment_expires_at"))
                    .col(timestamp_with_time_zone_null("last_used_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("break_glass_accounts", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("break_glass_logins")
                    // SHA-256 (hex) of the pre-login cookie.
                    .col(string("id").primary_key())
                    .col(uuid("user_id"))
                    // webauthn-rs's assertion ceremony state.
                    .col(json("state"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("break_glass_logins", "user_id")
                            .to("users", "id")
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
