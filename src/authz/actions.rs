//! The action catalogue: every permission an endpoint can require, named `resource.action`.
//!
//! Each action is a zero-sized type implementing [`Action`], so that a handler names the
//! permission it needs in its signature (`Authorized<UserCreate>`); the same list produces the
//! Cedar schema's actions (with the resource types each applies to) and the documented
//! catalogue.

use super::schema::EntityKind;

/// A permission. `NAME` is the Cedar action id (`Flowgate::Action::"<NAME>"`) and the audit
/// action.
pub trait Action: 'static {
    const NAME: &'static str;
    /// A person doing it needs a recent passkey assertion (step-up): it changes who can do
    /// what, or hands out a credential or a secret.
    const SENSITIVE: bool;
}

/// An entry of the documented catalogue.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct ActionInfo {
    pub name: &'static str,
    pub description: &'static str,
    /// The resource types the action applies to.
    #[schema(value_type = Vec<String>)]
    #[serde(serialize_with = "kinds")]
    pub resources: &'static [EntityKind],
    /// Whether the action's context carries `amount` (whole currency units).
    pub amount: bool,
    /// Whether a person doing it needs a recent passkey assertion (step-up).
    pub sensitive: bool,
}

fn kinds<S: serde::Serializer>(kinds: &&'static [EntityKind], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(kinds.iter().map(|k| k.as_str()))
}

use EntityKind::{Folder, Form, Process, Report, Secret, Task, Tenant};

/// Tenant administration happens on the tenant itself.
const TENANT: &[EntityKind] = &[Tenant];
/// Creating content happens in a folder or at the tenant's root.
const CONTAINER: &[EntityKind] = &[Folder, Tenant];

macro_rules! catalogue {
    ($($ty:ident => $name:literal on $on:expr $(, amount $amount:literal)? $(, sensitive $sensitive:literal)?, $description:literal;)*) => {
        $(
            #[doc = $description]
            #[derive(Debug)]
            pub struct $ty;
            impl Action for $ty {
                const NAME: &'static str = $name;
                const SENSITIVE: bool = false $(|| $sensitive)?;
            }
        )*
        /// Every action, in documentation order.
        pub const CATALOGUE: &[ActionInfo] = &[
            $(ActionInfo {
                name: $name,
                description: $description,
                resources: $on,
                amount: false $(|| $amount)?,
                sensitive: false $(|| $sensitive)?,
            },)*
        ];
    };
}

catalogue! {
    UserRead => "user.read" on TENANT, "List and read users.";
    UserCreate => "user.create" on TENANT, "Create users.";
    UserUpdate => "user.update" on TENANT, sensitive true, "Change users' names and attributes (claims).";
    UserDisable => "user.disable" on TENANT, sensitive true, "Disable and enable users (a disabled person cannot sign in; their sessions end).";
    GroupRead => "group.read" on TENANT, "List and read groups.";
    GroupCreate => "group.create" on TENANT, "Create groups.";
    GroupMemberAdd => "group.member_add" on TENANT, sensitive true, "Add users to groups.";
    ServiceAccountRead => "service_account.read" on TENANT, "List and read service accounts.";
    ServiceAccountCreate => "service_account.create" on TENANT, "Create service accounts.";
    ServiceAccountDisable => "service_account.disable" on TENANT, sensitive true, "Disable and enable service accounts (a disabled account's credentials all stop working).";
    RoleRead => "role.read" on TENANT, "List and read roles.";
    RoleManage => "role.manage" on TENANT, sensitive true, "Create, change and delete custom roles.";
    RoleBindingRead => "role_binding.read" on TENANT, "List role bindings.";
    RoleBindingCreate => "role_binding.create" on TENANT, sensitive true, "Grant a role to a subject on a scope.";
    RoleBindingDelete => "role_binding.delete" on TENANT, sensitive true, "Remove a role binding.";
    PolicyRead => "policy.read" on TENANT, "Read claim-based policies and their versions.";
    PolicyManage => "policy.manage" on TENANT, sensitive true, "Create, change and delete claim-based policies.";
    AuthzCheck => "authz.check" on TENANT, "Explain decisions: check, who can do what, dry runs.";
    IdentityProviderRead => "identity_provider.read" on TENANT, "Read identity provider settings.";
    IdentityProviderManage => "identity_provider.manage" on TENANT, sensitive true, "Configure identity providers.";
    SessionRead => "session.read" on TENANT, "List users' browser sessions.";
    SessionRevoke => "session.revoke" on TENANT, "End users' browser sessions.";
    PasskeyReset => "passkey.reset" on TENANT, sensitive true, "Remove all of a user's passkeys, ending their sessions (a lost authenticator).";
    TokenKeyRotate => "token_key.rotate" on TENANT, "Rotate the key that signs the tenant's access tokens.";
    EncryptionKeyRotate => "encryption_key.rotate" on TENANT, "Rotate the tenant's key-encryption key and re-wrap its data keys.";
    ApiKeyRead => "api_key.read" on TENANT, "List API keys (never their secret part).";
    ApiKeyCreate => "api_key.create" on TENANT, sensitive true, "Issue API keys for service accounts.";
    ApiKeyRevoke => "api_key.revoke" on TENANT, "Revoke API keys.";
    SettingsRead => "settings.read" on TENANT, "Read system settings.";
    SettingsManage => "settings.manage" on TENANT, sensitive true, "Manage system settings (not application content).";
    AuditRead => "audit.read" on TENANT, "Read the audit trail.";
    AuditExport => "audit.export" on TENANT, "Export the audit trail as NDJSON.";
    AuditVerify => "audit.verify" on TENANT, "Verify the audit hash chain and its signed checkpoints.";
    FolderRead => "folder.read" on &[Folder, Tenant], "List and read folders.";
    FolderCreate => "folder.create" on CONTAINER, "Create folders.";
    FolderUpdate => "folder.update" on &[Folder], "Rename folders.";
    FolderDelete => "folder.delete" on &[Folder], "Delete empty folders.";
    ProcessRead => "process.read" on &[Process, Folder, Tenant], "List and read process definitions.";
    ProcessCreate => "process.create" on CONTAINER, "Create process definitions.";
    ProcessEdit => "process.edit" on &[Process], "Edit process definitions (drafts).";
    ProcessPublish => "process.publish" on &[Process], "Publish a process definition's draft.";
    ProcessExecute => "process.execute" on &[Process], "Start process instances.";
    ProcessConfigure => "process.configure" on &[Process], "Modify a process's run-time configuration.";
    ProcessDelete => "process.delete" on &[Process], "Delete process definitions.";
    InstanceRead => "instance.read" on &[Process], "See the instances of a process.";
    InstanceReadLogs => "instance.read_logs" on &[Process], "View instance logs.";
    FormRead => "form.read" on &[Form], "Open forms.";
    FormSubmit => "form.submit" on &[Form], "Submit forms.";
    FormEdit => "form.edit" on &[Form], "Design forms.";
    ReportRead => "report.read" on &[Report], "Read reports.";
    SecretList => "secret.list" on &[Secret, Folder, Tenant], "List secrets' names, versions and metadata (never values).";
    SecretRead => "secret.read" on &[Secret], sensitive true, "Read secret values.";
    SecretUse => "secret.use" on &[Secret], "Use secrets in processes without seeing them.";
    SecretWrite => "secret.write" on &[Secret, Folder, Tenant], "Create, rotate and delete secrets.";
    TaskRead => "task.read" on &[Task], "See tasks.";
    TaskComplete => "task.complete" on &[Task], "Complete tasks assigned to you.";
    TaskApprove => "task.approve" on &[Task], amount true, "Approve tasks (the context carries the amount).";
}

/// The catalogue entry of `name`.
pub fn info(name: &str) -> Option<&'static ActionInfo> {
    CATALOGUE.iter().find(|a| a.name == name)
}

/// Whether `name` is in the catalogue.
pub fn is_known(name: &str) -> bool {
    info(name).is_some()
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

    #[test]
    fn only_task_approve_carries_an_amount() {
        let with_amount: Vec<_> = CATALOGUE
            .iter()
            .filter(|a| a.amount)
            .map(|a| a.name)
            .collect();
        assert_eq!(with_amount, ["task.approve"]);
    }
}
