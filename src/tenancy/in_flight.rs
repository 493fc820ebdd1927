//! The requests under way for each tenant in this process, so that deleting a tenant can wait
//! for those that found it live before it was marked as being deleted: their key-store writes
//! (a secret's value, a key made on first use) must land before the tenant's keys are destroyed,
//! not after, where nothing would ever destroy them.
//!
//! Invariant: a request enters before it reads the tenant's status and stays until its response
//! is made, so once a deletion has marked the tenant (and this process's cached record is
//! forgotten), every request of this process that can still act on the tenant is counted.
//! Background work (the audit signer, alert deliveries) is not: it stops with the tenant's
//! storage, and a new tenant of the same slug starts by clearing the key store's leftovers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::Slug;

/// Counts of requests under way, per tenant slug.
#[derive(Default)]
pub struct InFlight {
    counts: Mutex<HashMap<String, usize>>,
    /// Woken whenever a tenant's count reaches zero.
    settled: Notify,
}

/// One request's presence in a tenant; leaving is dropping it.
pub struct Visit {
    in_flight: Arc<InFlight>,
    slug: Slug,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // Every change is one map operation: a panic elsewhere cannot leave it half-made.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request under way for `slug` until the visit is dropped.
    pub fn enter(self: &Arc<Self>, slug: &Slug) -> Visit {
        let mut counts = self.lock();
        match counts.get_mut(slug.as_str()) {
            Some(count) => *count += 1,
            None => {
                counts.insert(slug.to_string(), 1);
            }
        }
        Visit {
            in_flight: Arc::clone(self),
            slug: slug.clone(),
        }
    }

    fn count(&self, slug: &Slug) -> usize {
        self.lock().get(slug.as_str()).copied().unwrap_or(0)
    }

    /// Waits until no request is under way for `slug`, for at most `timeout`; how many are
    /// still under way then.
    pub async fn settle(&self, slug: &Slug, timeout: Duration) -> usize {
        let settled = async {
            loop {
                let woken = self.settled.notified();
                tokio::pin!(woken);
                // Registered before the count is read: a visit ending in between wakes it.
                woken.as_mut().enable();
                if self.count(slug) == 0 {
                    return;
                }
                woken.await;
            }
        };
        match tokio::time::timeout(timeout, settled).await {
            Ok(()) => 0,
            Err(_) => self.count(slug),
        }
    }
}

impl Drop for Visit {
    fn drop(&mut self) {
        let mut counts = self.in_flight.lock();
        let Some(count) = counts.get_mut(self.slug.as_str()) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            counts.remove(self.slug.as_str());
            drop(counts);
            self.in_flight.settled.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settling_waits_for_the_tenants_visits_only() {
        let in_flight = Arc::new(InFlight::default());
        let (a, b) = (Slug::parse("acme").unwrap(), Slug::parse("beta").unwrap());
        let first = in_flight.enter(&a);
        let second = in_flight.enter(&a);
        let _other = in_flight.enter(&b);
        let short = Duration::from_millis(20);
        assert_eq!(in_flight.settle(&a, short).await, 2);
        drop(first);
        assert_eq!(in_flight.settle(&a, short).await, 1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(second);
        });
        assert_eq!(in_flight.settle(&a, Duration::from_secs(5)).await, 0);
        assert_eq!(in_flight.count(&a), 0);
        assert_eq!(
            in_flight.settle(&b, short).await,
            1,
            "another tenant's visit"
        );
    }
}
