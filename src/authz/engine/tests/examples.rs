//! Example-based tests of the engine: what conforms to the schema, the closed store, remembered
//! decisions, a `forbid` that fails, and what the built-in roles grant.

use cedar_policy::{Entities, PolicySet, Request, ValidationMode, Validator};

use super::{SLUG, custom_roles, engine, folders, resources, rules, user, uuid};
use crate::authz::bindings::{ScopeType, SubjectType};
use crate::authz::engine::decide::lock;
use crate::authz::engine::entities::{closed_store, entities};
use crate::authz::engine::{Binding, Facts, Resource, Subject, TenantRules};
use crate::authz::schema::{EntityKind, action_uid};

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
                let entities = entities(&tenant, subject, &principal, &groups, &resource).unwrap();
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

#[test]
fn a_named_object_is_placed_in_the_folders_the_set_knows() {
    let engine = engine();
    let folders = folders();
    let bind_on_secret = |n: u8| Binding {
        id: uuid(90 + n),
        role: "Viewer".into(),
        subject_type: SubjectType::User,
        subject_id: uuid(1),
        scope_type: ScopeType::Secret,
        scope_id: Some(uuid(n).to_string()),
    };
    let bindings = [bind_on_secret(51), bind_on_secret(52), bind_on_secret(53)];
    let mut policies = engine.build(&rules(&[], &bindings, &[], &folders)).unwrap();
    // 51 in a folder the set knows, 52 in one made since, 53 at the root.
    let folder_of = std::collections::HashMap::from([(uuid(51), uuid(32)), (uuid(52), uuid(99))]);
    policies.place_named(&folder_of);
    let containers = |n: u8| -> Vec<String> {
        policies
            .object(EntityKind::Secret, &uuid(n).to_string())
            .containers
            .into_iter()
            .map(|(_, id)| id)
            .collect()
    };
    assert_eq!(containers(51), [uuid(32).to_string(), uuid(31).to_string()]);
    assert_eq!(
        containers(52),
        [uuid(99).to_string()],
        "an unknown folder still holds it"
    );
    assert!(containers(53).is_empty());
}
