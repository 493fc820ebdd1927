//! Platform operations on tenants: onboarding, suspension, resumption and deletion. Used by the
//! operator API and by the command line alike.
//!
//! Invariants:
//! - A tenant becomes visible (`active`) only after its storage, keys, bootstrap service account,
//!   Admin binding and first audit events all exist; a failure on the way removes what was made.
//! - Deletion is recorded in the platform trail, then hides the tenant (`deleting`), waits for
//!   this process's requests that found it live, drops its schema or file and destroys its keys,
//!   then removes its row; every step is idempotent, so a failed deletion can be rerun.
//! - The bootstrap admin key is returned once and never stored or logged in clear.

use std::sync::Arc;

use secrecy::SecretString;

use crate::app::AppState;
use crate::audit::{AuditError, AuditEvent, Outcome, RequestMeta, Trail};
use crate::authz::bindings::{self, NewBinding, ScopeType, SubjectType};
use crate::directory::service_accounts;
use crate::directory::users::NewUser;
use crate::identity::IdentityError;
use crate::identity::operator::OperatorAuthority;
use crate::keystore::KeyStoreError;
use crate::signin::break_glass::{self, Issued};
use crate::signin::passkeys::{PasskeyError, PasskeyRefusal};
use crate::tenancy::work::{Change, Onboarding, WorkError, WriteTx};
use crate::tenancy::{Environment, Slug, TenancyError, Tenant, TenantRateLimits, TenantStatus};

/// Longest a deletion waits for the tenant's requests under way in this process.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Name of the service account that holds the bootstrap admin key.
pub const BOOTSTRAP_ACCOUNT: &str = "bootstrap-admin";

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Work(#[from] WorkError),
    /// A person of the tenant who is not a break-glass account has the email.
    #[error("a person of the tenant who is not a break-glass account has this email")]
    EmailTaken,
    #[error("break-glass account: {0}")]
    BreakGlass(String),
}

impl From<sea_orm::DbErr> for PlatformError {
    fn from(e: sea_orm::DbErr) -> Self {
        PlatformError::Tenancy(e.into())
    }
}

/// A tenant to onboard, already validated.
pub struct NewTenant {
    pub slug: Slug,
    pub name: String,
    pub environment: Environment,
}

/// The result of onboarding: the tenant and its bootstrap admin key, shown once.
pub struct Onboarded {
    pub tenant: Tenant,
    pub admin_api_key: SecretString,
}

/// Onboards a tenant. `meta` describes the operator's request (or the command line).
///
/// The work runs as a task of its own: a caller that goes away (a client disconnecting, which
/// drops the request's future) cannot stop it halfway, so it always ends in an active tenant or
/// in nothing at all.
pub async fn create_tenant(
    state: &Arc<AppState>,
    authority: &OperatorAuthority,
    new: NewTenant,
    meta: &RequestMeta,
) -> Result<Onboarded, PlatformError> {
    let (state, meta) = (Arc::clone(state), meta.clone());
    let onboarding = Onboarding::new(authority);
    tokio::spawn(async move { onboard(&state, new, &meta, &onboarding).await })
        .await
        .map_err(|e| TenancyError::Unexpected(anyhow::anyhow!("onboarding stopped: {e}")))?
}

async fn onboard(
    state: &Arc<AppState>,
    new: NewTenant,
    meta: &RequestMeta,
    onboarding: &Onboarding,
) -> Result<Onboarded, PlatformError> {
    let claimed = state
        .tenants
        .claim(&new.slug, &new.name, new.environment)
        .await?;
    let provisioned = async {
        let admin_api_key = provision(state, &claimed, meta, onboarding).await?;
        let tenant = state
            .tenants
            .set_status(&new.slug, TenantStatus::Active)
            .await?;
        Ok::<_, PlatformError>((tenant, admin_api_key))
    }
    .await;
    match provisioned {
        Ok((tenant, admin_api_key)) => {
            tracing::info!(tenant = %new.slug, "tenant onboarded");
            Ok(Onboarded {
                tenant,
                admin_api_key,
            })
        }
        // Nothing half-made stays: not the storage, the keys, nor the claimed slug.
        Err(e) => {
            let storage_was_ours =
                !matches!(e, PlatformError::Tenancy(TenancyError::AlreadyExists(_)));
            undo_provisioning(state, &new.slug, storage_was_ours).await;
            Err(e)
        }
    }
}

async fn provision(
    state: &Arc<AppState>,
    tenant: &Tenant,
    meta: &RequestMeta,
    onboarding: &Onboarding,
) -> Result<SecretString, PlatformError> {
    let slug = &tenant.slug;
    // The slug is ours now, so any key or record under its name is a leftover of an earlier
    // tenant (a deletion that raced a checkpoint): a new tenant starts with none, and with no
    // position of the old trail known to the audit signer here.
    state.keystore.destroy_tenant(slug.as_str()).await?;
    state.audit.forget_positions(slug.as_str());
    state.dbs.create_tenant_storage(slug).await?;
    let mut tx = WriteTx::onboarding(state, slug, meta, onboarding).await?;
    tx.record(
        Change::new("tenant", slug, 201)
            .action("tenant.create")
            .detail("environment", tenant.environment.as_str()),
    );
    let account = service_accounts::create(&tx, onboarding, BOOTSTRAP_ACCOUNT.to_owned()).await?;
    tx.record(Change::new("service_account", account.id, 201).action("service_account.create"));
    let binding = bindings::create(
        &tx,
        onboarding,
        NewBinding {
            role: "Admin".to_owned(),
            subject_type: SubjectType::ServiceAccount,
            subject_id: account.id,
            scope_type: ScopeType::Tenant,
            scope_id: None,
        },
    )
    .await?
    .ok_or_else(|| anyhow::anyhow!("a new tenant already had a bootstrap binding"))
    .map_err(TenancyError::from)?;
    tx.record(
        Change::new("role_binding", binding.id, 201)
            .action("role_binding.create")
            .detail("role", "Admin"),
    );
    let issued = state
        .api_keys
        .issue(
            &tx,
            onboarding,
            slug,
            "bootstrap admin key",
            account.id,
            None,
        )
        .await?;
    tx.commit(Change::new("api_key", issued.record.id, 201).action("api_key.create"))
        .await?;
    Ok(issued.key)
}

async fn undo_provisioning(state: &AppState, slug: &Slug, drop_storage: bool) {
    if drop_storage && let Err(e) = state.dbs.drop_tenant_storage(slug).await {
        tracing::error!(tenant = %slug, error = %e, "could not drop the storage of a failed onboarding");
    }
    if let Err(e) = state.keystore.destroy_tenant(slug.as_str()).await {
        tracing::error!(tenant = %slug, error = %e, "could not destroy the keys of a failed onboarding");
    }
    state.forget_tenant(slug.as_str());
    if let Err(e) = state.tenants.remove(slug).await {
        tracing::error!(tenant = %slug, error = %e, "could not release the slug of a failed onboarding");
    }
}

/// Suspends (`true`) or resumes (`false`) a live tenant; the change applies to the next request
/// on every replica.
pub async fn set_suspended(
    state: &AppState,
    _: &OperatorAuthority,
    slug: &Slug,
    suspended: bool,
    meta: &RequestMeta,
) -> Result<Tenant, PlatformError> {
    require_live(state, slug).await?;
    let (status, action) = if suspended {
        (TenantStatus::Suspended, "tenant.suspend")
    } else {
        (TenantStatus::Active, "tenant.resume")
    };
    let event = operator_event(meta, action, "tenant", 200).resource_id(slug.to_string());
    let tenant = audited_change(state, slug, event, async {
        let tenant = state.tenants.set_status(slug, status).await?;
        state.publish_tenant_change(slug).await?;
        Ok(tenant)
    })
    .await?;
    tracing::info!(tenant = %slug, status = status.as_str(), "tenant status changed");
    Ok(tenant)
}

/// Sets a live tenant's own rate limits; they apply to its next request on every replica.
pub async fn set_rate_limits(
    state: &AppState,
    _: &OperatorAuthority,
    slug: &Slug,
    limits: TenantRateLimits,
    meta: &RequestMeta,
) -> Result<Tenant, PlatformError> {
    require_live(state, slug).await?;
    let shown = |rate: Option<std::num::NonZeroU32>| rate.map(std::num::NonZeroU32::get);
    let event = operator_event(meta, "tenant.limit", "tenant", 200)
        .resource_id(slug.to_string())
        .detail("principal_per_second", shown(limits.principal_per_second))
        .detail("tenant_per_second", shown(limits.tenant_per_second));
    let tenant = audited_change(state, slug, event, async {
        let tenant = state.tenants.set_rate_limits(slug, limits).await?;
        state.publish_tenant_change(slug).await?;
        Ok(tenant)
    })
    .await?;
    tracing::info!(tenant = %slug, "tenant rate limits changed");
    Ok(tenant)
}

/// Creates the break-glass account `new` of a live tenant, or issues the existing one a new
/// enrollment (its passkeys removed, its sessions ended); on record in the tenant's trail as a
/// security event, and in the platform's as the operator's call.
pub async fn issue_break_glass(
    state: &Arc<AppState>,
    authority: &OperatorAuthority,
    slug: &Slug,
    new: NewUser,
    meta: &RequestMeta,
) -> Result<Issued, PlatformError> {
    require_live(state, slug).await?;
    let onboarding = Onboarding::new(authority);
    let tx = WriteTx::onboarding(state, slug, meta, &onboarding).await?;
    let issued = match break_glass::issue(&tx, &onboarding, new).await {
        Ok(issued) => issued,
        Err(PasskeyError::Refused(PasskeyRefusal::NotBreakGlass)) => {
            return Err(PlatformError::EmailTaken);
        }
        // Another call made a person with this email meanwhile.
        Err(PasskeyError::Db(e)) if crate::tenancy::is_unique_violation(&e) => {
            return Err(PlatformError::EmailTaken);
        }
        Err(PasskeyError::Db(e)) => return Err(e.into()),
        Err(e) => return Err(PlatformError::BreakGlass(e.to_string())),
    };
    let status = if issued.created { 201 } else { 200 };
    tx.commit(
        Change::new("user", issued.user.id, status)
            .action("tenant.break_glass")
            .detail("security_event", "break_glass_issued")
            .detail("created", issued.created)
            .detail("enrollment_expires_at", issued.expires_at.to_rfc3339()),
    )
    .await?;
    tracing::warn!(tenant = %slug, user = %issued.user.id, "break-glass enrollment issued");
    Ok(issued)
}

/// Deletes a tenant: its schema or file, its keys in the key store, and its row. The tenant's
/// own trail goes with it, so the deletion is recorded in the platform trail first.
pub async fn delete_tenant(
    state: &AppState,
    _: &OperatorAuthority,
    slug: &Slug,
    meta: &RequestMeta,
) -> Result<(), PlatformError> {
    if state.tenants.load(slug).await?.is_none() {
        return Err(TenancyError::NotFound(slug.to_string()).into());
    }
    state
        .audit
        .record(
            Trail::Platform,
            operator_event(meta, "tenant.delete", "tenant", 202)
                .resource_id(slug.to_string())
                .detail("phase", "requested")
                .detail(
                    "effect",
                    "the tenant's data, keys and audit trail are destroyed",
                ),
        )
        .await?;
    state
        .tenants
        .set_status(slug, TenantStatus::Deleting)
        .await?;
    state.publish_tenant_change(slug).await?;
    // This process's requests that found the tenant live before it was marked: what they write
    // to the key store (a secret's value, a key made on first use) lands before the keys are
    // destroyed rather than after, where nothing would destroy it. Another replica's are not
    // waited for: they fail at the dropped storage, and what one of them writes to the key
    // store afterwards stays under the slug until it is onboarded again (which clears it).
    let under_way = state.tenants.settle(slug, SETTLE_TIMEOUT).await;
    if under_way > 0 {
        tracing::warn!(tenant = %slug, requests = under_way, "deleting a tenant whose requests are still under way");
    }
    state.audit.forget(slug);
    state.dbs.drop_tenant_storage(slug).await?;
    state.keystore.destroy_tenant(slug.as_str()).await?;
    state.tenants.remove(slug).await?;
    state.publish_tenant_change(slug).await?;
    tracing::info!(tenant = %slug, "tenant deleted with its data and keys");
    Ok(())
}

/// Fails with "not found" unless the tenant is active or suspended (not being made or deleted).
async fn require_live(state: &AppState, slug: &Slug) -> Result<(), PlatformError> {
    let current = state.tenants.load(slug).await?;
    if current.is_some_and(|t| matches!(t.status, TenantStatus::Active | TenantStatus::Suspended)) {
        Ok(())
    } else {
        Err(TenancyError::NotFound(slug.to_string()).into())
    }
}

/// Makes an operator's `change` of a tenant, on record in the tenant's trail before it takes
/// effect (a change the trail cannot hold is not made), and its failure on record after.
async fn audited_change<T>(
    state: &AppState,
    slug: &Slug,
    event: AuditEvent,
    change: impl Future<Output = Result<T, PlatformError>>,
) -> Result<T, PlatformError> {
    let failed = event
        .clone()
        .outcome(Outcome::Allow, 503)
        .detail("error", "the change could not be made");
    state.audit.record(slug, event).await?;
    match change.await {
        Ok(done) => Ok(done),
        Err(e) => {
            if let Err(audit) = state.audit.record(slug, failed).await {
                tracing::error!(tenant = %slug, error = %audit, "could not record a failed tenant change");
            }
            Err(e)
        }
    }
}

fn operator_event(
    meta: &RequestMeta,
    action: &str,
    resource_type: &str,
    status: u16,
) -> AuditEvent {
    AuditEvent::new(meta, action, resource_type)
        .actor("operator", "platform")
        .outcome(Outcome::Allow, status)
}
