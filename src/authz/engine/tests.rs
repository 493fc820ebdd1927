//! Tests of the engine. The property tests check that the sliced engine decides as Cedar does
//! over the tenant's whole policy set, and that a matching `forbid` always wins; the example
//! tests (in `examples`) pin single rules. Both use the small world of fixtures defined here.

use std::collections::{BTreeMap, HashMap, HashSet};

use cedar_policy::{
    Entities, Entity, EntityUid, PolicySet, Request, RestrictedExpression, SlotId, Template,
};
use proptest::prelude::*;
use uuid::Uuid;

use super::compile::compile_role;
use super::names::{link_id, reason_name, scope_uid};
use super::{Binding, Facts, PolicyEngine, Resource, Subject, TenantPolicies, TenantRules};
use crate::authz::bindings::{ScopeType, SubjectType};
use crate::authz::policy_text::parse;
use crate::authz::roles::RoleDef;
use crate::authz::schema::{EntityKind, action_uid};

mod examples;

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
