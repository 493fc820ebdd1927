//! The write transaction of a unit of work, whose only commit records its audit events.
//!
//! Invariant: dropping a [`WriteTx`] rolls it back; [`WriteTx::commit`] appends every event of
//! the change to the tenant's hash chain inside the same transaction, so a change is visible if
//! and only if its record is.

use std::sync::Arc;

use entity::tenant::audit_event;
use sea_orm::{ConnectionTrait as _, DbBackend, Statement};
use serde_json::Value;

use super::{AutomaticResponse, Onboarding, Proof as _, SignIn, TenantContext, WorkError};
use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, RequestMeta, chain};
use crate::tenancy::{Access, DbKind, Slug, Tx};

/// PostgreSQL channel on which replicas tell each other that a tenant's cached state changed.
pub const INVALIDATION_CHANNEL: &str = "flowgate_invalidate";

/// What of a tenant's cached state a committed change makes stale, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invalidation {
    /// Nothing cached depends on it.
    Nothing,
    /// The tenant's authenticated sessions (a session, its person, their groups or passkeys).
    Sessions,
    /// Everything cached about the tenant (bindings, policies, keys, settings, status).
    Tenant,
}

/// The notification payload of a [`Invalidation::Sessions`] change names the tenant after this.
const SESSIONS_PAYLOAD: &str = "sessions:";

impl Invalidation {
    /// The notification other replicas hear for this invalidation of `slug` (none for
    /// [`Invalidation::Nothing`]).
    fn payload(self, slug: &Slug) -> Option<String> {
        match self {
            Invalidation::Nothing => None,
            Invalidation::Sessions => Some(format!("{SESSIONS_PAYLOAD}{slug}")),
            Invalidation::Tenant => Some(slug.to_string()),
        }
    }

    /// The invalidation and tenant a notification's payload names.
    pub fn parse(payload: &str) -> (Invalidation, &str) {
        match payload.strip_prefix(SESSIONS_PAYLOAD) {
            Some(slug) => (Invalidation::Sessions, slug),
            None => (Invalidation::Tenant, payload),
        }
    }
}

/// What a committed change did, for its audit event.
pub struct Change {
    /// The action recorded, when it is not the one the context decided.
    action: Option<&'static str>,
    resource_type: &'static str,
    resource_id: String,
    /// The status the caller is answered with.
    status: u16,
    details: Value,
    /// The change alters everything the tenant's caches hold (bindings, keys, status).
    invalidates: bool,
    /// Who the event names, when the transaction's author does not say (a sign-in).
    actor: Option<(&'static str, String)>,
    /// The change is a refusal's record that leaves remembered sessions valid.
    keeps_sessions: bool,
}

impl Change {
    pub fn new(resource_type: &'static str, resource_id: impl ToString, status: u16) -> Self {
        Change {
            action: None,
            resource_type,
            resource_id: resource_id.to_string(),
            status,
            details: Value::Object(Default::default()),
            invalidates: false,
            actor: None,
            keeps_sessions: false,
        }
    }

    /// Names the actor of a change made under a sign-in (the user who signed in).
    pub fn by(mut self, actor_type: &'static str, actor_id: impl ToString) -> Self {
        self.actor = Some((actor_type, actor_id.to_string()));
        self
    }

    /// Records the change under `action` (one of several changes of one transaction).
    pub fn action(mut self, action: &'static str) -> Self {
        self.action = Some(action);
        self
    }

    /// Marks a change that cached authorization or credential state depends on.
    pub fn invalidating(mut self) -> Self {
        self.invalidates = true;
        self
    }

    /// Marks the record of a refusal that altered no session, person, group, passkey or
    /// setting, so the tenant's remembered sessions stay (a flood of refused sign-ins must not
    /// empty every replica's cache).
    pub fn keeping_sessions(mut self) -> Self {
        self.keeps_sessions = true;
        self
    }

    /// What of the tenant's cached state this change makes stale. Whatever is not known to
    /// leave sessions alone invalidates them, so a new kind of change errs on the safe side.
    fn invalidation(&self) -> Invalidation {
        if self.invalidates {
            Invalidation::Tenant
        } else if !self.keeps_sessions && crate::signin::sessions::altered_by(self.resource_type) {
            Invalidation::Sessions
        } else {
            Invalidation::Nothing
        }
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(map) = &mut self.details {
            map.insert(key.to_owned(), value.into());
        }
        self
    }
}

/// Who a write transaction's events are about.
enum Author {
    /// A principal's work: its decisions and reasons go into the events.
    Context(TenantContext),
    /// The platform operator onboarding the tenant.
    Operator(RequestMeta),
    /// A person signing in or out; the action is the sign-in's.
    SignIn(RequestMeta, &'static str),
    /// Flowgate itself, for an automatic response to a signal.
    System(RequestMeta),
}

/// A tenant write transaction.
pub struct WriteTx {
    tx: Tx,
    state: Arc<AppState>,
    slug: Slug,
    author: Author,
    /// Changes recorded before the final one.
    earlier: Vec<AuditEvent>,
    invalidates: Invalidation,
}

impl WriteTx {
    /// The write transaction of a principal's work.
    pub(super) async fn begin(context: TenantContext) -> Result<Self, WorkError> {
        let state = Arc::clone(context.state());
        let slug = context.slug().clone();
        Self::open(&state, &slug, Author::Context(context)).await
    }

    /// The operator's write transaction in a tenant being onboarded.
    pub async fn onboarding(
        state: &Arc<AppState>,
        slug: &Slug,
        meta: &RequestMeta,
        _proof: &Onboarding,
    ) -> Result<Self, WorkError> {
        Self::open(state, slug, Author::Operator(meta.clone())).await
    }

    /// A write transaction for an automatic response to a signal, recorded as Flowgate's own
    /// (`system` / `signals`).
    pub async fn automatic(
        state: &Arc<AppState>,
        slug: &Slug,
        meta: &RequestMeta,
        _proof: &AutomaticResponse,
    ) -> Result<Self, WorkError> {
        Self::open(state, slug, Author::System(meta.clone())).await
    }

    /// The write transaction of a sign-in (or of a person ending their own session).
    pub async fn sign_in(
        state: &Arc<AppState>,
        slug: &Slug,
        meta: &RequestMeta,
        proof: &SignIn,
    ) -> Result<Self, WorkError> {
        Self::open(state, slug, Author::SignIn(meta.clone(), proof.action())).await
    }

    /// The one place a write transaction begins; each constructor above is made from a proof.
    #[expect(
        clippy::disallowed_methods,
        reason = "the unit of work's own write transaction"
    )]
    async fn open(state: &Arc<AppState>, slug: &Slug, author: Author) -> Result<Self, WorkError> {
        let tx = state.dbs.begin(slug, Access::Write).await?;
        Ok(WriteTx {
            tx,
            state: Arc::clone(state),
            slug: slug.clone(),
            author,
            earlier: Vec::new(),
            invalidates: Invalidation::Nothing,
        })
    }

    /// The transaction, for domain functions (which take the proof of their change as well).
    pub fn conn(&self) -> &Tx {
        &self.tx
    }

    /// Records `change` as one of several made in this transaction; it is appended with the
    /// last one, at commit.
    pub fn record(&mut self, change: Change) {
        self.invalidates = self.invalidates.max(change.invalidation());
        let event = self.event(change);
        self.earlier.push(event);
    }

    /// Appends the audit events of the earlier changes and of `change`, and commits.
    pub async fn commit(mut self, change: Change) -> Result<(), WorkError> {
        self.invalidates = self.invalidates.max(change.invalidation());
        let last = self.event(change);
        let mut events = std::mem::take(&mut self.earlier);
        events.push(last);
        let linked = chain::append(&self.tx, &events).await?;
        if let Some(payload) = self.invalidates.payload(&self.slug)
            && self.state.dbs.kind() == DbKind::Postgres
        {
            // NOTIFY is transactional: other replicas hear it only if the change commits.
            self.tx
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_notify($1, $2)",
                    [INVALIDATION_CHANNEL.into(), payload.into()],
                ))
                .await?;
        }
        let committed = self.tx.commit().await;
        // A failed commit may still have committed: forget as if it had.
        self.state.forget(self.invalidates, self.slug.as_str());
        committed?;
        let rows: Arc<[audit_event::Model]> = linked.rows.into();
        crate::telemetry::security::committed(self.slug.as_str(), &rows);
        self.state.signals.observe(self.slug.as_str(), rows);
        if let Author::Context(context) = &self.author {
            context.note().recorded = true;
        }
        self.state.audit.touched(&self.slug, events.len() as u64);
        Ok(())
    }

    fn event(&self, change: Change) -> AuditEvent {
        let mut event = match &self.author {
            Author::Context(context) => context.event(change.status),
            Author::Operator(meta) => AuditEvent::new(meta, "tenant.create", "tenant")
                .actor("operator", "platform")
                .outcome(Outcome::Allow, change.status),
            Author::SignIn(meta, action) => {
                AuditEvent::new(meta, action, "session").outcome(Outcome::None, change.status)
            }
            Author::System(meta) => AuditEvent::new(meta, "security.response", "tenant")
                .actor("system", "signals")
                .outcome(Outcome::None, change.status),
        };
        if let Some((actor_type, actor_id)) = change.actor {
            event = event.actor(actor_type, actor_id);
        }
        if let Some(action) = change.action {
            event.action = action.to_owned();
        }
        event.resource_type = change.resource_type.to_owned();
        event.resource_id = Some(change.resource_id);
        if let (Value::Object(target), Value::Object(extra)) = (&mut event.details, change.details)
        {
            target.extend(extra);
        }
        event
    }
}
