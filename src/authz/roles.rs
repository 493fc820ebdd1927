//! Roles: named sets of actions, each compiled to Cedar policy templates.
//!
//! Built-in roles are fixed here; custom roles live in the tenant's `roles` table. A role is a
//! list of grants, each a set of actions with an optional Cedar condition; each grant becomes one
//! template `permit(principal in ?principal, action in [...], resource in ?resource) when {...};`.
//!
//! Separation of duties in the built-in roles: a Designer edits but does not execute, and
//! publishes only outside production tenants; an Operator executes but does not edit; an Auditor
//! reads the trail and the access model but changes nothing; only an Admin manages credentials,
//! policies, roles and settings.

use super::actions::CATALOGUE;

/// A set of actions a role grants, with an optional Cedar condition on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub actions: Vec<String>,
    /// A Cedar `when` condition (without `when { }`), e.g. `context.environment != "prod"`.
    pub condition: Option<String>,
}

/// A role as the engine compiles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleDef {
    pub name: String,
    pub grants: Vec<Grant>,
}

impl RoleDef {
    /// Every action the role can grant, under any condition.
    pub fn actions(&self) -> impl Iterator<Item = &str> {
        self.grants
            .iter()
            .flat_map(|g| g.actions.iter().map(String::as_str))
    }

    /// A custom role: the actions, unconditionally.
    pub fn custom(name: &str, actions: Vec<String>) -> Self {
        RoleDef {
            name: name.to_owned(),
            grants: vec![Grant {
                actions,
                condition: None,
            }],
        }
    }
}

/// A role every tenant has.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinRole {
    pub name: &'static str,
    pub description: &'static str,
    /// `None` means every action of the catalogue.
    actions: Option<&'static [&'static str]>,
    /// Actions granted only when the condition holds.
    conditional: &'static [(&'static [&'static str], &'static str)],
}

impl BuiltinRole {
    pub fn definition(&self) -> RoleDef {
        let unconditional = match self.actions {
            Some(actions) => actions.iter().map(|a| a.to_string()).collect(),
            None => CATALOGUE.iter().map(|a| a.name.to_owned()).collect(),
        };
        let mut grants = vec![Grant {
            actions: unconditional,
            condition: None,
        }];
        grants.extend(self.conditional.iter().map(|(actions, condition)| Grant {
            actions: actions.iter().map(|a| a.to_string()).collect(),
            condition: Some(condition.to_string()),
        }));
        RoleDef {
            name: self.name.to_owned(),
            grants,
        }
    }
}

pub const BUILTIN_ROLES: &[BuiltinRole] = &[
    BuiltinRole {
        name: "Admin",
        description: "Everything in the tenant.",
        actions: None,
        conditional: &[],
    },
    BuiltinRole {
        name: "Designer",
        description: "Designs folders, processes and forms; publishes outside production; does not run them.",
        actions: Some(&[
            "user.read",
            "group.read",
            "service_account.read",
            "role.read",
            "role_binding.read",
            "folder.read",
            "folder.create",
            "folder.update",
            "process.read",
            "process.create",
            "process.edit",
            "process.delete",
            "instance.read",
            "instance.read_logs",
            "form.read",
            "form.edit",
            "report.read",
            "task.read",
            "secret.list",
        ]),
        conditional: &[(&["process.publish"], r#"context.environment != "prod""#)],
    },
    BuiltinRole {
        name: "Operator",
        description: "Runs processes and works tasks; does not edit them.",
        actions: Some(&[
            "user.read",
            "group.read",
            "service_account.read",
            "folder.read",
            "process.read",
            "process.execute",
            "instance.read",
            "instance.read_logs",
            "form.read",
            "form.submit",
            "report.read",
            "task.read",
            "task.complete",
            "secret.list",
            "secret.use",
        ]),
        conditional: &[],
    },
    BuiltinRole {
        name: "Viewer",
        description: "Reads the directory and application content.",
        actions: Some(&[
            "user.read",
            "group.read",
            "service_account.read",
            "folder.read",
            "process.read",
            "instance.read",
            "form.read",
            "report.read",
            "task.read",
        ]),
        conditional: &[],
    },
    BuiltinRole {
        name: "Auditor",
        description: "Reads and verifies the audit trail and the access model; changes nothing.",
        actions: Some(&[
            "user.read",
            "group.read",
            "service_account.read",
            "role.read",
            "role_binding.read",
            "policy.read",
            "authz.check",
            "identity_provider.read",
            "session.read",
            "api_key.read",
            "settings.read",
            "audit.read",
            "audit.export",
            "audit.verify",
            "folder.read",
            "process.read",
            "instance.read",
            "instance.read_logs",
            "report.read",
        ]),
        conditional: &[],
    },
];

/// The Cedar action group of a built-in role's grant: `role:<Name>`, or `role:<Name>#<n>` for
/// its conditional grants.
pub fn action_group(role: &str, grant: usize) -> String {
    if grant == 0 {
        format!("role:{role}")
    } else {
        format!("role:{role}#{grant}")
    }
}

/// Every built-in role grant that is an action group (all but those granting the whole
/// catalogue), with its actions.
pub fn action_groups() -> Vec<(String, Vec<String>)> {
    BUILTIN_ROLES
        .iter()
        .flat_map(|role| {
            role.definition()
                .grants
                .into_iter()
                .enumerate()
                .filter(|(_, grant)| !grants_everything(&grant.actions))
                .map(move |(i, grant)| (action_group(role.name, i), grant.actions))
        })
        .collect()
}

/// Whether `actions` hold the whole catalogue.
pub fn grants_everything(actions: &[String]) -> bool {
    CATALOGUE
        .iter()
        .all(|a| actions.iter().any(|g| g == a.name))
}

/// The built-in role called `name`.
pub fn builtin(name: &str) -> Option<&'static BuiltinRole> {
    BUILTIN_ROLES.iter().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::actions::is_known;

    fn grants(role: &str) -> Vec<String> {
        builtin(role)
            .unwrap()
            .definition()
            .grants
            .into_iter()
            .filter(|g| g.condition.is_none())
            .flat_map(|g| g.actions)
            .collect()
    }

    #[test]
    fn every_role_action_is_in_the_catalogue() {
        for role in BUILTIN_ROLES {
            for action in role.definition().actions() {
                assert!(is_known(action), "{} grants unknown {action}", role.name);
            }
        }
    }

    #[test]
    fn separation_of_duties() {
        let designer = grants("Designer");
        assert!(designer.contains(&"process.edit".into()));
        assert!(
            !designer.contains(&"process.execute".into()),
            "a Designer does not run"
        );
        assert!(
            !designer.contains(&"process.publish".into()),
            "publishing is conditional"
        );
        let operator = grants("Operator");
        assert!(operator.contains(&"process.execute".into()));
        assert!(
            !operator.contains(&"process.edit".into()),
            "an Operator does not edit"
        );
        for role in ["Designer", "Operator", "Viewer", "Auditor"] {
            let actions = grants(role);
            for admin_only in [
                "api_key.create",
                "role_binding.create",
                "policy.manage",
                "role.manage",
                "settings.manage",
                "secret.read",
            ] {
                assert!(
                    !actions.contains(&admin_only.to_string()),
                    "{role} has {admin_only}"
                );
            }
        }
        assert!(grants("Auditor").iter().all(|a| a.ends_with(".read")
            || a.ends_with("_logs")
            || a.starts_with("audit.")
            || a == "authz.check"));
    }
}
