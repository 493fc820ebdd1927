//! A signed-in browser session, found by the hash of its cookie's token.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// SHA-256 (hex) of the cookie's token.
    #[sea_orm(unique)]
    pub token_hash: String,
    pub user_id: Uuid,
    pub idp_id: Option<Uuid>,
    /// `oidc`, `saml` or `break_glass`.
    pub method: String,
    /// `sso`; `sso+mfa` once a second factor was passed (a passkey, or the provider's trusted
    /// MFA); `enrollment` for a break-glass enrollment.
    pub level: String,
    /// When the user last proved themselves strongly (the sign-in, later a second factor).
    pub strong_auth_at: DateTimeUtc,
    /// When the session last passed a passkey assertion: what step-up asks to be recent.
    pub passkey_asserted_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
    /// The absolute end of the session.
    pub expires_at: DateTimeUtc,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
