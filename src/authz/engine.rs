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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Entities, Entity, EntityUid, Policy, PolicyId,
    PolicySet, PrincipalConstraint, Request, ResourceConstraint, RestrictedExpression, Schema,
    SlotId, Template, ValidationMode, Validator,
};
use lru::LruCache;
use uuid::Uuid;

use super::actions::{CATALOGUE, info};
use super::bindings::{ScopeType, SubjectType};
use super::delegation::{ClaimRule, ContextRule};
use super::policy_text::{ParsedPolicy, depth, parse, parse_all};

/// Deepest request context `/authz/check` takes (records in records, sets in sets).
const MAX_CONTEXT_DEPTH: usize = 8;
use super::roles::{BUILTIN_ROLES, RoleDef, action_group, action_groups, grants_everything};
use super::schema::{EntityKind, action_uid, schema};

/// The outcome of one authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policies that determined the decision: `binding:<id>` for a role binding,
    /// `policy:<name>` for a claim-based policy. Empty for a denial no policy caused.
    pub reasons: Vec<String>,
    /// Evaluation errors: a `permit` that errs grants nothing, a `forbid` that errs denies.
    pub errors: Vec<String>,
}

/// Who is asking, as Cedar sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub kind: EntityKind,
    pub id: String,
    /// Ids of the groups the subject belongs to.
    pub groups: Vec<String>,
    /// Claims, as entity tags.
    pub tags: BTreeMap<String, String>,
}

impl Subject {
    pub fn service_account(id: Uuid) -> Self {
        Subject {
            kind: EntityKind::ServiceAccount,
            id: id.to_string(),
            groups: Vec::new(),
            tags: BTreeMap::new(),
        }
    }

    /// The subject as a Cedar entity.
    pub(super) fn uid(&self) -> EntityUid {
        self.kind.uid(&self.id)
    }

    /// The groups the subject belongs to, as Cedar entities.
    fn group_uids(&self) -> Vec<EntityUid> {
        self.groups
            .iter()
            .map(|g| EntityKind::Group.uid(g))
            .collect()
    }
}

/// What is asked about: a resource and its containers, nearest first. The tenant contains
/// everything and is implicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: EntityKind,
    pub id: String,
    pub containers: Vec<(EntityKind, String)>,
}

/// Facts about the request that policies may use in `context`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub source_ip: Option<IpAddr>,
    /// Seconds since the caller's second factor.
    pub mfa_age: Option<i64>,
    /// For actions that carry one (`task.approve`).
    pub amount: Option<i64>,
    /// Unix seconds; now when absent.
    pub now: Option<i64>,
}

/// One tenant's compiled policies.
pub struct TenantPolicies {
    slug: String,
    environment: String,
    /// Shards by the principal entity their policies name.
    shards: HashMap<EntityUid, Vec<Shard>>,
    /// Shards of policies that name no principal.
    global: Vec<Shard>,
    /// Folder id → parent folder id, for resolving a resource's containers without a query.
    folders: HashMap<Uuid, Option<Uuid>>,
    policy_count: usize,
    /// Some claim-based policy mentions `context.source_ip`.
    reads_source_ip: bool,
    /// Objects that bindings and claim-based policies name by id, beyond the folders: where a
    /// grant can hold that the folder tree does not show.
    named: Vec<Resource>,
    /// What each claim-based policy reads of the principal's claims, for delegation checks.
    claim_rules: Vec<ClaimRule>,
    /// The permits whose grants depend on the request's context, for delegation checks.
    context_rules: Vec<ContextRule>,
    /// Folders that policies name (in their scope or conditions): where a decision can differ
    /// from the folder around it.
    named_folders: Vec<Uuid>,
    /// Decisions already made for principals without claims, when no claim-based policy reads
    /// the context: the answer then depends only on the principal, its groups, the action and
    /// the resource (the one context a built-in role reads, the environment, is fixed per
    /// tenant), and this set is replaced whole on any change.
    remembered: Option<Mutex<LruCache<DecisionKey, Decision>>>,
}

/// What a remembered decision was about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    principal: (EntityKind, String),
    groups: Vec<String>,
    action: String,
    resource: (EntityKind, String),
    containers: Vec<(EntityKind, String)>,
}

/// Decisions remembered per tenant.
const REMEMBERED_DECISIONS: NonZeroUsize = match NonZeroUsize::new(4_096) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

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

/// A role grant's template and the actions it can grant.
type RoleTemplate = (Template, Arc<HashSet<String>>);

/// Policies for one principal entity that can only grant or deny `actions` (`None`: any).
struct Shard {
    actions: Option<Arc<HashSet<String>>>,
    set: PolicySet,
}

/// The shards under construction.
#[derive(Default)]
struct Shards {
    by_principal: HashMap<EntityUid, Vec<Shard>>,
    global: Vec<Shard>,
    /// Where the links of a role grant for a principal go: (principal, template) → shard index.
    template_shard: HashMap<(EntityUid, PolicyId), usize>,
}

impl Shards {
    /// The set holding `template` and its links for `principal`.
    fn for_template(
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
    fn add_static(
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
pub(super) fn policy_actions(
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
            named_folders,
            remembered: (!reads_context).then(|| Mutex::new(LruCache::new(REMEMBERED_DECISIONS))),
        })
    }

    /// May `subject` do `action` on `resource`, given `facts`? Fails closed: any error in
    /// building the request is a denial.
    pub fn decide(
        &self,
        policies: &TenantPolicies,
        subject: &Subject,
        action: &str,
        resource: &Resource,
        facts: &Facts,
    ) -> Decision {
        let remembered = policies
            .remembered
            .as_ref()
            .filter(|_| subject.tags.is_empty());
        let key = remembered.map(|_| DecisionKey {
            principal: (subject.kind, subject.id.clone()),
            groups: subject.groups.clone(),
            action: action.to_owned(),
            resource: (resource.kind, resource.id.clone()),
            containers: resource.containers.clone(),
        });
        if let (Some(cache), Some(key)) = (remembered, &key)
            && let Some(decision) = lock(cache).get(key)
        {
            return decision.clone();
        }
        let decision = match self.context(policies, action, facts) {
            Ok(context) => self.decide_in(policies, subject, action, resource, context, None),
            Err(e) => denial(e),
        };
        if let (Some(cache), Some(key)) = (remembered, key)
            && decision.errors.is_empty()
        {
            lock(cache).put(key, decision.clone());
        }
        decision
    }

    /// Like [`PolicyEngine::decide`] with a caller-supplied context (`/authz/check`), which is
    /// validated against the action's context type: `Err` carries the validation message.
    pub fn decide_with_context(
        &self,
        policies: &TenantPolicies,
        subject: &Subject,
        action: &str,
        resource: &Resource,
        context: serde_json::Value,
    ) -> Result<Decision, String> {
        // Cedar converts the context recursively, on the request's thread.
        if depth(&context) > MAX_CONTEXT_DEPTH {
            return Err(format!(
                "context nests at most {MAX_CONTEXT_DEPTH} levels deep"
            ));
        }
        let mut object = match context {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => serde_json::Map::new(),
            _ => return Err("context must be a JSON object".into()),
        };
        object
            .entry("environment")
            .or_insert_with(|| policies.environment.clone().into());
        object.entry("now").or_insert_with(|| unix_now().into());
        let action_uid = action_uid(action);
        let context = Context::from_json_value(
            serde_json::Value::Object(object),
            Some((&self.schema, &action_uid)),
        )
        .map_err(|e| e.to_string())?;
        // A context of the wrong shape is the caller's mistake, not a denial.
        Request::new(
            subject.uid(),
            action_uid,
            resource.kind.uid(&resource.id),
            context.clone(),
            Some(&self.schema),
        )
        .map_err(|e| e.to_string())?;
        Ok(self.decide_in(
            policies,
            subject,
            action,
            resource,
            context,
            Some(&self.schema),
        ))
    }

    fn decide_in(
        &self,
        policies: &TenantPolicies,
        subject: &Subject,
        action: &str,
        resource: &Resource,
        context: Context,
        schema: Option<&Schema>,
    ) -> Decision {
        let evaluated = (|| -> anyhow::Result<Decision> {
            let tenant = EntityKind::Tenant.uid(&policies.slug);
            let principal = subject.uid();
            let groups = subject.group_uids();
            let mut entities = entities(&tenant, subject, &principal, &groups, resource)?;
            entities.extend(self.actions.get(action).cloned());
            let entities = match schema {
                None => closed_store(entities)?,
                Some(schema) => Entities::from_entities(entities, Some(schema))?,
            };
            let request = Request::new(
                principal.clone(),
                action_uid(action),
                resource.kind.uid(&resource.id),
                context,
                schema,
            )?;
            let keyed = std::iter::once(&principal)
                .chain(groups.iter())
                .chain(std::iter::once(&tenant))
                .filter_map(|key| policies.shards.get(key))
                .flatten();
            let sets = keyed
                .chain(policies.global.iter())
                .filter(|shard| shard.actions.as_ref().is_none_or(|a| a.contains(action)))
                .map(|shard| &shard.set);
            Ok(combine(sets.map(|set| {
                (set, self.authorizer.is_authorized(&request, set, &entities))
            })))
        })();
        evaluated.unwrap_or_else(denial)
    }

    /// The context of `action`: the tenant's environment, the time, and the request's facts.
    fn context(
        &self,
        policies: &TenantPolicies,
        action: &str,
        facts: &Facts,
    ) -> anyhow::Result<Context> {
        let mut pairs = vec![
            (
                "environment".to_owned(),
                RestrictedExpression::new_string(policies.environment.clone()),
            ),
            (
                "now".to_owned(),
                RestrictedExpression::new_long(facts.now.unwrap_or_else(unix_now)),
            ),
        ];
        // Building an `ipaddr` runs Cedar's parser; when no policy of the tenant mentions the
        // source address its value cannot change a decision, so it is left out.
        if let (Some(ip), true) = (facts.source_ip, policies.reads_source_ip) {
            pairs.push((
                "source_ip".to_owned(),
                RestrictedExpression::new_ip(ip.to_string()),
            ));
        }
        if let Some(age) = facts.mfa_age {
            pairs.push(("mfa_age".to_owned(), RestrictedExpression::new_long(age)));
        }
        if let (Some(amount), Some(true)) = (facts.amount, info(action).map(|a| a.amount)) {
            pairs.push(("amount".to_owned(), RestrictedExpression::new_long(amount)));
        }
        Ok(Context::from_pairs(pairs)?)
    }
}

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

    /// What the claim-based policies read of principals' claims.
    pub(super) fn claim_rules(&self) -> &[ClaimRule] {
        &self.claim_rules
    }

    /// The permits whose grants depend on the request's context.
    pub(super) fn context_rules(&self) -> &[ContextRule] {
        &self.context_rules
    }

    /// The folders and objects inside `scope` that policies name: a folder inside a folder
    /// scope (or anywhere, for the tenant), an object whose known containers include the scope.
    pub(super) fn named_inside(&self, scope: &Resource) -> Vec<Resource> {
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

fn lock<K: std::hash::Hash + Eq, V>(
    cache: &Mutex<LruCache<K, V>>,
) -> std::sync::MutexGuard<'_, LruCache<K, V>> {
    // Every change is one LruCache call; a poisoned lock still holds a consistent map.
    cache.lock().unwrap_or_else(|p| p.into_inner())
}

/// Cedar's rule over the evaluated shards: a satisfied `forbid` anywhere denies (its reasons),
/// else a satisfied `permit` anywhere allows (its reasons), else deny with no reason.
///
/// Unlike Cedar, a `forbid` whose evaluation fails also denies: Cedar skips a policy that errs,
/// which for a `forbid` (say, one reading a tag the principal lacks without `hasTag`) would
/// silently open what it was written to close. A `permit` that errs grants nothing, as in Cedar.
fn combine<'a>(
    responses: impl Iterator<Item = (&'a PolicySet, cedar_policy::Response)>,
) -> Decision {
    let mut forbids = Vec::new();
    let mut failed_forbids = Vec::new();
    let mut permits = Vec::new();
    let mut errors = Vec::new();
    for (set, response) in responses {
        let reasons = response.diagnostics().reason().map(reason_name);
        match response.decision() {
            cedar_policy::Decision::Allow => permits.extend(reasons),
            cedar_policy::Decision::Deny => forbids.extend(reasons),
        }
        for error in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = error;
            if set
                .policy(e.policy_id())
                .is_some_and(|p| p.effect() == cedar_policy::Effect::Forbid)
            {
                failed_forbids.push(reason_name(e.policy_id()));
            }
            errors.push(error.to_string());
        }
    }
    let (allowed, mut reasons) = if !failed_forbids.is_empty() {
        (false, failed_forbids)
    } else if forbids.is_empty() && !permits.is_empty() {
        (true, permits)
    } else {
        (false, forbids)
    };
    reasons.sort();
    reasons.dedup();
    Decision {
        allowed,
        reasons,
        errors,
    }
}

fn denial(e: impl std::fmt::Display) -> Decision {
    Decision {
        allowed: false,
        reasons: Vec::new(),
        errors: vec![e.to_string()],
    }
}

/// The entities a decision needs: the principal, whose ancestors are its groups and the tenant,
/// and the resource, whose ancestors are its containers and the tenant.
///
/// Each is given its whole ancestry directly and the ancestors themselves are left out of the
/// store: `principal in X` and `resource in X`, the only hierarchy tests a Flowgate policy can
/// make on stored data, answer exactly as with the full hierarchy, and Cedar's transitive
/// closure over two entities costs a fraction of one over the whole chain (it dominated the
/// decision). A policy testing the hierarchy between two entity literals (`Folder::"a" in
/// Folder::"b"`) sees no relation; the README says so.
fn entities(
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
fn closed_store(entities: Vec<Entity>) -> anyhow::Result<Entities> {
    use cedar_policy_core::entities::{Entities as Store, NoEntitiesSchema, TCComputation};
    let store = Store::from_entities(
        entities.iter().map(|e| e.as_ref().clone()),
        None::<&NoEntitiesSchema>,
        TCComputation::AssumeAlreadyComputed,
        cedar_policy_core::extensions::Extensions::all_available(),
    )?;
    Ok(Entities::from(store))
}

/// One template per grant of the role, `role:<name>#<n>`, with the grant's actions. A built-in
/// role's grant names its action group (one ancestry test); a custom role's lists its actions;
/// a grant of the whole catalogue constrains no action.
fn compile_role(role: &RoleDef, builtin: bool) -> anyhow::Result<Vec<RoleTemplate>> {
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

/// `binding:<id>` for a role's first grant, `binding:<id>#<n>` for the others.
fn link_id(binding: Uuid, grant: usize) -> PolicyId {
    if grant == 0 {
        PolicyId::new(format!("binding:{binding}"))
    } else {
        PolicyId::new(format!("binding:{binding}#{grant}"))
    }
}

/// The name a decision reports for a policy: a binding's grants all report the binding.
fn reason_name(id: &PolicyId) -> String {
    let id = id.to_string();
    match id.split_once('#') {
        Some((binding, _)) if binding.starts_with("binding:") => binding.to_owned(),
        _ => id,
    }
}

/// The entity a static policy's resource scope names, if any.
pub(super) fn resource_key(policy: &Policy) -> Option<EntityUid> {
    match policy.resource_constraint() {
        ResourceConstraint::Eq(uid)
        | ResourceConstraint::In(uid)
        | ResourceConstraint::IsIn(_, uid) => Some(uid),
        ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
    }
}

/// `uid` as an object the tenant's folder tree does not list (a form, report, secret, task or
/// process named by id); `None` for the tenant, folders and principals.
fn named_object(uid: &EntityUid) -> Option<Resource> {
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
fn principal_key(policy: &Policy) -> Option<EntityUid> {
    match policy.principal_constraint() {
        PrincipalConstraint::Eq(uid)
        | PrincipalConstraint::In(uid)
        | PrincipalConstraint::IsIn(_, uid) => Some(uid),
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => None,
    }
}

/// The Cedar uid of a binding's scope; the tenant scope is the tenant entity itself.
fn scope_uid(slug: &str, scope: ScopeType, scope_id: Option<&str>) -> Option<EntityUid> {
    match scope {
        ScopeType::Tenant => Some(EntityKind::Tenant.uid(slug)),
        other => scope_id.map(|id| other.kind().uid(id)),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SLUG: &str = "acme";

    fn uuid(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn engine() -> PolicyEngine {
        PolicyEngine::new().unwrap()
    }

    /// The world the generated rules live in: users 1–6, groups 11–13, service accounts 21–22,
    /// folders 31 (root), 32 (in 31), 33 (root), processes 41 (in 32) and 42 (at the root).
    fn folders() -> Vec<(Uuid, Option<Uuid>)> {
        vec![
            (uuid(31), None),
            (uuid(32), Some(uuid(31))),
            (uuid(33), None),
        ]
    }

    fn resources(policies: &TenantPolicies) -> Vec<Resource> {
        let mut resources = vec![policies.tenant()];
        resources.extend([31, 32, 33].map(|f| policies.folder(uuid(f)).unwrap()));
        resources.push(
            policies
                .resource_in(EntityKind::Process, uuid(41).to_string(), Some(uuid(32)))
                .unwrap(),
        );
        resources.push(
            policies
                .resource_in(EntityKind::Process, uuid(42).to_string(), None)
                .unwrap(),
        );
        resources.push(
            policies
                .resource_in(EntityKind::Task, "t1".into(), Some(uuid(32)))
                .unwrap(),
        );
        resources
    }

    fn rules<'a>(
        roles: &'a [RoleDef],
        bindings: &'a [Binding],
        policies: &'a [(String, String)],
        folders: &'a [(Uuid, Option<Uuid>)],
    ) -> TenantRules<'a> {
        TenantRules {
            slug: SLUG,
            environment: "dev",
            custom_roles: roles,
            bindings,
            policies,
            folders,
        }
    }

    /// The reference: every policy in one set, evaluated by Cedar as a whole.
    fn whole_set(engine: &PolicyEngine, rules: &TenantRules<'_>) -> PolicySet {
        let mut set = PolicySet::new();
        let mut roles: HashMap<String, Vec<Template>> = engine
            .builtin
            .iter()
            .map(|(d, t)| (d.name.clone(), t.iter().map(|(t, _)| t.clone()).collect()))
            .collect();
        for role in rules.custom_roles {
            let templates = compile_role(role, false)
                .unwrap()
                .into_iter()
                .map(|(t, _)| t)
                .collect();
            roles.insert(role.name.clone(), templates);
        }
        for templates in roles.values() {
            for t in templates {
                set.add_template(t.clone()).unwrap();
            }
        }
        for b in rules.bindings {
            let Some(templates) = roles.get(&b.role) else {
                continue;
            };
            let Some(scope) = scope_uid(SLUG, b.scope_type, b.scope_id.as_deref()) else {
                continue;
            };
            for (i, t) in templates.iter().enumerate() {
                let vals = HashMap::from([
                    (
                        SlotId::principal(),
                        b.subject_type.kind().uid(&b.subject_id.to_string()),
                    ),
                    (SlotId::resource(), scope.clone()),
                ]);
                set.link(t.id().clone(), link_id(b.id, i), vals).unwrap();
            }
        }
        for (name, text) in rules.policies {
            set.add(parse(name, text).unwrap().policy).unwrap();
        }
        set
    }

    fn whole_decision(
        engine: &PolicyEngine,
        set: &PolicySet,
        subject: &Subject,
        action: &str,
        resource: &Resource,
        amount: Option<i64>,
    ) -> (bool, Vec<String>) {
        let tenant = EntityKind::Tenant.uid(SLUG);
        let principal = subject.uid();
        let groups = subject.group_uids();
        let mut store = full_hierarchy(&tenant, subject, &principal, &groups, resource);
        store.extend(engine.actions.get(action).cloned());
        let entities = Entities::from_entities(store, None).unwrap();
        let policies = engine.build(&rules(&[], &[], &[], &folders())).unwrap();
        let context = engine
            .context(
                &policies,
                action,
                &Facts {
                    amount,
                    now: Some(0),
                    ..Facts::default()
                },
            )
            .unwrap();
        let request = Request::new(
            principal,
            action_uid(action),
            resource.kind.uid(&resource.id),
            context,
            None,
        )
        .unwrap();
        let response = engine.authorizer.is_authorized(&request, set, &entities);
        let mut reasons: Vec<String> = response.diagnostics().reason().map(reason_name).collect();
        reasons.sort();
        reasons.dedup();
        (
            response.decision() == cedar_policy::Decision::Allow,
            reasons,
        )
    }

    /// The reference store: every entity of the request's hierarchy, each with its parent only,
    /// as the Cedar documentation models a hierarchy.
    fn full_hierarchy(
        tenant: &EntityUid,
        subject: &Subject,
        principal: &EntityUid,
        groups: &[EntityUid],
        resource: &Resource,
    ) -> Vec<Entity> {
        let mut parents: HashSet<EntityUid> = groups.iter().cloned().collect();
        parents.insert(tenant.clone());
        let tags = subject
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())));
        let mut all = vec![
            Entity::new_with_tags(principal.clone(), [], parents, tags).unwrap(),
            Entity::new_no_attrs(tenant.clone(), HashSet::new()),
        ];
        all.extend(
            groups
                .iter()
                .map(|g| Entity::new_no_attrs(g.clone(), [tenant.clone()].into())),
        );
        let chain: Vec<EntityUid> = std::iter::once(resource.kind.uid(&resource.id))
            .chain(resource.containers.iter().map(|(kind, id)| kind.uid(id)))
            .collect();
        for (i, uid) in chain.iter().enumerate() {
            if uid != tenant {
                all.push(Entity::new_no_attrs(
                    uid.clone(),
                    [chain.get(i + 1).unwrap_or(tenant).clone()].into(),
                ));
            }
        }
        all
    }

    fn user(n: u8, groups: &[u8], dept: Option<&str>) -> Subject {
        Subject {
            kind: EntityKind::User,
            id: uuid(n).to_string(),
            groups: groups.iter().map(|g| uuid(*g).to_string()).collect(),
            tags: dept
                .map(|d| BTreeMap::from([("dept".to_owned(), d.to_owned())]))
                .unwrap_or_default(),
        }
    }

    fn arb_binding() -> impl Strategy<Value = Binding> {
        let roles = prop::sample::select(vec![
            "Admin", "Designer", "Operator", "Viewer", "Auditor", "Custom0", "Custom1", "Ghost",
        ]);
        let subject = prop_oneof![
            (1u8..=6).prop_map(|n| (SubjectType::User, n)),
            (11u8..=13).prop_map(|n| (SubjectType::Group, n)),
            (21u8..=22).prop_map(|n| (SubjectType::ServiceAccount, n)),
        ];
        let scope = prop_oneof![
            Just((ScopeType::Tenant, None)),
            prop::sample::select(vec![31u8, 32, 33])
                .prop_map(|f| (ScopeType::Folder, Some(uuid(f).to_string()))),
            prop::sample::select(vec![41u8, 42])
                .prop_map(|p| (ScopeType::Process, Some(uuid(p).to_string()))),
        ];
        (any::<u128>(), roles, subject, scope).prop_map(
            |(id, role, (subject_type, n), (scope_type, scope_id))| Binding {
                id: Uuid::from_u128(id),
                role: role.to_owned(),
                subject_type,
                subject_id: uuid(n),
                scope_type,
                scope_id,
            },
        )
    }

    fn arb_policy() -> impl Strategy<Value = String> {
        let action = prop::sample::select(
            crate::authz::CATALOGUE
                .iter()
                .map(|a| a.name)
                .collect::<Vec<_>>(),
        );
        prop_oneof![
            (1u8..=6, action.clone()).prop_map(|(u, a)| format!("permit(principal == Flowgate::User::\"{}\", action == Flowgate::Action::\"{a}\", resource);", uuid(u))),
            (11u8..=13, prop::sample::select(vec![31u8, 32, 33])).prop_map(|(g, f)| format!("forbid(principal in Flowgate::Group::\"{}\", action, resource in Flowgate::Folder::\"{}\");", uuid(g), uuid(f))),
            action.clone().prop_map(|a| format!("permit(principal, action == Flowgate::Action::\"{a}\", resource) when {{ principal.hasTag(\"dept\") && principal.getTag(\"dept\") == \"x\" }};")),
            Just("forbid(principal, action == Flowgate::Action::\"task.approve\", resource) when { context has amount && context.amount > 100 };".to_owned()),
            action.prop_map(|a| format!("permit(principal in Flowgate::Tenant::\"{SLUG}\", action == Flowgate::Action::\"{a}\", resource);")),
            prop::sample::select(vec!["role:Viewer", "role:Designer", "role:Designer#1", "role:Operator"])
                .prop_map(|g| format!("forbid(principal, action in Flowgate::Action::\"{g}\", resource) when {{ principal.hasTag(\"dept\") && principal.getTag(\"dept\") == \"y\" }};")),
            prop::sample::select(vec!["role:Auditor", "role:Operator"])
                .prop_map(|g| format!("permit(principal, action in [Flowgate::Action::\"{g}\", Flowgate::Action::\"task.approve\"], resource);")),
        ]
    }

    fn arb_subject() -> impl Strategy<Value = Subject> {
        prop_oneof![
            (
                1u8..=6,
                prop::collection::vec(11u8..=13, 0..3),
                prop::option::of(prop::sample::select(vec!["x", "y"]))
            )
                .prop_map(|(n, groups, dept)| user(n, &groups, dept)),
            (21u8..=22).prop_map(|n| Subject::service_account(uuid(n))),
            Just(user(99, &[], Some("x"))),
        ]
    }

    fn custom_roles() -> Vec<RoleDef> {
        vec![
            RoleDef::custom(
                "Custom0",
                vec!["task.approve".into(), "process.read".into()],
            ),
            RoleDef::custom(
                "Custom1",
                vec!["folder.read".into(), "process.execute".into()],
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Slicing by principal is an optimisation only: it decides exactly as Cedar does over
        /// the whole set, with the same reasons.
        #[test]
        fn sliced_decisions_equal_whole_set_decisions(
            bindings in prop::collection::vec(arb_binding(), 0..14),
            texts in prop::collection::vec(arb_policy(), 0..5),
            subject in arb_subject(),
            amount in prop::option::of(0i64..200),
        ) {
            let engine = engine();
            let policies: Vec<(String, String)> = texts.into_iter().enumerate().map(|(i, t)| (format!("p{i}"), t)).collect();
            let (roles, folders) = (custom_roles(), folders());
            let rules = rules(&roles, &bindings, &policies, &folders);
            let sliced = engine.build(&rules).unwrap();
            let whole = whole_set(&engine, &rules);
            for resource in resources(&sliced) {
                for action in crate::authz::CATALOGUE.iter().filter(|a| a.resources.contains(&resource.kind)) {
                    let facts = Facts { amount, now: Some(0), ..Facts::default() };
                    let decision = engine.decide(&sliced, &subject, action.name, &resource, &facts);
                    let (allowed, reasons) = whole_decision(&engine, &whole, &subject, action.name, &resource, amount);
                    prop_assert_eq!(decision.allowed, allowed, "{} on {:?}", action.name, resource);
                    prop_assert_eq!(decision.reasons, reasons, "{} on {:?}", action.name, resource);
                }
            }
        }

        /// A matching `forbid` wins over every `permit`, whatever else the tenant has.
        #[test]
        fn a_forbid_always_wins(
            bindings in prop::collection::vec(arb_binding(), 0..14),
            texts in prop::collection::vec(arb_policy(), 0..5),
            subject in arb_subject(),
        ) {
            let engine = engine();
            let mut policies: Vec<(String, String)> = texts.into_iter().enumerate().map(|(i, t)| (format!("p{i}"), t)).collect();
            policies.push(("stop".into(), format!("forbid(principal, action, resource in Flowgate::Folder::\"{}\");", uuid(31))));
            let (roles, folders) = (custom_roles(), folders());
            let compiled = engine.build(&rules(&roles, &bindings, &policies, &folders)).unwrap();
            for resource in resources(&compiled).into_iter().filter(|r| r.containers.iter().any(|(_, id)| *id == uuid(31).to_string()) || r.id == uuid(31).to_string()) {
                for action in crate::authz::CATALOGUE.iter().filter(|a| a.resources.contains(&resource.kind)) {
                    let decision = engine.decide(&compiled, &subject, action.name, &resource, &Facts::default());
                    prop_assert!(!decision.allowed, "{} on {:?}", action.name, resource);
                    prop_assert!(decision.reasons.contains(&"policy:stop".to_owned()), "{:?}", decision.reasons);
                }
            }
        }
    }

    #[test]
    fn request_path_inputs_conform_to_the_schema() {
        let engine = engine();
        let (roles, folders) = (custom_roles(), folders());
        let policies = engine.build(&rules(&roles, &[], &[], &folders)).unwrap();
        let subjects = [
            user(1, &[11, 12], Some("x")),
            Subject::service_account(uuid(21)),
        ];
        let facts = Facts {
            source_ip: Some("10.1.2.3".parse().unwrap()),
            mfa_age: Some(30),
            amount: Some(5),
            now: None,
        };
        for subject in &subjects {
            for resource in resources(&policies) {
                for action in crate::authz::CATALOGUE
                    .iter()
                    .filter(|a| a.resources.contains(&resource.kind))
                {
                    let tenant = EntityKind::Tenant.uid(SLUG);
                    let principal = subject.uid();
                    let groups = subject.group_uids();
                    let entities =
                        entities(&tenant, subject, &principal, &groups, &resource).unwrap();
                    Entities::from_entities(entities, Some(engine.schema())).unwrap();
                    let context = engine.context(&policies, action.name, &facts).unwrap();
                    Request::new(
                        principal,
                        action_uid(action.name),
                        resource.kind.uid(&resource.id),
                        context,
                        Some(engine.schema()),
                    )
                    .unwrap_or_else(|e| panic!("{} on {:?}: {e}", action.name, resource.kind));
                }
            }
        }
    }

    #[test]
    fn role_templates_validate_against_the_schema() {
        let engine = engine();
        let mut set = PolicySet::new();
        for (_, templates) in &engine.builtin {
            for (t, _) in templates {
                set.add_template(t.clone()).unwrap();
            }
        }
        let result = Validator::new(engine.schema().clone()).validate(&set, ValidationMode::Strict);
        assert!(result.validation_passed(), "{result}");
    }

    #[test]
    fn policies_must_be_one_valid_static_policy() {
        let engine = engine();
        assert!(
            engine
                .validate_policy(
                    "ok",
                    r#"permit(principal, action == Flowgate::Action::"task.read", resource);"#
                )
                .is_ok()
        );
        for bad in [
            "permit(principal, action, resource",
            r#"permit(principal, action == Flowgate::Action::"no.such", resource);"#,
            r#"permit(principal == ?principal, action, resource);"#,
            r#"permit(principal, action, resource); forbid(principal, action, resource);"#,
            r#"permit(principal, action == Flowgate::Action::"task.read", resource) when { principal.getTag("region") == "US" };"#,
            r#"permit(principal, action == Flowgate::Action::"user.read", resource) when { context.amount > 5 };"#,
        ] {
            let errors = engine.validate_policy("bad", bad).unwrap_err();
            assert!(!errors.is_empty(), "{bad}");
        }
    }

    #[test]
    fn the_decision_store_is_already_closed() {
        let engine = engine();
        let tenant = EntityKind::Tenant.uid(SLUG);
        let subject = Subject {
            kind: EntityKind::User,
            id: uuid(1).to_string(),
            groups: vec![uuid(11).to_string(), uuid(12).to_string()],
            tags: [("region".to_owned(), "US".to_owned())].into(),
        };
        let principal = subject.uid();
        let groups = subject.group_uids();
        let resource = Resource {
            kind: EntityKind::Task,
            id: "t".into(),
            containers: (30..40)
                .map(|n| (EntityKind::Folder, uuid(n).to_string()))
                .chain([(EntityKind::Process, uuid(41).to_string())])
                .collect(),
        };
        for action in ["task.approve", "user.read", "process.publish"] {
            let mut stored = entities(&tenant, &subject, &principal, &groups, &resource).unwrap();
            stored.extend(engine.actions.get(action).cloned());
            assert_eq!(
                closed_store(stored.clone()).unwrap(),
                Entities::from_entities(stored, None).unwrap(),
                "{action}"
            );
        }
    }

    #[test]
    fn decisions_are_remembered_only_when_the_context_cannot_change_them() {
        let engine = engine();
        let folders = folders();
        let bindings = [Binding {
            id: uuid(79),
            role: "Viewer".into(),
            subject_type: SubjectType::ServiceAccount,
            subject_id: uuid(21),
            scope_type: ScopeType::Tenant,
            scope_id: None,
        }];
        let account = Subject::service_account(uuid(21));
        let plain = engine.build(&rules(&[], &bindings, &[], &folders)).unwrap();
        let first = engine.decide(
            &plain,
            &account,
            "user.read",
            &plain.tenant(),
            &Facts::default(),
        );
        let again = engine.decide(
            &plain,
            &account,
            "user.read",
            &plain.tenant(),
            &Facts::default(),
        );
        assert!(first.allowed);
        assert_eq!(first, again);
        assert_eq!(plain.remembered.as_ref().map(|c| lock(c).len()), Some(1));
        // A policy reading the context makes every decision fresh.
        let amounts = [("cap".to_owned(), "forbid(principal, action == Flowgate::Action::\"task.approve\", resource) when { context has amount && context.amount > 10 };".to_owned())];
        let approvers = [Binding {
            role: "Admin".into(),
            ..bindings[0].clone()
        }];
        let contextual = engine
            .build(&rules(&[], &approvers, &amounts, &folders))
            .unwrap();
        assert!(contextual.remembered.is_none());
        let task = contextual
            .resource_in(EntityKind::Task, "t".into(), None)
            .unwrap();
        let small = Facts {
            amount: Some(5),
            ..Facts::default()
        };
        let large = Facts {
            amount: Some(50),
            ..Facts::default()
        };
        assert!(
            engine
                .decide(&contextual, &account, "task.approve", &task, &small)
                .allowed
        );
        assert!(
            !engine
                .decide(&contextual, &account, "task.approve", &task, &large)
                .allowed
        );
    }

    #[test]
    fn a_forbid_that_fails_to_evaluate_denies() {
        let engine = engine();
        let folders = folders();
        let admin = [Binding {
            id: uuid(78),
            role: "Admin".into(),
            subject_type: SubjectType::ServiceAccount,
            subject_id: uuid(21),
            scope_type: ScopeType::Tenant,
            scope_id: None,
        }];
        // Valid Cedar, but the multiplication overflows for large amounts: Cedar would skip it.
        let overflowing = [(
            "cap".to_owned(),
            "forbid(principal, action == Flowgate::Action::\"task.approve\", resource) when { context has amount && context.amount * 1000000000000 > 5000000000000 };".to_owned(),
        )];
        let policies = engine
            .build(&rules(&[], &admin, &overflowing, &folders))
            .unwrap();
        let task = policies
            .resource_in(EntityKind::Task, "t".into(), None)
            .unwrap();
        let account = Subject::service_account(uuid(21));
        let approve = |amount| {
            let facts = Facts {
                amount: Some(amount),
                ..Facts::default()
            };
            engine.decide(&policies, &account, "task.approve", &task, &facts)
        };
        assert!(approve(1).allowed);
        assert!(!approve(9).allowed);
        let failed = approve(i64::MAX / 2);
        assert!(!failed.allowed);
        assert_eq!(failed.reasons, ["policy:cap"]);
        assert!(!failed.errors.is_empty());
    }

    #[test]
    fn designers_publish_outside_production_only() {
        let engine = engine();
        let bindings = [Binding {
            id: uuid(77),
            role: "Designer".into(),
            subject_type: SubjectType::User,
            subject_id: uuid(1),
            scope_type: ScopeType::Tenant,
            scope_id: None,
        }];
        let folders = folders();
        for (environment, allowed) in [("dev", true), ("stage", true), ("prod", false)] {
            let rules = TenantRules {
                environment,
                ..rules(&[], &bindings, &[], &folders)
            };
            let policies = engine.build(&rules).unwrap();
            let process = policies
                .resource_in(EntityKind::Process, uuid(41).to_string(), Some(uuid(32)))
                .unwrap();
            let decision = engine.decide(
                &policies,
                &user(1, &[], None),
                "process.publish",
                &process,
                &Facts::default(),
            );
            assert_eq!(decision.allowed, allowed, "{environment}");
            let edit = engine.decide(
                &policies,
                &user(1, &[], None),
                "process.edit",
                &process,
                &Facts::default(),
            );
            assert!(
                edit.allowed,
                "{environment}: editing is always the Designer's"
            );
        }
    }

    #[test]
    fn a_folder_binding_covers_nested_folders_and_their_content_only() {
        let engine = engine();
        let bindings = [Binding {
            id: uuid(78),
            role: "Operator".into(),
            subject_type: SubjectType::Group,
            subject_id: uuid(11),
            scope_type: ScopeType::Folder,
            scope_id: Some(uuid(31).to_string()),
        }];
        let folders = folders();
        let policies = engine.build(&rules(&[], &bindings, &[], &folders)).unwrap();
        let member = user(1, &[11], None);
        let inside = policies
            .resource_in(EntityKind::Process, uuid(41).to_string(), Some(uuid(32)))
            .unwrap();
        let outside = policies
            .resource_in(EntityKind::Process, uuid(42).to_string(), None)
            .unwrap();
        let decide = |s: &Subject, r: &Resource| {
            engine.decide(&policies, s, "process.execute", r, &Facts::default())
        };
        let granted = decide(&member, &inside);
        assert!(granted.allowed);
        assert_eq!(granted.reasons, vec![format!("binding:{}", uuid(78))]);
        assert!(!decide(&member, &outside).allowed);
        assert!(
            !decide(&user(2, &[], None), &inside).allowed,
            "not a member"
        );
        assert!(
            !engine
                .decide(
                    &policies,
                    &member,
                    "user.read",
                    &policies.tenant(),
                    &Facts::default()
                )
                .allowed
        );
    }
}
