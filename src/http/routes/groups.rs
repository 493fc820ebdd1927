//! `/t/{tenant}/api/v1/groups`

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::group;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ListParams, Page};
use crate::authz::actions::{GroupCreate, GroupMemberAdd, GroupRead};
use crate::authz::bindings::SubjectType;
use crate::authz::load_subject;
use crate::directory::{self, clean_name, groups};
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, PathId};
use crate::http::pipeline::authz::Authorized;
use crate::tenancy::is_unique_violation;
use crate::tenancy::work::Change;

/// A group to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "finance"}))]
pub struct CreateGroup {
    /// Unique within the tenant.
    #[schema(example = "finance")]
    pub name: String,
}

/// A group as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    pub id: Uuid,
    pub name: String,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
}

impl From<group::Model> for GroupView {
    fn from(m: group::Model) -> Self {
        GroupView {
            id: m.id,
            name: m.name,
            created_at: m.created_at,
        }
    }
}

/// A user to add to a group.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_id": "0192f0c4-5d7a-7b3e-9c1d-2f4a6b8c0d1e"}))]
pub struct AddGroupMember {
    pub user_id: Uuid,
}

/// A page of groups (the schema `GroupPage`).
pub type GroupPage = Page<GroupView>;

/// Create a group.
#[utoipa::path(
    post,
    path = "/groups",
    tag = "groups",
    responses((status = 201, body = GroupView), (status = 409, description = "The name is taken"))
)]
pub async fn create_group(
    auth: Authorized<GroupCreate>,
    body: JsonBody<CreateGroup>,
) -> Result<HttpResponse, ApiError> {
    let name = clean_name(&body.parse().await?.name, 100)
        .map_err(|m| ApiError::invalid_field("name", m))?;
    let tx = auth.write().await?;
    let group = match groups::create(&tx, auth.allowed(), name).await {
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::conflict("A group with this name exists."));
        }
        other => other?,
    };
    tx.commit(Change::new("group", group.id, 201)).await?;
    Ok(HttpResponse::Created().json(GroupView::from(group)))
}

/// List groups.
#[utoipa::path(
    get,
    path = "/groups",
    tag = "groups",
    responses((status = 200, body = GroupPage))
)]
pub async fn list_groups(
    auth: Authorized<GroupRead>,
    query: web::Query<ListParams>,
) -> Result<web::Json<Page<GroupView>>, ApiError> {
    let limit = query.limit()?;
    let tx = auth.read().await?;
    let rows =
        directory::page_by_id::<group::Entity>(&tx, group::Column::Id, query.after, limit).await?;
    tx.commit().await?;
    Ok(web::Json(Page::of(
        rows,
        limit,
        |g| g.id.to_string(),
        GroupView::from,
    )))
}

/// Add a user to a group.
///
/// Adding a member twice is harmless. Group membership changes what the member may do, so it
/// takes effect on the next request; the caller must hold everything the membership would give
/// the user, and whatever a policy naming the group in its conditions decides (403 naming what
/// is missing).
#[utoipa::path(
    post,
    path = "/groups/{id}/members",
    tag = "groups",
    responses((status = 204, description = "The user is a member"))
)]
pub async fn add_group_member(
    auth: Authorized<GroupMemberAdd>,
    id: PathId,
    body: JsonBody<AddGroupMember>,
) -> Result<HttpResponse, ApiError> {
    let AddGroupMember { user_id } = body.parse().await?;
    let read = auth.read().await?;
    let group = groups::get(&read, id.0).await?;
    let member = load_subject(&read, SubjectType::User, user_id).await?;
    read.commit().await?;
    if group.is_none() {
        return Err(ApiError::not_found());
    }
    let Some(member) = member else {
        return Err(ApiError::no_such("user_id", "user"));
    };
    // What the group's bindings give its members must be the caller's to give.
    let mut joined = member.clone();
    joined.groups.push(id.0.to_string());
    auth.refuse_escalation(Some(&member), &joined).await?;
    let missing =
        auth.engine()
            .joining_not_delegable(auth.policies(), &auth.grantor(), &id.0.to_string());
    if !missing.is_empty() {
        return Err(auth.refuse_delegation(&missing).into());
    }
    let tx = auth.write().await?;
    groups::add_member(&tx, auth.allowed(), id.0, user_id).await?;
    let change = Change::new("group", id.0, 204)
        .detail("user_id", user_id.to_string())
        .invalidating();
    tx.commit(change).await?;
    Ok(HttpResponse::NoContent().finish())
}
