//! The services of one Flowgate process, built once from the settings and shared by the HTTP
//! server and the command line.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sea_orm::{ConnectionTrait as _, DbBackend, Statement};
use secrecy::SecretString;
use tokio::task::JoinHandle;

use crate::audit::AuditWriter;
use crate::authz::Authz;
use crate::config::Settings;
use crate::http::pipeline::rate_limit::Limits;
use crate::identity::accounts::AccountStatuses;
use crate::identity::api_key::ApiKeys;
use crate::identity::federation::Federation;
use crate::identity::operator::OperatorToken;
use crate::identity::tokens::AccessTokens;
use crate::keystore::{self, KeyStore};
use crate::secrets::envelope::Envelope;
use crate::signals::SignalFeed;
use crate::signals::webhook::Deliveries;
use crate::signin::oidc::OidcLogins;
use crate::signin::outbound::Outbound;
use crate::tenancy::work::{INVALIDATION_CHANNEL, Invalidation};
use crate::tenancy::{Databases, Slug, TenancyError, TenantRegistry};

/// Everything a request or a command needs.
pub struct AppState {
    pub settings: Settings,
    pub dbs: Arc<Databases>,
    pub keystore: Arc<dyn KeyStore>,
    pub tenants: TenantRegistry,
    pub api_keys: ApiKeys,
    /// Which service accounts are disabled, as cached here.
    pub account_statuses: AccountStatuses,
    pub tokens: AccessTokens,
    pub authz: Authz,
    pub audit: AuditWriter,
    pub operator: OperatorToken,
    pub limits: Limits,
    /// Where committed audit events go to the tenants' detectors.
    pub signals: SignalFeed,
    /// The tenants' alert webhooks' delivery queue.
    pub alerts: Deliveries,
    /// The OpenID Connect relying party of every tenant's sign-ins.
    pub oidc: OidcLogins,
    /// The HTTP client for identity providers (discovery, keys, SAML metadata).
    pub outbound: Outbound,
    /// The outside JWT issuers tenants trust for their service accounts.
    pub federation: Federation,
    /// Per-tenant envelope encryption of fields, and the tenants' KEK rotations.
    pub envelope: Arc<Envelope>,
    /// Tenants' payload-encryption keys and requirements, as cached here.
    pub payload_caches: crate::http::jose::PayloadCaches,
    /// Tenants' sign-in, session and payload settings, as cached here.
    pub tenant_settings: crate::signin::settings::SettingsCache,
    /// Tenants' recently authenticated browser sessions, as cached here.
    pub sessions: crate::signin::sessions::SessionCache,
    /// The WebAuthn relying party of `public_url`.
    pub passkeys: crate::signin::passkeys::RelyingParty,
    /// The last readiness check and when it was made.
    readiness: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

/// How long a readiness answer is reused.
const READINESS_TTL: Duration = Duration::from_secs(1);

/// The opened services and what must be awaited or shown once.
pub struct Opened {
    pub state: Arc<AppState>,
    /// The operator token, when this start generated it: print it once, never log it.
    pub generated_operator_token: Option<SecretString>,
    /// Ends after the last `AppState` is dropped and pending audit events are checkpointed.
    pub audit_task: JoinHandle<()>,
}

impl AppState {
    /// Connects to the database and key store, migrates the control plane and starts the audit
    /// writer (and, on PostgreSQL, the cross-replica invalidation listener).
    pub async fn open(settings: Settings) -> anyhow::Result<Opened> {
        crate::files::create_private_dir(&settings.data_dir)?;
        let dbs = Arc::new(Databases::connect(&settings.database).await?);
        let keystore = keystore::open(&settings).await?;
        let (operator, generated_operator_token) =
            OperatorToken::resolve(settings.operator_token.as_ref(), &dbs).await?;
        let (signals, signal_input) = SignalFeed::channel();
        let (audit, audit_task) = AuditWriter::start(
            Arc::clone(&dbs),
            Arc::clone(&keystore),
            settings.audit_checkpoint_interval,
            signals.clone(),
        );
        let outbound = Outbound::new(settings.idp_private_networks.clone())?;
        let shared_counts = settings
            .redis_url
            .as_ref()
            .map(crate::signals::SharedCounts::new)
            .transpose()?;
        let state = Arc::new(AppState {
            signals,
            alerts: Deliveries::new(outbound.clone()),
            tenants: TenantRegistry::new(Arc::clone(&dbs)),
            api_keys: ApiKeys::new(Arc::clone(&keystore)),
            account_statuses: AccountStatuses::default(),
            tokens: AccessTokens::new(Arc::clone(&keystore)),
            authz: Authz::new(Arc::clone(&dbs))?,
            limits: Limits::new(&settings.rate_limits, settings.redis_url.as_ref())?,
            oidc: OidcLogins::new(outbound.clone()),
            federation: Federation::new(outbound.clone()),
            envelope: Arc::new(Envelope::new(Arc::clone(&keystore), Arc::clone(&dbs))),
            payload_caches: Default::default(),
            tenant_settings: Default::default(),
            sessions: Default::default(),
            passkeys: crate::signin::passkeys::RelyingParty::new(&settings.public_url)?,
            outbound,
            readiness: tokio::sync::Mutex::new(None),
            settings,
            dbs,
            keystore,
            audit,
            operator,
        });
        crate::signals::spawn(Arc::downgrade(&state), signal_input, shared_counts);
        let dbs = Arc::downgrade(&state.dbs);
        crate::telemetry::observe_pools(move || {
            dbs.upgrade().map(|d| d.pool_usage()).unwrap_or_default()
        });
        if let Some(pool) = state.dbs.postgres_pool() {
            tokio::spawn(listen_for_invalidations(
                pool.clone(),
                Arc::downgrade(&state),
            ));
        }
        Ok(Opened {
            state,
            generated_operator_token,
            audit_task,
        })
    }

    /// Drops every cached fact about tenant `slug` on this replica.
    pub fn forget_tenant(&self, slug: &str) {
        self.tenants.invalidate(slug);
        self.authz.invalidate(slug);
        self.api_keys.forget_tenant(slug);
        self.account_statuses.forget_tenant(slug);
        self.tokens.forget_tenant(slug);
        self.federation.forget_tenant(slug);
        self.envelope.forget_tenant(slug);
        self.payload_caches.forget_tenant(slug);
        self.tenant_settings.forget(slug);
        self.sessions.forget(slug);
        self.keystore.forget(slug);
        self.audit.forget_positions(slug);
    }

    /// Drops what `invalidation` makes stale of tenant `slug`'s cached state on this replica.
    pub fn forget(&self, invalidation: Invalidation, slug: &str) {
        match invalidation {
            Invalidation::Nothing => {}
            Invalidation::Sessions => self.sessions.forget(slug),
            Invalidation::Tenant => self.forget_tenant(slug),
        }
    }

    /// Drops every cached fact about every tenant on this replica.
    pub fn forget_everything(&self) {
        self.tenants.invalidate_all();
        self.authz.invalidate_all();
        self.api_keys.forget_all_keys();
        self.account_statuses.forget_all();
        self.tokens.forget_all();
        self.federation.forget_all();
        self.payload_caches.forget_all();
        self.tenant_settings.forget_all();
        self.sessions.clear();
        self.audit.forget_all_positions();
    }

    /// Drops cached facts about `slug` here and, on PostgreSQL, on every other replica.
    #[expect(
        clippy::disallowed_methods,
        reason = "a notification, not a read or a write"
    )]
    pub async fn publish_tenant_change(&self, slug: &Slug) -> Result<(), TenancyError> {
        // Here first, whether or not the others can be told.
        self.forget_tenant(slug.as_str());
        if self.dbs.postgres_pool().is_some() {
            self.dbs
                .control()
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_notify($1, $2)",
                    [INVALIDATION_CHANNEL.into(), slug.to_string().into()],
                ))
                .await?;
        }
        Ok(())
    }

    /// Succeeds when the database and the key store both answer.
    pub async fn ready(&self) -> Result<(), String> {
        // One check at a time, and its answer reused for a second: a flood of probes costs the
        // database and the key store one round trip a second, not one each.
        let mut last = self.readiness.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < READINESS_TTL
        {
            return answer.clone();
        }
        let answer = self.check_dependencies().await;
        *last = Some((std::time::Instant::now(), answer.clone()));
        answer
    }

    async fn check_dependencies(&self) -> Result<(), String> {
        self.dbs
            .ping()
            .await
            .map_err(|e| format!("database: {e}"))?;
        self.keystore
            .check()
            .await
            .map_err(|e| format!("key store: {e}"))
    }
}

/// How often a quiet invalidation listener proves its channel with a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The longest a replica trusts its caches without hearing the channel: past it, the listener
/// reconnects and every cache is flushed. This bounds how stale a replica can be after a lost
/// connection; while the channel works, changes reach every replica before the next request.
pub const MAX_STALENESS: Duration = Duration::from_secs(15);

/// Applies other replicas' invalidations until the state is dropped. On every (re)connection,
/// and while it cannot connect, every cache is flushed: what changed while no one listened is
/// unknown. A channel that stays silent past [`MAX_STALENESS`], heartbeats included, counts as
/// lost.
async fn listen_for_invalidations(pool: sea_orm::sqlx::PgPool, state: Weak<AppState>) {
    use sea_orm::sqlx::postgres::PgListener;
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(INVALIDATION_CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        }
        .await;
        // Whatever was cached may have changed while no one was listening.
        let Some(live) = state.upgrade() else { return };
        live.forget_everything();
        drop(live);
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "invalidation listener cannot connect; caches are flushed until it can");
                tokio::time::sleep(HEARTBEAT).await;
                continue;
            }
        };
        let mut last_heard = tokio::time::Instant::now();
        loop {
            let notification = tokio::select! {
                n = listener.try_recv() => n,
                _ = tokio::time::sleep(HEARTBEAT) => {
                    if state.strong_count() == 0 { return; }
                    if last_heard.elapsed() > MAX_STALENESS {
                        tracing::warn!("invalidation listener hears nothing, not even its heartbeat; reconnecting");
                        break;
                    }
                    // Heard by every replica, this one included: proof the channel still works.
                    let beat = sea_orm::sqlx::query("SELECT pg_notify($1, '')")
                        .bind(INVALIDATION_CHANNEL)
                        .execute(&pool)
                        .await;
                    if let Err(e) = beat {
                        tracing::warn!(error = %e, "invalidation heartbeat failed");
                    }
                    continue;
                }
            };
            let Some(state) = state.upgrade() else { return };
            last_heard = tokio::time::Instant::now();
            match notification {
                Ok(Some(n)) if n.payload().is_empty() => {}
                Ok(Some(n)) => {
                    let (invalidation, slug) = Invalidation::parse(n.payload());
                    state.forget(invalidation, slug);
                }
                Ok(None) => {
                    tracing::warn!("invalidation listener reconnected; forgetting cached tenants");
                    state.forget_everything();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "invalidation listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}
