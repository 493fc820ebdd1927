//! Loading tenants' rules from their storage and caching the compiled policy sets.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;

use entity::tenant::{
    folder, group_member, policy, process, role, role_binding, secret, service_account, user,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter as _,
    QuerySelect as _,
};
use uuid::Uuid;

use super::AuthzError;
use super::bindings::{ScopeType, SubjectType};
use super::engine::{Binding, PolicyEngine, Resource, Subject, TenantPolicies, TenantRules};
use super::roles::RoleDef;
use super::schema::EntityKind;
use crate::tenancy::{Access, Databases, Tenant, TenantCache, Turns};

/// Tenants whose compiled policy sets are kept in memory.
const CACHED_POLICY_SETS: usize = 1_000;

/// Everything a tenant's policy set is built from, as stored.
#[derive(Debug, Clone, Default)]
pub struct StoredRules {
    pub custom_roles: Vec<RoleDef>,
    pub bindings: Vec<Binding>,
    /// `(name, text)` of each claim-based policy.
    pub policies: Vec<(String, String)>,
    pub folders: Vec<(Uuid, Option<Uuid>)>,
}

impl StoredRules {
    /// Reads the rules inside the caller's tenant transaction.
    pub async fn load(conn: &impl ConnectionTrait) -> Result<Self, DbErr> {
        let custom_roles = role::Entity::find()
            .all(conn)
            .await?
            .into_iter()
            .map(|r| {
                RoleDef::custom(
                    &r.name,
                    serde_json::from_value(r.actions).unwrap_or_default(),
                )
            })
            .collect();
        let bindings = role_binding::Entity::find()
            .all(conn)
            .await?
            .into_iter()
            .filter_map(|b| {
                Some(Binding {
                    subject_type: SubjectType::parse(&b.subject_type)?,
                    scope_type: ScopeType::parse(&b.scope_type)?,
                    id: b.id,
                    role: b.role,
                    subject_id: b.subject_id,
                    scope_id: b.scope_id,
                })
            })
            .collect();
        let policies = policy::Entity::find()
            .all(conn)
            .await?
            .into_iter()
            .map(|p| (p.name, p.text))
            .collect();
        let folders = folder::Entity::find()
            .select_only()
            .column(folder::Column::Id)
            .column(folder::Column::ParentId)
            .into_model::<FolderParent>()
            .all(conn)
            .await?
            .into_iter()
            .map(|f| (f.id, f.parent_id))
            .collect();
        Ok(StoredRules {
            custom_roles,
            bindings,
            policies,
            folders,
        })
    }

    pub fn for_tenant<'a>(&'a self, tenant: &'a Tenant) -> TenantRules<'a> {
        TenantRules {
            slug: tenant.slug.as_str(),
            environment: tenant.environment.as_str(),
            custom_roles: &self.custom_roles,
            bindings: &self.bindings,
            policies: &self.policies,
            folders: &self.folders,
        }
    }
}

/// The authorization service: the engine and the tenants' cached policy sets.
///
/// Invariant: a policy set is compiled on the blocking pool, never on a worker thread that
/// serves requests (a tenant with thousands of policies takes seconds), and once at a time per
/// tenant: requests that miss the cache together wait for the one build (or for one build per
/// invalidation that lands meanwhile), which runs as its own task and is cached even when
/// every request waiting for it has gone.
pub struct Authz {
    compiler: Compiler,
    cache: Arc<TenantCache<Arc<TenantPolicies>>>,
    /// The build under way per tenant, which the requests that miss the cache wait for.
    turns: Arc<Turns>,
}

impl Authz {
    pub fn new(dbs: Arc<Databases>) -> anyhow::Result<Self> {
        let capacity = NonZeroUsize::new(CACHED_POLICY_SETS).unwrap_or(NonZeroUsize::MIN);
        Ok(Authz {
            compiler: Compiler {
                engine: Arc::new(PolicyEngine::new()?),
                dbs,
            },
            cache: Arc::new(TenantCache::new(capacity)),
            turns: Arc::default(),
        })
    }

    pub fn engine(&self) -> &PolicyEngine {
        &self.compiler.engine
    }

    /// The tenant's policy set, compiled from its stored rules on first use.
    pub async fn policies(&self, tenant: &Tenant) -> Result<Arc<TenantPolicies>, AuthzError> {
        if let Some(cached) = self.cache.get(tenant.slug.as_str()) {
            return Ok(cached);
        }
        let build = Build {
            compiler: self.compiler.clone(),
            cache: Arc::clone(&self.cache),
            turns: Arc::clone(&self.turns),
            tenant: tenant.clone(),
        };
        // A request that stops waiting (its client left) leaves the build running: a tenant
        // whose build outlasts its clients' patience would otherwise never get a set. The build
        // runs as part of the request that started it (its log lines and trace spans).
        let built = match crate::http::request_id::current_request() {
            Some(request) => tokio::spawn(crate::http::request_id::scope(request, build.run())),
            None => tokio::spawn(build.run()),
        };
        built
            .await
            .map_err(|e| anyhow::anyhow!("building the policy set failed: {e}"))?
    }

    /// Compiles `rules` into `tenant`'s policy set on the blocking pool, with the objects it
    /// names by id placed in their folders: the cached set, and the changed sets that dry runs
    /// and escalation checks compare with it, are made alike.
    pub async fn compile(
        &self,
        tenant: &Tenant,
        rules: StoredRules,
    ) -> Result<TenantPolicies, AuthzError> {
        self.compiler.compile(tenant, rules).await
    }

    /// Forgets the cached policy set of `slug`; the next request rebuilds it.
    pub fn invalidate(&self, slug: &str) {
        self.cache.invalidate(slug);
    }

    /// Forgets every cached policy set.
    pub fn invalidate_all(&self) {
        self.cache.clear();
    }
}

/// What compiling a policy set needs, cheap to hand to a build's task.
#[derive(Clone)]
struct Compiler {
    engine: Arc<PolicyEngine>,
    dbs: Arc<Databases>,
}

impl Compiler {
    #[expect(
        clippy::disallowed_methods,
        reason = "placing named objects reads their folders, no principal's data"
    )]
    async fn compile(
        &self,
        tenant: &Tenant,
        rules: StoredRules,
    ) -> Result<TenantPolicies, AuthzError> {
        let (engine, owned) = (Arc::clone(&self.engine), tenant.clone());
        let mut built =
            tokio::task::spawn_blocking(move || engine.build(&rules.for_tenant(&owned)))
                .await
                .map_err(|e| anyhow::anyhow!("compiling the policy set failed: {e}"))??;
        if !built.named_objects().is_empty() {
            let tx = self.dbs.begin(&tenant.slug, Access::Read).await?;
            let folders = folders_of(&tx, built.named_objects()).await?;
            tx.commit().await?;
            built.place_named(&folders);
        }
        Ok(built)
    }

    /// `tenant`'s stored rules, compiled.
    #[expect(
        clippy::disallowed_methods,
        reason = "the rules are loaded before any principal's unit of work can exist"
    )]
    async fn load(&self, tenant: &Tenant) -> Result<TenantPolicies, AuthzError> {
        let tx = self.dbs.begin(&tenant.slug, Access::Read).await?;
        let rules = StoredRules::load(&tx).await?;
        tx.commit().await?;
        self.compile(tenant, rules).await
    }
}

/// One tenant's build of its policy set into the cache, in its turn.
struct Build {
    compiler: Compiler,
    cache: Arc<TenantCache<Arc<TenantPolicies>>>,
    turns: Arc<Turns>,
    tenant: Tenant,
}

impl Build {
    async fn run(self) -> Result<Arc<TenantPolicies>, AuthzError> {
        let slug = self.tenant.slug.as_str();
        self.cache
            .get_or_try_load_in_turn(&self.turns, slug, || async {
                Ok(Arc::new(self.compiler.load(&self.tenant).await?))
            })
            .await
    }
}

/// The subject `kind`/`id` of the transaction's tenant with its groups and claims, or `None`
/// when the tenant has no such principal.
pub async fn load_subject(
    conn: &impl ConnectionTrait,
    kind: SubjectType,
    id: Uuid,
) -> Result<Option<Subject>, DbErr> {
    match kind {
        SubjectType::User => {
            let Some(user) = user::Entity::find_by_id(id).one(conn).await? else {
                return Ok(None);
            };
            let groups = group_member::Entity::find()
                .filter(group_member::Column::UserId.eq(id))
                .all(conn)
                .await?
                .into_iter()
                .map(|m| m.group_id.to_string())
                .collect();
            let tags: BTreeMap<String, String> =
                serde_json::from_value(user.attributes).unwrap_or_default();
            Ok(Some(Subject {
                kind: EntityKind::User,
                id: id.to_string(),
                groups,
                tags,
            }))
        }
        SubjectType::ServiceAccount => Ok(service_account::Entity::find_by_id(id)
            .one(conn)
            .await?
            .map(|_| Subject::service_account(id))),
        SubjectType::Group => Ok(None),
    }
}

/// The resource `kind`/`id` of the transaction's tenant with its containers, or `None` when the
/// tenant has no such resource. Kinds the tenant does not store yet (forms, reports,
/// tasks) are taken as given, placed in `folder` when one is named.
pub async fn resolve_resource(
    conn: &impl ConnectionTrait,
    policies: &TenantPolicies,
    kind: EntityKind,
    id: &str,
    folder: Option<Uuid>,
) -> Result<Option<Resource>, DbErr> {
    let uuid = Uuid::parse_str(id).ok();
    Ok(match kind {
        EntityKind::Tenant => (id == policies.slug()).then(|| policies.tenant()),
        EntityKind::Folder => uuid.and_then(|id| policies.folder(id)),
        EntityKind::Process => match uuid {
            Some(id) => process_folder(conn, id)
                .await?
                .and_then(|folder| policies.resource_in(kind, id.to_string(), folder)),
            None => None,
        },
        EntityKind::Secret => match uuid {
            Some(id) => crate::secrets::folder_of(conn, id)
                .await?
                .and_then(|folder| policies.resource_in(kind, id.to_string(), folder)),
            None => None,
        },
        EntityKind::Form | EntityKind::Report | EntityKind::Task => {
            policies.resource_in(kind, id.to_owned(), folder)
        }
        EntityKind::User | EntityKind::Group | EntityKind::ServiceAccount => None,
    })
}

/// The folders of the processes and secrets among `objects` that sit in one, by object id.
async fn folders_of(
    conn: &impl ConnectionTrait,
    objects: &[Resource],
) -> Result<HashMap<Uuid, Uuid>, DbErr> {
    let ids = |kind: EntityKind| -> Vec<Uuid> {
        objects
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| Uuid::parse_str(&r.id).ok())
            .collect()
    };
    let mut folders = HashMap::new();
    for chunk in ids(EntityKind::Process).chunks(IDS_PER_QUERY) {
        let found = placements::<process::Entity>(
            conn,
            process::Column::Id,
            process::Column::FolderId,
            chunk,
        );
        folders.extend(found.await?);
    }
    for chunk in ids(EntityKind::Secret).chunks(IDS_PER_QUERY) {
        let found =
            placements::<secret::Entity>(conn, secret::Column::Id, secret::Column::FolderId, chunk);
        folders.extend(found.await?);
    }
    Ok(folders)
}

/// `(object, folder)` of the rows among `ids` of the entity whose columns are `id` and
/// `folder`, for those in a folder.
async fn placements<E: EntityTrait>(
    conn: &impl ConnectionTrait,
    id: E::Column,
    folder: E::Column,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, Uuid)>, DbErr> {
    let rows = E::find()
        .select_only()
        .column(id)
        .column(folder)
        .filter(id.is_in(ids.iter().copied()))
        .into_model::<ObjectFolder>()
        .all(conn)
        .await?;
    Ok(rows.into_iter().filter_map(ObjectFolder::placed).collect())
}

/// Ids bound in one `IN (…)` list.
const IDS_PER_QUERY: usize = 500;

/// `Some(folder)` of the process `id` (itself `None` at the root), or `None` without such a
/// process.
pub async fn process_folder(
    conn: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<Option<Uuid>>, DbErr> {
    Ok(process::Entity::find_by_id(id)
        .select_only()
        .column(process::Column::Id)
        .column(process::Column::FolderId)
        .into_model::<ObjectFolder>()
        .one(conn)
        .await?
        .map(|p| p.folder_id))
}

/// A folder's place in the tree, read by column name.
#[derive(FromQueryResult)]
struct FolderParent {
    id: Uuid,
    parent_id: Option<Uuid>,
}

/// A process's or a secret's folder, read by column name.
#[derive(FromQueryResult)]
pub(super) struct ObjectFolder {
    pub id: Uuid,
    pub folder_id: Option<Uuid>,
}

impl ObjectFolder {
    /// `(object, folder)` when the object sits in a folder.
    fn placed(self) -> Option<(Uuid, Uuid)> {
        Some((self.id, self.folder_id?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseSettings;
    use crate::tenancy::{Environment, Slug, TenantRateLimits, TenantStatus};

    /// A request that stops waiting for its tenant's policy set (its client left) does not
    /// stop the build: the set is cached for the requests after it.
    ///
    /// On one thread, so that the build cannot finish within the request's only poll (on two,
    /// it sometimes did, and the test failed on its premise).
    #[tokio::test(flavor = "current_thread")]
    async fn a_build_whose_request_went_away_is_still_cached() {
        let dir = std::env::temp_dir().join(format!("flowgate-authz-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = DatabaseSettings::Sqlite {
            control_file: dir.join("control.db"),
        };
        let dbs = Arc::new(Databases::connect(&settings).await.unwrap());
        let slug = Slug::parse("left").unwrap();
        dbs.create_tenant_storage(&slug).await.unwrap();
        let tenant = Tenant {
            id: Uuid::new_v4(),
            slug: slug.clone(),
            name: "Left".into(),
            environment: Environment::Dev,
            status: TenantStatus::Active,
            rate_limits: TenantRateLimits::default(),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        let authz = Authz::new(Arc::clone(&dbs)).unwrap();

        // Polled once, so that the build is spawned, then dropped before the build has run.
        let gone = tokio::time::timeout(std::time::Duration::ZERO, authz.policies(&tenant)).await;
        assert!(gone.is_err(), "a build takes longer than one poll");
        let mut cached = authz.cache.get("left");
        for _ in 0..500 {
            if cached.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            cached = authz.cache.get("left");
        }
        let cached = cached.expect("the abandoned build filled the cache");
        let served = authz.policies(&tenant).await.unwrap();
        assert!(
            Arc::ptr_eq(&cached, &served),
            "the next request is served the cached set"
        );
        drop((authz, dbs));
        std::fs::remove_dir_all(&dir).ok();
    }
}
