//! Automatic responses: what a tenant told Flowgate to do when a signal fires. Each is one change
//! in the tenant's trail, made as `system` / `signals` under an [`AutomaticResponse`], which
//! permits only revoking keys, ending sessions and deactivating people.

use std::sync::Arc;

use entity::tenant::api_key;
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
use crate::signin::sessions;
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
                Ok(changed) => json!({"response": name, "applied": true, "changed": changed}),
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

/// Applies one response to `id` in its own change; returns how many records it changed.
async fn respond(
    state: &Arc<AppState>,
    fired: &Fired,
    response: ResponseKind,
    id: Uuid,
    meta: &RequestMeta,
) -> Result<u64, WorkError> {
    let proof = AutomaticResponse::new(fired);
    let tx = WriteTx::automatic(state, &fired.slug, meta, &proof).await?;
    let (resource_type, changed) = match response {
        ResponseKind::RevokeApiKeys => {
            let keys = api_key::Entity::find()
                .filter(api_key::Column::ServiceAccountId.eq(id))
                .filter(api_key::Column::RevokedAt.is_null())
                .all(tx.conn())
                .await
                .map_err(crate::tenancy::TenancyError::from)?;
            for key in &keys {
                crate::identity::api_key::revoke(&tx, &proof, key.id)
                    .await
                    .map_err(crate::tenancy::TenancyError::from)?;
            }
            ("service_account", keys.len() as u64)
        }
        ResponseKind::EndSessions => {
            let ended = sessions::revoke_all::<SessionRevoke>(&tx, &proof, id)
                .await
                .map_err(crate::tenancy::TenancyError::from)?;
            ("user", ended)
        }
        ResponseKind::DeactivateUser => {
            let found = users::deactivate(&tx, &proof, id)
                .await
                .map_err(crate::tenancy::TenancyError::from)?;
            let ended = sessions::revoke_all::<SessionRevoke>(&tx, &proof, id)
                .await
                .map_err(crate::tenancy::TenancyError::from)?;
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
    Ok(changed)
}
