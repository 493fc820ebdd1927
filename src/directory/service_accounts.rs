//! Service accounts: non-human principals that authenticate with API keys, OAuth clients and
//! trusted issuers' tokens.

use chrono::Utc;
use entity::tenant::service_account;
use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait as _};
use uuid::Uuid;

use super::AccountStatus;
use crate::authz::actions::{ServiceAccountCreate, ServiceAccountUpdate};
use crate::tenancy::work::{AutomaticResponse, Permit, WriteTx};

pub async fn create(
    tx: &WriteTx,
    _: &impl Permit<ServiceAccountCreate>,
    name: String,
) -> Result<service_account::Model, DbErr> {
    service_account::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name),
        created_at: Set(Utc::now()),
        status: Set(AccountStatus::Active.as_str().into()),
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

/// Sets the status of `account`. The change must be committed as invalidating: replicas hold
/// accounts' statuses in memory (`identity::accounts`).
pub async fn set_status(
    tx: &WriteTx,
    _: &impl Permit<ServiceAccountUpdate>,
    account: service_account::Model,
    status: AccountStatus,
) -> Result<service_account::Model, DbErr> {
    let mut row: service_account::ActiveModel = account.into();
    row.status = Set(status.as_str().into());
    row.update(tx.conn()).await
}

/// Disables service account `id` (an automatic response); `false` when there is no such
/// account.
pub async fn disable(tx: &WriteTx, _: &AutomaticResponse, id: Uuid) -> Result<bool, DbErr> {
    let Some(account) = get(tx.conn(), id).await? else {
        return Ok(false);
    };
    let mut row: service_account::ActiveModel = account.into();
    row.status = Set(AccountStatus::Disabled.as_str().into());
    row.update(tx.conn()).await?;
    Ok(true)
}
