//! An outside JWT issuer whose tokens act as one of the tenant's service accounts.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "trusted_issuers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub name: String,
    /// The `iss` of its tokens.
    #[sea_orm(unique)]
    pub issuer: String,
    pub jwks_url: String,
    /// The audiences a token may name (a JSON array of strings).
    pub audiences: Json,
    /// Claims a token must carry, with their values (a JSON object of strings).
    pub required_claims: Json,
    /// The service account its tokens act as.
    pub service_account_id: Uuid,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
