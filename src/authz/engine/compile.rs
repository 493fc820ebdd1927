//! Building a tenant's policy set from its rules: roles compiled into Cedar templates, role
//! bindings linked to them, and the stored claim-based policies validated and placed.
//!
//! Invariant: a change of schema or of the policy bounds never opens access. A binding to an
//! unknown role grants nothing, a stored `permit` that no longer validates is left out while a
//! `forbid` is kept, and a stored text that no longer parses (it might be a `forbid`) stops the
//! build.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cedar_policy::{PolicyId, SlotId, Template};
use lru::LruCache;
use uuid::Uuid;

use super::PolicyEngine;
use super::decide::REMEMBERED_DECISIONS;
use super::names::{link_id, named_object, resource_key, scope_uid};
use super::policy_set::{Shards, TenantPolicies};
use crate::authz::bindings::{ScopeType, SubjectType};
use crate::authz::delegation::{ClaimRule, ContextRule, GroupRule};
use crate::authz::policy_text::{ParsedPolicy, parse_all};
use crate::authz::roles::{RoleDef, action_group, grants_everything};
use crate::authz::schema::{EntityKind, action_uid};

/// What a tenant's policy set is built from.
pub struct TenantRules<'a> {
    pub slug: &'a str,
    pub environment: &'a str,
    pub custom_roles: &'a [RoleDef],
    pub bindings: &'a [Binding],
    /// `(name, Cedar text)` of each claim-based policy.
    pub policies: &'a [(String, String)],
    pub folders: &'a [(Uuid, Option<Uuid>)],
}

/// A role binding, as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub id: Uuid,
    pub role: String,
    pub subject_type: SubjectType,
    pub subject_id: Uuid,
    pub scope_type: ScopeType,
    pub scope_id: Option<String>,
}

/// A role grant's template and the actions it can grant.
pub(super) type RoleTemplate = (Template, Arc<HashSet<String>>);

impl PolicyEngine {
    /// Builds a tenant's policy set. A binding to an unknown role grants nothing; a stored
    /// `permit` that no longer validates (after a schema change) is left out and a `forbid`
    /// kept, both logged: a change of schema can only take access away.
    pub fn build(&self, rules: &TenantRules<'_>) -> anyhow::Result<TenantPolicies> {
        let mut roles: HashMap<&str, Vec<RoleTemplate>> = self
            .builtin
            .iter()
            .map(|(def, templates)| (def.name.as_str(), templates.clone()))
            .collect();
        for role in rules.custom_roles {
            roles.insert(role.name.as_str(), compile_role(role, false)?);
        }
        let mut shards = Shards::default();
        let mut policy_count = 0;
        let mut named = Vec::new();
        let mut claim_rules = Vec::new();
        for binding in rules.bindings {
            let Some(templates) = roles.get(binding.role.as_str()) else {
                tracing::warn!(binding = %binding.id, role = %binding.role, "binding names an unknown role; it grants nothing");
                continue;
            };
            let subject = binding
                .subject_type
                .kind()
                .uid(&binding.subject_id.to_string());
            let Some(scope) =
                scope_uid(rules.slug, binding.scope_type, binding.scope_id.as_deref())
            else {
                tracing::warn!(binding = %binding.id, "binding has a scope without an id; it grants nothing");
                continue;
            };
            named.extend(named_object(&scope));
            for (i, (template, actions)) in templates.iter().enumerate() {
                let set = shards.for_template(&subject, template, actions)?;
                set.link(
                    template.id().clone(),
                    link_id(binding.id, i),
                    HashMap::from([
                        (SlotId::principal(), subject.clone()),
                        (SlotId::resource(), scope.clone()),
                    ]),
                )?;
                policy_count += 1;
            }
        }
        let mut reads_source_ip = false;
        let mut reads_context = false;
        let mut context_rules = Vec::new();
        let mut group_rules = Vec::new();
        let mut named_folders = Vec::new();
        for ((name, text), parsed) in rules.policies.iter().zip(parse_all(rules.policies)) {
            let ParsedPolicy { policy, reads } = match parsed {
                Ok(parsed) => parsed,
                // It parsed when it was stored: a text that no longer does (a bound lowered
                // since) stops the build, as a forbid it might be must not be lost.
                Err(e) => anyhow::bail!("stored policy {name} ({} bytes): {e}", text.len()),
            };
            if let Err(errors) = self.validate_parsed(policy.clone()) {
                // Failing closed either way: a permit is left out, a forbid is kept.
                if policy.effect() == cedar_policy::Effect::Permit {
                    tracing::error!(policy = %name, ?errors, "stored permit does not validate; it is left out");
                    continue;
                }
                tracing::error!(policy = %name, ?errors, "stored forbid does not validate; it is kept");
            }
            reads_source_ip |= reads.source_ip;
            reads_context |= reads.context;
            for uid in resource_key(&policy).iter().chain(&reads.entities) {
                match EntityKind::of_uid(uid) {
                    Some((EntityKind::Folder, id)) => {
                        named_folders.extend(Uuid::parse_str(&id).ok());
                    }
                    _ => named.extend(named_object(uid)),
                }
            }
            claim_rules.extend(ClaimRule::of(&policy, &reads, &self.groups));
            context_rules.extend(ContextRule::of(&policy, &reads, &self.groups));
            group_rules.extend(GroupRule::of(&policy, &reads, &self.groups));
            shards.add_static(policy, &self.groups)?;
            policy_count += 1;
        }
        Ok(TenantPolicies {
            slug: rules.slug.to_owned(),
            environment: rules.environment.to_owned(),
            shards: shards.by_principal,
            global: shards.global,
            folders: rules.folders.iter().copied().collect(),
            policy_count,
            reads_source_ip,
            named,
            claim_rules,
            context_rules,
            group_rules,
            named_folders,
            remembered: (!reads_context).then(|| Mutex::new(LruCache::new(REMEMBERED_DECISIONS))),
        })
    }
}

/// One template per grant of the role, `role:<name>#<n>`, with the grant's actions. A built-in
/// role's grant names its action group (one ancestry test); a custom role's lists its actions;
/// a grant of the whole catalogue constrains no action.
pub(super) fn compile_role(role: &RoleDef, builtin: bool) -> anyhow::Result<Vec<RoleTemplate>> {
    role.grants
        .iter()
        .enumerate()
        .map(|(i, grant)| {
            let actions = if grants_everything(&grant.actions) {
                "action".to_owned()
            } else if builtin {
                format!("action in {}", action_uid(&action_group(&role.name, i)))
            } else {
                let list = grant
                    .actions
                    .iter()
                    .map(|a| action_uid(a).to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("action in [{list}]")
            };
            let condition = grant
                .condition
                .as_ref()
                .map(|c| format!(" when {{ {c} }}"))
                .unwrap_or_default();
            let text = format!(
                "permit(principal in ?principal, {actions}, resource in ?resource){condition};"
            );
            let template =
                Template::parse(Some(PolicyId::new(format!("role:{}#{i}", role.name))), text)
                    .map_err(|e| {
                        anyhow::anyhow!("role {} does not form a template: {e}", role.name)
                    })?;
            Ok((template, Arc::new(grant.actions.iter().cloned().collect())))
        })
        .collect()
}
