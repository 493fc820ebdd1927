//! Per-tenant indexes of records that authentication reads on every request (API keys, OAuth
//! clients, verified tokens), kept in memory by lookup key.
//!
//! Invariant: an index holds only what was found; a miss is loaded by the caller's loader and
//! nothing is kept for a key that does not exist, so guessing keys fills nothing. Dropping a
//! tenant's index (after a revocation) makes the next request read the database again.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lru::LruCache;

use super::IdentityError;
use crate::tenancy::TenantCache;

type Index<M> = Mutex<LruCache<String, M>>;

/// Records of each tenant, by key, at most `per_tenant` each.
pub struct RecordIndex<M> {
    tenants: TenantCache<Arc<Index<M>>>,
    per_tenant: NonZeroUsize,
    /// The index's name in the cache metrics.
    name: &'static str,
}

impl<M: Clone> RecordIndex<M> {
    /// An index named `name` of `tenants` tenants; with a `ttl`, a tenant's records are read
    /// again at least that often (bounding the harm of a lost invalidation).
    pub fn new(
        name: &'static str,
        tenants: usize,
        per_tenant: usize,
        ttl: Option<Duration>,
    ) -> Self {
        let tenants = NonZeroUsize::new(tenants).unwrap_or(NonZeroUsize::MIN);
        RecordIndex {
            tenants: match ttl {
                Some(ttl) => TenantCache::with_ttl(tenants, ttl),
                None => TenantCache::new(tenants),
            },
            per_tenant: NonZeroUsize::new(per_tenant).unwrap_or(NonZeroUsize::MIN),
            name,
        }
    }

    /// The record under `key`, from memory or else from `load` (kept if found).
    pub async fn get_or_load<Fut>(
        &self,
        slug: &str,
        key: &str,
        load: impl FnOnce() -> Fut,
    ) -> Result<Option<M>, IdentityError>
    where
        Fut: Future<Output = Result<Option<M>, IdentityError>>,
    {
        self.get_fresh_or_load(slug, key, |_| true, load).await
    }

    /// The record under `key` from memory if `fresh` accepts it, or else from `load` (kept if
    /// found, replacing the one in memory).
    ///
    /// A record loaded while the tenant's records are being forgotten is kept in the index that
    /// was forgotten, never in its successor: the index is taken before `load` reads, so what
    /// `load` read before a change cannot outlive the change's invalidation. (What the caller
    /// read before calling is not covered: read it inside `load`.)
    pub async fn get_fresh_or_load<Fut>(
        &self,
        slug: &str,
        key: &str,
        fresh: impl FnOnce(&M) -> bool,
        load: impl FnOnce() -> Fut,
    ) -> Result<Option<M>, IdentityError>
    where
        Fut: Future<Output = Result<Option<M>, IdentityError>>,
    {
        let index = self.index(slug).await?;
        let found = lock(&index).get(key).filter(|r| fresh(r)).cloned();
        crate::telemetry::metrics().observe_cache(self.name, found.is_some());
        if found.is_some() {
            return Ok(found);
        }
        let record = load().await?;
        if let Some(record) = &record {
            lock(&index).put(key.to_owned(), record.clone());
        }
        Ok(record)
    }

    /// The record under `key`, if in memory.
    pub async fn get(&self, slug: &str, key: &str) -> Result<Option<M>, IdentityError> {
        let index = self.index(slug).await?;
        let record = lock(&index).get(key).cloned();
        Ok(record)
    }

    /// Keeps `record` under `key`.
    pub async fn put(&self, slug: &str, key: String, record: M) -> Result<(), IdentityError> {
        let index = self.index(slug).await?;
        lock(&index).put(key, record);
        Ok(())
    }

    /// Forgets the records of `slug`.
    pub fn forget(&self, slug: &str) {
        self.tenants.invalidate(slug);
    }

    /// Forgets every record.
    pub fn clear(&self) {
        self.tenants.clear();
    }

    async fn index(&self, slug: &str) -> Result<Arc<Index<M>>, IdentityError> {
        let capacity = self.per_tenant;
        self.tenants
            .get_or_try_load(slug, || async move {
                Ok::<_, IdentityError>(Arc::new(Mutex::new(LruCache::new(capacity))))
            })
            .await
    }
}

fn lock<M>(index: &Index<M>) -> MutexGuard<'_, LruCache<String, M>> {
    // Every mutation is one LruCache call; a poisoned lock still holds a consistent map.
    index.lock().unwrap_or_else(|p| p.into_inner())
}
