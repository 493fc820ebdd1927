//! A tenant's sign-in and session policy (its second-factor requirement, step-up age, the
//! actions only people may perform, session timeouts) and its payload-encryption requirement,
//! one row per setting in `tenant_settings`.
//!
//! Each replica caches a tenant's settings ([`SettingsCache`]) for at most [`SETTINGS_TTL`]; a
//! change makes every replica forget them at once (`AppState::forget_tenant`).

use std::num::NonZeroUsize;
use std::sync::Arc;

use chrono::Utc;
use entity::tenant::tenant_setting;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::authz::actions::SettingsManage;
use crate::tenancy::work::{Permit, WriteTx};
use crate::tenancy::{Access, Databases, Slug, TenancyError, TenantCache};

/// Whether the tenant asks for a second factor at sign-in.
///
/// - `required`: every person signing in with a session passes a passkey assertion; one who
///   has no passkey yet may only enroll one (and read `/me`).
/// - `optional`: a person who enrolled a passkey must assert with it; others sign in without.
/// - `off`: sign-in never asks for a passkey (step-up still may, see `step_up_minutes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mfa {
    Required,
    Optional,
    Off,
}

/// How long a passkey assertion counts as fresh for sensitive actions when the tenant set
/// nothing; the bounds of what it may set (0 turns step-up off).
pub const DEFAULT_STEP_UP_MINUTES: i64 = 5;
pub const STEP_UP_MINUTES: std::ops::RangeInclusive<i64> = 0..=24 * 60;

/// Session timeouts when the tenant set none.
pub const DEFAULT_IDLE_MINUTES: i64 = 30;
pub const DEFAULT_ABSOLUTE_MINUTES: i64 = 12 * 60;
/// The bounds of the timeouts a tenant may set.
pub const IDLE_MINUTES: std::ops::RangeInclusive<i64> = 1..=24 * 60;
pub const ABSOLUTE_MINUTES: std::ops::RangeInclusive<i64> = 5..=30 * 24 * 60;

/// The tenant's settings, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TenantSettings {
    /// Second factor at sign-in.
    pub mfa: Mfa,
    /// Minutes a passkey assertion stays fresh for the catalogue's sensitive actions done by a
    /// person (0: step-up off).
    pub step_up_minutes: i64,
    /// Actions (catalogue names) that API keys and client credentials never perform, whatever
    /// their roles grant: only people, signed in, may.
    pub human_only_actions: Vec<String>,
    /// Minutes of inactivity after which a session ends.
    pub session_idle_minutes: i64,
    /// Minutes after sign-in at which a session ends, however active.
    pub session_absolute_minutes: i64,
    /// Every operation of the tenant API (but the settings operations) takes and gives only
    /// encrypted payloads (`application/jose`).
    pub payload_encryption_required: bool,
    /// Operation ids (as in the OpenAPI document) that take and give only encrypted payloads,
    /// beside the tenant-wide requirement.
    pub payload_encryption_operations: Vec<String>,
    /// Authenticator models (AAGUIDs) whose passkeys may be registered and used; empty: any.
    /// Break-glass accounts are exempt (the operator's way in).
    /// With attestation `none` the model is what the authenticator reports, so the list keeps
    /// honest authenticators of other models out, not a forged one. The nil UUID stands for
    /// authenticators that report no model.
    pub passkey_aaguids: Vec<uuid::Uuid>,
}

impl TenantSettings {
    /// How recent, in minutes, a passkey assertion must be to add or remove a passkey: the
    /// step-up age, or its default where step-up is off (changing one's own authenticators is
    /// never exempt).
    pub fn passkey_change_minutes(&self) -> i64 {
        match self.step_up_minutes {
            0 => DEFAULT_STEP_UP_MINUTES,
            minutes => minutes,
        }
    }
}

const MFA: &str = "mfa";
const STEP_UP: &str = "step_up_minutes";
const HUMAN_ONLY: &str = "human_only_actions";
const IDLE: &str = "session_idle_minutes";
const ABSOLUTE: &str = "session_absolute_minutes";
const ENCRYPTION_REQUIRED: &str = "payload_encryption_required";
const ENCRYPTION_OPERATIONS: &str = "payload_encryption_operations";
const AAGUIDS: &str = "passkey_aaguids";

/// The longest list of allowed authenticator models.
pub const MAX_AAGUIDS: usize = 100;

impl TenantSettings {
    pub async fn load(conn: &impl ConnectionTrait) -> Result<Self, DbErr> {
        let rows = tenant_setting::Entity::find().all(conn).await?;
        let value = |key: &str| rows.iter().find(|r| r.key == key).map(|r| &r.value);
        let minutes = |key: &str, range: &std::ops::RangeInclusive<i64>, default: i64| {
            value(key)
                .and_then(Value::as_i64)
                .filter(|m| range.contains(m))
                .unwrap_or(default)
        };
        Ok(TenantSettings {
            mfa: value(MFA)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or(Mfa::Off),
            step_up_minutes: minutes(STEP_UP, &STEP_UP_MINUTES, DEFAULT_STEP_UP_MINUTES),
            human_only_actions: value(HUMAN_ONLY)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default(),
            session_idle_minutes: minutes(IDLE, &IDLE_MINUTES, DEFAULT_IDLE_MINUTES),
            session_absolute_minutes: minutes(
                ABSOLUTE,
                &ABSOLUTE_MINUTES,
                DEFAULT_ABSOLUTE_MINUTES,
            ),
            payload_encryption_required: value(ENCRYPTION_REQUIRED)
                .and_then(Value::as_bool)
                .unwrap_or(false),
            payload_encryption_operations: value(ENCRYPTION_OPERATIONS)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default(),
            passkey_aaguids: value(AAGUIDS)
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default(),
        })
    }

    /// Stores every setting.
    pub async fn save(&self, tx: &WriteTx, _: &impl Permit<SettingsManage>) -> Result<(), DbErr> {
        let now = Utc::now();
        for (key, value) in [
            (MFA, serde_json::to_value(self.mfa).unwrap_or_default()),
            (STEP_UP, Value::from(self.step_up_minutes)),
            (HUMAN_ONLY, Value::from(self.human_only_actions.clone())),
            (IDLE, Value::from(self.session_idle_minutes)),
            (ABSOLUTE, Value::from(self.session_absolute_minutes)),
            (
                ENCRYPTION_REQUIRED,
                Value::from(self.payload_encryption_required),
            ),
            (
                ENCRYPTION_OPERATIONS,
                Value::from(self.payload_encryption_operations.clone()),
            ),
            (
                AAGUIDS,
                serde_json::to_value(&self.passkey_aaguids).unwrap_or_default(),
            ),
        ] {
            put_setting(tx, key, value, now).await?;
        }
        Ok(())
    }
}

/// Stores the tenant setting `key` (inserted, or replacing its value), changed at `now`: the
/// one writer of `tenant_settings` rows, for these settings and for others kept beside them
/// (the tenant's alerting, `signals::config`).
pub(crate) async fn put_setting(
    tx: &WriteTx,
    key: &str,
    value: Value,
    now: chrono::DateTime<Utc>,
) -> Result<(), DbErr> {
    tenant_setting::Entity::insert(tenant_setting::ActiveModel {
        key: Set(key.to_owned()),
        value: Set(value),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(tenant_setting::Column::Key)
            .update_columns([
                tenant_setting::Column::Value,
                tenant_setting::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec(tx.conn())
    .await?;
    Ok(())
}

/// How long a replica serves a tenant's cached settings without reading them again: bounds a
/// missed change notice.
pub const SETTINGS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Tenants' settings as this replica last read them, by slug.
pub struct SettingsCache(TenantCache<Arc<TenantSettings>>);

impl Default for SettingsCache {
    fn default() -> Self {
        SettingsCache(TenantCache::with_ttl(
            NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
            SETTINGS_TTL,
        ))
    }
}

impl SettingsCache {
    /// The settings of tenant `slug` (a [`Slug`]), read in their own transaction when not cached.
    #[expect(
        clippy::disallowed_methods,
        reason = "authentication and the unit of work read the settings before any decision"
    )]
    pub async fn get(
        &self,
        dbs: &Databases,
        slug: &Slug,
    ) -> Result<Arc<TenantSettings>, TenancyError> {
        self.0
            .get_or_try_load(slug.as_str(), || async {
                let tx = dbs.begin(slug, Access::Read).await?;
                let settings = TenantSettings::load(&tx).await?;
                tx.commit().await?;
                Ok(Arc::new(settings))
            })
            .await
    }

    pub fn forget(&self, slug: &str) {
        self.0.invalidate(slug);
    }

    pub fn forget_all(&self) {
        self.0.clear();
    }
}
