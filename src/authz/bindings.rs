//! Role bindings: a role granted to a subject on a scope.

use chrono::{SubsecRound as _, Utc};
use entity::tenant::{group, role_binding, service_account, user};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveModelTrait as _, ConnectionTrait, DbErr, EntityTrait as _};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::schema::EntityKind;

use super::actions::{RoleBindingCreate, RoleBindingDelete};
use crate::tenancy::work::{Permit, WriteTx};

/// Who a binding grants to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubjectType {
    User,
    ServiceAccount,
    Group,
}

/// What a binding grants on. Folder scopes cover everything inside the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeType {
    Tenant,
    Folder,
    Process,
    Form,
    Report,
    Secret,
}

/// Subject and scope types are Cedar entity kinds under another name: `kind` is the one table
/// (matched exhaustively) that the API names, the engine's entity types and scope resolution
/// are read from.
impl SubjectType {
    pub const ALL: [SubjectType; 3] = [
        SubjectType::User,
        SubjectType::ServiceAccount,
        SubjectType::Group,
    ];

    /// The Cedar entity kind of subjects of this type.
    pub fn kind(self) -> EntityKind {
        match self {
            SubjectType::User => EntityKind::User,
            SubjectType::ServiceAccount => EntityKind::ServiceAccount,
            SubjectType::Group => EntityKind::Group,
        }
    }

    /// Its name in the API (`service_account`): the kind's.
    pub fn as_str(self) -> &'static str {
        self.kind().api_name()
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl ScopeType {
    pub const ALL: [ScopeType; 6] = [
        ScopeType::Tenant,
        ScopeType::Folder,
        ScopeType::Process,
        ScopeType::Form,
        ScopeType::Report,
        ScopeType::Secret,
    ];

    /// The Cedar entity kind a binding on this scope names; what it covers is that object and,
    /// for a folder, everything inside it.
    pub fn kind(self) -> EntityKind {
        match self {
            ScopeType::Tenant => EntityKind::Tenant,
            ScopeType::Folder => EntityKind::Folder,
            ScopeType::Process => EntityKind::Process,
            ScopeType::Form => EntityKind::Form,
            ScopeType::Report => EntityKind::Report,
            ScopeType::Secret => EntityKind::Secret,
        }
    }

    /// Its name in the API (`folder`): the kind's.
    pub fn as_str(self) -> &'static str {
        self.kind().api_name()
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A validated binding to create.
pub struct NewBinding {
    pub role: String,
    pub subject_type: SubjectType,
    pub subject_id: Uuid,
    pub scope_type: ScopeType,
    pub scope_id: Option<String>,
}

/// Whether the subject exists in the transaction's tenant.
pub async fn subject_exists(
    conn: &impl ConnectionTrait,
    kind: SubjectType,
    id: Uuid,
) -> Result<bool, DbErr> {
    Ok(match kind {
        SubjectType::User => user::Entity::find_by_id(id).one(conn).await?.is_some(),
        SubjectType::ServiceAccount => service_account::Entity::find_by_id(id)
            .one(conn)
            .await?
            .is_some(),
        SubjectType::Group => group::Entity::find_by_id(id).one(conn).await?.is_some(),
    })
}

/// Creates the binding unless the same role, subject and scope are already bound (`None`).
/// The unique index decides between concurrent creations, without an error that would abort
/// the transaction on PostgreSQL (and with it the change's record).
pub async fn create(
    tx: &WriteTx,
    _: &impl Permit<RoleBindingCreate>,
    new: NewBinding,
) -> Result<Option<role_binding::Model>, DbErr> {
    let binding = role_binding::Model {
        id: Uuid::now_v7(),
        role: new.role,
        subject_type: new.subject_type.as_str().to_owned(),
        subject_id: new.subject_id,
        scope_type: new.scope_type.as_str().to_owned(),
        scope_id: new.scope_id,
        // As the databases keep it (microseconds), so that the answer and a later read agree.
        created_at: Utc::now().trunc_subsecs(6),
    };
    let inserted =
        role_binding::Entity::insert(role_binding::ActiveModel::from(binding.clone()).reset_all())
            .on_conflict(OnConflict::new().do_nothing().to_owned())
            .exec_without_returning(tx.conn())
            .await?;
    Ok((inserted == 1).then_some(binding))
}

/// Deletes the binding `id` and returns it; `None` if there was none.
pub async fn delete(
    tx: &WriteTx,
    _: &impl Permit<RoleBindingDelete>,
    id: Uuid,
) -> Result<Option<role_binding::Model>, DbErr> {
    let conn = tx.conn();
    let Some(binding) = role_binding::Entity::find_by_id(id).one(conn).await? else {
        return Ok(None);
    };
    let deleted = role_binding::Entity::delete_by_id(id)
        .exec(conn)
        .await?
        .rows_affected;
    Ok((deleted > 0).then_some(binding))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON names (serde's) and the table's names (the entity kinds') are the same words.
    #[test]
    fn every_type_is_named_alike_in_json_and_in_the_table() {
        for t in SubjectType::ALL {
            assert_eq!(serde_json::json!(t), t.as_str());
            assert_eq!(SubjectType::parse(t.as_str()), Some(t));
        }
        for t in ScopeType::ALL {
            assert_eq!(serde_json::json!(t), t.as_str());
            assert_eq!(ScopeType::parse(t.as_str()), Some(t));
        }
        assert_eq!(ScopeType::parse("user"), None);
    }
}
