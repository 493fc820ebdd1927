//! The tenant's append-only, hash-chained audit trail.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    /// 1, 2, 3, … without gaps; the chain order.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub id: Uuid,
    pub occurred_at: DateTimeUtc,
    pub request_id: String,
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    /// `allow`, `deny` or `none` (no decision was needed or reached).
    pub decision: String,
    pub status: i32,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: Json,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
