//! A tenant secret's name, place and metadata; its values live in the key store, one per
//! version, never in this table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "secrets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub name: String,
    /// Absent for a secret at the tenant's root.
    pub folder_id: Option<Uuid>,
    pub description: Option<String>,
    /// String labels (a JSON object).
    pub labels: Json,
    /// The version a read or a use gets: 1 at creation, +1 at each rotation.
    pub current_version: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
