//! A user's WebAuthn passkey: the second factor a tenant may require.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "passkeys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// The user's own label ("laptop", "YubiKey").
    pub name: String,
    /// base64url of the WebAuthn credential id.
    #[sea_orm(unique)]
    pub credential_id: String,
    /// The credential as webauthn-rs serializes it: public key, signature counter, flags.
    pub credential: Json,
    /// The authenticator model (AAGUID) the authenticator reported at registration; the nil
    /// UUID when it reported none, absent for passkeys registered before it was recorded.
    pub aaguid: Option<Uuid>,
    /// When an assertion showed a counter that went backwards: a possible clone, refused since.
    pub flagged_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
