//! The detectors: pure functions of what the audit trail says, one tenant at a time.
//!
//! Invariant: the state is bounded — at most [`MAX_KEYS`] counted keys per tenant and detector
//! (the least recently seen are forgotten first), each in constant memory, allocated only as
//! keys appear — so a flood of new source addresses or principals cannot grow memory.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::config::AlertingConfig;

/// Counted keys remembered per tenant and detector.
pub const MAX_KEYS: usize = 4096;
/// Networks remembered per principal for [`SignalKind::NewNetwork`].
pub const MAX_NETWORKS: usize = 16;

/// What a committed audit event tells the detectors.
#[derive(Debug, Clone)]
pub struct Observation {
    pub action: String,
    pub status: i32,
    pub actor_type: String,
    pub actor_id: String,
    pub source_ip: Option<String>,
    /// Which credential of a service account acted (an API key's, an OAuth client's or a
    /// trust's id), when the event says.
    pub credential: Option<String>,
    /// How the event gave more access, if it did.
    pub elevation: Option<Elevation>,
    /// An audit verification found the chain broken.
    pub tamper: bool,
    /// What an alerting change loosened, if it did (a field of the configuration).
    pub loosened: Option<String>,
}

/// How a change gave more access: what the elevation detector fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elevation {
    /// A binding of a role holding every action (Admin, or a custom role as wide).
    EverythingGranted,
    /// A claim-based policy that permits, written.
    PermitWritten,
    /// A forbid changed or deleted.
    ForbidLifted,
    /// A custom role given actions it did not hold (everyone bound to it gains them).
    RoleWidened,
}

impl Elevation {
    fn describe(self) -> &'static str {
        match self {
            Elevation::EverythingGranted => {
                "a grant of every action (the Admin role or one as wide)"
            }
            Elevation::PermitWritten => "a policy that permits more",
            Elevation::ForbidLifted => "a forbid changed or deleted",
            Elevation::RoleWidened => "a role given more actions",
        }
    }
}

/// The kinds of signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalKind {
    /// Failed sign-ins or credential checks from one source address, or against one principal.
    FailedLogins,
    /// A principal reads secret values far more than usual.
    SecretReads,
    /// A principal's request rate far above its own baseline.
    RequestRate,
    /// A grant of Admin, or a policy that permits more.
    Elevation,
    /// A service account's credential used from a network it was never used from.
    NewNetwork,
    /// Verifying the audit trail found an event edited, deleted or reordered.
    AuditTamper,
    /// A person loosened the tenant's alerting (switched a detector off, raised a threshold,
    /// took a response off, moved or silenced the webhook). Always on: switching it off would
    /// itself be a loosening.
    AlertingLoosened,
}

impl SignalKind {
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::FailedLogins => "failed_logins",
            SignalKind::SecretReads => "secret_reads",
            SignalKind::RequestRate => "request_rate",
            SignalKind::Elevation => "elevation",
            SignalKind::NewNetwork => "new_network",
            SignalKind::AuditTamper => "audit_tamper",
            SignalKind::AlertingLoosened => "alerting_loosened",
        }
    }
}

/// Who or what a signal is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A source address, or the block it counts with (`<prefix>::/64`).
    Source(String),
    Principal {
        kind: String,
        id: String,
    },
}

impl Subject {
    /// The source address, when the subject is one address (not a block, not a principal).
    pub fn address(&self) -> Option<&str> {
        match self {
            Subject::Source(ip) if ip.parse::<IpAddr>().is_ok() => Some(ip),
            _ => None,
        }
    }
}

/// A signal that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub kind: SignalKind,
    pub subject: Subject,
    /// How many events made it fire (in the window), or 1.
    pub count: u64,
    /// What the tenant set it to fire at.
    pub threshold: u64,
    /// What it was about, in words (never a value from a request body).
    pub summary: String,
}

/// Events of one key in a sliding window, counted in constant memory: the count of the current
/// period and of the one before, weighted by how much of it the window still covers.
#[derive(Debug)]
struct Window {
    period_started: Instant,
    current: u64,
    previous: u64,
    /// Fired at: a key fires once per window.
    fired: Option<Instant>,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            period_started: now,
            current: 0,
            previous: 0,
            fired: None,
        }
    }

    /// Adds an event at `now`; returns the count within `window` if it reaches `threshold` and
    /// this key has not fired in the last `window`.
    fn add(&mut self, now: Instant, window: Duration, threshold: u64) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.period_started);
        if elapsed >= window * 2 {
            (self.previous, self.current, self.period_started) = (0, 0, now);
        } else if elapsed >= window {
            (self.previous, self.current) = (self.current, 0);
            self.period_started += window;
        }
        self.current += 1;
        let into = now
            .saturating_duration_since(self.period_started)
            .as_secs_f64()
            / window.as_secs_f64().max(f64::MIN_POSITIVE);
        let count = (self.previous as f64 * (1.0 - into)).floor() as u64 + self.current;
        let quiet = self
            .fired
            .is_none_or(|t| now.saturating_duration_since(t) > window);
        (count >= threshold && quiet).then(|| {
            self.fired = Some(now);
            count
        })
    }
}

/// The entry of `key` in `cache`, made by `make` when new. The least recently seen entry goes
/// once [`MAX_KEYS`] are held (an unbounded `LruCache` grows as it fills, where a bounded one
/// reserves its whole capacity for every tenant up front).
fn entry<K: std::hash::Hash + Eq, V>(
    cache: &mut LruCache<K, V>,
    key: K,
    make: impl FnOnce() -> V,
) -> &mut V {
    if !cache.contains(&key) && cache.len() >= MAX_KEYS {
        cache.pop_lru();
    }
    cache.get_or_insert_mut(key, make)
}

/// A principal's requests per minute: the current minute and an average of the earlier ones.
#[derive(Debug)]
struct Rate {
    minute_started: Instant,
    this_minute: u64,
    /// Exponentially weighted average of earlier minutes; `None` before the first full minute.
    baseline: Option<f64>,
    minutes_seen: u32,
    fired_minute: Option<Instant>,
}

/// Minutes of history before a principal's baseline counts.
pub const BASELINE_MINUTES: u32 = 3;
/// Weight of the newest minute in the baseline.
pub const BASELINE_WEIGHT: f64 = 0.3;

impl Rate {
    fn new(now: Instant) -> Self {
        Rate {
            minute_started: now,
            this_minute: 0,
            baseline: None,
            minutes_seen: 0,
            fired_minute: None,
        }
    }

    /// Counts a request at `now`; returns the minute's count when it is `factor` times the
    /// baseline and at least `minimum`.
    fn add(&mut self, now: Instant, factor: u64, minimum: u64) -> Option<u64> {
        let minute = Duration::from_secs(60);
        while now - self.minute_started >= minute {
            let finished = self.this_minute as f64;
            self.baseline = Some(match self.baseline {
                Some(b) => b * (1.0 - BASELINE_WEIGHT) + finished * BASELINE_WEIGHT,
                None => finished,
            });
            self.minutes_seen = self.minutes_seen.saturating_add(1);
            self.this_minute = 0;
            self.minute_started += minute;
        }
        self.this_minute += 1;
        let baseline = self
            .baseline
            .filter(|_| self.minutes_seen >= BASELINE_MINUTES)?;
        let above = self.this_minute >= minimum
            && self.this_minute as f64 >= baseline.max(1.0) * factor as f64;
        let quiet = self.fired_minute != Some(self.minute_started);
        (above && quiet).then(|| {
            self.fired_minute = Some(self.minute_started);
            self.this_minute
        })
    }
}

/// What one observation asks of the counters: each tally is counted (in this process by
/// [`Detectors`], or in Redis for every replica at once by [`super::shared`]) and may fire.
#[derive(Debug, Clone, PartialEq)]
pub enum Tally {
    /// An event of `subject` in a sliding window; fires at `threshold`, once per window.
    Window {
        kind: SignalKind,
        subject: Subject,
        window: Duration,
        threshold: u64,
    },
    /// A request of `subject`, against its own per-minute baseline.
    Rate {
        subject: Subject,
        factor: u64,
        minimum: u64,
    },
    /// A service account's credential used from `network`; fires when that credential (or,
    /// for an event that does not name it, the account) was used before, from other networks
    /// only.
    Network {
        subject: Subject,
        credential: Option<String>,
        network: String,
    },
    /// Fires on this event alone.
    Event {
        kind: SignalKind,
        subject: Subject,
        what: String,
    },
}

impl Tally {
    /// Whose networks a network tally counts: the credential's, else the principal's.
    pub fn network_holder(subject: &Subject, credential: Option<&str>) -> String {
        match (credential, subject) {
            (Some(id), _) => format!("credential:{id}"),
            (None, Subject::Principal { kind, id }) => format!("{kind}:{id}"),
            (None, Subject::Source(ip)) => format!("source:{ip}"),
        }
    }

    /// The signal this tally raises when counting it gave `count` (how many events made it
    /// fire, or 1).
    pub fn signal(self, count: u64) -> Signal {
        match self {
            Tally::Window {
                kind,
                subject,
                window,
                threshold,
            } => {
                let seconds = window.as_secs();
                let summary = match kind {
                    SignalKind::SecretReads => {
                        format!("{count} secret values read within {seconds} s")
                    }
                    _ => format!("{count} failed sign-ins or credential checks within {seconds} s"),
                };
                Signal {
                    kind,
                    subject,
                    count,
                    threshold,
                    summary,
                }
            }
            Tally::Rate {
                subject,
                factor,
                minimum,
            } => Signal {
                kind: SignalKind::RequestRate,
                subject,
                count,
                threshold: minimum,
                summary: format!(
                    "{count} requests this minute, over {factor}× the principal's usual rate"
                ),
            },
            Tally::Network {
                subject,
                credential,
                network,
            } => Signal {
                kind: SignalKind::NewNetwork,
                subject,
                count: 1,
                threshold: 1,
                summary: match credential {
                    Some(id) => format!("credential {id} used from the new network {network}"),
                    None => format!("credential used from the new network {network}"),
                },
            },
            Tally::Event {
                kind,
                subject,
                what,
            } => Signal {
                kind,
                subject,
                count: 1,
                threshold: 1,
                summary: what,
            },
        }
    }
}

/// Whether `action` is a sign-in or a credential check.
fn is_login(action: &str) -> bool {
    matches!(
        action,
        "auth.login"
            | "auth.token"
            | "auth.authenticate"
            | "auth.webauthn_authenticate"
            | "auth.break_glass_login"
    )
}

/// The network an address belongs to for [`SignalKind::NewNetwork`]: its /24, or its source
/// block's /64 (an IPv4-mapped caller of a dual-stack listener is its IPv4 address).
fn network(ip: &str) -> Option<String> {
    let ip = crate::net::source_block(ip.parse::<IpAddr>().ok()?);
    Some(match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(_) => crate::net::source_block_text(ip),
    })
}

/// What the enabled detectors count of `event`.
pub fn tallies(config: &AlertingConfig, event: &Observation) -> Vec<Tally> {
    let mut tallies = Vec::new();
    let principal = (event.actor_type != "anonymous" && !event.actor_id.is_empty()).then(|| {
        Subject::Principal {
            kind: event.actor_type.clone(),
            id: event.actor_id.clone(),
        }
    });
    // Who found the trail broken: a person or a key verifying it, or Flowgate's own signer.
    if config.audit_tamper.enabled
        && event.tamper
        && let Some(subject) = principal.clone()
    {
        let found_by = if event.actor_type == "system" {
            "the checkpoint signer"
        } else {
            "a verification"
        };
        tallies.push(Tally::Event {
            kind: SignalKind::AuditTamper,
            subject,
            what: format!("the audit trail's hash chain is broken (found by {found_by})"),
        });
    }
    // The signals' own records and the responses they made are not evidence of anything.
    if event.action.starts_with("security.") || event.actor_type == "system" {
        return tallies;
    }
    let rule = &config.failed_logins;
    // A refusal, not an outage: a store that could not be reached (5xx) failed nobody's login.
    if rule.enabled && is_login(&event.action) && (400..500).contains(&event.status) {
        // A source is its address's block: one party rotating through its IPv6 /64 is one.
        let subjects = event
            .source_ip
            .as_deref()
            .map(|ip| {
                ip.parse()
                    .map_or_else(|_| ip.to_owned(), crate::net::source_block_text)
            })
            .map(Subject::Source)
            .into_iter()
            .chain(principal.clone());
        tallies.extend(subjects.map(|subject| Tally::Window {
            kind: SignalKind::FailedLogins,
            subject,
            window: Duration::from_secs(rule.window_seconds),
            threshold: rule.threshold,
        }));
    }
    let rule = &config.secret_reads;
    if let (true, "secret.read", true, Some(subject)) = (
        rule.enabled,
        event.action.as_str(),
        event.status < 400,
        principal.clone(),
    ) {
        tallies.push(Tally::Window {
            kind: SignalKind::SecretReads,
            subject,
            window: Duration::from_secs(rule.window_seconds),
            threshold: rule.threshold,
        });
    }
    let rule = &config.request_rate;
    if let (true, Some(subject)) = (rule.enabled, principal.clone()) {
        tallies.push(Tally::Rate {
            subject,
            factor: rule.factor,
            minimum: rule.minimum,
        });
    }
    if config.elevation.enabled
        && event.status < 400
        && let (Some(elevation), Some(subject)) = (event.elevation, principal.clone())
    {
        tallies.push(Tally::Event {
            kind: SignalKind::Elevation,
            subject,
            what: format!("{} ({})", elevation.describe(), event.action),
        });
    }
    // Not configurable: the detectors' own switches are what it watches.
    if event.status < 400
        && let (Some(field), Some(subject)) = (&event.loosened, principal.clone())
    {
        tallies.push(Tally::Event {
            kind: SignalKind::AlertingLoosened,
            subject,
            what: loosened_summary(field),
        });
    }
    if config.new_network.enabled
        && event.actor_type == "service_account"
        && event.status < 400
        && let (Some(network), Some(subject)) =
            (event.source_ip.as_deref().and_then(network), principal)
    {
        tallies.push(Tally::Network {
            subject,
            credential: event.credential.clone(),
            network,
        });
    }
    tallies
}

/// What an `alerting_loosened` signal says of the loosened `field`.
pub fn loosened_summary(field: &str) -> String {
    format!("the tenant's alerting loosened (`{field}`)")
}

/// One tenant's detector state in this process.
pub struct Detectors {
    failures: LruCache<Subject, Window>,
    secret_reads: LruCache<Subject, Window>,
    rates: LruCache<Subject, Rate>,
    /// Per credential (or principal, when the event does not name the credential).
    networks: LruCache<String, Vec<String>>,
}

impl Default for Detectors {
    fn default() -> Self {
        Detectors {
            failures: LruCache::unbounded(),
            secret_reads: LruCache::unbounded(),
            rates: LruCache::unbounded(),
            networks: LruCache::unbounded(),
        }
    }
}

impl Detectors {
    /// Counts `tallies` at `now`; the signals that fired.
    pub fn fire(&mut self, tallies: Vec<Tally>, now: Instant) -> Vec<Signal> {
        tallies
            .into_iter()
            .filter_map(|tally| {
                let count = self.count(&tally, now)?;
                Some(tally.signal(count))
            })
            .collect()
    }

    /// Counts `tally` at `now`; `Some` when it fires, with its count.
    fn count(&mut self, tally: &Tally, now: Instant) -> Option<u64> {
        match tally {
            Tally::Window {
                kind,
                subject,
                window,
                threshold,
            } => {
                // Separate keys per detector: a flood of one cannot evict the other's.
                let windows = match kind {
                    SignalKind::SecretReads => &mut self.secret_reads,
                    _ => &mut self.failures,
                };
                entry(windows, subject.clone(), || Window::new(now)).add(now, *window, *threshold)
            }
            Tally::Rate {
                subject,
                factor,
                minimum,
            } => entry(&mut self.rates, subject.clone(), || Rate::new(now))
                .add(now, *factor, *minimum),
            Tally::Network {
                subject,
                credential,
                network,
            } => {
                let holder = Tally::network_holder(subject, credential.as_deref());
                let known = entry(&mut self.networks, holder, Vec::new);
                if known.iter().any(|n| n == network) {
                    return None;
                }
                let first_use = known.is_empty();
                if known.len() >= MAX_NETWORKS {
                    known.remove(0);
                }
                known.push(network.to_owned());
                (!first_use).then_some(1)
            }
            Tally::Event { .. } => Some(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Detectors {
        /// Counts what the enabled detectors make of `event` at `now`.
        fn fire_on(
            &mut self,
            config: &AlertingConfig,
            event: &Observation,
            now: Instant,
        ) -> Vec<Signal> {
            self.fire(tallies(config, event), now)
        }
    }

    fn event(action: &str, status: i32, actor: &str, ip: &str) -> Observation {
        Observation {
            action: action.into(),
            status,
            actor_type: if actor.is_empty() {
                "anonymous".into()
            } else {
                "service_account".into()
            },
            actor_id: actor.into(),
            source_ip: Some(ip.into()),
            credential: None,
            elevation: None,
            tamper: false,
            loosened: None,
        }
    }

    #[test]
    fn a_burst_of_failed_logins_fires_once_per_window_per_source() {
        let config = AlertingConfig::default();
        let mut detectors = Detectors::default();
        let start = Instant::now();
        let threshold = config.failed_logins.threshold;
        let mut fired = Vec::new();
        for i in 0..threshold * 2 {
            let at = start + Duration::from_millis(i * 10);
            fired.extend(detectors.fire_on(
                &config,
                &event("auth.authenticate", 401, "", "10.0.0.9"),
                at,
            ));
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].subject, Subject::Source("10.0.0.9".into()));
        assert_eq!(fired[0].count, threshold);
        // Slow failures never reach the threshold within a window.
        let mut slow = Detectors::default();
        let fired: Vec<_> = (0..threshold * 3)
            .flat_map(|i| {
                let at = start + Duration::from_secs(i * 10);
                slow.fire_on(
                    &config,
                    &event("auth.authenticate", 401, "", "10.0.0.8"),
                    at,
                )
            })
            .collect();
        assert!(fired.is_empty(), "{fired:?}");
    }

    #[test]
    fn an_outage_is_no_burst_of_failed_logins() {
        let config = AlertingConfig::default();
        let mut detectors = Detectors::default();
        let start = Instant::now();
        let fired: Vec<_> = (0..config.failed_logins.threshold * 2)
            .flat_map(|i| {
                let at = start + Duration::from_millis(i * 10);
                let unavailable = event("auth.authenticate", 503, "", "10.0.0.7");
                detectors.fire_on(&config, &unavailable, at)
            })
            .collect();
        assert!(fired.is_empty(), "{fired:?}");
    }

    #[test]
    fn secret_reads_fire_per_principal_and_successes_only() {
        let mut config = AlertingConfig::default();
        config.secret_reads.threshold = 3;
        let mut detectors = Detectors::default();
        let now = Instant::now();
        let denied = detectors.fire_on(&config, &event("secret.read", 403, "sa1", "10.0.0.1"), now);
        assert!(denied.is_empty());
        let fired: Vec<_> = (0..3)
            .flat_map(|_| {
                detectors.fire_on(&config, &event("secret.read", 200, "sa1", "10.0.0.1"), now)
            })
            .collect();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].kind, SignalKind::SecretReads);
    }

    #[test]
    fn a_rate_far_above_the_principals_baseline_fires() {
        let mut config = AlertingConfig::default();
        config.request_rate.minimum = 50;
        config.request_rate.factor = 10;
        let mut detectors = Detectors::default();
        let start = Instant::now();
        let mut fired = Vec::new();
        // Four quiet minutes of 5 requests each, then a burst.
        for minute in 0..4u64 {
            for i in 0..5u64 {
                let at = start + Duration::from_secs(minute * 60 + i);
                fired.extend(detectors.fire_on(
                    &config,
                    &event("user.read", 200, "sa1", "10.0.0.1"),
                    at,
                ));
            }
        }
        assert!(fired.is_empty());
        for i in 0..60u64 {
            let at = start + Duration::from_secs(4 * 60) + Duration::from_millis(i);
            fired.extend(detectors.fire_on(
                &config,
                &event("user.read", 200, "sa1", "10.0.0.1"),
                at,
            ));
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].kind, SignalKind::RequestRate);
    }

    #[test]
    fn elevation_and_new_networks_fire_on_the_event() {
        let config = AlertingConfig::default();
        let mut detectors = Detectors::default();
        let now = Instant::now();
        let mut grant = event("role_binding.create", 201, "sa1", "10.0.0.1");
        assert!(detectors.fire_on(&config, &grant, now).is_empty());
        grant.elevation = Some(Elevation::EverythingGranted);
        let fired = detectors.fire_on(&config, &grant, now);
        assert!(fired.iter().any(|s| s.kind == SignalKind::Elevation));
        let mut policy = event("policy.manage", 201, "sa1", "10.0.0.1");
        policy.elevation = Some(Elevation::ForbidLifted);
        assert!(
            detectors
                .fire_on(&config, &policy, now)
                .iter()
                .any(|s| s.kind == SignalKind::Elevation)
        );
        let moved = detectors.fire_on(&config, &event("user.read", 200, "sa1", "192.0.2.7"), now);
        assert!(
            moved.iter().any(|s| s.kind == SignalKind::NewNetwork),
            "{moved:?}"
        );
        let again = detectors.fire_on(&config, &event("user.read", 200, "sa1", "192.0.2.8"), now);
        assert!(again.is_empty(), "same /24");
    }

    #[test]
    fn the_signer_finding_the_trail_broken_is_tampering_and_nothing_else_it_does_counts() {
        let config = AlertingConfig::default();
        let mut detectors = Detectors::default();
        let now = Instant::now();
        let mut refused = event("audit.checkpoint", 409, "audit-signer", "");
        (refused.actor_type, refused.source_ip) = ("system".into(), None);
        assert!(detectors.fire_on(&config, &refused, now).is_empty());
        refused.tamper = true;
        let fired = detectors.fire_on(&config, &refused, now);
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].kind, SignalKind::AuditTamper);
        assert_eq!(
            fired[0].subject,
            Subject::Principal {
                kind: "system".into(),
                id: "audit-signer".into()
            }
        );
        assert!(fired[0].summary.contains("checkpoint signer"), "{fired:?}");
        // The system's other events are not evidence: a loosening of the alerting fires on
        // the event itself when a person makes it, never when the system records one.
        let mut loosened = event("settings.manage", 200, "ada", "10.0.0.1");
        (loosened.actor_type, loosened.loosened) = ("user".into(), Some("failed_logins".into()));
        assert_eq!(detectors.fire_on(&config, &loosened, now).len(), 1);
        loosened.actor_type = "system".into();
        assert!(detectors.fire_on(&config, &loosened, now).is_empty());
    }

    #[test]
    fn loosening_the_alerting_fires_even_with_every_detector_off() {
        let mut config = AlertingConfig::default();
        for rule in [
            &mut config.elevation,
            &mut config.new_network,
            &mut config.audit_tamper,
        ] {
            rule.enabled = false;
        }
        config.failed_logins.enabled = false;
        config.secret_reads.enabled = false;
        config.request_rate.enabled = false;
        let mut detectors = Detectors::default();
        let now = Instant::now();
        let mut change = event("settings.manage", 200, "ada", "10.0.0.1");
        change.actor_type = "user".into();
        assert!(detectors.fire_on(&config, &change, now).is_empty());
        change.loosened = Some("failed_logins".into());
        let fired = detectors.fire_on(&config, &change, now);
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].kind, SignalKind::AlertingLoosened);
        assert_eq!(
            fired[0].subject,
            Subject::Principal {
                kind: "user".into(),
                id: "ada".into()
            }
        );
        assert!(fired[0].summary.contains("`failed_logins`"));
        // Every loosening fires, not once per window: each one is a change to look at.
        assert_eq!(detectors.fire_on(&config, &change, now).len(), 1);
        change.status = 403;
        assert!(detectors.fire_on(&config, &change, now).is_empty());
    }

    #[test]
    fn networks_are_counted_per_credential() {
        let config = AlertingConfig::default();
        let mut detectors = Detectors::default();
        let now = Instant::now();
        let with = |key: &str, ip: &str| {
            let mut used = event("user.read", 200, "sa1", ip);
            used.credential = Some(key.into());
            used
        };
        // Each key's first use is no change of network, even where its account never was.
        assert!(
            detectors
                .fire_on(&config, &with("k1", "10.0.0.1"), now)
                .is_empty()
        );
        assert!(
            detectors
                .fire_on(&config, &with("k2", "192.0.2.1"), now)
                .is_empty()
        );
        // A key used where only another key of its account was used: new for that key.
        let moved = detectors.fire_on(&config, &with("k1", "192.0.2.9"), now);
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(moved[0].kind, SignalKind::NewNetwork);
        assert!(moved[0].summary.contains("k1"), "{}", moved[0].summary);
        assert!(
            detectors
                .fire_on(&config, &with("k2", "192.0.2.200"), now)
                .is_empty()
        );
    }

    #[test]
    fn failed_logins_from_one_ipv6_64_count_as_one_source() {
        let mut config = AlertingConfig::default();
        config.failed_logins.threshold = 3;
        let mut detectors = Detectors::default();
        let now = Instant::now();
        let fired: Vec<_> = (1..=3)
            .flat_map(|host| {
                let ip = format!("2001:db8:5:5::{host:x}");
                detectors.fire_on(&config, &event("auth.authenticate", 401, "", &ip), now)
            })
            .collect();
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(
            fired[0].subject,
            Subject::Source("2001:db8:5:5::/64".into())
        );
    }
}
