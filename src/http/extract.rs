//! Extractors: the JSON body, form bodies and object ids in the path.
//!
//! Authentication happens before any of these run (in `tenant::gate` for tenant routes, and in
//! `operator::Operator`, which completes on its first poll), and bodies are read only by the handler,
//! after authorization: an unauthenticated caller always gets 401 and an unauthorized one 403,
//! never a body error.

use std::collections::BTreeMap;
use std::future::{Future, Ready, ready};
use std::marker::PhantomData;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use utoipa::ToSchema;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{Ref, RefOr, Schema};

use super::contract::{Body, Contract, Documented};
use super::error::{ApiError, ErrorCode, FieldError};
use super::jose;
use crate::app::AppState;
use crate::tenancy::Slug;
use crate::tenancy::slug::SLUG_PATTERN;

/// How long a body may take to arrive when the server has no settings at hand (tests of
/// extractors alone); the server's own is `FLOWGATE_BODY_TIMEOUT_MS`.
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// The body limit when the server has no settings at hand.
const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// How much of a body a request may send, and how long it may take: a client that trickles its
/// body holds a handler (and, under a tenant, a place the tenant's deletion waits for) no longer
/// than this.
#[derive(Debug, Clone, Copy)]
struct BodyBounds {
    limit: usize,
    timeout: Duration,
}

impl BodyBounds {
    fn of(req: &HttpRequest) -> Self {
        match req.app_data::<web::Data<AppState>>() {
            Some(state) => BodyBounds {
                limit: state.settings.body_limit,
                timeout: state.settings.body_timeout,
            },
            None => BodyBounds {
                limit: DEFAULT_BODY_LIMIT,
                timeout: DEFAULT_BODY_TIMEOUT,
            },
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unread {
    /// The connection failed or the body was malformed on the wire.
    Broken,
    TooLarge,
    /// It had not all arrived when its time was up.
    TooSlow,
}

/// Reads the whole of `payload` within `bounds`.
async fn read_body(mut payload: Payload, bounds: BodyBounds) -> Result<web::BytesMut, Unread> {
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| Unread::Broken)?;
            if body.len() + chunk.len() > bounds.limit {
                return Err(Unread::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(bounds.timeout, read)
        .await
        .unwrap_or(Err(Unread::TooSlow))
}

/// A JSON request body, size-limited and strictly typed, read only when the handler asks:
/// handlers call [`JsonBody::parse`] after their authorization argument was extracted, so that a
/// caller without the permission learns nothing from body errors. Unknown fields, wrong types
/// and missing fields are 422 naming the field; syntax errors are 400; another content type is
/// 415; a body over the limit is 413; one that has not all arrived within the body timeout is
/// 408.
///
/// On the tenant API the body may also be a JWE (`application/jose`, see [`super::jose`]): the
/// limit bounds the encrypted body, and what it decrypts to is parsed exactly as a plaintext
/// body. A plaintext body on an operation that requires encryption is 415
/// `encryption_required`.
pub struct JsonBody<T> {
    payload: Payload,
    /// A content-type or declared-length problem, reported when the body is parsed.
    refused: Option<ApiError>,
    /// The body is declared `application/jose`.
    encrypted: bool,
    /// The request, for its tenant context and its payload negotiation.
    http: HttpRequest,
    bounds: BodyBounds,
    _type: PhantomData<T>,
}

impl<T> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bounds = BodyBounds::of(req);
        let encrypted = jose::negotiate::is_jose(req.headers());
        let content_type = if encrypted {
            Ok(())
        } else {
            check_content_type(req)
        };
        ready(Ok(JsonBody {
            payload: payload.take(),
            refused: content_type
                .and_then(|()| check_declared_length(req, bounds.limit))
                .err(),
            encrypted,
            http: req.clone(),
            bounds,
            _type: PhantomData,
        }))
    }
}

impl<T: DeserializeOwned> JsonBody<T> {
    /// Reads and checks the body.
    pub async fn parse(self) -> Result<T, ApiError> {
        if let Some(refused) = self.refused {
            return Err(refused);
        }
        if !self.encrypted && jose::negotiate::plaintext_refused(&self.http) {
            return Err(ApiError::new(
                ErrorCode::EncryptionRequired,
                "This tenant requires this operation's body to be encrypted: send a JWE as \
                 `Content-Type: application/jose`.",
            ));
        }
        let body = read_body(self.payload, self.bounds)
            .await
            .map_err(|unread| match unread {
                Unread::Broken => ApiError::new(
                    ErrorCode::MalformedRequest,
                    "The request body could not be read.",
                ),
                Unread::TooLarge => too_large(self.bounds.limit),
                Unread::TooSlow => ApiError::new(
                    ErrorCode::RequestTimeout,
                    format!(
                        "The request body did not arrive within {} s.",
                        self.bounds.timeout.as_secs_f64()
                    ),
                ),
            })?;
        if self.encrypted {
            let plaintext = jose::negotiate::decrypt_request(&self.http, &body).await?;
            parse_json(&plaintext)
        } else {
            parse_json(&body)
        }
    }
}

impl<T: ToSchema + DeserializeOwned> Documented for JsonBody<T> {
    fn document(contract: &mut Contract) {
        contract.schema::<T>();
        let example = match T::schema() {
            RefOr::T(Schema::Object(object)) => {
                object.examples.into_iter().next().or(object.example)
            }
            _ => None,
        };
        contract.body = Some(Body {
            media_type: "application/json",
            schema: Ref::from_schema_name(T::name()).into(),
            example,
            accepts: |value| parse_json::<T>(value.to_string().as_bytes()).is_ok(),
        });
        contract.errors(&[
            ErrorCode::MalformedRequest,
            ErrorCode::RequestTimeout,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::ValidationFailed,
        ]);
        if contract.security == Some(super::contract::Security::Tenant) {
            contract.errors(&[
                ErrorCode::InvalidJwe,
                ErrorCode::UnsupportedJwe,
                ErrorCode::EncryptionRequired,
            ]);
        }
    }
}

fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Send the body as `Content-Type: application/json` (or, on the tenant API, as a JWE \
             with `Content-Type: application/jose`).",
        ))
    }
}

fn check_declared_length(req: &HttpRequest, limit: usize) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(n) if n > limit => Err(too_large(limit)),
        _ => Ok(()),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("The request body is larger than {limit} bytes."),
    )
}

/// Parses `body` as `T`, classifying errors as syntax (400) or shape (422, with the field path).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let malformed = |e: serde_json::Error| {
        ApiError::new(
            ErrorCode::MalformedRequest,
            format!(
                "The body is not valid JSON: {}",
                strip_position(&e.to_string())
            ),
        )
    };
    if escapes_nul(body) {
        return Err(ApiError::validation(vec![FieldError {
            field: String::new(),
            message: "text may not contain the NUL character (\\u0000)".to_owned(),
        }]));
    }
    // Every body is an object: serde would also read a struct from an array of its fields.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(_) => ApiError::validation(vec![FieldError {
                field: String::new(),
                message: "the body must be a JSON object".to_owned(),
            }]),
            Err(e) => malformed(e),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => ApiError::validation(vec![FieldError {
                field: if path == "." { String::new() } else { path },
                message: without_value(&strip_position(&inner.to_string())),
            }]),
            _ => malformed(inner),
        }
    })?;
    de.end().map_err(malformed)?;
    Ok(value)
}

/// Whether a JSON text contains the escape `\u0000`. A NUL can enter a JSON string only that
/// way (raw control characters are a syntax error), and no text column can store it (PostgreSQL
/// refuses it), so it is refused up front rather than failing the write.
fn escapes_nul(body: &[u8]) -> bool {
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\\' {
            if body[i + 1..].starts_with(b"u0000") {
                return true;
            }
            // Skip the escaped character, so that `\\u0000` (a backslash, then text) is not one.
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// serde_json appends "at line L column C"; the field path says more and the rest is noise.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// serde's "invalid type: integer `1234`, expected a string" without the value the caller sent:
/// a problem document is not encrypted like the body was, and the value may be a secret's
/// (sent as a number, say). The kind of value and what was expected stay.
fn without_value(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let expected = rest.rfind("`, expected ").map_or("", |at| &rest[at + 1..]);
        return format!("unknown variant{expected}");
    }
    let kinds = ["invalid type: ", "invalid value: "];
    let Some(prefix) = kinds.iter().find(|k| message.starts_with(*k)) else {
        return message.to_owned();
    };
    let rest = &message[prefix.len()..];
    let kind_end = rest.find(['`', '"']).unwrap_or(rest.len());
    let expected = rest
        .rfind(", expected ")
        .filter(|at| *at >= kind_end)
        .map_or("", |at| &rest[at..]);
    format!("{prefix}{}{expected}", rest[..kind_end].trim_end())
}

/// The `{id}` of a path, which must be a UUID; anything else names no object (404).
#[derive(Debug, Clone, Copy)]
pub struct PathId(pub Uuid);

impl FromRequest for PathId {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.match_info()
                .get("id")
                .and_then(|id| Uuid::parse_str(id).ok())
                .map(PathId)
                .ok_or_else(ApiError::not_found),
        )
    }
}

impl Documented for PathId {
    fn document(contract: &mut Contract) {
        path_parameter(
            contract,
            "id",
            "The object's id.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        );
    }
}

/// Declares a path parameter; a value naming no object is 404.
fn path_parameter(contract: &mut Contract, name: &str, description: &str, schema: ObjectBuilder) {
    contract.parameters(vec![
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Path)
            .required(utoipa::openapi::Required::True)
            .description(Some(description))
            .schema(Some(schema))
            .build(),
    ]);
    contract.errors(&[ErrorCode::NotFound]);
}

/// The `{name}` of a path (a role's name); one that no role could have is 404.
#[derive(Debug, Clone)]
pub struct PathName(pub String);

impl FromRequest for PathName {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.match_info()
                .get("name")
                .filter(|n| n.len() <= 64 && !n.chars().any(char::is_control))
                .map(|n| PathName(n.to_owned()))
                .ok_or_else(ApiError::not_found),
        )
    }
}

impl Documented for PathName {
    fn document(contract: &mut Contract) {
        path_parameter(
            contract,
            "name",
            "The role's name.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(64)),
        );
    }
}

/// The `{slug}` of a platform path; one that no tenant could have is 404.
#[derive(Debug, Clone)]
pub struct PathSlug(pub Slug);

impl FromRequest for PathSlug {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.match_info()
                .get("slug")
                .and_then(|s| Slug::parse(s).ok())
                .map(PathSlug)
                .ok_or_else(ApiError::not_found),
        )
    }
}

impl Documented for PathSlug {
    fn document(contract: &mut Contract) {
        path_parameter(
            contract,
            "slug",
            "The tenant's slug.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(SLUG_PATTERN)),
        );
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reads an `application/x-www-form-urlencoded` body of at most `limit` bytes, arrived within
/// the server's body timeout, into its fields. A body of another
/// type, larger, slower, unreadable or repeating a field is refused with the reason, for the
/// caller to answer in its own shape (OAuth's, a sign-in page's).
pub fn read_form(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> impl Future<Output = Result<BTreeMap<String, String>, &'static str>> + 'static {
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let payload = payload.take();
    let bounds = BodyBounds {
        limit,
        ..BodyBounds::of(req)
    };
    async move {
        if !form {
            return Err("the body must be application/x-www-form-urlencoded");
        }
        let body = read_body(payload, bounds)
            .await
            .map_err(|unread| match unread {
                Unread::Broken => "the body could not be read",
                Unread::TooLarge => "the body is too large",
                Unread::TooSlow => "the body did not arrive in time",
            })?;
        let mut fields = BTreeMap::new();
        for (name, value) in url::form_urlencoded::parse(&body) {
            if fields
                .insert(name.into_owned(), value.into_owned())
                .is_some()
            {
                return Err("a parameter is repeated");
            }
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        id: u32,
    }

    fn code(body: &str) -> (ErrorCode, String) {
        let e = parse_json::<Body>(body.as_bytes()).unwrap_err();
        (e.code(), e.to_string())
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_are_422() {
        assert_eq!(code("{").0, ErrorCode::MalformedRequest);
        assert_eq!(
            code("{\"name\": \"a\"} trailing").0,
            ErrorCode::MalformedRequest
        );
        assert_eq!(code("{\"name\": 1}").0, ErrorCode::ValidationFailed);
        assert_eq!(code("{}").0, ErrorCode::ValidationFailed);
        let (c, detail) = code(r#"{"name": "a", "extra": 1}"#);
        assert_eq!(c, ErrorCode::ValidationFailed);
        assert!(detail.contains("extra"), "{detail}");
        let (_, detail) = code(r#"{"name": "a", "inner": {"id": "x"}}"#);
        assert!(detail.contains("inner.id"), "{detail}");
        assert!(parse_json::<Body>(br#"{"name": "a"}"#).is_ok());
    }

    #[test]
    fn a_value_sent_is_never_echoed_in_a_shape_error() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Secret {
            value: String,
            count: u8,
        }
        for body in [
            r#"{"value": 48151623, "count": 1}"#,
            r#"{"value": "x", "count": 48151623}"#,
            r#"{"value": "x", "count": "48151623, expected nothing"}"#,
        ] {
            let refused = parse_json::<Secret>(body.as_bytes()).unwrap_err();
            let text = format!("{refused:?}");
            assert!(!text.contains("48151623"), "{text}");
            assert!(text.contains("expected"), "{text}");
        }
        assert_eq!(
            without_value("invalid type: integer `1234`, expected a string"),
            "invalid type: integer, expected a string"
        );
        assert_eq!(
            without_value("unknown variant `s3cr3t`, expected `a` or `b`"),
            "unknown variant, expected `a` or `b`"
        );
    }

    #[test]
    fn a_body_is_an_object_never_a_sequence_of_fields() {
        assert_eq!(code(r#"["a", null]"#).0, ErrorCode::ValidationFailed);
        assert_eq!(code("[null, null]").0, ErrorCode::ValidationFailed);
        assert_eq!(code(r#""a""#).0, ErrorCode::ValidationFailed);
        assert_eq!(code("[1,").0, ErrorCode::MalformedRequest);
        assert_eq!(code("").0, ErrorCode::MalformedRequest);
        assert!(parse_json::<Body>(b" \n{\"name\": \"a\"}").is_ok());
    }

    #[test]
    fn nul_characters_are_refused_but_escaped_backslashes_are_not() {
        assert_eq!(
            code(r#"{"name": "a\u0000b"}"#).0,
            ErrorCode::ValidationFailed
        );
        assert_eq!(code(r#"{"name": "\u0000"}"#).0, ErrorCode::ValidationFailed);
        assert!(parse_json::<Body>(br#"{"name": "a\\u0000"}"#).is_ok());
        assert!(parse_json::<Body>(br#"{"name": "\\"}"#).is_ok());
        assert!(parse_json::<Body>(br#"{"name": "\u0001"}"#).is_ok());
    }
}
