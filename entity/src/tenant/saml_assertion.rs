//! A SAML assertion that signed somebody in: kept until it expires, so it cannot be used again.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "saml_assertions")]
pub struct Model {
    /// SHA-256 (hex) of the provider's id and the assertion's `ID`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub idp_id: Uuid,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
