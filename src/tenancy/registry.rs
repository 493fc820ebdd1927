//! The tenant registry in the control plane, with a bounded cache for the request path.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::control::tenant;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
    QueryOrder as _,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::in_flight::InFlight;
use super::{Databases, Slug, TenancyError, TenantCache, Visit};

/// Tenants whose records are kept in memory at once.
const CACHED_TENANTS: usize = 10_000;
/// Longest a cached tenant record is used: a suspension made by another process on the same
/// SQLite files (the command line) reaches the server within this time. On PostgreSQL,
/// notifications reach every replica at once; this only bounds a lost notification.
const TENANT_RECORD_TTL: Duration = Duration::from_secs(1);

/// The deployment stage a tenant represents; production tenants get stricter defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Dev,
    Stage,
    Prod,
}

/// Lifecycle of a tenant. Only `active` and `suspended` tenants are visible on the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Provisioning,
    Active,
    Suspended,
    Deleting,
}

/// One tenant as the rest of the service sees it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: Slug,
    pub name: String,
    pub environment: Environment,
    pub status: TenantStatus,
    pub rate_limits: TenantRateLimits,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Rate limits an operator set for one tenant; `None` keeps the process-wide setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantRateLimits {
    /// Requests per second of one principal of the tenant.
    pub principal_per_second: Option<NonZeroU32>,
    /// Requests per second to the tenant as a whole.
    pub tenant_per_second: Option<NonZeroU32>,
}

/// Reads and writes the control plane's tenant rows.
pub struct TenantRegistry {
    dbs: Arc<Databases>,
    cache: TenantCache<Arc<Tenant>>,
    in_flight: Arc<InFlight>,
}

#[expect(
    clippy::disallowed_methods,
    reason = "the registry is the control plane's owner"
)]
impl TenantRegistry {
    pub fn new(dbs: Arc<Databases>) -> Self {
        let capacity = NonZeroUsize::new(CACHED_TENANTS).unwrap_or(NonZeroUsize::MIN);
        TenantRegistry {
            dbs,
            cache: TenantCache::with_ttl(capacity, TENANT_RECORD_TTL),
            in_flight: Arc::default(),
        }
    }

    /// Counts a request under way for `slug` in this process until the visit is dropped; taken
    /// before the request reads the tenant's status (see [`TenantRegistry::settle`]).
    pub fn enter(&self, slug: &Slug) -> Visit {
        self.in_flight.enter(slug)
    }

    /// Waits, for at most `timeout`, until no request of this process that entered `slug` is
    /// under way; how many still are then. After the tenant's status changed here, no new
    /// request can act on it, so this is the end of those that read the old status.
    pub async fn settle(&self, slug: &Slug, timeout: Duration) -> usize {
        self.in_flight.settle(slug, timeout).await
    }

    /// The tenant `slug` in any state, from the cache when possible.
    pub async fn get(&self, slug: &Slug) -> Result<Arc<Tenant>, TenancyError> {
        self.cache
            .get_or_try_load(slug.as_str(), || async {
                self.load(slug)
                    .await?
                    .map(Arc::new)
                    .ok_or_else(|| TenancyError::NotFound(slug.to_string()))
            })
            .await
    }

    /// The tenant `slug` straight from the database.
    pub async fn load(&self, slug: &Slug) -> Result<Option<Tenant>, TenancyError> {
        tenant::Entity::find()
            .filter(tenant::Column::Slug.eq(slug.as_str()))
            .one(self.dbs.control())
            .await?
            .map(Tenant::try_from)
            .transpose()
    }

    /// Every tenant, ordered by slug.
    pub async fn list(&self) -> Result<Vec<Tenant>, TenancyError> {
        tenant::Entity::find()
            .order_by_asc(tenant::Column::Slug)
            .all(self.dbs.control())
            .await?
            .into_iter()
            .map(Tenant::try_from)
            .collect()
    }

    /// Claims `slug` with a `provisioning` row; fails if the slug is taken.
    pub async fn claim(
        &self,
        slug: &Slug,
        name: &str,
        environment: Environment,
    ) -> Result<Tenant, TenancyError> {
        let now = Utc::now();
        let row = tenant::ActiveModel {
            id: Set(Uuid::new_v4()),
            slug: Set(slug.to_string()),
            name: Set(name.to_owned()),
            environment: Set(environment.as_str().to_owned()),
            status: Set(TenantStatus::Provisioning.as_str().to_owned()),
            rate_limit_principal: Set(None),
            rate_limit_tenant: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        };
        match row.insert(self.dbs.control()).await {
            Ok(model) => Tenant::try_from(model),
            Err(e) if crate::tenancy::is_unique_violation(&e) => {
                Err(TenancyError::AlreadyExists(slug.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Moves the tenant to `status` and forgets the cached record. A tenant being deleted
    /// stays so: only `deleting` again is set on it (any other status is "not found"), so an
    /// operator's resumption that raced the deletion cannot bring it back to life.
    pub async fn set_status(
        &self,
        slug: &Slug,
        status: TenantStatus,
    ) -> Result<Tenant, TenancyError> {
        let change = |row: &mut tenant::ActiveModel| row.status = Set(status.as_str().to_owned());
        self.update(slug, change, status == TenantStatus::Deleting)
            .await
    }

    /// Sets the tenant's own rate limits and forgets the cached record.
    pub async fn set_rate_limits(
        &self,
        slug: &Slug,
        limits: TenantRateLimits,
    ) -> Result<Tenant, TenancyError> {
        let stored =
            |rate: Option<NonZeroU32>| rate.map(|r| i32::try_from(r.get()).unwrap_or(i32::MAX));
        let change = |row: &mut tenant::ActiveModel| {
            row.rate_limit_principal = Set(stored(limits.principal_per_second));
            row.rate_limit_tenant = Set(stored(limits.tenant_per_second));
        };
        self.update(slug, change, false).await
    }

    /// Applies `change` to the tenant's row, stamps `updated_at` and forgets the cached record;
    /// a tenant being deleted is changed only `while_deleting` (one statement: the check and
    /// the change cannot be told apart by a deletion in between).
    async fn update(
        &self,
        slug: &Slug,
        change: impl FnOnce(&mut tenant::ActiveModel),
        while_deleting: bool,
    ) -> Result<Tenant, TenancyError> {
        let mut row = tenant::ActiveModel {
            updated_at: Set(Utc::now()),
            ..Default::default()
        };
        change(&mut row);
        let mut update = tenant::Entity::update_many()
            .set(row)
            .filter(tenant::Column::Slug.eq(slug.as_str()));
        if !while_deleting {
            update = update.filter(tenant::Column::Status.ne(TenantStatus::Deleting.as_str()));
        }
        let updated = update.exec(self.dbs.control()).await?;
        self.cache.invalidate(slug.as_str());
        if updated.rows_affected == 0 {
            return Err(TenancyError::NotFound(slug.to_string()));
        }
        self.load(slug)
            .await?
            .ok_or_else(|| TenancyError::NotFound(slug.to_string()))
    }

    /// Deletes the tenant's row. Idempotent.
    pub async fn remove(&self, slug: &Slug) -> Result<(), TenancyError> {
        tenant::Entity::delete_many()
            .filter(tenant::Column::Slug.eq(slug.as_str()))
            .exec(self.dbs.control())
            .await?;
        self.cache.invalidate(slug.as_str());
        Ok(())
    }

    /// Forgets the cached record of `slug` (after a change made elsewhere).
    pub fn invalidate(&self, slug: &str) {
        self.cache.invalidate(slug);
    }

    /// Forgets every cached record.
    pub fn invalidate_all(&self) {
        self.cache.clear();
    }
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Dev => "dev",
            Environment::Stage => "stage",
            Environment::Prod => "prod",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dev" => Some(Environment::Dev),
            "stage" => Some(Environment::Stage),
            "prod" => Some(Environment::Prod),
            _ => None,
        }
    }
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Provisioning => "provisioning",
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Deleting => "deleting",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "provisioning" => Some(TenantStatus::Provisioning),
            "active" => Some(TenantStatus::Active),
            "suspended" => Some(TenantStatus::Suspended),
            "deleting" => Some(TenantStatus::Deleting),
            _ => None,
        }
    }
}

impl TryFrom<tenant::Model> for Tenant {
    type Error = TenancyError;

    fn try_from(m: tenant::Model) -> Result<Self, Self::Error> {
        let corrupt = |what: &str| anyhow::anyhow!("tenant row {} has a bad {what}", m.id);
        let rate = |stored: Option<i32>, what: &str| {
            stored
                .map(|v| {
                    u32::try_from(v)
                        .ok()
                        .and_then(NonZeroU32::new)
                        .ok_or_else(|| corrupt(what))
                })
                .transpose()
        };
        Ok(Tenant {
            slug: Slug::parse(&m.slug).map_err(|_| corrupt("slug"))?,
            environment: Environment::parse(&m.environment)
                .ok_or_else(|| corrupt("environment"))?,
            status: TenantStatus::parse(&m.status).ok_or_else(|| corrupt("status"))?,
            rate_limits: TenantRateLimits {
                principal_per_second: rate(m.rate_limit_principal, "principal rate limit")?,
                tenant_per_second: rate(m.rate_limit_tenant, "tenant rate limit")?,
            },
            id: m.id,
            name: m.name,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resumption or suspension that raced a deletion cannot bring the tenant back to life.
    #[tokio::test]
    async fn a_tenant_being_deleted_stays_so() {
        let (dir, dbs) = crate::tenancy::db::tests::sqlite_databases("registry").await;
        let registry = TenantRegistry::new(Arc::new(dbs));
        let slug = Slug::parse("doomed").unwrap();
        registry
            .claim(&slug, "Doomed", Environment::Dev)
            .await
            .unwrap();
        let active = registry
            .set_status(&slug, TenantStatus::Active)
            .await
            .unwrap();
        assert_eq!(active.status, TenantStatus::Active);
        registry
            .set_status(&slug, TenantStatus::Deleting)
            .await
            .unwrap();
        for status in [TenantStatus::Active, TenantStatus::Suspended] {
            let refused = registry.set_status(&slug, status).await;
            assert!(
                matches!(refused, Err(TenancyError::NotFound(_))),
                "{refused:?}"
            );
        }
        let limits = TenantRateLimits::default();
        assert!(registry.set_rate_limits(&slug, limits).await.is_err());
        let stays = registry.load(&slug).await.unwrap().unwrap();
        assert_eq!(stays.status, TenantStatus::Deleting);
        // A deletion run again finds it as it left it.
        registry
            .set_status(&slug, TenantStatus::Deleting)
            .await
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
