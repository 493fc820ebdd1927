//! A role granted to a subject on a scope; each row becomes one linked Cedar template.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "role_bindings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub role: String,
    /// `user`, `service_account` or `group`.
    pub subject_type: String,
    pub subject_id: Uuid,
    /// `tenant`, `folder`, `process`, `form`, `report` or `secret`.
    pub scope_type: String,
    /// Absent for the tenant scope.
    pub scope_id: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
