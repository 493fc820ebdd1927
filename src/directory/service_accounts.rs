//! Service accounts: non-human principals that authenticate with API keys.

use chrono::Utc;
use entity::tenant::service_account;
use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait as _};
use uuid::Uuid;

use crate::authz::actions::ServiceAccountCreate;
use crate::tenancy::work::{Permit, WriteTx};

pub async fn create(
    tx: &WriteTx,
    _: &impl Permit<ServiceAccountCreate>,
    name: String,
) -> Result<service_account::Model, DbErr> {
    service_account::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name),
        created_at: Set(Utc::now()),
    }
    .insert(tx.conn())
    .await
}

pub async fn get(
    conn: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<service_account::Model>, DbErr> {
    service_account::Entity::find_by_id(id).one(conn).await
}
