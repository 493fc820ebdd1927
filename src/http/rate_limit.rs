//! Rate limits, with `governor`'s GCRA: per source address before authentication, per source
//! address on failed authentications, and per principal and per tenant after authentication.
//!
//! Invariants:
//! - A source address whose failed authentications exceed their budget is refused (429) before
//!   any credential of its is looked up: no database read, no key-store call, no audit row per
//!   attempt. Its first refusal in a block is audited (the trip), the rest are not: repeated
//!   failures cannot turn the audit trail into a write amplifier.
//! - Every map here is bounded: idle keys are swept once a map holds [`SWEEP_AT`] of them, and
//!   the table of blocked keys is an LRU of [`MAX_BLOCKED`].
//!
//! The state is per process: replicas behind a load balancer each allow the configured rate.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, web};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use lru::LruCache;

use super::error::ApiError;
use super::middleware::request_meta;
use super::tenant::respond_audited;
use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, RequestMeta, Trail};
use crate::config::RateLimitSettings;

/// Keys a limiter holds before its idle ones are swept.
const SWEEP_AT: usize = 10_000;

/// Blocked keys remembered at once.
const MAX_BLOCKED: usize = 100_000;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Requests from one source address, before authentication.
    Source,
    /// Failed authentications from one source address.
    Failures,
    /// Requests of one principal of a tenant.
    Principal,
    /// Requests to one tenant.
    Tenant,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Source => "source",
            Limit::Failures => "failures",
            Limit::Principal => "principal",
            Limit::Tenant => "tenant",
        }
    }
}

/// A refused request: which limit, its quota, and when to come back.
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    pub limit: Limit,
    /// Requests (or failures) the limit allows per window.
    pub quota: u32,
    pub window: Duration,
    pub retry_after: Duration,
    /// The first refusal of this block: it is audited, the following ones are not.
    pub first: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Blocked {
    Source(IpAddr),
    Principal(String, String),
    Tenant(String),
}

struct Keyed<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    limit: Limit,
    quota: u32,
    window: Duration,
}

impl<K: std::hash::Hash + Eq + Clone> Keyed<K> {
    fn per_second(limit: Limit, rate: NonZeroU32) -> Self {
        let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        Keyed {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            limit,
            quota: rate.get(),
            window: Duration::from_secs(1),
        }
    }

    fn per_minute(limit: Limit, count: NonZeroU32) -> Self {
        Keyed {
            limiter: RateLimiter::keyed(Quota::per_minute(count).allow_burst(count)),
            limit,
            quota: count.get(),
            window: Duration::from_secs(60),
        }
    }

    /// Takes one unit for `key`; `Err` carries how long until the next one.
    fn take(&self, key: &K) -> Result<(), Duration> {
        if self.limiter.len() >= SWEEP_AT {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn refusal(&self, retry_after: Duration, first: bool) -> Refusal {
        Refusal {
            limit: self.limit,
            quota: self.quota,
            window: self.window,
            retry_after: retry_after.max(Duration::from_secs(1)),
            first,
        }
    }
}

/// Every limit of one process.
pub struct Limits {
    source: Keyed<IpAddr>,
    failures: Keyed<IpAddr>,
    principals: Keyed<(String, String)>,
    tenants: Keyed<String>,
    /// Keys refused until an instant: answered without consulting anything else.
    blocked: Mutex<LruCache<Blocked, (Instant, Refusal)>>,
}

impl Limits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        let capacity =
            std::num::NonZeroUsize::new(MAX_BLOCKED).unwrap_or(std::num::NonZeroUsize::MIN);
        Limits {
            source: Keyed::per_second(Limit::Source, settings.source_per_second),
            failures: Keyed::per_minute(Limit::Failures, settings.failures_per_minute),
            principals: Keyed::per_second(Limit::Principal, settings.principal_per_second),
            tenants: Keyed::per_second(Limit::Tenant, settings.tenant_per_second),
            blocked: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Admits a request from `source` before its credential is looked at.
    pub fn admit_source(&self, source: IpAddr) -> Result<(), Refusal> {
        self.still_blocked(&Blocked::Source(source))?;
        self.source
            .take(&source)
            .map_err(|wait| self.block(Blocked::Source(source), self.source.refusal(wait, true)))
    }

    /// Counts a failed authentication from `source`; when its budget is spent, the address is
    /// refused until the budget refills, and the trip is returned (to be audited once).
    pub fn failed(&self, source: IpAddr) -> Option<Refusal> {
        self.failures
            .take(&source)
            .err()
            .map(|wait| self.block(Blocked::Source(source), self.failures.refusal(wait, true)))
    }

    /// Admits a request of `principal` in `tenant`, after authentication.
    pub fn admit_principal(&self, tenant: &str, principal: &str) -> Result<(), Refusal> {
        let (tenant, principal) = (tenant.to_owned(), principal.to_owned());
        self.still_blocked(&Blocked::Tenant(tenant.clone()))?;
        let key = Blocked::Principal(tenant.clone(), principal.clone());
        self.still_blocked(&key)?;
        if let Err(wait) = self.tenants.take(&tenant) {
            return Err(self.block(Blocked::Tenant(tenant), self.tenants.refusal(wait, true)));
        }
        self.principals
            .take(&(tenant, principal))
            .map_err(|wait| self.block(key, self.principals.refusal(wait, true)))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, LruCache<Blocked, (Instant, Refusal)>> {
        // Each change is one LruCache call; a poisoned lock still holds a consistent map.
        self.blocked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn still_blocked(&self, key: &Blocked) -> Result<(), Refusal> {
        let mut table = self.table();
        match table.get(key) {
            Some((until, refusal)) => {
                let now = Instant::now();
                if *until > now {
                    return Err(Refusal {
                        retry_after: (*until - now).max(Duration::from_secs(1)),
                        first: false,
                        ..*refusal
                    });
                }
                table.pop(key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn block(&self, key: Blocked, refusal: Refusal) -> Refusal {
        self.table()
            .put(key, (Instant::now() + refusal.retry_after, refusal));
        refusal
    }
}

/// The audit event of a limit's trip: the first refusal of a block, the only one recorded.
pub fn trip_event(meta: &RequestMeta, refusal: &Refusal) -> AuditEvent {
    AuditEvent::new(meta, "rate_limit.trip", "platform")
        .outcome(Outcome::Deny, 429)
        .detail("limit", refusal.limit.name())
        .detail("quota", refusal.quota)
        .detail("window_seconds", refusal.window.as_secs())
        .detail("retry_after_seconds", refusal.retry_after.as_secs())
}

/// Records a trip in `trail` beside the request's own event; a trip that cannot be written is
/// logged (the request it rode on is answered either way, as it was already decided).
pub async fn record_trip(state: &AppState, trail: impl Into<Trail>, event: AuditEvent) {
    if let Err(e) = state.audit.record(trail, event).await {
        tracing::warn!(error = %e, "a rate-limit trip could not be audited");
    }
}

/// The stage before authentication: a source address over its rate, or whose failed
/// authentications are spent, is answered 429 at once. Health probes are not limited.
pub async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let probe = matches!(req.path(), "/healthz" | "/readyz");
    let state = req.app_data::<web::Data<AppState>>().cloned();
    if let (false, Some(state), Some(source)) = (probe, state, req.peer_addr().map(|a| a.ip()))
        && let Err(refusal) = state.limits.admit_source(source)
    {
        let meta = request_meta(req.request());
        let res = req.error_response(ApiError::rate_limited(&refusal));
        if !refusal.first {
            return Ok(res);
        }
        return Ok(
            respond_audited(&state, Trail::Platform, trip_event(&meta, &refusal), res).await,
        );
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(failures: u32) -> Limits {
        let n = |v| NonZeroU32::new(v).unwrap();
        Limits::new(&RateLimitSettings {
            source_per_second: n(1000),
            failures_per_minute: n(failures),
            principal_per_second: n(2),
            tenant_per_second: n(1000),
        })
    }

    #[test]
    fn an_address_whose_failures_are_spent_is_refused_before_anything_else() {
        let limits = limits(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limits.failed(ip).is_none());
        }
        let trip = limits.failed(ip).unwrap();
        assert!(trip.first && trip.limit == Limit::Failures);
        let refused = limits.admit_source(ip).unwrap_err();
        assert!(!refused.first, "only the trip is audited");
        assert!(refused.retry_after >= Duration::from_secs(1));
        assert!(
            limits.admit_source(other).is_ok(),
            "another address is not affected"
        );
    }

    #[test]
    fn a_principal_over_its_rate_is_refused_and_others_are_not() {
        let limits = limits(10);
        let mut refusals = (0..10)
            .filter_map(|_| limits.admit_principal("acme", "a").err())
            .collect::<Vec<_>>();
        assert!(!refusals.is_empty());
        assert!(refusals.remove(0).first);
        assert!(
            refusals
                .iter()
                .all(|r| !r.first && r.limit == Limit::Principal)
        );
        assert!(limits.admit_principal("acme", "b").is_ok());
        assert!(limits.admit_principal("beta", "a").is_ok());
    }
}
