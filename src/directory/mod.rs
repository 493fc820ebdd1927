//! The tenant directory: users, groups and service accounts.
//!
//! Functions here take the caller's transaction, so they run inside the tenant the request path
//! chose and commit together with their audit event.

pub mod groups;
pub mod service_accounts;
pub mod users;

use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, QueryFilter as _, QueryOrder as _, QuerySelect as _,
    TryIntoModel,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::tenancy::Tx;

/// Whether a person or a service account may authenticate: a disabled one cannot sign in, keep
/// a session or use any credential until it is enabled again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Disabled,
}

impl AccountStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Disabled => "disabled",
        }
    }

    /// The stored form read back; anything but `active` is disabled (fail closed).
    pub fn parse(stored: &str) -> Self {
        if stored == "active" {
            AccountStatus::Active
        } else {
            AccountStatus::Disabled
        }
    }
}

/// Up to `limit` rows of `E` whose id comes after `after`, in id order. Ids are UUIDv7, so this
/// is creation order, and the last id of a page is the cursor of the next.
pub async fn page_by_id<E>(
    tx: &Tx,
    id: E::Column,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    E::ActiveModel: TryIntoModel<E::Model>,
{
    let mut query = E::find().order_by_asc(id).limit(limit);
    if let Some(after) = after {
        query = query.filter(id.gt(after));
    }
    tx.all(query).await
}

/// Checks a human-entered name: trimmed, 1 to `max` characters, no control characters.
pub fn clean_name(value: &str, max: usize) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(clean_name("  Ops team ", 20).unwrap(), "Ops team");
        assert!(clean_name("   ", 20).is_err());
        assert!(clean_name("a\u{0007}b", 20).is_err());
        assert!(clean_name(&"x".repeat(21), 20).is_err());
    }
}
