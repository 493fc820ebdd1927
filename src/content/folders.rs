//! Folders nest; a role bound on a folder covers everything inside it.

use chrono::Utc;
use entity::tenant::{folder, process, secret};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DbErr,
    EntityTrait as _, PaginatorTrait as _, QueryFilter as _, QueryOrder as _,
};
use uuid::Uuid;

use crate::authz::actions::{FolderCreate, FolderDelete, FolderUpdate};
use crate::tenancy::work::{Permit, WriteTx};

pub async fn create(
    tx: &WriteTx,
    _: &impl Permit<FolderCreate>,
    name: String,
    parent: Option<Uuid>,
) -> Result<folder::Model, DbErr> {
    let conn = tx.conn();
    let now = Utc::now();
    folder::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name),
        parent_id: Set(parent),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(conn)
    .await
}

pub async fn get(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<folder::Model>, DbErr> {
    folder::Entity::find_by_id(id).one(conn).await
}

pub async fn list(conn: &impl ConnectionTrait) -> Result<Vec<folder::Model>, DbErr> {
    folder::Entity::find()
        .order_by_asc(folder::Column::Id)
        .all(conn)
        .await
}

pub async fn rename(
    tx: &WriteTx,
    _: &impl Permit<FolderUpdate>,
    id: Uuid,
    name: String,
) -> Result<Option<folder::Model>, DbErr> {
    let conn = tx.conn();
    let Some(existing) = get(conn, id).await? else {
        return Ok(None);
    };
    let mut row: folder::ActiveModel = existing.into();
    row.name = Set(name);
    row.updated_at = Set(Utc::now());
    row.update(conn).await.map(Some)
}

/// Whether the folder holds folders, processes or secrets.
pub async fn is_empty(conn: &impl ConnectionTrait, id: Uuid) -> Result<bool, DbErr> {
    let folders = folder::Entity::find()
        .filter(folder::Column::ParentId.eq(id))
        .count(conn)
        .await?;
    let processes = process::Entity::find()
        .filter(process::Column::FolderId.eq(id))
        .count(conn)
        .await?;
    let secrets = secret::Entity::find()
        .filter(secret::Column::FolderId.eq(id))
        .count(conn)
        .await?;
    Ok(folders == 0 && processes == 0 && secrets == 0)
}

pub async fn delete(tx: &WriteTx, _: &impl Permit<FolderDelete>, id: Uuid) -> Result<bool, DbErr> {
    let conn = tx.conn();
    Ok(folder::Entity::delete_by_id(id)
        .exec(conn)
        .await?
        .rows_affected
        > 0)
}
