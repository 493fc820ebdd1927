//! A break-glass passkey sign-in in progress: its challenge, bound to the browser's pre-login
//! cookie, finished at most once.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "break_glass_logins")]
pub struct Model {
    /// SHA-256 (hex) of the pre-login cookie.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub user_id: Uuid,
    /// webauthn-rs's assertion ceremony state.
    pub state: Json,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
