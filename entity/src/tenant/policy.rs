//! Claim-based policies: one Cedar static policy each, validated against the tenant schema.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "policies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Unique within the tenant; decisions name the policy as `policy:<name>`.
    #[sea_orm(unique)]
    pub name: String,
    pub description: String,
    /// Cedar source of exactly one `permit` or `forbid`.
    pub text: String,
    /// 1 at creation, +1 on every change.
    pub version: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
