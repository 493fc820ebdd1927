//! The OpenAPI 3.1 document, built from the same list of operations as the routes.

use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, PartialSchema as _, ToSchema as _};

use crate::http::error::Problem;
use crate::http::routes;
use crate::http::routes::authz::ActionName;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flowgate",
        description = "Multi-tenant workflow automation whose product is its security model. \
            Tenant APIs live under `/t/{tenant}/api/v1` and take `Authorization: Bearer <API key>`; \
            platform APIs live under `/api/v1/platform` and take the operator token. Errors are \
            RFC 9457 problem documents.",
        license(name = "Apache-2.0")
    ),
    servers((url = "/")),
    modifiers(&SecuritySchemes),
    tags(
        (name = "platform", description = "Tenant onboarding (operators)"),
        (name = "users", description = "Tenant staff"),
        (name = "groups", description = "Groups of users"),
        (name = "service-accounts", description = "Non-human principals"),
        (name = "role-bindings", description = "Roles granted on scopes"),
        (name = "roles", description = "Built-in and custom roles"),
        (name = "policies", description = "Claim-based policies in Cedar"),
        (name = "authz", description = "The schema, the action catalogue, explained decisions"),
        (name = "folders", description = "Folders that nest and scope roles"),
        (name = "processes", description = "Process definitions"),
        (name = "api-keys", description = "Credentials of service accounts"),
        (name = "audit", description = "The hash-chained audit trail"),
        (name = "health", description = "Liveness, readiness, metrics"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some("A tenant API key (`fgk_…`) or access token.".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let mut operator = Http::new(HttpAuthScheme::Bearer);
        operator.description = Some("The platform operator token.".into());
        components.add_security_scheme("operator", SecurityScheme::Http(operator));
        let session = ApiKeyValue::with_description(
            "__Host-flowgate-session-TENANT",
            "A browser session, set by signing in at `/t/{tenant}/auth/…`, in a cookie whose \
             name ends with the tenant's slug in place of `TENANT` \
             (`__Host-flowgate-session-acme`): it opens only the tenant it was made in, and a \
             browser keeps one per tenant. Browsers send it by themselves; changes made with it \
             must carry this server's `Origin`.",
        );
        components.add_security_scheme("session", SecurityScheme::ApiKey(ApiKey::Cookie(session)));
    }
}

/// The whole document, as served on `/openapi.json` and printed by `flowgate openapi`: every
/// operation of [`routes::catalog`], completed from its handler's signature.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    let mut schemas = Vec::new();
    for scope in routes::catalog() {
        for operation in &scope.operations {
            let documented = operation.document(scope.prefix);
            doc.paths.add_path_operation(
                documented.path,
                vec![documented.method],
                documented.operation,
            );
            schemas.extend(documented.schemas);
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    schemas.push((Problem::name().into_owned(), Problem::schema()));
    Problem::schemas(&mut schemas);
    // Referred to by `schema_with` functions, which cannot declare what they refer to.
    schemas.push((ActionName::name().into_owned(), ActionName::schema()));
    components.schemas.extend(schemas);
    doc
}

/// The document as committed in `openapi/flowgate.json`.
pub fn document_json() -> String {
    let mut value = serde_json::to_value(document()).unwrap_or_default();
    sort_extensions(&mut value);
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}

/// Specification extensions (`x-…`) are kept in hash maps, so an object with several of them
/// would list them in a new order on every run: the committed text lists them sorted, after the
/// object's other members.
fn sort_extensions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let mut members: Vec<_> = std::mem::take(map).into_iter().collect();
            members.sort_by(
                |(a, _), (b, _)| match (a.starts_with("x-"), b.starts_with("x-")) {
                    (true, true) => a.cmp(b),
                    (x, y) => x.cmp(&y),
                },
            );
            map.extend(members);
            map.values_mut().for_each(sort_extensions);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_extensions),
        _ => {}
    }
}
