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
//! - Where the tenant lists allowed authenticator models (`passkey_aaguids`), a passkey of
//!   another model, or of no recorded model, is neither registered nor offered nor accepted.

use chrono::{Duration, Utc};
use entity::tenant::{passkey, session, user, webauthn_ceremony};
use sea_orm::sea_query::{Expr, OnConflict};
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
use super::settings::TenantSettings;
use crate::authz::actions::PasskeyReset;
use crate::tenancy::work::{Permit, SignIn, WriteTx};

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
    #[error("the user has a passkey: another is added only after asserting with one")]
    AssertFirst,
    #[error("no active break-glass account with a usable passkey has this email")]
    NotBreakGlass,
    #[error("the enrollment token is unknown, used or expired")]
    BadEnrollment,
    #[error("the credential is registered already")]
    AlreadyRegistered,
    #[error("the credential is flagged as a possible clone")]
    Flagged,
    #[error("the authenticator model {0} is not one the tenant allows")]
    ModelNotAllowed(String),
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
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
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

    /// Whether passkeys work on this deployment.
    pub fn available(&self) -> bool {
        self.webauthn.is_some()
    }

    fn webauthn(&self) -> Result<&Webauthn, PasskeyError> {
        self.webauthn
            .as_ref()
            .ok_or(PasskeyError::Refused(PasskeyRefusal::Unavailable))
    }

    /// Begins registering a passkey for `user` in `session`, which has `asserted` with a
    /// passkey or not: a person who has one adds another only after asserting with it, so a
    /// stolen provider password cannot add the thief's authenticator.
    pub async fn begin_registration(
        &self,
        tx: &WriteTx,
        session: Uuid,
        user: &user::Model,
        asserted: bool,
    ) -> Result<CreationChallengeResponse, PasskeyError> {
        let existing = passkeys_of(tx.conn(), user.id).await?;
        if !existing.is_empty() && !asserted {
            return Err(PasskeyRefusal::AssertFirst.into());
        }
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
        asserted: bool,
        credential: &RegisterPublicKeyCredential,
        name: &str,
    ) -> Result<passkey::Model, PasskeyError> {
        let state: PasskeyRegistration = take_ceremony(tx, session, Kind::Register).await?;
        // Checked again: another tab may have enrolled one since this ceremony began.
        if !asserted && !passkeys_of(tx.conn(), user_id).await?.is_empty() {
            return Err(PasskeyRefusal::AssertFirst.into());
        }
        let passkey = self
            .webauthn()?
            .finish_passkey_registration(credential, &state)
            .map_err(refused)?;
        let model = reported_model(&credential.response.attestation_object)
            .ok_or_else(|| PasskeyRefusal::Invalid("no attested credential data".into()))?;
        if !allowed_models(tx.conn(), user_id).await?.allow(Some(model)) {
            return Err(PasskeyRefusal::ModelNotAllowed(model.to_string()).into());
        }
        let row = passkey::Model {
            id: Uuid::now_v7(),
            user_id,
            name: name.to_owned(),
            credential_id: encode_id(passkey.cred_id()),
            credential: serde_json::to_value(&passkey).map_err(unexpected)?,
            aaguid: Some(model),
            flagged_at: None,
            created_at: Utc::now(),
            last_used_at: None,
        };
        // The unique credential id decides between concurrent registrations of one
        // authenticator, without aborting the transaction that records the refusal.
        let inserted = passkey::Entity::insert(passkey::ActiveModel::from(row.clone()).reset_all())
            .on_conflict(
                OnConflict::column(passkey::Column::CredentialId)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(tx.conn())
            .await?;
        if inserted != 1 {
            return Err(PasskeyRefusal::AlreadyRegistered.into());
        }
        Ok(row)
    }

    /// Begins an assertion with one of `user_id`'s passkeys in `session`.
    pub async fn begin_authentication(
        &self,
        tx: &WriteTx,
        session: Uuid,
        user_id: Uuid,
    ) -> Result<RequestChallengeResponse, PasskeyError> {
        let (options, state) = self.challenge(tx, user_id).await?;
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
        let used = self.verify(tx, user_id, &state, assertion).await?;
        let now = Utc::now();
        session::Entity::update_many()
            .col_expr(session::Column::Level, Expr::value(Level::SsoMfa.as_str()))
            .col_expr(session::Column::StrongAuthAt, Expr::value(now))
            .col_expr(session::Column::PasskeyAssertedAt, Expr::value(Some(now)))
            .filter(session::Column::Id.eq(session))
            .exec(tx.conn())
            .await?;
        Ok(used)
    }

    /// The request options of an assertion with one of `user_id`'s usable (unflagged, of an
    /// allowed model) passkeys, and the ceremony state the server keeps until the answer.
    pub async fn challenge(
        &self,
        tx: &WriteTx,
        user_id: Uuid,
    ) -> Result<(RequestChallengeResponse, PasskeyAuthentication), PasskeyError> {
        let models = allowed_models(tx.conn(), user_id).await?;
        let unflagged: Vec<passkey::Model> = passkeys_of(tx.conn(), user_id)
            .await?
            .into_iter()
            .filter(|p| p.flagged_at.is_none())
            .collect();
        let usable: Vec<Passkey> = unflagged
            .iter()
            .filter(|p| models.allow(p.aaguid))
            .filter_map(|p| parse(&p.credential).ok())
            .collect();
        if usable.is_empty() {
            return Err(match unflagged.first() {
                Some(disallowed) => PasskeyRefusal::ModelNotAllowed(model_name(disallowed)),
                None => PasskeyRefusal::NoPasskey,
            }
            .into());
        }
        self.webauthn()?
            .start_passkey_authentication(&usable)
            .map_err(unexpected)
    }

    /// Checks `assertion` against the ceremony `state` and `user_id`'s own passkeys, and
    /// records the use (its counter). A counter that went backwards flags the passkey: the
    /// caller commits `tx` even on that refusal.
    pub async fn verify(
        &self,
        tx: &WriteTx,
        user_id: Uuid,
        state: &PasskeyAuthentication,
        assertion: &PublicKeyCredential,
    ) -> Result<passkey::Model, PasskeyError> {
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
        // The tenant may have narrowed its models since the ceremony began.
        if !allowed_models(tx.conn(), user_id).await?.allow(row.aaguid) {
            return Err(PasskeyRefusal::ModelNotAllowed(model_name(&row)).into());
        }
        let now = Utc::now();
        let result = match self
            .webauthn()?
            .finish_passkey_authentication(assertion, state)
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
        Ok(updated.update(tx.conn()).await?)
    }
}

/// Makes concurrent changes to `user_id`'s passkeys take turns: on PostgreSQL the update locks
/// the person's row until `tx` ends (SQLite runs one writer at a time anyway).
pub async fn lock_person(tx: &WriteTx, user_id: Uuid) -> Result<(), DbErr> {
    user::Entity::update_many()
        .col_expr(user::Column::UpdatedAt, Expr::col(user::Column::UpdatedAt))
        .filter(user::Column::Id.eq(user_id))
        .exec(tx.conn())
        .await?;
    Ok(())
}

/// Removes passkey `id` of `user_id`; `false` when the user has no such passkey.
pub async fn remove(tx: &WriteTx, _: &SignIn, user_id: Uuid, id: Uuid) -> Result<bool, DbErr> {
    let removed = passkey::Entity::delete_many()
        .filter(passkey::Column::Id.eq(id))
        .filter(passkey::Column::UserId.eq(user_id))
        .exec(tx.conn())
        .await?;
    Ok(removed.rows_affected == 1)
}

/// Removes every passkey of `user_id`; returns how many there were. (The caller ends the
/// person's sessions in the same transaction.)
pub async fn reset(
    tx: &WriteTx,
    _: &impl Permit<PasskeyReset>,
    user_id: Uuid,
) -> Result<u64, DbErr> {
    let removed = passkey::Entity::delete_many()
        .filter(passkey::Column::UserId.eq(user_id))
        .exec(tx.conn())
        .await?;
    Ok(removed.rows_affected)
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

/// The authenticator model (AAGUID) a registration's attestation object reports, read from
/// its authenticator data once `webauthn-rs` has verified the registration (so the CBOR was
/// well-formed and of bounded depth): `rpIdHash` (32 bytes), flags (1), signature counter (4),
/// then, with the attested-credential-data flag, the AAGUID (16).
fn reported_model(attestation_object: &[u8]) -> Option<Uuid> {
    use serde_cbor_2::Value;
    const ATTESTED_CREDENTIAL_DATA: u8 = 0x40;
    let Value::Map(object) = serde_cbor_2::from_slice(attestation_object).ok()? else {
        return None;
    };
    let auth_data = object.iter().find_map(|(key, value)| match (key, value) {
        (Value::Text(key), Value::Bytes(data)) if key == "authData" => Some(data),
        _ => None,
    })?;
    if auth_data.get(32)? & ATTESTED_CREDENTIAL_DATA == 0 {
        return None;
    }
    Uuid::from_slice(auth_data.get(37..53)?).ok()
}

/// The authenticator models a person's passkeys may be of.
enum Models {
    Any,
    Listed(Vec<Uuid>),
}

impl Models {
    /// Whether a passkey of model `aaguid` (none recorded: unknown) may be registered or used.
    fn allow(&self, aaguid: Option<Uuid>) -> bool {
        match self {
            Models::Any => true,
            Models::Listed(models) => aaguid.is_some_and(|model| models.contains(&model)),
        }
    }
}

/// The models `user_id`'s passkeys may be of: the tenant's list (none: any). A break-glass
/// account is exempt: it is the operator's way in whatever the tenant sets, and a tenant's
/// list must not disable it.
async fn allowed_models(conn: &impl ConnectionTrait, user_id: Uuid) -> Result<Models, DbErr> {
    if super::break_glass::is_break_glass(conn, user_id).await? {
        return Ok(Models::Any);
    }
    let listed = TenantSettings::load(conn).await?.passkey_aaguids;
    Ok(if listed.is_empty() {
        Models::Any
    } else {
        Models::Listed(listed)
    })
}

/// A passkey's recorded model, for a refusal's reason.
fn model_name(row: &passkey::Model) -> String {
    row.aaguid
        .map_or_else(|| "unrecorded".to_owned(), |model| model.to_string())
}

pub(crate) fn parse<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, PasskeyError> {
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

pub(crate) fn unexpected(e: impl std::fmt::Display) -> PasskeyError {
    PasskeyError::Unexpected(e.to_string())
}
