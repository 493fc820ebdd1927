//! The server-side state of a WebAuthn ceremony in progress: its challenge lives here, never in
//! the browser, and a ceremony is finished at most once, by the session that began it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webauthn_ceremonies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub session_id: Uuid,
    /// `register` or `authenticate`.
    pub kind: String,
    /// webauthn-rs's ceremony state.
    pub state: Json,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
