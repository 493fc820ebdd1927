//! Alert webhooks, signed as Standard Webhooks (<https://www.standardwebhooks.com>): each
//! delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (`v1,` and the base64 HMAC-SHA256 of `id.timestamp.body` under the tenant's secret), so a
//! receiver checks it with any Standard Webhooks library and refuses replays by id and time.
//!
//! Invariant: delivery never waits inside a request or a signal's evaluation: alerts queue per
//! tenant (bounded; beyond it they are dropped and counted) for a worker of that tenant's, which
//! tries each up to [`ATTEMPTS`] times through the outbound client (the same reachability rules
//! as identity providers). One tenant's slow endpoint delays no other tenant's alerts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::mpsc;

use crate::signin::outbound::Outbound;

/// The secret's prefix, as Standard Webhooks libraries expect it.
const SECRET_PREFIX: &str = "whsec_";
/// Alerts of each kind waiting for delivery per tenant; beyond it they are dropped and counted.
const QUEUE: usize = 256;
/// A tenant's delivery worker stops after this long without alerts.
const IDLE: Duration = Duration::from_secs(60);
/// Tries of one delivery.
const ATTEMPTS: u32 = 3;

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> anyhow::Result<SecretString> {
    let bytes = crate::crypto::random_bytes::<32>()?;
    Ok(SecretString::from(format!(
        "{SECRET_PREFIX}{}",
        STANDARD.encode(bytes)
    )))
}

/// The `webhook-signature` header of `body` sent as message `id` at `timestamp`.
pub fn signature(secret: &SecretString, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let encoded = secret.expose_secret().strip_prefix(SECRET_PREFIX)?;
    let key = STANDARD.decode(encoded).ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut signed = Vec::with_capacity(id.len() + body.len() + 24);
    signed.extend_from_slice(format!("{id}.{timestamp}.").as_bytes());
    signed.extend_from_slice(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(hmac::sign(&key, &signed).as_ref())
    ))
}

/// An alert for one tenant's webhook.
pub struct Alert {
    pub tenant: String,
    pub url: String,
    pub secret: SecretString,
    /// The JSON body.
    pub body: Vec<u8>,
    /// A signal's alert (else a forwarded security event): signals have their own queue and
    /// go first, so that forwarded events anyone can cause (failed sign-ins) never crowd them
    /// out.
    pub signal: bool,
}

/// One tenant's delivery queues.
struct Queues {
    signals: mpsc::Sender<Alert>,
    events: mpsc::Sender<Alert>,
}

/// The delivery queues: one per tenant, each drained in order by a worker of its own, so a
/// tenant whose endpoint hangs delays only its own alerts.
#[derive(Clone)]
pub struct Deliveries {
    outbound: Arc<Outbound>,
    workers: Arc<Mutex<HashMap<String, Queues>>>,
}

impl Deliveries {
    pub fn new(outbound: Outbound) -> Self {
        Deliveries {
            outbound: Arc::new(outbound),
            workers: Arc::default(),
        }
    }

    /// Queues `alert` on its tenant's queue; a full queue drops it (counted).
    pub fn send(&self, alert: Alert) {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let mut alert = Some(alert);
        // A worker that went idle has stopped: the second try starts a new one.
        for _ in 0..2 {
            let Some(next) = alert.take() else { return };
            let queues = workers
                .entry(next.tenant.clone())
                .or_insert_with(|| self.worker());
            let queue = if next.signal {
                &queues.signals
            } else {
                &queues.events
            };
            match queue.try_send(next) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => break,
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    workers.remove(&back.tenant);
                    alert = Some(back);
                }
            }
        }
        crate::telemetry::metrics().observe_alert("dropped");
    }

    /// A tenant's worker: delivers what its queues hold, each in order, signals first; stops
    /// after a minute idle.
    fn worker(&self) -> Queues {
        let (signals, mut signal_alerts) = mpsc::channel::<Alert>(QUEUE);
        let (events, mut event_alerts) = mpsc::channel::<Alert>(QUEUE);
        let outbound = Arc::clone(&self.outbound);
        tokio::spawn(async move {
            loop {
                let next = next_alert(&mut signal_alerts, &mut event_alerts);
                let Ok(Some(alert)) = tokio::time::timeout(IDLE, next).await else {
                    break;
                };
                deliver(&outbound, alert).await;
            }
        });
        Queues { signals, events }
    }
}

/// The next alert to deliver: a signal's while there is one, else a forwarded event's; `None`
/// once both queues are closed and empty.
async fn next_alert(
    signals: &mut mpsc::Receiver<Alert>,
    events: &mut mpsc::Receiver<Alert>,
) -> Option<Alert> {
    tokio::select! {
        biased;
        Some(alert) = signals.recv() => Some(alert),
        Some(alert) = events.recv() => Some(alert),
        else => None,
    }
}

/// Delivers `alert`, retrying a failure twice (after 1 s and 5 s).
async fn deliver(outbound: &Outbound, alert: Alert) {
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(if attempt == 1 { 1 } else { 5 })).await;
        }
        let timestamp = chrono::Utc::now().timestamp();
        let Some(signature) = signature(&alert.secret, &id, timestamp, &alert.body) else {
            crate::telemetry::metrics().observe_alert("failed");
            return;
        };
        let request = http::Request::post(alert.url.as_str())
            .header("content-type", "application/json")
            .header("webhook-id", id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(alert.body.clone());
        let Ok(request) = request else {
            crate::telemetry::metrics().observe_alert("failed");
            return;
        };
        match outbound.send(request).await {
            Ok(answer) if answer.status().is_success() => {
                crate::telemetry::metrics().observe_alert("delivered");
                return;
            }
            Ok(answer) => {
                tracing::warn!(
                    status = answer.status().as_u16(),
                    attempt,
                    "alert webhook refused a delivery"
                );
            }
            Err(e) => tracing::warn!(error = %e, attempt, "alert webhook unreachable"),
        }
    }
    crate::telemetry::metrics().observe_alert("failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        let bad = SecretString::from("not-a-secret".to_owned());
        assert_eq!(signature(&bad, "m", 1, body), None);
    }

    #[tokio::test]
    async fn signals_are_delivered_before_forwarded_events() {
        let (signals, mut signal_alerts) = mpsc::channel::<Alert>(QUEUE);
        let (events, mut event_alerts) = mpsc::channel::<Alert>(QUEUE);
        let alert = |signal: bool, n: u8| Alert {
            tenant: "acme".into(),
            url: "https://siem.example.com".into(),
            secret: SecretString::from("whsec_x".to_owned()),
            body: vec![n],
            signal,
        };
        for n in 0..3 {
            events.try_send(alert(false, n)).unwrap();
        }
        signals.try_send(alert(true, 9)).unwrap();
        drop((signals, events));
        let mut order = Vec::new();
        while let Some(next) = next_alert(&mut signal_alerts, &mut event_alerts).await {
            order.push(next.body[0]);
        }
        assert_eq!(order, [9, 0, 1, 2]);
    }

    #[test]
    fn new_secrets_are_fresh_and_well_formed() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert!(a.expose_secret().starts_with(SECRET_PREFIX));
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(signature(&a, "m", 1, b"x").is_some());
    }
}
