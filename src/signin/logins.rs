//! Logins in progress: what a sign-in must remember between sending the browser to its provider
//! and the provider sending it back.
//!
//! Invariants:
//! - A login record is consumed (deleted) by the first callback that names its `state`,
//!   whatever that callback's fate, and expires after [`LOGIN_TTL`]; expired records are swept
//!   whenever a login begins, so the table holds only logins of the last few minutes.
//! - A SAML assertion's `ID` is spent at most once per provider ([`spend_assertion`]).

use chrono::Utc;
use entity::tenant::{identity_provider, login_state, saml_assertion};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
};
use uuid::Uuid;

use super::sessions::LOGIN_TTL;
use super::{Refusal, SignInError};
use crate::app::AppState;
use crate::crypto::sha256_hex;
use crate::tenancy::{Access, Slug};

/// What a login remembers until its provider sends the browser back.
pub struct Pending {
    /// OIDC: the ID token's `nonce`. SAML: the `ID` of the AuthnRequest, which the assertion
    /// must answer (`InResponseTo`).
    pub nonce: String,
    /// OIDC: the PKCE code verifier. SAML: empty.
    pub pkce_verifier: String,
}

/// The provider `id` of tenant `slug`, read before anyone is signed in.
#[expect(
    clippy::disallowed_methods,
    reason = "sign-in reads its provider before any principal exists"
)]
pub async fn provider(
    state: &AppState,
    slug: &Slug,
    id: Uuid,
) -> Result<Option<identity_provider::Model>, SignInError> {
    let tx = state.dbs.begin(slug, Access::Read).await?;
    let row = identity_provider::Entity::find_by_id(id).one(&tx).await?;
    tx.commit().await?;
    Ok(row)
}

/// Every provider of tenant `slug`, for the login page's chooser.
#[expect(
    clippy::disallowed_methods,
    reason = "the login page lists providers before anyone is signed in"
)]
pub async fn providers(
    state: &AppState,
    slug: &Slug,
) -> Result<Vec<identity_provider::Model>, SignInError> {
    let tx = state.dbs.begin(slug, Access::Read).await?;
    let rows = identity_provider::Entity::find().all(&tx).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Remembers the login whose `state` (or SAML `RelayState`) hashes to `state_hash`, begun at
/// provider `idp` and bound to the pre-login cookie `binding`.
#[expect(
    clippy::disallowed_methods,
    reason = "a login in progress is bookkeeping before anyone is signed in; the sign-in that completes it is audited"
)]
pub async fn remember(
    state: &AppState,
    slug: &Slug,
    idp: Uuid,
    binding: &str,
    state_hash: &str,
    pending: &Pending,
) -> Result<(), SignInError> {
    let tx = state.dbs.begin(slug, Access::Write).await?;
    let now = Utc::now();
    login_state::Entity::delete_many()
        .filter(login_state::Column::ExpiresAt.lt(now))
        .exec(&tx)
        .await?;
    login_state::ActiveModel {
        id: Set(state_hash.to_owned()),
        idp_id: Set(idp),
        binding: Set(sha256_hex(binding.as_bytes())),
        nonce: Set(pending.nonce.clone()),
        pkce_verifier: Set(pending.pkce_verifier.clone()),
        expires_at: Set(now + LOGIN_TTL),
    }
    .insert(&tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Consumes the login whose `state` (or `RelayState`) the callback brought: it must exist, be unexpired, belong
/// to provider `idp` and to the browser holding the pre-login cookie `binding`.
#[expect(
    clippy::disallowed_methods,
    reason = "consuming a login in progress happens before anyone is signed in"
)]
pub async fn consume(
    state: &AppState,
    slug: &Slug,
    idp: Uuid,
    callback_state: &str,
    binding: Option<&str>,
) -> Result<Pending, SignInError> {
    if callback_state.is_empty() || callback_state.len() > 256 {
        return Err(Refusal::UnknownState.into());
    }
    let id = sha256_hex(callback_state.as_bytes());
    let tx = state.dbs.begin(slug, Access::Write).await?;
    let Some(record) = login_state::Entity::find_by_id(id.as_str())
        .one(&tx)
        .await?
    else {
        return Err(Refusal::UnknownState.into());
    };
    let deleted = login_state::Entity::delete_by_id(id.as_str())
        .exec(&tx)
        .await?;
    tx.commit().await?;
    if deleted.rows_affected != 1 || record.expires_at <= Utc::now() || record.idp_id != idp {
        // Consumed by a concurrent callback, expired, or begun at another provider.
        return Err(Refusal::UnknownState.into());
    }
    let bound = binding.is_some_and(|b| {
        crate::crypto::constant_time_eq(
            sha256_hex(b.as_bytes()).as_bytes(),
            record.binding.as_bytes(),
        )
    });
    if !bound {
        return Err(Refusal::ForeignBrowser.into());
    }
    Ok(Pending {
        nonce: record.nonce,
        pkce_verifier: record.pkce_verifier,
    })
}

/// Spends SAML assertion `assertion_id` of provider `idp`: refused as a replay when it was spent
/// before. Its ledger entry lives until `valid_until`, after which the assertion would be
/// refused as expired anyway; expired entries are swept here.
#[expect(
    clippy::disallowed_methods,
    reason = "the replay ledger is written before anyone is signed in; the sign-in is audited"
)]
pub async fn spend_assertion(
    state: &AppState,
    slug: &Slug,
    idp: Uuid,
    assertion_id: &str,
    valid_until: chrono::DateTime<Utc>,
) -> Result<(), SignInError> {
    let id = sha256_hex(format!("{idp}\n{assertion_id}").as_bytes());
    let tx = state.dbs.begin(slug, Access::Write).await?;
    saml_assertion::Entity::delete_many()
        .filter(saml_assertion::Column::ExpiresAt.lt(Utc::now()))
        .exec(&tx)
        .await?;
    let spent = saml_assertion::ActiveModel {
        id: Set(id),
        idp_id: Set(idp),
        expires_at: Set(valid_until),
    }
    .insert(&tx)
    .await;
    match spent {
        Err(e) if crate::tenancy::is_unique_violation(&e) => Err(Refusal::Replayed.into()),
        Err(e) => Err(e.into()),
        Ok(_) => {
            tx.commit().await?;
            Ok(())
        }
    }
}
