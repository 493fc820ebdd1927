//! `/api/v1/platform/tenants`: tenant onboarding for platform operators.

use std::num::NonZeroU32;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use uuid::Uuid;

use crate::app::AppState;
use crate::directory::clean_name;
use crate::directory::users::{NewUser, clean_email};
use crate::http::error::{ApiError, FieldError};
use crate::http::extract::{JsonBody, PathSlug};
use crate::http::pipeline::context::request_meta;
use crate::http::pipeline::operator::{self, Operator};
use crate::platform::{self, NewTenant};
use crate::tenancy::{Environment, Slug, Tenant, TenantRateLimits, TenantStatus};

/// A tenant to onboard.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"slug": "acme", "name": "Acme Corp", "environment": "prod"}))]
pub struct CreateTenant {
    /// Lower-case letters, digits and `-`, 2 to 63, starting with a letter; not a reserved word.
    /// Names the tenant's URLs and schema.
    #[schema(schema_with = new_slug_schema)]
    pub slug: String,
    /// Display name; the slug when absent.
    #[schema(example = "Acme Corp")]
    pub name: Option<String>,
    /// `dev` when absent.
    pub environment: Option<Environment>,
}

/// A slug a new tenant can take: the format, and none of the reserved words.
fn new_slug_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(Slug::available_pattern()))
        .examples(["acme"])
}

/// A tenant as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub environment: Environment,
    pub status: TenantStatus,
    pub rate_limits: RateLimits,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// Most requests per second a tenant's rate limit can be set to.
const MAX_RATE: u32 = 1_000_000;

/// A tenant's own rate limits; `null` (or absent) keeps the server's setting
/// (`FLOWGATE_RATE_LIMIT_PRINCIPAL`, `FLOWGATE_RATE_LIMIT_TENANT`). Requests beyond them are
/// answered 429, on every replica together when the replicas share Redis.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"principal_per_second": 50, "tenant_per_second": 500}))]
pub struct RateLimits {
    /// Requests per second of one principal (a burst of two seconds' worth is allowed).
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(default)]
    pub principal_per_second: Option<u32>,
    /// Requests per second to the whole tenant.
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(default)]
    pub tenant_per_second: Option<u32>,
}

impl RateLimits {
    fn validate(self) -> Result<TenantRateLimits, ApiError> {
        let rate = |field: &str, value: Option<u32>| {
            value
                .map(|v| {
                    NonZeroU32::new(v)
                        .filter(|v| v.get() <= MAX_RATE)
                        .ok_or(FieldError {
                            field: field.into(),
                            message: format!("between 1 and {MAX_RATE} requests per second"),
                        })
                })
                .transpose()
        };
        match (
            rate("principal_per_second", self.principal_per_second),
            rate("tenant_per_second", self.tenant_per_second),
        ) {
            (Ok(principal_per_second), Ok(tenant_per_second)) => Ok(TenantRateLimits {
                principal_per_second,
                tenant_per_second,
            }),
            (principal, tenant) => Err(ApiError::validation(
                [principal.err(), tenant.err()]
                    .into_iter()
                    .flatten()
                    .collect(),
            )),
        }
    }
}

impl From<TenantRateLimits> for RateLimits {
    fn from(limits: TenantRateLimits) -> Self {
        RateLimits {
            principal_per_second: limits.principal_per_second.map(NonZeroU32::get),
            tenant_per_second: limits.tenant_per_second.map(NonZeroU32::get),
        }
    }
}

/// A new tenant and its bootstrap admin API key, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTenant {
    pub tenant: TenantView,
    #[schema(example = "fgk_…")]
    pub admin_api_key: String,
}

/// All tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    pub items: Vec<TenantView>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        TenantView {
            id: t.id,
            slug: t.slug.to_string(),
            name: t.name,
            environment: t.environment,
            status: t.status,
            rate_limits: t.rate_limits.into(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

impl CreateTenant {
    fn validate(self) -> Result<NewTenant, ApiError> {
        let slug = Slug::parse_new(self.slug.trim()).map_err(|e| e.to_string());
        let name = clean_name(self.name.as_deref().unwrap_or(&self.slug), 200);
        match (slug, name) {
            (Ok(slug), Ok(name)) => Ok(NewTenant {
                slug,
                name,
                environment: self.environment.unwrap_or(Environment::Dev),
            }),
            (slug, name) => Err(ApiError::validation(
                [("slug", slug.err()), ("name", name.err())]
                    .into_iter()
                    .filter_map(|(field, e)| {
                        e.map(|message| FieldError {
                            field: field.into(),
                            message,
                        })
                    })
                    .collect(),
            )),
        }
    }
}

/// Onboard a tenant.
///
/// Creates its schema (or file), keys, a `bootstrap-admin` service account bound to Admin, and
/// that account's API key, returned once.
#[utoipa::path(
    post,
    path = "/tenants",
    tag = "platform",
    responses((status = 201, body = CreatedTenant), (status = 409, description = "The slug is taken"))
)]
pub async fn create_tenant(
    operator: Operator<operator::TenantCreate>,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<CreateTenant>,
) -> Result<HttpResponse, ApiError> {
    let new = body.parse().await?.validate()?;
    let onboarded = platform::create_tenant(
        &state.clone().into_inner(),
        operator.authority(),
        new,
        &request_meta(&req),
    )
    .await?;
    Ok(HttpResponse::Created().json(CreatedTenant {
        tenant: onboarded.tenant.into(),
        admin_api_key: onboarded.admin_api_key.expose_secret().to_owned(),
    }))
}

/// List tenants.
#[utoipa::path(
    get,
    path = "/tenants",
    tag = "platform",
    responses((status = 200, body = TenantList))
)]
pub async fn list_tenants(
    _operator: Operator<operator::TenantList>,
    state: web::Data<AppState>,
) -> Result<web::Json<TenantList>, ApiError> {
    let items = state
        .tenants
        .list()
        .await?
        .into_iter()
        .map(TenantView::from)
        .collect();
    Ok(web::Json(TenantList { items }))
}

/// Get a tenant.
#[utoipa::path(
    get,
    path = "/tenants/{slug}",
    tag = "platform",
    responses((status = 200, body = TenantView))
)]
pub async fn get_tenant(
    _operator: Operator<operator::TenantRead>,
    state: web::Data<AppState>,
    slug: PathSlug,
) -> Result<web::Json<TenantView>, ApiError> {
    let tenant = state
        .tenants
        .load(&slug.0)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(web::Json(tenant.into()))
}

/// Set a tenant's own rate limits.
///
/// They replace the server's for this tenant from its next request on, on every replica.
#[utoipa::path(
    put,
    path = "/tenants/{slug}/rate-limits",
    tag = "platform",
    responses((status = 200, body = TenantView))
)]
pub async fn set_tenant_rate_limits(
    operator: Operator<operator::TenantLimit>,
    req: HttpRequest,
    state: web::Data<AppState>,
    slug: PathSlug,
    body: JsonBody<RateLimits>,
) -> Result<web::Json<TenantView>, ApiError> {
    let limits = body.parse().await?.validate()?;
    let tenant = platform::set_rate_limits(
        &state,
        operator.authority(),
        &slug.0,
        limits,
        &request_meta(&req),
    )
    .await?;
    Ok(web::Json(tenant.into()))
}

/// Suspend a tenant.
///
/// Its API answers 403 from the next request on, on every replica.
#[utoipa::path(
    post,
    path = "/tenants/{slug}/suspend",
    tag = "platform",
    responses((status = 200, body = TenantView))
)]
pub async fn suspend_tenant(
    operator: Operator<operator::TenantSuspend>,
    req: HttpRequest,
    state: web::Data<AppState>,
    slug: PathSlug,
) -> Result<web::Json<TenantView>, ApiError> {
    let tenant = platform::set_suspended(
        &state,
        operator.authority(),
        &slug.0,
        true,
        &request_meta(&req),
    )
    .await?;
    Ok(web::Json(tenant.into()))
}

/// Resume a suspended tenant.
#[utoipa::path(
    post,
    path = "/tenants/{slug}/resume",
    tag = "platform",
    responses((status = 200, body = TenantView))
)]
pub async fn resume_tenant(
    operator: Operator<operator::TenantResume>,
    req: HttpRequest,
    state: web::Data<AppState>,
    slug: PathSlug,
) -> Result<web::Json<TenantView>, ApiError> {
    let tenant = platform::set_suspended(
        &state,
        operator.authority(),
        &slug.0,
        false,
        &request_meta(&req),
    )
    .await?;
    Ok(web::Json(tenant.into()))
}

/// Delete a tenant.
///
/// Drops its schema (or file) with all its data and destroys its keys.
#[utoipa::path(
    delete,
    path = "/tenants/{slug}",
    tag = "platform",
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete_tenant(
    operator: Operator<operator::TenantDelete>,
    req: HttpRequest,
    state: web::Data<AppState>,
    slug: PathSlug,
) -> Result<HttpResponse, ApiError> {
    platform::delete_tenant(&state, operator.authority(), &slug.0, &request_meta(&req)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The break-glass account to create (or issue a new enrollment to).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "break-glass@acme.example", "display_name": "Emergency access"}))]
pub struct IssueBreakGlass {
    pub email: String,
    /// The email when absent.
    pub display_name: Option<String>,
}

/// A break-glass enrollment, its token shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakGlassEnrollment {
    pub user_id: Uuid,
    pub email: String,
    /// One use, until `expires_at`: `POST /t/{tenant}/auth/break-glass/enroll` with it (the
    /// tenant's sign-in page does), then enroll a passkey within 15 minutes.
    #[schema(example = "fgb_…")]
    pub enrollment_token: String,
    /// The tenant's sign-in page, where the token is entered.
    pub sign_in_page: String,
    #[serde(serialize_with = "crate::http::timestamp::serialize")]
    pub expires_at: DateTime<Utc>,
}

/// Create a tenant's break-glass account.
///
/// An emergency local Admin of the tenant who signs in with a passkey only, never through an
/// identity provider, so that a provider's outage never locks the tenant out. 201 with a
/// one-time enrollment token; for an existing break-glass account, 200 with a new token, its
/// passkeys removed and its sessions ended. Every use is a security event in the tenant's trail.
#[utoipa::path(
    post,
    path = "/tenants/{slug}/break-glass",
    tag = "platform",
    responses((status = 201, body = BreakGlassEnrollment), (status = 200, body = BreakGlassEnrollment, description = "A new enrollment for the existing account"), (status = 409, description = "A person who is not a break-glass account has the email"))
)]
pub async fn issue_break_glass(
    operator: Operator<operator::TenantBreakGlass>,
    req: HttpRequest,
    state: web::Data<AppState>,
    slug: PathSlug,
    body: JsonBody<IssueBreakGlass>,
) -> Result<HttpResponse, ApiError> {
    let body = body.parse().await?;
    let email = clean_email(&body.email);
    let name = clean_name(body.display_name.as_deref().unwrap_or(&body.email), 200);
    let new = match (email, name) {
        (Ok(email), Ok(display_name)) => NewUser {
            email,
            display_name,
        },
        (email, name) => {
            return Err(ApiError::validation(
                [("email", email.err()), ("display_name", name.err())]
                    .into_iter()
                    .filter_map(|(field, e)| {
                        e.map(|message| FieldError {
                            field: field.into(),
                            message,
                        })
                    })
                    .collect(),
            ));
        }
    };
    let issued = platform::issue_break_glass(
        &state.clone().into_inner(),
        operator.authority(),
        &slug.0,
        new,
        &request_meta(&req),
    )
    .await?;
    let enrollment = BreakGlassEnrollment {
        user_id: issued.user.id,
        email: issued.user.email,
        enrollment_token: issued.token.expose_secret().to_owned(),
        sign_in_page: format!(
            "{}/t/{}/auth/login",
            state.settings.public_url.trim_end_matches('/'),
            slug.0
        ),
        expires_at: issued.expires_at,
    };
    Ok(if issued.created {
        HttpResponse::Created().json(enrollment)
    } else {
        HttpResponse::Ok().json(enrollment)
    })
}
