//! `/t/{tenant}/api/v1/policies`: claim-based policies (CBAC) in Cedar.

use actix_web::{HttpResponse, web};
use cedar_policy::{Effect, Policy};
use chrono::{DateTime, Utc};
use entity::tenant::{policy, policy_version};
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{DryRunParam, ListParams, Page, dry_run};
use crate::authz::actions::{PolicyManage, PolicyRead};
use crate::authz::impact::Impact;
use crate::authz::policy_text;
use crate::authz::rules::{self, PolicyText, RuleKind};
use crate::authz::{StoredRules, TenantPolicies, policy_object, resolve_resource};
use crate::directory;
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{JsonBody, PathId};
use crate::http::pipeline::authz::Authorized;
use crate::tenancy::work::{Change, TenantContext};

/// A policy to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "finance-approvals", "text": "permit(principal, action == Flowgate::Action::\"task.approve\", resource) when { principal.hasTag(\"department\") && principal.getTag(\"department\") == \"Finance\" };", "description": "Finance approves tasks"}))]
pub struct CreatePolicy {
    /// Unique; decisions name the policy `policy:<name>`.
    #[schema(example = "finance-approvals")]
    pub name: String,
    /// Exactly one Cedar `permit` or `forbid`, valid against `GET /authz/schema`; at most
    /// 8 KiB, brackets nested at most 32 deep, operators about 30.
    #[schema(
        max_length = 8192,
        example = "permit(principal, action == Flowgate::Action::\"task.approve\", resource) when { principal.hasTag(\"department\") && principal.getTag(\"department\") == \"Finance\" };"
    )]
    pub text: String,
    pub description: Option<String>,
}

/// A policy's new text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"text": "forbid(principal, action == Flowgate::Action::\"task.approve\", resource) when { context has amount && context.amount > 50000 };", "description": "No approvals above 50,000"}))]
pub struct UpdatePolicy {
    /// As for a new policy.
    #[schema(max_length = 8192)]
    pub text: String,
    pub description: Option<String>,
}

/// A policy's new version, or what it would change (`?dry_run=true`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PolicyChange {
    Policy(PolicyView),
    DryRun(Impact),
}

/// A policy as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub text: String,
    /// 1 at creation, +1 on every change.
    pub version: i32,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// A page of policies (the schema `PolicyPage`).
pub type PolicyPage = Page<PolicyView>;

/// One version of a policy; the last version of a deleted policy has no text.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyVersionView {
    pub version: i32,
    pub text: Option<String>,
    pub actor_type: String,
    pub actor_id: String,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
}

/// A policy's history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyVersionList {
    pub items: Vec<PolicyVersionView>,
}

impl From<policy::Model> for PolicyView {
    fn from(m: policy::Model) -> Self {
        PolicyView {
            id: m.id,
            name: m.name,
            description: m.description,
            text: m.text,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// Checks a policy's name (when given) and text; the text must validate against the schema.
/// Returns the description and the parsed policy.
fn validate(
    request: &TenantContext,
    name: Option<&str>,
    text: &str,
    description: Option<String>,
) -> Result<(String, Policy), ApiError> {
    let mut errors = Vec::new();
    if let Some(name) = name {
        let mut chars = name.chars();
        let well_formed = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
            && name.len() <= 64;
        if !well_formed {
            errors.push(FieldError {
                field: "name".into(),
                message: "must be 1 to 64 lower-case letters, digits, `_`, `.` or `-`".into(),
            });
        }
    }
    let policy = match request
        .engine()
        .validate_policy(name.unwrap_or("draft"), text)
    {
        Ok(policy) => Some(policy),
        Err(messages) => {
            errors.extend(messages.into_iter().map(|message| FieldError {
                field: "text".into(),
                message,
            }));
            None
        }
    };
    let description = description.unwrap_or_default();
    if description.chars().count() > 1000 {
        errors.push(FieldError {
            field: "description".into(),
            message: "must be at most 1000 characters".into(),
        });
    }
    match policy {
        Some(policy) if errors.is_empty() => Ok((description, policy)),
        _ => Err(ApiError::validation(errors)),
    }
}

/// Refuses to put `policy` in force (a permit) or to lift it (a forbid) unless the caller holds
/// everything it can decide on its whole scope: `policy.manage` is not a way around the rule
/// that nobody hands out more than they hold.
async fn refuse_escalation(request: &TenantContext, policy: &Policy) -> Result<(), ApiError> {
    // The object the policy names by id, placed in its folders (the policy set may not name it
    // yet): a forbid on a folder around it binds the author in the check as in a request.
    let placed = match policy_object(policy) {
        Some(object) => {
            let tx = request.read().await?;
            let policies = request.policies();
            let placed = resolve_resource(&tx, policies, object.kind, &object.id, None).await?;
            tx.commit().await?;
            placed
        }
        None => None,
    };
    let missing = request.engine().policy_not_delegable(
        request.policies(),
        &request.grantor(),
        policy,
        placed,
    );
    if missing.is_empty() {
        Ok(())
    } else {
        Err(request.refuse_delegation(&missing).into())
    }
}

/// Refuses to replace or remove the stored `existing` policy when it is a forbid whose lifting
/// gives more than the caller may hand out. With `change` applied, the caller must hold
/// everything the forbid decided, on its scope; and what the forbid kept from the caller itself
/// it may win back only if it then holds the whole catalogue tenant-wide (an Admin, whom a
/// forbid on everyone binds too).
async fn refuse_lifting(
    request: &TenantContext,
    existing: &policy::Model,
    change: impl FnOnce(&mut StoredRules),
) -> Result<(), ApiError> {
    let engine = request.engine();
    let everything = || crate::authz::CATALOGUE.iter().map(|a| a.name);
    let lifted = match policy_text::parse(&existing.name, &existing.text) {
        Ok(parsed) if parsed.policy.effect() == Effect::Permit => return Ok(()),
        Ok(parsed) => Some(parsed.policy),
        // A stored text that no longer parses might be a forbid of anything.
        Err(_) => None,
    };
    let tx = request.read().await?;
    let mut rules = StoredRules::load(&tx).await?;
    tx.commit().await?;
    change(&mut rules);
    let after = request.compile(rules).await?;
    let caller = &request.grantor();
    let decided = |policies: &TenantPolicies| match &lifted {
        Some(policy) => engine.policy_not_delegable(policies, caller, policy, None),
        None => engine.not_delegable(policies, caller, everything(), &policies.tenant()),
    };
    let mut missing = decided(&after);
    if missing.is_empty() {
        let regained = decided(request.policies());
        let admin_after = engine
            .not_delegable(&after, caller, everything(), &after.tenant())
            .is_empty();
        if !admin_after {
            missing = regained;
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(request.refuse_delegation(&missing).into())
    }
}

/// List claim-based policies.
#[utoipa::path(
    get,
    path = "/policies",
    tag = "policies",
    responses((status = 200, body = PolicyPage))
)]
pub async fn list_policies(
    auth: Authorized<PolicyRead>,
    query: web::Query<ListParams>,
) -> Result<web::Json<PolicyPage>, ApiError> {
    let limit = query.limit()?;
    let tx = auth.read().await?;
    let rows = directory::page_by_id::<policy::Entity>(&tx, policy::Column::Id, query.after, limit)
        .await?;
    tx.commit().await?;
    Ok(web::Json(Page::of(
        rows,
        limit,
        |p| p.id.to_string(),
        PolicyView::from,
    )))
}

/// Get a policy.
#[utoipa::path(
    get,
    path = "/policies/{id}",
    tag = "policies",
    responses((status = 200, body = PolicyView))
)]
pub async fn get_policy(
    auth: Authorized<PolicyRead>,
    id: PathId,
) -> Result<web::Json<PolicyView>, ApiError> {
    let tx = auth.read().await?;
    let row = policy::Entity::find_by_id(id.0)
        .one(&tx)
        .await?
        .ok_or_else(ApiError::not_found)?;
    tx.commit().await?;
    Ok(web::Json(row.into()))
}

/// A policy's versions.
#[utoipa::path(
    get,
    path = "/policies/{id}/versions",
    tag = "policies",
    responses((status = 200, body = PolicyVersionList))
)]
pub async fn list_policy_versions(
    auth: Authorized<PolicyRead>,
    id: PathId,
) -> Result<web::Json<PolicyVersionList>, ApiError> {
    let tx = auth.read().await?;
    let rows = policy_version::Entity::find()
        .filter(policy_version::Column::PolicyId.eq(id.0))
        .order_by_asc(policy_version::Column::Version)
        .all(&tx)
        .await?;
    tx.commit().await?;
    if rows.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(web::Json(PolicyVersionList {
        items: rows
            .into_iter()
            .map(|v| PolicyVersionView {
                version: v.version,
                text: v.text,
                actor_type: v.actor_type,
                actor_id: v.actor_id,
                created_at: v.created_at,
            })
            .collect(),
    }))
}

/// Create a claim-based policy.
///
/// The text is validated against the tenant schema (422 with the validator's messages). With
/// `?dry_run=true` nothing is saved and the answer (200) lists who would gain and lose which
/// permission. Takes effect on the next request on every replica. A tenant holds at most 1,000
/// policies (each is compiled into its policy set whenever one changes).
#[utoipa::path(
    post,
    path = "/policies",
    tag = "policies",
    responses((status = 201, body = PolicyView), (status = 200, body = Impact, description = "The dry run's impact"), (status = 409, description = "The name is taken, or the tenant holds 1,000 policies"))
)]
pub async fn create_policy(
    auth: Authorized<PolicyManage>,
    params: web::Query<DryRunParam>,
    body: JsonBody<CreatePolicy>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse().await?;
    let (description, policy) = validate(&auth, Some(&body.name), &body.text, body.description)?;
    if policy.effect() == Effect::Permit {
        refuse_escalation(&auth, &policy).await?;
    }
    if params.dry_run() {
        let (name, text) = (body.name.clone(), body.text.clone());
        let impact = dry_run(&auth, move |rules| rules.policies.push((name, text))).await?;
        return Ok(HttpResponse::Ok().json(impact));
    }
    let tx = auth.write().await?;
    rules::ensure_room(tx.conn(), RuleKind::Policy).await?;
    let new = PolicyText {
        description,
        text: body.text.clone(),
    };
    let inserted = rules::create_policy(
        &tx,
        auth.allowed(),
        auth.principal(),
        body.name.clone(),
        new,
    )
    .await;
    let created = match inserted {
        Err(e) if crate::tenancy::is_unique_violation(&e) => {
            return Err(ApiError::conflict(format!(
                "A policy `{}` exists.",
                body.name
            )));
        }
        other => other?,
    };
    let change = Change::new("policy", created.id, 201)
        .detail("name", created.name.clone())
        .detail("after", created.text.clone())
        .invalidating();
    tx.commit(change).await?;
    Ok(HttpResponse::Created().json(PolicyView::from(created)))
}

/// Change a policy's text (a new version).
///
/// With `?dry_run=true` nothing is saved and the answer lists who would gain and lose which
/// permission.
#[utoipa::path(
    put,
    path = "/policies/{id}",
    tag = "policies",
    responses((status = 200, body = PolicyChange, description = "The new version, or the dry run's impact"))
)]
pub async fn update_policy(
    auth: Authorized<PolicyManage>,
    id: PathId,
    params: web::Query<DryRunParam>,
    body: JsonBody<UpdatePolicy>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse().await?;
    let tx = auth.write().await?;
    let existing = rules::lock_policy(&tx, id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let (description, policy) = validate(
        &auth,
        None,
        &body.text,
        body.description.or(Some(existing.description.clone())),
    )?;
    if policy.effect() == Effect::Permit {
        refuse_escalation(&auth, &policy).await?;
    }
    let (name, text) = (existing.name.clone(), body.text.clone());
    let replace = move |rules: &mut StoredRules| {
        for policy in rules.policies.iter_mut().filter(|(n, _)| *n == name) {
            policy.1 = text.clone();
        }
    };
    refuse_lifting(&auth, &existing, replace.clone()).await?;
    if params.dry_run() {
        drop(tx);
        let impact = dry_run(&auth, replace).await?;
        return Ok(HttpResponse::Ok().json(PolicyChange::DryRun(impact)));
    }
    let before = existing.text.clone();
    let new = PolicyText {
        description,
        text: body.text,
    };
    let updated =
        rules::update_policy(&tx, auth.allowed(), auth.principal(), existing, new).await?;
    let change = Change::new("policy", updated.id, 200)
        .detail("name", updated.name.clone())
        .detail("version", updated.version)
        .detail("before", before)
        .detail("after", updated.text.clone())
        .invalidating();
    tx.commit(change).await?;
    Ok(HttpResponse::Ok().json(PolicyChange::Policy(PolicyView::from(updated))))
}

/// Delete a policy.
///
/// Its history stays readable. With `?dry_run=true` nothing is deleted and the answer lists
/// who would gain and lose which permission.
#[utoipa::path(
    delete,
    path = "/policies/{id}",
    tag = "policies",
    responses((status = 204, description = "Deleted"), (status = 200, body = Impact, description = "The dry run's impact"))
)]
pub async fn delete_policy(
    auth: Authorized<PolicyManage>,
    id: PathId,
    params: web::Query<DryRunParam>,
) -> Result<HttpResponse, ApiError> {
    let tx = auth.write().await?;
    let existing = rules::lock_policy(&tx, id.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let name = existing.name.clone();
    let remove = move |rules: &mut StoredRules| rules.policies.retain(|(n, _)| *n != name);
    refuse_lifting(&auth, &existing, remove.clone()).await?;
    if params.dry_run() {
        drop(tx);
        let impact = dry_run(&auth, remove).await?;
        return Ok(HttpResponse::Ok().json(impact));
    }
    rules::delete_policy(&tx, auth.allowed(), auth.principal(), &existing).await?;
    let change = Change::new("policy", existing.id, 204)
        .detail("name", existing.name)
        .detail("before", existing.text)
        .invalidating();
    tx.commit(change).await?;
    Ok(HttpResponse::NoContent().finish())
}
