//! Access analysis over a tenant: who can do what on a resource, what a principal can do, and
//! what a change to the rules would change (the dry run before a policy or role change).
//!
//! Every answer evaluates the real engine over the tenant's principals (users with their groups
//! and claims, service accounts) and resources (the tenant, its folders and processes), for
//! every action that applies, in the default context (the tenant's environment, now, no
//! request data). Evaluations are capped; a capped answer says `truncated`.

use std::collections::HashMap;

use entity::tenant::{group_member, process, service_account, user};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait as _, QuerySelect as _};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::actions::CATALOGUE;
use super::delegation::probe;
use super::engine::{Facts, Grantor, PolicyEngine, Resource, Subject, TenantPolicies};
use super::schema::EntityKind;
use super::service::ObjectFolder;

/// Most decisions one analysis makes.
const MAX_EVALUATIONS: usize = 200_000;
/// Most principals and resources one analysis loads.
const MAX_SUBJECTS: u64 = 5_000;
const MAX_PROCESSES: u64 = 5_000;

/// A principal or resource, as the API names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
pub struct EntityRef {
    /// `user`, `service_account`, `tenant`, `folder`, `process`, …
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

impl EntityRef {
    fn of(kind: EntityKind, id: &str) -> Self {
        EntityRef {
            kind: kind.api_name().to_owned(),
            id: id.to_owned(),
        }
    }
}

/// One permission: a principal may do an action on a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
pub struct Permission {
    pub principal: EntityRef,
    pub action: String,
    pub resource: EntityRef,
}

/// What a change would do.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Impact {
    /// Permissions the change would grant.
    pub gains: Vec<Permission>,
    /// Permissions the change would take away.
    pub losses: Vec<Permission>,
    /// Decisions compared.
    pub evaluated: usize,
    /// The tenant was too large to compare everything.
    pub truncated: bool,
}

/// Who may do which actions on one resource.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Access {
    pub resource: EntityRef,
    pub grants: Vec<Grants>,
    pub truncated: bool,
}

/// The actions one party may do (`party` is the principal or the resource, by context).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Grants {
    pub party: EntityRef,
    pub actions: Vec<String>,
}

/// What one principal may do, by resource.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Abilities {
    pub principal: EntityRef,
    pub grants: Vec<Grants>,
    pub truncated: bool,
}

/// The principals and resources of a tenant.
pub struct Universe {
    subjects: Vec<Subject>,
    resources: Vec<Resource>,
}

impl Universe {
    /// The tenant's resources only (for questions about one principal).
    pub async fn load_resources(
        conn: &impl ConnectionTrait,
        policies: &TenantPolicies,
    ) -> Result<Self, DbErr> {
        Ok(Universe {
            subjects: Vec::new(),
            resources: resources(conn, policies).await?,
        })
    }

    /// Loads the tenant's principals and resources in the caller's transaction.
    pub async fn load(
        conn: &impl ConnectionTrait,
        policies: &TenantPolicies,
    ) -> Result<Self, DbErr> {
        let mut groups: HashMap<Uuid, Vec<String>> = HashMap::new();
        for member in group_member::Entity::find().all(conn).await? {
            groups
                .entry(member.user_id)
                .or_default()
                .push(member.group_id.to_string());
        }
        let mut subjects: Vec<Subject> = user::Entity::find()
            .limit(MAX_SUBJECTS)
            .all(conn)
            .await?
            .into_iter()
            .map(|u| Subject {
                kind: EntityKind::User,
                id: u.id.to_string(),
                groups: groups.remove(&u.id).unwrap_or_default(),
                tags: serde_json::from_value(u.attributes).unwrap_or_default(),
            })
            .collect();
        subjects.extend(
            service_account::Entity::find()
                .limit(MAX_SUBJECTS)
                .all(conn)
                .await?
                .into_iter()
                .map(|a| Subject::service_account(a.id)),
        );
        Ok(Universe {
            subjects,
            resources: resources(conn, policies).await?,
        })
    }
}

/// The tenant, its folders and its processes.
async fn resources(
    conn: &impl ConnectionTrait,
    policies: &TenantPolicies,
) -> Result<Vec<Resource>, DbErr> {
    let mut resources = vec![policies.tenant()];
    resources.extend(policies.folder_ids().filter_map(|id| policies.folder(id)));
    let processes = process::Entity::find()
        .select_only()
        .column(process::Column::Id)
        .column(process::Column::FolderId)
        .limit(MAX_PROCESSES)
        .into_model::<ObjectFolder>()
        .all(conn)
        .await?;
    resources.extend(
        processes.into_iter().filter_map(|p| {
            policies.resource_in(EntityKind::Process, p.id.to_string(), p.folder_id)
        }),
    );
    Ok(resources)
}

/// The permissions that `after` has and `before` lacked (every permission of `after` when there
/// is no `before`) which `caller` does not hold, over the tenant's resources: what changing a
/// principal from `before` to `after` (a new group, new claims), or issuing a credential of
/// `after`, would hand out beyond the caller's own power.
pub fn exceeding(
    engine: &PolicyEngine,
    policies: &TenantPolicies,
    universe: &Universe,
    before: Option<&Subject>,
    after: &Subject,
    caller: &Grantor<'_>,
) -> Vec<Permission> {
    // The grantee in no particular context (what only a context shows is checked apart: the
    // context rules); the caller in that one and in its own request's (`PolicyEngine::holds`).
    let facts = Facts::default();
    let allowed = |subject: &Subject, action: &str, resource: &Resource| {
        engine
            .decide(policies, subject, action, resource, &facts)
            .allowed
    };
    let held = |action: &str, resource: &Resource| engine.holds(policies, caller, action, resource);
    let mut excess = Vec::new();
    for resource in &escalation_targets(policies, universe) {
        for action in actions_on(resource) {
            if allowed(after, action, resource)
                && !before.is_some_and(|b| allowed(b, action, resource))
                && !held(action, resource)
            {
                excess.push(Permission {
                    principal: EntityRef::of(after.kind, &after.id),
                    action: action.to_owned(),
                    resource: EntityRef::of(resource.kind, &resource.id),
                });
            }
        }
    }
    excess
}

/// Everywhere a grant can differ between two principals: the tenant, its folders and processes,
/// an anonymous process, form, report, secret and task in the tenant and each folder (for
/// grants on "anything inside", an empty folder's and the processes beyond the sample
/// included), and the objects bindings and policies name by id.
fn escalation_targets(policies: &TenantPolicies, universe: &Universe) -> Vec<Resource> {
    const INSIDE: [EntityKind; 5] = [
        EntityKind::Process,
        EntityKind::Form,
        EntityKind::Report,
        EntityKind::Secret,
        EntityKind::Task,
    ];
    let mut targets = universe.resources.clone();
    for scope in &universe.resources {
        // A probe of the scope's own kind is the scope, a target already.
        let inside = INSIDE.iter().filter(|kind| **kind != scope.kind);
        targets.extend(inside.filter_map(|kind| probe(*kind, scope)));
    }
    targets.extend(policies.named_objects().iter().cloned());
    targets
}

/// The actions that apply to `resource`.
fn actions_on(resource: &Resource) -> impl Iterator<Item = &'static str> + '_ {
    CATALOGUE
        .iter()
        .filter(|a| a.resources.contains(&resource.kind))
        .map(|a| a.name)
}

/// Compares two policy sets of one tenant over its whole universe.
pub fn impact(
    engine: &PolicyEngine,
    before: &TenantPolicies,
    after: &TenantPolicies,
    universe: &Universe,
) -> Impact {
    let facts = Facts::default();
    let mut report = Impact {
        gains: Vec::new(),
        losses: Vec::new(),
        evaluated: 0,
        truncated: false,
    };
    'all: for subject in &universe.subjects {
        for resource in &universe.resources {
            for action in actions_on(resource) {
                if report.evaluated >= MAX_EVALUATIONS {
                    report.truncated = true;
                    break 'all;
                }
                report.evaluated += 1;
                let was = engine
                    .decide(before, subject, action, resource, &facts)
                    .allowed;
                let will = engine
                    .decide(after, subject, action, resource, &facts)
                    .allowed;
                if was != will {
                    let permission = Permission {
                        principal: EntityRef::of(subject.kind, &subject.id),
                        action: action.to_owned(),
                        resource: EntityRef::of(resource.kind, &resource.id),
                    };
                    if will {
                        report.gains.push(permission)
                    } else {
                        report.losses.push(permission)
                    }
                }
            }
        }
    }
    report
}

/// Who may do what on `resource`.
pub fn who_can(
    engine: &PolicyEngine,
    policies: &TenantPolicies,
    universe: &Universe,
    resource: &Resource,
) -> Access {
    let pairs = universe
        .subjects
        .iter()
        .map(|subject| (subject, resource, EntityRef::of(subject.kind, &subject.id)));
    let (grants, truncated) = tally(engine, policies, pairs);
    Access {
        resource: EntityRef::of(resource.kind, &resource.id),
        grants,
        truncated,
    }
}

/// What `subject` may do, by resource.
pub fn what_can(
    engine: &PolicyEngine,
    policies: &TenantPolicies,
    universe: &Universe,
    subject: &Subject,
) -> Abilities {
    let pairs = universe.resources.iter().map(|resource| {
        (
            subject,
            resource,
            EntityRef::of(resource.kind, &resource.id),
        )
    });
    let (grants, truncated) = tally(engine, policies, pairs);
    Abilities {
        principal: EntityRef::of(subject.kind, &subject.id),
        grants,
        truncated,
    }
}

/// For each `(subject, resource, party)`, the actions the subject may do on the resource, as
/// grants to `party`; and whether the evaluation cap cut the tally short.
fn tally<'a>(
    engine: &PolicyEngine,
    policies: &TenantPolicies,
    pairs: impl Iterator<Item = (&'a Subject, &'a Resource, EntityRef)>,
) -> (Vec<Grants>, bool) {
    let facts = Facts::default();
    let mut evaluated = 0;
    let mut grants = Vec::new();
    for (subject, resource, party) in pairs {
        if evaluated >= MAX_EVALUATIONS {
            return (grants, true);
        }
        let actions: Vec<String> = actions_on(resource)
            .filter(|action| {
                evaluated += 1;
                engine
                    .decide(policies, subject, action, resource, &facts)
                    .allowed
            })
            .map(str::to_owned)
            .collect();
        if !actions.is_empty() {
            grants.push(Grants { party, actions });
        }
    }
    (grants, false)
}
