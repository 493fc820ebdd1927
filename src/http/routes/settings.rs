//! `/t/{tenant}/api/v1/settings`: the tenant's sign-in and session policy.

use actix_web::web;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::authz::actions::{SettingsManage, SettingsRead};
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::JsonBody;
use crate::http::pipeline::authz::Authorized;
use crate::signin::settings::{ABSOLUTE_MINUTES, IDLE_MINUTES, Mfa, TenantSettings};
use crate::tenancy::work::Change;

/// Changes to the tenant's settings; fields left out keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"mfa": "optional", "session_idle_minutes": 20, "session_absolute_minutes": 480}))]
pub struct UpdateSettings {
    /// `required` is refused until WebAuthn MFA is available, so that no tenant believes it is
    /// protected when it is not.
    pub mfa: Option<Mfa>,
    /// 1 to 1,440.
    pub session_idle_minutes: Option<i64>,
    /// 5 to 43,200.
    pub session_absolute_minutes: Option<i64>,
}

/// Read the tenant's settings.
#[utoipa::path(
    get,
    path = "/settings",
    tag = "settings",
    responses((status = 200, body = TenantSettings))
)]
pub async fn get_settings(
    auth: Authorized<SettingsRead>,
) -> Result<web::Json<TenantSettings>, ApiError> {
    let tx = auth.read().await?;
    let settings = TenantSettings::load(&tx).await?;
    tx.commit().await?;
    Ok(web::Json(settings))
}

/// Change the tenant's settings.
///
/// New session timeouts apply to every session at its next request.
#[utoipa::path(
    patch,
    path = "/settings",
    tag = "settings",
    responses((status = 200, body = TenantSettings))
)]
pub async fn update_settings(
    auth: Authorized<SettingsManage>,
    body: JsonBody<UpdateSettings>,
) -> Result<web::Json<TenantSettings>, ApiError> {
    let changes = body.parse().await?;
    let mut problems = Vec::new();
    if changes.mfa == Some(Mfa::Required) {
        problems.push(FieldError {
            field: "mfa".into(),
            message: "a required second factor is not available yet (WebAuthn MFA is coming); \
                      use `optional` or `off`"
                .into(),
        });
    }
    for (field, value, range) in [
        (
            "session_idle_minutes",
            changes.session_idle_minutes,
            IDLE_MINUTES,
        ),
        (
            "session_absolute_minutes",
            changes.session_absolute_minutes,
            ABSOLUTE_MINUTES,
        ),
    ] {
        if value.is_some_and(|v| !range.contains(&v)) {
            problems.push(FieldError {
                field: field.into(),
                message: format!("must be between {} and {}", range.start(), range.end()),
            });
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let tx = auth.write().await?;
    let mut settings = TenantSettings::load(tx.conn()).await?;
    if let Some(mfa) = changes.mfa {
        settings.mfa = mfa;
    }
    if let Some(minutes) = changes.session_idle_minutes {
        settings.session_idle_minutes = minutes;
    }
    if let Some(minutes) = changes.session_absolute_minutes {
        settings.session_absolute_minutes = minutes;
    }
    settings.save(&tx, auth.allowed()).await?;
    tx.commit(
        Change::new("settings", auth.slug(), 200)
            .detail("session_idle_minutes", settings.session_idle_minutes)
            .detail(
                "session_absolute_minutes",
                settings.session_absolute_minutes,
            ),
    )
    .await?;
    Ok(web::Json(settings))
}
