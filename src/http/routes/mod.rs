//! HTTP routes: thin handlers and their request and response types.
//!
//! Every operation is listed once, in [`catalog`]; the routes ([`configure`]) and the OpenAPI
//! document are both built from that list, so a route cannot exist without its documentation.

mod account_status;
pub mod alerting;
pub mod api_keys;
pub mod audit;
pub mod authz;
pub mod break_glass;
pub mod clients;
pub mod folders;
pub mod groups;
pub mod health;
pub mod identity_providers;
pub mod me;
pub mod passkeys;
pub mod payload_keys;
pub mod platform;
pub mod policies;
pub mod processes;
pub mod role_bindings;
pub mod roles;
pub mod secrets;
pub mod service_accounts;
pub mod sessions;
pub mod settings;
pub mod signin;
pub mod token_keys;
pub mod tokens;
pub mod trusted_issuers;
pub mod users;

use actix_web::middleware::from_fn;
use actix_web::web;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use utoipa::__dev::ComposeSchema;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ApiError;
use super::jose::negotiate::negotiate;
use super::operation::Operation;
use super::pipeline::tenant_api;
use crate::authz::StoredRules;
use crate::authz::impact::{Impact, Universe, impact};
use crate::operation;
use crate::tenancy::work::TenantContext;

/// Where a group of operations lives, and whether the tenant gate guards it.
pub struct Scope {
    pub prefix: &'static str,
    /// Tenant routes: the gate resolves the tenant and authenticates the caller first.
    pub tenant: bool,
    pub operations: Vec<Operation>,
}

/// Where each tenant's API lives.
pub const TENANT_API: &str = "/t/{tenant}/api/v1";

/// Where each tenant's people sign in and out, and its clients get tokens.
pub const SIGN_IN: &str = "/t/{tenant}/auth";

/// Where each tenant publishes its token keys and authorization-server metadata.
pub const WELL_KNOWN: &str = "/t/{tenant}/.well-known";

/// Every operation of the API, by scope: the one list both the routes and the OpenAPI document
/// are built from.
pub fn catalog() -> Vec<Scope> {
    vec![
        Scope {
            prefix: "",
            tenant: false,
            operations: vec![
                operation!(health::healthz),
                operation!(health::readyz),
                operation!(health::metrics),
            ],
        },
        Scope {
            prefix: "/api/v1/platform",
            tenant: false,
            operations: vec![
                operation!(platform::create_tenant),
                operation!(platform::list_tenants),
                operation!(platform::get_tenant),
                operation!(platform::set_tenant_rate_limits),
                operation!(platform::suspend_tenant),
                operation!(platform::resume_tenant),
                operation!(platform::issue_break_glass),
                operation!(platform::delete_tenant),
                operation!(audit::list_platform_audit_events),
                operation!(audit::verify_platform_audit),
            ],
        },
        Scope {
            prefix: TENANT_API,
            tenant: true,
            operations: vec![
                operation!(users::create_user),
                operation!(users::list_users),
                operation!(users::get_user),
                operation!(users::update_user),
                operation!(users::disable_user),
                operation!(users::enable_user),
                operation!(groups::create_group),
                operation!(groups::list_groups),
                operation!(groups::add_group_member),
                operation!(service_accounts::create_service_account),
                operation!(service_accounts::list_service_accounts),
                operation!(service_accounts::get_service_account),
                operation!(service_accounts::disable_service_account),
                operation!(service_accounts::enable_service_account),
                operation!(role_bindings::create_role_binding),
                operation!(role_bindings::list_role_bindings),
                operation!(role_bindings::delete_role_binding),
                operation!(api_keys::create_api_key),
                operation!(api_keys::list_api_keys),
                operation!(api_keys::delete_api_key),
                operation!(roles::list_roles),
                operation!(roles::create_role),
                operation!(roles::get_role),
                operation!(roles::update_role),
                operation!(roles::delete_role),
                operation!(policies::list_policies),
                operation!(policies::create_policy),
                operation!(policies::get_policy),
                operation!(policies::update_policy),
                operation!(policies::delete_policy),
                operation!(policies::list_policy_versions),
                operation!(authz::get_schema),
                operation!(authz::list_actions),
                operation!(authz::check),
                operation!(authz::resource_access),
                operation!(authz::principal_permissions),
                operation!(folders::list_folders),
                operation!(folders::create_folder),
                operation!(folders::create_subfolder),
                operation!(folders::get_folder),
                operation!(folders::update_folder),
                operation!(folders::delete_folder),
                operation!(processes::list_processes),
                operation!(processes::list_folder_processes),
                operation!(processes::create_process),
                operation!(processes::create_folder_process),
                operation!(processes::get_process),
                operation!(processes::update_process),
                operation!(processes::publish_process),
                operation!(processes::delete_process),
                operation!(secrets::list_secrets),
                operation!(secrets::create_secret),
                operation!(secrets::create_folder_secret),
                operation!(secrets::get_secret),
                operation!(secrets::read_secret_value),
                operation!(secrets::rotate_secret),
                operation!(secrets::delete_secret),
                operation!(secrets::get_encryption_key),
                operation!(secrets::rotate_encryption_key),
                operation!(audit::list_audit_events),
                operation!(audit::export_audit),
                operation!(audit::verify_audit),
                operation!(identity_providers::create_identity_provider),
                operation!(identity_providers::list_identity_providers),
                operation!(identity_providers::get_identity_provider),
                operation!(identity_providers::update_identity_provider),
                operation!(identity_providers::delete_identity_provider),
                operation!(me::get_me),
                operation!(sessions::list_my_sessions),
                operation!(passkeys::list_my_credentials),
                operation!(passkeys::rename_my_credential),
                operation!(passkeys::delete_my_credential),
                operation!(passkeys::reset_user_credentials),
                operation!(sessions::delete_my_session),
                operation!(sessions::list_user_sessions),
                operation!(sessions::delete_user_sessions),
                operation!(sessions::delete_session),
                operation!(clients::create_client),
                operation!(clients::list_clients),
                operation!(clients::delete_client),
                operation!(payload_keys::create_api_key_payload_key),
                operation!(payload_keys::update_api_key_payload_key),
                operation!(payload_keys::create_client_payload_key),
                operation!(payload_keys::update_client_payload_key),
                operation!(trusted_issuers::create_trusted_issuer),
                operation!(trusted_issuers::list_trusted_issuers),
                operation!(trusted_issuers::delete_trusted_issuer),
                operation!(settings::get_settings),
                operation!(settings::update_settings),
                operation!(alerting::get_alerting),
                operation!(alerting::put_alerting),
                operation!(token_keys::list_token_keys),
                operation!(token_keys::rotate_token_key),
            ],
        },
        Scope {
            prefix: SIGN_IN,
            tenant: false,
            operations: vec![
                operation!(signin::login_page),
                operation!(signin::login_script),
                operation!(signin::oidc_login),
                operation!(signin::oidc_callback),
                operation!(signin::saml_login),
                operation!(signin::saml_acs),
                operation!(signin::saml_metadata),
                operation!(signin::logout),
                operation!(passkeys::register_start),
                operation!(passkeys::register_finish),
                operation!(passkeys::authenticate_start),
                operation!(passkeys::authenticate_finish),
                operation!(break_glass::enroll),
                operation!(break_glass::start),
                operation!(break_glass::finish),
                operation!(tokens::token),
            ],
        },
        Scope {
            prefix: WELL_KNOWN,
            tenant: false,
            operations: vec![operation!(tokens::jwks), operation!(tokens::metadata)],
        },
    ]
}

/// Registers every route of [`catalog`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    for scope in catalog() {
        let resources = scope.operations.iter().map(Operation::resource);
        if scope.prefix.is_empty() {
            resources.for_each(|resource| {
                cfg.service(resource);
            });
        } else if scope.tenant {
            // The last wrap runs first: the tenant gate (stages 2 to 4 and 7), then the payload
            // negotiation, which needs the gate's principal.
            let gated = web::scope(scope.prefix)
                .wrap(from_fn(negotiate))
                .wrap(from_fn(tenant_api));
            cfg.service(resources.fold(gated, |s, resource| s.service(resource)));
        } else {
            let open = web::scope(scope.prefix);
            cfg.service(resources.fold(open, |s, resource| s.service(resource)));
        }
    }
}

/// Paging of list operations.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
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
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A page of `UserView`s is the schema `UserPage`, whose items refer to `UserView` (a derived
/// schema would inline them, and generated clients would get one item type per list).
impl<T: ToSchema> ToSchema for Page<T> {
    fn name() -> Cow<'static, str> {
        let item = T::name();
        Cow::Owned(format!(
            "{}Page",
            item.strip_suffix("View").unwrap_or(&item)
        ))
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(schemas);
    }
}

impl<T: ToSchema> ComposeSchema for Page<T> {
    fn compose(_: Vec<RefOr<Schema>>) -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some("One page of a list."))
            .property(
                "items",
                ArrayBuilder::new().items(Ref::from_schema_name(T::name())),
            )
            .required("items")
            .property(
                "next_cursor",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                    .description(Some(
                        "Pass as `after` to get the next page; null on the last page.",
                    )),
            )
            .required("next_cursor")
            .into()
    }
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

/// How many rows a filtered page looks at, per item it may return: bounds the work of a page
/// in a tenant where the caller may see little.
const SCAN_PER_ITEM: u64 = 10;
/// The most rows a filtered page reads at once, whatever its `limit`.
const SCAN_BATCH: u64 = 50;

/// How much of its rows' bulk a filtered page may hold: once the items' `weight` (the bytes of
/// a process's definition, say) reaches `bytes`, the page ends there and has a `next_cursor`.
pub struct Budget<M> {
    pub bytes: usize,
    pub weight: fn(&M) -> usize,
}

impl<T> Page<T> {
    /// A page of the rows after `after` (in id order) that `visible` keeps. `fetch(after, n)`
    /// returns the next `n` rows. At most [`SCAN_PER_ITEM`] × `limit` rows are looked at, at
    /// most [`SCAN_BATCH`] at a time, and the items stop at the `budget` if one is given, so a
    /// page may hold fewer than `limit` items and still have a `next_cursor`: callers page on
    /// while there is one.
    pub async fn filtered<M>(
        after: Option<Uuid>,
        limit: u64,
        budget: Option<Budget<M>>,
        mut fetch: impl AsyncFnMut(Option<Uuid>, u64) -> Result<Vec<M>, ApiError>,
        id: impl Fn(&M) -> Uuid,
        visible: impl Fn(&M) -> bool,
        view: impl Fn(M) -> T,
    ) -> Result<Self, ApiError> {
        let mut cursor = after;
        let mut items = Vec::new();
        let mut scanned = 0;
        let mut held = 0;
        let mut exhausted = false;
        let batch_size = limit.min(SCAN_BATCH);
        'scan: while (items.len() as u64) < limit && scanned < SCAN_PER_ITEM * limit {
            let batch = fetch(cursor, batch_size).await?;
            let full = batch.len() as u64 == batch_size;
            for row in batch {
                scanned += 1;
                cursor = Some(id(&row));
                if visible(&row) {
                    held += budget.as_ref().map_or(0, |b| (b.weight)(&row));
                    items.push(view(row));
                    let spent = budget.as_ref().is_some_and(|b| held >= b.bytes);
                    if items.len() as u64 == limit || spent {
                        break 'scan;
                    }
                }
            }
            if !full {
                exhausted = true;
                break;
            }
        }
        Ok(Page {
            items,
            next_cursor: (!exhausted)
                .then(|| cursor.map(|c| c.to_string()))
                .flatten(),
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

/// The impact of applying `change` to the tenant's stored rules, against the policy set the
/// request was authorized by; the changed set is compiled, and the impact computed, off the
/// worker thread (it evaluates every principal against every resource).
pub async fn dry_run(
    request: &TenantContext,
    change: impl FnOnce(&mut StoredRules) + Send + 'static,
) -> Result<Impact, ApiError> {
    // Before the change: the policy set this request was authorized by.
    let before = request.policies_handle();
    let tx = request.read().await?;
    let mut changed = StoredRules::load(&tx).await?;
    let universe = Universe::load(&tx, &before).await?;
    tx.commit().await?;
    change(&mut changed);
    let after = request.compile(changed).await?;
    let context = request.clone();
    let impact = web::block(move || impact(context.engine(), &before, &after, &universe))
        .await
        .map_err(|e| ApiError::internal("authz", anyhow::anyhow!("dry run failed: {e}")))?;
    Ok(impact)
}
