//! Stage 4, rate limits, with `governor`'s GCRA: per source address before authentication, per source
//! address on failed authentications, and per principal and per tenant after authentication.
//!
//! Invariants:
//! - A source address whose failed authentications exceed their budget is refused (429) before
//!   any credential of its is looked up: no database read, no key-store call, no audit row per
//!   attempt. Its first refusal in a block is audited (the trip), the rest are not: repeated
//!   failures cannot turn the audit trail into a write amplifier. Refusals that spend no budget
//!   (no credential presented; a browser request another site started) are recorded up to the
//!   failure budget's number a minute per source block, and answered unrecorded beyond it.
//! - Each process applies every limit on its own ([`local`]); with `FLOWGATE_REDIS_URL` the same
//!   limits are also kept in Redis ([`shared`]), so that the replicas behind a load balancer
//!   allow the configured rate together. Without an answer from Redis, a replica falls back to
//!   its own limits, never to none.
//! - A tenant's rates are the operator's settings for it, else the process's.
//! - Every map here is bounded: idle keys are swept, tenants' buckets and the table of blocked
//!   keys are LRUs.

mod local;
mod shared;

use shared::Use;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use lru::LruCache;
use secrecy::SecretString;

use super::audit::respond_audited;
use super::context::{client_ip, request_meta};
use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, RequestMeta, Trail};
use crate::config::RateLimitSettings;
use crate::http::error::ApiError;
use crate::identity::Principal;
use crate::net::source_block;
use crate::tenancy::{Tenant, TenantRateLimits};

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

/// One limit's rate: `quota` units per `window`, of which `burst` may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rate {
    limit: Limit,
    quota: NonZeroU32,
    window: Duration,
    burst: NonZeroU32,
}

impl Rate {
    /// A per-second rate, with a burst of two seconds' worth.
    fn per_second(limit: Limit, quota: NonZeroU32) -> Self {
        Rate {
            limit,
            quota,
            window: Duration::from_secs(1),
            burst: quota.saturating_mul(NonZeroU32::MIN.saturating_add(1)),
        }
    }

    /// A per-minute budget, all of which may be spent at once.
    fn per_minute(limit: Limit, quota: NonZeroU32) -> Self {
        Rate {
            limit,
            quota,
            window: Duration::from_secs(60),
            burst: quota,
        }
    }

    /// Time between two units at the steady rate.
    fn interval(&self) -> Duration {
        self.window / self.quota.get()
    }

    fn refusal(&self, retry_after: Duration) -> Refusal {
        Refusal {
            limit: self.limit,
            quota: self.quota.get(),
            window: self.window,
            retry_after: retry_after.max(Duration::from_secs(1)),
            first: true,
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

/// Every limit of one process.
pub struct Limits {
    source_rate: Rate,
    failures_rate: Rate,
    principal_rate: Rate,
    tenant_rate: Rate,
    sources: local::Sources,
    failures: local::Sources,
    /// Refusals that spend no failure budget, recorded per source block at the failures' rate.
    unspent: local::Sources,
    tenants: local::Tenants,
    shared: Option<shared::Shared>,
    /// Keys refused until an instant: answered without consulting anything else.
    blocked: Mutex<LruCache<Blocked, (Instant, Refusal)>>,
}

impl Limits {
    /// The limits of `settings`, shared with the other replicas through Redis at `redis_url`.
    pub fn new(
        settings: &RateLimitSettings,
        redis_url: Option<&SecretString>,
    ) -> anyhow::Result<Self> {
        let capacity =
            std::num::NonZeroUsize::new(MAX_BLOCKED).unwrap_or(std::num::NonZeroUsize::MIN);
        let source_rate = Rate::per_second(Limit::Source, settings.source_per_second);
        let failures_rate = Rate::per_minute(Limit::Failures, settings.failures_per_minute);
        let shared = redis_url
            .map(shared::Shared::new)
            .transpose()
            .map_err(|e| anyhow::anyhow!("FLOWGATE_REDIS_URL: {e}"))?;
        Ok(Limits {
            sources: local::Sources::new(&source_rate),
            failures: local::Sources::new(&failures_rate),
            unspent: local::Sources::new(&failures_rate),
            tenants: local::Tenants::new(),
            source_rate,
            failures_rate,
            principal_rate: Rate::per_second(Limit::Principal, settings.principal_per_second),
            tenant_rate: Rate::per_second(Limit::Tenant, settings.tenant_per_second),
            shared,
            blocked: Mutex::new(LruCache::new(capacity)),
        })
    }

    /// Admits a request from `source` (counted with the rest of its block, [`source_block`])
    /// before its credential is looked at.
    pub async fn admit_source(&self, source: IpAddr) -> Result<(), Refusal> {
        let source = source_block(source);
        let key = Blocked::Source(source);
        self.still_blocked(&key)?;
        if let Err(wait) = self.sources.take(&source) {
            return Err(self.block(key, self.source_rate.refusal(wait)));
        }
        // A failure budget another replica saw spent blocks this one's requests too.
        let source_key = source.to_string();
        self.take_shared(
            &[
                (source_key.clone(), self.source_rate, Use::Take),
                (source_key, self.failures_rate, Use::Peek),
            ],
            |_| key,
        )
        .await
    }

    /// Counts a failed authentication from `source` (with the rest of its block); when the
    /// budget is spent, the block is refused until the budget refills, and the trip is returned
    /// (to be audited once).
    pub async fn failed(&self, source: IpAddr) -> Option<Refusal> {
        let source = source_block(source);
        let key = Blocked::Source(source);
        if let Err(wait) = self.failures.take(&source) {
            return Some(self.block(key, self.failures_rate.refusal(wait)));
        }
        self.take_shared(
            &[(source.to_string(), self.failures_rate, Use::Take)],
            |_| key,
        )
        .await
        .err()
    }

    /// Whether a refusal from `source` that spends no failure budget (no credential was
    /// presented, or a browser says another site started the request) is still recorded in the
    /// audit trail: as many a minute per source block, on this replica, as the failure budget
    /// allows. Beyond that it is answered alike but not recorded, so that no one can turn the
    /// trail into a write amplifier without spending a budget. Blocks nobody.
    pub fn records_unspent(&self, source: IpAddr) -> bool {
        self.unspent.take(&source_block(source)).is_ok()
    }

    /// Admits a request of `principal` in `tenant`, after authentication, at the tenant's own
    /// rates where its operator set them.
    pub async fn admit_principal(
        &self,
        tenant: &str,
        own: TenantRateLimits,
        principal: &str,
    ) -> Result<(), Refusal> {
        let tenant_key = Blocked::Tenant(tenant.to_owned());
        self.still_blocked(&tenant_key)?;
        let principal_key = Blocked::Principal(tenant.to_owned(), principal.to_owned());
        self.still_blocked(&principal_key)?;
        let principal_rate = own.principal_per_second.map_or(self.principal_rate, |q| {
            Rate::per_second(Limit::Principal, q)
        });
        let tenant_rate = own
            .tenant_per_second
            .map_or(self.tenant_rate, |q| Rate::per_second(Limit::Tenant, q));
        let buckets = self.tenants.get(tenant, principal_rate, tenant_rate);
        if let Err((rate, wait)) = buckets.take(principal) {
            let key = if rate.limit == Limit::Tenant {
                tenant_key
            } else {
                principal_key
            };
            return Err(self.block(key, rate.refusal(wait)));
        }
        self.take_shared(
            &[
                (tenant.to_owned(), tenant_rate, Use::Take),
                (format!("{tenant}:{principal}"), principal_rate, Use::Take),
            ],
            |refused| {
                if refused == 0 {
                    tenant_key
                } else {
                    principal_key
                }
            },
        )
        .await
    }

    /// Takes from the shared buckets when there are any; a refusal blocks the key `blocked`
    /// names for the refusing bucket's index.
    async fn take_shared(
        &self,
        buckets: &[(String, Rate, Use)],
        blocked: impl FnOnce(usize) -> Blocked,
    ) -> Result<(), Refusal> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        match shared.take(buckets).await {
            None => Ok(()),
            Some((index, wait)) => {
                let rate = buckets
                    .get(index)
                    .map_or(self.tenant_rate, |(_, rate, _)| *rate);
                Err(self.block(blocked(index), rate.refusal(wait)))
            }
        }
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
    let event = AuditEvent::new(meta, "rate_limit.trip", "platform")
        .outcome(Outcome::Deny, 429)
        .detail("limit", refusal.limit.name())
        .detail("quota", refusal.quota)
        .detail("window_seconds", refusal.window.as_secs())
        .detail("retry_after_seconds", refusal.retry_after.as_secs());
    // A source's limits hold its whole block (an IPv6 /64), which the trip names.
    let block = matches!(refusal.limit, Limit::Source | Limit::Failures)
        .then(|| meta.source_ip.as_deref()?.parse().ok())
        .flatten()
        .map(crate::net::source_block_text);
    match block {
        Some(block) => event.detail("source_block", block),
        None => event,
    }
}

/// Records a trip in `trail` beside the request's own event; a trip that cannot be written is
/// logged (the request it rode on is answered either way, as it was already decided).
pub async fn record_trip(state: &AppState, trail: impl Into<Trail>, event: AuditEvent) {
    if let Err(e) = state.audit.record(trail, event).await {
        tracing::warn!(error = %e, "a rate-limit trip could not be audited");
    }
}

/// The limit of the request's source address, checked before anything else: an address over
/// its rate, or whose failed authentications are spent, is answered 429 at once (the first
/// refusal of a block audited in the platform trail). Health probes are not limited.
pub async fn admit_source(
    state: &AppState,
    req: ServiceRequest,
) -> Result<ServiceRequest, ServiceResponse<BoxBody>> {
    let probe = matches!(req.path(), "/healthz" | "/readyz");
    let Some(source) = client_ip(req.request()).filter(|_| !probe) else {
        return Ok(req);
    };
    match state.limits.admit_source(source).await {
        Ok(()) => Ok(req),
        Err(refusal) => Err(refuse(state, Trail::Platform, req, &refusal, None).await),
    }
}

/// The limits of an authenticated principal and of its tenant, at the tenant's own rates where
/// its operator set them.
pub async fn admit_principal(
    state: &AppState,
    tenant: &Tenant,
    principal: &Principal,
    req: ServiceRequest,
) -> Result<ServiceRequest, ServiceResponse<BoxBody>> {
    let admitted = state
        .limits
        .admit_principal(
            tenant.slug.as_str(),
            tenant.rate_limits,
            &principal.actor_id(),
        )
        .await;
    match admitted {
        Ok(()) => Ok(req),
        Err(refusal) => Err(refuse(state, &tenant.slug, req, &refusal, Some(principal)).await),
    }
}

/// Answers 429 for `refusal`, recording the trip in `trail` when it is the first of its block.
async fn refuse(
    state: &AppState,
    trail: impl Into<Trail>,
    req: ServiceRequest,
    refusal: &Refusal,
    principal: Option<&Principal>,
) -> ServiceResponse<BoxBody> {
    crate::telemetry::metrics().observe_rate_limited(refusal.limit.name());
    let meta = request_meta(req.request());
    let res = req.error_response(ApiError::rate_limited(refusal));
    if !refusal.first {
        return res;
    }
    let mut event = trip_event(&meta, refusal);
    if let Some(principal) = principal {
        event = crate::tenancy::work::acted_by(event, principal);
    }
    respond_audited(state, trail, event, res).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn limits(failures: u32) -> Limits {
        Limits::new(
            &RateLimitSettings {
                source_per_second: n(1000),
                failures_per_minute: n(failures),
                principal_per_second: n(2),
                tenant_per_second: n(1000),
            },
            None,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn an_address_whose_failures_are_spent_is_refused_before_anything_else() {
        let limits = limits(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limits.failed(ip).await.is_none());
        }
        let trip = limits.failed(ip).await.unwrap();
        assert!(trip.first && trip.limit == Limit::Failures);
        let refused = limits.admit_source(ip).await.unwrap_err();
        assert!(!refused.first, "only the trip is audited");
        assert!(refused.retry_after >= Duration::from_secs(1));
        assert!(
            limits.admit_source(other).await.is_ok(),
            "another address is not affected"
        );
    }

    #[tokio::test]
    async fn the_addresses_of_one_ipv6_64_share_one_failure_budget() {
        let limits = limits(3);
        for host in 1..=3 {
            let ip: IpAddr = format!("2001:db8:7:7::{host:x}").parse().unwrap();
            assert!(limits.failed(ip).await.is_none());
        }
        let rotated: IpAddr = "2001:db8:7:7:ffff::9".parse().unwrap();
        let trip = limits
            .failed(rotated)
            .await
            .expect("a fourth address of the /64");
        let meta = RequestMeta {
            source_ip: Some(rotated.to_string()),
            ..RequestMeta::default()
        };
        let recorded = trip_event(&meta, &trip);
        assert_eq!(recorded.details["source_block"], "2001:db8:7:7::/64");
        assert!(limits.admit_source(rotated).await.is_err());
        let neighbour: IpAddr = "2001:db8:7:8::1".parse().unwrap();
        assert!(
            limits.admit_source(neighbour).await.is_ok(),
            "the next /64 is not"
        );
    }

    async fn refusals(
        limits: &Limits,
        tenant: &str,
        own: TenantRateLimits,
        n: usize,
    ) -> Vec<Refusal> {
        let mut refused = Vec::new();
        for _ in 0..n {
            if let Err(r) = limits.admit_principal(tenant, own, "a").await {
                refused.push(r);
            }
        }
        refused
    }

    #[tokio::test]
    async fn a_principal_over_its_rate_is_refused_and_others_are_not() {
        let limits = limits(10);
        let mut refused = refusals(&limits, "acme", TenantRateLimits::default(), 10).await;
        assert!(!refused.is_empty());
        assert!(refused.remove(0).first);
        assert!(
            refused
                .iter()
                .all(|r| !r.first && r.limit == Limit::Principal)
        );
        let default = TenantRateLimits::default();
        assert!(limits.admit_principal("acme", default, "b").await.is_ok());
        assert!(limits.admit_principal("beta", default, "a").await.is_ok());
    }

    #[tokio::test]
    async fn a_tenant_s_own_rates_replace_the_process_ones() {
        let limits = limits(10);
        let roomy = TenantRateLimits {
            principal_per_second: Some(n(1000)),
            tenant_per_second: None,
        };
        assert!(refusals(&limits, "roomy", roomy, 50).await.is_empty());
        let tight = TenantRateLimits {
            principal_per_second: None,
            tenant_per_second: Some(n(1)),
        };
        let refused = refusals(&limits, "tight", tight, 5).await;
        assert_eq!(refused.len(), 3, "a burst of two, then refused");
        assert!(
            refused
                .iter()
                .all(|r| r.limit == Limit::Tenant && r.quota == 1)
        );
    }
}
