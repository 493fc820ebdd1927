//! Automatic responses: what a tenant told Flowgate to do when a signal fires. Each is one change
//! in the tenant's trail, made as `system` / `signals` under an [`AutomaticResponse`], which
//! permits only revoking keys, ending sessions and deactivating people.

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
use crate::directory::users;
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
            Some(id) => match respond(state, fired, response, id, meta).await {
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

/// The id of the subject `response` acts on, if it acts on this kind of subject.
fn applicable(response: ResponseKind, subject: &Subject) -> Option<Uuid> {
    let Subject::Principal { kind, id } = subject else {
        return None;
    };
    let wanted = match response {
        ResponseKind::RevokeApiKeys => "service_account",
        ResponseKind::EndSessions | ResponseKind::DeactivateUser => "user",
    };
    (kind == wanted).then(|| Uuid::try_parse(id).ok()).flatten()
}

/// Applies one response to `id` in its own change; returns how many records it changed, or
/// `None` for a break-glass account, which no response touches.
async fn respond(
    state: &Arc<AppState>,
    fired: &Fired,
    response: ResponseKind,
    id: Uuid,
    meta: &RequestMeta,
) -> Result<Option<u64>, WorkError> {
    let proof = AutomaticResponse::new(fired);
    let tx = WriteTx::automatic(state, &fired.slug, meta, &proof).await?;
    // The emergency account stays usable whatever fires: it is how a locked-out tenant gets in.
    if response != ResponseKind::RevokeApiKeys
        && break_glass::is_break_glass(tx.conn(), id)
            .await
            .map_err(TenancyError::from)?
    {
        return Ok(None);
    }
    let (resource_type, changed) = match response {
        ResponseKind::RevokeApiKeys => {
            // Its API keys and its OAuth clients: the tokens they issue carry the same account.
            let keys = api_key::Entity::find()
                .filter(api_key::Column::ServiceAccountId.eq(id))
                .filter(api_key::Column::RevokedAt.is_null())
                .all(tx.conn())
                .await
                .map_err(TenancyError::from)?;
            for key in &keys {
                crate::identity::api_key::revoke(&tx, &proof, key.id)
                    .await
                    .map_err(TenancyError::from)?;
            }
            let clients = oauth_client::Entity::find()
                .filter(oauth_client::Column::ServiceAccountId.eq(id))
                .filter(oauth_client::Column::RevokedAt.is_null())
                .all(tx.conn())
                .await
                .map_err(TenancyError::from)?;
            for client in &clients {
                crate::identity::tokens::revoke_client(&tx, &proof, client.id)
                    .await
                    .map_err(TenancyError::from)?;
            }
            ("service_account", (keys.len() + clients.len()) as u64)
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
    let change = Change::new(resource_type, id, 200)
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
