//! Automatic responses: what a tenant told Flowgate to do when a signal fires. Each is one change
//! in the tenant's trail, made as `system` / `signals` under an [`AutomaticResponse`], which
//! permits only revoking keys, ending sessions and disabling people and service accounts.

use std::sync::Arc;

use entity::tenant::{api_key, oauth_client};
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Fired;
use super::config::ResponseKind;
use super::detect::Subject;
use crate::app::AppState;
use crate::audit::RequestMeta;
use crate::authz::actions::SessionRevoke;
use crate::directory::{service_accounts, users};
use crate::signin::{break_glass, sessions};
use crate::tenancy::TenancyError;
use crate::tenancy::work::{AutomaticResponse, Change, WorkError, WriteTx};

/// Applies `responses` to what `fired` is about; returns what each did, for the signal's record
/// and its alert.
pub async fn apply(
    state: &Arc<AppState>,
    fired: &Fired,
    responses: &[ResponseKind],
    meta: &RequestMeta,
) -> Vec<Value> {
    let mut done = Vec::new();
    for &response in responses {
        let name = serde_json::to_value(response).unwrap_or_default();
        let outcome = match applicable(response, &fired.signal.subject) {
            Some(target) => match respond(state, fired, response, target, meta).await {
                Ok(Some(changed)) => json!({"response": name, "applied": true, "changed": changed}),
                Ok(None) => {
                    json!({"response": name, "applied": false, "reason": "a break-glass account"})
                }
                Err(e) => {
                    tracing::error!(tenant = %fired.slug, response = ?response, error = %e, "an automatic response failed");
                    json!({"response": name, "applied": false, "reason": "failed"})
                }
            },
            None => {
                json!({"response": name, "applied": false, "reason": "not applicable to the subject"})
            }
        };
        done.push(outcome);
    }
    done
}

/// What a response acts on.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The principal the signal is about.
    Principal(Uuid),
    /// The whole tenant.
    Tenant,
}

/// What `response` acts on, if it acts on this kind of subject.
fn applicable(response: ResponseKind, subject: &Subject) -> Option<Target> {
    // A source address is anyone's: nothing is done to the tenant because of it.
    let Subject::Principal { kind, id } = subject else {
        return None;
    };
    let wanted = match response {
        ResponseKind::RevokeAllApiKeys => return Some(Target::Tenant),
        ResponseKind::RevokeApiKeys | ResponseKind::DisableServiceAccount => "service_account",
        ResponseKind::EndSessions | ResponseKind::DeactivateUser => "user",
    };
    (kind == wanted)
        .then(|| Uuid::try_parse(id).ok().map(Target::Principal))
        .flatten()
}

/// Applies one response to `target` in its own change; returns how many records it changed,
/// or `None` for a break-glass account, which no response touches.
async fn respond(
    state: &Arc<AppState>,
    fired: &Fired,
    response: ResponseKind,
    target: Target,
    meta: &RequestMeta,
) -> Result<Option<u64>, WorkError> {
    let proof = AutomaticResponse::new(fired);
    let tx = WriteTx::automatic(state, &fired.slug, meta, &proof).await?;
    let id = match target {
        Target::Principal(id) => id,
        Target::Tenant => {
            let changed = revoke_api_access(&tx, &proof, None).await?;
            let change = Change::new("tenant", fired.slug.as_str(), 200);
            return commit(tx, change, fired, response, changed).await;
        }
    };
    // The emergency account stays usable whatever fires: it is how a locked-out tenant gets in.
    if matches!(
        response,
        ResponseKind::EndSessions | ResponseKind::DeactivateUser
    ) && break_glass::is_break_glass(tx.conn(), id)
        .await
        .map_err(TenancyError::from)?
    {
        return Ok(None);
    }
    let (resource_type, changed) = match response {
        ResponseKind::RevokeApiKeys | ResponseKind::RevokeAllApiKeys => (
            "service_account",
            revoke_api_access(&tx, &proof, Some(id)).await?,
        ),
        ResponseKind::DisableServiceAccount => {
            let found = service_accounts::disable(&tx, &proof, id)
                .await
                .map_err(TenancyError::from)?;
            ("service_account", u64::from(found))
        }
        ResponseKind::EndSessions => {
            let ended = sessions::revoke_all::<SessionRevoke>(&tx, &proof, id)
                .await
                .map_err(TenancyError::from)?;
            ("user", ended)
        }
        ResponseKind::DeactivateUser => {
            let found = users::deactivate(&tx, &proof, id)
                .await
                .map_err(TenancyError::from)?;
            let ended = sessions::revoke_all::<SessionRevoke>(&tx, &proof, id)
                .await
                .map_err(TenancyError::from)?;
            ("user", u64::from(found) + ended)
        }
    };
    commit(
        tx,
        Change::new(resource_type, id, 200),
        fired,
        response,
        changed,
    )
    .await
}

/// Revokes the API keys and OAuth clients (the tokens they issue carry the same account) of the
/// service account `account`, or of the whole tenant; returns how many.
async fn revoke_api_access(
    tx: &WriteTx,
    proof: &AutomaticResponse,
    account: Option<Uuid>,
) -> Result<u64, WorkError> {
    let mut keys = api_key::Entity::find().filter(api_key::Column::RevokedAt.is_null());
    let mut clients =
        oauth_client::Entity::find().filter(oauth_client::Column::RevokedAt.is_null());
    if let Some(account) = account {
        keys = keys.filter(api_key::Column::ServiceAccountId.eq(account));
        clients = clients.filter(oauth_client::Column::ServiceAccountId.eq(account));
    }
    let keys = keys.all(tx.conn()).await.map_err(TenancyError::from)?;
    for key in &keys {
        crate::identity::api_key::revoke(tx, proof, key.id)
            .await
            .map_err(TenancyError::from)?;
    }
    let clients = clients.all(tx.conn()).await.map_err(TenancyError::from)?;
    for client in &clients {
        crate::identity::tokens::revoke_client(tx, proof, client.id)
            .await
            .map_err(TenancyError::from)?;
    }
    Ok((keys.len() + clients.len()) as u64)
}

/// Commits `change`, the record of `response` to `fired` having changed `changed` records, and
/// drops every replica's cached credentials.
async fn commit(
    tx: WriteTx,
    change: Change,
    fired: &Fired,
    response: ResponseKind,
    changed: u64,
) -> Result<Option<u64>, WorkError> {
    let change = change
        .detail(
            "response",
            serde_json::to_value(response).unwrap_or_default(),
        )
        .detail("signal", fired.signal.kind.name())
        .detail("changed", changed)
        .invalidating();
    tx.commit(change).await?;
    Ok(Some(changed))
}
