//! Tenant staff. Attributes are the claims the authorization engine sees as entity tags.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Stored lower-cased; unique within the tenant.
    #[sea_orm(unique)]
    pub email: String,
    pub display_name: String,
    /// A JSON object of string values (department, region, …).
    pub attributes: Json,
    /// `active` or `disabled`.
    pub status: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
