//! Delegation: what a caller may hand out. Nobody gives away more than they hold — not by a
//! role binding, a custom role or an API key, nor by putting a user in a group or setting the
//! claims a policy grants on.
//!
//! Invariant: every check here errs towards refusing. An action is delegable on a scope only if
//! the caller holds it on the scope itself, on an anonymous object of each kind inside it, and
//! on every folder and object inside it that a policy names (and anonymous objects in those);
//! a claim is delegable only if the caller holds everything each policy reading it decides, on
//! the policy's whole scope, whatever the request's context; and so is a principal that a
//! context-reading permit names. The caller "holds" what it is allowed both in no particular
//! context and in its own request's ([`Grantor`]): a forbid that holds where it asks from binds
//! it, and a permit that holds only from its network is not its to hand out.

use std::collections::{BTreeSet, HashMap, HashSet};

use cedar_policy::{Effect, EntityUid, Policy, PrincipalConstraint};

use super::actions::{CATALOGUE, info};
use super::engine::resource_key;
use super::engine::{
    Facts, Grantor, PolicyEngine, Resource, Subject, TenantPolicies, policy_actions,
};
use super::policy_text::Reads;
use super::schema::EntityKind;

/// What one claim-based policy reads of the principal's claims, and what it can decide where.
#[derive(Debug, Clone)]
pub struct ClaimRule {
    /// The claims (tag names) it reads; `None` when it reads a tag whose name it computes.
    tags: Option<BTreeSet<String>>,
    /// The actions it can decide; `None`: any.
    actions: Option<HashSet<String>>,
    /// The object its resource scope names; `None`: anything in the tenant.
    scope: Option<(EntityKind, String)>,
}

impl ClaimRule {
    /// The rule of `policy`, which reads `reads`, or `None` when it reads no claim.
    pub(super) fn of(
        policy: &Policy,
        reads: &Reads,
        groups: &HashMap<String, Vec<String>>,
    ) -> Option<Self> {
        reads.any_tag.then(|| ClaimRule {
            tags: reads.tags.clone(),
            actions: policy_actions(policy, groups),
            scope: resource_key(policy).as_ref().and_then(EntityKind::of_uid),
        })
    }

    fn reads_any(&self, claims: &BTreeSet<String>) -> bool {
        self.tags
            .as_ref()
            .is_none_or(|tags| !tags.is_disjoint(claims))
    }
}

/// A `permit` whose conditions read the request's context: what it grants depends on a context
/// no check can enumerate (a source address, an amount), so handing a principal it names to
/// someone (a key for its account, a membership) needs its whole reach.
#[derive(Debug, Clone)]
pub struct ContextRule {
    principal: PrincipalConstraint,
    actions: Option<HashSet<String>>,
    scope: Option<(EntityKind, String)>,
}

impl ContextRule {
    /// The rule of `policy`, or `None` when it is a forbid or reads no context.
    pub(super) fn of(
        policy: &Policy,
        reads: &Reads,
        groups: &HashMap<String, Vec<String>>,
    ) -> Option<Self> {
        (reads.context && policy.effect() == Effect::Permit).then(|| ContextRule {
            principal: policy.principal_constraint(),
            actions: policy_actions(policy, groups),
            scope: resource_key(policy).as_ref().and_then(EntityKind::of_uid),
        })
    }

    /// Whether the rule can apply to `subject`, by its principal scope.
    fn applies_to(&self, subject: &Subject) -> bool {
        let uid = subject.uid();
        let is_or_in = |target: &EntityUid| {
            *target == uid
                || subject
                    .groups
                    .iter()
                    .any(|g| EntityKind::Group.uid(g) == *target)
        };
        match &self.principal {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::Eq(target) => *target == uid,
            PrincipalConstraint::In(target) => is_or_in(target),
            PrincipalConstraint::Is(kind) => kind == uid.type_name(),
            PrincipalConstraint::IsIn(kind, target) => kind == uid.type_name() && is_or_in(target),
        }
    }
}

/// A policy that names groups, in its principal scope (`principal in Group::"…"`) or its
/// conditions (`when { principal in Group::"…" }`): what it can decide, and where. Whoever
/// controls such a group's membership controls whom it reaches, whatever else its conditions
/// say (a member's claims are theirs before they join).
#[derive(Debug, Clone)]
pub struct GroupRule {
    groups: Vec<String>,
    /// The groups among `groups` that its conditions name.
    in_conditions: Vec<String>,
    actions: Option<HashSet<String>>,
    scope: Option<(EntityKind, String)>,
}

impl GroupRule {
    /// The rule of `policy`, which names the entities `reads.entities` in its conditions, or
    /// `None` when it names no group.
    pub(super) fn of(
        policy: &Policy,
        reads: &Reads,
        groups: &HashMap<String, Vec<String>>,
    ) -> Option<Self> {
        let in_scope = match policy.principal_constraint() {
            PrincipalConstraint::In(target) | PrincipalConstraint::IsIn(_, target) => Some(target),
            _ => None,
        };
        let in_conditions = group_ids(reads.entities.iter());
        let named = group_ids(in_scope.iter().chain(&reads.entities));
        (!named.is_empty()).then(|| GroupRule {
            groups: named,
            in_conditions,
            actions: policy_actions(policy, groups),
            scope: resource_key(policy).as_ref().and_then(EntityKind::of_uid),
        })
    }
}

/// The ids of the groups among `uids`.
fn group_ids<'a>(uids: impl Iterator<Item = &'a EntityUid>) -> Vec<String> {
    uids.filter_map(EntityKind::of_uid)
        .filter_map(|(kind, id)| (kind == EntityKind::Group).then_some(id))
        .collect()
}

/// The actions `actions` lists (`None`: the whole catalogue).
fn listed(actions: Option<&HashSet<String>>) -> Vec<&str> {
    match actions {
        Some(actions) => actions.iter().map(String::as_str).collect(),
        None => CATALOGUE.iter().map(|a| a.name).collect(),
    }
}

/// An object of `kind` that `scope` covers: the scope itself, or an anonymous object inside it;
/// `None` when no object of that kind can be inside the scope.
pub fn probe(kind: EntityKind, scope: &Resource) -> Option<Resource> {
    const ANONYMOUS: &str = "00000000-0000-0000-0000-000000000000";
    if kind == scope.kind {
        return Some(scope.clone());
    }
    let inside = match (scope.kind, kind) {
        (EntityKind::Tenant, _) => Vec::new(),
        (
            EntityKind::Folder,
            EntityKind::Folder
            | EntityKind::Process
            | EntityKind::Form
            | EntityKind::Report
            | EntityKind::Secret
            | EntityKind::Task,
        )
        | (EntityKind::Process, EntityKind::Task) => {
            std::iter::once((scope.kind, scope.id.clone()))
                .chain(scope.containers.iter().cloned())
                .collect()
        }
        _ => return None,
    };
    Some(Resource {
        kind,
        id: ANONYMOUS.to_owned(),
        containers: inside,
    })
}

impl PolicyEngine {
    /// The actions among `actions` that `caller` does not hold throughout `scope`. Granting any
    /// of them on `scope` (a role binding, a custom role, a key for an account) would hand out
    /// more than the caller has, so such grants are refused. Each action is tried on the scope
    /// itself and on an anonymous object of each kind it applies to inside the scope.
    pub fn not_delegable<'a>(
        &self,
        policies: &TenantPolicies,
        caller: &Grantor<'_>,
        actions: impl IntoIterator<Item = &'a str>,
        scope: &Resource,
    ) -> Vec<String> {
        // Where a policy can decide otherwise than at the scope: the folders and objects that
        // policies name inside it (a forbid on a sub-folder, say).
        let inside = policies.named_inside(scope);
        actions
            .into_iter()
            .filter(|action| {
                let Some(info) = info(action) else {
                    return false;
                };
                info.resources
                    .iter()
                    .flat_map(|kind| {
                        std::iter::once(scope)
                            .chain(&inside)
                            .filter_map(|at| probe(*kind, at))
                    })
                    .any(|r| !self.holds(policies, caller, action, &r))
            })
            .map(str::to_owned)
            .collect()
    }

    /// Whether `caller` holds `action` on `resource`: not reserved from it, and allowed both in
    /// no particular context and in its own request's. A forbid that holds where it asks from
    /// binds it; a permit that holds only there (its network) is not its to hand to someone
    /// who would hold it everywhere; and a service account cannot hand out (to a person, say)
    /// what the tenant reserves for people.
    pub(super) fn holds(
        &self,
        policies: &TenantPolicies,
        caller: &Grantor<'_>,
        action: &str,
        resource: &Resource,
    ) -> bool {
        let default = Facts::default();
        !caller.reserved.iter().any(|a| a == action)
            && self
                .decide(policies, caller.subject, action, resource, &default)
                .allowed
            && (caller.facts == default
                || self
                    .decide(policies, caller.subject, action, resource, &caller.facts)
                    .allowed)
    }

    /// The actions `caller` lacks to set or remove the claims `changed` of a user: every action
    /// that a policy reading one of them can decide, on that policy's scope. A claim can open a
    /// `permit` or lift a `forbid` under conditions no single context shows (an amount, a second
    /// factor, a time), so the check asks for the whole of what the policy decides.
    pub fn claims_not_delegable(
        &self,
        policies: &TenantPolicies,
        caller: &Grantor<'_>,
        changed: &BTreeSet<String>,
    ) -> Vec<String> {
        let rules = policies
            .claim_rules()
            .iter()
            .filter(|r| r.reads_any(changed))
            .map(|r| (r.actions.as_ref(), r.scope.as_ref()));
        self.reaches_not_delegable(policies, caller, rules)
    }

    /// The actions `caller` lacks to put `policy` in force, if it is a `permit`, or to lift it,
    /// if it is a `forbid`: everything it can decide, on its whole resource scope, whatever its
    /// conditions say (they may hold in a context no check can show). Writing a forbid needs
    /// nothing: it can only take access away.
    ///
    /// `placed` is the object the policy's scope names, in its folders, when the policy set
    /// does not name it yet (a new policy).
    pub fn policy_not_delegable(
        &self,
        policies: &TenantPolicies,
        caller: &Grantor<'_>,
        policy: &Policy,
        placed: Option<Resource>,
    ) -> Vec<String> {
        let actions = policy_actions(policy, &self.groups);
        match placed {
            Some(scope) => self.not_delegable(policies, caller, listed(actions.as_ref()), &scope),
            None => {
                let scope = resource_key(policy).as_ref().and_then(EntityKind::of_uid);
                self.reach_not_delegable(policies, caller, actions.as_ref(), scope.as_ref())
            }
        }
    }

    /// The actions `caller` lacks to hand the membership of `groups` (ids) to an identity
    /// provider, which then adds and removes members at every sign-in: the whole reach of every
    /// policy that names one of them (in its principal scope or its conditions), whatever else
    /// its conditions say. A permit reaches
    /// whoever the provider puts in, with the claims they already carry; a forbid lets go of
    /// whoever the provider leaves out.
    pub fn membership_not_delegable(
        &self,
        policies: &TenantPolicies,
        caller: &Grantor<'_>,
        groups: &[String],
    ) -> Vec<String> {
        let rules = policies
            .group_rules()
            .iter()
            .filter(|r| r.groups.iter().any(|g| groups.contains(g)))
            .map(|r| (r.actions.as_ref(), r.scope.as_ref()));
        self.reaches_not_delegable(policies, caller, rules)
    }

    /// The actions `caller` lacks to add a member to `group` (an id): the whole reach of every
    /// policy whose conditions name the group, a permit (`when { principal in Group::"…" &&
    /// context.amount <= 10000 }`) or a forbid (`unless { principal in Group::"…" }`). Joining
    /// decides such a policy in contexts that a check without the request's cannot show; a
    /// policy naming the group only in its principal scope is judged by the escalation check.
    pub fn joining_not_delegable(
        &self,
        policies: &TenantPolicies,
        caller: &Grantor<'_>,
        group: &str,
    ) -> Vec<String> {
        let rules = policies
            .group_rules()
            .iter()
            .filter(|r| r.in_conditions.iter().any(|g| g == group))
            .map(|r| (r.actions.as_ref(), r.scope.as_ref()));
        self.reaches_not_delegable(policies, caller, rules)
    }

    /// The actions of the whole catalogue that `caller` does not hold throughout the tenant: what
    /// a change that can make anyone anything needs (re-pointing an identity provider at
    /// another issuer hands that issuer every account it signed in).
    pub fn tenant_not_delegable(
        &self,
        policies: &TenantPolicies,
        caller: &Grantor<'_>,
    ) -> Vec<String> {
        self.reach_not_delegable(policies, caller, None, None)
    }

    /// The actions `caller` lacks to let `after` (a new credential's account, a principal in a
    /// new group) be granted what context-reading permits give it and did not give `before`.
    pub fn conditional_not_delegable(
        &self,
        policies: &TenantPolicies,
        caller: &Grantor<'_>,
        before: Option<&Subject>,
        after: &Subject,
    ) -> Vec<String> {
        let rules = policies
            .context_rules()
            .iter()
            .filter(|r| r.applies_to(after) && before.is_none_or(|before| !r.applies_to(before)))
            .map(|r| (r.actions.as_ref(), r.scope.as_ref()));
        self.reaches_not_delegable(policies, caller, rules)
    }

    /// What `caller` lacks of all the `(actions, scope)` reaches, each as
    /// [`Self::reach_not_delegable`] has it.
    fn reaches_not_delegable<'r>(
        &self,
        policies: &TenantPolicies,
        caller: &Grantor<'_>,
        reaches: impl Iterator<
            Item = (
                Option<&'r HashSet<String>>,
                Option<&'r (EntityKind, String)>,
            ),
        >,
    ) -> Vec<String> {
        let mut missing = BTreeSet::new();
        for (actions, scope) in reaches {
            missing.extend(self.reach_not_delegable(policies, caller, actions, scope));
        }
        missing.into_iter().collect()
    }

    /// The actions among `actions` (`None`: the whole catalogue) that `caller` does not hold
    /// throughout the object `scope` names (`None`: the tenant).
    fn reach_not_delegable(
        &self,
        policies: &TenantPolicies,
        caller: &Grantor<'_>,
        actions: Option<&HashSet<String>>,
        scope: Option<&(EntityKind, String)>,
    ) -> Vec<String> {
        let scope = match scope {
            None => policies.tenant(),
            Some((EntityKind::Folder, id)) => uuid::Uuid::parse_str(id)
                .ok()
                .and_then(|id| policies.folder(id))
                .unwrap_or_else(|| Resource {
                    kind: EntityKind::Folder,
                    id: id.clone(),
                    containers: Vec::new(),
                }),
            Some((kind, id)) => policies.object(*kind, id),
        };
        self.not_delegable(policies, caller, listed(actions), &scope)
    }
}
