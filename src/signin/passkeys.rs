//! WebAuthn passkeys, the second factor: registering one and asserting with it, through
//! `webauthn-rs`, for a person signed in with a session.
//!
//! Invariants:
//! - The relying party is `FLOWGATE_PUBLIC_URL`: its host is the RP ID and its origin the only
//!   origin accepted. User verification is required in both ceremonies (`webauthn-rs`'s passkey
//!   ceremonies ask for it and refuse an assertion without it).
//! - A ceremony's state (its challenge) is kept in the tenant database, bound to the session
//!   that began it, lives [`CEREMONY_TTL`], and is taken — read and deleted in the finishing
//!   transaction — so it is finished at most once. Beginning a ceremony replaces the session's
//!   unfinished one of the same kind.
//! - An assertion is checked only against the session user's own credentials that are not
//!   flagged; a signature counter that went backwards flags the credential (a possible clone),
//!   and a flagged credential is refused from then on.
//! - A credential id belongs to one user (the column is unique): registering another user's
//!   credential is refused.

use chrono::{Duration, Utc};
use entity::tenant::{passkey, session, user, webauthn_ceremony};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DbErr,
    EntityTrait as _, QueryFilter as _, QueryOrder as _,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, Webauthn,
    WebauthnBuilder, WebauthnError,
};

use super::sessions::Level;
use crate::tenancy::work::WriteTx;

/// How long a begun ceremony can be finished.
pub const CEREMONY_TTL: Duration = Duration::minutes(5);

/// The longest name a person gives a passkey.
pub const MAX_NAME: usize = 64;

/// Why a ceremony was refused: recorded in the audit trail; the caller is told only that the
/// passkey was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasskeyRefusal {
    #[error("FLOWGATE_PUBLIC_URL names no domain: WebAuthn is unavailable")]
    Unavailable,
    #[error("no ceremony of this session is waiting, or it expired")]
    NoCeremony,
    #[error("the user has no usable passkey")]
    NoPasskey,
    #[error("the credential is registered already")]
    AlreadyRegistered,
    #[error("the credential is flagged as a possible clone")]
    Flagged,
    #[error("the signature counter went backwards: the credential is flagged")]
    CounterRegression,
    #[error("the ceremony did not verify: {0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error(transparent)]
    Refused(#[from] PasskeyRefusal),
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error("webauthn: {0}")]
    Unexpected(String),
}

/// The relying party of this deployment: none when `FLOWGATE_PUBLIC_URL` names an IP address,
/// which WebAuthn does not accept as an RP ID (browsers refuse it); passkeys are then refused.
pub struct RelyingParty {
    webauthn: Option<Webauthn>,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty").finish_non_exhaustive()
    }
}

impl RelyingParty {
    /// The relying party of `public_url` (its domain is the RP ID, its origin the origin).
    pub fn new(public_url: &str) -> anyhow::Result<Self> {
        let origin = Url::parse(public_url)?;
        let Some(rp_id) = origin.domain().map(str::to_owned) else {
            tracing::warn!(
                public_url,
                "passkeys are unavailable: WebAuthn needs FLOWGATE_PUBLIC_URL with a domain name"
            );
            return Ok(RelyingParty { webauthn: None });
        };
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)?
            .rp_name("Flowgate")
            .build()?;
        Ok(RelyingParty {
            webauthn: Some(webauthn),
        })
    }

    fn webauthn(&self) -> Result<&Webauthn, PasskeyError> {
        self.webauthn
            .as_ref()
            .ok_or(PasskeyError::Refused(PasskeyRefusal::Unavailable))
    }

    /// Begins registering a passkey for `user` in `session`.
    pub async fn begin_registration(
        &self,
        tx: &WriteTx,
        session: Uuid,
        user: &user::Model,
    ) -> Result<CreationChallengeResponse, PasskeyError> {
        let existing = passkeys_of(tx.conn(), user.id).await?;
        let exclude = existing
            .iter()
            .filter_map(|p| parse::<Passkey>(&p.credential).ok())
            .map(|p| p.cred_id().clone())
            .collect();
        let (options, state) = self
            .webauthn()?
            .start_passkey_registration(user.id, &user.email, &user.display_name, Some(exclude))
            .map_err(unexpected)?;
        store_ceremony(tx, session, Kind::Register, &state).await?;
        Ok(options)
    }

    /// Finishes the registration `session` began: the new passkey, named `name`.
    pub async fn finish_registration(
        &self,
        tx: &WriteTx,
        session: Uuid,
        user_id: Uuid,
        credential: &RegisterPublicKeyCredential,
        name: &str,
    ) -> Result<passkey::Model, PasskeyError> {
        let state: PasskeyRegistration = take_ceremony(tx, session, Kind::Register).await?;
        let passkey = self
            .webauthn()?
            .finish_passkey_registration(credential, &state)
            .map_err(refused)?;
        let credential_id = encode_id(passkey.cred_id());
        if passkey::Entity::find()
            .filter(passkey::Column::CredentialId.eq(credential_id.as_str()))
            .one(tx.conn())
            .await?
            .is_some()
        {
            return Err(PasskeyRefusal::AlreadyRegistered.into());
        }
        let row = passkey::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user_id),
            name: Set(name.to_owned()),
            credential_id: Set(credential_id),
            credential: Set(serde_json::to_value(&passkey).map_err(unexpected)?),
            flagged_at: Set(None),
            created_at: Set(Utc::now()),
            last_used_at: Set(None),
        };
        Ok(row.insert(tx.conn()).await?)
    }

    /// Begins an assertion with one of `user_id`'s passkeys in `session`.
    pub async fn begin_authentication(
        &self,
        tx: &WriteTx,
        session: Uuid,
        user_id: Uuid,
    ) -> Result<RequestChallengeResponse, PasskeyError> {
        let usable: Vec<Passkey> = passkeys_of(tx.conn(), user_id)
            .await?
            .iter()
            .filter(|p| p.flagged_at.is_none())
            .filter_map(|p| parse(&p.credential).ok())
            .collect();
        if usable.is_empty() {
            return Err(PasskeyRefusal::NoPasskey.into());
        }
        let (options, state) = self
            .webauthn()?
            .start_passkey_authentication(&usable)
            .map_err(unexpected)?;
        store_ceremony(tx, session, Kind::Authenticate, &state).await?;
        Ok(options)
    }

    /// Finishes the assertion `session` began; on success the session counts as signed in with
    /// a second factor, from now. A refusal may have flagged a credential: the caller commits
    /// `tx` either way, with the refusal on record.
    pub async fn finish_authentication(
        &self,
        tx: &WriteTx,
        session: Uuid,
        user_id: Uuid,
        assertion: &PublicKeyCredential,
    ) -> Result<passkey::Model, PasskeyError> {
        let state: PasskeyAuthentication = take_ceremony(tx, session, Kind::Authenticate).await?;
        let credential_id = encode_id(assertion.raw_id.as_ref());
        let row = passkey::Entity::find()
            .filter(passkey::Column::CredentialId.eq(credential_id.as_str()))
            .filter(passkey::Column::UserId.eq(user_id))
            .one(tx.conn())
            .await?
            .ok_or_else(|| PasskeyRefusal::Invalid("not a credential of this user".into()))?;
        if row.flagged_at.is_some() {
            return Err(PasskeyRefusal::Flagged.into());
        }
        let now = Utc::now();
        let result = match self
            .webauthn()?
            .finish_passkey_authentication(assertion, &state)
        {
            Ok(result) => result,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                passkey::Entity::update_many()
                    .col_expr(passkey::Column::FlaggedAt, Expr::value(now))
                    .filter(passkey::Column::Id.eq(row.id))
                    .exec(tx.conn())
                    .await?;
                return Err(PasskeyRefusal::CounterRegression.into());
            }
            Err(e) => return Err(refused(e)),
        };
        let mut passkey: Passkey = parse(&row.credential)?;
        passkey.update_credential(&result);
        let mut updated: passkey::ActiveModel = row.into();
        updated.credential = Set(serde_json::to_value(&passkey).map_err(unexpected)?);
        updated.last_used_at = Set(Some(now));
        let updated = updated.update(tx.conn()).await?;
        session::Entity::update_many()
            .col_expr(session::Column::Level, Expr::value(Level::SsoMfa.as_str()))
            .col_expr(session::Column::StrongAuthAt, Expr::value(now))
            .filter(session::Column::Id.eq(session))
            .exec(tx.conn())
            .await?;
        Ok(updated)
    }
}

/// The passkeys of `user_id`, oldest first.
pub async fn passkeys_of(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
) -> Result<Vec<passkey::Model>, DbErr> {
    passkey::Entity::find()
        .filter(passkey::Column::UserId.eq(user_id))
        .order_by_asc(passkey::Column::CreatedAt)
        .all(conn)
        .await
}

#[derive(Clone, Copy)]
enum Kind {
    Register,
    Authenticate,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Authenticate => "authenticate",
        }
    }
}

async fn store_ceremony(
    tx: &WriteTx,
    session: Uuid,
    kind: Kind,
    state: &impl Serialize,
) -> Result<(), PasskeyError> {
    webauthn_ceremony::Entity::delete_many()
        .filter(webauthn_ceremony::Column::SessionId.eq(session))
        .filter(webauthn_ceremony::Column::Kind.eq(kind.as_str()))
        .exec(tx.conn())
        .await?;
    webauthn_ceremony::ActiveModel {
        id: Set(Uuid::now_v7()),
        session_id: Set(session),
        kind: Set(kind.as_str().to_owned()),
        state: Set(serde_json::to_value(state).map_err(unexpected)?),
        expires_at: Set(Utc::now() + CEREMONY_TTL),
    }
    .insert(tx.conn())
    .await?;
    Ok(())
}

/// The session's waiting ceremony of `kind`, deleted in `tx`: whoever deletes it finishes it.
async fn take_ceremony<S: DeserializeOwned>(
    tx: &WriteTx,
    session: Uuid,
    kind: Kind,
) -> Result<S, PasskeyError> {
    let ceremony = webauthn_ceremony::Entity::find()
        .filter(webauthn_ceremony::Column::SessionId.eq(session))
        .filter(webauthn_ceremony::Column::Kind.eq(kind.as_str()))
        .one(tx.conn())
        .await?
        .ok_or(PasskeyRefusal::NoCeremony)?;
    let taken = webauthn_ceremony::Entity::delete_by_id(ceremony.id)
        .exec(tx.conn())
        .await?
        .rows_affected;
    if taken != 1 || ceremony.expires_at <= Utc::now() {
        return Err(PasskeyRefusal::NoCeremony.into());
    }
    parse(&ceremony.state)
}

fn parse<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, PasskeyError> {
    T::deserialize(value).map_err(unexpected)
}

/// base64url (no padding) of a credential id, as stored and as browsers send `rawId`.
fn encode_id(id: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

fn refused(e: WebauthnError) -> PasskeyError {
    PasskeyRefusal::Invalid(e.to_string()).into()
}

fn unexpected(e: impl std::fmt::Display) -> PasskeyError {
    PasskeyError::Unexpected(e.to_string())
}
