//! A tenant's alerting: its detectors' thresholds, the automatic responses attached to them and
//! the alert webhook, stored as the tenant setting `alerting` (the webhook's signing secret
//! sealed with the tenant's data key).

use chrono::Utc;
use entity::tenant::tenant_setting;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait as _};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::authz::actions::{
    Action, ApiKeyRevoke, ServiceAccountDisable, SessionRevoke, SettingsManage, UserDisable,
};
use crate::tenancy::work::{Permit, WriteTx};

/// The tenant setting holding the alerting configuration.
const KEY: &str = "alerting";

/// What a response does when its signal fires. Responses only ever take access away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseKind {
    /// Revoke every API key of the service account the signal is about.
    RevokeApiKeys,
    /// Disable the service account the signal is about: every credential of it (API keys,
    /// OAuth clients and their tokens, trusted issuers' tokens) stops working until an
    /// administrator enables it again.
    DisableServiceAccount,
    /// End every session of the person the signal is about.
    EndSessions,
    /// Deactivate the person the signal is about (their sessions end with it).
    DeactivateUser,
    /// Revoke every API key and OAuth client of the tenant, whoever the signal is about: API
    /// access stops until new keys are issued; people still sign in.
    RevokeAllApiKeys,
}

impl ResponseKind {
    /// The action whose holders may do by hand what the response does.
    pub fn action(self) -> &'static str {
        match self {
            ResponseKind::RevokeApiKeys | ResponseKind::RevokeAllApiKeys => ApiKeyRevoke::NAME,
            ResponseKind::DisableServiceAccount => ServiceAccountDisable::NAME,
            ResponseKind::EndSessions => SessionRevoke::NAME,
            ResponseKind::DeactivateUser => UserDisable::NAME,
        }
    }
}

/// The security events, by OCSF class, that a tenant's webhook also gets (signals always).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    /// Sign-ins, token grants and failed credentials, break-glass use (OCSF 3002).
    Authentication,
    /// Passkey enrolment and removal, people, service accounts and API keys (OCSF 3001).
    AccountChange,
    /// Role, role-binding, policy and group-membership changes (OCSF 3005).
    AccessManagement,
    /// Rate-limit trips (OCSF 2004, beside the signals themselves).
    DetectionFinding,
    /// Secret values read or used (`secret.read`, `secret.use`; OCSF API Activity 6003, whose
    /// other calls are not sent).
    SecretAccess,
}

impl EventClass {
    /// Whether an event of `action`, of the OCSF class `class_uid`, is of this class.
    pub fn covers(self, action: &str, class_uid: u32) -> bool {
        match self {
            EventClass::Authentication => class_uid == 3002,
            EventClass::AccountChange => class_uid == 3001,
            EventClass::AccessManagement => class_uid == 3005,
            EventClass::DetectionFinding => class_uid == 2004,
            EventClass::SecretAccess => matches!(action, "secret.read" | "secret.use"),
        }
    }
}

/// A detector that counts events of one subject in a sliding window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WindowRule {
    pub enabled: bool,
    /// Events within the window that fire the signal, 1 to 100,000.
    pub threshold: u64,
    /// 10 to 3,600.
    pub window_seconds: u64,
    /// What Flowgate does when it fires (each itself audited).
    pub responses: Vec<ResponseKind>,
}

/// The request-rate detector: a principal's requests this minute against its own average.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateRule {
    pub enabled: bool,
    /// How many times the principal's usual rate, 2 to 1,000.
    pub factor: u64,
    /// Requests in the minute below which it never fires, 10 to 1,000,000.
    pub minimum: u64,
    pub responses: Vec<ResponseKind>,
}

/// A detector that fires on a single event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EventRule {
    pub enabled: bool,
    pub responses: Vec<ResponseKind>,
}

impl Default for WindowRule {
    fn default() -> Self {
        WindowRule {
            enabled: true,
            threshold: 20,
            window_seconds: 60,
            responses: Vec::new(),
        }
    }
}

impl Default for RateRule {
    fn default() -> Self {
        RateRule {
            enabled: true,
            factor: 10,
            minimum: 600,
            responses: Vec::new(),
        }
    }
}

impl Default for EventRule {
    fn default() -> Self {
        EventRule {
            enabled: true,
            responses: Vec::new(),
        }
    }
}

/// A tenant's signals and where their alerts go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(example = json!({"webhook_url": "https://siem.example.com/hooks/flowgate", "failed_logins": {"threshold": 20, "window_seconds": 60}, "secret_reads": {"threshold": 20, "window_seconds": 60, "responses": ["revoke_api_keys"]}}))]
pub struct AlertingConfig {
    /// Where each signal is posted, signed as Standard Webhooks (`webhook-id`,
    /// `webhook-timestamp`, `webhook-signature`); none: signals are recorded and exported only.
    /// `https`, or `http` to an address in `FLOWGATE_IDP_PRIVATE_NETWORKS`.
    pub webhook_url: Option<String>,
    /// Security events the webhook also gets, each as its OCSF event (`security.event`):
    /// none by default.
    pub webhook_events: Vec<EventClass>,
    /// Failed sign-ins and credential checks, per source address and per principal.
    pub failed_logins: WindowRule,
    /// Secret values read, per principal.
    pub secret_reads: WindowRule,
    /// A principal's request rate far above its own baseline.
    pub request_rate: RateRule,
    /// A grant of every action (the Admin role or one as wide), a permit written, a forbid
    /// changed or deleted, or a custom role given more actions.
    pub elevation: EventRule,
    /// A service account's credential used from a network (/24, /64) it was never used from.
    pub new_network: EventRule,
    /// A verification of the audit trail that found it broken (the subject is who verified),
    /// or Flowgate's checkpoint signer refusing to sign it (the subject is `system`
    /// `audit-signer`; once per break).
    pub audit_tamper: EventRule,
}

impl AlertingConfig {
    /// The fields out of range, as (field, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for (name, rule) in [
            ("failed_logins", &self.failed_logins),
            ("secret_reads", &self.secret_reads),
        ] {
            if !(1..=100_000).contains(&rule.threshold) {
                problems.push((format!("{name}.threshold"), "must be 1 to 100000".into()));
            }
            if !(10..=3_600).contains(&rule.window_seconds) {
                problems.push((
                    format!("{name}.window_seconds"),
                    "must be 10 to 3600".into(),
                ));
            }
        }
        if !(2..=1_000).contains(&self.request_rate.factor) {
            problems.push(("request_rate.factor".into(), "must be 2 to 1000".into()));
        }
        if !(10..=1_000_000).contains(&self.request_rate.minimum) {
            problems.push((
                "request_rate.minimum".into(),
                "must be 10 to 1000000".into(),
            ));
        }
        for (name, responses) in [
            ("failed_logins", &self.failed_logins.responses),
            ("secret_reads", &self.secret_reads.responses),
            ("request_rate", &self.request_rate.responses),
            ("elevation", &self.elevation.responses),
            ("new_network", &self.new_network.responses),
        ] {
            let distinct: std::collections::HashSet<_> = responses.iter().collect();
            if distinct.len() != responses.len() {
                problems.push((
                    format!("{name}.responses"),
                    "a response is listed twice".into(),
                ));
            }
            // Failed logins, request rates and new networks can be caused by anyone (an address
            // that guesses keys, one low-privilege account), and would fire again at every
            // retry of the revoked keys: only a signal about what a privileged caller did may
            // stop the whole tenant's API access.
            if responses.contains(&ResponseKind::RevokeAllApiKeys)
                && !matches!(name, "elevation" | "secret_reads")
            {
                problems.push((
                    format!("{name}.responses"),
                    "revoke_all_api_keys may only follow elevation or secret_reads".into(),
                ));
            }
        }
        if !self.audit_tamper.responses.is_empty() {
            // Its subject is whoever verified the trail: the one who found the tampering.
            problems.push((
                "audit_tamper.responses".into(),
                "a broken trail takes no automatic response".into(),
            ));
        }
        if self.webhook_url.as_deref().is_some_and(|u| u.len() > 2048) {
            problems.push(("webhook_url".into(), "at most 2048 characters".into()));
        }
        problems
    }

    /// The responses that this configuration, replacing `before`, aims anew: those added to a
    /// detector, and every response of a detector that now fires on other occasions (switched
    /// on, or its threshold, window, factor or minimum moved). Whoever sets it acts through
    /// them on anyone in the tenant.
    pub fn responses_aimed(&self, before: &AlertingConfig) -> Vec<ResponseKind> {
        let mut aimed = Vec::new();
        let mut aim = |now: &[ResponseKind], then: &[ResponseKind], retargeted: bool| {
            aimed.extend(
                now.iter()
                    .filter(|r| retargeted || !then.contains(r))
                    .copied(),
            );
        };
        for (now, then) in [
            (&self.failed_logins, &before.failed_logins),
            (&self.secret_reads, &before.secret_reads),
        ] {
            let retargeted = (now.enabled, now.threshold, now.window_seconds)
                != (then.enabled, then.threshold, then.window_seconds);
            aim(&now.responses, &then.responses, retargeted);
        }
        let (now, then) = (&self.request_rate, &before.request_rate);
        let retargeted =
            (now.enabled, now.factor, now.minimum) != (then.enabled, then.factor, then.minimum);
        aim(&now.responses, &then.responses, retargeted);
        for (now, then) in [
            (&self.elevation, &before.elevation),
            (&self.new_network, &before.new_network),
            (&self.audit_tamper, &before.audit_tamper),
        ] {
            aim(&now.responses, &then.responses, now.enabled != then.enabled);
        }
        aimed
    }

    /// The first field in which this configuration, replacing `before`, watches less: the
    /// webhook moved or removed, a forwarded event class dropped, a detector switched off, a
    /// threshold or minimum raised, a factor raised, a window shortened, a response taken off
    /// (a detector that was off watched nothing to loosen). `None` when it watches at least as
    /// much.
    pub fn loosens(&self, before: &AlertingConfig) -> Option<&'static str> {
        let fewer =
            |now: &[ResponseKind], then: &[ResponseKind]| then.iter().any(|r| !now.contains(r));
        if before.webhook_url.is_some() && self.webhook_url != before.webhook_url {
            return Some("webhook_url");
        }
        if before
            .webhook_events
            .iter()
            .any(|c| !self.webhook_events.contains(c))
        {
            return Some("webhook_events");
        }
        for (name, now, then) in [
            ("failed_logins", &self.failed_logins, &before.failed_logins),
            ("secret_reads", &self.secret_reads, &before.secret_reads),
        ] {
            if then.enabled
                && (!now.enabled
                    || now.threshold > then.threshold
                    || now.window_seconds < then.window_seconds
                    || fewer(&now.responses, &then.responses))
            {
                return Some(name);
            }
        }
        let (now, then) = (&self.request_rate, &before.request_rate);
        if then.enabled
            && (!now.enabled
                || now.factor > then.factor
                || now.minimum > then.minimum
                || fewer(&now.responses, &then.responses))
        {
            return Some("request_rate");
        }
        for (name, now, then) in [
            ("elevation", &self.elevation, &before.elevation),
            ("new_network", &self.new_network, &before.new_network),
            ("audit_tamper", &self.audit_tamper, &before.audit_tamper),
        ] {
            if then.enabled && (!now.enabled || fewer(&now.responses, &then.responses)) {
                return Some(name);
            }
        }
        None
    }

    /// The responses attached to the signal `kind`.
    pub fn responses(&self, kind: super::detect::SignalKind) -> &[ResponseKind] {
        use super::detect::SignalKind;
        match kind {
            SignalKind::FailedLogins => &self.failed_logins.responses,
            SignalKind::SecretReads => &self.secret_reads.responses,
            SignalKind::RequestRate => &self.request_rate.responses,
            SignalKind::Elevation => &self.elevation.responses,
            SignalKind::NewNetwork => &self.new_network.responses,
            SignalKind::AuditTamper => &self.audit_tamper.responses,
            // Always raised, and aimed at nobody: the person who loosened the alerting may
            // have had every reason to, and the signal is what tells the others.
            SignalKind::AlertingLoosened => &[],
        }
    }
}

/// What is stored: the configuration and the sealed webhook secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stored {
    pub config: AlertingConfig,
    /// The webhook's signing secret, sealed ([`crate::secrets::envelope::Envelope::seal`]).
    pub sealed_secret: Option<String>,
}

/// The envelope field label of the webhook secret.
pub const SECRET_FIELD: &str = "alerting.webhook_secret";

/// The detail of an alerting change that names what it loosened (the first field found, or
/// `webhook_secret` for a rotation of a working secret): the `alerting_loosened` signal's cue.
pub const LOOSENED_DETAIL: &str = "loosened";

impl Stored {
    /// The tenant's alerting, defaults when none was ever set (or what is stored is unreadable).
    pub async fn load(conn: &impl ConnectionTrait) -> Result<Self, DbErr> {
        let row = tenant_setting::Entity::find_by_id(KEY.to_owned())
            .one(conn)
            .await?;
        Ok(row
            .and_then(|r| serde_json::from_value(r.value).ok())
            .unwrap_or_default())
    }

    /// Stores this configuration.
    pub async fn save(&self, tx: &WriteTx, _: &impl Permit<SettingsManage>) -> Result<(), DbErr> {
        let value = serde_json::to_value(self).map_err(|e| DbErr::Custom(e.to_string()))?;
        crate::signin::settings::put_setting(tx, KEY, value, Utc::now()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watching_less_is_loosening_and_a_detector_that_was_off_watched_nothing() {
        let before = AlertingConfig::default();
        let mut now = before.clone();
        assert_eq!(now.loosens(&before), None);
        now.failed_logins.threshold += 1;
        assert_eq!(now.loosens(&before), Some("failed_logins"));
        now.failed_logins.threshold -= 2;
        assert_eq!(now.loosens(&before), None, "a lower threshold watches more");
        now.new_network.enabled = false;
        assert_eq!(now.loosens(&before), Some("new_network"));

        let mut off = AlertingConfig::default();
        off.secret_reads.enabled = false;
        let mut retuned = off.clone();
        retuned.secret_reads.threshold = 1_000;
        assert_eq!(retuned.loosens(&off), None);
    }
}
