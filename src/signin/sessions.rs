//! Browser sessions: a server-side record behind a `__Host-` cookie.
//!
//! Invariants:
//! - The cookie holds a random 256-bit token; only its SHA-256 is stored, so a copy of the
//!   database opens no session. Every sign-in makes a new token (no fixation), and the token is
//!   never logged or audited (the session's id is).
//! - A session authenticates only while it is unrevoked, younger than its absolute end, used
//!   within the tenant's idle timeout, and its user is active.
//! - A request authenticated by a session cookie that can change something (any method but
//!   GET, HEAD and OPTIONS) must carry this server's `Origin`; a missing or foreign one is
//!   refused before anything runs.
//! - The session records how strongly its user proved themselves ([`Level`]) and when, so a
//!   second factor raises the same record.
//! - A session found live is kept in memory ([`SessionCache`]) for at most [`TOUCH_AFTER`]
//!   after its `last_seen_at` was read or written; every committed change that can alter a
//!   session, its person (activity, groups, attributes, passkeys) or the tenant's settings
//!   forgets the tenant's sessions, here and on every replica.

use std::borrow::Cow;
use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time};
use actix_web::http::Method;
use chrono::{DateTime, Duration, Utc};
use entity::tenant::{passkey, session};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, Condition, ConnectionTrait, DbErr,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use super::settings::{Mfa, TenantSettings};
use crate::app::AppState;
use crate::audit::RequestMeta;
use crate::authz::Action;
use crate::authz::actions::{IdentityProviderManage, PasskeyReset, SessionRevoke, UserDisable};
use crate::authz::bindings::SubjectType;
use crate::authz::load_subject;
use crate::crypto::{random_token, sha256_hex};
use crate::identity::records::RecordIndex;
use crate::identity::{IdentityError, InvalidReason, Principal, SecondFactor, UserCredential};
use crate::tenancy::Slug;
use crate::tenancy::work::{Permit, SignIn, WriteTx};
use crate::tenancy::{Access, Tenant};

/// How stale `last_seen_at` may get before a request writes it again; also the longest a
/// session is authenticated from memory without reading its record.
const TOUCH_AFTER: Duration = Duration::seconds(60);
/// Tenants whose recently used sessions are kept in memory, and sessions per tenant.
const CACHED_SESSION_TENANTS: usize = 256;
const CACHED_SESSIONS_PER_TENANT: usize = 512;
/// How long a pre-login cookie (and its login record) lives.
pub const LOGIN_TTL: Duration = Duration::minutes(10);

/// How strongly a session's user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Single sign-on at an identity provider.
    Sso,
    /// Single sign-on and a second factor (or a break-glass account's passkey).
    SsoMfa,
    /// A break-glass account's enrollment token: a passkey is owed whatever the tenant's
    /// policy, so the session can only enroll one and assert with it.
    Enrollment,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Sso => "sso",
            Level::SsoMfa => "sso+mfa",
            Level::Enrollment => "enrollment",
        }
    }

    fn parse(value: &str) -> Level {
        [Level::SsoMfa, Level::Enrollment]
            .into_iter()
            .find(|level| level.as_str() == value)
            .unwrap_or(Level::Sso)
    }
}

/// What the session cookie's name starts with; the tenant's slug ends it ([`cookie_name`]).
pub const COOKIE_PREFIX: &str = "__Host-flowgate-session-";

/// The session cookie of tenant `slug`. One per tenant: a browser signed in to several tenants
/// keeps each session, and signing in to one tenant (which any tenant's admin can make a
/// browser do, through a provider of their own that approves every login) never replaces,
/// and so ends, the session of another. A session is looked up only in the tenant it was
/// opened in.
pub fn cookie_name(slug: &Slug) -> String {
    format!("{COOKIE_PREFIX}{slug}")
}

/// What each pre-login cookie's name starts with; like the session cookie's, the tenant's slug
/// ends it. One per tenant: a login begun at another tenant (which that tenant's admin can make
/// a browser begin) never replaces, and so spoils, a login in progress at this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreLogin {
    /// An OpenID Connect login, binding its `state` to the browser.
    Oidc,
    /// A SAML login. The provider sends the browser back with a cross-site POST, on which
    /// browsers withhold `SameSite=Lax` cookies, so this one is `SameSite=None`; it only binds
    /// the login to the browser and grants nothing.
    Saml,
    /// A break-glass passkey sign-in, binding its challenge to the browser.
    Passkey,
}

impl PreLogin {
    fn prefix(self) -> &'static str {
        match self {
            PreLogin::Oidc => "__Host-flowgate-login-",
            PreLogin::Saml => "__Host-flowgate-saml-login-",
            PreLogin::Passkey => "__Host-flowgate-passkey-login-",
        }
    }

    /// The cookie's name at tenant `slug`.
    pub fn name(self, slug: &Slug) -> String {
        format!("{}{slug}", self.prefix())
    }

    /// The cookie binding `value` to this browser at tenant `slug` for `life`.
    pub fn cookie(self, slug: &Slug, value: String, life: Duration) -> Cookie<'static> {
        let mut cookie = host_cookie(self.name(slug), value, life);
        if self == PreLogin::Saml {
            cookie.set_same_site(SameSite::None);
        }
        cookie
    }
}

/// A `__Host-` cookie: Secure, HttpOnly, SameSite=Lax (a SAML login's is made None by
/// [`PreLogin::cookie`]), `Path=/`, no Domain.
pub fn host_cookie(
    name: impl Into<Cow<'static, str>>,
    value: String,
    max_age: Duration,
) -> Cookie<'static> {
    Cookie::build(name.into(), value)
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .max_age(time::Duration::seconds(max_age.num_seconds()))
        .finish()
}

/// A cookie that tells the browser to forget `name`.
pub fn removal(name: impl Into<Cow<'static, str>>) -> Cookie<'static> {
    let mut cookie = host_cookie(name, String::new(), Duration::zero());
    cookie.make_removal();
    cookie
}

/// The tenant's session timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Duration,
    pub absolute: Duration,
}

impl Timeouts {
    pub async fn load(conn: &impl ConnectionTrait) -> Result<Self, DbErr> {
        Ok(Self::of(&TenantSettings::load(conn).await?))
    }

    fn of(settings: &TenantSettings) -> Self {
        Timeouts {
            idle: Duration::minutes(settings.session_idle_minutes),
            absolute: Duration::minutes(settings.session_absolute_minutes),
        }
    }
}

/// When `session` ends at the latest: the end it was opened with, or earlier when the tenant
/// has shortened its absolute timeout since (a shorter timeout applies to every session at its
/// next request, as one set during an incident must).
fn absolute_end(session: &session::Model, absolute: Duration) -> DateTime<Utc> {
    session.expires_at.min(
        session
            .created_at
            .checked_add_signed(absolute)
            .unwrap_or(session.expires_at),
    )
}

/// A freshly opened session and the token its cookie carries (shown to the browser once).
pub struct Opened {
    pub session: session::Model,
    pub token: SecretString,
    pub timeouts: Timeouts,
}

/// What a new session records of its sign-in.
pub struct NewSession {
    pub user_id: Uuid,
    /// The identity provider that vouched; none for a break-glass account's passkey.
    pub idp_id: Option<Uuid>,
    /// `oidc`, `saml` or `break_glass`.
    pub method: &'static str,
    pub level: Level,
    /// When the person proved themselves (at the provider, or with the passkey).
    pub authenticated_at: DateTime<Utc>,
    /// When they passed a passkey assertion in this sign-in (break-glass), if they did.
    pub passkey_asserted_at: Option<DateTime<Utc>>,
    /// A shorter life than the tenant's absolute timeout (break-glass sessions are bounded).
    pub max_life: Option<Duration>,
}

/// Opens a session for a person who just signed in.
pub async fn open(
    tx: &WriteTx,
    _: &SignIn,
    new: NewSession,
    meta: &RequestMeta,
) -> Result<Opened, IdentityError> {
    let conn = tx.conn();
    let mut timeouts = Timeouts::load(conn).await?;
    if let Some(max_life) = new.max_life {
        timeouts.absolute = timeouts.absolute.min(max_life);
    }
    let token = SecretString::from(random_token::<32>()?);
    let now = Utc::now();
    let session = session::ActiveModel {
        id: Set(Uuid::now_v7()),
        token_hash: Set(sha256_hex(token.expose_secret().as_bytes())),
        user_id: Set(new.user_id),
        idp_id: Set(new.idp_id),
        method: Set(new.method.to_owned()),
        level: Set(new.level.as_str().to_owned()),
        strong_auth_at: Set(new.authenticated_at.min(now)),
        passkey_asserted_at: Set(new.passkey_asserted_at),
        created_at: Set(now),
        last_seen_at: Set(now),
        expires_at: Set(now + timeouts.absolute),
        source_ip: Set(meta.source_ip.clone()),
        user_agent: Set(meta
            .user_agent
            .as_ref()
            .map(|ua| ua.chars().take(512).collect())),
        revoked_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(Opened {
        session,
        token,
        timeouts,
    })
}

/// A page of the live (unrevoked, within their absolute and idle timeouts) sessions of
/// `user_id`, oldest first, each with the absolute end the tenant's timeout gives it now.
pub async fn live(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<session::Model>, DbErr> {
    let now = Utc::now();
    let timeouts = Timeouts::load(conn).await?;
    let mut query = session::Entity::find()
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now))
        .filter(session::Column::CreatedAt.gt(now - timeouts.absolute))
        .filter(session::Column::LastSeenAt.gt(now - timeouts.idle))
        .order_by_asc(session::Column::Id)
        .limit(limit);
    if let Some(after) = after {
        query = query.filter(session::Column::Id.gt(after));
    }
    let mut sessions = query.all(conn).await?;
    for session in &mut sessions {
        session.expires_at = absolute_end(session, timeouts.absolute);
    }
    Ok(sessions)
}

/// Session `id`, whoever's it is.
pub async fn get(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<session::Model>, DbErr> {
    session::Entity::find_by_id(id).one(conn).await
}

/// Revokes session `id` of `user_id`; `false` when the user has no such unrevoked, unexpired
/// session.
pub async fn revoke(
    tx: &WriteTx,
    _: &impl Permit<SessionRevoke>,
    user_id: Uuid,
    id: Uuid,
) -> Result<bool, DbErr> {
    let revoked = session::Entity::update_many()
        .col_expr(
            session::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(Some(Utc::now())),
        )
        .filter(session::Column::Id.eq(id))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(Utc::now()))
        .exec(tx.conn())
        .await?;
    Ok(revoked.rows_affected == 1)
}

/// Revokes every live session of `user_id` but `keep` (the person's own, current one); returns
/// how many ended.
pub async fn revoke_others(
    tx: &WriteTx,
    _: &SignIn,
    user_id: Uuid,
    keep: Option<Uuid>,
) -> Result<u64, DbErr> {
    end_sessions(tx, user_id, keep).await
}

/// The actions whose permit ends all of a person's sessions: revoking them, resetting the
/// person's passkeys (a lost authenticator must not stay signed in), and disabling the person
/// (enabling them again must not bring back what was signed in before).
pub trait EndsSessions: Action {}
impl EndsSessions for SessionRevoke {}
impl EndsSessions for PasskeyReset {}
impl EndsSessions for UserDisable {}

/// Withdraws the second factor that identity provider `idp_id`'s own MFA gave its sessions,
/// after the tenant stopped trusting (some of) it: those sessions owe a passkey assertion again
/// where the tenant asks for one. Sessions that asserted with a passkey keep theirs. Returns how
/// many sessions changed.
pub async fn distrust_provider_mfa(
    tx: &WriteTx,
    _: &impl Permit<IdentityProviderManage>,
    idp_id: Uuid,
) -> Result<u64, DbErr> {
    let withdrawn = session::Entity::update_many()
        .col_expr(
            session::Column::Level,
            sea_orm::sea_query::Expr::value(Level::Sso.as_str()),
        )
        .filter(session::Column::IdpId.eq(idp_id))
        .filter(session::Column::Level.eq(Level::SsoMfa.as_str()))
        .filter(session::Column::PasskeyAssertedAt.is_null())
        .filter(session::Column::RevokedAt.is_null())
        .exec(tx.conn())
        .await?;
    Ok(withdrawn.rows_affected)
}

/// Ends every live session identity provider `idp_id` vouched for, as the provider is deleted:
/// nothing vouches for them any more (and a provider is often deleted because it can no longer
/// be trusted). Returns how many ended.
pub async fn end_provider_sessions(
    tx: &WriteTx,
    _: &impl Permit<IdentityProviderManage>,
    idp_id: Uuid,
) -> Result<u64, DbErr> {
    end_live_sessions(tx, Condition::all().add(session::Column::IdpId.eq(idp_id))).await
}

/// Whether `principal`, a person's session, may end the person's *other* sessions: only a
/// session that passed a second factor may, unless the person has no passkey to pass it with.
/// An identity-provider password alone (stolen, say) must not sign the person out of the
/// sessions that did pass it, whatever the tenant's MFA policy (under `off`, no session owes
/// one, yet a person with a passkey has one to show).
pub async fn may_end_other_sessions(
    conn: &impl ConnectionTrait,
    principal: &Principal,
) -> Result<bool, DbErr> {
    let passed = matches!(
        principal,
        Principal::User {
            credential: UserCredential::Session {
                second_factor: SecondFactor::Passed,
                ..
            },
            ..
        }
    );
    Ok(passed || !has_passkey(conn, principal.id()).await?)
}

/// Revokes every live session of `user_id`; returns how many ended.
pub async fn revoke_all<A: EndsSessions>(
    tx: &WriteTx,
    _: &impl Permit<A>,
    user_id: Uuid,
) -> Result<u64, DbErr> {
    end_sessions(tx, user_id, None).await
}

/// Revokes the unrevoked sessions of `user_id`, but `keep`; returns how many ended.
async fn end_sessions(tx: &WriteTx, user_id: Uuid, keep: Option<Uuid>) -> Result<u64, DbErr> {
    let which = Condition::all()
        .add(session::Column::UserId.eq(user_id))
        .add_option(keep.map(|keep| session::Column::Id.ne(keep)));
    end_live_sessions(tx, which).await
}

/// Revokes the unrevoked sessions `which` selects; returns how many ended.
async fn end_live_sessions(tx: &WriteTx, which: Condition) -> Result<u64, DbErr> {
    let ended = session::Entity::update_many()
        .col_expr(
            session::Column::RevokedAt,
            sea_orm::sea_query::Expr::value(Some(Utc::now())),
        )
        .filter(which)
        .filter(session::Column::RevokedAt.is_null())
        .exec(tx.conn())
        .await?;
    Ok(ended.rows_affected)
}

/// The session cookie's principal, if the request carries the tenant's session cookie.
pub async fn authenticate(
    state: &AppState,
    tenant: &Tenant,
    req: &HttpRequest,
) -> Option<Result<Principal, IdentityError>> {
    let cookie = req.cookie(&cookie_name(&tenant.slug))?;
    if changes_state(req.method()) && !same_origin(req, &state.settings.public_url) {
        return Some(Err(IdentityError::ForeignOrigin));
    }
    Some(find(state, tenant, cookie.value()).await)
}

/// The principal of the session whose cookie value is `token` (a script exchanging the session
/// for an access token presents it without the cookie).
pub async fn by_token(
    state: &AppState,
    tenant: &Tenant,
    token: &str,
) -> Result<Principal, IdentityError> {
    find(state, tenant, token).await
}

/// Whether a request with `method` may change something.
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request's `Origin` is the origin of `public_url`.
pub fn same_origin(req: &HttpRequest, public_url: &str) -> bool {
    let Some(origin) = req
        .headers()
        .get(actix_web::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    match (url::Url::parse(origin), url::Url::parse(public_url)) {
        (Ok(origin), Ok(public)) => origin.origin() == public.origin() && origin.path() == "/",
        _ => false,
    }
}

/// The principal of the session whose token is `token`: from memory while the session was
/// seen within [`TOUCH_AFTER`], or else from its record (which is then touched and kept).
async fn find(state: &AppState, tenant: &Tenant, token: &str) -> Result<Principal, IdentityError> {
    let invalid = IdentityError::InvalidCredentials;
    if token.len() != 43
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(InvalidReason::Malformed));
    }
    let hash = sha256_hex(token.as_bytes());
    let settings = state.tenant_settings.get(&state.dbs, &tenant.slug).await?;
    let idle = Duration::minutes(settings.session_idle_minutes);
    let now = Utc::now();
    let known = state
        .sessions
        .0
        .get_fresh_or_load(
            tenant.slug.as_str(),
            &hash,
            |known| known.fresh(now, idle),
            || load(state, tenant, &hash, now),
        )
        .await?
        .ok_or(invalid(InvalidReason::UnknownKey))?;
    Ok(known.principal)
}

/// A live session as authentication last read (or touched) it.
#[derive(Clone)]
struct KnownSession {
    principal: Principal,
    last_seen_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl KnownSession {
    /// Whether the session may be authenticated at `now` without reading its record: seen
    /// within [`TOUCH_AFTER`] (and so within `idle`), and before its absolute end.
    fn fresh(&self, now: DateTime<Utc>, idle: Duration) -> bool {
        let since = now - self.last_seen_at;
        since <= TOUCH_AFTER && since < idle && now < self.expires_at
    }
}

/// Recently authenticated sessions of each tenant, by the SHA-256 of their token. Only sessions
/// found live are kept, so guessing tokens fills nothing.
pub struct SessionCache(RecordIndex<KnownSession>);

impl Default for SessionCache {
    fn default() -> Self {
        SessionCache(RecordIndex::new(
            "sessions",
            CACHED_SESSION_TENANTS,
            CACHED_SESSIONS_PER_TENANT,
            None,
        ))
    }
}

impl SessionCache {
    /// Forgets the sessions of `slug`.
    pub fn forget(&self, slug: &str) {
        self.0.forget(slug);
    }

    /// Forgets every session.
    pub fn clear(&self) {
        self.0.clear();
    }
}

/// Whether a committed change to a resource of `resource_type` can alter an authenticated
/// session: anything but the kinds listed, which name no person, group, passkey or setting.
pub fn altered_by(resource_type: &str) -> bool {
    !matches!(
        resource_type,
        "process"
            | "folder"
            | "secret"
            | "api_key"
            | "oauth_client"
            | "service_account"
            | "trusted_issuer"
            | "token_key"
    )
}

/// Reads the session whose token hashes to `hash`, checks it is live, and touches its
/// `last_seen_at` when that is older than [`TOUCH_AFTER`]; `None` when there is no such session.
/// The tenant's settings are read in the same transaction, after the cache's index was taken,
/// so a settings change that commits meanwhile cannot leave its predecessor's second-factor
/// rule remembered.
#[expect(
    clippy::disallowed_methods,
    reason = "authentication reads sessions before any principal exists, and keeps last_seen_at"
)]
async fn load(
    state: &AppState,
    tenant: &Tenant,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<KnownSession>, IdentityError> {
    let tx = state.dbs.begin(&tenant.slug, Access::Read).await?;
    let Some(session) = session::Entity::find()
        .filter(session::Column::TokenHash.eq(hash))
        .one(&tx)
        .await?
    else {
        return Ok(None);
    };
    let settings = TenantSettings::load(&tx).await?;
    let timeouts = Timeouts::of(&settings);
    if session.last_seen_at + timeouts.idle <= now {
        return Err(IdentityError::InvalidCredentials(InvalidReason::Expired));
    }
    let subject = live_subject(&tx, &session, timeouts.absolute, now).await?;
    let ends_at = absolute_end(&session, timeouts.absolute);
    let second_factor = second_factor(&tx, settings.mfa, &session).await?;
    tx.commit().await?;
    let mut last_seen_at = session.last_seen_at;
    if now - last_seen_at > TOUCH_AFTER {
        let tx = state.dbs.begin(&tenant.slug, Access::Write).await?;
        session::Entity::update_many()
            .col_expr(
                session::Column::LastSeenAt,
                sea_orm::sea_query::Expr::value(now),
            )
            .filter(session::Column::Id.eq(session.id))
            .exec(&tx)
            .await?;
        tx.commit().await?;
        last_seen_at = now;
    }
    Ok(Some(KnownSession {
        principal: Principal::User {
            id: session.user_id,
            credential: UserCredential::Session {
                id: session.id,
                second_factor,
                passkey_asserted_at: session.passkey_asserted_at,
                strong_auth_at: session.strong_auth_at,
                expires_at: ends_at,
            },
            subject: Arc::new(subject),
        },
        last_seen_at,
        expires_at: ends_at,
    }))
}

/// The person an access token exchanged for session `id` of `user_id` speaks for: the session
/// must still be unrevoked, within its absolute end, and its user active. (A script's use
/// neither needs nor extends the browser's idle time.) The token counts the passkey assertion
/// the session had made when it was issued (`asserted_at`), never a later one: an assertion the
/// person makes in the browser afterwards does not lend a token minted earlier (perhaps leaked)
/// the standing to step up.
#[expect(
    clippy::disallowed_methods,
    reason = "authentication reads sessions before any principal exists"
)]
pub async fn exchanged(
    state: &AppState,
    tenant: &Tenant,
    user_id: Uuid,
    id: Uuid,
    asserted_at: Option<DateTime<Utc>>,
) -> Result<Principal, IdentityError> {
    let settings = state.tenant_settings.get(&state.dbs, &tenant.slug).await?;
    let tx = state.dbs.begin(&tenant.slug, Access::Read).await?;
    let session = session::Entity::find_by_id(id)
        .one(&tx)
        .await?
        .filter(|s| s.user_id == user_id)
        .ok_or(IdentityError::InvalidCredentials(InvalidReason::Revoked))?;
    let absolute = Timeouts::of(&settings).absolute;
    let subject = live_subject(&tx, &session, absolute, Utc::now()).await?;
    let second_factor = second_factor(&tx, settings.mfa, &session).await?;
    tx.commit().await?;
    if second_factor == SecondFactor::Owed {
        return Err(IdentityError::SecondFactorOwed);
    }
    Ok(Principal::User {
        id: user_id,
        credential: UserCredential::AccessToken {
            session: id,
            asserted_at: asserted_at
                .zip(session.passkey_asserted_at)
                .map(|(then, now)| then.min(now)),
        },
        subject: Arc::new(subject),
    })
}

/// Where `session` stands with the second factor the tenant's `mfa` policy asks for. A person
/// who has any passkey, flagged ones included, owes an assertion under `optional`: a flagged
/// (possibly cloned) passkey must not turn the second factor off.
async fn second_factor(
    conn: &impl ConnectionTrait,
    mfa: Mfa,
    session: &session::Model,
) -> Result<SecondFactor, DbErr> {
    match Level::parse(&session.level) {
        Level::SsoMfa => return Ok(SecondFactor::Passed),
        Level::Enrollment => return Ok(SecondFactor::Owed),
        Level::Sso => {}
    }
    Ok(match mfa {
        Mfa::Off => SecondFactor::NotAsked,
        Mfa::Required => SecondFactor::Owed,
        Mfa::Optional if has_passkey(conn, session.user_id).await? => SecondFactor::Owed,
        Mfa::Optional => SecondFactor::NotAsked,
    })
}

/// Whether `user_id` has registered any passkey.
async fn has_passkey(conn: &impl ConnectionTrait, user_id: Uuid) -> Result<bool, DbErr> {
    Ok(passkey::Entity::find()
        .filter(passkey::Column::UserId.eq(user_id))
        .one(conn)
        .await?
        .is_some())
}

/// The user of `session` as the policy engine sees them, if the session is unrevoked, before
/// its absolute end (under the tenant's `absolute` timeout now), and its user active.
async fn live_subject(
    conn: &impl ConnectionTrait,
    session: &session::Model,
    absolute: Duration,
    now: DateTime<Utc>,
) -> Result<crate::authz::Subject, IdentityError> {
    let invalid = IdentityError::InvalidCredentials;
    if session.revoked_at.is_some() {
        return Err(invalid(InvalidReason::Revoked));
    }
    if absolute_end(session, absolute) <= now {
        return Err(invalid(InvalidReason::Expired));
    }
    if !crate::directory::users::is_active(conn, session.user_id).await? {
        return Err(invalid(InvalidReason::AccountDisabled));
    }
    load_subject(conn, SubjectType::User, session.user_id)
        .await?
        .ok_or(invalid(InvalidReason::UnknownKey))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::AccountCredential;

    #[test]
    fn each_tenant_binds_its_logins_with_a_cookie_of_its_own() {
        let acme = Slug::parse("acme").unwrap();
        let evil = Slug::parse("evil").unwrap();
        for kind in [PreLogin::Oidc, PreLogin::Saml, PreLogin::Passkey] {
            assert_ne!(kind.name(&acme), kind.name(&evil));
            let cookie = kind.cookie(&acme, "binding".into(), Duration::minutes(10));
            assert_eq!(cookie.name(), kind.name(&acme));
            assert!(cookie.name().starts_with("__Host-") && cookie.name().ends_with("-acme"));
            assert_eq!(cookie.secure(), Some(true));
            assert_eq!(cookie.http_only(), Some(true));
            // Only the SAML one comes back on the provider's cross-site POST.
            let expected = if kind == PreLogin::Saml {
                SameSite::None
            } else {
                SameSite::Lax
            };
            assert_eq!(cookie.same_site(), Some(expected), "{kind:?}");
        }
    }

    fn seen(ago: Duration, expires_in: Duration) -> KnownSession {
        let now = Utc::now();
        KnownSession {
            principal: Principal::ServiceAccount {
                id: Uuid::nil(),
                credential: AccountCredential::ApiKey(Uuid::nil()),
            },
            last_seen_at: now - ago,
            expires_at: now + expires_in,
        }
    }

    #[test]
    fn a_remembered_session_is_trusted_for_a_minute_within_its_timeouts() {
        let (now, hour) = (Utc::now(), Duration::hours(1));
        assert!(seen(Duration::seconds(30), hour).fresh(now, hour));
        assert!(
            !seen(Duration::seconds(61), hour).fresh(now, hour),
            "past a minute its record is read again"
        );
        assert!(
            !seen(Duration::seconds(30), hour).fresh(now, Duration::seconds(20)),
            "an idle timeout shorter than the minute still applies"
        );
        assert!(
            !seen(Duration::seconds(1), -Duration::seconds(1)).fresh(now, hour),
            "past its absolute end"
        );
    }

    #[test]
    fn only_changes_that_name_no_person_leave_sessions_alone() {
        for kind in [
            "session",
            "passkey",
            "user",
            "group",
            "settings",
            "break_glass_account",
        ] {
            assert!(altered_by(kind), "{kind}");
        }
        assert!(
            altered_by("a_kind_added_later"),
            "unknown kinds err on the safe side"
        );
        for kind in ["process", "secret", "api_key"] {
            assert!(!altered_by(kind), "{kind}");
        }
    }
}
