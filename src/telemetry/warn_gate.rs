//! A warning repeated by every failure of a dependency (Redis, an OTLP collector) is logged at
//! most once per interval: a dependency that is down must not flood the log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Says when a repeated warning is due: the first time, then once `every` has passed since it
/// was last due.
#[derive(Debug)]
pub struct WarnGate {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl WarnGate {
    pub const fn new(every: Duration) -> Self {
        WarnGate {
            every,
            last: Mutex::new(None),
        }
    }

    /// Whether the warning is due now; if it is, the next is due `every` from now.
    pub fn due(&self) -> bool {
        // A plain timestamp: a panic elsewhere cannot leave it half-updated.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < self.every) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_due_first_and_then_once_per_interval() {
        // An interval no scheduler delay between two calls comes near.
        let gate = WarnGate::new(Duration::from_secs(1));
        assert!(gate.due());
        assert!(!gate.due());
        std::thread::sleep(Duration::from_millis(1_050));
        assert!(gate.due());
        assert!(!gate.due());
    }
}
