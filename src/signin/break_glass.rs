//! Break-glass accounts: per tenant, emergency local people who sign in with a passkey only, so
//! that an identity provider's outage never locks a tenant out.
//!
//! Invariants:
//! - Only the platform operator creates one (or issues it a new enrollment), under its
//!   [`Onboarding`] authority, as an Admin of the tenant. A new enrollment removes the
//!   account's passkeys and ends its sessions: whoever holds the old authenticator is out.
//! - The enrollment token is 256 random bits, shown once, stored as its SHA-256, used once,
//!   and lives [`ENROLLMENT_TTL`]. It opens a session of [`ENROLLMENT_LIFE`] at level
//!   `enrollment`, which owes a passkey whatever the tenant's MFA policy: it can enroll one and
//!   assert with it, nothing else.
//! - A sign-in is a passkey assertion against the account's own passkeys, its challenge kept
//!   server-side, bound to the browser's pre-login cookie and taken once. It opens a session
//!   at level `sso+mfa` that ends after [`SESSION_LIFE`] at most.
//! - No identity provider takes part, and none can take the account over: a provider's login
//!   with the account's email is refused (the email is taken).
//! - Every step is in the tenant's trail with `security_event` set, and logged as a warning.

use chrono::{DateTime, Duration, Utc};
use entity::tenant::{break_glass_account, break_glass_login, user};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DbErr,
    EntityTrait as _, QueryFilter as _,
};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;
use webauthn_rs::prelude::{PasskeyAuthentication, PublicKeyCredential, RequestChallengeResponse};

use super::passkeys::{
    CEREMONY_TTL, PasskeyError, PasskeyRefusal, RelyingParty, parse, reset, unexpected,
};
use super::sessions::{self, Level, NewSession, Opened};
use crate::audit::RequestMeta;
use crate::authz::actions::{PasskeyReset, SessionRevoke};
use crate::authz::bindings::{self, NewBinding, ScopeType, SubjectType};
use crate::crypto::{random_token, sha256_hex};
use crate::directory::users::{self, NewUser};
use crate::tenancy::work::{Onboarding, SignIn, WriteTx};

/// How long an enrollment token can be used.
pub const ENROLLMENT_TTL: Duration = Duration::hours(24);
/// The life of the session an enrollment token opens.
pub const ENROLLMENT_LIFE: Duration = Duration::minutes(15);
/// How long a begun sign-in can be finished (its pre-login cookie's life).
pub const LOGIN_LIFE: Duration = CEREMONY_TTL;
/// The longest life of a break-glass session.
pub const SESSION_LIFE: Duration = Duration::minutes(60);
/// The prefix of enrollment tokens (to recognise one in a leak scanner).
const TOKEN_PREFIX: &str = "fgb_";

/// A break-glass account's new enrollment, its token shown once.
pub struct Issued {
    pub user: user::Model,
    /// Whether the account was created now (else it existed and was re-issued).
    pub created: bool,
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// Creates the break-glass account `email` of the tenant, or issues the existing one a new
/// enrollment (its passkeys removed, its sessions ended). A person of the tenant who is not a
/// break-glass account is [`PasskeyRefusal::NotBreakGlass`].
pub async fn issue(
    tx: &WriteTx,
    onboarding: &Onboarding,
    new: NewUser,
) -> Result<Issued, PasskeyError> {
    let conn = tx.conn();
    let token = SecretString::from(format!("{TOKEN_PREFIX}{}", random_token::<32>()?));
    let now = Utc::now();
    let expires_at = now + ENROLLMENT_TTL;
    let hash = sha256_hex(token.expose_secret().as_bytes());
    let existing = user::Entity::find()
        .filter(user::Column::Email.eq(new.email.as_str()))
        .one(conn)
        .await?;
    let (user, created) = match existing {
        Some(user) => {
            let account = break_glass_account::Entity::find_by_id(user.id)
                .one(conn)
                .await?
                .ok_or(PasskeyRefusal::NotBreakGlass)?;
            let mut renewed: break_glass_account::ActiveModel = account.into();
            renewed.enrollment_hash = Set(Some(hash));
            renewed.enrollment_expires_at = Set(Some(expires_at));
            renewed.update(conn).await?;
            reset(tx, onboarding, user.id).await?;
            sessions::revoke_all::<PasskeyReset>(tx, onboarding, user.id).await?;
            (user, false)
        }
        None => {
            let user = users::create(tx, onboarding, new).await?;
            break_glass_account::ActiveModel {
                user_id: Set(user.id),
                created_at: Set(now),
                enrollment_hash: Set(Some(hash)),
                enrollment_expires_at: Set(Some(expires_at)),
                last_used_at: Set(None),
            }
            .insert(conn)
            .await?;
            bindings::create(
                tx,
                onboarding,
                NewBinding {
                    role: "Admin".to_owned(),
                    subject_type: SubjectType::User,
                    subject_id: user.id,
                    scope_type: ScopeType::Tenant,
                    scope_id: None,
                },
            )
            .await?;
            (user, true)
        }
    };
    Ok(Issued {
        user,
        created,
        token,
        expires_at,
    })
}

/// Spends enrollment `token` and opens its enrollment session.
pub async fn enroll(
    tx: &WriteTx,
    proof: &SignIn,
    token: &str,
    meta: &RequestMeta,
) -> Result<Opened, PasskeyError> {
    let conn = tx.conn();
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Err(PasskeyRefusal::BadEnrollment.into());
    }
    let hash = sha256_hex(token.as_bytes());
    let account = break_glass_account::Entity::find()
        .filter(break_glass_account::Column::EnrollmentHash.eq(hash.as_str()))
        .one(conn)
        .await?
        .ok_or(PasskeyRefusal::BadEnrollment)?;
    let spent = break_glass_account::Entity::update_many()
        .col_expr(
            break_glass_account::Column::EnrollmentHash,
            Expr::value(Option::<String>::None),
        )
        .filter(break_glass_account::Column::UserId.eq(account.user_id))
        .filter(break_glass_account::Column::EnrollmentHash.eq(hash.as_str()))
        .exec(conn)
        .await?
        .rows_affected;
    let live = account
        .enrollment_expires_at
        .is_some_and(|at| at > Utc::now());
    if spent != 1 || !live {
        return Err(PasskeyRefusal::BadEnrollment.into());
    }
    active(tx, account.user_id).await?;
    Ok(sessions::open(
        tx,
        proof,
        NewSession {
            user_id: account.user_id,
            idp_id: None,
            method: "break_glass",
            level: Level::Enrollment,
            authenticated_at: Utc::now(),
            passkey_asserted_at: None,
            max_life: Some(ENROLLMENT_LIFE),
        },
        meta,
    )
    .await?)
}

/// Begins the passkey sign-in of break-glass account `email`, bound to `binding` (the pre-login
/// cookie's value).
pub async fn begin(
    relying_party: &RelyingParty,
    tx: &WriteTx,
    email: &str,
    binding: &str,
) -> Result<(Uuid, RequestChallengeResponse), PasskeyError> {
    let conn = tx.conn();
    let person = user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(conn)
        .await?
        .ok_or(PasskeyRefusal::NotBreakGlass)?;
    if !is_break_glass(conn, person.id).await? {
        return Err(PasskeyRefusal::NotBreakGlass.into());
    }
    active(tx, person.id).await?;
    // An account without a usable passkey is answered like an unknown email.
    let (options, state) = match relying_party.challenge(tx, person.id).await {
        Err(PasskeyError::Refused(
            PasskeyRefusal::NoPasskey | PasskeyRefusal::ModelNotAllowed(_),
        )) => {
            return Err(PasskeyRefusal::NotBreakGlass.into());
        }
        challenge => challenge?,
    };
    let now = Utc::now();
    break_glass_login::Entity::delete_many()
        .filter(break_glass_login::Column::ExpiresAt.lte(now))
        .exec(conn)
        .await?;
    break_glass_login::ActiveModel {
        id: Set(sha256_hex(binding.as_bytes())),
        user_id: Set(person.id),
        state: Set(serde_json::to_value(&state).map_err(unexpected)?),
        expires_at: Set(now + LOGIN_LIFE),
    }
    .insert(conn)
    .await?;
    Ok((person.id, options))
}

/// Finishes the sign-in bound to `binding` with `assertion`: the account's user and its new
/// session.
pub async fn finish(
    relying_party: &RelyingParty,
    tx: &WriteTx,
    proof: &SignIn,
    binding: &str,
    assertion: &PublicKeyCredential,
    meta: &RequestMeta,
) -> Result<(Uuid, Opened), PasskeyError> {
    let conn = tx.conn();
    let id = sha256_hex(binding.as_bytes());
    let login = break_glass_login::Entity::find_by_id(id.as_str())
        .one(conn)
        .await?
        .ok_or(PasskeyRefusal::NoCeremony)?;
    let taken = break_glass_login::Entity::delete_by_id(id.as_str())
        .exec(conn)
        .await?
        .rows_affected;
    if taken != 1 || login.expires_at <= Utc::now() {
        return Err(PasskeyRefusal::NoCeremony.into());
    }
    let state: PasskeyAuthentication = parse(&login.state)?;
    let verified = relying_party
        .verify(tx, login.user_id, &state, assertion)
        .await;
    if let Err(PasskeyError::Refused(PasskeyRefusal::CounterRegression)) = &verified {
        // A copy of the account's passkey exists, and whoever signed in with it first holds
        // a session: every session of the account ends with the refusal.
        sessions::revoke_all::<SessionRevoke>(tx, proof, login.user_id).await?;
    }
    verified?;
    active(tx, login.user_id).await?;
    break_glass_account::Entity::update_many()
        .col_expr(
            break_glass_account::Column::LastUsedAt,
            Expr::value(Utc::now()),
        )
        .filter(break_glass_account::Column::UserId.eq(login.user_id))
        .exec(conn)
        .await?;
    let opened = sessions::open(
        tx,
        proof,
        NewSession {
            user_id: login.user_id,
            idp_id: None,
            method: "break_glass",
            level: Level::SsoMfa,
            authenticated_at: Utc::now(),
            passkey_asserted_at: Some(Utc::now()),
            max_life: Some(SESSION_LIFE),
        },
        meta,
    )
    .await?;
    Ok((login.user_id, opened))
}

/// Whether `user_id` is a break-glass account.
pub async fn is_break_glass(conn: &impl ConnectionTrait, user_id: Uuid) -> Result<bool, DbErr> {
    Ok(break_glass_account::Entity::find_by_id(user_id)
        .one(conn)
        .await?
        .is_some())
}

/// Refuses a deactivated account.
async fn active(tx: &WriteTx, user_id: Uuid) -> Result<(), PasskeyError> {
    if users::is_active(tx.conn(), user_id).await? {
        Ok(())
    } else {
        Err(PasskeyRefusal::NotBreakGlass.into())
    }
}

impl From<anyhow::Error> for PasskeyError {
    fn from(e: anyhow::Error) -> Self {
        PasskeyError::Unexpected(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lives_are_bounded() {
        assert!(ENROLLMENT_LIFE < SESSION_LIFE);
        assert!(SESSION_LIFE <= Duration::hours(1));
    }
}
