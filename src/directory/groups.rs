//! Groups of users.

use chrono::Utc;
use entity::tenant::{group, group_member};
use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait as _};
use uuid::Uuid;

use crate::authz::actions::{GroupCreate, GroupMemberAdd};
use crate::tenancy::work::{Permit, WriteTx};

pub async fn create(
    tx: &WriteTx,
    _: &impl Permit<GroupCreate>,
    name: String,
) -> Result<group::Model, DbErr> {
    group::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name),
        created_at: Set(Utc::now()),
    }
    .insert(tx.conn())
    .await
}

pub async fn get(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<group::Model>, DbErr> {
    group::Entity::find_by_id(id).one(conn).await
}

/// Adds `user_id` to `group_id`; adding an existing member is a no-op.
pub async fn add_member(
    tx: &WriteTx,
    _: &impl Permit<GroupMemberAdd>,
    group_id: Uuid,
    user_id: Uuid,
) -> Result<bool, DbErr> {
    let conn = tx.conn();
    let existing = group_member::Entity::find_by_id((group_id, user_id))
        .one(conn)
        .await?;
    if existing.is_some() {
        return Ok(false);
    }
    let inserted = group_member::ActiveModel {
        group_id: Set(group_id),
        user_id: Set(user_id),
        created_at: Set(Utc::now()),
    }
    .insert(conn)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        // A concurrent request added the same member first.
        Err(e) if crate::tenancy::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e),
    }
}
