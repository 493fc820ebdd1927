//! The tenant Cedar schema, generated from the action catalogue.
//!
//! Entity types live in namespace `Flowgate`. Users carry their claims as entity tags of type
//! String; every object sits under its tenant, folders nest, and tasks sit under processes.

use std::fmt::Write as _;
use std::sync::LazyLock;

use cedar_policy::{EntityId, EntityTypeName, EntityUid, Schema};

use super::actions::CATALOGUE;
use super::roles::action_groups;

pub const NAMESPACE: &str = "Flowgate";

/// The Cedar entity types Flowgate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    Tenant,
    Group,
    User,
    ServiceAccount,
    Folder,
    Process,
    Form,
    Report,
    Secret,
    Task,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Tenant => "Tenant",
            EntityKind::Group => "Group",
            EntityKind::User => "User",
            EntityKind::ServiceAccount => "ServiceAccount",
            EntityKind::Folder => "Folder",
            EntityKind::Process => "Process",
            EntityKind::Form => "Form",
            EntityKind::Report => "Report",
            EntityKind::Secret => "Secret",
            EntityKind::Task => "Task",
        }
    }

    /// The name used in the HTTP API (`service_account`, `folder`, …).
    pub fn api_name(self) -> &'static str {
        match self {
            EntityKind::Tenant => "tenant",
            EntityKind::Group => "group",
            EntityKind::User => "user",
            EntityKind::ServiceAccount => "service_account",
            EntityKind::Folder => "folder",
            EntityKind::Process => "process",
            EntityKind::Form => "form",
            EntityKind::Report => "report",
            EntityKind::Secret => "secret",
            EntityKind::Task => "task",
        }
    }

    /// The kind called `name` in the HTTP API.
    pub fn from_api_name(name: &str) -> Option<Self> {
        EntityKind::ALL.into_iter().find(|k| k.api_name() == name)
    }

    pub const ALL: [EntityKind; 10] = [
        EntityKind::Tenant,
        EntityKind::Group,
        EntityKind::User,
        EntityKind::ServiceAccount,
        EntityKind::Folder,
        EntityKind::Process,
        EntityKind::Form,
        EntityKind::Report,
        EntityKind::Secret,
        EntityKind::Task,
    ];

    /// The Cedar uid `Flowgate::<Kind>::"<id>"`.
    pub fn uid(self, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.type_name(), EntityId::new(id))
    }

    fn type_name(self) -> EntityTypeName {
        TYPE_NAMES[self as usize].clone()
    }

    /// The kind of a Flowgate entity uid, with its id; `None` for other types (actions).
    pub fn of_uid(uid: &EntityUid) -> Option<(EntityKind, String)> {
        let kind = EntityKind::ALL
            .into_iter()
            .find(|k| TYPE_NAMES[*k as usize] == *uid.type_name())?;
        Some((kind, uid.id().unescaped().to_owned()))
    }
}

/// The parsed type names, in `EntityKind` order, then `Action`: parsed once, cloned per use.
static TYPE_NAMES: LazyLock<Vec<EntityTypeName>> = LazyLock::new(|| {
    EntityKind::ALL
        .iter()
        .map(|k| qualified(k.as_str()))
        .chain(std::iter::once(qualified("Action")))
        .collect()
});

/// The action uid `Flowgate::Action::"<name>"`.
pub fn action_uid(name: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(
        TYPE_NAMES[EntityKind::ALL.len()].clone(),
        EntityId::new(name),
    )
}

#[expect(
    clippy::expect_used,
    reason = "`Flowgate::<Kind>` is a valid Cedar name for every fixed kind; a unit test parses them all"
)]
fn qualified(basename: &str) -> EntityTypeName {
    format!("{NAMESPACE}::{basename}")
        .parse()
        .expect("fixed Cedar type names parse")
}

/// The schema in Cedar's human-readable format; published to tenants for writing policies.
///
/// Each built-in role's grant is an action group (`Flowgate::Action::"role:Designer"`), which
/// policies may use too. Every action's context carries `environment` (the tenant's: `dev`, `stage` or `prod`) and
/// `now` (Unix seconds), and when known `source_ip` and `mfa_age` (seconds since the caller's
/// second factor); `task.approve` adds `amount` (whole currency units).
pub fn schema_text() -> String {
    let mut text = format!(
        "namespace {NAMESPACE} {{\n\
         \x20 type RequestContext = {{ environment: String, now: Long, source_ip?: ipaddr, mfa_age?: Long }};\n\
         \x20 type AmountContext = {{ environment: String, now: Long, source_ip?: ipaddr, mfa_age?: Long, amount?: Long }};\n\
         \x20 entity Tenant;\n\
         \x20 entity Group in [Tenant];\n\
         \x20 entity User in [Group, Tenant] tags String;\n\
         \x20 entity ServiceAccount in [Tenant] tags String;\n\
         \x20 entity Folder in [Folder, Tenant];\n\
         \x20 entity Process in [Folder, Tenant];\n\
         \x20 entity Form in [Folder, Tenant];\n\
         \x20 entity Report in [Folder, Tenant];\n\
         \x20 entity Secret in [Folder, Tenant];\n\
         \x20 entity Task in [Process, Folder, Tenant];\n"
    );
    let groups = action_groups();
    for (group, _) in &groups {
        let _ = writeln!(text, "  action \"{group}\";");
    }
    for action in CATALOGUE {
        let resources: Vec<&str> = action.resources.iter().map(|k| k.as_str()).collect();
        let member_of: Vec<String> = groups
            .iter()
            .filter(|(_, actions)| actions.iter().any(|a| a == action.name))
            .map(|(group, _)| format!("\"{group}\""))
            .collect();
        let member_of = if member_of.is_empty() {
            String::new()
        } else {
            format!(" in [{}]", member_of.join(", "))
        };
        let context = if action.amount {
            "AmountContext"
        } else {
            "RequestContext"
        };
        let _ = writeln!(
            text,
            "  action \"{}\"{member_of} appliesTo {{ principal: [User, ServiceAccount], resource: [{}], context: {context} }};",
            action.name,
            resources.join(", ")
        );
    }
    text.push_str("}\n");
    text
}

/// The parsed schema.
pub fn schema() -> anyhow::Result<Schema> {
    let (schema, _warnings) = Schema::from_cedarschema_str(&schema_text())
        .map_err(|e| anyhow::anyhow!("the generated Cedar schema does not parse: {e}"))?;
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_schema_parses() {
        schema().unwrap();
    }

    #[test]
    fn uids_are_namespaced() {
        for kind in EntityKind::ALL {
            assert_eq!(EntityKind::from_api_name(kind.api_name()), Some(kind));
            assert_eq!(
                kind.uid("x").to_string(),
                format!("Flowgate::{}::\"x\"", kind.as_str())
            );
            assert_eq!(EntityKind::of_uid(&kind.uid("x")), Some((kind, "x".into())));
        }
        assert_eq!(EntityKind::of_uid(&action_uid("user.read")), None);
        assert_eq!(
            EntityKind::User.uid("u1").to_string(),
            r#"Flowgate::User::"u1""#
        );
        assert_eq!(
            action_uid("user.read").to_string(),
            r#"Flowgate::Action::"user.read""#
        );
    }
}
