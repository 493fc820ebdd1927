//! The tenant unit of work: how anything — an HTTP request, a command, a platform operation,
//! and next the workflow workers — acts on one tenant's data with authorization and audit.
//!
//! Invariants:
//! - A [`TenantContext`] names one tenant, one principal authenticated for that tenant, and the
//!   tenant's compiled policies. [`TenantContext::authorize`] is the only way to an [`Allowed`]
//!   proof, and every decision it makes is noted for the context's audit event.
//! - Tenant data is reached only through a context's transactions, confined to its tenant:
//!   [`TenantContext::read`] is read-only; [`TenantContext::write`] needs a [`Proof`], and its
//!   only way to commit ([`WriteTx::commit`]) appends the audit event in the same transaction.
//!   Domain functions that change tenant data take a [`Permit`] for their own action as well.
//! - A context leaves exactly one audit event for its caller's outcome: the one its write
//!   transaction committed, or else the one [`TenantContext::finish`] appends through the
//!   group-commit writer (allowed, denied or failed alike).
//! - The platform operator acts on a tenant only when onboarding it, with an [`Onboarding`]
//!   proof that only the operator's authority makes ([`WriteTx::onboarding`]).

mod escalation;
mod proof;
mod tx;

pub use proof::{Allowed, AutomaticResponse, Onboarding, Permit, Proof, SignIn};
pub use tx::{Change, INVALIDATION_CHANNEL, Invalidation, WriteTx};

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Access, Slug, TenancyError, Tenant, Tx};
use crate::app::AppState;
use crate::audit::{AuditError, AuditEvent, Outcome, RequestMeta, VerifyReport, verify};
use crate::authz::actions::AuditVerify;
use crate::authz::{
    Action, AuthzError, Decision, Facts, Grantor, PolicyEngine, Resource, StoredRules, Subject,
    TenantPolicies,
};
use crate::identity::Principal;
use crate::identity::api_key::ApiKeys;
use crate::signin::settings::TenantSettings;

/// Numbers contexts, so that a proof cannot serve another context's transaction.
static NEXT_CONTEXT: AtomicU64 = AtomicU64::new(1);

/// One principal's work in one tenant.
#[derive(Clone)]
pub struct TenantContext(Arc<Inner>);

struct Inner {
    id: u64,
    state: Arc<AppState>,
    tenant: Arc<Tenant>,
    principal: Principal,
    /// The principal as the policy engine sees it.
    subject: Subject,
    policies: Arc<TenantPolicies>,
    /// The tenant's settings when the work began (second factor, step-up, human-only actions).
    settings: Arc<TenantSettings>,
    /// The facts about the caller that decisions may read.
    source_ip: Option<IpAddr>,
    meta: RequestMeta,
    note: Mutex<AuditNote>,
}

/// What the audit event of this context must say, filled in as the work goes.
#[derive(Default)]
struct AuditNote {
    action: Option<&'static str>,
    /// The API name and id of the resource decided on.
    resource: Option<(&'static str, String)>,
    decision: Option<Outcome>,
    reasons: Vec<String>,
    /// What the work adds about its outcome (which secret version was read), never a value.
    details: Vec<(&'static str, serde_json::Value)>,
    /// Set once the event was written inside a change's transaction.
    recorded: bool,
}

/// A refusal that comes before any policy is evaluated.
#[derive(Clone, Copy)]
enum PriorRefusal {
    /// The session has not passed the tenant's second factor yet.
    SecondFactorOwed,
    /// A service account asked for an action the tenant reserves for people.
    HumanOnly,
}

impl PriorRefusal {
    fn reason(self) -> &'static str {
        match self {
            Self::SecondFactorOwed => "the session has not passed the tenant's second factor",
            Self::HumanOnly => "the tenant reserves this action for people",
        }
    }
}

/// Why a unit of work refused to go on.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// The policies do not allow the action.
    #[error("the caller lacks the permission `{0}`")]
    Denied(&'static str),
    /// A grant would give away more than its author holds.
    #[error("the caller cannot grant what they do not hold: {}", .0.join(", "))]
    Delegation(Vec<String>),
    /// A person's session has not passed the second factor the tenant requires.
    #[error("the session owes the tenant a passkey assertion")]
    SecondFactorOwed(Slug),
    /// The action is sensitive and the person's last passkey assertion is missing or too old.
    #[error("`{action}` needs a passkey assertion younger than {max_age_seconds} s")]
    StepUp {
        action: &'static str,
        slug: Slug,
        max_age_seconds: i64,
    },
    /// The tenant reserves the action for people; a service account asked.
    #[error("only people may `{0}` in this tenant")]
    HumanOnly(&'static str),
    /// A service account asked to lift one of the tenant's reservations for people (the field).
    #[error("only people may loosen `{0}`")]
    PeopleOnly(&'static str),
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Authz(#[from] AuthzError),
}

impl From<sea_orm::DbErr> for WorkError {
    fn from(e: sea_orm::DbErr) -> Self {
        WorkError::Tenancy(e.into())
    }
}

impl TenantContext {
    /// Opens the work of `principal`, authenticated for `tenant`, loading the tenant's policies.
    ///
    /// `principal` comes from authentication (`http::pipeline::authn::authenticate`), which
    /// refuses the credentials of a disabled service account; work begun for a service account
    /// without a credential (a scheduled job) checks `AccountStatuses::ensure_active` first.
    pub async fn open(
        state: Arc<AppState>,
        tenant: Arc<Tenant>,
        principal: Principal,
        meta: RequestMeta,
    ) -> Result<Self, AuthzError> {
        let policies = state.authz.policies(&tenant).await?;
        let settings = state.tenant_settings.get(&state.dbs, &tenant.slug).await?;
        let subject = match &principal {
            Principal::ServiceAccount { id, .. } => Subject::service_account(*id),
            Principal::User { subject, .. } => Subject::clone(subject),
        };
        let source_ip = meta.source_ip.as_deref().and_then(|ip| ip.parse().ok());
        Ok(TenantContext(Arc::new(Inner {
            id: NEXT_CONTEXT.fetch_add(1, Ordering::Relaxed),
            state,
            tenant,
            principal,
            subject,
            policies,
            settings,
            source_ip,
            meta,
            note: Mutex::new(AuditNote::default()),
        })))
    }

    pub fn tenant(&self) -> &Tenant {
        &self.0.tenant
    }

    /// `rules` (the tenant's, changed) compiled as the tenant's cached policy set is, off the
    /// worker thread: for what a change would do before it is made.
    pub async fn compile(&self, rules: StoredRules) -> Result<TenantPolicies, AuthzError> {
        self.0.state.authz.compile(&self.0.tenant, rules).await
    }

    pub fn slug(&self) -> &Slug {
        &self.0.tenant.slug
    }

    pub fn principal(&self) -> &Principal {
        &self.0.principal
    }

    /// The principal as the policy engine sees it.
    pub fn subject(&self) -> &Subject {
        &self.0.subject
    }

    /// The tenant's compiled policies, as loaded for this work.
    pub fn policies(&self) -> &TenantPolicies {
        &self.0.policies
    }

    /// The same policies, shareable with work off the current thread.
    pub fn policies_handle(&self) -> Arc<TenantPolicies> {
        Arc::clone(&self.0.policies)
    }

    /// The policy engine, for analyses beyond one decision (dry runs, explanations).
    pub fn engine(&self) -> &PolicyEngine {
        self.0.state.authz.engine()
    }

    /// Issues and revokes API keys (issuing takes the change's proof).
    pub fn api_keys(&self) -> &ApiKeys {
        &self.0.state.api_keys
    }

    /// Issues access tokens and makes the OAuth clients that get them.
    pub fn access_tokens(&self) -> &crate::identity::tokens::AccessTokens {
        &self.0.state.tokens
    }

    /// The key store, for the secrets a change keeps outside the database.
    pub fn keystore(&self) -> &dyn crate::keystore::KeyStore {
        self.0.state.keystore.as_ref()
    }

    /// Where the tenant's committed events meet its detectors (told of a new alerting
    /// configuration).
    pub fn signals(&self) -> &crate::signals::SignalFeed {
        &self.0.state.signals
    }

    /// Where alerts to the tenants' webhooks are queued.
    pub fn alerts(&self) -> &crate::signals::webhook::Deliveries {
        &self.0.state.alerts
    }

    /// Whether an outbound call may reach `ip` (public, or in the deployment's allowed private
    /// networks): the rule for identity providers and alert webhooks.
    pub fn may_reach(&self, ip: std::net::IpAddr) -> bool {
        self.0.state.outbound.may_reach(ip)
    }

    /// Envelope encryption of the tenant's sensitive fields, and its KEK rotations.
    pub fn envelope(&self) -> &Arc<crate::secrets::envelope::Envelope> {
        &self.0.state.envelope
    }

    /// What this replica caches about the tenants' encrypted payloads.
    pub fn payload_caches(&self) -> &crate::http::jose::PayloadCaches {
        &self.0.state.payload_caches
    }

    /// The tenant's settings as they were when the work began.
    pub fn settings(&self) -> &TenantSettings {
        &self.0.settings
    }

    /// The WebAuthn relying party of this deployment.
    pub fn passkeys(&self) -> &crate::signin::passkeys::RelyingParty {
        &self.0.state.passkeys
    }

    /// The relying party of the tenants' OpenID sign-ins (to forget a changed provider).
    pub fn sign_ins(&self) -> &crate::signin::oidc::OidcLogins {
        &self.0.state.oidc
    }

    /// The HTTP client for identity providers (to fetch a SAML provider's metadata).
    pub fn outbound(&self) -> &crate::signin::outbound::Outbound {
        &self.0.state.outbound
    }

    /// Where Flowgate is reached from outside (`https://host[:port]`, no trailing `/`).
    pub fn public_url(&self) -> &str {
        self.0.state.settings.public_url.trim_end_matches('/')
    }

    /// Verifies the tenant's audit chain and its signed checkpoints.
    pub async fn verify_audit(&self, _: &Allowed<AuditVerify>) -> Result<VerifyReport, AuditError> {
        let state = &self.0.state;
        let report = verify(&state.dbs, state.keystore.as_ref(), self.slug()).await?;
        // On record with the call: a broken chain raises the `audit_tamper` signal.
        self.note_detail("verified_ok", report.ok);
        if let Some(seq) = report.first_broken_seq {
            self.note_detail("first_broken_seq", seq);
        }
        Ok(report)
    }

    fn state(&self) -> &Arc<AppState> {
        &self.0.state
    }

    /// Decides whether the principal may do `A` on `resource`, noting the decision for the
    /// audit event; the proof of an allowed decision is what changes require.
    ///
    /// Before the policies are asked, a session that owes the tenant a second factor and a
    /// service account asking for an action the tenant reserves for people are refused; after
    /// an allowing decision, a sensitive action done by a person needs a fresh passkey
    /// assertion ([`TenantContext::step_up`]).
    pub fn authorize<A: Action>(&self, resource: Resource) -> Result<Allowed<A>, WorkError> {
        if cfg!(feature = "insecure-bench") {
            return Ok(Allowed::new(resource, self.0.id));
        }
        self.screen::<A>()?;
        let decision = self.decide::<A>(&resource);
        let mut note = self.note();
        note.action = Some(A::NAME);
        note.resource = Some((resource.kind.api_name(), resource.id.clone()));
        note.decision = Some(if decision.allowed {
            Outcome::Allow
        } else {
            Outcome::Deny
        });
        note.reasons = decision.reasons;
        drop(note);
        if !decision.allowed {
            return Err(WorkError::Denied(A::NAME));
        }
        if A::SENSITIVE {
            self.step_up(A::NAME)?;
        }
        Ok(Allowed::new(resource, self.0.id))
    }

    /// The refusals that come before any policy: a session owing its second factor, and a
    /// service account asking for an action the tenant reserves for people. Noted for the
    /// audit event when they refuse.
    fn screen<A: Action>(&self) -> Result<(), WorkError> {
        let Some(refusal) = self.prior_refusal::<A>() else {
            return Ok(());
        };
        self.note_refusal(A::NAME, refusal.reason());
        Err(match refusal {
            PriorRefusal::SecondFactorOwed => WorkError::SecondFactorOwed(self.slug().clone()),
            PriorRefusal::HumanOnly => WorkError::HumanOnly(A::NAME),
        })
    }

    /// Which refusal, if any, comes before the policies for `A`; `screen` and `may` share it,
    /// so that a list or a view never shows what the tenant's reservations refuse.
    fn prior_refusal<A: Action>(&self) -> Option<PriorRefusal> {
        let principal = &self.0.principal;
        if principal.owes_second_factor() {
            return Some(PriorRefusal::SecondFactorOwed);
        }
        let human_only = matches!(principal, Principal::ServiceAccount { .. })
            && self
                .0
                .settings
                .human_only_actions
                .iter()
                .any(|a| a == A::NAME);
        human_only.then_some(PriorRefusal::HumanOnly)
    }

    /// Refuses a service account's loosening of `field`, one of the tenant's reservations for
    /// people: only a person may lift them, so that a leaked key cannot undo the reservations
    /// made against keys. Noted for the audit event.
    pub fn refuse_unless_person(&self, field: &'static str) -> Result<(), WorkError> {
        if !matches!(self.0.principal, Principal::ServiceAccount { .. }) {
            return Ok(());
        }
        self.note_denial(format!("only a person may loosen `{field}`"));
        Err(WorkError::PeopleOnly(field))
    }

    /// Checks that a person doing the sensitive `action` passed a passkey assertion within the
    /// tenant's step-up age (service accounts are not asked; a step-up age of 0 asks no one).
    pub fn step_up(&self, action: &'static str) -> Result<(), WorkError> {
        let minutes = self.0.settings.step_up_minutes;
        if minutes == 0 || matches!(self.0.principal, Principal::ServiceAccount { .. }) {
            return Ok(());
        }
        self.fresh_assertion(action, minutes)
    }

    /// Checks that the person behind this work passed a passkey assertion in the last
    /// `minutes`, for `action`.
    pub fn fresh_assertion(&self, action: &'static str, minutes: i64) -> Result<(), WorkError> {
        let max_age = chrono::Duration::minutes(minutes);
        let fresh = self
            .0
            .principal
            .asserted_at()
            .is_some_and(|at| chrono::Utc::now() - at < max_age);
        if fresh {
            return Ok(());
        }
        self.note_refusal(action, "a recent passkey assertion is required (step-up)");
        Err(WorkError::StepUp {
            action,
            slug: self.slug().clone(),
            max_age_seconds: max_age.num_seconds(),
        })
    }

    /// Decides `A` on `resource` as one of several uses inside this work (each secret a process
    /// resolves), recording the decision as its own audit event with `details` — allowed or
    /// denied alike — before answering.
    pub async fn authorize_use<A: Action>(
        &self,
        resource: Resource,
        details: &[(&'static str, serde_json::Value)],
    ) -> Result<Allowed<A>, WorkError> {
        self.screen::<A>()?;
        let decision = self.decide::<A>(&resource);
        let (outcome, status) = if decision.allowed {
            (Outcome::Allow, 200)
        } else {
            (Outcome::Deny, 403)
        };
        let principal = &self.0.principal;
        let mut event = acted_by(
            AuditEvent::new(&self.0.meta, A::NAME, resource.kind.api_name()),
            principal,
        )
        .outcome(outcome, status);
        event.resource_id = Some(resource.id.clone());
        for (key, value) in details {
            event = event.detail(key, value.clone());
        }
        if !decision.reasons.is_empty() {
            event = event.detail("policies", decision.reasons);
        }
        self.0.state.audit.record(self.slug(), event).await?;
        if !decision.allowed {
            return Err(WorkError::Denied(A::NAME));
        }
        if A::SENSITIVE {
            self.step_up(A::NAME)?;
        }
        Ok(Allowed::new(resource, self.0.id))
    }

    /// Whether the principal may do `A` on `resource`, without noting it for the audit event:
    /// for filtering what a list or a view shows, after its own action was authorized. The
    /// refusals before any policy (a tenant's human-only actions) answer `false` here too; the
    /// step-up a sensitive action asks of a person is not asked of a view (it proves presence
    /// before acting, not a grant).
    pub fn may<A: Action>(&self, resource: &Resource) -> bool {
        cfg!(feature = "insecure-bench")
            || (self.prior_refusal::<A>().is_none() && self.decide::<A>(resource).allowed)
    }

    /// The principal as a delegation check sees it: with the facts its own decisions use, and
    /// the actions the tenant reserves for people when it is a service account.
    pub fn grantor(&self) -> Grantor<'_> {
        let reserved: &[String] = match self.0.principal {
            Principal::ServiceAccount { .. } => &self.0.settings.human_only_actions,
            _ => &[],
        };
        Grantor {
            subject: &self.0.subject,
            facts: self.facts(),
            reserved,
        }
    }

    /// The facts of this work's request that policies may read.
    fn facts(&self) -> Facts {
        Facts {
            source_ip: self.0.source_ip,
            ..Facts::default()
        }
    }

    fn decide<A: Action>(&self, resource: &Resource) -> Decision {
        let state = &self.0.state;
        let decision = state.authz.engine().decide(
            &self.0.policies,
            &self.0.subject,
            A::NAME,
            resource,
            &self.facts(),
        );
        crate::telemetry::metrics().observe_decision(decision.allowed);
        if !decision.errors.is_empty() {
            tracing::warn!(action = A::NAME, errors = ?decision.errors, "policy evaluation errors");
        }
        decision
    }

    /// A read-only transaction in this tenant.
    #[expect(
        clippy::disallowed_methods,
        reason = "the unit of work's own read transaction"
    )]
    pub async fn read(&self) -> Result<Tx, TenancyError> {
        self.0.state.dbs.begin(self.slug(), Access::Read).await
    }

    /// A read-write transaction in this tenant for the change `proof` authorized; it commits
    /// only together with its audit event.
    pub async fn write(&self, proof: &impl Proof) -> Result<WriteTx, WorkError> {
        if !proof.decided_by(self.0.id) {
            return Err(WorkError::Denied(proof.action()));
        }
        WriteTx::begin(self.clone()).await
    }

    /// A read-write transaction for a change the caller makes to their own sign-in state (ending
    /// one of their sessions), under `proof`; it commits only together with its audit event.
    pub async fn write_own(&self, proof: &SignIn) -> Result<WriteTx, WorkError> {
        WriteTx::sign_in(&self.0.state, self.slug(), &self.0.meta, proof).await
    }

    fn note(&self) -> MutexGuard<'_, AuditNote> {
        // The note is plain data; a panic elsewhere cannot leave it half-updated.
        self.0.note.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a refusal of `action` made before or after the policies were asked.
    fn note_refusal(&self, action: &'static str, reason: &str) {
        let mut note = self.note();
        note.action = Some(action);
        note.decision = Some(Outcome::Deny);
        note.reasons = vec![reason.to_owned()];
    }

    /// Notes a refusal that is not a policy decision (a grant beyond the author's own).
    fn note_denial(&self, reason: String) {
        let mut note = self.note();
        note.decision = Some(Outcome::Deny);
        note.reasons = vec![reason];
    }

    /// Adds `key: value` to the audit event this work leaves when no change records it (a read's
    /// event: which secret version was read). Never a secret value.
    pub fn note_detail(&self, key: &'static str, value: impl Into<serde_json::Value>) {
        self.note().details.push((key, value.into()));
    }

    /// The audit event of this work, as far as it is known, for an outcome of `status`.
    pub fn event(&self, status: u16) -> AuditEvent {
        let note = self.note();
        let decision = note.decision.unwrap_or(Outcome::None);
        let (resource_type, resource_id) = match &note.resource {
            Some((kind, id)) => (*kind, Some(id.clone())),
            None => ("tenant", None),
        };
        let principal = &self.0.principal;
        let action = note.action.unwrap_or("request");
        let mut event = acted_by(
            AuditEvent::new(&self.0.meta, action, resource_type),
            principal,
        )
        .outcome(decision, status);
        event.resource_id = resource_id;
        for (key, value) in &note.details {
            event = event.detail(key, value.clone());
        }
        if !note.reasons.is_empty() {
            event = event.detail("policies", note.reasons.clone());
        } else if decision == Outcome::Deny {
            event = event.detail("policies", "no policy permits this");
        }
        event
    }

    /// What the request's span says of this work: principal, action and decision — ids and
    /// names only (the tenant is on the span from the tenant stage).
    pub fn span_attributes(&self) -> Vec<opentelemetry::KeyValue> {
        use opentelemetry::KeyValue;
        let note = self.note();
        let principal = &self.0.principal;
        let mut attributes = vec![
            KeyValue::new("flowgate.principal.type", principal.actor_type()),
            KeyValue::new("flowgate.principal.id", principal.actor_id()),
            KeyValue::new("flowgate.request_id", self.0.meta.request_id.clone()),
        ];
        if let Some(action) = note.action {
            attributes.push(KeyValue::new("flowgate.action", action));
        }
        if let Some(decision) = note.decision {
            attributes.push(KeyValue::new("flowgate.decision", decision.as_str()));
        }
        attributes
    }

    /// Whether a write transaction already committed this work's audit event.
    pub fn recorded(&self) -> bool {
        self.note().recorded
    }

    /// Ends the work with an outcome of `status`: unless a committed change already recorded
    /// it, its event is appended through the group-commit writer, and the caller must not
    /// report success before this returns.
    pub async fn finish(&self, status: u16) -> Result<(), AuditError> {
        if cfg!(feature = "insecure-bench") || self.recorded() {
            return Ok(());
        }
        self.0
            .state
            .audit
            .record(self.slug(), self.event(status))
            .await
    }
}

/// `event` with who acted and by which credential (its kind, and for a service account which
/// key, client or trust it was).
pub fn acted_by(event: AuditEvent, principal: &Principal) -> AuditEvent {
    let event = event
        .actor(principal.actor_type(), principal.actor_id())
        .detail("credential", principal.credential_kind());
    match principal.credential_id() {
        Some(id) => event.detail("credential_id", id.to_string()),
        None => event,
    }
}
