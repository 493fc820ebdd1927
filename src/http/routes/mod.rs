//! HTTP routes: thin handlers and their request and response types.
//!
//! Every operation is registered through [`configure`], which is also how the OpenAPI document
//! is collected, so a route cannot exist without its documentation.

pub mod api_keys;
pub mod audit;
pub mod authz;
pub mod folders;
pub mod groups;
pub mod health;
pub mod platform;
pub mod policies;
pub mod processes;
pub mod role_bindings;
pub mod roles;
pub mod service_accounts;
pub mod users;

use actix_web::middleware::from_fn;
use actix_web::web;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use utoipa_actix_web::scope;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::error::{ApiError, Problem};
use super::tenant::{TenantRequest, gate};
use crate::authz::StoredRules;
use crate::authz::impact::{Impact, Universe, impact};

/// Registers every route.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(
            scope::scope("/api/v1/platform")
                .service(platform::create_tenant)
                .service(platform::list_tenants)
                .service(platform::get_tenant)
                .service(platform::suspend_tenant)
                .service(platform::resume_tenant)
                .service(platform::delete_tenant)
                .service(audit::list_platform_audit_events)
                .service(audit::verify_platform_audit),
        )
        .service(
            scope::scope("/t/{tenant}/api/v1")
                .wrap(from_fn(gate))
                .service(users::create_user)
                .service(users::list_users)
                .service(users::get_user)
                .service(users::update_user)
                .service(groups::create_group)
                .service(groups::list_groups)
                .service(groups::add_group_member)
                .service(service_accounts::create_service_account)
                .service(service_accounts::list_service_accounts)
                .service(service_accounts::get_service_account)
                .service(role_bindings::create_role_binding)
                .service(role_bindings::list_role_bindings)
                .service(role_bindings::delete_role_binding)
                .service(api_keys::create_api_key)
                .service(api_keys::list_api_keys)
                .service(api_keys::delete_api_key)
                .service(roles::list_roles)
                .service(roles::create_role)
                .service(roles::get_role)
                .service(roles::update_role)
                .service(roles::delete_role)
                .service(policies::list_policies)
                .service(policies::create_policy)
                .service(policies::get_policy)
                .service(policies::update_policy)
                .service(policies::delete_policy)
                .service(policies::list_policy_versions)
                .service(authz::get_schema)
                .service(authz::list_actions)
                .service(authz::check)
                .service(authz::resource_access)
                .service(authz::principal_permissions)
                .service(folders::list_folders)
                .service(folders::create_folder)
                .service(folders::create_subfolder)
                .service(folders::get_folder)
                .service(folders::update_folder)
                .service(folders::delete_folder)
                .service(processes::list_processes)
                .service(processes::list_folder_processes)
                .service(processes::create_process)
                .service(processes::create_folder_process)
                .service(processes::get_process)
                .service(processes::update_process)
                .service(processes::publish_process)
                .service(processes::delete_process)
                .service(audit::list_audit_events)
                .service(audit::export_audit)
                .service(audit::verify_audit),
        );
}

/// The tenant in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantParam {
    /// The tenant's slug.
    pub tenant: String,
}

/// An object id in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdParam {
    /// The object's id.
    pub id: Uuid,
}

/// Paging of list operations.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1 to 500 (default 100).
    pub limit: Option<u64>,
    /// Return items after this cursor (the `next_cursor` of the previous page).
    pub after: Option<Uuid>,
}

const DEFAULT_PAGE: u64 = 100;
const MAX_PAGE: u64 = 500;

impl ListParams {
    pub fn limit(&self) -> Result<u64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::invalid_field(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            )),
        }
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of `rows` fetched with `limit`; a full page has a cursor at its last item.
    pub fn of<M>(
        rows: Vec<M>,
        limit: u64,
        cursor: impl Fn(&M) -> String,
        view: impl Fn(M) -> T,
    ) -> Self {
        match Self::try_of(rows, limit, cursor, |m| {
            Ok::<T, std::convert::Infallible>(view(m))
        }) {
            Ok(page) => page,
            Err(never) => match never {},
        }
    }

    /// [`Page::of`] with a view that can fail.
    pub fn try_of<M, E>(
        rows: Vec<M>,
        limit: u64,
        cursor: impl Fn(&M) -> String,
        view: impl Fn(M) -> Result<T, E>,
    ) -> Result<Self, E> {
        let next_cursor = (rows.len() as u64 == limit)
            .then(|| rows.last().map(&cursor))
            .flatten();
        Ok(Page {
            items: rows.into_iter().map(view).collect::<Result<_, E>>()?,
            next_cursor,
        })
    }
}

/// Whether a change to roles or policies is only to be tried.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DryRunParam {
    /// Report who would gain and lose which permission, and change nothing.
    pub dry_run: Option<bool>,
}

impl DryRunParam {
    pub fn dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }
}

/// The impact of applying `change` to the tenant's stored rules, computed off the worker thread
/// (it evaluates every principal against every resource).
pub async fn dry_run(
    request: &TenantRequest,
    change: impl FnOnce(&mut StoredRules) + Send + 'static,
) -> Result<Impact, ApiError> {
    let state = request.state_handle();
    let engine = state.authz.engine();
    let tx = request.read().await?;
    let rules = StoredRules::load(&tx).await?;
    let before = engine.build(&rules.for_tenant(request.tenant()))?;
    let universe = Universe::load(&tx, &before).await?;
    tx.commit().await?;
    let mut changed = rules;
    change(&mut changed);
    let after = engine.build(&changed.for_tenant(request.tenant()))?;
    let impact = web::block(move || impact(state.authz.engine(), &before, &after, &universe))
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("dry run failed: {e}")))?;
    Ok(impact)
}

/// Errors every tenant operation can answer with.
#[derive(IntoResponses)]
pub enum TenantErrors {
    /// No or invalid credentials.
    #[response(status = 401)]
    Unauthenticated(Problem),
    /// The caller lacks the permission, or the tenant is suspended.
    #[response(status = 403)]
    Forbidden(Problem),
    /// No such tenant or object (also for another tenant's objects).
    #[response(status = 404)]
    NotFound(Problem),
    /// The database or key store is unavailable.
    #[response(status = 503)]
    Unavailable(Problem),
}

/// Errors of operations that take a JSON body, in addition to [`TenantErrors`].
#[derive(IntoResponses)]
pub enum BodyErrors {
    /// The body is not valid JSON.
    #[response(status = 400)]
    Malformed(Problem),
    /// The body is larger than the limit.
    #[response(status = 413)]
    TooLarge(Problem),
    /// The body is not `application/json`.
    #[response(status = 415)]
    UnsupportedMediaType(Problem),
    /// The body has unknown fields or fails validation.
    #[response(status = 422)]
    Invalid(Problem),
}
