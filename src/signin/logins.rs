//! Logins in progress: what a sign-in must remember between sending the browser to its provider
//! and the provider sending it back.
//!
//! Invariant: a login record is consumed (deleted) by the first callback that names its `state`,
//! whatever that callback's fate, and expires after [`LOGIN_TTL`]; expired records are swept
//! whenever a login begins, so the table holds only logins of the last few minutes.

use chrono::Utc;
use entity::tenant::{identity_provider, login_state};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
};
use uuid::Uuid;

use super::oidc::{Begun, Pending};
use super::sessions::LOGIN_TTL;
use super::{Refusal, SignInError};
use crate::app::AppState;
use crate::crypto::sha256_hex;
use crate::tenancy::{Access, Slug};

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

/// Remembers the login `begun` at provider `idp`, bound to the pre-login cookie `binding`.
#[expect(
    clippy::disallowed_methods,
    reason = "a login in progress is bookkeeping before anyone is signed in; the sign-in that completes it is audited"
)]
pub async fn remember(
    state: &AppState,
    slug: &Slug,
    idp: Uuid,
    binding: &str,
    begun: &Begun,
) -> Result<(), SignInError> {
    let tx = state.dbs.begin(slug, Access::Write).await?;
    let now = Utc::now();
    login_state::Entity::delete_many()
        .filter(login_state::Column::ExpiresAt.lt(now))
        .exec(&tx)
        .await?;
    login_state::ActiveModel {
        id: Set(begun.state_hash.clone()),
        idp_id: Set(idp),
        binding: Set(sha256_hex(binding.as_bytes())),
        nonce: Set(begun.nonce.clone()),
        pkce_verifier: Set(begun.pkce_verifier.clone()),
        expires_at: Set(now + LOGIN_TTL),
    }
    .insert(&tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Consumes the login whose `state` the callback brought: it must exist, be unexpired, belong
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
