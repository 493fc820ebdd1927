//! Chains the checkpoint signer found broken: each is looked at again after a wait that
//! doubles, and each break is reported once.
//!
//! A broken chain is walked from its anchor at every attempt and its anchor no longer moves, so
//! retried at every interval a busy tenant's trail would cost a walk of everything appended
//! since the break, every interval, for as long as nobody repairs it. The report (an
//! `audit.checkpoint` event, which raises the `audit_tamper` signal on a tenant's trail) is
//! made at the first refusal, and again only for a break found earlier in the chain than the
//! one reported: where a walk finds a break can move on with the head (events missing after it
//! are found at the head's next place), and that is the same break.
//!
//! Invariants: a chain waits at most [`MAX_WAIT`] between attempts; an explicit request for a
//! checkpoint does not wait; a break counts as reported only once its report is committed; a
//! chain that is signed, gone or changed is forgotten. Held per process: each replica reports a
//! break once, and again after a restart.

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
    /// The earliest break reported, once its report is committed.
    reported: Option<i64>,
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
    /// the break is to be reported: none was yet, or this one is earlier in the chain.
    pub fn refused(&mut self, trail: &Trail, seq: i64, now: Instant) -> bool {
        let first_wait = self.first_wait;
        let refusal = self.chains.entry(trail.clone()).or_insert(Refusal {
            reported: None,
            wait: Duration::ZERO,
            retry_at: now,
        });
        refusal.wait = (refusal.wait * 2).clamp(first_wait, MAX_WAIT);
        refusal.retry_at = now + refusal.wait;
        refusal.reported.is_none_or(|reported| seq < reported)
    }

    /// Notes that the break of `trail` at `seq` is on record.
    pub fn reported(&mut self, trail: &Trail, seq: i64) {
        if let Some(refusal) = self.chains.get_mut(trail) {
            refusal.reported = Some(refusal.reported.map_or(seq, |r| r.min(seq)));
        }
    }

    /// Forgets `trail`: it was signed, or it is gone or changed.
    pub fn cleared(&mut self, trail: &Trail) {
        self.chains.remove(trail);
    }

    /// Forgets every chain (changes to tenants were missed).
    pub fn clear(&mut self) {
        self.chains.clear();
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
        // Its report did not make it: the next refusal reports it again.
        assert!(refusals.refused(&acme, 7, start + minute));
        refusals.reported(&acme, 7);
        // Refused again, where it was or further on (the head moved): not reported again, and
        // the wait doubles.
        let mut now = start + minute;
        let mut waits = Vec::new();
        for seq in 7..15 {
            let mut wait = Duration::ZERO;
            while !refusals.due(&acme, now + wait) {
                wait += minute;
            }
            waits.push(wait.as_secs() / 60);
            now += wait;
            assert!(!refusals.refused(&acme, seq, now));
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        // A break found earlier is reported; a signed (or forgotten) chain starts over.
        assert!(refusals.refused(&acme, 3, now));
        refusals.cleared(&acme);
        assert!(refusals.due(&acme, now));
        assert!(
            refusals.refused(&acme, 9, now),
            "after a repair, a break is new"
        );
        refusals.clear();
        assert!(refusals.due(&acme, now));
    }
}
