//! `/t/{tenant}/api/v1/settings`: the tenant's sign-in and session policy, and its
//! payload-encryption requirement.

use actix_web::web;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::authz::actions::{CATALOGUE, is_known};
use crate::authz::actions::{SettingsManage, SettingsRead};
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::JsonBody;
use crate::http::jose::negotiate::{NEVER_REQUIRED, settable_operations};
use crate::http::pipeline::authz::Authorized;
use crate::signin::settings::{
    ABSOLUTE_MINUTES, IDLE_MINUTES, MAX_AAGUIDS, Mfa, STEP_UP_MINUTES, TenantSettings,
};
use crate::tenancy::work::Change;

/// Changes to the tenant's settings; fields left out keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"mfa": "optional", "step_up_minutes": 5, "human_only_actions": ["role_binding.create"], "session_idle_minutes": 20, "session_absolute_minutes": 480, "payload_encryption_required": false, "payload_encryption_operations": ["create_user"], "passkey_aaguids": ["cb69481e-8ff7-4039-93ec-0a2729a154a8"]}))]
pub struct UpdateSettings {
    /// `required` is refused where passkeys cannot work (a public URL without a domain name),
    /// so that no tenant locks its people out or believes it is protected when it is not.
    pub mfa: Option<Mfa>,
    /// 0 to 1,440; 0 turns step-up off.
    pub step_up_minutes: Option<i64>,
    /// Catalogue actions only people may perform (replaces the list).
    pub human_only_actions: Option<Vec<String>>,
    /// 1 to 1,440.
    pub session_idle_minutes: Option<i64>,
    /// 5 to 43,200.
    pub session_absolute_minutes: Option<i64>,
    /// Require encrypted payloads (`application/jose`) on every operation but these settings.
    pub payload_encryption_required: Option<bool>,
    /// Operation ids that require encrypted payloads (replaces the list; at most 200; the
    /// settings operations cannot be listed).
    pub payload_encryption_operations: Option<Vec<String>>,
    /// Authenticator models (AAGUIDs) whose passkeys may be registered and used (replaces the
    /// list; at most 100; empty: any). Passkeys of other models, and those registered before
    /// models were recorded, are refused from the next ceremony; an admin resets a person's
    /// passkeys so they can enroll an allowed one.
    pub passkey_aaguids: Option<Vec<uuid::Uuid>>,
}

/// The longest list of operations that require encryption.
const MAX_ENCRYPTED_OPERATIONS: usize = 200;

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
/// New session timeouts and second-factor rules apply to every session at its next request. A
/// human-only list applies at once. A new payload-encryption
/// requirement applies on this replica at once and on the others within seconds; these
/// settings operations are never required to be encrypted, so the requirement can always be
/// turned off. Only a person may take an action off `human_only_actions`: a service account's
/// key cannot lift the reservations made against keys.
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
    if changes.mfa == Some(Mfa::Required) && !auth.passkeys().available() {
        problems.push(FieldError {
            field: "mfa".into(),
            message: "passkeys are unavailable on this deployment (its public URL names no \
                      domain): a required second factor would lock everyone out"
                .into(),
        });
    }
    if let Some(actions) = &changes.human_only_actions {
        problems.extend(check_actions(actions));
    }
    for (field, value, range) in [
        ("step_up_minutes", changes.step_up_minutes, STEP_UP_MINUTES),
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
    if let Some(operations) = &changes.payload_encryption_operations {
        problems.extend(check_operations(operations));
    }
    if changes
        .passkey_aaguids
        .as_ref()
        .is_some_and(|models| models.len() > MAX_AAGUIDS)
    {
        problems.push(FieldError {
            field: "passkey_aaguids".into(),
            message: format!("at most {MAX_AAGUIDS} authenticator models"),
        });
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let tx = auth.write().await?;
    let before = TenantSettings::load(tx.conn()).await?;
    let mut settings = before.clone();
    if let Some(mfa) = changes.mfa {
        settings.mfa = mfa;
    }
    if let Some(minutes) = changes.step_up_minutes {
        settings.step_up_minutes = minutes;
    }
    if let Some(mut actions) = changes.human_only_actions {
        actions.sort_unstable();
        actions.dedup();
        settings.human_only_actions = actions;
    }
    if let Some(minutes) = changes.session_idle_minutes {
        settings.session_idle_minutes = minutes;
    }
    if let Some(minutes) = changes.session_absolute_minutes {
        settings.session_absolute_minutes = minutes;
    }
    if let Some(required) = changes.payload_encryption_required {
        settings.payload_encryption_required = required;
    }
    if let Some(mut operations) = changes.payload_encryption_operations {
        operations.sort_unstable();
        operations.dedup();
        settings.payload_encryption_operations = operations;
    }
    if let Some(mut models) = changes.passkey_aaguids {
        models.sort_unstable();
        models.dedup();
        settings.passkey_aaguids = models;
    }
    // The reservations are what a service account may not do: lifting one is a grant to
    // service accounts, its own key's included.
    if before
        .human_only_actions
        .iter()
        .any(|a| !settings.human_only_actions.contains(a))
    {
        auth.refuse_unless_person("human_only_actions")?;
    }
    settings.save(&tx, auth.allowed()).await?;
    tx.commit(
        Change::new("settings", auth.slug(), 200)
            // Every replica forgets its cached payload-encryption requirement.
            .invalidating()
            .detail(
                "mfa",
                serde_json::to_value(settings.mfa).unwrap_or_default(),
            )
            .detail("step_up_minutes", settings.step_up_minutes)
            .detail("human_only_actions", settings.human_only_actions.join(","))
            .detail("session_idle_minutes", settings.session_idle_minutes)
            .detail(
                "session_absolute_minutes",
                settings.session_absolute_minutes,
            )
            .detail(
                "payload_encryption_required",
                settings.payload_encryption_required,
            )
            .detail(
                "payload_encryption_operations",
                settings.payload_encryption_operations.join(","),
            )
            .detail("passkey_aaguids", models_detail(&settings.passkey_aaguids)),
    )
    .await?;
    Ok(web::Json(settings))
}

/// The allowed authenticator models, as the audit event records them.
fn models_detail(models: &[uuid::Uuid]) -> String {
    models
        .iter()
        .map(uuid::Uuid::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The problems of a list of human-only actions: each must be in the catalogue.
fn check_actions(actions: &[String]) -> Vec<FieldError> {
    if actions.len() > CATALOGUE.len() {
        return vec![FieldError {
            field: "human_only_actions".into(),
            message: format!("at most {} actions", CATALOGUE.len()),
        }];
    }
    actions
        .iter()
        .enumerate()
        .filter(|(_, name)| !is_known(name))
        .map(|(i, _)| FieldError {
            field: format!("human_only_actions[{i}]"),
            message: "no action of the catalogue has this name".into(),
        })
        .collect()
}

/// The problems of a list of operations that require encryption: each must be an operation id
/// of the tenant API, and not a settings operation.
fn check_operations(operations: &[String]) -> Vec<FieldError> {
    let field = "payload_encryption_operations";
    if operations.len() > MAX_ENCRYPTED_OPERATIONS {
        return vec![FieldError {
            field: field.into(),
            message: format!("at most {MAX_ENCRYPTED_OPERATIONS} operations"),
        }];
    }
    operations
        .iter()
        .enumerate()
        .filter_map(|(i, id)| {
            let message = if NEVER_REQUIRED.contains(&id.as_str()) {
                "the settings operations cannot require encryption (it could not be turned off)"
            } else if !settable_operations().any(|known| known == id) {
                "no operation of the tenant API has this id"
            } else {
                return None;
            };
            Some(FieldError {
                field: format!("{field}[{i}]"),
                message: message.into(),
            })
        })
        .collect()
}
