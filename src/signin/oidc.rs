//! OpenID Connect sign-in: the authorization code flow with PKCE, checked the way the OpenID RP
//! conformance profile checks a relying party.
//!
//! Invariants:
//! - A login is begun by [`OidcLogins::begin`], which stores its `state` (hashed), nonce and PKCE
//!   verifier bound to a pre-login cookie; [`OidcLogins::finish`] consumes that record before
//!   anything else, so a `state` (and with it a code) is accepted at most once, only from the
//!   browser that began it, and only for the provider it was begun at.
//! - An ID token is believed only after its signature verified against the provider's
//!   published keys with an asymmetric algorithm, and its `iss`, `aud`, `azp`, `exp`, `iat`,
//!   `nonce` and (when present) `at_hash` matched; the claims handed on are read from the very
//!   bytes whose signature was checked.
//! - `iss` is the configured issuer, exactly; at Azure AD's `organizations` and `common`
//!   endpoints, whose metadata names only the template `…/{tenantid}/v2.0`, it is the issuer of
//!   the directory the token's own `tid` names, and that directory must be one of the
//!   provider's `allowed_tenants`. A callback's RFC 9207 `iss`, when given, is that same issuer.
//! - A provider's keys are fetched again when a token names a key they lack, at most once a
//!   [`JWKS_REFRESH`] per provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse as _,
};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::logins::Pending;
use super::outbound::Outbound;
use super::providers::{MultiTenantIssuer, OidcSettings, Preset, is_directory_id};
use super::{Refusal, SignInError, Vouched};

/// Least time between two fetches of one provider's keys.
pub const JWKS_REFRESH: Duration = Duration::from_secs(60);
/// How long discovered provider metadata is used before it is fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Clock skew allowed on `exp` and `iat`.
const SKEW: chrono::Duration = chrono::Duration::seconds(60);
/// Oldest `iat` accepted: a token is used within moments of being issued.
const MAX_TOKEN_AGE: chrono::Duration = chrono::Duration::minutes(10);
/// Longest ID token read.
const MAX_ID_TOKEN: usize = 64 * 1024;

/// Signature algorithms an ID token may use: asymmetric ones only, so that neither `none` nor
/// an HMAC keyed with something public can pass.
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// A provider as this replica knows it: its discovered metadata and keys.
struct Known {
    /// The settings it was discovered with (a changed issuer, or one now read as another kind
    /// of endpoint, means a new discovery).
    issuer: String,
    multi_tenant: bool,
    metadata: CoreProviderMetadata,
    discovered_at: Instant,
    /// When an unknown `kid` last made this replica fetch the keys again (the fetch at
    /// discovery does not count: a rotation right after it must not lock people out).
    keys_refreshed_at: Option<Instant>,
}

/// What [`OidcLogins::begin`] made: where to send the browser, and what to keep.
pub struct Begun {
    pub authorize_url: String,
    /// SHA-256 of `state`, the login record's id.
    pub state_hash: String,
    pub pending: Pending,
}

/// What the provider sent back to the callback.
pub struct Callback {
    pub code: String,
    /// RFC 9207: the issuer that sent the browser back, when the provider says.
    pub iss: Option<String>,
}

/// The OIDC relying party of every tenant on this replica.
pub struct OidcLogins {
    outbound: Outbound,
    known: Mutex<HashMap<Uuid, Arc<Known>>>,
}

impl OidcLogins {
    pub fn new(outbound: Outbound) -> Self {
        OidcLogins {
            outbound,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Begins a login at provider `idp`: the authorization URL with PKCE (S256), `state` and
    /// `nonce`.
    pub async fn begin(
        &self,
        idp: Uuid,
        settings: &OidcSettings,
        redirect_uri: &str,
    ) -> Result<Begun, SignInError> {
        let known = self.known(idp, settings, false).await?;
        let client = CoreClient::from_provider_metadata(
            known.metadata.clone(),
            ClientId::new(settings.client_id.clone()),
            None,
        )
        .set_redirect_uri(redirect(redirect_uri)?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if let (Preset::Google, Some(domain)) = (settings.preset, &settings.hosted_domain) {
            request = request.add_extra_param("hd", domain.clone());
        }
        let (url, state, nonce) = request.url();
        Ok(Begun {
            authorize_url: url.to_string(),
            state_hash: crate::crypto::sha256_hex(state.secret().as_bytes()),
            pending: Pending {
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
            },
        })
    }

    /// Redeems the callback's code and verifies the ID token it brings.
    pub async fn finish(
        &self,
        idp: Uuid,
        settings: &OidcSettings,
        client_secret: String,
        redirect_uri: &str,
        pending: Pending,
        callback: Callback,
    ) -> Result<Vouched, SignInError> {
        let multi_tenant = settings.multi_tenant_issuer();
        // RFC 9207, before the code goes anywhere. At a multi-tenant endpoint only the token says
        // which directory's issuer this must be; that is checked once it is verified.
        let plausible = match (callback.iss.as_deref(), &multi_tenant) {
            (None, _) => true,
            (Some(iss), None) => iss == settings.issuer,
            (Some(iss), Some(issuers)) => issuers.names_a_directory(iss),
        };
        if !plausible {
            return Err(Refusal::WrongIssuer.into());
        }
        let known = self.known(idp, settings, false).await?;
        let client = CoreClient::from_provider_metadata(
            known.metadata.clone(),
            ClientId::new(settings.client_id.clone()),
            Some(ClientSecret::new(client_secret)),
        )
        .set_redirect_uri(redirect(redirect_uri)?);
        let http = self.outbound.for_oidc();
        let response = client
            .exchange_code(AuthorizationCode::new(callback.code))
            .map_err(|e| SignInError::Provider(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&http)
            .await
            .map_err(|e| SignInError::Refused(Refusal::CodeRejected(token_error(&e))))?;
        let id_token = response.id_token().ok_or(Refusal::NoIdToken)?.clone();
        let compact = id_token.to_string();
        if compact.len() > MAX_ID_TOKEN {
            return Err(Refusal::Malformed.into());
        }
        let nonce = Nonce::new(pending.nonce);
        let verified = match verify(&known, &id_token, &nonce, settings) {
            Err(Refusal::UnknownKey) => {
                // The provider may have rotated its keys: fetch them again (rate-limited).
                let refreshed = self.known(idp, settings, true).await?;
                verify(&refreshed, &id_token, &nonce, settings).map(|()| refreshed)
            }
            other => other.map(|()| known),
        }?;
        let claims = payload(&compact).ok_or(Refusal::Malformed)?;
        if let Some(issuers) = &multi_tenant {
            check_directory_issuer(issuers, &claims, callback.iss.as_deref())?;
        }
        check_at_hash(
            &claims,
            &id_token,
            &verified,
            settings,
            response.access_token(),
        )?;
        check_preset(settings, &claims)?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or(Refusal::Malformed)?
            .to_owned();
        let authenticated_at = ["auth_time", "iat"]
            .iter()
            .find_map(|claim| claims.get(*claim).and_then(Value::as_i64))
            .and_then(|t| DateTime::from_timestamp(t, 0))
            .unwrap_or_else(Utc::now);
        let methods = claims
            .get("amr")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(claims.get("acr"))
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        Ok(Vouched::new(subject, claims, authenticated_at, methods))
    }

    /// Forgets what is known about provider `idp` (its settings changed or it was deleted).
    pub fn forget(&self, idp: Uuid) {
        self.lock().remove(&idp);
    }

    /// The provider's metadata and keys: discovered when unknown, stale or of another issuer;
    /// with `refresh_keys`, its keys fetched again unless they were fetched less than
    /// [`JWKS_REFRESH`] ago.
    async fn known(
        &self,
        idp: Uuid,
        settings: &OidcSettings,
        refresh_keys: bool,
    ) -> Result<Arc<Known>, SignInError> {
        let cached = self.lock().get(&idp).cloned();
        let http = self.outbound.for_oidc();
        let multi_tenant = settings.multi_tenant_issuer();
        match cached {
            Some(known)
                if known.issuer == settings.issuer
                    && known.multi_tenant == multi_tenant.is_some()
                    && known.discovered_at.elapsed() < METADATA_TTL =>
            {
                let recently = known
                    .keys_refreshed_at
                    .is_some_and(|at| at.elapsed() < JWKS_REFRESH);
                if !refresh_keys || recently {
                    return Ok(known);
                }
                let keys = CoreJsonWebKeySet::fetch_async(known.metadata.jwks_uri(), &http)
                    .await
                    .map_err(|e| SignInError::Provider(format!("fetching its keys: {e}")))?;
                let refreshed = Arc::new(Known {
                    issuer: known.issuer.clone(),
                    multi_tenant: known.multi_tenant,
                    metadata: known.metadata.clone().set_jwks(keys),
                    discovered_at: known.discovered_at,
                    keys_refreshed_at: Some(Instant::now()),
                });
                self.lock().insert(idp, Arc::clone(&refreshed));
                Ok(refreshed)
            }
            _ => {
                let metadata = match &multi_tenant {
                    None => {
                        let issuer = IssuerUrl::new(settings.issuer.clone())
                            .map_err(|e| SignInError::Provider(format!("its issuer: {e}")))?;
                        CoreProviderMetadata::discover_async(issuer, &http)
                            .await
                            .map_err(|e| SignInError::Provider(format!("discovery: {e}")))?
                    }
                    Some(issuers) => self.discover_multi_tenant(settings, issuers).await?,
                };
                let known = Arc::new(Known {
                    issuer: settings.issuer.clone(),
                    multi_tenant: multi_tenant.is_some(),
                    metadata,
                    discovered_at: Instant::now(),
                    keys_refreshed_at: None,
                });
                self.lock().insert(idp, Arc::clone(&known));
                Ok(known)
            }
        }
    }

    /// Discovers an Azure AD multi-tenant endpoint, whose metadata names the issuer template
    /// rather than the issuer it is served under (which `discover_async` rightly refuses): the
    /// template of exactly this endpoint is required instead, and nothing else.
    async fn discover_multi_tenant(
        &self,
        settings: &OidcSettings,
        issuers: &MultiTenantIssuer,
    ) -> Result<CoreProviderMetadata, SignInError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            settings.issuer.trim_end_matches('/')
        );
        let metadata: CoreProviderMetadata = self
            .outbound
            .get_json(&url)
            .await
            .map_err(|e| SignInError::Provider(format!("discovery: {e}")))?;
        let template = issuers.template();
        if metadata.issuer().as_str() != template {
            return Err(SignInError::Provider(format!(
                "discovery: the metadata's issuer is not `{template}`"
            )));
        }
        let keys = CoreJsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.outbound.for_oidc())
            .await
            .map_err(|e| SignInError::Provider(format!("fetching its keys: {e}")))?;
        Ok(metadata.set_jwks(keys))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Known>>> {
        // Every mutation is one map call; a poisoned lock still holds a consistent map.
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Verifies `id_token` against the keys `known` holds.
fn verify(
    known: &Known,
    id_token: &CoreIdToken,
    nonce: &Nonce,
    settings: &OidcSettings,
) -> Result<(), Refusal> {
    let verifier = verifier(known, settings);
    match id_token.claims(&verifier, nonce) {
        Ok(claims) => {
            // OpenID Connect Core 3.1.3.7, steps 4 and 5, which the library leaves to us.
            let audiences = claims.audiences();
            match claims.authorized_party() {
                Some(azp) if azp.as_str() != settings.client_id => Err(Refusal::WrongAudience),
                None if audiences.len() > 1 => Err(Refusal::WrongAudience),
                _ => Ok(()),
            }
        }
        Err(e) => Err(Refusal::from_verification(&e)),
    }
}

/// The verifier of the provider's ID tokens: as a public client's, so that no HMAC key exists
/// (the algorithms allowed are asymmetric anyway). At a multi-tenant endpoint the discovered
/// issuer is a template no token carries, so `iss` is left to [`check_directory_issuer`].
fn verifier<'a>(known: &'a Known, settings: &OidcSettings) -> CoreIdTokenVerifier<'a> {
    CoreIdTokenVerifier::new_public_client(
        ClientId::new(settings.client_id.clone()),
        known.metadata.issuer().clone(),
        known.metadata.jwks().clone(),
    )
    .require_issuer_match(settings.multi_tenant_issuer().is_none())
    .set_allowed_algs(ALLOWED_ALGS)
    // `exp` may be up to SKEW in the past by our clock.
    .set_time_fn(|| Utc::now() - SKEW)
    .set_issue_time_verifier_fn(|iat| {
        let now = Utc::now();
        if iat > now + SKEW {
            Err(format!("issued in the future ({iat})"))
        } else if iat < now - MAX_TOKEN_AGE {
            Err(format!("issued too long ago ({iat})"))
        } else {
            Ok(())
        }
    })
}

/// The issuer check of a verified ID token from an Azure AD multi-tenant endpoint: `iss` must
/// be the issuer of the directory the token's `tid` names, and so must the callback's RFC 9207
/// `iss` when it came with one. Whether that directory is admitted is [`check_preset`]'s.
fn check_directory_issuer(
    issuers: &MultiTenantIssuer,
    claims: &Map<String, Value>,
    callback_iss: Option<&str>,
) -> Result<(), Refusal> {
    let tid = claims
        .get("tid")
        .and_then(Value::as_str)
        .filter(|tid| is_directory_id(tid))
        .ok_or(Refusal::WrongDirectory)?;
    let expected = issuers.for_directory(tid);
    let iss = claims.get("iss").and_then(Value::as_str);
    if iss != Some(expected.as_str()) || callback_iss.is_some_and(|iss| iss != expected) {
        return Err(Refusal::WrongIssuer);
    }
    Ok(())
}

/// OpenID Connect Core 3.1.3.8: when the ID token carries `at_hash`, it must be the hash of the
/// access token that came with it.
fn check_at_hash(
    claims: &Map<String, Value>,
    id_token: &CoreIdToken,
    known: &Known,
    settings: &OidcSettings,
    access_token: &AccessToken,
) -> Result<(), Refusal> {
    let Some(expected) = claims.get("at_hash") else {
        return Ok(());
    };
    let verifier = verifier(known, settings);
    let alg = id_token.signing_alg().map_err(|_| Refusal::Malformed)?;
    let key = id_token
        .signing_key(&verifier)
        .map_err(|_| Refusal::UnknownKey)?;
    let actual =
        AccessTokenHash::from_token(access_token, alg, key).map_err(|_| Refusal::Malformed)?;
    if expected.as_str() == Some(actual.as_str()) {
        Ok(())
    } else {
        Err(Refusal::AccessTokenHash)
    }
}

/// The provider-specific rules of the preset.
fn check_preset(settings: &OidcSettings, claims: &Map<String, Value>) -> Result<(), Refusal> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    match settings.preset {
        Preset::AzureAd => {
            let tid = text("tid").ok_or(Refusal::WrongDirectory)?;
            let admitted = match settings.azure_directory() {
                // One directory's issuer: its own people, if `allowed_tenants` (when given)
                // names it too.
                Some(own) => {
                    own == tid
                        && (settings.allowed_tenants.is_empty() || settings.admits_directory(tid))
                }
                // The organizations or common endpoint: the directories `allowed_tenants`
                // names, and no other (it is never empty there; empty would admit none).
                None => settings.admits_directory(tid),
            };
            if !admitted {
                return Err(Refusal::WrongDirectory);
            }
        }
        Preset::Google => {
            verified_email(claims)?;
            if let Some(domain) = &settings.hosted_domain
                && text("hd") != Some(domain.as_str())
            {
                return Err(Refusal::WrongDomain);
            }
        }
        // Okta states `email_verified` in every ID token that carries the `email` scope: a
        // token without it is not what Okta sends.
        Preset::Okta => verified_email(claims)?,
        // Other providers may leave it out (ADFS does); one that says false is believed.
        Preset::Generic => {
            if claims.get("email_verified") == Some(&Value::Bool(false)) {
                return Err(Refusal::EmailNotVerified);
            }
        }
    }
    Ok(())
}

/// Refuses a token that does not say its email address is verified.
fn verified_email(claims: &Map<String, Value>) -> Result<(), Refusal> {
    if claims.get("email_verified") == Some(&Value::Bool(true)) {
        Ok(())
    } else {
        Err(Refusal::EmailNotVerified)
    }
}

/// The payload of a compact JWS, as JSON.
fn payload(compact: &str) -> Option<Map<String, Value>> {
    let mut parts = compact.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn redirect(uri: &str) -> Result<RedirectUrl, SignInError> {
    RedirectUrl::new(uri.to_owned())
        .map_err(|e| SignInError::Unexpected(anyhow::anyhow!("redirect URI {uri}: {e}")))
}

/// What the token endpoint said, without echoing anything secret: at most 200 characters (the
/// provider's `error_description` is its own text, in any language; cut by characters, never
/// inside one).
fn token_error<E: std::error::Error>(e: &E) -> String {
    e.to_string().chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_s_error_text_is_cut_between_characters() {
        // A localized `error_description` whose 200th byte falls inside a character.
        let error = std::io::Error::other(format!("x{}", "é".repeat(300)));
        let text = token_error(&error);
        assert_eq!(text.chars().count(), 200);
        assert!(text.starts_with('x') && text.ends_with('é'));
    }
}
