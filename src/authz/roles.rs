//! Built-in roles: fixed action sets, each a Cedar policy template.

use super::actions::CATALOGUE;

/// A role that every tenant has.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinRole {
    pub name: &'static str,
    pub description: &'static str,
    /// `None` means every action of the catalogue.
    actions: Option<&'static [&'static str]>,
}

impl BuiltinRole {
    /// The actions this role grants.
    pub fn actions(&self) -> Vec<&'static str> {
        match self.actions {
            Some(actions) => actions.to_vec(),
            None => CATALOGUE.iter().map(|a| a.name).collect(),
        }
    }
}

const READ_DIRECTORY: &[&str] = &["user.read", "group.read", "service_account.read"];

pub const BUILTIN_ROLES: &[BuiltinRole] = &[
    BuiltinRole {
        name: "Admin",
        description: "Everything in the tenant.",
        actions: None,
    },
    BuiltinRole {
        name: "Designer",
        description: "Designs processes and forms; reads the directory and who holds which role.",
        actions: Some(&[
            "user.read",
            "group.read",
            "service_account.read",
            "role_binding.read",
        ]),
    },
    BuiltinRole {
        name: "Operator",
        description: "Runs processes and works tasks; reads the directory.",
        actions: Some(READ_DIRECTORY),
    },
    BuiltinRole {
        name: "Viewer",
        description: "Reads the directory.",
        actions: Some(READ_DIRECTORY),
    },
    BuiltinRole {
        name: "Auditor",
        description: "Reads and verifies the audit trail; reads the directory and role bindings.",
        actions: Some(&[
            "user.read",
            "group.read",
            "service_account.read",
            "role_binding.read",
            "api_key.read",
            "audit.read",
            "audit.verify",
        ]),
    },
];

/// The built-in role called `name`.
pub fn builtin(name: &str) -> Option<&'static BuiltinRole> {
    BUILTIN_ROLES.iter().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::actions::is_known;

    #[test]
    fn every_role_action_is_in_the_catalogue() {
        for role in BUILTIN_ROLES {
            for action in role.actions() {
                assert!(is_known(action), "{} grants unknown {action}", role.name);
            }
        }
    }

    #[test]
    fn only_admin_manages_credentials() {
        for role in BUILTIN_ROLES.iter().filter(|r| r.name != "Admin") {
            let actions = role.actions();
            assert!(!actions.contains(&"api_key.create"), "{}", role.name);
            assert!(!actions.contains(&"role_binding.create"), "{}", role.name);
        }
    }
}
