//! `/t/{tenant}/api/v1/folders`

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::folder;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ListParams, Page};
use crate::authz::MAX_FOLDER_DEPTH;
use crate::authz::actions::{FolderCreate, FolderDelete, FolderRead, FolderUpdate};
use crate::content::folders;
use crate::directory::{self, clean_name};
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, PathId};
use crate::http::pipeline::authz::{Authorized, OnFolder};
use crate::tenancy::is_foreign_key_violation;
use crate::tenancy::work::Change;

/// A folder to create, or a new name for one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Finance"}))]
pub struct FolderName {
    #[schema(example = "Finance")]
    pub name: String,
}

/// A folder as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FolderView {
    pub id: Uuid,
    pub name: String,
    /// Absent at the tenant's root.
    pub parent_id: Option<Uuid>,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// A page of folders (the schema `FolderPage`).
pub type FolderPage = Page<FolderView>;

impl From<folder::Model> for FolderView {
    fn from(m: folder::Model) -> Self {
        FolderView {
            id: m.id,
            name: m.name,
            parent_id: m.parent_id,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

async fn name(body: JsonBody<FolderName>) -> Result<String, ApiError> {
    clean_name(&body.parse().await?.name, 200).map_err(|m| ApiError::invalid_field("name", m))
}

/// List folders.
///
/// Only the folders the caller may read, each decided on its own (a `forbid` on one folder hides
/// it). A page may hold fewer than `limit` items and still have a `next_cursor`.
#[utoipa::path(
    get,
    path = "/folders",
    tag = "folders",
    responses((status = 200, body = FolderPage))
)]
pub async fn list_folders(
    auth: Authorized<FolderRead>,
    query: web::Query<ListParams>,
) -> Result<web::Json<FolderPage>, ApiError> {
    let limit = query.limit()?;
    let tx = auth.read().await?;
    let page = Page::filtered(
        query.after,
        limit,
        None,
        async |after, n| {
            Ok(directory::page_by_id::<folder::Entity>(&tx, folder::Column::Id, after, n).await?)
        },
        |f| f.id,
        |f| {
            auth.policies()
                .folder(f.id)
                .is_some_and(|r| auth.may::<FolderRead>(&r))
        },
        FolderView::from,
    )
    .await?;
    tx.commit().await?;
    Ok(web::Json(page))
}

/// Create a folder at the tenant's root.
#[utoipa::path(
    post,
    path = "/folders",
    tag = "folders",
    responses((status = 201, body = FolderView))
)]
pub async fn create_folder(
    auth: Authorized<FolderCreate>,
    body: JsonBody<FolderName>,
) -> Result<HttpResponse, ApiError> {
    let name = name(body).await?;
    let tx = auth.write().await?;
    let folder = folders::create(&tx, auth.allowed(), name, None).await?;
    tx.commit(Change::new("folder", folder.id, 201).invalidating())
        .await?;
    Ok(HttpResponse::Created().json(FolderView::from(folder)))
}

/// Create a folder inside a folder.
///
/// Folders nest up to 32 deep.
#[utoipa::path(
    post,
    path = "/folders/{id}/folders",
    tag = "folders",
    responses((status = 201, body = FolderView))
)]
pub async fn create_subfolder(
    auth: Authorized<FolderCreate, OnFolder>,
    parent: PathId,
    body: JsonBody<FolderName>,
) -> Result<HttpResponse, ApiError> {
    let name = name(body).await?;
    if auth.resource().containers.len() + 1 >= MAX_FOLDER_DEPTH {
        return Err(ApiError::invalid_field(
            "",
            format!("folders nest at most {MAX_FOLDER_DEPTH} deep"),
        ));
    }
    let tx = auth.write().await?;
    let folder = match folders::create(&tx, auth.allowed(), name, Some(parent.0)).await {
        // The parent was deleted since the request was authorized.
        Err(e) if is_foreign_key_violation(&e) => return Err(ApiError::not_found()),
        other => other?,
    };
    tx.commit(
        Change::new("folder", folder.id, 201)
            .detail("parent_id", parent.0.to_string())
            .invalidating(),
    )
    .await?;
    Ok(HttpResponse::Created().json(FolderView::from(folder)))
}

/// Get a folder.
#[utoipa::path(
    get,
    path = "/folders/{id}",
    tag = "folders",
    responses((status = 200, body = FolderView))
)]
pub async fn get_folder(
    auth: Authorized<FolderRead, OnFolder>,
    id: PathId,
) -> Result<web::Json<FolderView>, ApiError> {
    let tx = auth.read().await?;
    let folder = folders::get(&tx, id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    tx.commit().await?;
    Ok(web::Json(folder.into()))
}

/// Rename a folder.
#[utoipa::path(
    patch,
    path = "/folders/{id}",
    tag = "folders",
    responses((status = 200, body = FolderView))
)]
pub async fn update_folder(
    auth: Authorized<FolderUpdate, OnFolder>,
    id: PathId,
    body: JsonBody<FolderName>,
) -> Result<web::Json<FolderView>, ApiError> {
    let name = name(body).await?;
    let tx = auth.write().await?;
    let folder = folders::rename(&tx, auth.allowed(), id.0, name)
        .await?
        .ok_or_else(ApiError::not_found)?;
    tx.commit(Change::new("folder", folder.id, 200)).await?;
    Ok(web::Json(folder.into()))
}

/// Delete an empty folder.
///
/// A folder that holds folders or processes is 409.
#[utoipa::path(
    delete,
    path = "/folders/{id}",
    tag = "folders",
    responses((status = 204, description = "Deleted"), (status = 409, description = "The folder is not empty"))
)]
pub async fn delete_folder(
    auth: Authorized<FolderDelete, OnFolder>,
    id: PathId,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.write().await?;
    if !folders::is_empty(tx.conn(), id.0).await? {
        return Err(ApiError::conflict("The folder is not empty."));
    }
    match folders::delete(&tx, auth.allowed(), id.0).await {
        Ok(true) => {}
        Ok(false) => return Err(ApiError::not_found()),
        // Something was put in the folder meanwhile.
        Err(e) if is_foreign_key_violation(&e) => {
            return Err(ApiError::conflict("The folder is not empty."));
        }
        Err(e) => return Err(e.into()),
    }
    tx.commit(Change::new("folder", id.0, 204).invalidating())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
