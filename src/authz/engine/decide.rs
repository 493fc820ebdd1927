//! Deciding: the request's context, the shards that can apply to its principal and action,
//! and Cedar's rule over their responses; decisions remembered per tenant when the context
//! cannot change them.
//!
//! Invariant: a decision fails closed. An error building the request or the store denies, a
//! `forbid` that errs denies, and only decisions made without errors are remembered.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use cedar_policy::{Context, Entities, PolicySet, Request, RestrictedExpression, Schema};
use lru::LruCache;

use super::PolicyEngine;
use super::entities::{closed_store, entities};
use super::names::reason_name;
use super::policy_set::TenantPolicies;
use super::request::{Facts, Resource, Subject};
use crate::authz::actions::info;
use crate::authz::policy_text::depth;
use crate::authz::schema::{EntityKind, action_uid};

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

/// Deepest request context `/authz/check` takes (records in records, sets in sets).
const MAX_CONTEXT_DEPTH: usize = 8;

/// What a remembered decision was about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct DecisionKey {
    principal: (EntityKind, String),
    groups: Vec<String>,
    action: String,
    resource: (EntityKind, String),
    containers: Vec<(EntityKind, String)>,
}

/// Decisions remembered per tenant.
pub(super) const REMEMBERED_DECISIONS: NonZeroUsize = match NonZeroUsize::new(4_096) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

impl PolicyEngine {
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
    pub(super) fn context(
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

pub(super) fn lock<K: std::hash::Hash + Eq, V>(
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

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
