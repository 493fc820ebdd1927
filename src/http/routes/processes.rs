//! `/t/{tenant}/api/v1/processes`

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::process;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Budget, ListParams, Page};
use crate::authz::actions::{
    ProcessCreate, ProcessDelete, ProcessEdit, ProcessPublish, ProcessRead,
};
use crate::authz::schema::EntityKind;
use crate::content::processes;
use crate::directory::clean_name;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, PathId};
use crate::http::pipeline::authz::{Authorized, OnFolder, OnProcess};
use crate::tenancy::is_foreign_key_violation;
use crate::tenancy::work::{Change, TenantContext};

/// A process definition to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Invoice approval", "definition": {"steps": []}}))]
pub struct CreateProcess {
    #[schema(example = "Invoice approval")]
    pub name: String,
    /// The definition (a JSON object of at most 64 KiB as JSON); empty when absent.
    #[schema(value_type = Option<Object>)]
    pub definition: Option<serde_json::Value>,
}

/// Changes to a process definition's draft.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Invoice approval (v2)", "definition": {"steps": []}}))]
pub struct UpdateProcess {
    pub name: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub definition: Option<serde_json::Value>,
}

/// A process definition as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessView {
    pub id: Uuid,
    pub name: String,
    pub folder_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub definition: serde_json::Value,
    /// The draft's version.
    pub version: i32,
    /// The version last published, if any.
    pub published_version: Option<i32>,
    #[serde(serialize_with = "crate::http::timestamp::optional::serialize")]
    pub published_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// A page of process definitions (the schema `ProcessPage`).
pub type ProcessPage = Page<ProcessView>;

impl From<process::Model> for ProcessView {
    fn from(m: process::Model) -> Self {
        ProcessView {
            id: m.id,
            name: m.name,
            folder_id: m.folder_id,
            definition: m.definition,
            version: m.version,
            published_version: m.published_version,
            published_at: m.published_at,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// The most bytes a definition takes as JSON. Read back, JSON takes several times its text in
/// memory (a `[0,0,…]` sixteen times): a page of processes is bounded by this and
/// [`PAGE_DEFINITION_BYTES`], not by whatever a tenant stored.
const MAX_DEFINITION_BYTES: usize = 64 * 1024;
/// The definitions' bytes after which a page of processes ends (with a `next_cursor`).
const PAGE_DEFINITION_BYTES: usize = 1024 * 1024;

fn definition(value: Option<serde_json::Value>) -> Result<Option<serde_json::Value>, ApiError> {
    match &value {
        None => Ok(value),
        Some(object @ serde_json::Value::Object(_))
            if json_bytes(object) <= MAX_DEFINITION_BYTES =>
        {
            Ok(value)
        }
        Some(serde_json::Value::Object(_)) => Err(ApiError::invalid_field(
            "definition",
            format!(
                "must be at most {} KiB as JSON",
                MAX_DEFINITION_BYTES / 1024
            ),
        )),
        Some(_) => Err(ApiError::invalid_field(
            "definition",
            "must be a JSON object",
        )),
    }
}

/// The length of `value` written as compact JSON.
fn json_bytes(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, nor can serializing a `Value`.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

async fn new_process(
    body: JsonBody<CreateProcess>,
) -> Result<(String, serde_json::Value), ApiError> {
    let body = body.parse().await?;
    let name = clean_name(&body.name, 200).map_err(|m| ApiError::invalid_field("name", m))?;
    let definition = definition(body.definition)?.unwrap_or_else(|| serde_json::json!({}));
    Ok((name, definition))
}

/// List the tenant's process definitions.
///
/// Only those the caller may read, each decided on its own (a `forbid` on a folder hides the
/// processes in it); for one folder, list the folder's processes. A page may hold fewer than
/// `limit` items and still have a `next_cursor` (it also ends once its definitions pass 1 MiB).
#[utoipa::path(
    get,
    path = "/processes",
    tag = "processes",
    responses((status = 200, body = ProcessPage))
)]
pub async fn list_processes(
    auth: Authorized<ProcessRead>,
    query: web::Query<ListParams>,
) -> Result<web::Json<ProcessPage>, ApiError> {
    readable_processes(&auth, None, &query).await
}

/// List the process definitions in a folder.
///
/// Only those the caller may read, each decided on its own, as for the tenant's list.
#[utoipa::path(
    get,
    path = "/folders/{id}/processes",
    tag = "processes",
    responses((status = 200, body = ProcessPage))
)]
pub async fn list_folder_processes(
    auth: Authorized<ProcessRead, OnFolder>,
    folder: PathId,
    query: web::Query<ListParams>,
) -> Result<web::Json<ProcessPage>, ApiError> {
    readable_processes(&auth, Some(folder.0), &query).await
}

/// A page of the processes (all, or those in `folder`) the caller may read, each decided on
/// its own.
async fn readable_processes(
    request: &TenantContext,
    folder: Option<Uuid>,
    query: &ListParams,
) -> Result<web::Json<ProcessPage>, ApiError> {
    let limit = query.limit()?;
    let tx = request.read().await?;
    let budget = Budget {
        bytes: PAGE_DEFINITION_BYTES,
        weight: |p: &process::Model| json_bytes(&p.definition),
    };
    let page = Page::filtered(
        query.after,
        limit,
        Some(budget),
        async |after, n| Ok(processes::page(&tx, folder, after, n).await?),
        |p| p.id,
        |p| {
            request
                .policies()
                .resource_in(EntityKind::Process, p.id.to_string(), p.folder_id)
                .is_some_and(|r| request.may::<ProcessRead>(&r))
        },
        ProcessView::from,
    )
    .await?;
    tx.commit().await?;
    Ok(web::Json(page))
}

/// Create a process definition at the tenant's root.
#[utoipa::path(
    post,
    path = "/processes",
    tag = "processes",
    responses((status = 201, body = ProcessView))
)]
pub async fn create_process(
    auth: Authorized<ProcessCreate>,
    body: JsonBody<CreateProcess>,
) -> Result<HttpResponse, ApiError> {
    let (name, definition) = new_process(body).await?;
    let tx = auth.write().await?;
    let process = processes::create(&tx, auth.allowed(), name, None, definition).await?;
    tx.commit(Change::new("process", process.id, 201)).await?;
    Ok(HttpResponse::Created().json(ProcessView::from(process)))
}

/// Create a process definition in a folder.
#[utoipa::path(
    post,
    path = "/folders/{id}/processes",
    tag = "processes",
    responses((status = 201, body = ProcessView))
)]
pub async fn create_folder_process(
    auth: Authorized<ProcessCreate, OnFolder>,
    folder: PathId,
    body: JsonBody<CreateProcess>,
) -> Result<HttpResponse, ApiError> {
    let (name, definition) = new_process(body).await?;
    let tx = auth.write().await?;
    let process =
        match processes::create(&tx, auth.allowed(), name, Some(folder.0), definition).await {
            // The folder was deleted since the request was authorized.
            Err(e) if is_foreign_key_violation(&e) => return Err(ApiError::not_found()),
            other => other?,
        };
    tx.commit(Change::new("process", process.id, 201).detail("folder_id", folder.0.to_string()))
        .await?;
    Ok(HttpResponse::Created().json(ProcessView::from(process)))
}

/// Get a process definition.
#[utoipa::path(
    get,
    path = "/processes/{id}",
    tag = "processes",
    responses((status = 200, body = ProcessView))
)]
pub async fn get_process(
    auth: Authorized<ProcessRead, OnProcess>,
    id: PathId,
) -> Result<web::Json<ProcessView>, ApiError> {
    let tx = auth.read().await?;
    let process = processes::get(&tx, id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    tx.commit().await?;
    Ok(web::Json(process.into()))
}

/// Edit a process definition's draft.
///
/// Each edit bumps the draft's version.
#[utoipa::path(
    patch,
    path = "/processes/{id}",
    tag = "processes",
    responses((status = 200, body = ProcessView))
)]
pub async fn update_process(
    auth: Authorized<ProcessEdit, OnProcess>,
    id: PathId,
    body: JsonBody<UpdateProcess>,
) -> Result<web::Json<ProcessView>, ApiError> {
    let body = body.parse().await?;
    let name = body
        .name
        .map(|n| clean_name(&n, 200).map_err(|m| ApiError::invalid_field("name", m)))
        .transpose()?;
    let definition = definition(body.definition)?;
    let tx = auth.write().await?;
    let existing = processes::get(tx.conn(), id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let process = processes::edit(&tx, auth.allowed(), existing, name, definition).await?;
    tx.commit(Change::new("process", process.id, 200).detail("version", process.version))
        .await?;
    Ok(web::Json(process.into()))
}

/// Publish a process definition's draft.
///
/// In a `prod` tenant the built-in Designer role cannot publish (separation of duties).
#[utoipa::path(
    post,
    path = "/processes/{id}/publish",
    tag = "processes",
    responses((status = 200, body = ProcessView))
)]
pub async fn publish_process(
    auth: Authorized<ProcessPublish, OnProcess>,
    id: PathId,
) -> Result<web::Json<ProcessView>, ApiError> {
    let tx = auth.write().await?;
    let existing = processes::get(tx.conn(), id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let process = processes::publish(&tx, auth.allowed(), existing).await?;
    tx.commit(Change::new("process", process.id, 200).detail("version", process.version))
        .await?;
    Ok(web::Json(process.into()))
}

/// Delete a process definition.
#[utoipa::path(
    delete,
    path = "/processes/{id}",
    tag = "processes",
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete_process(
    auth: Authorized<ProcessDelete, OnProcess>,
    id: PathId,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.write().await?;
    if !processes::delete(&tx, auth.allowed(), id.0).await? {
        return Err(ApiError::not_found());
    }
    tx.commit(Change::new("process", id.0, 204)).await?;
    Ok(HttpResponse::NoContent().finish())
}
