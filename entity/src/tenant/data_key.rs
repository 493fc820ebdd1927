//! A data key of envelope encryption, wrapped under the tenant's key-encryption key.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "data_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The key as the key store wrapped it (`<backend>:v<N>:…`); never the plain key.
    #[sea_orm(column_type = "Text")]
    pub wrapped: String,
    /// The version of the key-encryption key `wrapped` is under.
    pub kek_version: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
