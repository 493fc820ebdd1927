//! Service accounts: non-human principals that authenticate with API keys, OAuth clients and
//! trusted issuers' tokens.

use chrono::Utc;
use entity::tenant::service_account;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait as _,
    QuerySelect as _,
};
use uuid::Uuid;

use super::AccountStatus;
use crate::authz::actions::{ServiceAccountCreate, ServiceAccountDisable};
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

/// Service account `id`, locked until the caller's transaction ends (PostgreSQL; SQLite's write
/// transaction holds the file): concurrent changes of its status take turns.
pub async fn get_locked(tx: &WriteTx, id: Uuid) -> Result<Option<service_account::Model>, DbErr> {
    service_account::Entity::find_by_id(id)
        .lock_exclusive()
        .one(tx.conn())
        .await
}

/// Sets the status of `account`. Commit the change as invalidating: replicas hold accounts'
/// statuses in memory (`identity::accounts`).
pub async fn set_status(
    tx: &WriteTx,
    _: &impl Permit<ServiceAccountDisable>,
    account: service_account::Model,
    status: AccountStatus,
) -> Result<service_account::Model, DbErr> {
    write_status(tx, account, status).await
}

/// Disables service account `id` (an automatic response); `false` when there is no such
/// account or it is disabled already. Commit the change as invalidating.
pub async fn disable(tx: &WriteTx, _: &AutomaticResponse, id: Uuid) -> Result<bool, DbErr> {
    match get_locked(tx, id).await? {
        Some(account) if AccountStatus::parse(&account.status) == AccountStatus::Active => {
            write_status(tx, account, AccountStatus::Disabled).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

async fn write_status(
    tx: &WriteTx,
    account: service_account::Model,
    status: AccountStatus,
) -> Result<service_account::Model, DbErr> {
    let mut row: service_account::ActiveModel = account.into();
    row.status = Set(status.as_str().into());
    row.update(tx.conn()).await
}
