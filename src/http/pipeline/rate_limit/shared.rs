//! Buckets shared by every replica, in Redis: the same GCRA as `governor`'s, run by one script
//! on Redis's clock, so that N replicas together allow the configured rate rather than N times
//! it.
//!
//! Invariant: Redis is an addition, never a dependency of serving. A check that Redis cannot
//! answer within [`BUDGET`] admits the request (the process's own limits, applied before, still
//! hold) and is logged at most once per [`WARN_EVERY`].

use std::time::Duration;

use redis::aio::ConnectionManager;
use secrecy::SecretString;

use super::Rate;
use crate::telemetry::WarnGate;

/// Longest a request waits for Redis's answer.
const BUDGET: Duration = Duration::from_millis(100);

/// Least time between two warnings that Redis could not be asked.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Prefix of every key Flowgate writes.
const PREFIX: &str = "flowgate:rl";

/// Takes one unit from each bucket named in `KEYS`, all or none, or only looks whether one
/// could be taken. `ARGV` holds, per key, its emission interval, its burst and `1` to take or
/// `0` to look; a bucket's state is its theoretical arrival time in microseconds of Redis's
/// clock, expiring once it is in the past. Answers `{0, 0}` when admitted, or `{i, µs}`:
/// bucket `i` (from 1) refused, and for how long.
const GCRA: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local next_arrival = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local allowed_at = tat + interval - interval * burst
  if allowed_at > now then
    return {i, allowed_at - now}
  end
  if ARGV[3 * i] == '1' then next_arrival[i] = tat + interval end
end
for i, key in ipairs(KEYS) do
  if next_arrival[i] then
    local ttl = math.ceil((next_arrival[i] - now) / 1000) + 1
    redis.call('SET', key, string.format('%.0f', next_arrival[i]), 'PX', ttl)
  end
end
return {0, 0}
";

/// What a check does to a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Use {
    /// Takes a unit.
    Take,
    /// Only looks whether a unit could be taken (a spent failure budget blocks all requests).
    Peek,
}

/// The shared buckets: a reconnecting connection and the script.
pub(super) struct Shared {
    connection: ConnectionManager,
    script: redis::Script,
    warnings: WarnGate,
}

impl Shared {
    /// Prepares the connection; it is made at first use and remade after a failure.
    pub(super) fn new(url: &SecretString) -> Result<Self, redis::RedisError> {
        Ok(Shared {
            connection: crate::shared_state::lazy_connection(url, BUDGET)?,
            script: redis::Script::new(GCRA),
            warnings: WarnGate::new(WARN_EVERY),
        })
    }

    /// Takes one unit from each of `buckets` (a key, its rate, and whether to take or only
    /// look), all or none: `Some` names the bucket that refused, by index, and how long until
    /// it admits again.
    pub(super) async fn take(&self, buckets: &[(String, Rate, Use)]) -> Option<(usize, Duration)> {
        let mut invocation = self.script.prepare_invoke();
        for (key, rate, usage) in buckets {
            let interval = u64::try_from(rate.interval().as_micros()).unwrap_or(u64::MAX);
            invocation
                .key(format!("{PREFIX}:{}:{key}", rate.limit.name()))
                .arg(interval.max(1))
                .arg(rate.burst.get())
                .arg(u8::from(*usage == Use::Take));
        }
        let mut connection = self.connection.clone();
        let answer = tokio::time::timeout(
            BUDGET,
            invocation.invoke_async::<(usize, u64)>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok((0, _))) => None,
            Ok(Ok((refused, micros))) => {
                Some((refused.saturating_sub(1), Duration::from_micros(micros)))
            }
            Ok(Err(e)) => {
                self.warn(&e.to_string());
                None
            }
            Err(_) => {
                self.warn("no answer in time");
                None
            }
        }
    }

    fn warn(&self, error: &str) {
        if self.warnings.due() {
            tracing::warn!(
                error,
                "Redis did not answer a rate-limit check: this replica applies its own limits only"
            );
        }
    }
}
