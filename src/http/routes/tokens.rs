//! `/t/{tenant}/auth/token` (the OAuth 2.0 token endpoint) and `/t/{tenant}/.well-known/…` (the
//! tenant's signing keys and authorization-server metadata). Answers of the token endpoint are
//! RFC 6749's, not problem documents: OAuth clients parse `error`.

use std::collections::BTreeMap;

use actix_web::dev::Payload;
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::LocalBoxFuture;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::Ref;

use super::signin::SignInTenant;
use crate::audit::{AuditEvent, Outcome, Trail};
use crate::http::contract::{Body, Contract, Documented};
use crate::http::error::ApiError;
use crate::http::extract::read_form;
use crate::http::pipeline::authn::{records_unspent, spend_failure, started_elsewhere};
use crate::http::pipeline::context::request_meta;
use crate::identity::tokens::{Checks, audience, issuer};
use crate::identity::{IdentityError, Principal, UserCredential};
use crate::signin::sessions;

/// Largest token request read.
const MAX_FORM: usize = 8 * 1024;
/// RFC 8693's grant type.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The type of a subject token that is a browser session (the session cookie's value).
const SESSION_TOKEN_TYPE: &str = "urn:flowgate:params:oauth:token-type:session";
/// RFC 8693's type of the token issued.
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A token request: `application/x-www-form-urlencoded`. With `client_credentials` (RFC 6749
/// §4.4) the client authenticates with HTTP Basic (`client_secret_basic`) or with `client_id`
/// and `client_secret` in the form (`client_secret_post`), not both. With token exchange
/// (RFC 8693, `urn:ietf:params:oauth:grant-type:token-exchange`) a person's browser session is
/// the subject.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"grant_type": "client_credentials", "client_id": "fgc_AbCdEfGhIjKlMnOp", "client_secret": "…"}))]
pub struct TokenRequest {
    /// `client_credentials` or `urn:ietf:params:oauth:grant-type:token-exchange`.
    pub grant_type: String,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Token exchange: the session cookie's value (without it, the request's own session
    /// cookie is the subject).
    pub subject_token: Option<String>,
    /// Token exchange: `urn:flowgate:params:oauth:token-type:session`.
    pub subject_token_type: Option<String>,
    /// Token exchange: `urn:ietf:params:oauth:token-type:access_token`, if given.
    pub requested_token_type: Option<String>,
    /// Accepted and ignored: a token carries its account's permissions.
    pub scope: Option<String>,
}

/// The token request's fields, read whole before any check; a malformed form is the handler's
/// `invalid_request`, answered in OAuth's shape.
pub struct TokenForm(Result<BTreeMap<String, String>, &'static str>);

impl FromRequest for TokenForm {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let form = read_form(req, payload, MAX_FORM);
        Box::pin(async move { Ok(TokenForm(form.await)) })
    }
}

impl Documented for TokenForm {
    fn document(contract: &mut Contract) {
        contract.schema::<TokenRequest>();
        let example = serde_json::json!({"grant_type": "client_credentials", "client_id": "fgc_AbCdEfGhIjKlMnOp", "client_secret": "s"});
        contract.body = Some(Body {
            media_type: "application/x-www-form-urlencoded",
            schema: Ref::from_schema_name("TokenRequest").into(),
            example: Some(example),
            accepts: |value| {
                value
                    .get("grant_type")
                    .is_some_and(serde_json::Value::is_string)
            },
        });
    }
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// An EdDSA-signed JWT (`typ` `at+jwt`); send it as `Authorization: Bearer …`.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// Token exchange: `urn:ietf:params:oauth:token-type:access_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

/// An error of the token endpoint (RFC 6749 §5.2).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `unsupported_grant_type` or
    /// `temporarily_unavailable`.
    pub error: &'static str,
    pub error_description: String,
}

fn oauth_error(status: StatusCode, error: &'static str, description: &str) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    if status == StatusCode::UNAUTHORIZED {
        response.insert_header((header::WWW_AUTHENTICATE, r#"Basic realm="flowgate""#));
    }
    response.json(OAuthError {
        error,
        error_description: description.to_owned(),
    })
}

/// The client's credentials: HTTP Basic or the form's, never both.
fn client_credentials(
    req: &HttpRequest,
    fields: &BTreeMap<String, String>,
) -> Result<Option<(String, SecretString)>, &'static str> {
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, encoded)| encoded.trim());
    let posted = (fields.get("client_id"), fields.get("client_secret"));
    match (basic, posted) {
        (Some(_), (Some(_), _) | (_, Some(_))) => {
            Err("the client authenticated in two ways at once")
        }
        (Some(encoded), _) => {
            // RFC 6749 §2.3.1: base64 of the form-encoded id, `:`, the form-encoded secret.
            let decoded = STANDARD
                .decode(encoded)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or("the Basic credentials are not base64 of UTF-8")?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or("the Basic credentials have no `:`")?;
            let unescape = |text: &str| {
                url::form_urlencoded::parse(format!("v={text}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Ok(Some((unescape(id), SecretString::from(unescape(secret)))))
        }
        (None, (Some(id), Some(secret))) => {
            Ok(Some((id.clone(), SecretString::from(secret.clone()))))
        }
        (None, _) => Ok(None),
    }
}

/// Get an access token (OAuth 2.0 token endpoint).
///
/// The client-credentials grant: a service account's OAuth client (made at
/// `/t/{tenant}/api/v1/clients`) gets a JWT valid for ten minutes, to send as a bearer token to
/// the tenant's API. Errors are RFC 6749's (`{"error": …}`), not problem documents.
#[utoipa::path(
    post,
    path = "/token",
    tag = "sign-in",
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, body = OAuthError, description = "`invalid_request` or `unsupported_grant_type`"),
        (status = 401, body = OAuthError, description = "`invalid_client`"),
        (status = 503, body = OAuthError, description = "`temporarily_unavailable`")
    )
)]
pub async fn token(page: SignInTenant, form: TokenForm, req: HttpRequest) -> HttpResponse {
    // Clients of the token endpoint are programs; a browser sent here by another site (a form
    // posting a guess) is refused before any lookup, so its failures spend no one's budget.
    let own_origin = || sessions::same_origin(&req, &page.state().settings.public_url);
    if started_elsewhere(&req) || (req.headers().contains_key(header::ORIGIN) && !own_origin()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the token endpoint takes no requests a browser makes for another site",
        );
    }
    let fields = match form.0 {
        Ok(fields) => fields,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    match fields.get("grant_type").map(String::as_str) {
        Some("client_credentials") => client_credentials_grant(&page, &fields, &req).await,
        Some(TOKEN_EXCHANGE) => token_exchange_grant(&page, &fields, &req).await,
        Some(_) => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "the grant types are client_credentials and token exchange (RFC 8693)",
        ),
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is missing",
        ),
    }
}

/// RFC 6749 §4.4: a service account's client proves its secret.
async fn client_credentials_grant(
    page: &SignInTenant,
    fields: &BTreeMap<String, String>,
    req: &HttpRequest,
) -> HttpResponse {
    let (client_id, secret) = match client_credentials(req, fields) {
        Ok(Some(credentials)) => credentials,
        Ok(None) => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "no client credentials",
            );
        }
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    let state = page.state();
    let slug = &page.tenant().slug;
    let checks = Checks {
        dbs: &state.dbs,
        api_keys: &state.api_keys,
        account_statuses: &state.account_statuses,
    };
    let issued = state
        .tokens
        .issue(
            checks,
            slug,
            &state.settings.public_url,
            &client_id,
            &secret,
        )
        .await;
    let meta = request_meta(req);
    match issued {
        Ok(issued) => {
            let event = AuditEvent::new(&meta, "auth.token", "oauth_client")
                .resource_id(issued.client.id.to_string())
                .actor(
                    "service_account",
                    issued.client.service_account_id.to_string(),
                )
                .outcome(Outcome::Allow, 200)
                // Which client asked: the credential the tokens it gets act with.
                .detail("credential_id", issued.client.id.to_string())
                .detail("grant_type", "client_credentials")
                .detail("jti", issued.jti.clone());
            granted(
                page,
                event,
                TokenResponse {
                    access_token: issued.token.expose_secret().to_owned(),
                    token_type: "Bearer",
                    expires_in: issued.expires_in,
                    issued_token_type: None,
                },
            )
            .await
        }
        Err(IdentityError::InvalidCredentials(reason)) => {
            refused(
                page,
                req,
                true,
                AuditEvent::new(&meta, "auth.token", "oauth_client"),
                IdentityError::InvalidCredentials(reason).audit_reason(),
                oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "the client is unknown, revoked, its secret is wrong, or its service account \
                     is disabled",
                ),
            )
            .await
        }
        Err(e) => failed(e),
    }
}

/// RFC 8693: a person exchanges their browser session for an access token for scripts. The
/// session is the `subject_token` (the session cookie's value) or, without one, the request's
/// session cookie (with this server's `Origin`, like every change made with a cookie).
async fn token_exchange_grant(
    page: &SignInTenant,
    fields: &BTreeMap<String, String>,
    req: &HttpRequest,
) -> HttpResponse {
    if fields.get("subject_token_type").map(String::as_str) != Some(SESSION_TOKEN_TYPE) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "subject_token_type must be urn:flowgate:params:oauth:token-type:session",
        );
    }
    if fields.contains_key("audience") || fields.contains_key("resource") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "tokens are issued for this tenant's API only",
        );
    }
    if fields
        .get("requested_token_type")
        .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "only access tokens are issued",
        );
    }
    let state = page.state();
    let tenant = page.tenant();
    let session = match fields.get("subject_token") {
        Some(token) => sessions::by_token(state, tenant, token).await,
        None => sessions::authenticate(state, tenant, req)
            .await
            .unwrap_or(Err(IdentityError::MissingCredentials)),
    };
    let meta = request_meta(req);
    let session = session.and_then(|principal| {
        if principal.owes_second_factor() {
            Err(IdentityError::SecondFactorOwed)
        } else {
            Ok(principal)
        }
    });
    // The token is credited with the assertion the session has made by now, and no later one.
    let asserted = session.as_ref().ok().and_then(Principal::asserted_at);
    let (user, session, ends) = match session {
        Ok(Principal::User {
            id,
            credential:
                UserCredential::Session {
                    id: session,
                    expires_at,
                    ..
                },
            ..
        }) => (id, session, expires_at),
        Ok(_) => return failed(IdentityError::MissingCredentials),
        Err(
            e @ (IdentityError::InvalidCredentials(_)
            | IdentityError::MissingCredentials
            | IdentityError::ForeignOrigin
            | IdentityError::SecondFactorOwed),
        ) => {
            return refused(
                page,
                req,
                e.spends_failure_budget(),
                AuditEvent::new(&meta, "auth.token", "session"),
                e.audit_reason(),
                oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the session is unknown, ended, was not presented, or has not passed the \
                     passkey assertion the tenant requires",
                ),
            )
            .await;
        }
        Err(e) => return failed(e),
    };
    let public_url = &state.settings.public_url;
    match state
        .tokens
        .issue_for_session(&tenant.slug, public_url, (user, session), ends, asserted)
        .await
    {
        Ok((token, expires_in, jti)) => {
            let event = AuditEvent::new(&meta, "auth.token", "session")
                .resource_id(session.to_string())
                .actor("user", user.to_string())
                .outcome(Outcome::Allow, 200)
                .detail("grant_type", "token_exchange")
                .detail("jti", jti);
            granted(
                page,
                event,
                TokenResponse {
                    access_token: token.expose_secret().to_owned(),
                    token_type: "Bearer",
                    expires_in,
                    issued_token_type: Some(ACCESS_TOKEN_TYPE),
                },
            )
            .await
        }
        Err(e) => failed(e),
    }
}

/// Records `event` and answers with the token.
async fn granted(page: &SignInTenant, event: AuditEvent, response: TokenResponse) -> HttpResponse {
    if let Err(e) = page.state().audit.record(&page.tenant().slug, event).await {
        return HttpResponse::from_error(ApiError::from(e));
    }
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(response)
}

/// Records a refused token request and answers `answer`. A credential presented and wrong
/// (`spends`) spends the address's failure budget; a refusal that spends none is recorded only
/// while the address's recording quota lasts.
async fn refused(
    page: &SignInTenant,
    req: &HttpRequest,
    spends: bool,
    event: AuditEvent,
    reason: &'static str,
    answer: HttpResponse,
) -> HttpResponse {
    let state = page.state();
    let slug = &page.tenant().slug;
    if spends {
        spend_failure(state, Trail::from(slug), req).await;
    } else if !records_unspent(state, req) {
        return answer;
    }
    let event = event
        .outcome(Outcome::Deny, answer.status().as_u16())
        .detail("reason", reason);
    if let Err(e) = state.audit.record(slug, event).await {
        return HttpResponse::from_error(ApiError::from(e));
    }
    answer
}

/// A token request that failed for a reason not the caller's.
fn failed(error: IdentityError) -> HttpResponse {
    match error {
        IdentityError::Unavailable(why) => {
            tracing::warn!(reason = %why, "token endpoint: a dependency is unavailable");
            let mut response = oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "retry later",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            response
        }
        e => HttpResponse::from_error(ApiError::from(e)),
    }
}

/// The tenant's public keys (JWK set).
///
/// The keys that sign its access tokens (`use` `sig`, EdDSA) and the RSA key that clients
/// encrypt request payloads to (`use` `enc`, `alg` `RSA-OAEP-256`, its RFC 7638 thumbprint as
/// `kid`); the encryption key is made on first use.
#[utoipa::path(
    get,
    path = "/jwks.json",
    tag = "sign-in",
    responses((status = 200, content_type = "application/jwk-set+json", body = Object, description = "The JWK set"))
)]
pub async fn jwks(page: SignInTenant) -> Result<HttpResponse, ApiError> {
    let mut keys = page.state().tokens.jwks(&page.tenant().slug).await?;
    // Beside the signing keys (`use` `sig`), the key clients encrypt payloads to (`use` `enc`).
    let state = page.state();
    let encryption = state
        .payload_caches
        .tenant_keys
        .get(state.keystore.as_ref(), page.tenant().slug.as_str())
        .await?;
    if let Some(list) = keys.get_mut("keys").and_then(Value::as_array_mut) {
        list.push(encryption.public_jwk().clone());
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/jwk-set+json"))
        // A rotated key signs at once: verifiers must not keep the set long.
        .insert_header((header::CACHE_CONTROL, "public, max-age=60"))
        .body(keys.to_string()))
}

/// Authorization-server metadata (RFC 8414) of the tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    pub issuer: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub grant_types_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub response_types_supported: Vec<&'static str>,
    /// The audience of the tenant's access tokens: its API.
    pub audience: String,
}

/// The tenant's authorization-server metadata.
#[utoipa::path(
    get,
    path = "/oauth-authorization-server",
    tag = "sign-in",
    responses((status = 200, body = ServerMetadata))
)]
pub async fn metadata(page: SignInTenant) -> web::Json<ServerMetadata> {
    let public_url = &page.state().settings.public_url;
    let issuer = issuer(public_url, &page.tenant().slug);
    web::Json(ServerMetadata {
        token_endpoint: format!("{issuer}/auth/token"),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        grant_types_supported: vec!["client_credentials", TOKEN_EXCHANGE],
        token_endpoint_auth_methods_supported: vec!["client_secret_basic", "client_secret_post"],
        response_types_supported: Vec::new(),
        audience: audience(public_url, &page.tenant().slug),
        issuer,
    })
}
