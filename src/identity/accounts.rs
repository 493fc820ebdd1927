//! Whether a service account may act: every credential of a disabled account (its API keys, its
//! OAuth clients and the tokens they were issued, trusted issuers' tokens) is refused, by one
//! check after the authenticator that recognised the credential.
//!
//! Invariant: an account is believed active only as long as this replica's copy of its status is
//! fresh. Disabling it is an invalidating change, which drops the copy on every replica with the
//! commit (PostgreSQL notifications); where nothing tells a replica, the copy lives at most
//! [`STATUS_TTL`].

use std::time::Duration;

use entity::tenant::service_account;
use sea_orm::EntityTrait as _;
use uuid::Uuid;

use super::records::RecordIndex;
use super::{IdentityError, InvalidReason};
use crate::directory::AccountStatus;
use crate::tenancy::{Access, Databases, Slug};

/// Longest a replica uses its copy of an account's status when no invalidation reaches it.
const STATUS_TTL: Duration = Duration::from_secs(60);
/// Tenants whose accounts' statuses are kept in memory.
const CACHED_TENANTS: usize = 1_000;
/// Accounts whose status is kept in memory, per tenant.
const CACHED_PER_TENANT: usize = 1_000;

/// The statuses of the tenants' service accounts, as this replica last read them.
pub struct AccountStatuses(RecordIndex<AccountStatus>);

impl Default for AccountStatuses {
    fn default() -> Self {
        AccountStatuses(RecordIndex::new(
            "service_account_status",
            CACHED_TENANTS,
            CACHED_PER_TENANT,
            Some(STATUS_TTL),
        ))
    }
}

impl AccountStatuses {
    /// Succeeds when service account `id` of `slug` exists and is active; a disabled or missing
    /// account's credentials are invalid.
    #[expect(
        clippy::disallowed_methods,
        reason = "authentication reads the account's status before any principal exists"
    )]
    pub async fn ensure_active(
        &self,
        dbs: &Databases,
        slug: &Slug,
        id: Uuid,
    ) -> Result<(), IdentityError> {
        let status = self
            .0
            .get_or_load(slug.as_str(), &id.to_string(), || async {
                let tx = dbs.begin(slug, Access::Read).await?;
                let account = service_account::Entity::find_by_id(id).one(&tx).await?;
                tx.commit().await?;
                Ok(account.map(|a| AccountStatus::parse(&a.status)))
            })
            .await?;
        match status {
            Some(AccountStatus::Active) => Ok(()),
            Some(AccountStatus::Disabled) => Err(IdentityError::InvalidCredentials(
                InvalidReason::AccountDisabled,
            )),
            None => Err(IdentityError::InvalidCredentials(InvalidReason::UnknownKey)),
        }
    }

    /// Forgets the statuses of `slug`'s accounts.
    pub fn forget_tenant(&self, slug: &str) {
        self.0.forget(slug);
    }

    /// Forgets every status.
    pub fn forget_all(&self) {
        self.0.clear();
    }
}
