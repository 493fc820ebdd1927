//! Access tokens: short-lived JWTs a tenant issues to its service accounts' OAuth clients (the
//! client-credentials grant) and to people for their scripts (a session exchanged for a
//! token, RFC 8693), and the bearer authenticator that accepts them.
//!
//! Invariants:
//! - A token is an EdDSA JWT (`typ` `at+jwt`, RFC 9068) signed by the tenant's own Ed25519 key,
//!   whose seed is a key-store secret; `iss` is the tenant's URL and `aud` its API, so a token of
//!   one tenant is nothing to another. It lives [`TOKEN_TTL`].
//! - A token authenticates only while its client is unrevoked and its account active: revoking
//!   the client or disabling the account stops its tokens at once, not at `exp` (the tenant's
//!   cached records and verified tokens are dropped with the change's commit). A person's token
//!   names the session it was exchanged for (`sid`), never outlives it, and authenticates only
//!   while that session does (the caller checks it at every request: [`Holder::Person`]).
//! - Client secrets are stored as keyed hashes under the tenant's pepper, like API keys, and
//!   compared in constant time; unknown client ids are not cached, so guessing fills nothing.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use entity::tenant::oauth_client;
use jsonwebtoken::{Algorithm, Header, Validation};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::accounts::AccountStatuses;
use super::api_key::ApiKeys;
use super::records::RecordIndex;
use super::token_keys::{self, KeyRing};
use super::{AccountCredential, IdentityError, InvalidReason, Principal};
use crate::authz::actions::{ApiKeyCreate, ApiKeyRevoke};
use crate::crypto::{constant_time_eq, random_token, sha256_hex};
use crate::keystore::{KeyStore, KeyStoreError};
use crate::tenancy::work::{Permit, WriteTx};
use crate::tenancy::{Access, Databases, Slug, TenantCache};

/// `client_id`s are `fgc_` and a 16-character lookup.
pub const CLIENT_PREFIX: &str = "fgc_";
const LOOKUP_LEN: usize = 16;
/// How long an access token lives.
pub const TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: u64 = 30;
/// Tenants whose signing keys, client records and verified tokens are kept in memory.
const CACHED_TENANTS: usize = 1_000;
/// Client records and verified tokens kept per tenant.
const CACHED_PER_TENANT: usize = 4_096;
/// Longest a cached client record is trusted without a reload (revocation drops it at once).
const CLIENT_RECORD_TTL: Duration = Duration::from_secs(60);
/// Longest a replica uses its copy of a tenant's key ring: a rotation reaches every replica
/// with its commit (PostgreSQL), and within this time where nothing tells it (several SQLite
/// processes).
const RING_TTL: Duration = Duration::from_secs(60);
/// Longest bearer token looked at.
const MAX_TOKEN: usize = 4096;

/// Whom a verified token was issued to.
#[derive(Clone)]
enum Issuee {
    /// A service account, through its OAuth client with this lookup.
    Client {
        service_account: Uuid,
        lookup: String,
    },
    /// A person, through their browser session, which had last asserted a passkey at
    /// `asserted_ms` (Unix milliseconds) when the token was issued.
    Session {
        user: Uuid,
        session: Uuid,
        asserted_ms: Option<i64>,
    },
}

/// What a verified token says, kept until it expires.
#[derive(Clone)]
struct Verified {
    issuee: Issuee,
    exp: i64,
    /// The key that signed it: a token whose key left the ring (rotated out after a leak) is
    /// refused even while remembered.
    kid: String,
}

/// Who a valid token speaks for.
pub enum Holder {
    /// A service account (its client checked live).
    Account(Principal),
    /// A person, by the token exchanged for their session `session`: the caller must find the
    /// session still live before believing it, and credit the token only with the passkey
    /// assertion the session had made when the token was issued (`asserted_at`).
    Person {
        user: Uuid,
        session: Uuid,
        asserted_at: Option<chrono::DateTime<Utc>>,
    },
}

/// The claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    /// The OAuth client, for a client-credentials token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    /// The session exchanged for this token, for a person's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    /// When that session had last passed a passkey assertion as the token was issued (Unix
    /// milliseconds): the only assertion the token is credited with for step-up.
    #[serde(
        default,
        rename = "flowgate_asserted_ms",
        skip_serializing_if = "Option::is_none"
    )]
    asserted_ms: Option<i64>,
}

/// What checking a client's credentials reads besides the client: the tenant's database, its
/// pepper (through the API keys) and its accounts' statuses.
#[derive(Clone, Copy)]
pub struct Checks<'a> {
    pub dbs: &'a Databases,
    pub api_keys: &'a ApiKeys,
    pub account_statuses: &'a AccountStatuses,
}

/// A freshly issued access token.
pub struct Issued {
    pub token: SecretString,
    pub expires_in: u64,
    pub jti: String,
    pub client: oauth_client::Model,
}

/// A client made for a service account; `secret` is shown once and never stored.
pub struct NewClient {
    pub record: oauth_client::Model,
    pub secret: SecretString,
}

/// Issues and checks access tokens.
pub struct AccessTokens {
    keystore: Arc<dyn KeyStore>,
    keys: TenantCache<Arc<KeyRing>>,
    clients: RecordIndex<oauth_client::Model>,
    /// Tokens already verified, by SHA-256: a script reuses its token for ten minutes, and
    /// each use after the first costs a hash instead of a signature check.
    verified: RecordIndex<Verified>,
}

/// The issuer of tenant `slug`'s tokens.
pub fn issuer(public_url: &str, slug: &Slug) -> String {
    format!("{}/t/{slug}", public_url.trim_end_matches('/'))
}

/// The audience of tenant `slug`'s tokens: its API.
pub fn audience(public_url: &str, slug: &Slug) -> String {
    format!("{}/api/v1", issuer(public_url, slug))
}

impl AccessTokens {
    pub fn new(keystore: Arc<dyn KeyStore>) -> Self {
        let tenants = NonZeroUsize::new(CACHED_TENANTS).unwrap_or(NonZeroUsize::MIN);
        AccessTokens {
            keystore,
            keys: TenantCache::with_ttl(tenants, RING_TTL),
            clients: RecordIndex::new(
                "oauth_clients",
                CACHED_TENANTS,
                CACHED_PER_TENANT,
                Some(CLIENT_RECORD_TTL),
            ),
            verified: RecordIndex::new("access_tokens", CACHED_TENANTS, CACHED_PER_TENANT, None),
        }
    }

    /// Makes an OAuth client for `service_account_id` inside the caller's transaction.
    pub async fn create_client(
        &self,
        api_keys: &ApiKeys,
        tx: &WriteTx,
        _: &impl Permit<ApiKeyCreate>,
        slug: &Slug,
        name: &str,
        service_account_id: Uuid,
    ) -> Result<NewClient, IdentityError> {
        let lookup = random_token::<12>()?;
        let secret = SecretString::from(random_token::<32>()?);
        let client_id = format!("{CLIENT_PREFIX}{lookup}");
        let record = oauth_client::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set(name.to_owned()),
            service_account_id: Set(service_account_id),
            secret_hash: Set(api_keys
                .hash(slug, &credential(&client_id, &secret))
                .await?),
            lookup: Set(lookup),
            created_at: Set(Utc::now()),
            revoked_at: Set(None),
        }
        .insert(tx.conn())
        .await?;
        Ok(NewClient { record, secret })
    }

    /// Issues a token to the client `client_id` that proved `secret` (client credentials),
    /// unrevoked, of an active service account.
    pub async fn issue(
        &self,
        checks: Checks<'_>,
        slug: &Slug,
        public_url: &str,
        client_id: &str,
        secret: &SecretString,
    ) -> Result<Issued, IdentityError> {
        let invalid = IdentityError::InvalidCredentials;
        let lookup = parse_client_id(client_id).ok_or(invalid(InvalidReason::Malformed))?;
        let client = self
            .client(checks.dbs, slug, lookup)
            .await?
            .ok_or(invalid(InvalidReason::UnknownKey))?;
        let presented = checks
            .api_keys
            .hash(slug, &credential(client_id, secret))
            .await?;
        if !constant_time_eq(presented.as_bytes(), client.secret_hash.as_bytes()) {
            return Err(invalid(InvalidReason::WrongSecret));
        }
        if client.revoked_at.is_some() {
            return Err(invalid(InvalidReason::Revoked));
        }
        checks
            .account_statuses
            .ensure_active(checks.dbs, slug, client.service_account_id)
            .await?;
        let subject = client.service_account_id.to_string();
        let (token, expires_in, jti) = self
            .sign(slug, public_url, subject, TOKEN_TTL, |claims| {
                claims.client_id = Some(client_id.to_owned());
            })
            .await?;
        Ok(Issued {
            token,
            expires_in,
            jti,
            client,
        })
    }

    /// Issues a token for `user`'s session `session` (token exchange), living [`TOKEN_TTL`] but
    /// not past `session_ends`, credited with the session's last passkey assertion
    /// (`asserted_at`) and no later one. Returns the token, its lifetime in seconds and its
    /// `jti`.
    pub async fn issue_for_session(
        &self,
        slug: &Slug,
        public_url: &str,
        (user, session): (Uuid, Uuid),
        session_ends: chrono::DateTime<Utc>,
        asserted_at: Option<chrono::DateTime<Utc>>,
    ) -> Result<(SecretString, u64, String), IdentityError> {
        let left = (session_ends - Utc::now()).to_std().unwrap_or_default();
        if left.is_zero() {
            return Err(IdentityError::InvalidCredentials(InvalidReason::Expired));
        }
        self.sign(
            slug,
            public_url,
            user.to_string(),
            TOKEN_TTL.min(left),
            |claims| {
                claims.sid = Some(session.to_string());
                claims.asserted_ms = asserted_at.map(|at| at.timestamp_millis());
            },
        )
        .await
    }

    /// Signs a token for `subject` living `ttl`, with what `complete` adds to its claims.
    async fn sign(
        &self,
        slug: &Slug,
        public_url: &str,
        subject: String,
        ttl: Duration,
        complete: impl FnOnce(&mut Claims),
    ) -> Result<(SecretString, u64, String), IdentityError> {
        let ring = self.ring(slug).await?;
        let key = ring
            .current()
            .ok_or_else(|| anyhow::anyhow!("the token key ring of {slug} is empty"))?;
        let now = Utc::now().timestamp();
        let jti = Uuid::new_v4().to_string();
        let mut claims = Claims {
            iss: issuer(public_url, slug),
            sub: subject,
            aud: audience(public_url, slug),
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(600),
            iat: now,
            nbf: now,
            jti: jti.clone(),
            client_id: None,
            sid: None,
            asserted_ms: None,
        };
        complete(&mut claims);
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| anyhow::anyhow!("signing an access token: {e}"))?;
        Ok((SecretString::from(token), ttl.as_secs(), jti))
    }

    /// Whom the access token `token` speaks for in tenant `slug`.
    pub async fn authenticate(
        &self,
        dbs: &Databases,
        slug: &Slug,
        public_url: &str,
        token: &str,
    ) -> Result<Holder, IdentityError> {
        let invalid = IdentityError::InvalidCredentials;
        if token.len() > MAX_TOKEN {
            return Err(invalid(InvalidReason::Malformed));
        }
        let fingerprint = sha256_hex(token.as_bytes());
        let remembered = self.verified.get(slug.as_str(), &fingerprint).await?;
        let facts = match remembered {
            Some(facts) if self.ring(slug).await?.find(&facts.kid).is_some() => facts,
            Some(_) => return Err(invalid(InvalidReason::UnknownKey)),
            None => {
                let facts = self.verify(slug, public_url, token).await?;
                self.verified
                    .put(slug.as_str(), fingerprint, facts.clone())
                    .await?;
                facts
            }
        };
        if facts.exp + i64::try_from(LEEWAY_SECONDS).unwrap_or(0) <= Utc::now().timestamp() {
            return Err(invalid(InvalidReason::Expired));
        }
        let (service_account, lookup) = match facts.issuee {
            Issuee::Session {
                user,
                session,
                asserted_ms,
            } => {
                return Ok(Holder::Person {
                    user,
                    session,
                    asserted_at: asserted_ms.and_then(chrono::DateTime::from_timestamp_millis),
                });
            }
            Issuee::Client {
                service_account,
                lookup,
            } => (service_account, lookup),
        };
        let client = self
            .client(dbs, slug, &lookup)
            .await?
            .filter(|c| c.service_account_id == service_account)
            .ok_or(invalid(InvalidReason::Revoked))?;
        if client.revoked_at.is_some() {
            return Err(invalid(InvalidReason::Revoked));
        }
        Ok(Holder::Account(Principal::ServiceAccount {
            id: service_account,
            credential: AccountCredential::AccessToken { client: client.id },
        }))
    }

    /// Checks a token's signature and claims.
    async fn verify(
        &self,
        slug: &Slug,
        public_url: &str,
        token: &str,
    ) -> Result<Verified, IdentityError> {
        let invalid = IdentityError::InvalidCredentials;
        let ring = self.ring(slug).await?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer(public_url, slug)]);
        validation.set_audience(&[audience(public_url, slug)]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid(InvalidReason::Malformed))?;
        // RFC 9068 §4: an access token says so, and nothing else this key signs is one.
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
        {
            return Err(invalid(InvalidReason::Malformed));
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| ring.find(kid))
            .ok_or(invalid(InvalidReason::UnknownKey))?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    invalid(InvalidReason::Expired)
                }
                _ => invalid(InvalidReason::WrongSecret),
            },
        )?;
        let claims = data.claims;
        // Flowgate issues nothing that lives longer: a later `exp` was not signed by it as it
        // is (a forgery with a leaked key would otherwise outlive the key's rotation).
        let longest = i64::try_from(TOKEN_TTL.as_secs() + LEEWAY_SECONDS).unwrap_or(i64::MAX);
        if claims.exp.saturating_sub(claims.iat) > longest
            || claims.exp.saturating_sub(Utc::now().timestamp()) > longest
        {
            return Err(invalid(InvalidReason::Malformed));
        }
        let subject =
            Uuid::parse_str(&claims.sub).map_err(|_| invalid(InvalidReason::Malformed))?;
        let issuee = match (&claims.client_id, &claims.sid) {
            (Some(client_id), None) => Issuee::Client {
                service_account: subject,
                lookup: parse_client_id(client_id)
                    .ok_or(invalid(InvalidReason::Malformed))?
                    .to_owned(),
            },
            (None, Some(sid)) => Issuee::Session {
                user: subject,
                session: Uuid::parse_str(sid).map_err(|_| invalid(InvalidReason::Malformed))?,
                asserted_ms: claims.asserted_ms,
            },
            _ => return Err(invalid(InvalidReason::Malformed)),
        };
        Ok(Verified {
            issuee,
            exp: claims.exp,
            kid: key.kid.clone(),
        })
    }

    /// The tenant's public keys, as a JWK set.
    pub async fn jwks(&self, slug: &Slug) -> Result<serde_json::Value, KeyStoreError> {
        Ok(self.ring(slug).await?.jwks())
    }

    /// Rotates the tenant's signing key (see [`token_keys::rotate`]); the caller's change must
    /// be invalidating, so that every replica reloads the ring, and undone
    /// ([`AccessTokens::undo_rotation`]) when it does not commit.
    pub async fn rotate(&self, slug: &Slug) -> Result<token_keys::Rotation, KeyStoreError> {
        let rotation = token_keys::rotate(self.keystore.as_ref(), slug.as_str()).await?;
        self.keys.invalidate(slug.as_str());
        Ok(rotation)
    }

    /// Puts back the ring a rotation whose change did not commit replaced.
    pub async fn undo_rotation(
        &self,
        slug: &Slug,
        rotation: token_keys::Rotation,
    ) -> Result<(), KeyStoreError> {
        let undone = token_keys::undo(self.keystore.as_ref(), slug.as_str(), rotation).await;
        self.keys.invalidate(slug.as_str());
        undone
    }

    /// Forgets everything cached about `slug` (a revocation, a deletion).
    pub fn forget_tenant(&self, slug: &str) {
        self.keys.invalidate(slug);
        self.clients.forget(slug);
        self.verified.forget(slug);
    }

    /// Forgets every cached client record and verified token.
    pub fn forget_all(&self) {
        self.clients.clear();
        self.verified.clear();
    }

    /// The tenant's key ring, from the cache or the key store.
    pub async fn ring(&self, slug: &Slug) -> Result<Arc<KeyRing>, KeyStoreError> {
        self.keys
            .get_or_try_load(slug.as_str(), || async {
                token_keys::load(self.keystore.as_ref(), slug.as_str())
                    .await
                    .map(Arc::new)
            })
            .await
    }

    /// The record of the client with `lookup`, from the cache or the database.
    #[expect(
        clippy::disallowed_methods,
        reason = "authentication reads client records before any principal exists"
    )]
    async fn client(
        &self,
        dbs: &Databases,
        slug: &Slug,
        lookup: &str,
    ) -> Result<Option<oauth_client::Model>, IdentityError> {
        self.clients
            .get_or_load(slug.as_str(), lookup, || async {
                let tx = dbs.begin(slug, Access::Read).await?;
                let record = oauth_client::Entity::find()
                    .filter(oauth_client::Column::Lookup.eq(lookup))
                    .one(&tx)
                    .await?;
                tx.commit().await?;
                Ok(record)
            })
            .await
    }
}

/// Revokes client `id` (revoking a revoked client changes nothing); `None` when the tenant has
/// no such client. Its tokens stop working once the tenant's caches are dropped, which the
/// change's commit does.
pub async fn revoke_client(
    tx: &WriteTx,
    _: &impl Permit<ApiKeyRevoke>,
    id: Uuid,
) -> Result<Option<oauth_client::Model>, sea_orm::DbErr> {
    let Some(client) = oauth_client::Entity::find_by_id(id).one(tx.conn()).await? else {
        return Ok(None);
    };
    if client.revoked_at.is_some() {
        return Ok(Some(client));
    }
    let mut client: oauth_client::ActiveModel = client.into();
    client.revoked_at = Set(Some(Utc::now()));
    client.update(tx.conn()).await.map(Some)
}

/// The tenant key of a 32-byte Ed25519 seed.
/// What the keyed hash of a client secret covers: the client id and the secret.
fn credential(client_id: &str, secret: &SecretString) -> SecretString {
    SecretString::from(format!("{client_id}:{}", secret.expose_secret()))
}

/// The lookup part of a well-formed client id, or `None`.
pub fn parse_client_id(client_id: &str) -> Option<&str> {
    let lookup = client_id.strip_prefix(CLIENT_PREFIX)?;
    (lookup.len() == LOOKUP_LEN
        && lookup
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(lookup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::LocalKeyStore;

    /// A token claiming a longer life than Flowgate gives any is refused, though its signature
    /// holds: made with a leaked key, it would outlive the key's rotation.
    #[tokio::test]
    async fn a_token_living_longer_than_any_issued_is_refused() {
        let dir = std::env::temp_dir().join(format!("flowgate-tokens-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokens = AccessTokens::new(Arc::new(LocalKeyStore::open(&dir, None).unwrap()));
        let (slug, url) = (Slug::parse("acme").unwrap(), "https://flowgate.example");
        let subject = Uuid::new_v4().to_string();
        let sid = |claims: &mut Claims| claims.sid = Some(Uuid::new_v4().to_string());
        let (issued, _, _) = tokens
            .sign(&slug, url, subject.clone(), TOKEN_TTL, sid)
            .await
            .unwrap();
        assert!(
            tokens
                .verify(&slug, url, issued.expose_secret())
                .await
                .is_ok()
        );
        let year = Duration::from_secs(365 * 24 * 3600);
        let (forged, _, _) = tokens.sign(&slug, url, subject, year, sid).await.unwrap();
        assert!(matches!(
            tokens.verify(&slug, url, forged.expose_secret()).await,
            Err(IdentityError::InvalidCredentials(InvalidReason::Malformed))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
