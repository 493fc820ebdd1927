//! A bounded cache keyed by tenant slug, safe against stale fills.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::Turns;

/// A bounded LRU map from tenant slug to a value loaded from the database.
///
/// Invariants: a value loaded before an invalidation of its slug is never inserted after it
/// (each load remembers the slug's generation when it started; invalidating the slug bumps it,
/// and a fill whose generation is stale is dropped). Generations are per slug, so one tenant's
/// changes never keep another's value out of the cache; they live in a bounded map too, and
/// forgetting one (or clearing everything) bumps an epoch that refuses every fill in flight.
/// With a time to live, no value is served older than that, which bounds staleness when a change
/// happens where no invalidation can reach (another process on the same SQLite files).
pub struct TenantCache<V> {
    inner: Mutex<Inner<V>>,
    ttl: Option<Duration>,
}

struct Inner<V> {
    map: LruCache<String, (V, Instant)>,
    /// Invalidations per slug.
    generations: LruCache<String, u64>,
    /// Bumped whenever a generation is forgotten or everything is cleared.
    epoch: u64,
}

impl<V> Inner<V> {
    fn stamp(&mut self, slug: &str) -> (u64, u64) {
        (self.epoch, self.generations.get(slug).copied().unwrap_or(0))
    }
}

impl<V: Clone> TenantCache<V> {
    pub fn new(capacity: NonZeroUsize) -> Self {
        TenantCache {
            inner: Mutex::new(Inner {
                map: LruCache::new(capacity),
                generations: LruCache::new(capacity),
                epoch: 0,
            }),
            ttl: None,
        }
    }

    /// A cache whose entries expire `ttl` after they were loaded.
    pub fn with_ttl(capacity: NonZeroUsize, ttl: Duration) -> Self {
        TenantCache {
            ttl: Some(ttl),
            ..Self::new(capacity)
        }
    }

    /// The cached value of `slug`, if there is a fresh one.
    pub fn get(&self, slug: &str) -> Option<V> {
        let mut inner = self.lock();
        inner
            .map
            .get(slug)
            .filter(|(_, loaded)| self.ttl.is_none_or(|ttl| loaded.elapsed() < ttl))
            .map(|(v, _)| v.clone())
    }

    /// The cached value of `slug`, or the result of `load`, cached when it succeeds.
    pub async fn get_or_try_load<E, Fut>(
        &self,
        slug: &str,
        load: impl FnOnce() -> Fut,
    ) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.get(slug) {
            return Ok(value);
        }
        let stamp = self.lock().stamp(slug);
        let value = load().await?;
        let mut inner = self.lock();
        if inner.stamp(slug) == stamp {
            inner
                .map
                .put(slug.to_owned(), (value.clone(), Instant::now()));
        }
        Ok(value)
    }

    /// [`Self::get_or_try_load`], one load at a time per slug (a turn of `turns`): callers
    /// that miss together wait for the one load instead of each loading.
    pub async fn get_or_try_load_in_turn<E, Fut>(
        &self,
        turns: &Turns,
        slug: &str,
        load: impl FnOnce() -> Fut,
    ) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.get(slug) {
            return Ok(value);
        }
        let _turn = turns.take(slug).await;
        // The load this one waited for, if any, filled the cache.
        self.get_or_try_load(slug, load).await
    }

    /// Forgets `slug` and refuses fills that started before now.
    pub fn invalidate(&self, slug: &str) {
        let mut inner = self.lock();
        let next = inner.generations.get(slug).copied().unwrap_or(0) + 1;
        if inner
            .generations
            .push(slug.to_owned(), next)
            .is_some_and(|(evicted, _)| evicted != slug)
        {
            inner.epoch += 1;
        }
        inner.map.pop(slug);
    }

    /// Forgets every entry and refuses fills that started before now.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.generations.clear();
        inner.map.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V>> {
        // A panic while holding this lock cannot leave the map inconsistent (every mutation is
        // a single LruCache call), so a poisoned lock is safe to keep using.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> TenantCache<u32> {
        TenantCache::new(NonZeroUsize::new(2).unwrap())
    }

    #[tokio::test]
    async fn loads_once_then_serves_from_memory() {
        let c = cache();
        let v: Result<u32, ()> = c.get_or_try_load("a", || async { Ok(1) }).await;
        assert_eq!(v, Ok(1));
        let v: Result<u32, ()> = c.get_or_try_load("a", || async { Ok(2) }).await;
        assert_eq!(v, Ok(1));
    }

    #[tokio::test]
    async fn a_fill_that_raced_an_invalidation_is_dropped() {
        let c = cache();
        let v: Result<u32, ()> = c
            .get_or_try_load("a", || async {
                c.invalidate("a");
                Ok(1)
            })
            .await;
        assert_eq!(v, Ok(1));
        let v: Result<u32, ()> = c.get_or_try_load("a", || async { Ok(2) }).await;
        assert_eq!(v, Ok(2), "the stale value must not have been cached");
    }

    #[tokio::test]
    async fn another_tenants_invalidation_does_not_refuse_a_fill() {
        let c = cache();
        let v: Result<u32, ()> = c
            .get_or_try_load("a", || async {
                c.invalidate("b");
                Ok(1)
            })
            .await;
        assert_eq!(v, Ok(1));
        let v: Result<u32, ()> = c.get_or_try_load("a", || async { Ok(2) }).await;
        assert_eq!(v, Ok(1), "the value of `a` was cached despite `b` changing");
    }

    #[tokio::test]
    async fn entries_expire_after_their_time_to_live() {
        let c = TenantCache::with_ttl(NonZeroUsize::new(2).unwrap(), Duration::from_millis(20));
        let _: Result<u32, ()> = c.get_or_try_load("a", || async { Ok(1) }).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let v: Result<u32, ()> = c.get_or_try_load("a", || async { Ok(2) }).await;
        assert_eq!(v, Ok(2));
    }

    #[tokio::test]
    async fn stays_within_its_bound() {
        let c = cache();
        for (slug, n) in [("a", 1), ("b", 2), ("c", 3)] {
            let _: Result<u32, ()> = c.get_or_try_load(slug, || async move { Ok(n) }).await;
        }
        let v: Result<u32, ()> = c.get_or_try_load("a", || async { Ok(9) }).await;
        assert_eq!(v, Ok(9), "the least recently used entry was evicted");
    }
}
