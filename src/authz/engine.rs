//! The per-tenant Cedar engine: role templates linked by role bindings.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, PolicyId, PolicySet, Request, SlotId, Template,
};
use entity::tenant::role_binding;
use sea_orm::EntityTrait as _;

use super::AuthzError;
use super::bindings::{ScopeType, SubjectType};
use super::roles::{BUILTIN_ROLES, builtin};
use super::schema::{EntityKind, action_uid};
use crate::identity::Principal;
use crate::tenancy::{Access, Databases, Tenant, TenantCache};

/// Tenants whose policy sets are kept in memory.
const CACHED_POLICY_SETS: usize = 1_000;

/// The outcome of one authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that determined the decision (`binding:<id>` for a role binding).
    pub reasons: Vec<String>,
    /// Evaluation errors; any error makes the policy that raised it not apply.
    pub errors: Vec<String>,
}

/// A resource as Cedar sees it: its uid and the chain of its containers.
#[derive(Debug, Clone)]
pub struct Resource {
    kind: EntityKind,
    id: String,
}

impl Resource {
    /// The tenant itself: the resource of tenant-wide actions such as listing users.
    pub fn tenant(tenant: &Tenant) -> Self {
        Resource {
            kind: EntityKind::Tenant,
            id: tenant.slug.to_string(),
        }
    }
}

/// A tenant's policy set, built from its role bindings.
pub struct TenantPolicies {
    slug: String,
    set: PolicySet,
}

/// Builds and evaluates tenants' policy sets; holds no tenant data itself.
pub struct PolicyEngine {
    templates: Vec<Template>,
    authorizer: Authorizer,
}

/// The tenants' policy sets, loaded on first use and cached until a change.
pub struct Policies {
    engine: PolicyEngine,
    dbs: Arc<Databases>,
    cache: TenantCache<Arc<TenantPolicies>>,
}

impl Policies {
    pub fn new(dbs: Arc<Databases>) -> anyhow::Result<Self> {
        let capacity = NonZeroUsize::new(CACHED_POLICY_SETS).unwrap_or(NonZeroUsize::MIN);
        Ok(Policies {
            engine: PolicyEngine::new()?,
            dbs,
            cache: TenantCache::new(capacity),
        })
    }

    /// The tenant's policy set, loaded from its role bindings on first use.
    pub async fn policies(&self, tenant: &Tenant) -> Result<Arc<TenantPolicies>, AuthzError> {
        self.cache
            .get_or_try_load(tenant.slug.as_str(), || async {
                let tx = self.dbs.begin(&tenant.slug, Access::Read).await?;
                let bindings = role_binding::Entity::find().all(&tx).await?;
                tx.commit().await?;
                Ok(Arc::new(
                    self.engine.build(tenant.slug.as_str(), &bindings)?,
                ))
            })
            .await
    }

    /// May `principal` do `action` on `resource`? See [`PolicyEngine::decide`].
    pub fn decide(
        &self,
        policies: &TenantPolicies,
        principal: &Principal,
        action: &str,
        resource: &Resource,
    ) -> Decision {
        self.engine.decide(policies, principal, action, resource)
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

impl PolicyEngine {
    pub fn new() -> anyhow::Result<Self> {
        let templates = BUILTIN_ROLES
            .iter()
            .map(|role| role_template(role.name, &role.actions()))
            .collect::<anyhow::Result<_>>()?;
        Ok(PolicyEngine {
            templates,
            authorizer: Authorizer::new(),
        })
    }

    fn build(
        &self,
        slug: &str,
        bindings: &[role_binding::Model],
    ) -> anyhow::Result<TenantPolicies> {
        let mut set = PolicySet::new();
        for template in &self.templates {
            set.add_template(template.clone())?;
        }
        for binding in bindings {
            let Some(role) = builtin(&binding.role) else {
                tracing::warn!(binding = %binding.id, role = %binding.role, "binding names an unknown role; it grants nothing");
                continue;
            };
            let subject = SubjectType::parse(&binding.subject_type)
                .map(subject_kind)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "binding {} has subject type {}",
                        binding.id,
                        binding.subject_type
                    )
                })?;
            let scope = ScopeType::parse(&binding.scope_type)
                .and_then(|scope| scope_uid(slug, scope, binding.scope_id.as_deref()))
                .ok_or_else(|| anyhow::anyhow!("binding {} has a bad scope", binding.id))?;
            set.link(
                template_id(role.name),
                PolicyId::new(format!("binding:{}", binding.id)),
                HashMap::from([
                    (
                        SlotId::principal(),
                        subject.uid(&binding.subject_id.to_string()),
                    ),
                    (SlotId::resource(), scope),
                ]),
            )?;
        }
        Ok(TenantPolicies {
            slug: slug.to_owned(),
            set,
        })
    }

    /// May `principal` do `action` on `resource`? Fails closed: any error is a denial.
    pub fn decide(
        &self,
        policies: &TenantPolicies,
        principal: &Principal,
        action: &str,
        resource: &Resource,
    ) -> Decision {
        match self.evaluate(policies, principal, action, resource, None) {
            Ok(decision) => decision,
            Err(e) => Decision {
                allowed: false,
                reasons: Vec::new(),
                errors: vec![e.to_string()],
            },
        }
    }

    /// Evaluates one request. `schema` is `None` on the request path: the entities and the
    /// request are built here from typed values, so they conform by construction, and
    /// validating them on every decision would cost more than the decision. The unit tests pass
    /// the schema to prove the construction right.
    fn evaluate(
        &self,
        policies: &TenantPolicies,
        principal: &Principal,
        action: &str,
        resource: &Resource,
        schema: Option<&cedar_policy::Schema>,
    ) -> anyhow::Result<Decision> {
        let tenant_uid = EntityKind::Tenant.uid(&policies.slug);
        let principal_uid = match principal {
            Principal::ServiceAccount { id, .. } => EntityKind::ServiceAccount.uid(&id.to_string()),
        };
        let resource_uid = resource.kind.uid(&resource.id);
        let mut entities = vec![
            Entity::new_no_attrs(principal_uid.clone(), [tenant_uid.clone()].into()),
            Entity::new_no_attrs(tenant_uid.clone(), Default::default()),
        ];
        if resource_uid != tenant_uid {
            entities.push(Entity::new_no_attrs(
                resource_uid.clone(),
                [tenant_uid].into(),
            ));
        }
        let entities = Entities::from_entities(entities, schema)?;
        let request = Request::new(
            principal_uid,
            action_uid(action),
            resource_uid,
            Context::empty(),
            schema,
        )?;
        let response = self
            .authorizer
            .is_authorized(&request, &policies.set, &entities);
        Ok(Decision {
            allowed: response.decision() == cedar_policy::Decision::Allow,
            reasons: response
                .diagnostics()
                .reason()
                .map(ToString::to_string)
                .collect(),
            errors: response
                .diagnostics()
                .errors()
                .map(ToString::to_string)
                .collect(),
        })
    }
}

fn template_id(role: &str) -> PolicyId {
    PolicyId::new(format!("role:{role}"))
}

/// `permit(principal in ?principal, action in [...], resource in ?resource);`
fn role_template(role: &str, actions: &[&str]) -> anyhow::Result<Template> {
    let actions = actions
        .iter()
        .map(|a| action_uid(a).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let text =
        format!("permit(principal in ?principal, action in [{actions}], resource in ?resource);");
    Template::parse(Some(template_id(role)), text)
        .map_err(|e| anyhow::anyhow!("role {role} does not form a template: {e}"))
}

fn subject_kind(subject: SubjectType) -> EntityKind {
    match subject {
        SubjectType::User => EntityKind::User,
        SubjectType::ServiceAccount => EntityKind::ServiceAccount,
        SubjectType::Group => EntityKind::Group,
    }
}

/// The Cedar uid of a binding's scope; the tenant scope is the tenant entity itself.
fn scope_uid(
    slug: &str,
    scope: ScopeType,
    scope_id: Option<&str>,
) -> Option<cedar_policy::EntityUid> {
    let kind = match scope {
        ScopeType::Tenant => return Some(EntityKind::Tenant.uid(slug)),
        ScopeType::Folder => EntityKind::Folder,
        ScopeType::Process => EntityKind::Process,
        ScopeType::Form => EntityKind::Form,
        ScopeType::Report => EntityKind::Report,
        ScopeType::Secret => EntityKind::Secret,
    };
    scope_id.map(|id| kind.uid(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::schema::schema;
    use cedar_policy::{ValidationMode, Validator};

    #[test]
    fn request_path_entities_and_requests_conform_to_the_schema() {
        let engine = PolicyEngine::new().unwrap();
        let policies = TenantPolicies {
            slug: "acme".into(),
            set: PolicySet::new(),
        };
        let principal = Principal::ServiceAccount {
            id: uuid::Uuid::new_v4(),
            api_key_id: uuid::Uuid::new_v4(),
        };
        let schema = schema().unwrap();
        let tenant = Resource {
            kind: EntityKind::Tenant,
            id: "acme".into(),
        };
        for action in crate::authz::CATALOGUE {
            let decision =
                engine.evaluate(&policies, &principal, action.name, &tenant, Some(&schema));
            assert!(decision.is_ok(), "{}: {:?}", action.name, decision.err());
        }
    }

    #[test]
    fn role_templates_validate_against_the_schema() {
        let mut set = PolicySet::new();
        for role in BUILTIN_ROLES {
            set.add_template(role_template(role.name, &role.actions()).unwrap())
                .unwrap();
        }
        let result = Validator::new(schema().unwrap()).validate(&set, ValidationMode::Strict);
        assert!(result.validation_passed(), "{result}");
    }
}
