//! Which payloads of a tenant request travel encrypted, and the encryption of responses.
//!
//! The rules, in order (README "Encrypted payloads"):
//! - An operation is *required* to be encrypted when the tenant requires it everywhere or lists
//!   it (settings `payload_encryption_required`, `payload_encryption_operations`); the settings
//!   operations never are, so an administrator can always turn the requirement off.
//! - On a required operation a plaintext request body is 415 `encryption_required`, and the
//!   response is always encrypted: a request whose `Accept` excludes `application/jose` is 406.
//!   A body-less request (a `GET`) needs nothing but a key to encrypt the answer to.
//! - Otherwise the response is encrypted when `Accept` lists `application/jose`, or when the
//!   request was encrypted (unless `Accept` excludes `application/jose`): to the shared key of a
//!   `dir` request; else to the credential's registered public key, else its shared key. When
//!   there is nothing to encrypt to, a response that was asked for or required is 406, and the
//!   answer to an `RSA-OAEP-256` request that asked nothing stays plaintext JSON.
//! - Only successful responses with a body are encrypted; problem documents stay plaintext
//!   (they carry no business data, and a client that cannot decrypt still learns why).
//!
//! Invariant: whether the answer can be encrypted, and to whom, is settled before the handler
//! acts (here, or when the handler reads a JWE body, before it acts on it); after the handler
//! only sealing the answer itself can still fail (an answer over 64 MiB, no turn to seal a
//! stream). The audit event never holds a payload or a key.

use std::sync::LazyLock;

use actix_web::body::{BodySize, BoxBody, MessageBody, to_bytes_limited};
use actix_web::dev::{ResourceDef, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _, HttpRequest};
use zeroize::Zeroizing;

use super::keys::{ClientKeys, Recipient, client_keys, credential_of};
use super::{Alg, JweError, MEDIA_TYPE, screen, seal};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::operation::http_method;
use crate::http::routes::catalog;
use crate::tenancy::work::TenantContext;
use crate::tenancy::{Turn, Turns};

/// Operations a tenant can never require encryption on: the way to turn the requirement off.
pub const NEVER_REQUIRED: [&str; 2] = ["get_settings", "update_settings"];

/// The largest response body encrypted (a bigger one is refused with 406, never sent in clear).
const RESPONSE_LIMIT: usize = 64 * 1024 * 1024;

/// Streamed answers (the audit export) sealed or being sent at once in the whole process, the
/// others waiting their turn: each is held whole, up to [`RESPONSE_LIMIT`] and then as a JWE,
/// until its client has it, so that one principal's concurrent exports to slow readers would
/// otherwise hold that much memory each. Other answers are in memory already when sealed.
static SEALING_STREAMS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// One streamed answer of a tenant sealed or being sent at once, taken before a place at
/// [`SEALING_STREAMS`]: a tenant holds at most one of those.
static SEALING_TENANTS: LazyLock<Turns> = LazyLock::new(Turns::default);

/// Longest a streamed answer waits for its places before a 503 (with `Retry-After`): long
/// enough for another export of the tenant, or two of others, to reach a reader at an ordinary
/// pace.
const SEALING_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// A streamed answer's places, held until it is sent or dropped.
struct Places {
    _tenant: Turn<'static>,
    _process: Option<tokio::sync::SemaphorePermit<'static>>,
}

/// `tenant`'s places for a streamed answer, in their turn.
async fn stream_places(tenant: &str) -> Places {
    let tenant = SEALING_TENANTS.take(tenant).await;
    Places {
        _tenant: tenant,
        _process: SEALING_STREAMS.acquire().await.ok(),
    }
}

/// A sealed answer, holding its places (if it needed them) until it is sent or dropped.
struct Sealed {
    jwe: Option<actix_web::web::Bytes>,
    _places: Option<Places>,
}

impl MessageBody for Sealed {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.jwe.as_ref().map_or(0, |b| b.len() as u64))
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<actix_web::web::Bytes, Self::Error>>> {
        std::task::Poll::Ready(self.get_mut().jwe.take().map(Ok))
    }
}

/// What was decided about one request's payloads, kept in its extensions.
pub struct Negotiated {
    /// The operation requires encrypted payloads.
    pub required: bool,
    /// The response must be encrypted (required, or asked for by `Accept`).
    must: bool,
    /// The response is to be encrypted.
    encrypt: bool,
    /// Whom to, once known.
    recipient: Option<Recipient>,
}

/// One tenant operation, to name the operation of a request.
struct Route {
    method: Method,
    path: ResourceDef,
    id: String,
    /// The operation takes a request body (and so decrypts one declared `application/jose`).
    takes_body: bool,
}

/// The tenant API's operations, in registration order (the order routes match in).
static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(|| {
    catalog()
        .into_iter()
        .filter(|scope| scope.tenant)
        .flat_map(|scope| {
            scope
                .operations
                .iter()
                .map(|op| op.document(scope.prefix))
                .collect::<Vec<_>>()
        })
        .map(|documented| Route {
            method: http_method(&documented.method),
            path: ResourceDef::new(documented.path.as_str()),
            id: documented.operation.operation_id.unwrap_or_default(),
            takes_body: documented.operation.request_body.is_some(),
        })
        .collect()
});

/// The operation ids a tenant may list in `payload_encryption_operations`.
pub fn settable_operations() -> impl Iterator<Item = &'static str> {
    ROUTES
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !NEVER_REQUIRED.contains(id))
}

fn operation_of(method: &Method, path: &str) -> Option<&'static Route> {
    ROUTES
        .iter()
        .find(|r| r.method == method && r.path.is_match(path))
}

/// What `Accept` says about `application/jose`.
struct Accept {
    /// It lists `application/jose`.
    asks: bool,
    /// It is absent, or some range with a non-zero quality matches `application/jose`.
    allows: bool,
}

impl Accept {
    fn of(headers: &HeaderMap) -> Self {
        let mut present = false;
        let (mut asks, mut allows) = (false, false);
        for value in headers.get_all(header::ACCEPT) {
            present = true;
            let Ok(value) = value.to_str() else { continue };
            for range in value.split(',') {
                let mut params = range.split(';');
                let essence = params.next().unwrap_or("").trim().to_ascii_lowercase();
                let refused = params.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                if refused {
                    continue;
                }
                match essence.as_str() {
                    MEDIA_TYPE => {
                        asks = true;
                        allows = true;
                    }
                    "*/*" | "application/*" => allows = true,
                    _ => {}
                }
            }
        }
        Accept {
            asks,
            allows: allows || !present,
        }
    }
}

/// Whether the request's body is declared `application/jose`.
pub fn is_jose(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(MEDIA_TYPE))
}

fn not_acceptable(detail: &str) -> ApiError {
    ApiError::new(ErrorCode::NotAcceptable, detail)
}

const TOO_LARGE_TO_SEAL: &str = "The answer is larger than 64 MiB, the most that is sealed as \
     one JWE: ask for less (the audit export takes a range, `after` and `until`).";

const NOTHING_TO_ENCRYPT_TO: &str = "The response must be encrypted and this credential has no \
     key to encrypt it to: register a public key or make a shared key (`…/payload-key`).";

/// The caller's default recipient: its registered public key, else its shared key.
async fn default_recipient(context: &TenantContext) -> Result<Option<Recipient>, ApiError> {
    let keys = match credential_of(context.principal()) {
        Some(credential) => {
            client_keys(context.keystore(), context.slug().as_str(), credential).await?
        }
        None => ClientKeys::default(),
    };
    keys.recipient()
}

/// The pipeline stage between authentication and the handler on tenant API routes: decides
/// what is encrypted (see the module's rules) and encrypts the response.
pub async fn negotiate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let context = req.extensions().get::<TenantContext>().cloned();
    let Some(context) = context else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let settings = context.settings();
    let any_required =
        settings.payload_encryption_required || !settings.payload_encryption_operations.is_empty();
    let encrypted = is_jose(req.headers());
    // Naming the operation matches the path against every route's pattern (2.5 % of a page
    // read of users, callgrind): only a tenant that requires encryption anywhere, or an
    // encrypted request, needs it. The path as routing reads it (percent-decoded): `…/valu%65`
    // is the `value` route.
    let operation = (any_required || encrypted)
        .then(|| operation_of(req.method(), req.match_info().as_str()))
        .flatten();
    let required = any_required
        && operation.is_some_and(|op| {
            !NEVER_REQUIRED.contains(&op.id.as_str())
                && (settings.payload_encryption_required
                    || settings.payload_encryption_operations.contains(&op.id))
        });
    let accept = Accept::of(req.headers());
    let must = required || accept.asks;
    if must && !accept.allows {
        return Ok(req.error_response(not_acceptable(
            "This operation answers only in `application/jose`; accept it.",
        )));
    }
    let mut negotiated = Negotiated {
        required,
        must,
        encrypt: must || (encrypted && accept.allows),
        recipient: None,
    };
    // Whom the answer goes to is settled when the body is decrypted; a plaintext request, or a
    // JWE sent to an operation that takes no body (which is never read), has it settled here,
    // so that a refusal comes before the handler and not after its effects. (A path that names
    // no operation is answered 404 or 405, never encrypted.)
    let unread_jwe = encrypted && operation.is_some_and(|op| !op.takes_body);
    if negotiated.encrypt && (!encrypted || unread_jwe) {
        match default_recipient(&context).await {
            Ok(Some(recipient)) => negotiated.recipient = Some(recipient),
            Ok(None) if !must => negotiated.encrypt = false,
            Ok(None) => return Ok(req.error_response(not_acceptable(NOTHING_TO_ENCRYPT_TO))),
            Err(e) => return Ok(req.error_response(e)),
        }
    }
    req.extensions_mut().insert(negotiated);
    let res = next.call(req).await?.map_into_boxed_body();
    Ok(seal_response(&context, res).await)
}

/// Decrypts an `application/jose` request body (see [`screen`] for what is refused) and
/// settles whom the response is encrypted to.
pub async fn decrypt_request(
    http: &HttpRequest,
    body: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let context = http.extensions().get::<TenantContext>().cloned();
    let Some(context) = context else {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Only the tenant API accepts encrypted bodies; send `application/json`.",
        ));
    };
    let screened = screen(body)?;
    let credential = credential_of(context.principal());
    let keys = match credential {
        Some(credential) => {
            client_keys(context.keystore(), context.slug().as_str(), credential).await?
        }
        None => ClientKeys::default(),
    };
    let (plaintext, own) = match screened.alg {
        Alg::Dir => {
            // A caller without a shared key holds no key this JWE could be for.
            let key = keys.dir.clone().ok_or(JweError::Invalid)?;
            let plaintext = screened.decrypt_dir(&key)?;
            (plaintext, Ok(Some(Recipient::Dir(key))))
        }
        Alg::RsaOaep256 => {
            let key = context
                .payload_caches()
                .tenant_keys
                .get(context.keystore(), context.slug().as_str())
                .await?;
            // Settled below, and only when the response is encrypted: a registered key the
            // rules refuse refuses nothing that is answered in the clear anyway.
            (screened.decrypt_rsa(&key)?, keys.recipient())
        }
    };
    let plaintext = Zeroizing::new(plaintext);
    let mut extensions = http.extensions_mut();
    if let Some(negotiated) = extensions.get_mut::<Negotiated>()
        && negotiated.encrypt
    {
        // The middleware settles a recipient ahead only for plaintext requests.
        match own? {
            Some(recipient) => negotiated.recipient = Some(recipient),
            None if negotiated.must => return Err(not_acceptable(NOTHING_TO_ENCRYPT_TO)),
            None => negotiated.encrypt = false,
        }
    }
    Ok(plaintext)
}

/// Whether a plaintext body is refused on this request (415).
pub fn plaintext_refused(http: &HttpRequest) -> bool {
    http.extensions()
        .get::<Negotiated>()
        .is_some_and(|n| n.required)
}

/// Encrypts a successful response with a body when the request's negotiation says so.
async fn seal_response(
    context: &TenantContext,
    res: ServiceResponse<BoxBody>,
) -> ServiceResponse<BoxBody> {
    let negotiated = res.request().extensions_mut().remove::<Negotiated>();
    let Some(negotiated) = negotiated.filter(|n| n.encrypt) else {
        return res;
    };
    let status = res.status();
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(content_type) =
        content_type.filter(|_| status.is_success() && status != StatusCode::NO_CONTENT)
    else {
        return res;
    };
    let recipient = match negotiated.recipient {
        Some(recipient) => recipient,
        None => match default_recipient(context).await {
            Ok(Some(recipient)) => recipient,
            Ok(None) if !negotiated.must => return res,
            Ok(None) => {
                let (req, _) = res.into_parts();
                return ServiceResponse::from_err(not_acceptable(NOTHING_TO_ENCRYPT_TO), req);
            }
            Err(e) => {
                let (req, _) = res.into_parts();
                return ServiceResponse::from_err(e, req);
            }
        },
    };
    let (req, res) = res.into_parts();
    let (mut head, body) = res.into_parts();
    let places = match body.size() {
        BodySize::Stream => {
            let tenant = context.slug().as_str();
            match tokio::time::timeout(SEALING_WAIT, stream_places(tenant)).await {
                Ok(places) => Some(places),
                Err(_) => {
                    let busy = ApiError::busy(
                        "Encrypted exports are all under way; retry in a minute.",
                        60,
                    );
                    return ServiceResponse::from_err(busy, req);
                }
            }
        }
        _ => None,
    };
    let body = match to_bytes_limited(body, RESPONSE_LIMIT).await {
        Ok(Ok(body)) => Zeroizing::new(Vec::from(body)),
        Ok(Err(e)) => {
            let error = ApiError::internal("jose", anyhow::anyhow!("reading a response: {e}"));
            return ServiceResponse::from_err(error, req);
        }
        Err(_) => return ServiceResponse::from_err(not_acceptable(TOO_LARGE_TO_SEAL), req),
    };
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let cty = (!essence.eq_ignore_ascii_case("application/json")).then_some(essence);
    match seal(body, &recipient, cty) {
        Ok(sealed) => {
            let headers = head.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
            headers.remove(header::CONTENT_LENGTH);
            headers.append(
                header::VARY,
                HeaderValue::from_static("accept, content-type"),
            );
            let sealed = Sealed {
                jwe: Some(sealed.into()),
                _places: places,
            };
            ServiceResponse::new(req, head.set_body(BoxBody::new(sealed)))
        }
        Err(e) => ServiceResponse::from_err(e, req),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: Option<&str>) -> (bool, bool) {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        let a = Accept::of(&headers);
        (a.asks, a.allows)
    }

    #[test]
    fn accept_asks_for_jose_only_by_name_and_wildcards_allow_it() {
        assert_eq!(accept(None), (false, true));
        assert_eq!(accept(Some("application/jose")), (true, true));
        assert_eq!(
            accept(Some("application/json, application/jose;q=0.5")),
            (true, true)
        );
        assert_eq!(accept(Some("*/*")), (false, true));
        assert_eq!(accept(Some("application/json")), (false, false));
        assert_eq!(accept(Some("application/jose;q=0")), (false, false));
    }

    #[test]
    fn operations_are_named_by_method_and_path() {
        let named =
            |method, path| operation_of(&method, path).map(|r| (r.id.as_str(), r.takes_body));
        assert_eq!(
            named(Method::GET, "/t/acme/api/v1/settings"),
            Some(("get_settings", false))
        );
        assert_eq!(
            named(Method::POST, "/t/acme/api/v1/users"),
            Some(("create_user", true))
        );
        assert_eq!(
            named(Method::POST, "/t/acme/api/v1/users/u1/disable"),
            Some(("disable_user", false))
        );
        assert!(settable_operations().any(|id| id == "create_user"));
        assert!(!settable_operations().any(|id| id == "update_settings"));
    }
}
