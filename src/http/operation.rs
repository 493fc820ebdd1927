//! Operations: one registration per handler gives both its route and its OpenAPI operation.
//!
//! [`operation!`](crate::operation) pairs a handler with the description its
//! `#[utoipa::path]` attribute writes (summary, text, tag, success responses and the errors
//! only the handler knows, such as a 409). Everything the handler's arguments decide — the
//! security requirement, the permission, the parameters, the request body and the errors the
//! extractors answer with — comes from their types ([`super::contract`]), so a handler cannot
//! change what it checks without its documentation changing too.

use std::collections::BTreeMap;

use actix_web::http::Method;
use actix_web::{FromRequest, Handler, Resource, Responder, guard};
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{HttpMethod, Operation as DocOperation};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Content, ContentBuilder, Ref, RefOr, Required, Response};

use super::contract::{Contract, Schemas, Security, Signature};
use super::error::ErrorCode;
use super::jose;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Registers `handler` with the description its `#[utoipa::path]` attribute generated.
#[macro_export]
macro_rules! operation {
    ($module:ident :: $handler:ident) => {
        pastey::paste! {
            $crate::http::operation::Operation::new($module::$handler, $module::[<__path_ $handler>])
        }
    };
}

/// A documented operation of the API.
pub struct Operation {
    method: HttpMethod,
    /// The path below its scope, with `{placeholders}`.
    path: String,
    resource: Box<dyn Fn(&str) -> Resource>,
    describe: fn() -> Described,
}

/// What a handler's `#[utoipa::path]` says and what its arguments declare, not yet combined.
struct Described {
    operation: DocOperation,
    contract: Contract,
    schemas: Schemas,
}

/// An operation as the OpenAPI document lists it.
pub struct Documented {
    /// The full path, with `{placeholders}`.
    pub path: String,
    pub method: HttpMethod,
    pub operation: DocOperation,
    /// Component schemas the operation refers to.
    pub schemas: Schemas,
}

impl Operation {
    /// `handler`'s route and documentation; `P` is what `#[utoipa::path]` generated for it.
    pub fn new<F, Args, P>(handler: F, _described: P) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + Signature + 'static,
        F::Output: Responder + 'static,
        P: utoipa::Path + utoipa::__dev::SchemaReferences + utoipa::__dev::Tags<'static>,
    {
        let method = P::methods().into_iter().next().unwrap_or(HttpMethod::Get);
        let method_for_route = http_method(&method);
        Operation {
            method,
            path: P::path(),
            resource: Box::new(move |path| {
                Resource::new(path)
                    .guard(guard::Method(method_for_route.clone()))
                    .to(handler.clone())
            }),
            describe: || {
                let mut contract = Contract::default();
                Args::document(&mut contract);
                let mut schemas = Vec::new();
                P::schemas(&mut schemas);
                let mut operation = P::operation();
                operation.tags = Some(P::tags().into_iter().map(str::to_owned).collect());
                Described {
                    operation,
                    contract,
                    schemas,
                }
            },
        }
    }

    /// The route, below `prefix`'s scope.
    pub fn resource(&self) -> Resource {
        (self.resource)(&self.path)
    }

    /// The operation as documented under `prefix`.
    pub fn document(&self, prefix: &str) -> Documented {
        let Described {
            mut operation,
            contract,
            mut schemas,
        } = (self.describe)();
        complete(&mut operation, contract, &mut schemas);
        Documented {
            path: format!("{prefix}{}", self.path),
            method: self.method.clone(),
            operation,
            schemas,
        }
    }
}

/// The HTTP method of a documented one.
pub fn http_method(method: &HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}

/// Completes `operation` with what its arguments declare.
fn complete(operation: &mut DocOperation, contract: Contract, schemas: &mut Schemas) {
    let requirement = match (contract.security, contract.requirement) {
        (Some(Security::Tenant), Some(r)) => {
            let on = r.on.map(|on| format!(" on {on}")).unwrap_or_default();
            let step_up = if r.sensitive {
                " Sensitive: a person needs a passkey assertion younger than the tenant's \
                 step-up age (`step_up_required` otherwise)."
            } else {
                ""
            };
            format!("Requires `{}`{on}.{step_up}", r.action)
        }
        (Some(Security::Tenant), None) if contract.self_service => {
            "Requires a credential of the tenant and no permission: any caller, about itself."
                .to_owned()
        }
        (Some(Security::Operator), _) => "Requires the operator token.".to_owned(),
        (Some(Security::Session), _) => "Requires the session cookie of a person signed in to \
                                         the tenant, and this server's `Origin`."
            .to_owned(),
        _ => "Public: no credentials.".to_owned(),
    };
    operation.description = Some(match operation.description.take() {
        Some(text) if !text.is_empty() => format!("{text}\n\n{requirement}"),
        _ => requirement,
    });
    operation.security = match contract.security {
        Some(Security::Tenant) => Some(vec![
            SecurityRequirement::new("bearer", [""; 0]),
            SecurityRequirement::new("session", [""; 0]),
        ]),
        Some(Security::Operator) => Some(vec![SecurityRequirement::new("operator", [""; 0])]),
        Some(Security::Session) => Some(vec![SecurityRequirement::new("session", [""; 0])]),
        Some(Security::Public) | None => None,
    };
    if contract.self_service {
        operation
            .extensions
            .get_or_insert_with(Default::default)
            .merge(
                ExtensionsBuilder::new()
                    .add("x-flowgate-self-service", true)
                    .build(),
            );
    }
    if let Some(r) = contract.requirement {
        let action = ExtensionsBuilder::new()
            .add("x-flowgate-action", r.action)
            .add("x-flowgate-sensitive", r.sensitive)
            .build();
        operation
            .extensions
            .get_or_insert_with(Default::default)
            .merge(action);
    }
    if !contract.parameters.is_empty() {
        operation.parameters = Some(contract.parameters.into_iter().map(RefOr::T).collect());
    }
    let tenant = contract.security == Some(Security::Tenant);
    let mut errors = contract.errors;
    if let Some(body) = contract.body {
        let mut content = Content::new(Some(body.schema));
        content.example = body.example;
        // The JWE form of the body is said in the text and `x-flowgate-payload-encryption`, not
        // as a second request media type: openapi-python-client 0.29 generates code that does
        // not import for any body with two (a template bug), and an SDK must build either way.
        operation.request_body = Some(RefOr::T(
            RequestBodyBuilder::new()
                .content(body.media_type, content)
                .required(Some(Required::True))
                .build(),
        ));
    }
    if tenant {
        document_encryption(operation);
        errors.insert(ErrorCode::NotAcceptable);
    }
    schemas.extend(contract.schemas);
    document_responses(operation, &errors);
}

/// A JWE compact serialization, as a response alternative.
fn jwe_content() -> Content {
    ContentBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "A JWE compact serialization (`alg` `dir` or `RSA-OAEP-256`, `enc` `A256GCM`) \
                     of the JSON document.",
                )),
        ))
        .build()
}

/// Every tenant operation takes and gives encrypted payloads beside plaintext JSON, and the
/// tenant may require them ([`jose::negotiate`]); says which, in the text and in
/// `x-flowgate-payload-encryption` (`tenant-settable` or `never-required`).
fn document_encryption(operation: &mut DocOperation) {
    let settable = operation
        .operation_id
        .as_deref()
        .is_none_or(|id| !jose::negotiate::NEVER_REQUIRED.contains(&id));
    let (mode, text) = if settable {
        (
            "tenant-settable",
            "Payloads may be encrypted: a request body may be sent as `application/jose` (a JWE of \
             the JSON body) and answers come as one when asked; the tenant can require it for this \
             operation (settings `payload_encryption_required`, `payload_encryption_operations`), \
             and then a plaintext body is 415 and every successful answer is a JWE.",
        )
    } else {
        (
            "never-required",
            "Payloads may be encrypted: a request body may be sent as `application/jose` (a JWE of \
             the JSON body) and answers come as one when asked; no tenant can require it here, so \
             that a requirement can always be turned off.",
        )
    };
    if let Some(description) = operation.description.as_mut() {
        description.push_str("\n\n");
        description.push_str(text);
    }
    operation
        .extensions
        .get_or_insert_with(Default::default)
        .merge(
            ExtensionsBuilder::new()
                .add("x-flowgate-payload-encryption", mode)
                .build(),
        );
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let success = status.starts_with('2');
        if success && response.content.contains_key("application/json") {
            response
                .content
                .insert(jose::MEDIA_TYPE.to_owned(), RefOr::T(jwe_content()));
        }
    }
}

/// Every response gets a description; every error response the problem schema; and every
/// status the arguments can answer with is listed, naming its codes.
fn document_responses(
    operation: &mut DocOperation,
    errors: &std::collections::BTreeSet<ErrorCode>,
) {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in errors {
        by_status
            .entry(code.status().as_u16())
            .or_default()
            .push(*code);
    }
    let responses = &mut operation.responses.responses;
    for (status, codes) in &by_status {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(Response::new(codes_text(codes))));
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let status: u16 = status.parse().unwrap_or(0);
        if response.description.is_empty() {
            response.description = actix_web::http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Response")
                .to_owned();
        }
        if status >= 400 {
            // An error body the handler declares itself (the token endpoint's RFC 6749 errors)
            // stays beside the problem document the pipeline and the extractors answer with.
            response
                .content
                .retain(|media_type, _| media_type == "application/json");
            response.content.insert(
                PROBLEM_JSON.to_owned(),
                RefOr::T(
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                ),
            );
        }
    }
}

/// "- `forbidden`: The caller may not do this." for each code.
fn codes_text(codes: &[ErrorCode]) -> String {
    codes
        .iter()
        .map(|c| format!("- `{}`: {}.", c.code(), c.title()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use crate::http::routes::catalog;

    #[test]
    fn every_request_body_has_an_example_its_handler_accepts() {
        for scope in catalog() {
            for operation in &scope.operations {
                let Some(body) = (operation.describe)().contract.body else {
                    continue;
                };
                let example = body
                    .example
                    .unwrap_or_else(|| panic!("{}: the body has no example", operation.path));
                assert!(
                    (body.accepts)(&example),
                    "{}: the handler refuses its own example {example}",
                    operation.path
                );
            }
        }
    }
}
