//! The per-tenant Cedar engine: role templates linked by role bindings, and static policies,
//! sliced so that a decision evaluates only the policies that can apply to its principal.
//!
//! Slicing: every template link names its principal (`?principal`), and every static policy
//! either names one (`principal == X`, `principal in X`) or applies to anyone; likewise each
//! names the actions it can apply to (a role grant's action list, a policy's action scope). The
//! tenant's policies are kept in shards keyed by that principal entity (or none) and tagged with
//! those actions. A request by principal P for action A can only be matched by policies naming P
//! or an ancestor of P (its groups, its tenant) or no one, and naming A or any action; so the
//! decision evaluates only those shards and combines them as Cedar would: any satisfied
//! `forbid` denies, else any satisfied `permit` allows, else deny. The property test
//! `sliced_decisions_equal_whole_set_decisions` checks the equivalence.
//!
//! Layout, one reason to change a file: `request` holds the question (who, on what, in what
//! circumstances); `compile` turns a tenant's roles, bindings and policies into the sharded
//! `policy_set`; `decide` evaluates the shards that can apply, combines them and remembers
//! context-free decisions; `entities` builds the store a decision reads; `names` holds the
//! policy ids and the entities that scopes name. This file holds the engine itself: the schema,
//! the validator and the built-in roles, compiled once.

mod compile;
mod decide;
mod entities;
mod names;
mod policy_set;
mod request;
#[cfg(test)]
mod tests;

pub use compile::{Binding, TenantRules};
pub use decide::Decision;
pub use names::policy_object;
pub(super) use names::resource_key;
pub(super) use policy_set::policy_actions;
pub use policy_set::{MAX_FOLDER_DEPTH, TenantPolicies};
pub use request::{Facts, Grantor, Resource, Subject};

use std::collections::{HashMap, HashSet};

use cedar_policy::{
    Authorizer, Entity, EntityUid, Policy, PolicySet, Schema, ValidationMode, Validator,
};

use super::actions::CATALOGUE;
use super::policy_text::parse;
use super::roles::{BUILTIN_ROLES, RoleDef, action_groups};
use super::schema::{action_uid, schema};
use compile::{RoleTemplate, compile_role};

/// Compiles and evaluates tenants' policies; holds no tenant data itself.
pub struct PolicyEngine {
    schema: Schema,
    validator: Validator,
    authorizer: Authorizer,
    builtin: Vec<(RoleDef, Vec<RoleTemplate>)>,
    /// Each catalogue action as an entity whose ancestors are its action groups.
    actions: HashMap<&'static str, Entity>,
    /// Each action group's member actions.
    pub(super) groups: HashMap<String, Vec<String>>,
}

impl PolicyEngine {
    pub fn new() -> anyhow::Result<Self> {
        let builtin = BUILTIN_ROLES
            .iter()
            .map(|role| {
                let def = role.definition();
                let templates = compile_role(&def, true)?;
                Ok((def, templates))
            })
            .collect::<anyhow::Result<_>>()?;
        let groups = action_groups();
        let actions = CATALOGUE
            .iter()
            .map(|action| {
                let member_of: HashSet<EntityUid> = groups
                    .iter()
                    .filter(|(_, actions)| actions.iter().any(|a| a == action.name))
                    .map(|(group, _)| action_uid(group))
                    .collect();
                (
                    action.name,
                    Entity::new_no_attrs(action_uid(action.name), member_of),
                )
            })
            .collect();
        let schema = schema()?;
        Ok(PolicyEngine {
            validator: Validator::new(schema.clone()),
            schema,
            authorizer: Authorizer::new(),
            builtin,
            actions,
            groups: groups.into_iter().collect(),
        })
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Checks that `text` is exactly one static policy within the bounds of
    /// [`super::policy_text`] that validates against the schema, and returns it; returns the
    /// parser's or the validator's messages otherwise.
    pub fn validate_policy(&self, name: &str, text: &str) -> Result<Policy, Vec<String>> {
        let policy = parse(name, text).map_err(|e| vec![e])?.policy;
        self.validate_parsed(policy.clone())?;
        Ok(policy)
    }

    fn validate_parsed(&self, policy: Policy) -> Result<(), Vec<String>> {
        let mut set = PolicySet::new();
        set.add(policy).map_err(|e| vec![e.to_string()])?;
        let result = self.validator.validate(&set, ValidationMode::Strict);
        let errors: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}
