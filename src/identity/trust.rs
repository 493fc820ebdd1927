//! Making and removing trusted issuers (see [`super::federation`]).

use chrono::Utc;
use entity::tenant::trusted_issuer;
use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, DbErr, EntityTrait as _};
use serde_json::Value;
use uuid::Uuid;

use crate::authz::actions::{ApiKeyCreate, ApiKeyRevoke};
use crate::tenancy::work::{Permit, WriteTx};

/// What a trust is made of, checked by the caller.
pub struct NewTrust {
    pub name: String,
    pub issuer: String,
    pub jwks_url: String,
    pub audiences: Vec<String>,
    pub required_claims: serde_json::Map<String, Value>,
    pub service_account_id: Uuid,
}

pub async fn create(
    tx: &WriteTx,
    _: &impl Permit<ApiKeyCreate>,
    trust: NewTrust,
) -> Result<trusted_issuer::Model, DbErr> {
    trusted_issuer::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(trust.name),
        issuer: Set(trust.issuer),
        jwks_url: Set(trust.jwks_url),
        audiences: Set(Value::from(trust.audiences)),
        required_claims: Set(Value::Object(trust.required_claims)),
        service_account_id: Set(trust.service_account_id),
        created_at: Set(Utc::now()),
    }
    .insert(tx.conn())
    .await
}

/// Removes trust `id`; `false` when the tenant has no such trust. Its tokens stop working once
/// the tenant's cached trusts are dropped, which the (invalidating) change's commit does.
pub async fn delete(tx: &WriteTx, _: &impl Permit<ApiKeyRevoke>, id: Uuid) -> Result<bool, DbErr> {
    let deleted = trusted_issuer::Entity::delete_by_id(id)
        .exec(tx.conn())
        .await?;
    Ok(deleted.rows_affected == 1)
}
