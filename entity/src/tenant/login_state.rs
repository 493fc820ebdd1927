//! A sign-in in progress at an identity provider: used once, bound to the browser that began it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_states")]
pub struct Model {
    /// SHA-256 (hex) of the `state` parameter (SAML: of the `RelayState`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub idp_id: Uuid,
    /// SHA-256 (hex) of the pre-login cookie.
    pub binding: String,
    /// OIDC: the ID token's nonce. SAML: the AuthnRequest's `ID`.
    pub nonce: String,
    /// OIDC: the PKCE verifier. SAML: empty.
    pub pkce_verifier: String,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
