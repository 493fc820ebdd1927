//! Process definitions: a draft that is edited, and the version that was last published.

use chrono::Utc;
use entity::tenant::process;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DbErr,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use uuid::Uuid;

use crate::authz::actions::{ProcessCreate, ProcessDelete, ProcessEdit, ProcessPublish};
use crate::tenancy::work::{Permit, WriteTx};

pub async fn create(
    tx: &WriteTx,
    _: &impl Permit<ProcessCreate>,
    name: String,
    folder: Option<Uuid>,
    definition: serde_json::Value,
) -> Result<process::Model, DbErr> {
    let conn = tx.conn();
    let now = Utc::now();
    process::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name),
        folder_id: Set(folder),
        definition: Set(definition),
        version: Set(1),
        published_version: Set(None),
        published_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(conn)
    .await
}

pub async fn get(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<process::Model>, DbErr> {
    process::Entity::find_by_id(id).one(conn).await
}

/// Up to `limit` processes after `after` in id order: those in `folder`, or all for `None`.
pub async fn page(
    conn: &impl ConnectionTrait,
    folder: Option<Uuid>,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<process::Model>, DbErr> {
    let mut query = process::Entity::find()
        .order_by_asc(process::Column::Id)
        .limit(limit);
    if let Some(folder) = folder {
        query = query.filter(process::Column::FolderId.eq(folder));
    }
    if let Some(after) = after {
        query = query.filter(process::Column::Id.gt(after));
    }
    query.all(conn).await
}

/// Applies an edit to the draft and bumps its version.
pub async fn edit(
    tx: &WriteTx,
    _: &impl Permit<ProcessEdit>,
    existing: process::Model,
    name: Option<String>,
    definition: Option<serde_json::Value>,
) -> Result<process::Model, DbErr> {
    let conn = tx.conn();
    let version = existing.version + 1;
    let mut row: process::ActiveModel = existing.into();
    if let Some(name) = name {
        row.name = Set(name);
    }
    if let Some(definition) = definition {
        row.definition = Set(definition);
    }
    row.version = Set(version);
    row.updated_at = Set(Utc::now());
    row.update(conn).await
}

/// Publishes the current draft version.
pub async fn publish(
    tx: &WriteTx,
    _: &impl Permit<ProcessPublish>,
    existing: process::Model,
) -> Result<process::Model, DbErr> {
    let conn = tx.conn();
    let version = existing.version;
    let mut row: process::ActiveModel = existing.into();
    row.published_version = Set(Some(version));
    row.published_at = Set(Some(Utc::now()));
    row.update(conn).await
}

pub async fn delete(tx: &WriteTx, _: &impl Permit<ProcessDelete>, id: Uuid) -> Result<bool, DbErr> {
    let conn = tx.conn();
    Ok(process::Entity::delete_by_id(id)
        .exec(conn)
        .await?
        .rows_affected
        > 0)
}
