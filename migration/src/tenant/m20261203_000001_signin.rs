//! Sign-in: identity providers, the users' identities at them, pre-login states, browser
//! sessions and the tenant's sign-in settings.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in tables() {
            manager.create_table(table).await?;
        }
        // A person is one user per identity provider and subject, never matched by email.
        manager
            .create_index(
                Index::create()
                    .name("user_identities_subject")
                    .table("user_identities")
                    .col("idp_id")
                    .col("subject")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sessions_user")
                    .table("sessions")
                    .col("user_id")
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
            .table("identity_providers")
            .col(pk_uuid("id"))
            .col(string_uniq("name"))
            // `oidc` or `saml`.
            .col(string("kind"))
            // The provider's settings as the API shows them (never a secret).
            .col(json("config"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("updated_at"))
            .to_owned(),
        Table::create()
            .table("user_identities")
            .col(pk_uuid("id"))
            .col(uuid("user_id"))
            .col(uuid("idp_id"))
            .col(string("subject"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("last_login_at"))
            .foreign_key(
                ForeignKey::create()
                    .from("user_identities", "user_id")
                    .to("users", "id")
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .foreign_key(
                ForeignKey::create()
                    .from("user_identities", "idp_id")
                    .to("identity_providers", "id")
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .to_owned(),
        Table::create()
            .table("login_states")
            // SHA-256 of the `state` sent to the provider.
            .col(string("id").primary_key())
            .col(uuid("idp_id"))
            // SHA-256 of the pre-login cookie this login is bound to.
            .col(string("binding"))
            .col(string("nonce"))
            .col(string("pkce_verifier"))
            .col(timestamp_with_time_zone("expires_at"))
            .foreign_key(
                ForeignKey::create()
                    .from("login_states", "idp_id")
                    .to("identity_providers", "id")
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .to_owned(),
        Table::create()
            .table("sessions")
            .col(pk_uuid("id"))
            // SHA-256 of the cookie's token; the token itself is never stored.
            .col(string_uniq("token_hash"))
            .col(uuid("user_id"))
            .col(uuid_null("idp_id"))
            // How the session was opened: `oidc` or `saml`.
            .col(string("method"))
            // `sso`, or `sso+mfa` once a second factor was passed.
            .col(string("level"))
            .col(timestamp_with_time_zone("strong_auth_at"))
            .col(timestamp_with_time_zone("created_at"))
            .col(timestamp_with_time_zone("last_seen_at"))
            .col(timestamp_with_time_zone("expires_at"))
            .col(string_null("source_ip"))
            .col(string_null("user_agent"))
            .col(timestamp_with_time_zone_null("revoked_at"))
            .foreign_key(
                ForeignKey::create()
                    .from("sessions", "user_id")
                    .to("users", "id")
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .to_owned(),
        Table::create()
            .table("tenant_settings")
            .col(string("key").primary_key())
            .col(json("value"))
            .col(timestamp_with_time_zone("updated_at"))
            .to_owned(),
    ]
}
