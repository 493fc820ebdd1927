//! Just-in-time provisioning: the claims a provider vouched for become the tenant's user, its
//! attributes and its groups, at every sign-in.
//!
//! Invariants:
//! - A user is found by (provider, subject). A first sign-in whose email belongs to another user
//!   is refused, not merged: an email address proves nothing about who owns an account here.
//! - A deactivated user is refused before anything of theirs changes.
//! - Mapped attributes and mapped groups follow the provider at every sign-in: a claim or group
//!   the provider no longer sends is removed. Attributes and groups no mapping names are the
//!   tenant's own and are never touched.
//! - When the provider says the groups did not fit in the token (Azure AD's group overage), the
//!   token's groups are not trusted: the user gets none of the mapped groups until they come
//!   from a source Flowgate checks.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use entity::tenant::{group, group_member, user, user_identity};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DbErr, EntityTrait as _,
    QueryFilter as _,
};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::providers::Mappings;
use super::{Refusal, SignInError, Vouched};
use crate::directory::{AccountStatus, clean_name, groups, users};
use crate::tenancy::work::{SignIn, WriteTx};

/// Longest attribute value taken from a claim.
const MAX_ATTRIBUTE_VALUE: usize = 1024;
/// Most groups read from a token.
const MAX_GROUPS: usize = 1000;

/// The user a sign-in is for, as provisioning left them.
pub struct Provisioned {
    pub user: user::Model,
    /// Whether the user was created by this sign-in.
    pub created: bool,
    /// The Flowgate groups the mappings granted.
    pub groups: Vec<String>,
    /// The provider reported more groups than fit in the token.
    pub groups_overage: bool,
}

/// Finds or creates the user `vouched` is, and brings their attributes and groups up to date.
pub async fn provision(
    tx: &WriteTx,
    proof: &SignIn,
    idp: Uuid,
    mappings: &Mappings,
    vouched: &Vouched,
) -> Result<Provisioned, SignInError> {
    let conn = tx.conn();
    let now = Utc::now();
    let identity = user_identity::Entity::find()
        .filter(user_identity::Column::IdpId.eq(idp))
        .filter(user_identity::Column::Subject.eq(vouched.subject()))
        .one(conn)
        .await?;
    let email = email(vouched.claims())?;
    // A new person only at the provider's domains; a person it signed in before keeps their
    // account, and an address elsewhere is not taken (`refresh_user`).
    if identity.is_none() && !in_domains(&email, &mappings.email_domains) {
        return Err(Refusal::EmailOutsideDomains.into());
    }
    let name = display_name(vouched.claims(), &email);
    let (existing, created) = match identity {
        Some(identity) => {
            let user = user::Entity::find_by_id(identity.user_id)
                .one(conn)
                .await?
                .ok_or_else(|| anyhow::anyhow!("identity {} has no user", identity.id))?;
            let mut seen: user_identity::ActiveModel = identity.into();
            seen.last_login_at = Set(now);
            seen.update(conn).await?;
            (user, false)
        }
        None => {
            let taken = user::Entity::find()
                .filter(user::Column::Email.eq(email.as_str()))
                .one(conn)
                .await?;
            if taken.is_some() {
                return Err(Refusal::EmailTaken.into());
            }
            let user = user::ActiveModel {
                id: Set(Uuid::now_v7()),
                email: Set(email.clone()),
                display_name: Set(name.clone()),
                attributes: Set(Value::Object(Map::new())),
                status: Set(AccountStatus::Active.as_str().into()),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(conn)
            .await?;
            user_identity::ActiveModel {
                id: Set(Uuid::now_v7()),
                user_id: Set(user.id),
                idp_id: Set(idp),
                subject: Set(vouched.subject().to_owned()),
                created_at: Set(now),
                last_login_at: Set(now),
            }
            .insert(conn)
            .await?;
            (user, true)
        }
    };
    if AccountStatus::parse(&existing.status) != AccountStatus::Active {
        return Err(Refusal::UserDisabled.into());
    }
    let user = refresh_user(tx, existing, &email, name, mappings, vouched.claims()).await?;
    let (idp_groups, groups_overage) = idp_groups(vouched.claims(), &mappings.groups_claim);
    let granted = sync_groups(tx, proof, user.id, mappings, &idp_groups).await?;
    Ok(Provisioned {
        user,
        created,
        groups: granted,
        groups_overage,
    })
}

/// Sets the user's name, email (unless another user has it) and mapped attributes.
async fn refresh_user(
    tx: &WriteTx,
    existing: user::Model,
    email: &str,
    name: String,
    mappings: &Mappings,
    claims: &Map<String, Value>,
) -> Result<user::Model, DbErr> {
    let conn = tx.conn();
    let mut attributes: BTreeMap<String, String> =
        serde_json::from_value(existing.attributes.clone()).unwrap_or_default();
    for (attribute, claim) in &mappings.claim_mappings {
        match claims.get(claim).and_then(attribute_value) {
            Some(value) => attributes.insert(attribute.clone(), value),
            None => attributes.remove(attribute),
        };
    }
    // An address elsewhere than the provider's domains is not its to give.
    let email_free = existing.email == email
        || (in_domains(email, &mappings.email_domains)
            && user::Entity::find()
                .filter(user::Column::Email.eq(email))
                .one(conn)
                .await?
                .is_none());
    let mut row: user::ActiveModel = existing.into();
    if email_free {
        row.email = Set(email.to_owned());
    }
    row.display_name = Set(name);
    row.attributes = Set(serde_json::to_value(&attributes).unwrap_or_default());
    row.updated_at = Set(Utc::now());
    row.update(conn).await
}

/// Makes the user a member of exactly the mapped groups their provider groups grant, among the
/// groups the provider's mappings name; returns the granted groups' names.
async fn sync_groups(
    tx: &WriteTx,
    proof: &SignIn,
    user_id: Uuid,
    mappings: &Mappings,
    idp_groups: &BTreeSet<String>,
) -> Result<Vec<String>, DbErr> {
    let conn = tx.conn();
    let managed: BTreeSet<&String> = mappings.group_mappings.values().collect();
    let granted: BTreeSet<&String> = mappings
        .group_mappings
        .iter()
        .filter(|(theirs, _)| idp_groups.contains(*theirs))
        .map(|(_, ours)| ours)
        .collect();
    for name in managed {
        let existing = group::Entity::find()
            .filter(group::Column::Name.eq(name.as_str()))
            .one(conn)
            .await?;
        let wanted = granted.contains(name);
        match (existing, wanted) {
            (Some(group), true) => {
                groups::add_member(tx, proof, group.id, user_id).await?;
            }
            (None, true) => {
                let group = groups::create(tx, proof, name.clone()).await?;
                groups::add_member(tx, proof, group.id, user_id).await?;
            }
            (Some(group), false) => {
                group_member::Entity::delete_by_id((group.id, user_id))
                    .exec(conn)
                    .await?;
            }
            (None, false) => {}
        }
    }
    Ok(granted.into_iter().cloned().collect())
}

/// The user's provider groups, and whether the provider said they did not fit in the token.
fn idp_groups(claims: &Map<String, Value>, groups_claim: &str) -> (BTreeSet<String>, bool) {
    let overage = claims
        .get("_claim_names")
        .and_then(Value::as_object)
        .is_some_and(|names| names.contains_key(groups_claim));
    if overage {
        return (BTreeSet::new(), true);
    }
    let groups = match claims.get(groups_claim) {
        Some(Value::Array(items)) => items
            .iter()
            .take(MAX_GROUPS)
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(one)) => BTreeSet::from([one.clone()]),
        _ => BTreeSet::new(),
    };
    (groups, false)
}

/// The user's email: `email`, else (Azure AD) `preferred_username` or `upn` when they are
/// addresses.
fn email(claims: &Map<String, Value>) -> Result<String, Refusal> {
    ["email", "preferred_username", "upn"]
        .iter()
        .filter_map(|claim| claims.get(*claim).and_then(Value::as_str))
        .find_map(|value| users::clean_email(value).ok())
        .ok_or(Refusal::NoEmail)
}

/// Whether `email` is at one of the provider's `domains` (any, when it lists none): a provider
/// vouches for its own domains' people, and an address it asserts elsewhere (anyone's, taken
/// before its owner signs in) is not its to give.
fn in_domains(email: &str, domains: &[String]) -> bool {
    domains.is_empty()
        || email
            .rsplit_once('@')
            .is_some_and(|(_, domain)| domains.iter().any(|d| d == domain))
}

fn display_name(claims: &Map<String, Value>, email: &str) -> String {
    claims
        .get("name")
        .and_then(Value::as_str)
        .and_then(|name| clean_name(name, 200).ok())
        .unwrap_or_else(|| email.to_owned())
}

/// A claim as an attribute value: text as it is, numbers and booleans as text, lists of text
/// joined with `,`; nothing else, and nothing longer than [`MAX_ATTRIBUTE_VALUE`].
fn attribute_value(claim: &Value) -> Option<String> {
    let value = match claim {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?
            .join(","),
        _ => return None,
    };
    (value.len() <= MAX_ATTRIBUTE_VALUE && !value.chars().any(char::is_control)).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn groups_come_from_the_configured_claim_unless_they_overflowed() {
        let c = claims(json!({"groups": ["a", "b", 3], "roles": "x"}));
        assert_eq!(
            idp_groups(&c, "groups").0,
            BTreeSet::from(["a".into(), "b".into()])
        );
        assert_eq!(idp_groups(&c, "roles").0, BTreeSet::from(["x".into()]));
        let over = claims(json!({"groups": ["a"], "_claim_names": {"groups": "src1"}}));
        assert_eq!(idp_groups(&over, "groups"), (BTreeSet::new(), true));
    }

    #[test]
    fn a_provider_vouches_only_for_addresses_at_its_domains() {
        let acme = ["acme.example".to_owned()];
        assert!(in_domains("ada@acme.example", &acme));
        assert!(!in_domains("cfo@corp.example", &acme));
        assert!(!in_domains("ada@sub.acme.example", &acme));
        assert!(!in_domains("ada@acme.example.evil", &acme));
        assert!(in_domains("anyone@anywhere.example", &[]));
    }

    #[test]
    fn emails_fall_back_to_address_like_usernames() {
        assert_eq!(
            email(&claims(json!({"email": "Ada@Example.com"}))).unwrap(),
            "ada@example.com"
        );
        assert_eq!(
            email(&claims(json!({"preferred_username": "ada@example.com"}))).unwrap(),
            "ada@example.com"
        );
        assert_eq!(
            email(&claims(json!({"preferred_username": "ada"}))),
            Err(Refusal::NoEmail)
        );
    }

    #[test]
    fn only_flat_claims_become_attributes() {
        assert_eq!(
            attribute_value(&json!("Finance")).as_deref(),
            Some("Finance")
        );
        assert_eq!(attribute_value(&json!(3)).as_deref(), Some("3"));
        assert_eq!(attribute_value(&json!(["a", "b"])).as_deref(), Some("a,b"));
        assert_eq!(attribute_value(&json!({"a": 1})), None);
        assert_eq!(attribute_value(&json!([1])), None);
        assert_eq!(attribute_value(&json!("x".repeat(2000))), None);
    }
}
