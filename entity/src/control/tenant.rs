//! The tenant registry: one row per onboarded tenant.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// `^[a-z][a-z0-9-]{1,62}$`; the schema is `t_<slug>` with `-` replaced by `_`.
    #[sea_orm(unique)]
    pub slug: String,
    pub name: String,
    /// `dev`, `stage` or `prod`.
    pub environment: String,
    /// `provisioning`, `active`, `suspended` or `deleting`.
    pub status: String,
    /// Requests per second of one principal; `None`: the process default.
    pub rate_limit_principal: Option<i32>,
    /// Requests per second to the whole tenant; `None`: the process default.
    pub rate_limit_tenant: Option<i32>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
