//! This process's buckets, with `governor`'s GCRA: the limits every replica applies on its own,
//! and all the limiting there is without Redis.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use lru::LruCache;

use super::Rate;

/// Keys a limiter holds before its idle ones are swept.
const SWEEP_AT: usize = 10_000;

/// Tenants whose buckets are kept at once; a tenant evicted starts again with a full burst.
const TENANTS_KEPT: usize = 10_000;

/// One rate, per key.
pub(super) struct Keyed<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    pub(super) fn new(rate: &Rate) -> Self {
        Keyed {
            limiter: RateLimiter::keyed(quota(rate)),
        }
    }

    /// Takes one unit for `key`; `Err` carries how long until the next one.
    pub(super) fn take(&self, key: &K) -> Result<(), Duration> {
        if self.limiter.len() >= SWEEP_AT {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The buckets of one tenant at the rates in force for it.
pub(super) struct TenantBuckets {
    pub(super) principal: Rate,
    pub(super) tenant: Rate,
    whole: DefaultDirectRateLimiter,
    principals: Keyed<String>,
}

impl TenantBuckets {
    fn new(principal: Rate, tenant: Rate) -> Self {
        TenantBuckets {
            whole: RateLimiter::direct(quota(&tenant)),
            principals: Keyed::new(&principal),
            principal,
            tenant,
        }
    }

    /// Takes one unit from the tenant's bucket, then one from the principal's.
    pub(super) fn take(&self, principal: &str) -> Result<(), (Rate, Duration)> {
        self.whole.check().map_err(|not_until| {
            (
                self.tenant,
                not_until.wait_time_from(DefaultClock::default().now()),
            )
        })?;
        self.principals
            .take(&principal.to_owned())
            .map_err(|wait| (self.principal, wait))
    }
}

/// Every tenant's buckets, created at first use and re-created when its rates change.
pub(super) struct Tenants(Mutex<LruCache<String, Arc<TenantBuckets>>>);

impl Tenants {
    pub(super) fn new() -> Self {
        let capacity = NonZeroUsize::new(TENANTS_KEPT).unwrap_or(NonZeroUsize::MIN);
        Tenants(Mutex::new(LruCache::new(capacity)))
    }

    /// The buckets of `tenant` at these rates.
    pub(super) fn get(&self, tenant: &str, principal: Rate, whole: Rate) -> Arc<TenantBuckets> {
        // Each change is one LruCache call; a poisoned lock still holds a consistent map.
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(tenant) {
            Some(buckets) if buckets.principal == principal && buckets.tenant == whole => {
                Arc::clone(buckets)
            }
            _ => {
                let buckets = Arc::new(TenantBuckets::new(principal, whole));
                map.put(tenant.to_owned(), Arc::clone(&buckets));
                buckets
            }
        }
    }
}

fn quota(rate: &Rate) -> Quota {
    Quota::with_period(rate.interval())
        .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MAX))
        .allow_burst(rate.burst)
}

/// Source addresses, the one key type of the limits before authentication.
pub(super) type Sources = Keyed<IpAddr>;
