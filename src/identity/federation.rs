//! Trusted issuers (workload identity federation): a tenant trusts an outside JWT issuer — a CI
//! system, a cloud's workload identity, another company's authorization server — to vouch for
//! one of its service accounts, so that workload calls the API with the issuer's own token
//! instead of a stored secret.
//!
//! Invariants:
//! - A token is believed only when its signature verifies against the issuer's published keys
//!   (fetched from its `jwks_url` through the guarded outbound client; fetched again when a
//!   token names an unknown `kid`, at most once a [`JWKS_REFRESH`]) with an asymmetric
//!   algorithm, its `iss` is exactly the trusted issuer's, its `aud` names one of the trust's
//!   audiences, it has not expired (`exp` is required; [`LEEWAY`] of skew) and does not live
//!   longer than [`MAX_REMAINING`], and it carries every required claim (at least one naming the
//!   workload, beyond `iss`, `aud` and the times) with its
//!   value.
//! - The token then acts as the trust's service account, with exactly its permissions; making a
//!   trust follows the no-escalation rule of API keys. Deleting the trust stops its tokens at
//!   once (the tenant's cached trusts are dropped with the change's commit), and so does
//!   disabling the account (checked after every authenticator: `identity::accounts`).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entity::tenant::trusted_issuer;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lru::LruCache;
use sea_orm::EntityTrait as _;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{AccountCredential, IdentityError, InvalidReason, Principal};
use crate::signin::outbound::Outbound;
use crate::tenancy::{Access, Databases, Slug, TenantCache, Turns};

/// Least time between an issuer's keys fetched (for any reason) and a fetch on account of an
/// unknown `kid`.
pub const JWKS_REFRESH: Duration = Duration::from_secs(60);
/// How long fetched keys are used before they are fetched again anyway.
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY: u64 = 60;
/// Longest an outside token may still live: a workload's token is short-lived, and one that is
/// not is refused rather than trusted for days.
const MAX_REMAINING: i64 = 24 * 3600;
/// After a failed fetch of an issuer's keys, how long its tokens are refused without trying
/// again (so that tokens naming a dead issuer cannot make Flowgate call out for each).
const FAILURE_BACKOFF: Duration = Duration::from_secs(30);
/// Longest a replica uses its copy of a tenant's trusts: a deletion reaches every replica with
/// its commit (PostgreSQL), and within this time where nothing tells it.
const TRUSTS_TTL: Duration = Duration::from_secs(60);
/// Issuers whose keys are kept in memory.
const CACHED_ISSUERS: usize = 10_000;
/// Tenants whose trusts are kept in memory.
const CACHED_TENANTS: usize = 1_000;
/// Algorithms an outside token may be signed with: asymmetric ones only.
const ALLOWED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// An issuer's keys as last fetched: none when no fetch succeeded within [`JWKS_TTL`].
struct Keys {
    jwks_url: String,
    set: Option<JwkSet>,
    /// When `set` was fetched (or the failed fetch was tried).
    fetched_at: Instant,
    /// When this replica last asked the issuer for its keys, whatever the answer.
    asked_at: Instant,
    /// That last ask failed (the keys in `set`, if any, are older).
    failed: bool,
}

/// The trusted issuers of every tenant on this replica, and their keys.
///
/// Invariant: an issuer's keys are fetched by one request at a time, at most once a
/// [`JWKS_REFRESH`] for an unknown `kid` (anyone can send a token naming any), and a failed
/// refresh keeps the keys that worked.
pub struct Federation {
    outbound: Outbound,
    trusts: TenantCache<Arc<Vec<trusted_issuer::Model>>>,
    keys: Mutex<LruCache<Uuid, Arc<Keys>>>,
    fetching: Turns,
}

/// The `iss` of a compact JWT, read without verifying anything: only to route the token to
/// its verifier.
pub fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

impl Federation {
    pub fn new(outbound: Outbound) -> Self {
        Federation {
            outbound,
            trusts: TenantCache::with_ttl(
                NonZeroUsize::new(CACHED_TENANTS).unwrap_or(NonZeroUsize::MIN),
                TRUSTS_TTL,
            ),
            keys: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHED_ISSUERS).unwrap_or(NonZeroUsize::MIN),
            )),
            fetching: Turns::default(),
        }
    }

    /// The service account that `token`, from outside issuer `issuer`, speaks for in tenant
    /// `slug`; `MissingCredentials` when the tenant trusts no such issuer.
    pub async fn authenticate(
        &self,
        dbs: &Databases,
        slug: &Slug,
        issuer: &str,
        token: &str,
    ) -> Result<Principal, IdentityError> {
        let invalid = IdentityError::InvalidCredentials;
        let trusts = self.trusts(dbs, slug).await?;
        let trust = trusts
            .iter()
            .find(|t| t.issuer == issuer)
            .ok_or(invalid(InvalidReason::UnknownKey))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid(InvalidReason::Malformed))?;
        if !ALLOWED.contains(&header.alg) {
            return Err(invalid(InvalidReason::WrongSecret));
        }
        let kid = header.kid.ok_or(invalid(InvalidReason::UnknownKey))?;
        let key = match self.key(trust, &kid, false).await? {
            Some(key) => key,
            // The issuer may have rotated its keys: fetch them again (rate-limited).
            None => self
                .key(trust, &kid, true)
                .await?
                .ok_or(invalid(InvalidReason::UnknownKey))?,
        };
        let audiences: Vec<String> =
            serde_json::from_value(trust.audiences.clone()).unwrap_or_default();
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_issuer(&[trust.issuer.as_str()]);
        validation.set_audience(&audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    invalid(InvalidReason::Expired)
                }
                _ => invalid(InvalidReason::WrongSecret),
            })?
            .claims;
        let too_long = claims
            .get("exp")
            .and_then(Value::as_i64)
            .is_none_or(|exp| exp > chrono::Utc::now().timestamp() + MAX_REMAINING);
        if too_long || !carries(&claims, &trust.required_claims) {
            return Err(invalid(InvalidReason::WrongSecret));
        }
        Ok(Principal::ServiceAccount {
            id: trust.service_account_id,
            credential: AccountCredential::Federated { trust: trust.id },
        })
    }

    /// Forgets what is cached about `slug`'s trusts (one changed).
    pub fn forget_tenant(&self, slug: &str) {
        self.trusts.invalidate(slug);
    }

    /// Forgets every tenant's cached trusts.
    pub fn forget_all(&self) {
        self.trusts.clear();
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "authentication reads the tenant's trusts before any principal exists"
    )]
    async fn trusts(
        &self,
        dbs: &Databases,
        slug: &Slug,
    ) -> Result<Arc<Vec<trusted_issuer::Model>>, IdentityError> {
        self.trusts
            .get_or_try_load(slug.as_str(), || async {
                let tx = dbs.begin(slug, Access::Read).await?;
                let rows = trusted_issuer::Entity::find().all(&tx).await?;
                tx.commit().await?;
                Ok::<_, IdentityError>(Arc::new(rows))
            })
            .await
    }

    /// The key `kid` of `trust`'s issuer: from the keys fetched before, or (with `refresh`, at
    /// most once a [`JWKS_REFRESH`], or when they are stale or were fetched from another URL)
    /// from keys fetched now.
    async fn key(
        &self,
        trust: &trusted_issuer::Model,
        kid: &str,
        refresh: bool,
    ) -> Result<Option<DecodingKey>, IdentityError> {
        let keys = match self.cached(trust, refresh)? {
            Some(keys) => keys,
            None => {
                let _turn = self.fetching.take(&trust.id.to_string()).await;
                // The fetch this one waited for, if any, answers it.
                match self.cached(trust, refresh)? {
                    Some(keys) => keys,
                    None => self.fetch(trust).await?,
                }
            }
        };
        Ok(keys
            .set
            .as_ref()
            .and_then(|set| set.find(kid))
            .and_then(|jwk| DecodingKey::from_jwk(jwk).ok()))
    }

    /// The keys of `trust`'s issuer to look in without fetching, or `None` when they are to be
    /// fetched: none yet, stale, from another URL, or (for `refresh`) not asked for lately.
    fn cached(
        &self,
        trust: &trusted_issuer::Model,
        refresh: bool,
    ) -> Result<Option<Arc<Keys>>, IdentityError> {
        let cached = self.lock().get(&trust.id).cloned();
        let Some(keys) =
            cached.filter(|k| k.jwks_url == trust.jwks_url && k.fetched_at.elapsed() < JWKS_TTL)
        else {
            return Ok(None);
        };
        let unavailable = || {
            Err(IdentityError::Unavailable(
                "an issuer's keys could not be fetched a moment ago".into(),
            ))
        };
        match keys.set {
            None if keys.asked_at.elapsed() < FAILURE_BACKOFF => unavailable(),
            None => Ok(None),
            Some(_) if !refresh => Ok(Some(keys)),
            // A key the issuer may have added since is unknown for want of an answer, not
            // known to be absent.
            Some(_) if keys.failed && keys.asked_at.elapsed() < JWKS_REFRESH => unavailable(),
            Some(_) if keys.asked_at.elapsed() < JWKS_REFRESH => Ok(Some(keys)),
            Some(_) => Ok(None),
        }
    }

    /// Fetches the keys of `trust`'s issuer. When that fails (503 to the request that asked),
    /// the keys fetched before (if still fresh) stay in use for the keys they hold, and a key
    /// they lack is unavailable until the issuer is asked again after [`JWKS_REFRESH`]; without
    /// any, the issuer's tokens are refused for [`FAILURE_BACKOFF`].
    async fn fetch(&self, trust: &trusted_issuer::Model) -> Result<Arc<Keys>, IdentityError> {
        let fetched = self.outbound.get_json::<Value>(&trust.jwks_url).await;
        let now = Instant::now();
        let (keys, failure) = match fetched {
            Ok(set) => {
                let keys = Keys {
                    jwks_url: trust.jwks_url.clone(),
                    set: Some(readable_keys(&set)),
                    fetched_at: now,
                    asked_at: now,
                    failed: false,
                };
                (keys, None)
            }
            Err(e) => {
                let kept = self.lock().get(&trust.id).cloned().filter(|k| {
                    k.jwks_url == trust.jwks_url
                        && k.set.is_some()
                        && k.fetched_at.elapsed() < JWKS_TTL
                });
                let keys = Keys {
                    jwks_url: trust.jwks_url.clone(),
                    set: kept.as_ref().and_then(|k| k.set.clone()),
                    fetched_at: kept.as_ref().map_or(now, |k| k.fetched_at),
                    asked_at: now,
                    failed: true,
                };
                (keys, Some(e))
            }
        };
        let kept = keys.set.is_some();
        let keys = Arc::new(keys);
        self.lock().put(trust.id, Arc::clone(&keys));
        match failure {
            Some(e) => {
                if kept {
                    tracing::warn!(error = %e, trust = %trust.id, "an issuer's keys could not be fetched again; the ones fetched before stay in use");
                }
                Err(IdentityError::Unavailable(format!("an issuer's keys: {e}")))
            }
            None => Ok(keys),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Uuid, Arc<Keys>>> {
        // Every mutation is one map call; a poisoned lock still holds a consistent map.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The keys of a JWK set this verifier can read; the others (kinds it does not know) are
/// skipped rather than spoiling the set.
fn readable_keys(set: &Value) -> JwkSet {
    let keys = set
        .get("keys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(|key| serde_json::from_value(key.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    JwkSet { keys }
}

/// Whether `claims` carry every claim `required` names with its value (for a list claim, among
/// its items).
fn carries(claims: &Map<String, Value>, required: &Value) -> bool {
    let Some(required) = required.as_object() else {
        return false;
    };
    required
        .iter()
        .all(|(name, wanted)| match claims.get(name) {
            Some(Value::Array(items)) => items.contains(wanted),
            Some(value) => value == wanted,
            None => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn required_claims_must_all_be_carried() {
        let claims = json!({"repository": "acme/deploy", "groups": ["ci", "prod"], "n": 1});
        let claims = claims.as_object().unwrap();
        assert!(carries(claims, &json!({})));
        assert!(carries(
            claims,
            &json!({"repository": "acme/deploy", "groups": "prod"})
        ));
        assert!(!carries(claims, &json!({"repository": "acme/other"})));
        assert!(!carries(claims, &json!({"missing": "x"})));
        assert!(!carries(claims, &json!({"n": "1"})), "types must match");
        assert!(!carries(claims, &json!(["not", "an", "object"])));
    }

    #[test]
    fn the_issuer_is_read_only_to_route_the_token() {
        let token = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2NpLmV4YW1wbGUifQ.";
        assert_eq!(
            unverified_issuer(token).as_deref(),
            Some("https://ci.example")
        );
        assert_eq!(unverified_issuer("not-a-jwt"), None);
    }
}
