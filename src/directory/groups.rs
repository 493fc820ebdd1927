//! Groups of users.

use chrono::Utc;
use entity::tenant::{group, group_member};
use sea_orm::sea_query::OnConflict;
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
    let member = group_member::ActiveModel {
        group_id: Set(group_id),
        user_id: Set(user_id),
        created_at: Set(Utc::now()),
    };
    // An existing member, perhaps added by a concurrent request, is left as it is, without an
    // error that would abort the transaction on PostgreSQL (and with it the change's record).
    let inserted = group_member::Entity::insert(member)
        .on_conflict(
            OnConflict::columns([group_member::Column::GroupId, group_member::Column::UserId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(tx.conn())
        .await?;
    Ok(inserted == 1)
}
