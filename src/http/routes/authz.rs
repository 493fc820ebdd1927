//! `/t/{tenant}/api/v1/authz`: the schema, the catalogue, and explained decisions.

use actix_web::web;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use uuid::Uuid;

use crate::authz::actions::{ActionInfo, AuthzCheck, PolicyRead, RoleRead, info};
use crate::authz::bindings::SubjectType;
use crate::authz::impact::{Abilities, Access, Universe, what_can, who_can};
use crate::authz::schema::{EntityKind, NAMESPACE, schema_text};
use crate::authz::{CATALOGUE, Resource, Subject, load_subject, resolve_resource};
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;
use crate::http::pipeline::authz::Authorized;
use crate::tenancy::work::TenantContext;

/// The Cedar schema policies are validated against.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaView {
    #[schema(example = "Flowgate")]
    pub namespace: &'static str,
    /// The schema in Cedar's human-readable format.
    pub cedarschema: String,
}

/// The action catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionList {
    pub items: Vec<ActionInfo>,
}

/// A principal to ask about.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrincipalRef {
    /// `user` or `service_account`.
    #[serde(rename = "type")]
    #[schema(schema_with = principal_type_schema)]
    pub kind: SubjectType,
    pub id: Uuid,
}

/// A resource to ask about.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceRef {
    /// `tenant`, `folder`, `process`, `form`, `report`, `secret` or `task`.
    #[serde(rename = "type")]
    #[schema(schema_with = resource_type_schema)]
    pub kind: String,
    /// The object's id (the tenant's slug for `tenant`).
    pub id: String,
    /// For kinds not stored yet (forms, reports, secrets, tasks): the folder holding it.
    pub folder_id: Option<Uuid>,
}

/// An authorization question.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"principal": {"type": "user", "id": "0192f0c4-5d7a-7b3e-9c1d-2f4a6b8c0d1e"}, "action": "task.approve", "resource": {"type": "tenant", "id": "acme"}, "context": {"amount": 75000}}))]
pub struct CheckRequest {
    pub principal: PrincipalRef,
    #[schema(example = "task.approve")]
    pub action: String,
    pub resource: ResourceRef,
    /// Request data for the action's context (e.g. `{"amount": 75000}`); `environment` and
    /// `now` default to the tenant's and the current time.
    #[schema(value_type = Option<Object>)]
    pub context: Option<serde_json::Value>,
}

/// An explained decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    /// `allow` or `deny`.
    #[schema(example = "allow")]
    pub decision: &'static str,
    /// The policies that decided: `binding:<id>` or `policy:<name>`; empty when no policy
    /// permits.
    pub reasons: Vec<String>,
    /// Evaluation errors (a policy that errs does not apply).
    pub errors: Vec<String>,
}

/// A principal in the query string.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PrincipalQuery {
    /// `user` or `service_account`.
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = principal_type_schema)]
    pub kind: SubjectType,
    pub id: Uuid,
}

/// A resource in the query string.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResourceQuery {
    /// `tenant`, `folder`, `process`, `form`, `report`, `secret` or `task`.
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = resource_type_schema)]
    pub kind: String,
    pub id: String,
    pub folder_id: Option<Uuid>,
}

/// The name of a catalogue action: the schema `ActionName`.
pub struct ActionName;

impl PartialSchema for ActionName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("An action of the catalogue (`GET /authz/actions`)."))
            .enum_values(Some(CATALOGUE.iter().map(|a| a.name)))
            .into()
    }
}

impl ToSchema for ActionName {}

/// A role's `actions`: catalogue names, at least one, none twice.
pub(super) fn action_names_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(Ref::from_schema_name(ActionName::name()))
        .min_items(Some(1))
        .unique_items(true)
}

/// The kinds a decision can be asked about: principals.
fn principal_type_schema() -> ObjectBuilder {
    kinds_schema(&[EntityKind::User, EntityKind::ServiceAccount])
}

/// The kinds a decision can be asked about: everything but principals.
fn resource_type_schema() -> ObjectBuilder {
    let resources: Vec<EntityKind> = EntityKind::ALL
        .into_iter()
        .filter(|k| !is_principal(*k))
        .collect();
    kinds_schema(&resources)
}

fn is_principal(kind: EntityKind) -> bool {
    matches!(
        kind,
        EntityKind::User | EntityKind::Group | EntityKind::ServiceAccount
    )
}

fn kinds_schema(kinds: &[EntityKind]) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(kinds.iter().map(|k| k.api_name())))
}

/// The tenant's Cedar schema.
#[utoipa::path(
    get,
    path = "/authz/schema",
    tag = "authz",
    responses((status = 200, body = SchemaView))
)]
pub async fn get_schema(_auth: Authorized<PolicyRead>) -> web::Json<SchemaView> {
    web::Json(SchemaView {
        namespace: NAMESPACE,
        cedarschema: schema_text(),
    })
}

/// The action catalogue: every permission, what it applies to.
#[utoipa::path(
    get,
    path = "/authz/actions",
    tag = "authz",
    responses((status = 200, body = ActionList))
)]
pub async fn list_actions(_auth: Authorized<RoleRead>) -> web::Json<ActionList> {
    web::Json(ActionList {
        items: CATALOGUE.to_vec(),
    })
}

async fn subject(
    request: &TenantContext,
    kind: SubjectType,
    id: Uuid,
) -> Result<Subject, ApiError> {
    if kind == SubjectType::Group {
        return Err(ApiError::invalid_field(
            "principal.type",
            "must be `user` or `service_account`",
        ));
    }
    let tx = request.read().await?;
    let subject = load_subject(&tx, kind, id).await?;
    tx.commit().await?;
    subject.ok_or_else(|| ApiError::no_such("principal.id", "principal"))
}

async fn resource(
    request: &TenantContext,
    kind: &str,
    id: &str,
    folder: Option<Uuid>,
) -> Result<Resource, ApiError> {
    let kind = EntityKind::from_api_name(kind)
        .filter(|k| !is_principal(*k))
        .ok_or_else(|| {
            ApiError::invalid_field(
                "resource.type",
                "must be tenant, folder, process, form, report, secret or task",
            )
        })?;
    let tx = request.read().await?;
    let resource = resolve_resource(&tx, request.policies(), kind, id, folder).await?;
    tx.commit().await?;
    resource.ok_or_else(|| ApiError::no_such("resource.id", "resource"))
}

/// What an access analysis needs off the worker thread (it may make many decisions).
async fn analysis(request: &TenantContext) -> Result<(TenantContext, Universe), ApiError> {
    let tx = request.read().await?;
    let universe = Universe::load(&tx, request.policies()).await?;
    tx.commit().await?;
    Ok((request.clone(), universe))
}

/// Explain a decision.
///
/// Answers whether the principal may do the action on the resource in the given context, and
/// which policies decided. For admins debugging access.
#[utoipa::path(
    post,
    path = "/authz/check",
    tag = "authz",
    responses((status = 200, body = CheckResult))
)]
pub async fn check(
    auth: Authorized<AuthzCheck>,
    body: JsonBody<CheckRequest>,
) -> Result<web::Json<CheckResult>, ApiError> {
    let body = body.parse().await?;
    let action = info(&body.action).ok_or_else(|| {
        ApiError::invalid_field("action", "unknown action (see GET /authz/actions)")
    })?;
    let subject = subject(&auth, body.principal.kind, body.principal.id).await?;
    let resource = resource(
        &auth,
        &body.resource.kind,
        &body.resource.id,
        body.resource.folder_id,
    )
    .await?;
    if !action.resources.contains(&resource.kind) {
        return Err(ApiError::invalid_field(
            "resource.type",
            format!(
                "`{}` does not apply to a {}",
                action.name,
                resource.kind.api_name()
            ),
        ));
    }
    let decision = auth
        .engine()
        .decide_with_context(
            auth.policies(),
            &subject,
            action.name,
            &resource,
            body.context.unwrap_or_default(),
        )
        .map_err(|message| ApiError::invalid_field("context", message))?;
    Ok(web::Json(CheckResult {
        decision: if decision.allowed { "allow" } else { "deny" },
        reasons: decision.reasons,
        errors: decision.errors,
    }))
}

/// Who can do what on a resource.
///
/// Every principal with at least one permitted action, and those actions (in the default
/// context).
#[utoipa::path(
    get,
    path = "/authz/access",
    tag = "authz",
    responses((status = 200, body = Access))
)]
pub async fn resource_access(
    auth: Authorized<AuthzCheck>,
    query: web::Query<ResourceQuery>,
) -> Result<web::Json<Access>, ApiError> {
    let resource = resource(&auth, &query.kind, &query.id, query.folder_id).await?;
    let (context, universe) = analysis(&auth).await?;
    let access =
        web::block(move || who_can(context.engine(), context.policies(), &universe, &resource))
            .await
            .map_err(|e| {
                ApiError::internal("authz", anyhow::anyhow!("access analysis failed: {e}"))
            })?;
    Ok(web::Json(access))
}

/// What a principal can do.
///
/// Every resource of the tenant on which the principal may do something, and those actions (in
/// the default context).
#[utoipa::path(
    get,
    path = "/authz/permissions",
    tag = "authz",
    responses((status = 200, body = Abilities))
)]
pub async fn principal_permissions(
    auth: Authorized<AuthzCheck>,
    query: web::Query<PrincipalQuery>,
) -> Result<web::Json<Abilities>, ApiError> {
    let subject = subject(&auth, query.kind, query.id).await?;
    let (context, universe) = analysis(&auth).await?;
    let abilities =
        web::block(move || what_can(context.engine(), context.policies(), &universe, &subject))
            .await
            .map_err(|e| {
                ApiError::internal("authz", anyhow::anyhow!("access analysis failed: {e}"))
            })?;
    Ok(web::Json(abilities))
}
