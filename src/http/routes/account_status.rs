//! What disabling and enabling people and service accounts share: who may not be disabled, and
//! how the change is recorded.

use uuid::Uuid;

use crate::directory::AccountStatus;
use crate::http::error::ApiError;
use crate::tenancy::work::{Change, TenantContext};

/// The kinds of account that have a status.
#[derive(Debug, Clone, Copy)]
pub enum AccountKind {
    User,
    ServiceAccount,
}

/// Refuses to disable the account the caller acts as (they would lock themselves out) and the
/// tenant's break-glass account (the way in when sign-in through the identity provider fails,
/// which the platform operator manages).
pub fn refuse_disabling(
    context: &TenantContext,
    account: Uuid,
    break_glass: bool,
) -> Result<(), ApiError> {
    if context.principal().id() == account {
        return Err(ApiError::conflict(
            "No one can disable the account they act as; ask another administrator.",
        ));
    }
    if break_glass {
        return Err(ApiError::conflict(
            "The break-glass account cannot be disabled; it is the tenant's way in when sign-in fails.",
        ));
    }
    Ok(())
}

/// The record of `account`'s status going from `before` to `after`: `<kind>.disable` or
/// `<kind>.enable`, with both statuses.
pub fn status_change(
    kind: AccountKind,
    account: Uuid,
    before: AccountStatus,
    after: AccountStatus,
) -> Change {
    let (resource_type, action) = match (kind, after) {
        (AccountKind::User, AccountStatus::Disabled) => ("user", "user.disable"),
        (AccountKind::User, AccountStatus::Active) => ("user", "user.enable"),
        (AccountKind::ServiceAccount, AccountStatus::Disabled) => {
            ("service_account", "service_account.disable")
        }
        (AccountKind::ServiceAccount, AccountStatus::Active) => {
            ("service_account", "service_account.enable")
        }
    };
    Change::new(resource_type, account, 200)
        .action(action)
        .detail("status_before", before.as_str())
        .detail("status_after", after.as_str())
}

/// The answer when an account's status changed between the checks and the write.
pub fn changed_meanwhile() -> ApiError {
    ApiError::conflict("The account's status changed meanwhile; read it again and retry.")
}
