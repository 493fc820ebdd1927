//! Detector counts shared by every replica, in Redis, when `FLOWGATE_REDIS_URL` is set: behind a
//! load balancer, twenty failed sign-ins spread over three replicas are twenty, not seven at
//! each, and a signal fires once for all of them (the replica whose count crossed the threshold
//! raises it). The counting is the in-process detectors' ([`super::detect`]) with two
//! differences: a window's periods start on Redis's clock rather than at a subject's first
//! event, and a principal's rate baseline is forgotten after two idle hours.
//!
//! Invariants:
//! - Redis is an addition, never a dependency. Tallies Redis did not count within [`BUDGET`] are
//!   counted by this replica's own detectors, as is every batch for [`RETRY_AFTER`] after a
//!   failure (a Redis that hangs must not back the feed up until batches are dropped); the
//!   failure is logged at most once per [`WARN_EVERY`]. A script that ran but whose answer came
//!   too late has counted: its signal, if it fired, is lost.
//! - Redis's memory is bounded as the detectors' is: at most [`MAX_KEYS`] subjects counted per
//!   tenant, detector and period (a flood of new source addresses is not counted beyond it), and
//!   every key expires.
//! - Signals that fire on one event (an elevation, a broken trail) are raised by the replica
//!   that committed the event and need no count.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use secrecy::SecretString;

use super::detect::{BASELINE_MINUTES, BASELINE_WEIGHT, MAX_KEYS, MAX_NETWORKS, Subject, Tally};
use crate::telemetry::WarnGate;

/// Longest the signals task waits for Redis's count of one chunk.
const BUDGET: Duration = Duration::from_millis(100);
/// How long after a failure the batches are counted here without asking Redis.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Least time between two warnings that Redis could not count.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Tallies counted by one script call: a long batch is cut so that Redis, which runs a script
/// alone, is never held for long.
const CHUNK: usize = 256;
/// How long a principal's rate baseline, and a service account's networks, are kept unused.
const RATE_TTL_MS: u64 = 2 * 60 * 60 * 1000;
const NETWORKS_TTL_MS: u64 = 90 * 24 * 60 * 60 * 1000;

/// Counts each tally named in `KEYS` (one key per tally) with three `ARGV` each: its kind and
/// two parameters. Answers one number per tally: 0, or the count with which it fired.
/// - `w` (a sliding window; window in ms, threshold): the count of the current fixed period and
///   the one before it weighted by how much of it the window still covers; fires once per
///   window (`<key>:fired`, set only if absent, expiring with the window). A subject new in a
///   period takes one of the period's places of its tenant and detector (`<prefix>:keys:<n>`);
///   beyond them it is not counted.
/// - `r` (a rate; factor, minimum): a hash of the minute's start and count, the exponentially
///   weighted baseline of earlier minutes and how many were seen; fires once per minute when the
///   minute's count is at least the minimum and `factor` times the baseline, after
///   [`BASELINE_MINUTES`] minutes.
/// - `n` (a network; the network, the most kept): the networks seen, scored by when first seen
///   (the oldest goes when full, as in the detectors); fires on a network not among them,
///   unless there were none (a first use is no change of network).
///
/// After the tallies' arguments come five more: the baseline's weight and minutes, how long a
/// rate's and a network set's keys are kept, and the places per period. Every key starts with
/// the tenant's hash tag (`flowgate:sig:{<slug>}:<detector>:`), so a batch's keys share one slot.
const COUNT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local n = #ARGV
local weight, baseline_minutes = tonumber(ARGV[n - 4]), tonumber(ARGV[n - 3])
local rate_ttl, networks_ttl, places = ARGV[n - 2], ARGV[n - 1], tonumber(ARGV[n])
local counts = {}
for i, key in ipairs(KEYS) do
  local kind, a, b = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local fired = 0
  if kind == 'w' then
    local window, threshold = tonumber(a), tonumber(b)
    local period = math.floor(now / window)
    local ttl = (period + 2) * window - now
    local current_key = key .. ':' .. period
    local current = redis.call('INCR', current_key)
    local counted = true
    if current == 1 then
      local taken = string.match(key, '^[^}]*}:[^:]*') .. ':keys:' .. period
      local used = redis.call('INCR', taken)
      if used == 1 then redis.call('PEXPIRE', taken, ttl) end
      if used > places then
        redis.call('DEL', current_key)
        counted = false
      else
        redis.call('PEXPIRE', current_key, ttl)
      end
    end
    if counted then
      local previous = tonumber(redis.call('GET', key .. ':' .. (period - 1)) or '0')
      local into = (now - period * window) / window
      local count = math.floor(previous * (1 - into)) + current
      if count >= threshold and redis.call('SET', key .. ':fired', '1', 'NX', 'PX', window) then
        fired = count
      end
    end
  elseif kind == 'r' then
    local factor, minimum = tonumber(a), tonumber(b)
    local state = redis.call('HMGET', key, 'started', 'count', 'baseline', 'seen', 'fired')
    local started = tonumber(state[1]) or now
    local count = tonumber(state[2]) or 0
    local baseline = tonumber(state[3])
    local seen = tonumber(state[4]) or 0
    local fired_minute = tonumber(state[5]) or -1
    local minutes = math.floor((now - started) / 60000)
    if minutes > 0 then
      baseline = baseline and (baseline * (1 - weight) + count * weight) or count
      for _ = 2, math.min(minutes, 120) do baseline = baseline * (1 - weight) end
      seen = seen + minutes
      count = 0
      started = started + minutes * 60000
    end
    count = count + 1
    if seen >= baseline_minutes and count >= minimum
        and count >= math.max(baseline, 1) * factor and fired_minute ~= started then
      fired_minute = started
      fired = count
    end
    redis.call('HSET', key, 'started', started, 'count', count, 'baseline',
      baseline and string.format('%.6f', baseline) or '', 'seen', seen, 'fired', fired_minute)
    redis.call('PEXPIRE', key, rate_ttl)
  elseif kind == 'n' then
    if not redis.call('ZSCORE', key, a) then
      local known = redis.call('ZCARD', key)
      if known >= tonumber(b) then redis.call('ZPOPMIN', key) end
      redis.call('ZADD', key, now, a)
      if known > 0 then fired = 1 end
    end
    redis.call('PEXPIRE', key, networks_ttl)
  end
  counts[i] = fired
end
return counts
";

/// The shared counts: a reconnecting connection and the script.
pub struct SharedCounts {
    connection: ConnectionManager,
    script: redis::Script,
    /// Until when batches are counted here after a failure.
    resting_until: Mutex<Option<Instant>>,
    warnings: WarnGate,
}

impl SharedCounts {
    /// Prepares the connection; it is made at first use and remade after a failure.
    pub fn new(url: &SecretString) -> Result<Self, redis::RedisError> {
        Ok(SharedCounts {
            connection: crate::shared_state::lazy_connection(url, BUDGET)?,
            script: redis::Script::new(COUNT),
            resting_until: Mutex::new(None),
            warnings: WarnGate::new(WARN_EVERY),
        })
    }

    /// Counts the tallies of tenant `slug` for every replica, in order, until Redis fails: one
    /// answer per tally counted (`Some` with its count when it fired). The tallies after the
    /// last answer are the caller's to count; a failure is logged at most once per
    /// [`WARN_EVERY`].
    pub async fn count(&self, slug: &str, tallies: &[Tally]) -> Vec<Option<u64>> {
        let mut counts = Vec::with_capacity(tallies.len());
        let resting = *lock(&self.resting_until);
        if resting.is_some_and(|until| Instant::now() < until) {
            return counts;
        }
        for chunk in tallies.chunks(CHUNK) {
            match self.count_chunk(slug, chunk).await {
                Ok(answers) => counts.extend(answers),
                Err(error) => {
                    self.rest(&error);
                    break;
                }
            }
        }
        counts
    }

    /// Counts one chunk in one script call.
    async fn count_chunk(&self, slug: &str, chunk: &[Tally]) -> Result<Vec<Option<u64>>, String> {
        let mut invocation = self.script.prepare_invoke();
        let mut counted = Vec::with_capacity(chunk.len());
        for tally in chunk {
            let (detector, holder, kind, a, b) = match tally {
                Tally::Window {
                    kind,
                    subject,
                    window,
                    threshold,
                } => (
                    kind.name(),
                    key_of(subject),
                    "w",
                    window.as_millis().max(1).to_string(),
                    threshold.to_string(),
                ),
                Tally::Rate {
                    subject,
                    factor,
                    minimum,
                } => (
                    "request_rate",
                    key_of(subject),
                    "r",
                    factor.to_string(),
                    minimum.to_string(),
                ),
                Tally::Network {
                    subject,
                    credential,
                    network,
                } => (
                    "new_network",
                    Tally::network_holder(subject, credential.as_deref()),
                    "n",
                    network.clone(),
                    MAX_NETWORKS.to_string(),
                ),
                // Fires on the event alone: nothing to count.
                Tally::Event { .. } => {
                    counted.push(false);
                    continue;
                }
            };
            counted.push(true);
            invocation
                .key(format!("flowgate:sig:{{{slug}}}:{detector}:{holder}"))
                .arg(kind)
                .arg(a)
                .arg(b);
        }
        invocation
            .arg(BASELINE_WEIGHT)
            .arg(BASELINE_MINUTES)
            .arg(RATE_TTL_MS)
            .arg(NETWORKS_TTL_MS)
            .arg(MAX_KEYS);
        let mut connection = self.connection.clone();
        let asked = counted.iter().filter(|&&c| c).count();
        let answers = if asked > 0 {
            tokio::time::timeout(BUDGET, invocation.invoke_async::<Vec<u64>>(&mut connection))
                .await
                .map_err(|_| "no answer in time".to_owned())?
                .map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        if answers.len() != asked {
            return Err("a count per tally was not answered".into());
        }
        let mut answers = answers.into_iter();
        Ok(counted
            .into_iter()
            .map(|was_counted| match was_counted {
                false => Some(1),
                true => answers.next().filter(|&count| count > 0),
            })
            .collect())
    }

    /// Rests from Redis for [`RETRY_AFTER`] after `error`, which is logged unless one was lately.
    fn rest(&self, error: &str) {
        *lock(&self.resting_until) = Some(Instant::now() + RETRY_AFTER);
        if self.warnings.due() {
            tracing::warn!(
                error,
                "Redis did not count a batch of signals: this replica counts its own events only"
            );
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// How `subject` is named in a key: `source:<address>` or `<principal type>:<id>`.
fn key_of(subject: &Subject) -> String {
    match subject {
        Subject::Source(ip) => format!("source:{ip}"),
        Subject::Principal { kind, id } => format!("{kind}:{id}"),
    }
}
