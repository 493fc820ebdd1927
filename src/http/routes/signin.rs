//! `/t/{tenant}/auth/…`: signing in and out in a browser. These routes sit under a tenant but
//! before any credential (stage 2 of the pipeline only): the person is not signed in yet.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures_util::future::LocalBoxFuture;
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use utoipa::openapi::Ref;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::app::AppState;
use crate::audit::Trail;
use crate::audit::{AuditEvent, Outcome};
use crate::authz::actions::SessionRevoke;
use crate::crypto::random_token;
use crate::crypto::sha256_hex;
use crate::http::contract::{Body, Contract, Documented, Guard, Security};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::extract::PathId;
use crate::http::extract::read_form;
use crate::http::pages;
use crate::http::pages::Choice;
use crate::http::pipeline::authn::{records_unspent, spend_failure, started_elsewhere};
use crate::http::pipeline::authz::tenant_parameter;
use crate::http::pipeline::context::request_meta;
use crate::http::pipeline::tenant;
use crate::identity::IdentityError;
use crate::signin::logins::Pending;
use crate::signin::oidc::Callback;
use crate::signin::providers::{self, Mappings, OidcSettings, SamlSettings, Settings};
use crate::signin::saml::{self, Endpoints};
use crate::signin::sessions::{self, LOGIN_TTL, PreLogin};
use crate::signin::{Refusal, SignInError, Vouched, logins, provisioning};
use crate::tenancy::work::{Change, SignIn, WriteTx};
use crate::tenancy::{Tenant, TenantStatus, Visit};

/// The guard of the sign-in routes: the live, unsuspended tenant of the path, and nobody's
/// credential.
pub struct SignInTenant {
    state: Arc<AppState>,
    tenant: Arc<Tenant>,
    /// The request's presence in the tenant, until the handler is done with it.
    _visit: Visit,
}

impl FromRequest for SignInTenant {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .map(|s| s.clone().into_inner())
                .ok_or_else(|| ApiError::internal("http", anyhow::anyhow!("state missing")))?;
            let (tenant, visit) = tenant::resolve(&state, &req).await?;
            if tenant.status != TenantStatus::Active {
                return Err(ApiError::new(
                    ErrorCode::TenantSuspended,
                    "This tenant is suspended.",
                ));
            }
            Ok(SignInTenant {
                state,
                tenant,
                _visit: visit,
            })
        })
    }
}

impl Documented for SignInTenant {
    fn document(contract: &mut Contract) {
        contract.security = Some(Security::Public);
        contract.parameters(vec![tenant_parameter()]);
        contract.errors(&[
            ErrorCode::NotFound,
            ErrorCode::TenantSuspended,
            ErrorCode::RateLimited,
            ErrorCode::DependencyUnavailable,
        ]);
    }
}

impl Guard for SignInTenant {}

impl SignInTenant {
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    pub fn shared_state(&self) -> &Arc<AppState> {
        &self.state
    }

    fn base(&self) -> String {
        format!(
            "{}/t/{}",
            self.state.settings.public_url.trim_end_matches('/'),
            self.tenant.slug
        )
    }

    fn redirect_uri(&self, idp: Uuid) -> String {
        format!("{}/auth/oidc/{idp}/callback", self.base())
    }

    /// The login page, relative to the server.
    fn login_page(&self, query: &str) -> String {
        format!("/t/{}/auth/login{query}", self.tenant.slug)
    }

    /// What SAML provider `idp` knows this tenant by.
    fn endpoints(&self, idp: Uuid) -> Endpoints {
        let base = format!("{}/auth/saml/{idp}", self.base());
        Endpoints {
            entity_id: format!("{base}/metadata"),
            acs_url: format!("{base}/acs"),
        }
    }

    /// The stored settings of provider `id`; 404 when the tenant has none.
    async fn provider(&self, id: Uuid) -> Result<Settings, ApiError> {
        let row = logins::provider(&self.state, &self.tenant.slug, id)
            .await
            .map_err(signin_error)?
            .ok_or_else(ApiError::not_found)?;
        providers::settings(&row)
            .map_err(|e| ApiError::internal("signin", anyhow::anyhow!("stored provider: {e}")))
    }

    /// The OpenID provider `id`; 404 when the tenant has none (or it is a SAML provider).
    async fn oidc_provider(&self, id: Uuid) -> Result<OidcSettings, ApiError> {
        match self.provider(id).await? {
            Settings::Oidc(settings) => Ok(settings),
            Settings::Saml(_) => Err(ApiError::not_found()),
        }
    }

    /// The SAML provider `id`; 404 when the tenant has none (or it is an OpenID provider).
    async fn saml_provider(&self, id: Uuid) -> Result<SamlSettings, ApiError> {
        match self.provider(id).await? {
            Settings::Saml(settings) => Ok(settings),
            Settings::Oidc(_) => Err(ApiError::not_found()),
        }
    }

    /// The provider a callback names, as it is now; a login at a provider since deleted or
    /// changed into another kind is unknown.
    async fn provider_for_callback(&self, idp: Uuid) -> Result<Settings, SignInError> {
        let row = logins::provider(&self.state, &self.tenant.slug, idp)
            .await?
            .ok_or(Refusal::UnknownState)?;
        Ok(providers::settings(&row).map_err(anyhow::Error::from)?)
    }

    /// Records a refused sign-in in the tenant's trail and answers it.
    async fn refuse(&self, req: &HttpRequest, idp: Uuid, error: SignInError) -> HttpResponse {
        let SignInError::Refused(refusal) = error else {
            return HttpResponse::from_error(signin_error(error));
        };
        // A refused sign-in spends the address's failure budget and is recorded, like a wrong
        // credential, unless it names no login of this browser and another site started it: a
        // page elsewhere can send its visitors' browsers to fail here with made-up or foreign
        // logins as often as it likes, and must neither lock their network out nor write a row
        // for each (those are recorded only up to the source's quota). A refusal of this
        // browser's own login is beyond another site's reach, and always counts.
        if !(refusal.names_no_login_of_this_browser() && started_elsewhere(req)) {
            spend_failure(&self.state, Trail::from(&self.tenant.slug), req).await;
        } else if !records_unspent(&self.state, req) {
            return self.refusal_page(req, &refusal);
        }
        let event = AuditEvent::new(&request_meta(req), "auth.login", "identity_provider")
            .resource_id(idp.to_string())
            .outcome(Outcome::Deny, 401)
            .detail("reason", refusal.code());
        if let Err(e) = self.state.audit.record(&self.tenant.slug, event).await {
            return HttpResponse::from_error(ApiError::from(e));
        }
        self.refusal_page(req, &refusal)
    }

    /// The answer to a refused sign-in: the login page with advice (or a problem), its
    /// pre-login cookies cleared.
    fn refusal_page(&self, req: &HttpRequest, refusal: &Refusal) -> HttpResponse {
        let mut res = if wants_html(req) {
            pages::login(
                &self.state.settings.public_url,
                &self.tenant.slug,
                &[],
                Some(refusal.advice()),
                None,
            )
        } else {
            HttpResponse::from_error(ApiError::new(ErrorCode::SignInFailed, refusal.advice()))
        };
        *res.status_mut() = actix_web::http::StatusCode::UNAUTHORIZED;
        for kind in [PreLogin::Oidc, PreLogin::Saml] {
            let _ = res.add_cookie(&sessions::removal(kind.name(&self.tenant.slug)));
        }
        res
    }

    /// Provisions the person `vouched` names, opens their session and answers with its cookie
    /// (clearing the pre-login cookie `login_cookie`); the sign-in is audited.
    async fn open_session(
        &self,
        req: &HttpRequest,
        idp: Uuid,
        method: &'static str,
        mappings: &Mappings,
        vouched: &Vouched,
        login_cookie: PreLogin,
    ) -> Result<HttpResponse, SignInError> {
        let proof = SignIn::vouched(vouched);
        let meta = request_meta(req);
        let tx = WriteTx::sign_in(&self.state, &self.tenant.slug, &meta, &proof).await?;
        let provisioned = provisioning::provision(&tx, &proof, idp, mappings, vouched).await?;
        // The provider's own MFA counts only where the tenant said it trusts it for that.
        let mfa_by_provider = vouched.passed_trusted_mfa(&mappings.trusted_mfa);
        let opened = sessions::open(
            &tx,
            &proof,
            sessions::NewSession {
                user_id: provisioned.user.id,
                idp_id: Some(idp),
                method,
                level: if mfa_by_provider {
                    sessions::Level::SsoMfa
                } else {
                    sessions::Level::Sso
                },
                authenticated_at: vouched.authenticated_at(),
                passkey_asserted_at: None,
                max_life: None,
            },
            &meta,
        )
        .await?;
        tx.commit(
            Change::new("session", opened.session.id, 303)
                .by("user", provisioned.user.id)
                .detail("identity_provider", idp.to_string())
                .detail("method", method)
                .detail("user_created", provisioned.created)
                .detail("groups", provisioned.groups.clone())
                .detail("mfa_by_provider", mfa_by_provider)
                .detail("groups_overage", provisioned.groups_overage),
        )
        .await?;
        let session_cookie = sessions::host_cookie(
            sessions::cookie_name(&self.tenant.slug),
            opened.token.expose_secret().to_owned(),
            opened.timeouts.absolute,
        );
        Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, self.login_page("?signed_in=1")))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .cookie(session_cookie)
            .cookie(sessions::removal(login_cookie.name(&self.tenant.slug)))
            .finish())
    }
}

/// Sign-in failures that are not the person's: the provider, the key store or the database.
fn signin_error(error: SignInError) -> ApiError {
    match error {
        SignInError::Refused(refusal) => ApiError::new(ErrorCode::SignInFailed, refusal.advice()),
        SignInError::Provider(why) => ApiError::unavailable("signin", anyhow::anyhow!(why)),
        SignInError::KeyStore(e) => e.into(),
        SignInError::Identity(e) => e.into(),
        SignInError::Tenancy(e) => e.into(),
        SignInError::Work(e) => e.into(),
        SignInError::Unexpected(e) => ApiError::internal("signin", e),
    }
}

fn wants_html(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// Begin signing in with an OpenID Connect provider.
///
/// Redirects the browser to the provider's authorization endpoint (code flow, PKCE S256, `state`
/// and `nonce`), setting the short-lived pre-login cookie the callback requires.
#[utoipa::path(
    get,
    path = "/oidc/{id}/login",
    tag = "sign-in",
    responses((status = 303, description = "To the provider, with the pre-login cookie"))
)]
pub async fn oidc_login(page: SignInTenant, id: PathId) -> Result<HttpResponse, ApiError> {
    let settings = page.oidc_provider(id.0).await?;
    let begun = page
        .state
        .oidc
        .begin(id.0, &settings, &page.redirect_uri(id.0))
        .await
        .map_err(signin_error)?;
    let binding = random_token::<32>().map_err(|e| ApiError::internal("signin", e))?;
    logins::remember(
        &page.state,
        &page.tenant.slug,
        id.0,
        &binding,
        &begun.state_hash,
        &begun.pending,
    )
    .await
    .map_err(signin_error)?;
    let cookie = PreLogin::Oidc.cookie(&page.tenant.slug, binding, LOGIN_TTL);
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, begun.authorize_url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie)
        .finish())
}

/// What an OpenID provider sends back to the callback (other parameters are ignored).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackParams {
    /// The authorization code.
    pub code: Option<String>,
    /// The `state` of the login.
    pub state: Option<String>,
    /// RFC 9207: the issuer sending the browser back.
    pub iss: Option<String>,
    /// The provider's error code, when the login did not succeed there.
    pub error: Option<String>,
}

/// Complete signing in with an OpenID Connect provider.
///
/// Verifies the login (single-use `state`, the pre-login cookie, the ID token), provisions the
/// user and opens a session; redirects with the `__Host-` session cookie. A refusal is 401
/// (`sign_in_failed`), recorded in the audit trail with its reason.
#[utoipa::path(
    get,
    path = "/oidc/{id}/callback",
    tag = "sign-in",
    responses(
        (status = 303, description = "Signed in: to the login page, with the session cookie"),
        (status = 401, description = "Sign-in refused (`sign_in_failed`)")
    )
)]
pub async fn oidc_callback(
    page: SignInTenant,
    id: PathId,
    query: web::Query<CallbackParams>,
    req: HttpRequest,
) -> HttpResponse {
    match complete_oidc(&page, id.0, query.into_inner(), &req).await {
        Ok(res) => res,
        Err(error) => page.refuse(&req, id.0, error).await,
    }
}

async fn complete_oidc(
    page: &SignInTenant,
    idp: Uuid,
    params: CallbackParams,
    req: &HttpRequest,
) -> Result<HttpResponse, SignInError> {
    let slug = &page.tenant.slug;
    let binding = req.cookie(&PreLogin::Oidc.name(slug));
    let pending = logins::consume(
        &page.state,
        slug,
        idp,
        params.state.as_deref().unwrap_or_default(),
        binding.as_ref().map(|c| c.value()),
    )
    .await?;
    if let Some(error) = params.error {
        let code: String = error
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(64)
            .collect();
        return Err(Refusal::ProviderError(code).into());
    }
    let code = params.code.filter(|c| !c.is_empty() && c.len() <= 2048);
    let code = code.ok_or(Refusal::UnknownState)?;
    let Settings::Oidc(settings) = page.provider_for_callback(idp).await? else {
        return Err(Refusal::UnknownState.into());
    };
    let secret = providers::client_secret(page.state.keystore.as_ref(), slug.as_str(), idp)
        .await?
        .ok_or_else(|| anyhow::anyhow!("provider {idp} has no client secret"))?;
    let vouched = page
        .state
        .oidc
        .finish(
            idp,
            &settings,
            secret,
            &page.redirect_uri(idp),
            pending,
            Callback {
                code,
                iss: params.iss,
            },
        )
        .await?;
    page.open_session(
        req,
        idp,
        "oidc",
        &settings.mappings,
        &vouched,
        PreLogin::Oidc,
    )
    .await
}

/// Largest SAML response form read (a signed response is a few KiB; the base64 of
/// [`saml::MAX_DOCUMENT`], form-encoded, with room for `RelayState`).
const MAX_ACS_FORM: usize = 1024 * 1024;

/// Begin signing in with a SAML identity provider.
///
/// Redirects the browser to the provider's single sign-on service with an AuthnRequest
/// (HTTP-Redirect binding) and a `RelayState` naming the login, setting the short-lived
/// pre-login cookie the ACS requires.
#[utoipa::path(
    get,
    path = "/saml/{id}/login",
    tag = "sign-in",
    responses((status = 303, description = "To the provider, with the pre-login cookie"))
)]
pub async fn saml_login(page: SignInTenant, id: PathId) -> Result<HttpResponse, ApiError> {
    let settings = page.saml_provider(id.0).await?;
    let begun = saml::begin(&settings, &page.endpoints(id.0)).map_err(signin_error)?;
    let binding = random_token::<32>().map_err(|e| ApiError::internal("signin", e))?;
    let pending = Pending {
        nonce: begun.request_id,
        pkce_verifier: String::new(),
    };
    logins::remember(
        &page.state,
        &page.tenant.slug,
        id.0,
        &binding,
        &sha256_hex(begun.relay_state.as_bytes()),
        &pending,
    )
    .await
    .map_err(signin_error)?;
    let cookie = PreLogin::Saml.cookie(&page.tenant.slug, binding, LOGIN_TTL);
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, begun.redirect_url))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie)
        .finish())
}

/// What a SAML provider posts to the ACS (HTTP-POST binding).
#[derive(Debug, ToSchema)]
#[allow(non_snake_case, reason = "the SAML binding's parameter names")]
pub struct SamlPost {
    /// The provider's `<samlp:Response>`, base64-encoded.
    pub SAMLResponse: String,
    /// The `RelayState` of the login.
    pub RelayState: String,
}

/// The ACS form's fields, read whole before any check.
pub struct AcsForm(Result<BTreeMap<String, String>, &'static str>);

impl FromRequest for AcsForm {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let form = read_form(req, payload, MAX_ACS_FORM);
        Box::pin(async move { Ok(AcsForm(form.await)) })
    }
}

impl Documented for AcsForm {
    fn document(contract: &mut Contract) {
        contract.schema::<SamlPost>();
        contract.body = Some(Body {
            media_type: "application/x-www-form-urlencoded",
            schema: Ref::from_schema_name("SamlPost").into(),
            example: Some(
                serde_json::json!({"SAMLResponse": "PHNhbWxwOlJlc3BvbnNlIC4uLg==", "RelayState": "…"}),
            ),
            accepts: |value| {
                value
                    .get("SAMLResponse")
                    .is_some_and(serde_json::Value::is_string)
            },
        });
    }
}

/// Complete signing in with a SAML identity provider (Assertion Consumer Service).
///
/// Verifies the response (the provider's signature over the assertion or the response, the
/// issuer, audience, recipient, `InResponseTo` the login's AuthnRequest, the validity window, a
/// single use of the assertion and of the `RelayState`, the pre-login cookie), provisions the
/// user and opens a session; redirects with the `__Host-` session cookie. A refusal is 401
/// (`sign_in_failed`), recorded in the audit trail with its reason.
#[utoipa::path(
    post,
    path = "/saml/{id}/acs",
    tag = "sign-in",
    responses(
        (status = 303, description = "Signed in: to the login page, with the session cookie"),
        (status = 401, description = "Sign-in refused (`sign_in_failed`)")
    )
)]
pub async fn saml_acs(
    page: SignInTenant,
    id: PathId,
    form: AcsForm,
    req: HttpRequest,
) -> HttpResponse {
    match complete_saml(&page, id.0, form.0, &req).await {
        Ok(res) => res,
        Err(error) => page.refuse(&req, id.0, error).await,
    }
}

async fn complete_saml(
    page: &SignInTenant,
    idp: Uuid,
    form: Result<BTreeMap<String, String>, &'static str>,
    req: &HttpRequest,
) -> Result<HttpResponse, SignInError> {
    let fields = form.map_err(|_| Refusal::Structure)?;
    let binding = req.cookie(&PreLogin::Saml.name(&page.tenant.slug));
    let pending = logins::consume(
        &page.state,
        &page.tenant.slug,
        idp,
        fields.get("RelayState").map_or("", String::as_str),
        binding.as_ref().map(|c| c.value()),
    )
    .await?;
    let response = fields.get("SAMLResponse").ok_or(Refusal::Malformed)?;
    let Settings::Saml(settings) = page.provider_for_callback(idp).await? else {
        return Err(Refusal::UnknownState.into());
    };
    let accepted = saml::finish(&settings, &page.endpoints(idp), response, &pending.nonce).await?;
    logins::spend_assertion(
        &page.state,
        &page.tenant.slug,
        idp,
        &accepted.assertion_id,
        accepted.valid_until,
    )
    .await?;
    page.open_session(
        req,
        idp,
        "saml",
        &settings.mappings,
        &accepted.vouched,
        PreLogin::Saml,
    )
    .await
}

/// This tenant's SAML service-provider metadata for one identity provider.
///
/// The document to register at the provider: Flowgate's entity id for it (this URL) and its
/// Assertion Consumer Service (HTTP-POST); assertions must be signed.
#[utoipa::path(
    get,
    path = "/saml/{id}/metadata",
    tag = "sign-in",
    responses((status = 200, content_type = "application/samlmetadata+xml", body = String, description = "The SP metadata"))
)]
pub async fn saml_metadata(page: SignInTenant, id: PathId) -> Result<HttpResponse, ApiError> {
    page.saml_provider(id.0).await?;
    let xml = page.endpoints(id.0).metadata().map_err(signin_error)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/samlmetadata+xml"))
        .body(xml))
}

/// How far a sign-out reaches.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogoutParams {
    /// End every session of the user, on every device.
    pub everywhere: Option<bool>,
}

/// Sign out.
///
/// Ends the session of the cookie (with `?everywhere=true`, every session of its user) and
/// clears the cookie. Like every change made with a session cookie, it must carry this server's
/// `Origin` (otherwise 403). A session that has not passed a second factor, of a person who has
/// a passkey, ends only itself: a stolen identity-provider password must not sign the person
/// out of their own sessions.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "sign-in",
    responses((status = 303, description = "Signed out: to the login page"), (status = 401, description = "No live session"), (status = 403, description = "Missing or foreign Origin"))
)]
pub async fn logout(
    page: SignInTenant,
    query: web::Query<LogoutParams>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let principal = sessions::authenticate(&page.state, &page.tenant, &req)
        .await
        .unwrap_or(Err(IdentityError::MissingCredentials))?;
    let asked_everywhere = query.everywhere.unwrap_or(false);
    let action = if asked_everywhere {
        "auth.logout_everywhere"
    } else {
        "auth.logout"
    };
    let Some((proof, session)) = SignIn::own_session(&principal, action) else {
        return Err(IdentityError::MissingCredentials.into());
    };
    let user = principal.actor_id();
    let tx = WriteTx::sign_in(&page.state, &page.tenant.slug, &request_meta(&req), &proof).await?;
    let everywhere =
        asked_everywhere && sessions::may_end_other_sessions(tx.conn(), &principal).await?;
    let ended = if everywhere {
        sessions::revoke_all::<SessionRevoke>(&tx, &proof, principal.id()).await?
    } else {
        u64::from(sessions::revoke(&tx, &proof, principal.id(), session).await?)
    };
    tx.commit(
        Change::new("session", session, 303)
            .by("user", user)
            .detail("sessions_ended", ended)
            .detail("narrowed_to_this_session", asked_everywhere && !everywhere),
    )
    .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, page.login_page("?signed_out=1")))
        .cookie(sessions::removal(sessions::cookie_name(&page.tenant.slug)))
        .finish())
}

/// What the login page is asked.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LoginPageParams {
    /// The person's email: the page sends them to the provider of its domain.
    pub email: Option<String>,
    pub signed_in: Option<u8>,
    pub signed_out: Option<u8>,
}

/// The login page.
///
/// A small HTML page without external assets: the tenant's identity providers, a form that
/// finds a person's provider by the domain of their email, and (with its script) the passkey
/// ceremonies: enrollment, the assertion the tenant's MFA policy asks for, step-up and
/// break-glass sign-in.
#[utoipa::path(
    get,
    path = "/login",
    tag = "sign-in",
    responses(
        (status = 200, content_type = "text/html", body = String, description = "The page"),
        (status = 303, description = "To the provider of the email's domain")
    )
)]
pub async fn login_page(
    page: SignInTenant,
    query: web::Query<LoginPageParams>,
) -> Result<HttpResponse, ApiError> {
    let rows = logins::providers(&page.state, &page.tenant.slug)
        .await
        .map_err(signin_error)?;
    let slug = &page.tenant.slug;
    let choices: Vec<Choice> = rows
        .into_iter()
        .filter_map(|row| {
            let settings = providers::settings(&row).ok()?;
            Some(Choice {
                login_path: format!("/t/{slug}/auth/{}/{}/login", settings.kind(), row.id),
                email_domains: settings.mappings().email_domains.clone(),
                name: row.name,
            })
        })
        .collect();
    if let Some(email) = &query.email {
        let domain = email.rsplit_once('@').map(|(_, d)| d.trim().to_lowercase());
        let home = choices.iter().find(|choice| {
            domain
                .as_ref()
                .is_some_and(|d| choice.email_domains.contains(d))
        });
        return Ok(match home {
            Some(choice) => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, choice.login_path.clone()))
                .finish(),
            None => pages::login(
                &page.state.settings.public_url,
                slug,
                &choices,
                Some(
                    "No identity provider of this organisation signs in addresses of that domain.",
                ),
                None,
            ),
        });
    }
    let note = if query.signed_in.is_some() {
        Some("You are signed in.")
    } else if query.signed_out.is_some() {
        Some("You are signed out.")
    } else {
        None
    };
    Ok(pages::login(
        &page.state.settings.public_url,
        &page.tenant.slug,
        &choices,
        None,
        note,
    ))
}

/// The login page's script.
///
/// The WebAuthn ceremonies with `navigator.credentials`, and `flowgate.call(method, path,
/// body)`, which meets a `step_up_required` or `mfa_required` answer with a passkey assertion
/// and retries once.
#[utoipa::path(
    get,
    path = "/login.js",
    tag = "sign-in",
    responses((status = 200, content_type = "text/javascript", body = String, description = "The script"))
)]
pub async fn login_script(_page: SignInTenant) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/javascript; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(pages::LOGIN_SCRIPT)
}
