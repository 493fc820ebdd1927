//! The platform operator credential.
//!
//! Either configured (`FLOWGATE_OPERATOR_TOKEN`) or generated on the first start of a
//! deployment and printed once; only its SHA-256 is kept (in the control plane, so every replica
//! accepts the same token). A 256-bit random token needs no slow hash.

use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, EntityTrait as _};
use secrecy::{ExposeSecret as _, SecretString};

use crate::crypto::{constant_time_eq, random_token, sha256_hex};
use crate::tenancy::{Databases, TenancyError};
use entity::control::platform_setting;

const SETTING_KEY: &str = "operator_token_sha256";
pub const PREFIX: &str = "fgo_";

/// Checks presented operator tokens.
#[derive(Clone)]
pub struct OperatorToken {
    sha256: String,
}

impl OperatorToken {
    /// The configured token, or the deployment's generated one. Returns the token itself only
    /// when it was generated just now, so that the caller can print it once.
    #[expect(
        clippy::disallowed_methods,
        reason = "the operator token's hash is a platform setting"
    )]
    pub async fn resolve(
        configured: Option<&SecretString>,
        dbs: &Databases,
    ) -> Result<(Self, Option<SecretString>), TenancyError> {
        if let Some(token) = configured {
            let sha256 = sha256_hex(token.expose_secret().as_bytes());
            return Ok((OperatorToken { sha256 }, None));
        }
        if let Some(stored) = platform_setting::Entity::find_by_id(SETTING_KEY)
            .one(dbs.control())
            .await?
        {
            return Ok((
                OperatorToken {
                    sha256: stored.value,
                },
                None,
            ));
        }
        let token = SecretString::from(format!("{PREFIX}{}", random_token::<32>()?));
        let sha256 = sha256_hex(token.expose_secret().as_bytes());
        let inserted = platform_setting::ActiveModel {
            key: Set(SETTING_KEY.to_owned()),
            value: Set(sha256.clone()),
        }
        .insert(dbs.control())
        .await;
        match inserted {
            Ok(_) => Ok((OperatorToken { sha256 }, Some(token))),
            // Another replica generated one first: use theirs.
            Err(e) if crate::tenancy::is_unique_violation(&e) => {
                Box::pin(Self::resolve(None, dbs)).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The operator's authority, when `presented` is the operator token.
    pub fn verify(&self, presented: &str) -> Option<OperatorAuthority> {
        constant_time_eq(
            sha256_hex(presented.as_bytes()).as_bytes(),
            self.sha256.as_bytes(),
        )
        .then_some(OperatorAuthority { _proven: () })
    }
}

/// Proof that the platform operator is acting: what platform operations on tenants require.
#[derive(Debug)]
pub struct OperatorAuthority {
    _proven: (),
}

impl OperatorAuthority {
    /// The command line's authority: whoever runs it holds the deployment's configuration, and
    /// with it the database and key-store credentials, so is the operator already.
    pub fn console() -> Self {
        OperatorAuthority { _proven: () }
    }
}
