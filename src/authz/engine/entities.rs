//! The entity store a decision reads: the principal and the resource only, each with its
//! whole ancestry.
//!
//! Invariant: the store is closed by construction (each entity lists every ancestor, and no
//! ancestor is itself in the store), which is what lets [`closed_store`] skip Cedar's
//! transitive-closure pass.

use std::collections::HashSet;

use cedar_policy::{Entities, Entity, EntityUid, RestrictedExpression};

use super::request::{Resource, Subject};

/// The entities a decision needs: the principal, whose ancestors are its groups and the tenant,
/// and the resource, whose ancestors are its containers and the tenant.
///
/// Each is given its whole ancestry directly and the ancestors themselves are left out of the
/// store: `principal in X` and `resource in X`, the only hierarchy tests a Flowgate policy can
/// make on stored data, answer exactly as with the full hierarchy, and Cedar's transitive
/// closure over two entities costs a fraction of one over the whole chain (it dominated the
/// decision). A policy testing the hierarchy between two entity literals (`Folder::"a" in
/// Folder::"b"`) sees no relation; the README says so.
pub(super) fn entities(
    tenant: &EntityUid,
    subject: &Subject,
    principal: &EntityUid,
    groups: &[EntityUid],
    resource: &Resource,
) -> anyhow::Result<Vec<Entity>> {
    let mut ancestors: HashSet<EntityUid> = groups.iter().cloned().collect();
    ancestors.insert(tenant.clone());
    let tags = subject
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())));
    let mut entities = vec![Entity::new_with_tags(
        principal.clone(),
        [],
        ancestors,
        tags,
    )?];
    let resource_uid = resource.kind.uid(&resource.id);
    if resource_uid != *tenant && resource_uid != *principal {
        let ancestors: HashSet<EntityUid> = resource
            .containers
            .iter()
            .map(|(kind, id)| kind.uid(id))
            .chain(std::iter::once(tenant.clone()))
            .collect();
        entities.push(Entity::new_no_attrs(resource_uid, ancestors));
    }
    Ok(entities)
}

/// The store of a decision's [`entities`], without Cedar's transitive-closure pass.
///
/// Cedar's public constructors always recompute the closure, with a strongly-connected-components
/// search that hashes every ancestor several times: about two thirds of a decision. The store
/// here is closed by construction (each entity lists its whole ancestry and no ancestor is in the
/// store), so the pass can only confirm it; `the_decision_store_is_already_closed` checks that
/// the two stores are equal. Cedar's own constructor is kept for validated requests
/// (`/authz/check`), which also check the entities against the schema.
pub(super) fn closed_store(entities: Vec<Entity>) -> anyhow::Result<Entities> {
    use cedar_policy_core::entities::{Entities as Store, NoEntitiesSchema, TCComputation};
    let store = Store::from_entities(
        entities.iter().map(|e| e.as_ref().clone()),
        None::<&NoEntitiesSchema>,
        TCComputation::AssumeAlreadyComputed,
        cedar_policy_core::extensions::Extensions::all_available(),
    )?;
    Ok(Entities::from(store))
}
