//! A tenant's compiled policy set, sharded by principal, and what it knows of the tenant's
//! folders and named objects.
//!
//! Invariant: every policy sits in the shards of the principal its scope names (the global
//! shards when it names none), tagged with the catalogue actions it can decide (untagged when
//! that is not known), so a decision that reads only the shards of its principal's ancestry
//! and its action skips nothing that could apply.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cedar_policy::{ActionConstraint, EntityUid, Policy, PolicyId, PolicySet, Template};
use lru::LruCache;
use uuid::Uuid;

use super::decide::{Decision, DecisionKey};
use super::names::principal_key;
use super::request::Resource;
use crate::authz::actions::info;
use crate::authz::delegation::{ClaimRule, ContextRule, GroupRule};
use crate::authz::schema::EntityKind;

/// One tenant's compiled policies.
pub struct TenantPolicies {
    pub(super) slug: String,
    pub(super) environment: String,
    /// Shards by the principal entity their policies name.
    pub(super) shards: HashMap<EntityUid, Vec<Shard>>,
    /// Shards of policies that name no principal.
    pub(super) global: Vec<Shard>,
    /// Folder id → parent folder id, for resolving a resource's containers without a query.
    pub(super) folders: HashMap<Uuid, Option<Uuid>>,
    pub(super) policy_count: usize,
    /// Some claim-based policy mentions `context.source_ip`.
    pub(super) reads_source_ip: bool,
    /// Objects that bindings and claim-based policies name by id, beyond the folders: where a
    /// grant can hold that the folder tree does not show.
    pub(super) named: Vec<Resource>,
    /// What each claim-based policy reads of the principal's claims, for delegation checks.
    pub(super) claim_rules: Vec<ClaimRule>,
    /// The permits whose grants depend on the request's context, for delegation checks.
    pub(super) context_rules: Vec<ContextRule>,
    /// The policies that name groups (in their principal scope or conditions), for delegation
    /// checks.
    pub(super) group_rules: Vec<GroupRule>,
    /// Folders that policies name (in their scope or conditions): where a decision can differ
    /// from the folder around it.
    pub(super) named_folders: Vec<Uuid>,
    /// Decisions already made for principals without claims, when no claim-based policy reads
    /// the context: the answer then depends only on the principal, its groups, the action and
    /// the resource (the one context a built-in role reads, the environment, is fixed per
    /// tenant), and this set is replaced whole on any change.
    pub(super) remembered: Option<Mutex<LruCache<DecisionKey, Decision>>>,
}

/// Policies for one principal entity that can only grant or deny `actions` (`None`: any).
pub(super) struct Shard {
    pub(super) actions: Option<Arc<HashSet<String>>>,
    pub(super) set: PolicySet,
}

/// The shards under construction.
#[derive(Default)]
pub(super) struct Shards {
    pub(super) by_principal: HashMap<EntityUid, Vec<Shard>>,
    pub(super) global: Vec<Shard>,
    /// Where the links of a role grant for a principal go: (principal, template) → shard index.
    template_shard: HashMap<(EntityUid, PolicyId), usize>,
}

impl Shards {
    /// The set holding `template` and its links for `principal`.
    pub(super) fn for_template(
        &mut self,
        principal: &EntityUid,
        template: &Template,
        actions: &Arc<HashSet<String>>,
    ) -> anyhow::Result<&mut PolicySet> {
        let shards = self.by_principal.entry(principal.clone()).or_default();
        let key = (principal.clone(), template.id().clone());
        let index = match self.template_shard.get(&key) {
            Some(index) => *index,
            None => {
                let mut set = PolicySet::new();
                set.add_template(template.clone())?;
                shards.push(Shard {
                    actions: Some(Arc::clone(actions)),
                    set,
                });
                self.template_shard.insert(key, shards.len() - 1);
                shards.len() - 1
            }
        };
        Ok(&mut shards[index].set)
    }

    /// A static policy in its own shard, under the principal and actions its scope names.
    /// `groups` maps each action group to its member actions, so that a policy scoped to a
    /// group (`action in Flowgate::Action::"role:Viewer"`) is tagged with the actions it covers;
    /// a name that is neither an action nor a group leaves the shard untagged (evaluated for every
    /// action), so nothing is ever skipped that could apply.
    pub(super) fn add_static(
        &mut self,
        policy: Policy,
        groups: &HashMap<String, Vec<String>>,
    ) -> anyhow::Result<()> {
        let actions = policy_actions(&policy, groups);
        let key = principal_key(&policy);
        let mut set = PolicySet::new();
        set.add(policy)?;
        let shards = match key {
            Some(key) => self.by_principal.entry(key).or_default(),
            None => &mut self.global,
        };
        shards.push(Shard {
            actions: actions.map(Arc::new),
            set,
        });
        Ok(())
    }
}

/// The catalogue actions `policy` can decide: those its action scope names, its action groups'
/// members included; `None` when it names any action, or a name that is neither an action nor a
/// group (then nothing may be skipped).
pub(in crate::authz) fn policy_actions(
    policy: &Policy,
    groups: &HashMap<String, Vec<String>>,
) -> Option<HashSet<String>> {
    let named: Vec<String> = match policy.action_constraint() {
        ActionConstraint::Any => return None,
        ActionConstraint::Eq(action) => vec![action.id().unescaped().to_owned()],
        ActionConstraint::In(actions) => actions
            .iter()
            .map(|a| a.id().unescaped().to_owned())
            .collect(),
    };
    let mut actions = HashSet::new();
    for name in &named {
        match groups.get(name) {
            Some(members) => actions.extend(members.iter().cloned()),
            None if info(name).is_some() => {
                actions.insert(name.clone());
            }
            None => return None,
        }
    }
    Some(actions)
}

/// Folders nest at most this deep.
pub const MAX_FOLDER_DEPTH: usize = 32;

impl TenantPolicies {
    pub fn slug(&self) -> &str {
        &self.slug
    }

    /// Policies in the set (template links and claim-based policies).
    pub fn len(&self) -> usize {
        self.policy_count
    }

    pub fn is_empty(&self) -> bool {
        self.policy_count == 0
    }

    /// The tenant itself, the resource of tenant-wide actions.
    pub fn tenant(&self) -> Resource {
        Resource {
            kind: EntityKind::Tenant,
            id: self.slug.clone(),
            containers: Vec::new(),
        }
    }

    /// A resource in `folder` (or at the root), with its folder chain from the cached tree.
    /// `None` when the folder is unknown or the chain is cyclic or too deep.
    pub fn resource_in(
        &self,
        kind: EntityKind,
        id: String,
        folder: Option<Uuid>,
    ) -> Option<Resource> {
        let mut containers = Vec::new();
        let mut next = folder;
        while let Some(folder) = next {
            if containers.len() >= MAX_FOLDER_DEPTH {
                return None;
            }
            containers.push((EntityKind::Folder, folder.to_string()));
            next = *self.folders.get(&folder)?;
        }
        Some(Resource {
            kind,
            id,
            containers,
        })
    }

    /// Every folder of the tenant.
    pub fn folder_ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.folders.keys().copied()
    }

    /// Objects that bindings and claim-based policies name by id (forms, reports, secrets,
    /// tasks, processes), as far as the policy set knows their place.
    pub fn named_objects(&self) -> &[Resource] {
        &self.named
    }

    /// Puts the named objects in the folders `folder_of` gives them (by object id), so that a
    /// decision about one, and a delegation check inside its folder, sees the folder's grants
    /// and forbids as a request about it does.
    pub fn place_named(&mut self, folder_of: &HashMap<Uuid, Uuid>) {
        let named = std::mem::take(&mut self.named);
        self.named = named
            .into_iter()
            .map(|object| self.placed(object, folder_of))
            .collect();
    }

    /// `object` in the folder `folder_of` gives it, if any, with the folders above it as far
    /// as the set knows them: a folder made after the set was built places the object in that
    /// folder alone (its parent is unknown too), a tree deeper than [`MAX_FOLDER_DEPTH`] in its
    /// lowest folders; never at the root, where a forbid on its folder would not reach it.
    fn placed(&self, object: Resource, folder_of: &HashMap<Uuid, Uuid>) -> Resource {
        let Some(folder) = Uuid::parse_str(&object.id)
            .ok()
            .and_then(|id| folder_of.get(&id).copied())
        else {
            return object;
        };
        let mut containers = Vec::new();
        let mut next = Some(folder);
        while let Some(folder) = next.filter(|_| containers.len() < MAX_FOLDER_DEPTH) {
            containers.push((EntityKind::Folder, folder.to_string()));
            next = self.folders.get(&folder).copied().flatten();
        }
        Resource {
            containers,
            ..object
        }
    }

    /// The object of `kind` and `id` as a decision about it sees it: placed in its folders when
    /// it is one the set names, else at the tenant's root.
    pub fn object(&self, kind: EntityKind, id: &str) -> Resource {
        self.named
            .iter()
            .find(|r| r.kind == kind && r.id == id)
            .cloned()
            .unwrap_or_else(|| Resource {
                kind,
                id: id.to_owned(),
                containers: Vec::new(),
            })
    }

    /// What the claim-based policies read of principals' claims.
    pub(in crate::authz) fn claim_rules(&self) -> &[ClaimRule] {
        &self.claim_rules
    }

    /// The permits whose grants depend on the request's context.
    pub(in crate::authz) fn context_rules(&self) -> &[ContextRule] {
        &self.context_rules
    }

    /// The policies that name groups, in their principal scope or conditions.
    pub(in crate::authz) fn group_rules(&self) -> &[GroupRule] {
        &self.group_rules
    }

    /// The folders and objects inside `scope` that policies name: a folder inside a folder
    /// scope (or anywhere, for the tenant), an object whose known containers include the scope.
    pub(in crate::authz) fn named_inside(&self, scope: &Resource) -> Vec<Resource> {
        let key = (scope.kind, scope.id.clone());
        let inside = |r: &Resource| scope.kind == EntityKind::Tenant || r.containers.contains(&key);
        self.named_folders
            .iter()
            .filter_map(|id| self.folder(*id))
            .chain(self.named.iter().cloned())
            .filter(|r| inside(r) && (r.kind, &r.id) != (scope.kind, &scope.id))
            .collect()
    }

    /// The folder `id` as a resource, with its chain; `None` if the tenant has no such folder.
    pub fn folder(&self, id: Uuid) -> Option<Resource> {
        let parent = *self.folders.get(&id)?;
        self.resource_in(EntityKind::Folder, id.to_string(), parent)
    }
}
