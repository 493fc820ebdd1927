//! `/t/{tenant}/api/v1/role-bindings`

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use entity::tenant::role_binding;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ListParams, Page};
use crate::authz::actions::{RoleBindingCreate, RoleBindingDelete, RoleBindingRead};
use crate::authz::bindings::{self, NewBinding, ScopeType, SubjectType};
use crate::authz::roles::{BUILTIN_ROLES, builtin, grants_everything};
use crate::authz::rules::{self, RuleKind};
use crate::authz::{Resource, TenantPolicies, resolve_resource};
use crate::directory;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, PathId};
use crate::http::pipeline::authz::Authorized;
use crate::tenancy::work::Change;
use entity::tenant::role;
use sea_orm::{ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _};

/// Who a binding grants to.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectRef {
    #[serde(rename = "type")]
    pub kind: SubjectType,
    pub id: Uuid,
}

/// Where a binding applies. The tenant scope has no id; the others name their object.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeRef {
    #[serde(rename = "type")]
    pub kind: ScopeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A role binding to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "Viewer", "subject": {"type": "user", "id": "0192f0c4-5d7a-7b3e-9c1d-2f4a6b8c0d1e"}, "scope": {"type": "folder", "id": "0192f0c4-6e8b-7c4f-8d2e-3a5b7c9d1e2f"}}))]
pub struct CreateRoleBinding {
    /// A built-in role (Admin, Designer, Operator, Viewer, Auditor) or a custom role's name.
    #[schema(example = "Viewer")]
    pub role: String,
    pub subject: SubjectRef,
    pub scope: ScopeRef,
}

/// A role binding as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleBindingView {
    pub id: Uuid,
    pub role: String,
    pub subject: SubjectRef,
    pub scope: ScopeRef,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
}

impl TryFrom<role_binding::Model> for RoleBindingView {
    type Error = ApiError;

    fn try_from(m: role_binding::Model) -> Result<Self, ApiError> {
        let corrupt = || {
            ApiError::internal(
                "authz",
                anyhow::anyhow!("role binding {} is malformed", m.id),
            )
        };
        Ok(RoleBindingView {
            subject: SubjectRef {
                kind: SubjectType::parse(&m.subject_type).ok_or_else(corrupt)?,
                id: m.subject_id,
            },
            scope: ScopeRef {
                kind: ScopeType::parse(&m.scope_type).ok_or_else(corrupt)?,
                id: m.scope_id,
            },
            id: m.id,
            role: m.role,
            created_at: m.created_at,
        })
    }
}

impl CreateRoleBinding {
    /// Checks the shape; whether the role, subject and scope exist is checked in the tenant.
    fn validate(self) -> Result<NewBinding, ApiError> {
        let scope_id = match (self.scope.kind, self.scope.id) {
            (ScopeType::Tenant, None) => None,
            (ScopeType::Tenant, Some(_)) => {
                return Err(ApiError::invalid_field(
                    "scope.id",
                    "must be absent for the tenant scope",
                ));
            }
            (_, Some(id)) if Uuid::parse_str(&id).is_ok() => Some(id.to_lowercase()),
            (kind, _) => {
                return Err(ApiError::invalid_field(
                    "scope.id",
                    format!("a `{}` scope needs the object's id", kind.as_str()),
                ));
            }
        };
        Ok(NewBinding {
            role: self.role,
            subject_type: self.subject.kind,
            subject_id: self.subject.id,
            scope_type: self.scope.kind,
            scope_id,
        })
    }
}

/// The scope as a resource, or `None` when its object does not exist in the tenant. Forms,
/// reports and secrets are not stored yet; a binding on one of their ids applies once the
/// object exists.
async fn scope_resource(
    conn: &impl ConnectionTrait,
    policies: &TenantPolicies,
    kind: ScopeType,
    id: Option<&str>,
) -> Result<Option<Resource>, ApiError> {
    match (kind, id) {
        (ScopeType::Tenant, _) => Ok(Some(policies.tenant())),
        (kind, Some(id)) => Ok(resolve_resource(conn, policies, kind.kind(), id, None).await?),
        (_, None) => Ok(None),
    }
}

/// The actions of the built-in or custom role `name`, or `None` when the tenant has no such
/// role.
async fn role_actions(
    conn: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<Vec<String>>, ApiError> {
    if let Some(role) = builtin(name) {
        return Ok(Some(
            role.definition().actions().map(str::to_owned).collect(),
        ));
    }
    let custom = role::Entity::find()
        .filter(role::Column::Name.eq(name))
        .one(conn)
        .await?;
    Ok(custom.map(|r| serde_json::from_value(r.actions).unwrap_or_default()))
}

/// A page of role bindings (the schema `RoleBindingPage`).
pub type RoleBindingPage = Page<RoleBindingView>;

/// Grant a role to a subject on a scope.
///
/// Takes effect on the next request, on every replica. A role on a folder covers everything in
/// the folder and its sub-folders. A subject or scope object that does not exist in this tenant
/// is 422 naming the field. Nobody grants what they do not hold themselves on that scope (403
/// naming the actions).
#[utoipa::path(
    post,
    path = "/role-bindings",
    tag = "role-bindings",
    responses((status = 201, body = RoleBindingView), (status = 409, description = "The same binding exists, or the tenant holds 5,000 bindings"))
)]
pub async fn create_role_binding(
    auth: Authorized<RoleBindingCreate>,
    body: JsonBody<CreateRoleBinding>,
) -> Result<HttpResponse, ApiError> {
    let new = body.parse().await?.validate()?;
    let tx = auth.write().await?;
    let Some(actions) = role_actions(tx.conn(), &new.role).await? else {
        let known: Vec<_> = BUILTIN_ROLES.iter().map(|r| r.name).collect();
        return Err(ApiError::invalid_field(
            "role",
            format!(
                "no such role; the built-in roles are {}, custom roles are listed at /roles",
                known.join(", ")
            ),
        ));
    };
    let scope = scope_resource(
        tx.conn(),
        auth.policies(),
        new.scope_type,
        new.scope_id.as_deref(),
    )
    .await?;
    let subject_exists =
        bindings::subject_exists(tx.conn(), new.subject_type, new.subject_id).await?;
    let Some(scope) = scope else {
        return Err(ApiError::no_such("scope.id", new.scope_type.as_str()));
    };
    if !subject_exists {
        return Err(ApiError::no_such("subject.id", new.subject_type.as_str()));
    }
    let engine = auth.engine();
    let missing = engine.not_delegable(
        auth.policies(),
        &auth.grantor(),
        actions.iter().map(String::as_str),
        &scope,
    );
    if !missing.is_empty() {
        return Err(auth.refuse_delegation(&missing).into());
    }
    rules::ensure_room(tx.conn(), RuleKind::RoleBinding).await?;
    let role = new.role.clone();
    let binding = bindings::create(&tx, auth.allowed(), new)
        .await?
        .ok_or_else(|| {
            ApiError::conflict("This role is already bound to this subject on this scope.")
        })?;
    let change = Change::new("role_binding", binding.id, 201)
        .detail("role", role)
        .detail("grants_everything", grants_everything(&actions))
        .detail("subject_id", binding.subject_id.to_string())
        .detail(
            "scope",
            format!(
                "{}:{}",
                binding.scope_type,
                binding.scope_id.clone().unwrap_or_default()
            ),
        )
        .invalidating();
    tx.commit(change).await?;
    Ok(HttpResponse::Created().json(RoleBindingView::try_from(binding)?))
}

/// List role bindings.
#[utoipa::path(
    get,
    path = "/role-bindings",
    tag = "role-bindings",
    responses((status = 200, body = RoleBindingPage))
)]
pub async fn list_role_bindings(
    auth: Authorized<RoleBindingRead>,
    query: web::Query<ListParams>,
) -> Result<web::Json<Page<RoleBindingView>>, ApiError> {
    let limit = query.limit()?;
    let tx = auth.read().await?;
    let rows = directory::page_by_id::<role_binding::Entity>(
        &tx,
        role_binding::Column::Id,
        query.after,
        limit,
    )
    .await?;
    tx.commit().await?;
    let page = Page::try_of(rows, limit, |b| b.id.to_string(), RoleBindingView::try_from)?;
    Ok(web::Json(page))
}

/// Remove a role binding.
///
/// Takes effect on the next request, on every replica.
#[utoipa::path(
    delete,
    path = "/role-bindings/{id}",
    tag = "role-bindings",
    responses((status = 204, description = "Removed"))
)]
pub async fn delete_role_binding(
    auth: Authorized<RoleBindingDelete>,
    id: PathId,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.write().await?;
    let removed = bindings::delete(&tx, auth.allowed(), id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    // As stored, so that even a malformed binding can be removed.
    let before = serde_json::json!({
        "role": removed.role,
        "subject_type": removed.subject_type,
        "subject_id": removed.subject_id.to_string(),
        "scope_type": removed.scope_type,
        "scope_id": removed.scope_id,
    });
    let change = Change::new("role_binding", id.0, 204)
        .detail("before", before)
        .invalidating();
    tx.commit(change).await?;
    Ok(HttpResponse::NoContent().finish())
}
