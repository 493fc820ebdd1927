//! Names and ids: the policy ids a tenant's set uses (`binding:<id>`, `binding:<id>#<n>`) and
//! the names decisions report for them, and the entities that policy and binding scopes name.

use cedar_policy::{EntityUid, Policy, PolicyId, PrincipalConstraint, ResourceConstraint};
use uuid::Uuid;

use super::request::Resource;
use crate::authz::bindings::ScopeType;
use crate::authz::schema::EntityKind;

/// `binding:<id>` for a role's first grant, `binding:<id>#<n>` for the others.
pub(super) fn link_id(binding: Uuid, grant: usize) -> PolicyId {
    if grant == 0 {
        PolicyId::new(format!("binding:{binding}"))
    } else {
        PolicyId::new(format!("binding:{binding}#{grant}"))
    }
}

/// The name a decision reports for a policy: a binding's grants all report the binding.
pub(super) fn reason_name(id: &PolicyId) -> String {
    let id = id.to_string();
    match id.split_once('#') {
        Some((binding, _)) if binding.starts_with("binding:") => binding.to_owned(),
        _ => id,
    }
}

/// The entity a static policy's resource scope names, if any.
pub(in crate::authz) fn resource_key(policy: &Policy) -> Option<EntityUid> {
    match policy.resource_constraint() {
        ResourceConstraint::Eq(uid)
        | ResourceConstraint::In(uid)
        | ResourceConstraint::IsIn(_, uid) => Some(uid),
        ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
    }
}

/// The object a policy's resource scope names by id (a process, a secret…), not yet placed in
/// its folders; `None` when the scope is the tenant, a folder or anything.
pub fn policy_object(policy: &Policy) -> Option<Resource> {
    resource_key(policy).as_ref().and_then(named_object)
}

/// `uid` as an object the tenant's folder tree does not list (a form, report, secret, task or
/// process named by id); `None` for the tenant, folders and principals.
pub(super) fn named_object(uid: &EntityUid) -> Option<Resource> {
    let (kind, id) = EntityKind::of_uid(uid)?;
    matches!(
        kind,
        EntityKind::Process
            | EntityKind::Form
            | EntityKind::Report
            | EntityKind::Secret
            | EntityKind::Task
    )
    .then(|| Resource {
        kind,
        id,
        containers: Vec::new(),
    })
}

/// The entity a static policy's principal scope names, if any.
pub(super) fn principal_key(policy: &Policy) -> Option<EntityUid> {
    match policy.principal_constraint() {
        PrincipalConstraint::Eq(uid)
        | PrincipalConstraint::In(uid)
        | PrincipalConstraint::IsIn(_, uid) => Some(uid),
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => None,
    }
}

/// The Cedar uid of a binding's scope; the tenant scope is the tenant entity itself.
pub(super) fn scope_uid(slug: &str, scope: ScopeType, scope_id: Option<&str>) -> Option<EntityUid> {
    match scope {
        ScopeType::Tenant => Some(EntityKind::Tenant.uid(slug)),
        other => scope_id.map(|id| other.kind().uid(id)),
    }
}
