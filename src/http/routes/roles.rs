//! `/t/{tenant}/api/v1/roles`

use actix_web::{HttpResponse, web};
use entity::tenant::role;
use sea_orm::{EntityTrait as _, QueryOrder as _};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DryRunParam, dry_run};
use crate::authz::actions::{RoleManage, RoleRead, is_known};
use crate::authz::impact::Impact;
use crate::authz::roles::{BUILTIN_ROLES, RoleDef, builtin};
use crate::authz::rules::{self, RuleKind};
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{JsonBody, PathName};
use crate::http::pipeline::authz::Authorized;
use crate::tenancy::work::{Change, TenantContext};

/// A role to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Invoice approver", "description": "Approves invoices", "actions": ["task.read", "task.approve"]}))]
pub struct CreateRole {
    /// Unique; not a built-in role's name.
    #[schema(example = "Invoice approver")]
    pub name: String,
    pub description: Option<String>,
    /// Catalogue actions the role grants.
    #[schema(schema_with = super::authz::action_names_schema)]
    pub actions: Vec<String>,
}

/// A custom role's new definition.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"description": "Reads and approves invoices", "actions": ["task.read", "task.approve", "instance.read"]}))]
pub struct UpdateRole {
    pub description: Option<String>,
    /// Catalogue actions the role grants.
    #[schema(schema_with = super::authz::action_names_schema)]
    pub actions: Vec<String>,
}

/// A role: built-in or custom.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleView {
    pub name: String,
    pub description: String,
    pub builtin: bool,
    /// The actions the role grants unconditionally.
    pub actions: Vec<String>,
    /// Actions granted only under a condition (Cedar), e.g. publishing outside production.
    pub conditional: Vec<ConditionalGrant>,
}

/// Actions granted when a condition holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConditionalGrant {
    pub actions: Vec<String>,
    /// A Cedar expression over `principal`, `resource` and `context`.
    pub condition: String,
}

/// All roles.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleList {
    pub items: Vec<RoleView>,
}

impl RoleView {
    fn of(def: RoleDef, description: String, builtin: bool) -> Self {
        let mut actions = Vec::new();
        let mut conditional = Vec::new();
        for grant in def.grants {
            match grant.condition {
                None => actions.extend(grant.actions),
                Some(condition) => conditional.push(ConditionalGrant {
                    actions: grant.actions,
                    condition,
                }),
            }
        }
        RoleView {
            name: def.name,
            description,
            builtin,
            actions,
            conditional,
        }
    }

    fn custom(m: role::Model) -> Self {
        let actions = serde_json::from_value(m.actions).unwrap_or_default();
        RoleView::of(RoleDef::custom(&m.name, actions), m.description, false)
    }
}

/// A role's new definition, or what it would change (`?dry_run=true`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RoleChange {
    Role(RoleView),
    DryRun(Impact),
}

/// Checks a role's name (for creation) and actions: known, non-empty, no duplicates.
fn validate(
    name: Option<&str>,
    actions: Vec<String>,
    description: Option<String>,
) -> Result<(Vec<String>, String), ApiError> {
    let mut errors = Vec::new();
    if let Some(name) = name {
        let mut chars = name.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || " _.-".contains(c))
            && name.len() <= 64;
        if !well_formed {
            errors.push(FieldError {
                field: "name".into(),
                message: "must start with a letter and hold at most 64 letters, digits, spaces, `_`, `.` or `-`".into(),
            });
        }
    }
    let unknown: Vec<&str> = actions
        .iter()
        .map(String::as_str)
        .filter(|a| !is_known(a))
        .collect();
    if !unknown.is_empty() {
        errors.push(FieldError {
            field: "actions".into(),
            message: format!(
                "unknown actions: {} (see GET /authz/actions)",
                unknown.join(", ")
            ),
        });
    }
    if actions.is_empty() {
        errors.push(FieldError {
            field: "actions".into(),
            message: "must name at least one action".into(),
        });
    }
    let distinct: std::collections::BTreeSet<&String> = actions.iter().collect();
    if distinct.len() != actions.len() {
        errors.push(FieldError {
            field: "actions".into(),
            message: "must name each action once".into(),
        });
    }
    let description = description.unwrap_or_default();
    if description.chars().count() > 1000 {
        errors.push(FieldError {
            field: "description".into(),
            message: "must be at most 1000 characters".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut actions = actions;
    actions.sort();
    actions.dedup();
    Ok((actions, description))
}

/// List the built-in and custom roles.
#[utoipa::path(
    get,
    path = "/roles",
    tag = "roles",
    responses((status = 200, body = RoleList))
)]
pub async fn list_roles(auth: Authorized<RoleRead>) -> Result<web::Json<RoleList>, ApiError> {
    let tx = auth.read().await?;
    let custom = role::Entity::find()
        .order_by_asc(role::Column::Name)
        .all(&tx)
        .await?;
    tx.commit().await?;
    let mut items: Vec<RoleView> = BUILTIN_ROLES
        .iter()
        .map(|r| RoleView::of(r.definition(), r.description.to_owned(), true))
        .collect();
    items.extend(custom.into_iter().map(RoleView::custom));
    Ok(web::Json(RoleList { items }))
}

/// Get a role.
#[utoipa::path(
    get,
    path = "/roles/{name}",
    tag = "roles",
    responses((status = 200, body = RoleView))
)]
pub async fn get_role(
    auth: Authorized<RoleRead>,
    name: PathName,
) -> Result<web::Json<RoleView>, ApiError> {
    if let Some(role) = builtin(&name.0) {
        return Ok(web::Json(RoleView::of(
            role.definition(),
            role.description.to_owned(),
            true,
        )));
    }
    let tx = auth.read().await?;
    let role = rules::find_role(&tx, &name.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    tx.commit().await?;
    Ok(web::Json(RoleView::custom(role)))
}

/// A role may hold only actions its author holds tenant-wide: otherwise whoever manages roles
/// could hand anyone (themselves included) more than they have.
fn refuse_escalation(request: &TenantContext, actions: &[String]) -> Result<(), ApiError> {
    let engine = request.engine();
    let tenant = request.policies().tenant();
    let missing = engine.not_delegable(
        request.policies(),
        &request.grantor(),
        actions.iter().map(String::as_str),
        &tenant,
    );
    if missing.is_empty() {
        Ok(())
    } else {
        Err(request.refuse_delegation(&missing).into())
    }
}

/// 404 unless the tenant has the custom role `name`.
async fn require_custom(request: &TenantContext, name: &str) -> Result<(), ApiError> {
    let tx = request.read().await?;
    let found = rules::find_role(&tx, name).await?;
    tx.commit().await?;
    found.map(|_| ()).ok_or_else(ApiError::not_found)
}

/// Create a custom role.
///
/// A role holds only actions its author holds tenant-wide (403 naming the others). With
/// `?dry_run=true` nothing is saved and the answer (200) lists who would gain which permission.
/// Takes effect on the next request on every replica.
#[utoipa::path(
    post,
    path = "/roles",
    tag = "roles",
    responses((status = 201, body = RoleView), (status = 200, body = Impact, description = "The dry run's impact"), (status = 409, description = "The name is taken, or the tenant holds 200 custom roles"))
)]
pub async fn create_role(
    auth: Authorized<RoleManage>,
    params: web::Query<DryRunParam>,
    body: JsonBody<CreateRole>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse().await?;
    let name = body.name.trim().to_owned();
    let (actions, description) = validate(Some(&name), body.actions, body.description)?;
    if builtin(&name).is_some() {
        return Err(ApiError::conflict(format!("`{name}` is a built-in role.")));
    }
    refuse_escalation(&auth, &actions)?;
    if params.dry_run() {
        let role = RoleDef::custom(&name, actions);
        let impact = dry_run(&auth, move |rules| rules.custom_roles.push(role)).await?;
        return Ok(HttpResponse::Ok().json(impact));
    }
    let tx = auth.write().await?;
    if rules::find_role(tx.conn(), &name).await?.is_some() {
        return Err(ApiError::conflict(format!("A role `{name}` exists.")));
    }
    rules::ensure_room(tx.conn(), RuleKind::CustomRole).await?;
    let inserted =
        rules::create_role(&tx, auth.allowed(), name.clone(), description, &actions).await;
    let created = match inserted {
        Err(e) if crate::tenancy::is_unique_violation(&e) => {
            return Err(ApiError::conflict(format!("A role `{name}` exists.")));
        }
        other => other?,
    };
    let change = Change::new("role", &created.name, 201)
        .detail("after", serde_json::json!(actions))
        .invalidating();
    tx.commit(change).await?;
    Ok(HttpResponse::Created().json(RoleView::custom(created)))
}

/// Change a custom role's actions.
///
/// With `?dry_run=true` nothing is saved and the answer lists who would gain and who would lose
/// which permission.
#[utoipa::path(
    put,
    path = "/roles/{name}",
    tag = "roles",
    responses(
        (status = 200, body = RoleChange, description = "The updated role, or the dry run's impact"),
        (status = 409, description = "Built-in roles cannot be changed")
    )
)]
pub async fn update_role(
    auth: Authorized<RoleManage>,
    name: PathName,
    params: web::Query<DryRunParam>,
    body: JsonBody<UpdateRole>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse().await?;
    if builtin(&name.0).is_some() {
        return Err(ApiError::conflict("Built-in roles cannot be changed."));
    }
    let (actions, description) = validate(None, body.actions, body.description)?;
    refuse_escalation(&auth, &actions)?;
    if params.dry_run() {
        require_custom(&auth, &name.0).await?;
        let role = RoleDef::custom(&name.0, actions);
        let impact = dry_run(&auth, move |rules| {
            rules.custom_roles.retain(|r| r.name != role.name);
            rules.custom_roles.push(role);
        })
        .await?;
        return Ok(HttpResponse::Ok().json(RoleChange::DryRun(impact)));
    }
    let tx = auth.write().await?;
    let existing = rules::find_role(tx.conn(), &name.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let before = existing.actions.clone();
    let updated = rules::update_role(&tx, auth.allowed(), existing, description, &actions).await?;
    let change = Change::new("role", &updated.name, 200)
        .detail("before", before)
        .detail("after", serde_json::json!(actions))
        .invalidating();
    tx.commit(change).await?;
    Ok(HttpResponse::Ok().json(RoleChange::Role(RoleView::custom(updated))))
}

/// Delete a custom role.
///
/// A role that is still bound is 409: remove its bindings first. With `?dry_run=true` nothing
/// is deleted and the answer lists who would lose which permission.
#[utoipa::path(
    delete,
    path = "/roles/{name}",
    tag = "roles",
    responses((status = 204, description = "Deleted"), (status = 200, body = Impact, description = "The dry run's impact"), (status = 409, description = "The role is bound or built in"))
)]
pub async fn delete_role(
    auth: Authorized<RoleManage>,
    name: PathName,
    params: web::Query<DryRunParam>,
) -> Result<HttpResponse, ApiError> {
    if builtin(&name.0).is_some() {
        return Err(ApiError::conflict("Built-in roles cannot be deleted."));
    }
    if params.dry_run() {
        require_custom(&auth, &name.0).await?;
        let role = name.0.clone();
        let impact = dry_run(&auth, move |rules| {
            rules.custom_roles.retain(|r| r.name != role);
            rules.bindings.retain(|b| b.role != role);
        })
        .await?;
        return Ok(HttpResponse::Ok().json(impact));
    }
    let tx = auth.write().await?;
    let existing = rules::find_role(tx.conn(), &name.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let bound = rules::role_bindings(tx.conn(), &existing.name).await?;
    if bound > 0 {
        return Err(ApiError::conflict(format!(
            "The role has {bound} binding(s); remove them first."
        )));
    }
    rules::delete_role(&tx, auth.allowed(), existing.id).await?;
    let change = Change::new("role", &existing.name, 204)
        .detail("before", existing.actions)
        .invalidating();
    tx.commit(change).await?;
    Ok(HttpResponse::NoContent().finish())
}
