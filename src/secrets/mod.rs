//! Tenant secrets: the ERP token a process uses, an integration's connection string, a webhook's
//! signing key.
//!
//! Names, folders and versions live in the tenant database; each version's value lives in the key
//! store (Vault KV v2 under the tenant's path, or the local sealed store) as its own record, named
//! by the version's id.
//!
//! Invariants:
//! - A value is written to the key store before the row naming it commits, so a committed version
//!   always has a value; a value whose row never committed is destroyed again (best effort: it is
//!   unreachable either way). Values are destroyed when their version expires or the secret is
//!   deleted, and with the tenant's keys when the tenant is deleted.
//! - Values are [`SecretString`]s from the moment they are parsed: nothing here logs, audits or
//!   returns them in an error. Only [`read_value`] (with an [`Allowed<SecretRead>`] for that very
//!   secret) and the [`resolver`] (with a `secret.use` decision per reference) hand them out.
//! - A replaced version stays readable until its `readable_until`, then is destroyed at the next
//!   rotation of the secret.

pub mod envelope;
pub mod resolver;

use std::time::Duration;

use chrono::Utc;
use entity::tenant::{secret, secret_version};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DbErr,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use crate::authz::actions::{SecretRead, SecretWrite};
use crate::authz::schema::EntityKind;
use crate::keystore::{KeyName, KeyStore, KeyStoreError, Purpose};
use crate::tenancy::work::{Allowed, Permit, WriteTx};

/// The longest value a secret may hold.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// How long a replaced version stays readable when the rotation does not say.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest grace a rotation may give the version it replaces.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Checks a secret's name: 1–100 of letters, digits, `.`, `_` and `-`, starting with a letter or
/// digit, so that `${secret:NAME}` references are unambiguous.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || name.len() > 100 {
        return Err("must be 1 to 100 characters and start with a letter or digit");
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err("may hold only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Checks a value: not empty, at most [`MAX_VALUE_BYTES`].
pub fn check_value(value: &SecretString) -> Result<(), String> {
    let len = value.expose_secret().len();
    if len == 0 {
        return Err("must not be empty".into());
    }
    if len > MAX_VALUE_BYTES {
        return Err(format!("must be at most {MAX_VALUE_BYTES} bytes"));
    }
    Ok(())
}

/// The key-store record of one version's value.
fn value_key(slug: &str, version_id: &Uuid) -> KeyName {
    KeyName::item(slug, Purpose::SecretValue, version_id)
}

/// Keeps `value` as the value of the version `version_id` (before its row commits).
pub async fn put_value(
    keystore: &dyn KeyStore,
    slug: &str,
    version_id: Uuid,
    value: &SecretString,
) -> Result<(), KeyStoreError> {
    keystore
        .put_record(
            &value_key(slug, &version_id),
            value.expose_secret().as_bytes(),
        )
        .await
}

/// Destroys the values of the versions `ids`; missing ones are skipped.
pub async fn destroy_values(
    keystore: &dyn KeyStore,
    slug: &str,
    ids: &[Uuid],
) -> Result<(), KeyStoreError> {
    for id in ids {
        keystore.delete_record(&value_key(slug, id)).await?;
    }
    Ok(())
}

/// Destroys values whose rows did not commit; a failure only leaves an unreachable record, so it
/// is logged (without the value) and not returned.
pub async fn discard_values(keystore: &dyn KeyStore, slug: &str, ids: &[Uuid]) {
    if let Err(e) = destroy_values(keystore, slug, ids).await {
        tracing::warn!(error = %e, tenant = slug, "could not destroy secret values of an abandoned change");
    }
}

/// Whether the version `id` is stored (any secret's, readable or not).
pub async fn version_stored(conn: &impl ConnectionTrait, id: Uuid) -> Result<bool, DbErr> {
    Ok(secret_version::Entity::find_by_id(id)
        .one(conn)
        .await?
        .is_some())
}

/// Why a version's value cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// No such version, or its grace period is over.
    #[error("the secret has no readable version {0}")]
    NoVersion(i32),
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// The value of `secret`'s version `version` (the current one for `None`), for the holder of a
/// `secret.read` decision on this very secret.
pub async fn read_value(
    conn: &impl ConnectionTrait,
    keystore: &dyn KeyStore,
    slug: &str,
    allowed: &Allowed<SecretRead>,
    secret: &secret::Model,
    version: Option<i32>,
) -> Result<(i32, SecretString), ValueError> {
    if !decided_on(allowed, secret.id) {
        return Err(ValueError::NoVersion(
            version.unwrap_or(secret.current_version),
        ));
    }
    value_of(conn, keystore, slug, secret, version).await
}

/// Whether `allowed` was decided on the secret `id` itself. A handler looks the name up again in
/// its own transaction, and by then the name may belong to another secret (deleted and made
/// again in a folder the caller has no right to): such a permit is worth nothing there.
pub fn decided_on<A: crate::authz::actions::Action>(allowed: &Allowed<A>, id: Uuid) -> bool {
    let resource = allowed.resource();
    resource.kind == EntityKind::Secret && resource.id == id.to_string()
}

/// The value of a readable version, whoever asks: callers prove their right first.
async fn value_of(
    conn: &impl ConnectionTrait,
    keystore: &dyn KeyStore,
    slug: &str,
    secret: &secret::Model,
    version: Option<i32>,
) -> Result<(i32, SecretString), ValueError> {
    let wanted = version.unwrap_or(secret.current_version);
    let row = secret_version::Entity::find()
        .filter(secret_version::Column::SecretId.eq(secret.id))
        .filter(secret_version::Column::Version.eq(wanted))
        .one(conn)
        .await?
        .filter(|v| v.readable_until.is_none_or(|until| until > Utc::now()))
        .ok_or(ValueError::NoVersion(wanted))?;
    let bytes = keystore
        .record(&value_key(slug, &row.id))
        .await?
        .ok_or(ValueError::NoVersion(wanted))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| KeyStoreError::Unexpected(anyhow::anyhow!("a secret value is not UTF-8")))?;
    Ok((wanted, SecretString::from(text)))
}

pub async fn by_name(
    conn: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<secret::Model>, DbErr> {
    secret::Entity::find()
        .filter(secret::Column::Name.eq(name))
        .one(conn)
        .await
}

/// The secret named `name`, locked until the transaction ends (on PostgreSQL; SQLite's write
/// transaction holds the file): a rotation and a deletion of one secret take turns, so that a
/// deletion destroys the values of every version, a rotation's included.
pub async fn lock_by_name(tx: &WriteTx, name: &str) -> Result<Option<secret::Model>, DbErr> {
    secret::Entity::find()
        .filter(secret::Column::Name.eq(name))
        .lock_exclusive()
        .one(tx.conn())
        .await
}

/// The versions of `secret_id`, newest first.
pub async fn versions(
    conn: &impl ConnectionTrait,
    secret_id: Uuid,
) -> Result<Vec<secret_version::Model>, DbErr> {
    secret_version::Entity::find()
        .filter(secret_version::Column::SecretId.eq(secret_id))
        .order_by_desc(secret_version::Column::Version)
        .all(conn)
        .await
}

/// Up to `limit` secrets after `after` in id order.
pub async fn page(
    conn: &impl ConnectionTrait,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<secret::Model>, DbErr> {
    let mut query = secret::Entity::find()
        .order_by_asc(secret::Column::Id)
        .limit(limit);
    if let Some(after) = after {
        query = query.filter(secret::Column::Id.gt(after));
    }
    query.all(conn).await
}

/// A secret to create; its value is already in the key store as version `version_id`.
pub struct NewSecret {
    pub name: String,
    pub folder_id: Option<Uuid>,
    pub description: Option<String>,
    pub labels: serde_json::Value,
    pub version_id: Uuid,
}

pub async fn create(
    tx: &WriteTx,
    _: &impl Permit<SecretWrite>,
    new: NewSecret,
) -> Result<secret::Model, DbErr> {
    let now = Utc::now();
    let secret = secret::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(new.name),
        folder_id: Set(new.folder_id),
        description: Set(new.description),
        labels: Set(new.labels),
        current_version: Set(1),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(tx.conn())
    .await?;
    insert_version(tx, secret.id, 1, new.version_id).await?;
    Ok(secret)
}

async fn insert_version(
    tx: &WriteTx,
    secret_id: Uuid,
    version: i32,
    id: Uuid,
) -> Result<(), DbErr> {
    secret_version::ActiveModel {
        id: Set(id),
        secret_id: Set(secret_id),
        version: Set(version),
        created_at: Set(Utc::now()),
        readable_until: Set(None),
    }
    .insert(tx.conn())
    .await?;
    Ok(())
}

/// What a rotation did.
pub struct Rotated {
    pub secret: secret::Model,
    /// The versions whose grace was over before this rotation: their rows are deleted, and
    /// their values (which nothing reads) are to be destroyed before this commits.
    pub expired: Vec<Uuid>,
    /// The version this rotation replaced with no grace: unreadable from now on, its value is
    /// destroyed once this commits (its row stays, expired, so that a value not destroyed then
    /// is by the next rotation).
    pub ended: Option<Uuid>,
}

/// Makes version `version_id` (whose value is in the key store) the current one; the version it
/// replaces stays readable for `grace`. `None` when `allowed` was decided on another secret.
pub async fn rotate(
    tx: &WriteTx,
    allowed: &Allowed<SecretWrite>,
    existing: secret::Model,
    version_id: Uuid,
    grace: Duration,
) -> Result<Option<Rotated>, DbErr> {
    if !decided_on(allowed, existing.id) {
        return Ok(None);
    }
    let conn = tx.conn();
    let now = Utc::now();
    let no_grace = grace.is_zero();
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let previous = existing.current_version;
    // Before the version replaced now is given its end: a rollback must find it readable.
    let expired: Vec<Uuid> = secret_version::Entity::find()
        .filter(secret_version::Column::SecretId.eq(existing.id))
        .filter(secret_version::Column::ReadableUntil.lte(now))
        .all(conn)
        .await?
        .into_iter()
        .map(|v| v.id)
        .collect();
    if !expired.is_empty() {
        secret_version::Entity::delete_many()
            .filter(secret_version::Column::Id.is_in(expired.clone()))
            .exec(conn)
            .await?;
    }
    secret_version::Entity::update_many()
        .col_expr(
            secret_version::Column::ReadableUntil,
            sea_orm::sea_query::Expr::value(now.checked_add_signed(grace)),
        )
        .filter(secret_version::Column::SecretId.eq(existing.id))
        .filter(secret_version::Column::Version.eq(previous))
        .exec(conn)
        .await?;
    let ended = match no_grace {
        true => secret_version::Entity::find()
            .filter(secret_version::Column::SecretId.eq(existing.id))
            .filter(secret_version::Column::Version.eq(previous))
            .one(conn)
            .await?
            .map(|v| v.id),
        false => None,
    };
    insert_version(tx, existing.id, previous + 1, version_id).await?;
    let mut row: secret::ActiveModel = existing.into();
    row.current_version = Set(previous + 1);
    row.updated_at = Set(now);
    let secret = row.update(conn).await?;
    Ok(Some(Rotated {
        secret,
        expired,
        ended,
    }))
}

/// Deletes the secret `id` and its versions; `Some(version ids)` whose values are to be destroyed,
/// or `None` when there is no such secret or `allowed` was decided on another one.
pub async fn delete(
    tx: &WriteTx,
    allowed: &Allowed<SecretWrite>,
    id: Uuid,
) -> Result<Option<Vec<Uuid>>, DbErr> {
    if !decided_on(allowed, id) {
        return Ok(None);
    }
    let conn = tx.conn();
    let ids = versions(conn, id)
        .await?
        .into_iter()
        .map(|v| v.id)
        .collect();
    secret_version::Entity::delete_many()
        .filter(secret_version::Column::SecretId.eq(id))
        .exec(conn)
        .await?;
    let deleted = secret::Entity::delete_by_id(id)
        .exec(conn)
        .await?
        .rows_affected
        > 0;
    Ok(deleted.then_some(ids))
}

/// `Some(folder)` of the secret `id` (itself `None` at the root), or `None` without such a
/// secret.
pub async fn folder_of(
    conn: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<Option<Uuid>>, DbErr> {
    Ok(secret::Entity::find_by_id(id)
        .one(conn)
        .await?
        .map(|s| s.folder_id))
}
