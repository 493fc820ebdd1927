//! The one error type at the HTTP edge and its table of codes.
//!
//! Invariants: every error leaves as RFC 9457 `application/problem+json` with a stable `type`,
//! `code` and the request id; a 5xx carries a fixed message while its cause goes to the log under
//! the request id; no database, parser or key-store text reaches the client.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::pipeline::rate_limit::Refusal;
use super::request_id;
use crate::audit::AuditError;
use crate::authz::AuthzError;
use crate::authz::rules::RuleError;
use crate::identity::IdentityError;
use crate::keystore::KeyStoreError;
use crate::platform::PlatformError;
use crate::tenancy::TenancyError;
use crate::tenancy::work::WorkError;

/// Base of every problem `type` URI.
const TYPE_BASE: &str = "https://flowgate.dev/problems/";

/// Declares the codes and [`ErrorCode::ALL`] from one list, so the list cannot miss one.
macro_rules! error_codes {
    ($($code:ident,)*) => {
        /// Every error the API can answer with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub enum ErrorCode {
            $($code,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$code,)*];
        }
    };
}

error_codes! {
    MalformedRequest,
    InvalidJwe,
    UnsupportedJwe,
    Unauthenticated,
    InvalidCredentials,
    SignInFailed,
    PasskeyRefused,
    MfaRequired,
    StepUpRequired,
    Forbidden,
    TenantSuspended,
    NotFound,
    MethodNotAllowed,
    Conflict,
    RequestTimeout,
    PayloadTooLarge,
    NotAcceptable,
    UnsupportedMediaType,
    EncryptionRequired,
    ValidationFailed,
    RateLimited,
    DependencyUnavailable,
    Internal,
}

impl ErrorCode {
    /// Status, stable code and title of each error. Matched exhaustively: a new code cannot be
    /// added without its row.
    fn row(self) -> (StatusCode, &'static str, &'static str) {
        use ErrorCode::*;
        match self {
            MalformedRequest => (
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "The request is malformed",
            ),
            InvalidJwe => (
                StatusCode::BAD_REQUEST,
                "invalid_jwe",
                "The encrypted body could not be decrypted",
            ),
            UnsupportedJwe => (
                StatusCode::BAD_REQUEST,
                "unsupported_jwe",
                "The encrypted body uses an algorithm or feature that is not accepted",
            ),
            Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication is required",
            ),
            InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "The credentials are not valid",
            ),
            SignInFailed => (StatusCode::UNAUTHORIZED, "sign_in_failed", "Sign-in failed"),
            PasskeyRefused => (
                StatusCode::UNAUTHORIZED,
                "passkey_refused",
                "The passkey was refused",
            ),
            MfaRequired => (
                StatusCode::UNAUTHORIZED,
                "mfa_required",
                "The tenant requires a passkey assertion first",
            ),
            StepUpRequired => (
                StatusCode::UNAUTHORIZED,
                "step_up_required",
                "This action needs a recent passkey assertion",
            ),
            Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "The caller may not do this",
            ),
            TenantSuspended => (
                StatusCode::FORBIDDEN,
                "tenant_suspended",
                "The tenant is suspended",
            ),
            NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            Conflict => (
                StatusCode::CONFLICT,
                "conflict",
                "The request conflicts with existing data",
            ),
            RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body did not arrive in time",
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is too large",
            ),
            NotAcceptable => (
                StatusCode::NOT_ACCEPTABLE,
                "not_acceptable",
                "The response cannot be given in an acceptable form",
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported content type",
            ),
            EncryptionRequired => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "encryption_required",
                "This operation requires an encrypted body (application/jose)",
            ),
            ValidationFailed => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "The request failed validation",
            ),
            RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
            ),
            DependencyUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "dependency_unavailable",
                "A dependency is unavailable",
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    pub fn status(self) -> StatusCode {
        self.row().0
    }

    pub fn code(self) -> &'static str {
        self.row().1
    }

    pub fn title(self) -> &'static str {
        self.row().2
    }
}

/// A code travels as its stable string.
impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// The codes' schema is the table's list, so the document names every code clients can see.
impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Stable machine-readable code; the same status can carry several.",
            ))
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.code())))
            .into()
    }
}

impl ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ProblemCode")
    }
}

impl Challenge {
    /// The WebAuthn ceremonies of tenant `slug`, for an assertion no older than
    /// `max_age_seconds`.
    pub fn webauthn(slug: &crate::tenancy::Slug, max_age_seconds: i64) -> Self {
        Challenge {
            max_age_seconds,
            authenticate: format!("/t/{slug}/auth/webauthn/authenticate/start"),
            enroll: format!("/t/{slug}/auth/webauthn/register/start"),
        }
    }
}

/// A field that failed validation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON path of the field (`subject.id`), or `""` for the body as a whole.
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: ErrorCode,
    pub request_id: String,
    /// The W3C trace id of the request (32 lowercase hex digits): the caller's `traceparent`
    /// trace when it sent one, as on the server's log lines and exported spans.
    #[schema(example = "4bf92f3577b34da6a3ce929d0e0e4736")]
    pub trace_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// With `mfa_required` and `step_up_required`: how to pass the assertion asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<Challenge>,
}

/// What a person must do to go on: a passkey assertion no older than `max_age_seconds`
/// (`POST authenticate`, then its `finish`, with the session cookie), or, with no passkey yet,
/// an enrollment (`POST enroll`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Challenge {
    /// How recent the assertion must be, in seconds (0: any assertion in this session).
    pub max_age_seconds: i64,
    /// Where the assertion begins.
    pub authenticate: String,
    /// Where enrolling a passkey begins.
    pub enroll: String,
}

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
    fields: Vec<FieldError>,
    /// Headers the error answers with (`Allow`, `Retry-After`, `RateLimit`…).
    headers: Vec<(&'static str, String)>,
    /// The cause of a 5xx and the part of Flowgate it came from, for the log only.
    cause: Option<(&'static str, anyhow::Error)>,
    /// Boxed: rare, and `ApiError` travels in every `Result`.
    challenge: Option<Box<Challenge>>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: detail.into(),
            fields: Vec::new(),
            headers: Vec::new(),
            cause: None,
            challenge: None,
        }
    }

    /// A 401 `mfa_required` or `step_up_required` with what to do in its body.
    pub fn challenge(code: ErrorCode, detail: impl Into<String>, challenge: Challenge) -> Self {
        ApiError {
            challenge: Some(Box::new(challenge)),
            ..Self::new(code, detail)
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn not_found() -> Self {
        Self::new(ErrorCode::NotFound, "No such resource.")
    }

    pub fn forbidden(action: &str) -> Self {
        Self::new(
            ErrorCode::Forbidden,
            format!("The caller lacks the permission `{action}`."),
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, detail)
    }

    /// A 422 naming the failing fields.
    pub fn validation(fields: Vec<FieldError>) -> Self {
        let detail = fields
            .iter()
            .map(|f| {
                if f.field.is_empty() {
                    f.message.clone()
                } else {
                    format!("{}: {}", f.field, f.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        ApiError {
            fields,
            ..Self::new(ErrorCode::ValidationFailed, detail)
        }
    }

    /// A 422 on one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }

    /// A 422 for a reference in the request to an object the tenant does not have (another
    /// tenant's object gets the same answer). Objects named by the path are 404 instead.
    pub fn no_such(field: &str, what: &str) -> Self {
        Self::invalid_field(field, format!("no such {what} in this tenant"))
    }

    pub fn method_not_allowed(allow: String) -> Self {
        ApiError {
            headers: vec![("Allow", allow)],
            ..Self::new(
                ErrorCode::MethodNotAllowed,
                "This resource does not support the method.",
            )
        }
    }

    /// A 429 for `refusal`, with `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit`
    /// headers naming the limit.
    pub fn rate_limited(refusal: &Refusal) -> Self {
        let name = refusal.limit.name();
        let wait = refusal.retry_after.as_secs().max(1);
        ApiError {
            headers: vec![
                ("Retry-After", wait.to_string()),
                (
                    "RateLimit-Policy",
                    format!(
                        "\"{name}\";q={};w={}",
                        refusal.quota,
                        refusal.window.as_secs()
                    ),
                ),
                ("RateLimit", format!("\"{name}\";r=0;t={wait}")),
            ],
            ..Self::new(
                ErrorCode::RateLimited,
                format!("Too many requests ({name} limit); retry in {wait} s."),
            )
        }
    }

    /// A 503 for work that waits its turn and found none within its time: retry after
    /// `retry_after_seconds`.
    pub fn busy(detail: impl Into<String>, retry_after_seconds: u64) -> Self {
        ApiError {
            headers: vec![("Retry-After", retry_after_seconds.to_string())],
            ..Self::new(ErrorCode::DependencyUnavailable, detail)
        }
    }

    /// A 503: `origin` (the part of Flowgate that found it) could not reach a dependency.
    pub fn unavailable(origin: &'static str, cause: impl Into<anyhow::Error>) -> Self {
        ApiError {
            cause: Some((origin, cause.into())),
            ..Self::new(
                ErrorCode::DependencyUnavailable,
                "A dependency is unavailable; retry later.",
            )
        }
    }

    /// A 500: something `origin` (the part of Flowgate that failed) did not expect.
    pub fn internal(origin: &'static str, cause: impl Into<anyhow::Error>) -> Self {
        ApiError {
            cause: Some((origin, cause.into())),
            ..Self::new(ErrorCode::Internal, "Something went wrong on our side.")
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.code(), self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code, title) = self.code.row();
        let request_id = request_id::current();
        if let Some((origin, cause)) = &self.cause {
            tracing::error!(request_id = %request_id, code, origin, error = format!("{cause:#}"), "request failed");
        }
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9470's error for an authentication that is too weak or too old.
            let challenge = match (self.code, &self.challenge) {
                (ErrorCode::InvalidCredentials, _) => {
                    r#"Bearer realm="flowgate", error="invalid_token""#.to_owned()
                }
                (_, Some(c)) => format!(
                    r#"Bearer realm="flowgate", error="insufficient_user_authentication", max_age={}"#,
                    c.max_age_seconds
                ),
                _ => r#"Bearer realm="flowgate""#.to_owned(),
            };
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("5")));
        }
        for (name, value) in &self.headers {
            response.insert_header((*name, value.as_str()));
        }
        response.json(Problem {
            problem_type: format!("{TYPE_BASE}{code}"),
            title,
            status: status.as_u16(),
            detail: self.detail.clone(),
            code: self.code,
            request_id,
            trace_id: request_id::current_trace_id(),
            errors: self.fields.clone(),
            challenge: self.challenge.as_deref().cloned(),
        })
    }
}

impl From<TenancyError> for ApiError {
    fn from(e: TenancyError) -> Self {
        match e {
            TenancyError::AlreadyExists(slug) => {
                Self::conflict(format!("Tenant `{slug}` already exists."))
            }
            TenancyError::NotFound(_) => Self::not_found(),
            TenancyError::Unavailable(e) => Self::unavailable("tenancy", e),
            TenancyError::Unexpected(e) => Self::internal("tenancy", e),
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        TenancyError::from(e).into()
    }
}

impl From<RuleError> for ApiError {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::Full(kind) => Self::conflict(format!(
                "The tenant holds {} {}, the most it may; delete one first.",
                kind.most(),
                kind.plural()
            )),
            RuleError::Db(e) => e.into(),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::MissingCredentials => Self::new(
                ErrorCode::Unauthenticated,
                "Send `Authorization: Bearer <token>` with an API key or access token.",
            ),
            IdentityError::InvalidCredentials(_) => Self::new(
                ErrorCode::InvalidCredentials,
                "The credentials are invalid, revoked or expired.",
            ),
            IdentityError::ForeignOrigin => Self::new(
                ErrorCode::Forbidden,
                "A change made with a session cookie must come from this server's own pages \
                 (the Origin header is missing or foreign).",
            ),
            IdentityError::SecondFactorOwed => Self::new(
                ErrorCode::MfaRequired,
                "The session this token was exchanged for has not passed the passkey assertion \
                 the tenant requires.",
            ),
            IdentityError::Unavailable(why) => Self::unavailable("identity", anyhow::anyhow!(why)),
            IdentityError::Unexpected(e) => Self::internal("identity", e),
        }
    }
}

impl From<KeyStoreError> for ApiError {
    fn from(e: KeyStoreError) -> Self {
        match e {
            KeyStoreError::Unavailable(why) => Self::unavailable("keystore", anyhow::anyhow!(why)),
            KeyStoreError::Unexpected(e) => Self::internal("keystore", e),
        }
    }
}

impl From<AuthzError> for ApiError {
    fn from(e: AuthzError) -> Self {
        match e {
            AuthzError::Tenancy(e) => e.into(),
            AuthzError::Unexpected(e) => Self::internal("authz", e),
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Tenancy(e) => e.into(),
            AuditError::KeyStore(e) => e.into(),
            AuditError::WriterStopped => {
                Self::unavailable("audit", anyhow::anyhow!("the audit writer has stopped"))
            }
            AuditError::Busy => Self::busy(
                "Audit verifications are all under way; retry in a minute.",
                60,
            ),
            AuditError::Unexpected(e) => Self::internal("audit", e),
        }
    }
}

impl From<PlatformError> for ApiError {
    fn from(e: PlatformError) -> Self {
        match e {
            PlatformError::Tenancy(e) => e.into(),
            PlatformError::Identity(e) => e.into(),
            PlatformError::KeyStore(e) => e.into(),
            PlatformError::Audit(e) => e.into(),
            PlatformError::Work(e) => e.into(),
            PlatformError::EmailTaken => Self::conflict(
                "A person of the tenant who is not a break-glass account has this email.",
            ),
            PlatformError::BreakGlass(e) => Self::internal("platform", anyhow::anyhow!(e)),
        }
    }
}

impl From<WorkError> for ApiError {
    fn from(e: WorkError) -> Self {
        match e {
            WorkError::Denied(action) => Self::forbidden(action),
            WorkError::Delegation(missing) => {
                let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
                let more = if missing.len() > shown.len() {
                    ", …"
                } else {
                    ""
                };
                Self::new(
                    ErrorCode::Forbidden,
                    format!(
                        "You cannot grant what you do not hold yourself: {}{more}.",
                        shown.join(", ")
                    ),
                )
            }
            WorkError::SecondFactorOwed(slug) => Self::challenge(
                ErrorCode::MfaRequired,
                "This tenant requires a passkey: pass an assertion with yours, or enroll one.",
                Challenge::webauthn(&slug, 0),
            ),
            WorkError::StepUp {
                action,
                slug,
                max_age_seconds,
            } => Self::challenge(
                ErrorCode::StepUpRequired,
                format!(
                    "`{action}` is sensitive: confirm with your passkey (an assertion younger \
                     than {} minutes), then retry.",
                    max_age_seconds / 60
                ),
                Challenge::webauthn(&slug, max_age_seconds),
            ),
            WorkError::HumanOnly(action) => Self::new(
                ErrorCode::Forbidden,
                format!("This tenant lets only people, signed in, do `{action}`."),
            ),
            WorkError::PeopleOnly(field) => Self::new(
                ErrorCode::Forbidden,
                format!(
                    "Only a person, signed in, may loosen `{field}`: a leaked key must not undo \
                     what guards the tenant against keys."
                ),
            ),
            WorkError::Tenancy(e) => e.into(),
            WorkError::Audit(e) => e.into(),
            WorkError::Authz(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<_> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let e = ApiError::internal("tenancy", anyhow::anyhow!("SELECT * FROM secrets failed"));
        let body = actix_web::body::to_bytes(e.error_response().into_body());
        let body = futures_util::FutureExt::now_or_never(body)
            .unwrap()
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("SELECT"), "{text}");
        assert!(text.contains("\"code\":\"internal\""), "{text}");
    }
}
