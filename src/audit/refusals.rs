//! Chains the checkpoint signer found broken: each is looked at again after a wait that
//! doubles, and each break is reported once.
//!
//! A broken chain is walked from its anchor at every attempt and its anchor no longer moves, so
//! retried at every interval a busy tenant's trail would cost a walk of everything appended
//! since the break, every interval, for as long as nobody repairs it. The report (an
//! `audit.checkpoint` event, which raises the `audit_tamper` signal) is made at the first
//! refusal of a break and again only when the break is found somewhere else.
//!
//! Invariants: a chain waits at most [`MAX_WAIT`] between attempts; an explicit request for a
//! checkpoint does not wait; a chain that is signed (or gone) is forgotten. Held per process,
//! so each replica reports a break once; bounded by the chains ever refused since it started.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::trail::Trail;

/// The longest a broken chain waits before it is walked again.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Where a chain is broken, as the signer found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The first event that does not continue what the anchor signed (0: the anchor itself).
    pub seq: i64,
    pub problem: String,
}

struct Refusal {
    seq: i64,
    wait: Duration,
    retry_at: Instant,
}

/// The chains refused, with when each is tried again.
pub struct Refusals {
    chains: HashMap<Trail, Refusal>,
    /// The first wait after a refusal: the signer's interval.
    first_wait: Duration,
}

impl Refusals {
    pub fn new(first_wait: Duration) -> Self {
        Refusals {
            chains: HashMap::new(),
            first_wait: first_wait.min(MAX_WAIT),
        }
    }

    /// Whether `trail` may be walked at `now`: it was not refused, or its wait is over.
    pub fn due(&self, trail: &Trail, now: Instant) -> bool {
        self.chains.get(trail).is_none_or(|r| now >= r.retry_at)
    }

    /// Notes that `trail` was refused at `now`, broken at `seq`, and doubles its wait; whether
    /// this break is new (not the one refused last time), and so to be reported.
    pub fn refused(&mut self, trail: &Trail, seq: i64, now: Instant) -> bool {
        match self.chains.get_mut(trail) {
            Some(refusal) => {
                refusal.wait = (refusal.wait * 2).min(MAX_WAIT);
                refusal.retry_at = now + refusal.wait;
                std::mem::replace(&mut refusal.seq, seq) != seq
            }
            None => {
                let wait = self.first_wait;
                self.chains.insert(
                    trail.clone(),
                    Refusal {
                        seq,
                        wait,
                        retry_at: now + wait,
                    },
                );
                true
            }
        }
    }

    /// Forgets `trail`: it was signed, or it is gone.
    pub fn cleared(&mut self, trail: &Trail) {
        self.chains.remove(trail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::Slug;

    fn trail(slug: &str) -> Trail {
        Trail::from(&Slug::parse(slug).unwrap())
    }

    #[test]
    fn a_refused_chain_waits_twice_as_long_each_time_up_to_the_cap() {
        let minute = Duration::from_secs(60);
        let mut refusals = Refusals::new(minute);
        let (acme, other) = (trail("acme"), trail("other"));
        let start = Instant::now();
        assert!(refusals.due(&acme, start));
        assert!(refusals.refused(&acme, 7, start), "a new break is reported");
        assert!(!refusals.due(&acme, start + minute - Duration::from_secs(1)));
        assert!(refusals.due(&acme, start + minute));
        assert!(
            refusals.due(&other, start),
            "other chains are not held back"
        );
        // Refused again where it was: not reported again, and the wait doubles.
        let mut now = start + minute;
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(!refusals.refused(&acme, 7, now));
            let mut wait = Duration::ZERO;
            while !refusals.due(&acme, now + wait) {
                wait += minute;
            }
            waits.push(wait.as_secs() / 60);
            now += wait;
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        // A break found elsewhere is reported; a signed chain starts over.
        assert!(refusals.refused(&acme, 9, now));
        refusals.cleared(&acme);
        assert!(refusals.due(&acme, now));
        assert!(
            refusals.refused(&acme, 9, now),
            "after a repair, a break is new"
        );
    }
}
