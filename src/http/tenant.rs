//! The tenant request path: gate, authorization extractor, transactions and audit.
//!
//! Every request under `/t/{tenant}/api/v1` passes [`gate`]: the tenant is resolved (unknown or
//! not live: 404), the caller authenticated (401), a suspended tenant refused (403), and the
//! tenant's policy set loaded. A handler then cannot run without an [`Authorized<A, T>`]
//! argument, whose extraction is the authorization decision for action `A` on the target `T`
//! of the path (the tenant, a folder, a process). Changes are made in a
//! [`WriteTx`] whose only way to commit also appends the audit event; every other outcome,
//! allowed or not, is audited by the gate through the group-commit writer before the response
//! leaves.
//!
//! Invariant: no tenant data is reachable from a handler except through [`TenantRequest::read`]
//! and [`TenantRequest::write`], which are confined to the request's tenant.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, FromRequest, HttpMessage as _, HttpRequest, ResponseError as _, web};
use futures_util::future::LocalBoxFuture;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};
use serde_json::Value;

use utoipa::openapi::Required;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use super::contract::{Contract, Documented, Guard, Requirement, Security};
use super::error::{ApiError, ErrorCode};
use super::extract::bearer_token;
use super::middleware::request_meta;
use super::rate_limit::{record_trip, trip_event};
use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, RequestMeta, Trail, chain};
use crate::authz::impact::{Universe, exceeding};
use crate::authz::schema::EntityKind;
use crate::authz::{Action, Decision, Facts, Resource, Subject, TenantPolicies, process_folder};
use crate::identity::{IdentityError, InvalidReason, Principal};
use crate::tenancy::slug::SLUG_PATTERN;
use crate::tenancy::{Access, DbKind, Slug, TenancyError, Tenant, TenantStatus};

/// PostgreSQL channel on which replicas tell each other that a tenant's cached state changed.
pub const INVALIDATION_CHANNEL: &str = "flowgate_invalidate";

/// The authenticated request of one tenant, shared by the gate and the handler.
#[derive(Clone)]
pub struct TenantRequest(Arc<Inner>);

struct Inner {
    state: web::Data<AppState>,
    tenant: Arc<Tenant>,
    principal: Principal,
    /// The principal as the policy engine sees it.
    subject: Subject,
    policies: Arc<TenantPolicies>,
    meta: RequestMeta,
    note: Mutex<AuditNote>,
}

/// What the audit event of this request must say, filled in as the request goes.
#[derive(Default)]
struct AuditNote {
    action: Option<&'static str>,
    /// The API name and id of the resource decided on.
    resource: Option<(&'static str, String)>,
    decision: Option<Outcome>,
    reasons: Vec<String>,
    /// Set once the event was written inside a change's transaction.
    recorded: bool,
}

impl TenantRequest {
    pub fn tenant(&self) -> &Tenant {
        &self.0.tenant
    }

    pub fn slug(&self) -> &Slug {
        &self.0.tenant.slug
    }

    pub fn principal(&self) -> &Principal {
        &self.0.principal
    }

    pub fn state(&self) -> &AppState {
        &self.0.state
    }

    /// A handle on the application state that can outlive the request (for blocking work).
    pub fn state_handle(&self) -> web::Data<AppState> {
        self.0.state.clone()
    }

    /// The caller as the policy engine sees it.
    pub fn subject(&self) -> &Subject {
        &self.0.subject
    }

    /// Refuses a grant the caller cannot make (it would give away more than the caller holds),
    /// noting the refusal for the audit trail.
    pub fn refuse_delegation(&self, missing: &[String]) -> ApiError {
        let mut note = self.note();
        note.decision = Some(Outcome::Deny);
        note.reasons = vec![format!(
            "delegation: the caller lacks {}",
            missing.join(", ")
        )];
        let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "You cannot grant what you do not hold yourself: {}{}.",
                shown.join(", "),
                if missing.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            ),
        )
    }

    /// Refuses a change of a principal from `before` to `after` (a new group, new claims; or,
    /// with no `before`, a new credential of `after`) when it would give `after` a permission
    /// the caller does not hold: nobody hands out more than they have.
    ///
    /// It reads in a transaction of its own: call it before opening the write transaction of
    /// the change, so that its evaluations (thousands in a large tenant) never hold the
    /// tenant's write lock.
    pub async fn refuse_escalation(
        &self,
        before: Option<&Subject>,
        after: &Subject,
    ) -> Result<(), ApiError> {
        // Grants that only a context shows (a source address, an amount) are not in a
        // default-context comparison: their whole reach must be the caller's.
        let conditional = self.state().authz.engine().conditional_not_delegable(
            self.policies(),
            self.subject(),
            before,
            after,
        );
        let tx = self.read().await?;
        let universe = Universe::load_resources(&tx, self.policies()).await?;
        tx.commit().await?;
        let (state, policies) = (self.state_handle(), self.policies_handle());
        let (before, after, caller) = (before.cloned(), after.clone(), self.subject().clone());
        // Thousands of decisions in a large tenant: off the worker thread.
        let excess = web::block(move || {
            let engine = state.authz.engine();
            exceeding(
                engine,
                &policies,
                &universe,
                before.as_ref(),
                &after,
                &caller,
            )
        })
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("escalation check failed: {e}")))?;
        if excess.is_empty() && conditional.is_empty() {
            return Ok(());
        }
        let mut actions: Vec<String> = excess.into_iter().map(|p| p.action).collect();
        actions.extend(conditional);
        actions.sort();
        actions.dedup();
        Err(self.refuse_delegation(&actions))
    }

    /// The tenant's compiled policies, as loaded for this request.
    pub fn policies(&self) -> &TenantPolicies {
        &self.0.policies
    }

    /// The same policies, shareable with work off the worker thread.
    pub fn policies_handle(&self) -> Arc<TenantPolicies> {
        Arc::clone(&self.0.policies)
    }

    /// A read-only transaction in this tenant.
    pub async fn read(&self) -> Result<DatabaseTransaction, ApiError> {
        Ok(self.state().dbs.begin(self.slug(), Access::Read).await?)
    }

    /// A read-write transaction in this tenant; it commits only together with its audit event.
    pub async fn write(&self) -> Result<WriteTx, ApiError> {
        let tx = self.state().dbs.begin(self.slug(), Access::Write).await?;
        Ok(WriteTx {
            tx,
            request: self.clone(),
        })
    }

    /// Decides whether the caller may do `A` on `resource`, and notes the decision for the
    /// audit trail. Handlers call it for a second resource an operation touches; the first is
    /// decided by [`Authorized`].
    pub fn authorize<A: Action>(&self, resource: &Resource) -> Result<(), ApiError> {
        if cfg!(feature = "insecure-bench") {
            return Ok(());
        }
        let decision = self.decide::<A>(resource);
        let mut note = self.note();
        note.action = Some(A::NAME);
        note.resource = Some((resource.kind.api_name(), resource.id.clone()));
        note.decision = Some(if decision.allowed {
            Outcome::Allow
        } else {
            Outcome::Deny
        });
        note.reasons = decision.reasons;
        if decision.allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden(A::NAME))
        }
    }

    /// Whether the caller may do `A` on `resource`, without noting it for the audit trail:
    /// for filtering what a list shows, after the list's own action was authorized.
    pub fn may<A: Action>(&self, resource: &Resource) -> bool {
        cfg!(feature = "insecure-bench") || self.decide::<A>(resource).allowed
    }

    fn decide<A: Action>(&self, resource: &Resource) -> Decision {
        let state = self.state();
        let facts = Facts {
            source_ip: self
                .0
                .meta
                .source_ip
                .as_deref()
                .and_then(|ip| ip.parse().ok()),
            ..Facts::default()
        };
        let decision = state.authz.engine().decide(
            &self.0.policies,
            &self.0.subject,
            A::NAME,
            resource,
            &facts,
        );
        state.metrics.observe_decision(decision.allowed);
        if !decision.errors.is_empty() {
            tracing::warn!(action = A::NAME, errors = ?decision.errors, "policy evaluation errors");
        }
        decision
    }

    fn note(&self) -> std::sync::MutexGuard<'_, AuditNote> {
        // The note is plain data; a panic elsewhere cannot leave it half-updated.
        self.0.note.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The audit event of this request, as far as it is known.
    fn event(&self, status: u16) -> AuditEvent {
        let note = self.note();
        let decision = note.decision.unwrap_or(Outcome::None);
        let (resource_type, resource_id) = match &note.resource {
            Some((kind, id)) => (*kind, Some(id.clone())),
            None => ("tenant", None),
        };
        let mut event = AuditEvent::new(
            &self.0.meta,
            note.action.unwrap_or("request"),
            resource_type,
        )
        .actor(self.principal().actor_type(), self.principal().actor_id())
        .outcome(decision, status);
        event.resource_id = resource_id;
        if !note.reasons.is_empty() {
            event = event.detail("policies", note.reasons.clone());
        } else if decision == Outcome::Deny {
            event = event.detail("policies", "no policy permits this");
        }
        event
    }
}

/// Where an action applies, resolved from the request path before the decision.
pub trait Target: 'static {
    /// Where the decision is made, for the documentation (`the folder of the path`); `None` for
    /// the tenant.
    const ON: Option<&'static str>;

    fn resolve(
        request: &TenantRequest,
        http: &HttpRequest,
    ) -> impl Future<Output = Result<Resource, ApiError>>;
}

/// The tenant itself: tenant-wide actions such as listing users.
pub struct OnTenant;

/// The folder `{id}` of the path.
pub struct OnFolder;

/// The process `{id}` of the path.
pub struct OnProcess;

impl Target for OnTenant {
    const ON: Option<&'static str> = None;

    async fn resolve(request: &TenantRequest, _: &HttpRequest) -> Result<Resource, ApiError> {
        Ok(request.policies().tenant())
    }
}

impl Target for OnFolder {
    const ON: Option<&'static str> = Some("the folder");

    async fn resolve(request: &TenantRequest, http: &HttpRequest) -> Result<Resource, ApiError> {
        let id = path_id(http)?;
        request
            .policies()
            .folder(id)
            .ok_or_else(ApiError::not_found)
    }
}

impl Target for OnProcess {
    const ON: Option<&'static str> = Some("the process");

    async fn resolve(request: &TenantRequest, http: &HttpRequest) -> Result<Resource, ApiError> {
        let id = path_id(http)?;
        let tx = request.read().await?;
        let folder = process_folder(&tx, id).await?;
        tx.commit().await?;
        folder
            .and_then(|folder| {
                request
                    .policies()
                    .resource_in(EntityKind::Process, id.to_string(), folder)
            })
            .ok_or_else(ApiError::not_found)
    }
}

/// A handler argument proving that the caller may do `A` on the target `T` of the request
/// (the tenant unless said otherwise).
pub struct Authorized<A: Action, T: Target = OnTenant> {
    request: TenantRequest,
    resource: Resource,
    _decided: PhantomData<(A, T)>,
}

impl<A: Action, T: Target> Authorized<A, T> {
    /// The resource the decision was about.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }
}

impl<A: Action, T: Target> Deref for Authorized<A, T> {
    type Target = TenantRequest;

    fn deref(&self) -> &TenantRequest {
        &self.request
    }
}

impl<A: Action, T: Target> FromRequest for Authorized<A, T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    /// Resolves the target and decides. Handlers read their bodies only afterwards (see
    /// `JsonBody`), so a denial always wins over a body error.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = req.extensions().get::<TenantRequest>().cloned();
        let http = req.clone();
        Box::pin(async move {
            let request = request.ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("tenant route outside the tenant gate"))
            })?;
            let resource = T::resolve(&request, &http).await?;
            request.authorize::<A>(&resource)?;
            Ok(Authorized {
                request,
                resource,
                _decided: PhantomData,
            })
        })
    }
}

/// A tenant operation: the tenant's bearer credential, the decision of `A` on `T`, and what the
/// gate and the decision can answer.
impl<A: Action, T: Target> Documented for Authorized<A, T> {
    fn document(contract: &mut Contract) {
        contract.security = Some(Security::Tenant);
        contract.requirement = Some(Requirement {
            action: A::NAME,
            on: T::ON,
        });
        contract.parameters(vec![
            ParameterBuilder::new()
                .name("tenant")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The tenant's slug."))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(SLUG_PATTERN)),
                ))
                .build(),
        ]);
        contract.errors(&[
            ErrorCode::Unauthenticated,
            ErrorCode::InvalidCredentials,
            ErrorCode::Forbidden,
            ErrorCode::TenantSuspended,
            ErrorCode::NotFound,
            ErrorCode::RateLimited,
            ErrorCode::DependencyUnavailable,
        ]);
    }
}

impl<A: Action, T: Target> Guard for Authorized<A, T> {}

fn path_id(http: &HttpRequest) -> Result<uuid::Uuid, ApiError> {
    http.match_info()
        .get("id")
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .ok_or_else(ApiError::not_found)
}

/// What a committed change did, for its audit event.
pub struct Change {
    pub resource_type: &'static str,
    pub resource_id: String,
    /// The status the handler answers with.
    pub status: u16,
    pub details: Value,
    /// The change alters what the tenant's caches hold (bindings, keys, status).
    pub invalidates: bool,
}

impl Change {
    pub fn new(resource_type: &'static str, resource_id: impl ToString, status: u16) -> Self {
        Change {
            resource_type,
            resource_id: resource_id.to_string(),
            status,
            details: Value::Object(Default::default()),
            invalidates: false,
        }
    }

    /// Marks a change that cached authorization or credential state depends on.
    pub fn invalidating(mut self) -> Self {
        self.invalidates = true;
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(map) = &mut self.details {
            map.insert(key.to_owned(), value.into());
        }
        self
    }
}

/// A tenant write transaction. Dropping it rolls back; [`WriteTx::commit`] is the only way to
/// make its changes visible, and it writes the audit event in the same transaction.
pub struct WriteTx {
    tx: DatabaseTransaction,
    request: TenantRequest,
}

impl WriteTx {
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.tx
    }

    /// Appends the audit event of `change` and commits.
    pub async fn commit(self, change: Change) -> Result<(), ApiError> {
        let request = self.request;
        let state = request.state();
        let mut event = request.event(change.status);
        event.resource_type = change.resource_type.to_owned();
        event.resource_id = Some(change.resource_id);
        if let (Value::Object(target), Value::Object(extra)) = (&mut event.details, change.details)
        {
            target.extend(extra);
        }
        chain::append(&self.tx, &[event]).await?;
        if change.invalidates && state.dbs.kind() == DbKind::Postgres {
            // NOTIFY is transactional: other replicas hear it only if the change commits.
            self.tx
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_notify($1, $2)",
                    [
                        INVALIDATION_CHANNEL.into(),
                        request.slug().to_string().into(),
                    ],
                ))
                .await?;
        }
        self.tx.commit().await?;
        request.note().recorded = true;
        if change.invalidates {
            state.forget_tenant(request.slug().as_str());
        }
        state.audit.touched(request.slug(), 1);
        Ok(())
    }
}

/// The middleware in front of every tenant route.
pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(req.error_response(ApiError::internal(anyhow::anyhow!(
            "application state missing"
        ))));
    };
    let meta = request_meta(req.request());
    let source = req.peer_addr().map(|a| a.ip());
    let tenant = match resolve_tenant(&state, &req).await {
        Ok(tenant) => tenant,
        // To a caller not yet authenticated, a tenant that does not exist looks like one whose
        // credential it lacks: the answer does not tell which slugs exist.
        Err(e) if e.code() == ErrorCode::NotFound => {
            let error = ApiError::from(match bearer_token(req.request()) {
                None => IdentityError::MissingCredentials,
                Some(_) => IdentityError::InvalidCredentials(InvalidReason::UnknownKey),
            });
            if let Some(ip) = source
                && let Some(trip) = state.limits.failed(ip).await
            {
                record_trip(&state, Trail::Platform, trip_event(&meta, &trip)).await;
            }
            return Ok(req.error_response(error));
        }
        Err(e) => return Ok(req.error_response(e)),
    };
    let principal = match authenticate(&state, &tenant, req.request()).await {
        Ok(principal) => principal,
        Err(e) => {
            let reason = e.audit_reason();
            let error = ApiError::from(e);
            let event = AuditEvent::new(&meta, "auth.authenticate", "tenant")
                .outcome(Outcome::None, error.code().status().as_u16())
                .detail("reason", reason);
            if let Some(ip) = source
                && let Some(trip) = state.limits.failed(ip).await
            {
                record_trip(&state, &tenant.slug, trip_event(&meta, &trip)).await;
            }
            return Ok(
                respond_audited(&state, &tenant.slug, event, req.error_response(error)).await,
            );
        }
    };
    if let Err(refusal) = state
        .limits
        .admit_principal(
            tenant.slug.as_str(),
            tenant.rate_limits,
            &principal.actor_id(),
        )
        .await
    {
        let res = req.error_response(ApiError::rate_limited(&refusal));
        if !refusal.first {
            return Ok(res);
        }
        let event = trip_event(&meta, &refusal).actor(principal.actor_type(), principal.actor_id());
        return Ok(respond_audited(&state, &tenant.slug, event, res).await);
    }
    if tenant.status == TenantStatus::Suspended {
        let error = ApiError::new(ErrorCode::TenantSuspended, "This tenant is suspended.");
        let event = AuditEvent::new(&meta, "request", "tenant")
            .actor(principal.actor_type(), principal.actor_id())
            .outcome(Outcome::None, error.code().status().as_u16())
            .detail("reason", "tenant_suspended");
        return Ok(respond_audited(&state, &tenant.slug, event, req.error_response(error)).await);
    }
    let policies = match state.authz.policies(&tenant).await {
        Ok(policies) => policies,
        Err(e) => {
            let error = ApiError::from(e);
            let event = AuditEvent::new(&meta, "request", "tenant")
                .actor(principal.actor_type(), principal.actor_id())
                .outcome(Outcome::None, error.code().status().as_u16())
                .detail("reason", "policies_unavailable");
            return Ok(
                respond_audited(&state, &tenant.slug, event, req.error_response(error)).await,
            );
        }
    };
    let subject = match &principal {
        Principal::ServiceAccount { id, .. } => Subject::service_account(*id),
    };
    let request = TenantRequest(Arc::new(Inner {
        state: state.clone(),
        tenant,
        principal,
        subject,
        policies,
        meta,
        note: Mutex::new(AuditNote::default()),
    }));
    req.extensions_mut().insert(request.clone());
    let res = next.call(req).await?.map_into_boxed_body();
    if cfg!(feature = "insecure-bench") || request.note().recorded {
        return Ok(res);
    }
    let event = request.event(res.status().as_u16());
    Ok(respond_audited(&state, request.slug(), event, res).await)
}

/// Sends `res` once `event` is durable in `trail`; if the event cannot be written, the caller
/// gets the audit failure instead (a call that leaves no trace is not answered).
pub(super) async fn respond_audited(
    state: &AppState,
    trail: impl Into<Trail>,
    event: AuditEvent,
    res: ServiceResponse<BoxBody>,
) -> ServiceResponse<BoxBody> {
    match state.audit.record(trail, event).await {
        Ok(()) => res,
        Err(e) => {
            let (req, _) = res.into_parts();
            ServiceResponse::new(req, ApiError::from(e).error_response())
        }
    }
}

async fn resolve_tenant(state: &AppState, req: &ServiceRequest) -> Result<Arc<Tenant>, ApiError> {
    let slug = req
        .match_info()
        .get("tenant")
        .and_then(|s| Slug::parse(s).ok())
        .ok_or_else(ApiError::not_found)?;
    match state.tenants.get(&slug).await {
        Ok(t) if matches!(t.status, TenantStatus::Active | TenantStatus::Suspended) => Ok(t),
        Ok(_) | Err(TenancyError::NotFound(_)) => Err(ApiError::not_found()),
        Err(e) => Err(e.into()),
    }
}

async fn authenticate(
    state: &AppState,
    tenant: &Tenant,
    req: &HttpRequest,
) -> Result<Principal, IdentityError> {
    if cfg!(feature = "insecure-bench") {
        // The benchmark's baseline: no authentication, authorization or audit at all.
        return Ok(Principal::ServiceAccount {
            id: uuid::Uuid::nil(),
            api_key_id: uuid::Uuid::nil(),
        });
    }
    let token = bearer_token(req).ok_or(IdentityError::MissingCredentials)?;
    state
        .api_keys
        .authenticate(&state.dbs, &tenant.slug, token)
        .await
}
