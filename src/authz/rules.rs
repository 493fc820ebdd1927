//! Changes to a tenant's stored rules: custom roles and claim-based policies (role bindings are
//! in [`super::bindings`]). Each change needs the proof of its action, and every policy change
//! keeps a version with its author.

use chrono::Utc;
use entity::tenant::{policy, policy_version, role, role_binding};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DbErr,
    EntityTrait as _, PaginatorTrait as _, QueryFilter as _, QuerySelect as _,
};
use uuid::Uuid;

use super::actions::{PolicyManage, RoleManage};
use crate::identity::Principal;
use crate::tenancy::work::{Permit, WriteTx};

/// A kind of rule a tenant stores, each with the most of it one tenant may hold. Every rule is
/// compiled into the tenant's policy set whenever one changes, so the bound is on that build's
/// time and memory (the tenant's requests wait for it, on a pool all tenants share) as much as
/// on storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Policy,
    CustomRole,
    RoleBinding,
}

impl RuleKind {
    /// The most rules of the kind a tenant may hold.
    pub const fn most(self) -> u64 {
        match self {
            RuleKind::Policy => 1_000,
            RuleKind::CustomRole => 200,
            RuleKind::RoleBinding => 5_000,
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            RuleKind::Policy => "policies",
            RuleKind::CustomRole => "custom roles",
            RuleKind::RoleBinding => "role bindings",
        }
    }
}

/// A rule refused because its tenant holds as many of its kind as it may.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("the tenant holds {} {}, the most it may; delete one first", .0.most(), .0.plural())]
    Full(RuleKind),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Refuses a new rule of `kind` when the transaction's tenant holds the most it may. Creations
/// committed together on PostgreSQL may pass it together: the bound is on a build's cost, which
/// a few more rules do not change.
pub async fn ensure_room(conn: &impl ConnectionTrait, kind: RuleKind) -> Result<(), RuleError> {
    let held = match kind {
        RuleKind::Policy => policy::Entity::find().count(conn).await?,
        RuleKind::CustomRole => role::Entity::find().count(conn).await?,
        RuleKind::RoleBinding => role_binding::Entity::find().count(conn).await?,
    };
    if held < kind.most() {
        Ok(())
    } else {
        Err(RuleError::Full(kind))
    }
}

/// The custom role `name`.
pub async fn find_role(
    conn: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<role::Model>, DbErr> {
    role::Entity::find()
        .filter(role::Column::Name.eq(name))
        .one(conn)
        .await
}

/// Creates a custom role; a duplicate name is a unique-constraint error.
pub async fn create_role(
    tx: &WriteTx,
    _: &impl Permit<RoleManage>,
    name: String,
    description: String,
    actions: &[String],
) -> Result<role::Model, DbErr> {
    let now = Utc::now();
    role::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name),
        description: Set(description),
        actions: Set(serde_json::json!(actions)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(tx.conn())
    .await
}

/// Replaces a custom role's actions and description.
pub async fn update_role(
    tx: &WriteTx,
    _: &impl Permit<RoleManage>,
    existing: role::Model,
    description: String,
    actions: &[String],
) -> Result<role::Model, DbErr> {
    let mut row: role::ActiveModel = existing.into();
    row.actions = Set(serde_json::json!(actions));
    row.description = Set(description);
    row.updated_at = Set(Utc::now());
    row.update(tx.conn()).await
}

/// How many bindings grant the role `name`.
pub async fn role_bindings(conn: &impl ConnectionTrait, name: &str) -> Result<u64, DbErr> {
    role_binding::Entity::find()
        .filter(role_binding::Column::Role.eq(name))
        .count(conn)
        .await
}

/// Deletes a custom role (the caller checked it is unbound).
pub async fn delete_role(tx: &WriteTx, _: &impl Permit<RoleManage>, id: Uuid) -> Result<(), DbErr> {
    role::Entity::delete_by_id(id).exec(tx.conn()).await?;
    Ok(())
}

/// The policy `id`, locked (on PostgreSQL; SQLite's write transaction holds the file) so that
/// concurrent changes take turns at its next version.
pub async fn lock_policy(tx: &WriteTx, id: Uuid) -> Result<Option<policy::Model>, DbErr> {
    policy::Entity::find_by_id(id)
        .lock_exclusive()
        .one(tx.conn())
        .await
}

/// A validated policy to store.
pub struct PolicyText {
    pub description: String,
    pub text: String,
}

/// Creates a claim-based policy at version 1; a duplicate name is a unique-constraint error.
pub async fn create_policy(
    tx: &WriteTx,
    permit: &impl Permit<PolicyManage>,
    author: &Principal,
    name: String,
    new: PolicyText,
) -> Result<policy::Model, DbErr> {
    let now = Utc::now();
    let created = policy::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name),
        description: Set(new.description),
        text: Set(new.text),
        version: Set(1),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(tx.conn())
    .await?;
    record_version(tx, permit, author, &created, Some(created.text.clone())).await?;
    Ok(created)
}

/// Stores a new version of the policy.
pub async fn update_policy(
    tx: &WriteTx,
    permit: &impl Permit<PolicyManage>,
    author: &Principal,
    existing: policy::Model,
    new: PolicyText,
) -> Result<policy::Model, DbErr> {
    let version = existing.version + 1;
    let mut row: policy::ActiveModel = existing.into();
    row.text = Set(new.text);
    row.description = Set(new.description);
    row.version = Set(version);
    row.updated_at = Set(Utc::now());
    let updated = row.update(tx.conn()).await?;
    record_version(tx, permit, author, &updated, Some(updated.text.clone())).await?;
    Ok(updated)
}

/// Deletes the policy; its history stays, ending in a version without text.
pub async fn delete_policy(
    tx: &WriteTx,
    permit: &impl Permit<PolicyManage>,
    author: &Principal,
    existing: &policy::Model,
) -> Result<(), DbErr> {
    policy::Entity::delete_by_id(existing.id)
        .exec(tx.conn())
        .await?;
    let deleted = policy::Model {
        version: existing.version + 1,
        ..existing.clone()
    };
    record_version(tx, permit, author, &deleted, None).await
}

async fn record_version(
    tx: &WriteTx,
    _: &impl Permit<PolicyManage>,
    author: &Principal,
    policy: &policy::Model,
    text: Option<String>,
) -> Result<(), DbErr> {
    policy_version::ActiveModel {
        id: Set(Uuid::now_v7()),
        policy_id: Set(policy.id),
        name: Set(policy.name.clone()),
        version: Set(policy.version),
        text: Set(text),
        actor_type: Set(author.actor_type().to_owned()),
        actor_id: Set(author.actor_id()),
        created_at: Set(Utc::now()),
    }
    .insert(tx.conn())
    .await?;
    Ok(())
}
