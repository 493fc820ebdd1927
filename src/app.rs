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
use crate::http::rate_limit::Limits;
use crate::http::tenant::INVALIDATION_CHANNEL;
use crate::identity::api_key::ApiKeys;
use crate::identity::operator::OperatorToken;
use crate::keystore::{self, KeyStore};
use crate::telemetry::Metrics;
use crate::tenancy::{Databases, Slug, TenancyError, TenantRegistry};

/// Everything a request or a command needs.
pub struct AppState {
    pub settings: Settings,
    pub dbs: Arc<Databases>,
    pub keystore: Arc<dyn KeyStore>,
    pub tenants: TenantRegistry,
    pub api_keys: ApiKeys,
    pub authz: Authz,
    pub audit: AuditWriter,
    pub operator: OperatorToken,
    pub metrics: Metrics,
    pub limits: Limits,
}

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
        let (audit, audit_task) = AuditWriter::start(
            Arc::clone(&dbs),
            Arc::clone(&keystore),
            settings.audit_checkpoint_interval,
        );
        let state = Arc::new(AppState {
            tenants: TenantRegistry::new(Arc::clone(&dbs)),
            api_keys: ApiKeys::new(Arc::clone(&keystore)),
            authz: Authz::new(Arc::clone(&dbs))?,
            metrics: Metrics::default(),
            limits: Limits::new(&settings.rate_limits),
            settings,
            dbs,
            keystore,
            audit,
            operator,
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
        self.keystore.forget(slug);
    }

    /// Drops cached facts about `slug` here and, on PostgreSQL, on every other replica.
    pub async fn publish_tenant_change(&self, slug: &Slug) -> Result<(), TenancyError> {
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
        self.forget_tenant(slug.as_str());
        Ok(())
    }

    /// Succeeds when the database and the key store both answer.
    pub async fn ready(&self) -> Result<(), String> {
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

/// Applies other replicas' invalidations until the state is dropped. After a lost connection
/// every cache is suspect, so all cached tenants are forgotten.
async fn listen_for_invalidations(pool: sea_orm::sqlx::PgPool, state: Weak<AppState>) {
    use sea_orm::sqlx::postgres::PgListener;
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(INVALIDATION_CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        }
        .await;
        let mut listener = match listener {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "invalidation listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if state.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        loop {
            let notification = tokio::select! {
                n = listener.try_recv() => n,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    if state.strong_count() == 0 { return; }
                    continue;
                }
            };
            let Some(state) = state.upgrade() else { return };
            match notification {
                Ok(Some(n)) => state.forget_tenant(n.payload()),
                Ok(None) => {
                    tracing::warn!("invalidation listener reconnected; forgetting cached tenants");
                    state.tenants.invalidate_all();
                    state.authz.invalidate_all();
                    state.api_keys.forget_all_keys();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "invalidation listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}
