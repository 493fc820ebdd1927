//! Signals: suspicious activity detected in what the audit trail records, each raising a
//! security event — an audit event `security.signal` (so also an OTLP log record, OCSF Detection
//! Finding), a signed alert to the tenant's webhook, and the automatic responses the tenant
//! attached to it, each itself audited.
//!
//! Every committed audit event of a tenant is fed here ([`SignalFeed::observe`], from the
//! writer's flush and from a change's commit); one task evaluates the tenant's detectors
//! ([`detect`]) with the tenant's thresholds ([`config`]). With `FLOWGATE_REDIS_URL` set, the
//! counts are shared by every replica ([`shared`]); without it each replica counts what it
//! served.
//!
//! Invariant: feeding never waits — a full feed drops the batch and counts it
//! (`flowgate_signal_events_dropped_total`) — and a signal never grants anything: its responses
//! only revoke, end or deactivate ([`crate::tenancy::work::AutomaticResponse`]).

pub mod config;
pub mod detect;
mod respond;
mod shared;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use entity::tenant::audit_event;
use lru::LruCache;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::audit::{AuditEvent, Outcome, RequestMeta};
use crate::tenancy::{Access, Slug};
use config::{LOOSENED_DETAIL, SECRET_FIELD, Stored};
use detect::{Detectors, Elevation, Observation, Signal, Subject, Tally};
pub use shared::SharedCounts;

/// Batches of committed events waiting for the detectors.
const FEED: usize = 1024;
/// Tenants whose detector state is kept.
const TENANTS: usize = 1024;
/// Longest a replica evaluates with a tenant's configuration without reading it again (a
/// change on this replica applies at once).
const CONFIG_TTL: Duration = Duration::from_secs(30);

/// Where committed audit events are fed to the detectors.
#[derive(Clone)]
pub struct SignalFeed {
    sender: mpsc::Sender<(String, Arc<[audit_event::Model]>)>,
    /// Tenants whose alerting changed on this replica, to read again.
    changed: Arc<Mutex<HashSet<String>>>,
}

/// The feed's receiving end, for [`spawn`].
pub struct SignalInput {
    receiver: mpsc::Receiver<(String, Arc<[audit_event::Model]>)>,
    changed: Arc<Mutex<HashSet<String>>>,
}

impl SignalFeed {
    pub fn channel() -> (SignalFeed, SignalInput) {
        let (sender, receiver) = mpsc::channel(FEED);
        let changed = Arc::new(Mutex::new(HashSet::new()));
        (
            SignalFeed {
                sender,
                changed: Arc::clone(&changed),
            },
            SignalInput { receiver, changed },
        )
    }

    /// Feeds the rows `trail` just committed (the platform's trail has no signals).
    pub fn observe(&self, trail: &str, rows: Arc<[audit_event::Model]>) {
        if trail == crate::audit::PLATFORM || rows.is_empty() {
            return;
        }
        let count = rows.len();
        if self.sender.try_send((trail.to_owned(), rows)).is_err() {
            crate::telemetry::metrics().observe_signal_feed_dropped(count);
        }
    }

    /// The tenant `slug` changed its alerting: read it again before the next evaluation.
    pub fn reconfigured(&self, slug: &str) {
        self.changed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slug.to_owned());
    }
}

/// A signal that fired for a tenant: what an automatic response is made under. Only the
/// signals task makes one (its fields are private to this module).
#[derive(Debug)]
pub struct Fired {
    slug: Slug,
    signal: Signal,
}

/// One tenant's detectors and configuration.
struct TenantSignals {
    detectors: Detectors,
    stored: Stored,
    read_at: Option<Instant>,
    /// The webhook's secret, opened once per configuration read.
    secret: Option<SecretString>,
}

/// Signals about source addresses being raised, per tenant.
#[derive(Clone, Default)]
struct Raising(Arc<Mutex<HashMap<String, usize>>>);

/// Signals about source addresses one tenant may have being raised at once; more are dropped
/// (counted).
const RAISING_PER_TENANT: usize = 8;

/// A signal's place among those being raised, given back when dropped.
struct Place {
    /// The tenant whose count it holds: `None` for a signal about a principal.
    counted: Option<(Raising, String)>,
}

impl Raising {
    /// A place for a signal of `tenant` about `subject`, or `None` (drop it). Signals about
    /// source addresses, which anyone can cause from many addresses at once, have
    /// [`RAISING_PER_TENANT`] places per tenant: a flood of them neither delays another
    /// tenant's detection nor grows without bound. A signal about a principal always has one:
    /// its detector raises it at most once per window (so they are bounded), and it may carry
    /// automatic responses that a flood of address signals must not crowd out.
    fn admit(&self, tenant: &str, subject: &Subject) -> Option<Place> {
        if !matches!(subject, Subject::Source(_)) {
            return Some(Place { counted: None });
        }
        let mut raising = self.lock();
        let count = raising.entry(tenant.to_owned()).or_default();
        if *count >= RAISING_PER_TENANT {
            return None;
        }
        *count += 1;
        Some(Place {
            counted: Some((self.clone(), tenant.to_owned())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let Some((raising, tenant)) = &self.counted else {
            return;
        };
        let mut raising = raising.lock();
        if let Some(count) = raising.get_mut(tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                raising.remove(tenant);
            }
        }
    }
}

/// Starts evaluating what `input` is fed, with the counts in `shared` when given; ends when
/// every feed is dropped.
pub fn spawn(state: Weak<AppState>, mut input: SignalInput, shared: Option<SharedCounts>) {
    tokio::spawn(async move {
        let cap = NonZeroUsize::new(TENANTS).unwrap_or(NonZeroUsize::MIN);
        let mut tenants: LruCache<String, TenantSignals> = LruCache::new(cap);
        let raising = Raising::default();
        while let Some((trail, rows)) = input.receiver.recv().await {
            let Some(state) = state.upgrade() else {
                break;
            };
            let Ok(slug) = Slug::parse(&trail) else {
                continue;
            };
            let stale = input
                .changed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&trail);
            let tenant = tenants.get_or_insert_mut(trail, || TenantSignals {
                detectors: Detectors::default(),
                stored: Stored::default(),
                read_at: None,
                secret: None,
            });
            if stale || tenant.read_at.is_none_or(|at| at.elapsed() > CONFIG_TTL) {
                match read_config(&state, &slug).await {
                    Ok(stored) => {
                        tenant.secret = match &stored.sealed_secret {
                            Some(sealed) => webhook_secret(&state, &slug, sealed)
                                .await
                                .inspect_err(|e| tracing::warn!(tenant = %slug, error = %e, "the alert webhook's secret is unreadable; no alerts are sent"))
                                .ok(),
                            None => None,
                        };
                        tenant.stored = stored;
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %slug, error = %e, "alerting configuration unreadable; the last one applies")
                    }
                }
                tenant.read_at = Some(Instant::now());
            }
            let webhook = tenant
                .stored
                .config
                .webhook_url
                .clone()
                .zip(tenant.secret.clone());
            if let Some((url, secret)) = &webhook {
                forward_events(&state, &slug, &tenant.stored.config, url, secret, &rows);
            }
            let tallies: Vec<Tally> = observations(rows)
                .await
                .iter()
                .flat_map(|event| detect::tallies(&tenant.stored.config, event))
                .collect();
            let fired = count(shared.as_ref(), &slug, &mut tenant.detectors, tallies).await;
            for signal in fired {
                // Each raised on its own task, in a place `Raising` gives it.
                let Some(place) = raising.admit(slug.as_str(), &signal.subject) else {
                    crate::telemetry::metrics().observe_signal_dropped();
                    continue;
                };
                let fired = Fired {
                    slug: slug.clone(),
                    signal,
                };
                let (state, stored, webhook) =
                    (Arc::clone(&state), tenant.stored.clone(), webhook.clone());
                tokio::spawn(async move {
                    raise(&state, fired, &stored, webhook.as_ref()).await;
                    drop(place);
                });
            }
        }
    });
}

/// The signals `tallies` fire: counted in Redis for every replica when it is set, and by this
/// replica's `detectors` when it is not or for what Redis did not count.
async fn count(
    shared: Option<&SharedCounts>,
    slug: &Slug,
    detectors: &mut Detectors,
    mut tallies: Vec<Tally>,
) -> Vec<Signal> {
    let counts = match shared {
        Some(shared) if !tallies.is_empty() => shared.count(slug.as_str(), &tallies).await,
        _ => Vec::new(),
    };
    let rest = tallies.split_off(counts.len());
    let mut fired: Vec<Signal> = tallies
        .into_iter()
        .zip(counts)
        .filter_map(|(tally, count)| Some(tally.signal(count?)))
        .collect();
    fired.extend(detectors.fire(rest, Instant::now()));
    fired
}

#[expect(
    clippy::disallowed_methods,
    reason = "the signals task reads a tenant's alerting configuration outside any request"
)]
async fn read_config(state: &AppState, slug: &Slug) -> anyhow::Result<Stored> {
    let tx = state.dbs.begin(slug, Access::Read).await?;
    let stored = Stored::load(&tx).await?;
    tx.commit().await?;
    Ok(stored)
}

#[expect(
    clippy::disallowed_methods,
    reason = "the signals task opens the webhook secret outside any request"
)]
async fn webhook_secret(
    state: &AppState,
    slug: &Slug,
    sealed: &str,
) -> anyhow::Result<SecretString> {
    let tx = state.dbs.begin(slug, Access::Read).await?;
    let plain = state
        .envelope
        .open(slug.as_str(), &tx, SECRET_FIELD, sealed)
        .await?;
    tx.commit().await?;
    Ok(SecretString::from(String::from_utf8(plain.to_vec())?))
}

/// What the detectors read of committed `rows`. A changed policy is parsed (on a parsing
/// thread of its own, joined) off the runtime's threads.
async fn observations(rows: Arc<[audit_event::Model]>) -> Vec<Observation> {
    if !rows.iter().any(|row| row.action == "policy.manage") {
        return rows.iter().map(observation).collect();
    }
    tokio::task::spawn_blocking(move || rows.iter().map(observation).collect())
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "reading committed events for the detectors failed");
            Vec::new()
        })
}

/// What the detectors read of a committed row.
fn observation(row: &audit_event::Model) -> Observation {
    Observation {
        action: row.action.clone(),
        status: row.status,
        actor_type: row.actor_type.clone(),
        actor_id: row.actor_id.clone(),
        source_ip: row.source_ip.clone(),
        credential: row
            .details
            .get("credential_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        elevation: elevation_of(&row.action, &row.details),
        // A verification that found the trail broken, or the checkpoint signer refusing it.
        tamper: matches!(row.action.as_str(), "audit.verify" | "audit.checkpoint")
            && row.details.get("verified_ok") == Some(&Value::Bool(false)),
        loosened: (row.action == "settings.manage")
            .then(|| row.details.get(LOOSENED_DETAIL)?.as_str())
            .flatten()
            .map(str::to_owned),
    }
}

/// How the committed change `action` with `details` gave more access, if it did: a binding of
/// a role holding every action, a permit written, a forbid changed or deleted (by the policies'
/// structure: Cedar's own parse, bounded, never their text), a role given new actions.
fn elevation_of(action: &str, details: &Value) -> Option<Elevation> {
    let text = |field: &str| details.get(field).and_then(Value::as_str);
    let effect = |text: &str| {
        crate::authz::policy_text::parse("changed", text)
            .ok()
            .map(|parsed| parsed.policy.effect())
    };
    match action {
        "role_binding.create" => (text("role") == Some("Admin")
            || details.get("grants_everything") == Some(&Value::Bool(true)))
        .then_some(Elevation::EverythingGranted),
        "policy.manage" => {
            let (before, after) = (text("before"), text("after"));
            if after.and_then(effect) == Some(cedar_policy::Effect::Permit) {
                Some(Elevation::PermitWritten)
            } else if before.is_some_and(|b| after != Some(b))
                // A stored text that no longer parses might have been a forbid of anything.
                && before.is_some_and(|b| effect(b) != Some(cedar_policy::Effect::Permit))
            {
                // Deleted, or edited: an edit can lift it as well as a deletion can (`when {
                // false }`), and a signal errs on the side of being raised.
                Some(Elevation::ForbidLifted)
            } else {
                None
            }
        }
        "role.manage" => {
            let actions = |field: &str| -> Vec<&str> {
                details
                    .get(field)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default()
            };
            let before = actions("before");
            (details.get("before").is_some()
                && actions("after").iter().any(|a| !before.contains(a)))
            .then_some(Elevation::RoleWidened)
        }
        _ => None,
    }
}

fn subject_json(subject: &Subject) -> Value {
    match subject {
        Subject::Source(ip) if subject.address().is_some() => json!({"type": "source", "ip": ip}),
        Subject::Source(block) => json!({"type": "source", "network": block}),
        Subject::Principal { kind, id } => json!({"type": kind, "id": id}),
    }
}

/// Posts the rows whose OCSF class the tenant asked for to its webhook, as `security.event`s.
fn forward_events(
    state: &AppState,
    slug: &Slug,
    config: &config::AlertingConfig,
    url: &str,
    secret: &SecretString,
    rows: &[audit_event::Model],
) {
    if config.webhook_events.is_empty() {
        return;
    }
    for row in rows {
        let class = crate::telemetry::security::ocsf_class(&row.action).class_uid;
        if !config
            .webhook_events
            .iter()
            .any(|c| c.covers(&row.action, class))
        {
            continue;
        }
        let body = json!({
            "type": "security.event",
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": crate::telemetry::security::ocsf_event(slug.as_str(), row),
        });
        state.alerts.send(webhook::Alert {
            tenant: slug.to_string(),
            url: url.to_owned(),
            secret: secret.clone(),
            body: body.to_string().into_bytes(),
            signal: false,
        });
    }
}

/// Records `fired` in the tenant's trail, applies its responses and alerts the webhook.
async fn raise(
    state: &Arc<AppState>,
    fired: Fired,
    stored: &Stored,
    webhook: Option<&(String, SecretString)>,
) {
    let signal = &fired.signal;
    crate::telemetry::metrics().observe_signal(signal.kind.name());
    let meta = RequestMeta {
        request_id: crate::http::request_id::generate(),
        // A source that is a block (an IPv6 /64) is no address: it is in the details only.
        source_ip: signal.subject.address().map(str::to_owned),
        ..RequestMeta::default()
    };
    let responses =
        respond::apply(state, &fired, stored.config.responses(signal.kind), &meta).await;
    let event = AuditEvent::new(&meta, "security.signal", "signal")
        .actor("system", "signals")
        .outcome(Outcome::None, 200)
        .detail("signal", signal.kind.name())
        .detail("subject", subject_json(&signal.subject))
        .detail("count", signal.count)
        .detail("threshold", signal.threshold)
        .detail("summary", signal.summary.clone())
        .detail("responses", responses.clone());
    if let Err(e) = state.audit.record(&fired.slug, event).await {
        tracing::error!(tenant = %fired.slug, error = %e, "a signal could not be recorded");
    }
    let Some((url, secret)) = webhook else {
        return;
    };
    state.alerts.send(webhook::Alert {
        tenant: fired.slug.to_string(),
        url: url.clone(),
        secret: secret.clone(),
        body: signal_alert(&fired.slug, signal, &responses, &meta.request_id),
        signal: true,
    });
}

/// The alert of `signal`, raised for `slug` with `responses`, as a webhook receives it.
fn signal_alert(slug: &Slug, signal: &Signal, responses: &[Value], request_id: &str) -> Vec<u8> {
    json!({
        "type": "security.signal",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": {
            "tenant": slug.as_str(),
            "signal": signal.kind.name(),
            "subject": subject_json(&signal.subject),
            "count": signal.count,
            "threshold": signal.threshold,
            "summary": signal.summary,
            "responses": responses,
            "request_id": request_id,
        }
    })
    .to_string()
    .into_bytes()
}

/// Alerts `replaced`, the webhook (URL and secret) that a change of `slug`'s alerting by
/// `subject` moved, removed or re-keyed, that it loosened `field`. The `alerting_loosened`
/// signal goes where the new configuration says: nowhere, a receiver of the changer's choosing,
/// or one whose secret the receiver does not have yet; the receiver that was watching hears of
/// it from here.
pub fn alert_replaced_webhook(
    alerts: &webhook::Deliveries,
    slug: &Slug,
    subject: Subject,
    field: &str,
    replaced: (String, SecretString),
) {
    let signal = Signal {
        kind: detect::SignalKind::AlertingLoosened,
        subject,
        count: 1,
        threshold: 1,
        summary: detect::loosened_summary(field),
    };
    let request_id = crate::http::request_id::generate();
    let (url, secret) = replaced;
    alerts.send(webhook::Alert {
        tenant: slug.to_string(),
        url,
        secret,
        body: signal_alert(slug, &signal, &[], &request_id),
        signal: true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_address_signals_never_crowds_out_one_about_a_principal() {
        let raising = Raising::default();
        let address = Subject::Source("203.0.113.7".into());
        let places: Vec<Place> = (0..RAISING_PER_TENANT)
            .map(|_| raising.admit("acme", &address).unwrap())
            .collect();
        assert!(
            raising.admit("acme", &address).is_none(),
            "the ninth is dropped"
        );
        assert!(
            raising.admit("other", &address).is_some(),
            "another tenant's is not"
        );
        let principal = Subject::Principal {
            kind: "service_account".into(),
            id: "7".into(),
        };
        assert!(raising.admit("acme", &principal).is_some());
        drop(places);
        assert!(raising.lock().is_empty(), "every place is given back");
        assert!(raising.admit("acme", &address).is_some());
    }

    #[test]
    fn elevations_are_read_from_the_changes_structure() {
        const PERMIT: &str =
            r#"permit(principal, action == Flowgate::Action::"user.read", resource);"#;
        const FORBID: &str =
            r#"forbid(principal, action == Flowgate::Action::"user.read", resource);"#;
        let cases = [
            (
                "role_binding.create",
                json!({"role": "Viewer", "grants_everything": false}),
                None,
            ),
            (
                "role_binding.create",
                json!({"role": "Admin"}),
                Some(Elevation::EverythingGranted),
            ),
            (
                "role_binding.create",
                json!({"role": "Ops", "grants_everything": true}),
                Some(Elevation::EverythingGranted),
            ),
            (
                "policy.manage",
                json!({"after": PERMIT}),
                Some(Elevation::PermitWritten),
            ),
            ("policy.manage", json!({"after": FORBID}), None),
            ("policy.manage", json!({"before": PERMIT}), None),
            (
                "policy.manage",
                json!({"before": FORBID}),
                Some(Elevation::ForbidLifted),
            ),
            (
                "policy.manage",
                json!({"before": FORBID, "after": FORBID.replace("user.read", "user.create")}),
                Some(Elevation::ForbidLifted),
            ),
            (
                "policy.manage",
                json!({"before": "not cedar"}),
                Some(Elevation::ForbidLifted),
            ),
            ("role.manage", json!({"after": ["user.read"]}), None),
            (
                "role.manage",
                json!({"before": ["user.read"], "after": []}),
                None,
            ),
            (
                "role.manage",
                json!({"before": ["user.read"], "after": ["user.read", "user.create"]}),
                Some(Elevation::RoleWidened),
            ),
            ("user.read", json!({"role": "Admin"}), None),
        ];
        for (action, details, expected) in cases {
            assert_eq!(
                elevation_of(action, &details),
                expected,
                "{action} {details}"
            );
        }
    }
}
