//! Process definitions: edited as drafts, published as numbered versions.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "processes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: String,
    /// Absent for a process at the tenant's root.
    pub folder_id: Option<Uuid>,
    /// The draft definition (a JSON object).
    pub definition: Json,
    /// The draft's version: 1 at creation, +1 on every edit.
    pub version: i32,
    /// The draft version that was last published.
    pub published_version: Option<i32>,
    pub published_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
