//! Users of a tenant.

use std::collections::BTreeMap;

use chrono::Utc;
use entity::tenant::user;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait as _,
    QuerySelect as _,
};
use uuid::Uuid;

use super::AccountStatus;
use crate::authz::actions::{UserCreate, UserDisable, UserUpdate};
use crate::tenancy::work::{AutomaticResponse, Permit, WriteTx};

/// A validated new user.
pub struct NewUser {
    pub email: String,
    pub display_name: String,
}

/// Checks an email address loosely (one `@`, both sides non-empty, no spaces, at most 254
/// characters) and lower-cases it: delivery is the identity provider's business, uniqueness is
/// ours.
pub fn clean_email(value: &str) -> Result<String, String> {
    let value = value.trim();
    let valid = value.len() <= 254
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        })
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(value.to_lowercase())
    } else {
        Err("must be an email address such as ada@example.com".into())
    }
}

pub async fn create(
    tx: &WriteTx,
    _: &impl Permit<UserCreate>,
    new: NewUser,
) -> Result<user::Model, DbErr> {
    let now = Utc::now();
    user::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(new.email),
        display_name: Set(new.display_name),
        attributes: Set(serde_json::to_value(BTreeMap::<String, String>::new()).unwrap_or_default()),
        status: Set(AccountStatus::Active.as_str().into()),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(tx.conn())
    .await
}

/// Sets the display name (when given) and the attributes.
pub async fn update(
    tx: &WriteTx,
    _: &impl Permit<UserUpdate>,
    existing: user::Model,
    display_name: Option<String>,
    attributes: &BTreeMap<String, String>,
) -> Result<user::Model, DbErr> {
    let mut row: user::ActiveModel = existing.into();
    if let Some(name) = display_name {
        row.display_name = Set(name);
    }
    row.attributes = Set(serde_json::to_value(attributes).unwrap_or_default());
    row.updated_at = Set(Utc::now());
    row.update(tx.conn()).await
}

/// User `id`, locked until the caller's transaction ends (PostgreSQL; SQLite's write
/// transaction holds the file): concurrent changes of one user take turns.
pub async fn get_locked(tx: &WriteTx, id: Uuid) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find_by_id(id)
        .lock_exclusive()
        .one(tx.conn())
        .await
}

/// Sets the status of `user`. A disabled person cannot sign in or use a session; end their
/// sessions in the same change, so that enabling them brings none back.
pub async fn set_status(
    tx: &WriteTx,
    _: &impl Permit<UserDisable>,
    user: user::Model,
    status: AccountStatus,
) -> Result<user::Model, DbErr> {
    write_status(tx, user, status).await
}

/// Deactivates user `id` (they can no longer sign in or keep a session); `false` when there is
/// no such user.
pub async fn deactivate(tx: &WriteTx, _: &AutomaticResponse, id: Uuid) -> Result<bool, DbErr> {
    let Some(existing) = get(tx.conn(), id).await? else {
        return Ok(false);
    };
    write_status(tx, existing, AccountStatus::Disabled).await?;
    Ok(true)
}

async fn write_status(
    tx: &WriteTx,
    user: user::Model,
    status: AccountStatus,
) -> Result<user::Model, DbErr> {
    let mut row: user::ActiveModel = user.into();
    row.status = Set(status.as_str().into());
    row.updated_at = Set(Utc::now());
    row.update(tx.conn()).await
}

pub async fn get(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find_by_id(id).one(conn).await
}

/// Whether user `id` exists and is active (may sign in and keep a session).
pub async fn is_active(conn: &impl ConnectionTrait, id: Uuid) -> Result<bool, DbErr> {
    Ok(get(conn, id)
        .await?
        .is_some_and(|u| AccountStatus::parse(&u.status) == AccountStatus::Active))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(clean_email(" Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a da@example.com",
            "ada@@example.com",
            "ada@.com",
        ] {
            assert!(clean_email(bad).is_err(), "{bad}");
        }
    }
}
