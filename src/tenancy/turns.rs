//! One turn at a time per key (a tenant, a trail): callers with the same key wait for each
//! other, callers with different keys never do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OwnedMutexGuard;

/// The turns under way, by key.
///
/// Invariant: the map holds a key exactly while some caller holds or waits for its turn; the
/// last one out removes it, so the map is bounded by the callers under way.
#[derive(Default)]
pub struct Turns {
    under_way: Mutex<HashMap<String, Queue>>,
}

/// One key's lock and how many callers hold or wait for it.
#[derive(Default)]
struct Queue {
    lock: Arc<tokio::sync::Mutex<()>>,
    callers: usize,
}

/// A turn of one key, given back when dropped.
pub struct Turn<'a> {
    turns: &'a Turns,
    key: String,
    held: Option<OwnedMutexGuard<()>>,
}

impl Turns {
    /// Waits for `key`'s turn.
    pub async fn take(&self, key: &str) -> Turn<'_> {
        let lock = {
            let mut under_way = self.lock();
            let queue = under_way.entry(key.to_owned()).or_default();
            queue.callers += 1;
            Arc::clone(&queue.lock)
        };
        // Counted from here: dropping this wait, or the turn, counts it out.
        let mut turn = Turn {
            turns: self,
            key: key.to_owned(),
            held: None,
        };
        turn.held = Some(lock.lock_owned().await);
        turn
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Queue>> {
        // An insert or a removal; a panic elsewhere cannot leave the map half-changed.
        self.under_way.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.held = None;
        let mut under_way = self.turns.lock();
        if let Some(queue) = under_way.get_mut(&self.key) {
            queue.callers -= 1;
            if queue.callers == 0 {
                under_way.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_key_waits_for_its_turn_and_others_do_not() {
        let turns = Turns::default();
        let first = turns.take("a").await;
        let other = turns.take("b").await;
        let second = turns.take("a");
        tokio::pin!(second);
        assert!(
            futures_util::poll!(second.as_mut()).is_pending(),
            "the same key waits"
        );
        drop(first);
        let second = second.await;
        drop((second, other));
        assert!(turns.lock().is_empty(), "the last one out removes its key");
    }

    #[tokio::test]
    async fn a_wait_given_up_leaves_nothing_behind() {
        let turns = Turns::default();
        let first = turns.take("a").await;
        {
            let waiting = turns.take("a");
            tokio::pin!(waiting);
            assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        }
        drop(first);
        assert!(turns.lock().is_empty());
    }
}
