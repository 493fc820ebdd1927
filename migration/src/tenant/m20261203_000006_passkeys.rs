//! WebAuthn passkeys of the tenant's users, and the server-side state of ceremonies in progress
//! (each used once, bound to the session that began it).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("passkeys")
                    .col(pk_uuid("id"))
                    .col(uuid("user_id"))
                    .col(string("name"))
                    // base64url of the credential id: one credential belongs to one user.
                    .col(string_uniq("credential_id"))
                    // The credential as webauthn-rs keeps it (public key, counter, flags).
                    .col(json("credential"))
                    // Set when an assertion showed a counter that went backwards (a clone).
                    .col(timestamp_with_time_zone_null("flagged_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("last_used_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("passkeys", "user_id")
                            .to("users", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("passkeys_user")
                    .table("passkeys")
                    .col("user_id")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("webauthn_ceremonies")
                    .col(pk_uuid("id"))
                    .col(uuid("session_id"))
                    // `register` or `authenticate`.
                    .col(string("kind"))
                    .col(json("state"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .from("webauthn_ceremonies", "session_id")
                            .to("sessions", "id")
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
