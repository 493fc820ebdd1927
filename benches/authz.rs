//! Authorization decision latency with 1,000 policies and 10,000 entities in a tenant, the
//! sliced engine side by side with Cedar evaluating the whole set, and the policy-set reload.
//!
//! `cargo bench --bench authz` prints criterion's estimates and, before them, p50/p99 of the
//! sliced decision over 20,000 requests and the whole-set / sliced ratio. Targets: p99 ≤ 50 µs,
//! reload ≤ 50 ms.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;
use std::time::Instant;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityUid, PolicySet, Request, RestrictedExpression,
};
use criterion::{Criterion, criterion_group, criterion_main};
use flowgate::authz::bindings::{ScopeType, SubjectType};
use flowgate::authz::roles::BUILTIN_ROLES;
use flowgate::authz::schema::{EntityKind, action_uid};
use flowgate::authz::{
    Binding, CATALOGUE, Facts, PolicyEngine, Resource, Subject, TenantPolicies, TenantRules,
};
use uuid::Uuid;

const SLUG: &str = "bench";
const USERS: u32 = 8_000;
const GROUPS: u32 = 500;
const FOLDERS: u32 = 1_500;
const BINDINGS: u32 = 900;
const STATIC_POLICIES: u32 = 100;

/// A small deterministic generator, so every run measures the same tenant.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % u64::from(n)) as u32
    }
}

fn id(kind: u8, n: u32) -> Uuid {
    Uuid::from_u128((u128::from(kind) << 64) | u128::from(n))
}

struct World {
    bindings: Vec<Binding>,
    policies: Vec<(String, String)>,
    folders: Vec<(Uuid, Option<Uuid>)>,
    memberships: Vec<Vec<u32>>,
}

fn world() -> World {
    let mut rng = Rng(42);
    let folders = (0..FOLDERS)
        .map(|f| {
            (
                id(3, f),
                (f >= 50).then(|| id(3, rng.below(f.min(FOLDERS)))),
            )
        })
        .collect();
    let roles = ["Admin", "Designer", "Operator", "Viewer", "Auditor"];
    let bindings = (0..BINDINGS)
        .map(|b| {
            let (subject_type, subject_id) = if rng.below(10) < 7 {
                (SubjectType::User, id(1, rng.below(USERS)))
            } else {
                (SubjectType::Group, id(2, rng.below(GROUPS)))
            };
            let (scope_type, scope_id) = if rng.below(10) < 3 {
                (ScopeType::Tenant, None)
            } else {
                (
                    ScopeType::Folder,
                    Some(id(3, rng.below(FOLDERS)).to_string()),
                )
            };
            Binding {
                id: id(9, b),
                role: roles[rng.below(5) as usize].to_owned(),
                subject_type,
                subject_id,
                scope_type,
                scope_id,
            }
        })
        .collect();
    let policies = (0..STATIC_POLICIES)
        .map(|p| {
            let action = CATALOGUE[rng.below(CATALOGUE.len() as u32) as usize].name;
            let text = match p % 10 {
                0 => format!(
                    r#"permit(principal, action == Flowgate::Action::"{action}", resource) when {{ principal.hasTag("department") && principal.getTag("department") == "d{}" }};"#,
                    rng.below(20)
                ),
                1..=5 => format!(
                    r#"permit(principal == Flowgate::User::"{}", action == Flowgate::Action::"{action}", resource in Flowgate::Folder::"{}");"#,
                    id(1, rng.below(USERS)),
                    id(3, rng.below(FOLDERS))
                ),
                _ => format!(
                    r#"forbid(principal in Flowgate::Group::"{}", action == Flowgate::Action::"{action}", resource);"#,
                    id(2, rng.below(GROUPS))
                ),
            };
            (format!("p{p}"), text)
        })
        .collect();
    let memberships = (0..USERS)
        .map(|_| (0..3).map(|_| rng.below(GROUPS)).collect())
        .collect();
    World {
        bindings,
        policies,
        folders,
        memberships,
    }
}

fn rules(world: &World) -> TenantRules<'_> {
    TenantRules {
        slug: SLUG,
        environment: "prod",
        custom_roles: &[],
        bindings: &world.bindings,
        policies: &world.policies,
        folders: &world.folders,
    }
}

struct Question {
    subject: Subject,
    action: &'static str,
    resource: Resource,
}

fn questions(world: &World, policies: &TenantPolicies, n: usize) -> Vec<Question> {
    let mut rng = Rng(7);
    (0..n)
        .map(|_| {
            let user = rng.below(USERS);
            let subject = Subject {
                kind: EntityKind::User,
                id: id(1, user).to_string(),
                groups: world.memberships[user as usize]
                    .iter()
                    .map(|g| id(2, *g).to_string())
                    .collect(),
                tags: BTreeMap::from([("department".to_owned(), format!("d{}", rng.below(20)))]),
            };
            let folder = id(3, rng.below(FOLDERS));
            let resource = policies
                .resource_in(
                    EntityKind::Process,
                    id(4, rng.below(10_000)).to_string(),
                    Some(folder),
                )
                .unwrap_or_else(|| policies.tenant());
            let on_process: Vec<_> = CATALOGUE
                .iter()
                .filter(|a| a.resources.contains(&EntityKind::Process))
                .collect();
            let action = on_process[rng.below(on_process.len() as u32) as usize].name;
            Question {
                subject,
                action,
                resource,
            }
        })
        .collect()
}

/// The same policies as one Cedar set (each link written out as the static policy it stands
/// for), to compare the sliced engine with evaluating everything.
fn whole_set(world: &World) -> PolicySet {
    let mut text = String::new();
    for binding in &world.bindings {
        let role = BUILTIN_ROLES
            .iter()
            .find(|r| r.name == binding.role)
            .unwrap()
            .definition();
        let subject = match binding.subject_type {
            SubjectType::User => EntityKind::User,
            SubjectType::Group => EntityKind::Group,
            SubjectType::ServiceAccount => EntityKind::ServiceAccount,
        }
        .uid(&binding.subject_id.to_string());
        let scope = match &binding.scope_id {
            Some(folder) => EntityKind::Folder.uid(folder),
            None => EntityKind::Tenant.uid(SLUG),
        };
        for grant in role.grants {
            let actions: Vec<String> = grant
                .actions
                .iter()
                .map(|a| action_uid(a).to_string())
                .collect();
            let condition = grant
                .condition
                .map(|c| format!(" when {{ {c} }}"))
                .unwrap_or_default();
            text.push_str(&format!(
                "permit(principal in {subject}, action in [{}], resource in {scope}){condition};\n",
                actions.join(", ")
            ));
        }
    }
    for (_, policy) in &world.policies {
        text.push_str(policy);
        text.push('\n');
    }
    text.parse().unwrap()
}

fn whole_set_decision(authorizer: &Authorizer, set: &PolicySet, q: &Question) -> bool {
    let tenant = EntityKind::Tenant.uid(SLUG);
    let principal = q.subject.kind.uid(&q.subject.id);
    let groups: Vec<EntityUid> = q
        .subject
        .groups
        .iter()
        .map(|g| EntityKind::Group.uid(g))
        .collect();
    let mut parents: HashSet<EntityUid> = groups.iter().cloned().collect();
    parents.insert(tenant.clone());
    let tags = q
        .subject
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())));
    let mut entities = vec![
        Entity::new_with_tags(principal.clone(), [], parents, tags).unwrap(),
        Entity::new_no_attrs(tenant.clone(), HashSet::new()),
    ];
    entities.extend(
        groups
            .iter()
            .map(|g| Entity::new_no_attrs(g.clone(), [tenant.clone()].into())),
    );
    let chain: Vec<EntityUid> = std::iter::once(q.resource.kind.uid(&q.resource.id))
        .chain(q.resource.containers.iter().map(|(k, id)| k.uid(id)))
        .collect();
    for (i, uid) in chain.iter().enumerate() {
        let parent = chain.get(i + 1).unwrap_or(&tenant).clone();
        entities.push(Entity::new_no_attrs(uid.clone(), [parent].into()));
    }
    let entities = Entities::from_entities(entities, None).unwrap();
    let context = Context::from_pairs([
        (
            "environment".to_owned(),
            RestrictedExpression::new_string("prod".into()),
        ),
        ("now".to_owned(), RestrictedExpression::new_long(0)),
    ])
    .unwrap();
    let request = Request::new(
        principal,
        action_uid(q.action),
        q.resource.kind.uid(&q.resource.id),
        context,
        None,
    )
    .unwrap();
    authorizer
        .is_authorized(&request, set, &entities)
        .decision()
        == cedar_policy::Decision::Allow
}

fn percentiles(mut nanos: Vec<u128>) -> (f64, f64) {
    nanos.sort_unstable();
    let at =
        |p: f64| nanos[((nanos.len() as f64 * p) as usize).min(nanos.len() - 1)] as f64 / 1000.0;
    (at(0.50), at(0.99))
}

fn bench(c: &mut Criterion) {
    let engine = PolicyEngine::new().unwrap();
    let world = world();
    let policies = engine.build(&rules(&world)).unwrap();
    let set = whole_set(&world);
    let authorizer = Authorizer::new();
    let questions = questions(&world, &policies, 20_000);
    let facts = Facts {
        now: Some(0),
        ..Facts::default()
    };
    // Equivalence on this world (the property test proves it in general).
    for q in questions.iter().take(2_000) {
        let sliced = engine
            .decide(&policies, &q.subject, q.action, &q.resource, &facts)
            .allowed;
        assert_eq!(
            sliced,
            whole_set_decision(&authorizer, &set, q),
            "{} {:?}",
            q.action,
            q.resource
        );
    }
    let sliced: Vec<u128> = questions
        .iter()
        .map(|q| {
            let t = Instant::now();
            black_box(engine.decide(&policies, &q.subject, q.action, &q.resource, &facts));
            t.elapsed().as_nanos()
        })
        .collect();
    let whole: Vec<u128> = questions
        .iter()
        .take(2_000)
        .map(|q| {
            let t = Instant::now();
            black_box(whole_set_decision(&authorizer, &set, q));
            t.elapsed().as_nanos()
        })
        .collect();
    let reloads: Vec<u128> = (0..20)
        .map(|_| {
            let t = Instant::now();
            black_box(engine.build(&rules(&world)).unwrap());
            t.elapsed().as_nanos()
        })
        .collect();
    let (s50, s99) = percentiles(sliced);
    let (w50, w99) = percentiles(whole);
    let (r50, r99) = percentiles(reloads);
    println!(
        "tenant: {} policies ({} bindings, {} claim policies), {} entities ({USERS} users, {GROUPS} groups, {FOLDERS} folders)",
        policies.len(),
        BINDINGS,
        STATIC_POLICIES,
        USERS + GROUPS + FOLDERS
    );
    println!("decision, sliced:    p50 {s50:8.1} µs   p99 {s99:8.1} µs   (target p99 ≤ 50 µs)");
    println!(
        "decision, whole set: p50 {w50:8.1} µs   p99 {w99:8.1} µs   whole/sliced at p50: {:.1}×",
        w50 / s50
    );
    println!(
        "reload of the policy set: p50 {:6.1} ms   p99 {:6.1} ms   (target ≤ 50 ms)",
        r50 / 1000.0,
        r99 / 1000.0
    );

    let mut group = c.benchmark_group("authz");
    let mut i = 0;
    group.bench_function("decision/sliced", |b| {
        b.iter(|| {
            i = (i + 1) % questions.len();
            let q = &questions[i];
            engine.decide(&policies, &q.subject, q.action, &q.resource, &facts)
        })
    });
    group.bench_function("decision/whole-set", |b| {
        b.iter(|| {
            i = (i + 1) % questions.len();
            whole_set_decision(&authorizer, &set, &questions[i])
        })
    });
    group.sample_size(20);
    group.bench_function("reload/1000-policies", |b| {
        b.iter(|| engine.build(&rules(&world)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
