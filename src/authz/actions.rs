//! The action catalogue: every permission an endpoint can require, named `resource.action`.
//!
//! Each action is a zero-sized type implementing [`Action`], so that a handler names the
//! permission it needs in its signature (`Authorized<UserCreate>`); the same list produces the
//! Cedar schema's actions and the documented catalogue.

/// A permission. `NAME` is the Cedar action id (`Flowgate::Action::"<NAME>"`) and the audit
/// action.
pub trait Action: 'static {
    const NAME: &'static str;
}

/// An entry of the documented catalogue.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct ActionInfo {
    pub name: &'static str,
    pub description: &'static str,
}

macro_rules! catalogue {
    ($($ty:ident => $name:literal, $description:literal;)*) => {
        $(
            #[doc = $description]
            #[derive(Debug)]
            pub struct $ty;
            impl Action for $ty {
                const NAME: &'static str = $name;
            }
        )*
        /// Every action, in documentation order.
        pub const CATALOGUE: &[ActionInfo] = &[
            $(ActionInfo { name: $name, description: $description },)*
        ];
    };
}

catalogue! {
    UserRead => "user.read", "List and read users.";
    UserCreate => "user.create", "Create users.";
    GroupRead => "group.read", "List and read groups.";
    GroupCreate => "group.create", "Create groups.";
    GroupMemberAdd => "group.member_add", "Add users to groups.";
    ServiceAccountRead => "service_account.read", "List and read service accounts.";
    ServiceAccountCreate => "service_account.create", "Create service accounts.";
    RoleBindingRead => "role_binding.read", "List role bindings.";
    RoleBindingCreate => "role_binding.create", "Grant a role to a subject on a scope.";
    RoleBindingDelete => "role_binding.delete", "Remove a role binding.";
    ApiKeyRead => "api_key.read", "List API keys (never their secret part).";
    ApiKeyCreate => "api_key.create", "Issue API keys for service accounts.";
    ApiKeyRevoke => "api_key.revoke", "Revoke API keys.";
    AuditRead => "audit.read", "Read the audit trail.";
    AuditVerify => "audit.verify", "Verify the audit hash chain and its signed checkpoints.";
}

/// Whether `name` is in the catalogue.
pub fn is_known(name: &str) -> bool {
    CATALOGUE.iter().any(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut names: Vec<_> = CATALOGUE.iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
        for name in names {
            let (resource, action) = name.split_once('.').unwrap();
            assert!(!resource.is_empty() && !action.is_empty(), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.'),
                "{name}"
            );
        }
    }
}
