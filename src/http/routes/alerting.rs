//! `/t/{tenant}/api/v1/security/alerting`: the tenant's signals (thresholds and automatic
//! responses) and its alert webhook. Reading needs `settings.read`; changing needs
//! `settings.manage` (sensitive: a step-up), as any change to how the tenant is protected.

use actix_web::web;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::authz::actions::{SettingsManage, SettingsRead};
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::JsonBody;
use crate::http::pipeline::authz::Authorized;
use crate::signals::config::{AlertingConfig, LOOSENED_DETAIL, ResponseKind, SECRET_FIELD, Stored};
use crate::signals::detect::Subject;
use crate::signals::webhook;
use crate::tenancy::work::{Change, WriteTx};

/// The tenant's alerting.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertingView {
    pub alerting: AlertingConfig,
    /// Whether the webhook has a signing secret.
    pub webhook_secret_set: bool,
    /// The webhook's new signing secret (`whsec_…`), shown once: when a webhook is first set or
    /// its secret rotated. Verify deliveries with any Standard Webhooks library.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// How the webhook's secret is treated.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PutParams {
    /// Make a new signing secret for the webhook (the old one stops at once). Only a person may
    /// rotate a secret the webhook has: a service account's rotation is 403.
    #[serde(default)]
    pub rotate_webhook_secret: bool,
}

/// The scheme, host and port of the webhook URL `url`.
fn origin(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}

/// Read the tenant's signals and alert webhook.
///
/// The webhook URL is shown whole only to who may change the settings (`settings.manage`);
/// others see its origin (scheme, host and port), since a URL often carries a token.
#[utoipa::path(
    get,
    path = "/security/alerting",
    tag = "settings",
    responses((status = 200, body = AlertingView))
)]
pub async fn get_alerting(
    auth: Authorized<SettingsRead>,
) -> Result<web::Json<AlertingView>, ApiError> {
    let tx = auth.read().await?;
    let mut stored = Stored::load(&tx).await?;
    tx.commit().await?;
    // The URL may carry a token in its path or query (many do): whoever may only read the
    // settings sees its origin; whoever may change them sees it whole.
    if !auth.may::<SettingsManage>(auth.resource()) {
        stored.config.webhook_url = stored.config.webhook_url.as_deref().and_then(origin);
    }
    Ok(web::Json(AlertingView {
        webhook_secret_set: stored.sealed_secret.is_some(),
        alerting: stored.config,
        webhook_secret: None,
    }))
}

/// Set the tenant's signals and alert webhook.
///
/// Thresholds apply on this replica at once and on the others within 30 s. Automatic responses
/// only take access away (revoke a service account's API keys, end a person's sessions,
/// deactivate a person); each is recorded in the audit trail as `security.response`. Attaching
/// a response, or retuning a detector that has one, needs what the response does
/// (`api_key.revoke`, `service_account.disable`, `session.revoke` or `user.disable`)
/// throughout the tenant: 403 naming what the caller lacks. Only a person may loosen the
/// alerting (move or remove the webhook, forward fewer events, switch a detector off, raise a
/// threshold, shorten a window, take a response off, rotate the webhook's signing secret): a
/// service account's attempt is 403.
#[utoipa::path(
    put,
    path = "/security/alerting",
    tag = "settings",
    responses((status = 200, body = AlertingView))
)]
pub async fn put_alerting(
    auth: Authorized<SettingsManage>,
    query: web::Query<PutParams>,
    body: JsonBody<AlertingConfig>,
) -> Result<web::Json<AlertingView>, ApiError> {
    let rotate_webhook_secret = query.rotate_webhook_secret;
    let mut config = body.parse().await?;
    let mut problems: Vec<FieldError> = config
        .problems()
        .into_iter()
        .map(|(field, message)| FieldError { field, message })
        .collect();
    if let Some(url) = config.webhook_url.take() {
        match check_webhook(&auth, &url) {
            // Stored as parsed (normalised), the form deliveries send to.
            Ok(parsed) => config.webhook_url = Some(parsed.to_string()),
            Err(message) => problems.push(FieldError {
                field: "webhook_url".into(),
                message,
            }),
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let tx = auth.write().await?;
    let before = Stored::load(tx.conn()).await?;
    refuse_aiming(&auth, &config.responses_aimed(&before.config))?;
    // A new secret makes the receiver refuse every alert until it is given it: rotating a
    // secret that works silences the alerts as surely as removing the webhook.
    let rotates_working_secret =
        rotate_webhook_secret && before.sealed_secret.is_some() && config.webhook_url.is_some();
    let loosened = config
        .loosens(&before.config)
        .or(rotates_working_secret.then_some("webhook_secret"));
    // A leaked key must not blind the detectors that watch keys; a person who does raises the
    // `alerting_loosened` signal.
    if let Some(field) = loosened {
        auth.refuse_unless_person(field)?;
    }
    let replaced = match loosened {
        Some(_) => replaced_webhook(&auth, &tx, &before, &config, rotate_webhook_secret).await,
        None => None,
    };
    let mut new_secret = None;
    let sealed_secret = match (&config.webhook_url, before.sealed_secret) {
        (None, _) => None,
        (Some(_), Some(sealed)) if !rotate_webhook_secret => Some(sealed),
        (Some(_), _) => {
            let secret = webhook::new_secret().map_err(|e| ApiError::internal("alerting", e))?;
            let sealed = auth
                .envelope()
                .seal(
                    &auth,
                    &tx,
                    SECRET_FIELD,
                    secrecy::ExposeSecret::expose_secret(&secret).as_bytes(),
                )
                .await
                .map_err(|e| ApiError::internal("alerting", e))?;
            new_secret = Some(secret);
            Some(sealed)
        }
    };
    let stored = Stored {
        config,
        sealed_secret,
    };
    stored.save(&tx, auth.allowed()).await?;
    // The webhook URL may carry a token in its path or query (many do): only its origin is on
    // record.
    let mut recorded = stored.config.clone();
    recorded.webhook_url = recorded.webhook_url.as_deref().and_then(origin);
    let change = Change::new("alerting", auth.slug(), 200)
        .detail(
            "config",
            serde_json::to_value(&recorded).unwrap_or_default(),
        )
        .detail("webhook_secret_rotated", new_secret.is_some());
    let change = match loosened {
        Some(field) => change.detail(LOOSENED_DETAIL, field),
        None => change,
    };
    tx.commit(change).await?;
    auth.signals().reconfigured(auth.slug().as_str());
    if let (Some(field), Some(replaced)) = (loosened, replaced) {
        let principal = auth.principal();
        let subject = Subject::Principal {
            kind: principal.actor_type().to_owned(),
            id: principal.actor_id(),
        };
        crate::signals::alert_replaced_webhook(
            auth.alerts(),
            auth.slug(),
            subject,
            field,
            replaced,
        );
    }
    Ok(web::Json(AlertingView {
        webhook_secret_set: stored.sealed_secret.is_some(),
        alerting: stored.config,
        webhook_secret: new_secret.map(|s| secrecy::ExposeSecret::expose_secret(&s).to_owned()),
    }))
}

/// The webhook (URL and opened secret) in force `before` that this change moves, removes or
/// re-keys: it is told of the loosening, which the new configuration would not tell it. `None`
/// when there was none, it stays as it was, or its secret cannot be opened (logged).
async fn replaced_webhook(
    auth: &Authorized<SettingsManage>,
    tx: &WriteTx,
    before: &Stored,
    config: &AlertingConfig,
    rotate_secret: bool,
) -> Option<(String, SecretString)> {
    let (url, sealed) = before
        .config
        .webhook_url
        .clone()
        .zip(before.sealed_secret.as_deref())?;
    if config.webhook_url.as_ref() == Some(&url) && !rotate_secret {
        return None;
    }
    let slug = auth.slug().as_str();
    match auth
        .envelope()
        .open(slug, tx.conn(), SECRET_FIELD, sealed)
        .await
    {
        Ok(plain) => match String::from_utf8(plain.to_vec()) {
            Ok(secret) => Some((url, SecretString::from(secret))),
            Err(_) => None,
        },
        Err(e) => {
            tracing::warn!(tenant = slug, error = %e, "the replaced alert webhook's secret is unreadable; it is not told of the change");
            None
        }
    }
}

/// Refuses to aim automatic responses unless the caller holds, throughout the tenant, what
/// they do: `settings.manage` alone does not deactivate people or revoke keys, by hand or by
/// a detector tuned to fire on them.
fn refuse_aiming(
    auth: &Authorized<SettingsManage>,
    aimed: &[ResponseKind],
) -> Result<(), ApiError> {
    let policies = auth.policies();
    let actions = aimed.iter().map(|r| r.action());
    let missing =
        auth.engine()
            .not_delegable(policies, &auth.grantor(), actions, &policies.tenant());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(auth.refuse_delegation(&missing).into())
    }
}

/// The webhook URL, parsed, or why `url` cannot be one: it must be `https`, or `http` to a
/// private address literal the deployment lets outbound calls reach, with no credentials in
/// it, and be a URI the HTTP client sends.
fn check_webhook(auth: &Authorized<SettingsManage>, url: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if parsed.as_str().parse::<http::Uri>().is_err() {
        return Err("not a URI the HTTP client can send to".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL would be stored in plain text".into());
    }
    let host = parsed.host().ok_or("the URL has no host")?;
    let address = match host {
        url::Host::Ipv4(ip) => Some(std::net::IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(std::net::IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    };
    if address.is_some_and(|ip| !auth.may_reach(ip)) {
        return Err("the address is not one outbound calls may reach".into());
    }
    match (parsed.scheme(), address) {
        ("https", _) => Ok(parsed),
        ("http", Some(ip)) if inside(ip) => Ok(parsed),
        _ => Err("must be https (http only to an allowed private address literal)".into()),
    }
}

/// Whether `ip` is inside a deployment (loopback or private), where plain http may be fine.
fn inside(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local(),
    }
}
