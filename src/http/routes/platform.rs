//! `/api/v1/platform/tenants`: tenant onboarding for platform operators.

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use uuid::Uuid;

use super::BodyErrors;
use crate::app::AppState;
use crate::directory::clean_name;
use crate::http::error::{ApiError, FieldError, Problem};
use crate::http::extract::JsonBody;
use crate::http::middleware::request_meta;
use crate::http::operator::{self, Operator};
use crate::platform::{self, NewTenant};
use crate::tenancy::{Environment, Slug, Tenant, TenantStatus};

/// A tenant to onboard.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// `^[a-z][a-z0-9-]{1,62}$`, not a reserved word; names the tenant's URLs and schema.
    #[schema(example = "acme")]
    pub slug: String,
    /// Display name; the slug when absent.
    #[schema(example = "Acme Corp")]
    pub name: Option<String>,
    /// `dev` when absent.
    pub environment: Option<Environment>,
}

/// A tenant as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub environment: Environment,
    pub status: TenantStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
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

/// The tenant in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SlugParam {
    /// The tenant's slug.
    pub slug: String,
}

/// Errors of every operator call.
#[derive(IntoResponses)]
pub enum OperatorErrors {
    /// No or a wrong operator token.
    #[response(status = 401)]
    Unauthenticated(Problem),
    /// The database or key store is unavailable.
    #[response(status = 503)]
    Unavailable(Problem),
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        TenantView {
            id: t.id,
            slug: t.slug.to_string(),
            name: t.name,
            environment: t.environment,
            status: t.status,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

impl CreateTenant {
    fn validate(self) -> Result<NewTenant, ApiError> {
        let slug = Slug::parse(self.slug.trim()).map_err(|e| e.to_string());
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

/// A slug from the path; one that cannot exist is 404.
fn path_slug(path: &web::Path<SlugParam>) -> Result<Slug, ApiError> {
    Slug::parse(&path.slug).map_err(|_| ApiError::not_found())
}

/// Onboard a tenant.
///
/// Creates its schema (or file), keys, a `bootstrap-admin` service account bound to Admin, and
/// that account's API key, returned once. Requires the operator token.
#[utoipa::path(
    tag = "platform",
    request_body = CreateTenant,
    responses(
        (status = 201, body = CreatedTenant),
        (status = 409, body = Problem, description = "The slug is taken"),
        OperatorErrors, BodyErrors
    ),
    security(("operator" = []))
)]
#[post("/tenants")]
pub async fn create_tenant(
    _operator: Operator<operator::TenantCreate>,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<CreateTenant>,
) -> Result<HttpResponse, ApiError> {
    let new = body.parse().await?.validate()?;
    let onboarded = platform::create_tenant(&state, new, &request_meta(&req)).await?;
    Ok(HttpResponse::Created().json(CreatedTenant {
        tenant: onboarded.tenant.into(),
        admin_api_key: onboarded.admin_api_key.expose_secret().to_owned(),
    }))
}

/// List tenants.
///
/// Requires the operator token.
#[utoipa::path(
    tag = "platform",
    responses((status = 200, body = TenantList), OperatorErrors),
    security(("operator" = []))
)]
#[get("/tenants")]
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
///
/// Requires the operator token.
#[utoipa::path(
    tag = "platform",
    params(SlugParam),
    responses((status = 200, body = TenantView), (status = 404, body = Problem), OperatorErrors),
    security(("operator" = []))
)]
#[get("/tenants/{slug}")]
pub async fn get_tenant(
    _operator: Operator<operator::TenantRead>,
    state: web::Data<AppState>,
    path: web::Path<SlugParam>,
) -> Result<web::Json<TenantView>, ApiError> {
    let tenant = state
        .tenants
        .load(&path_slug(&path)?)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(web::Json(tenant.into()))
}

/// Suspend a tenant.
///
/// Its API answers 403 from the next request on, on every replica. Requires the operator token.
#[utoipa::path(
    tag = "platform",
    params(SlugParam),
    responses((status = 200, body = TenantView), (status = 404, body = Problem), OperatorErrors),
    security(("operator" = []))
)]
#[post("/tenants/{slug}/suspend")]
pub async fn suspend_tenant(
    _operator: Operator<operator::TenantSuspend>,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<SlugParam>,
) -> Result<web::Json<TenantView>, ApiError> {
    let tenant =
        platform::set_suspended(&state, &path_slug(&path)?, true, &request_meta(&req)).await?;
    Ok(web::Json(tenant.into()))
}

/// Resume a suspended tenant.
///
/// Requires the operator token.
#[utoipa::path(
    tag = "platform",
    params(SlugParam),
    responses((status = 200, body = TenantView), (status = 404, body = Problem), OperatorErrors),
    security(("operator" = []))
)]
#[post("/tenants/{slug}/resume")]
pub async fn resume_tenant(
    _operator: Operator<operator::TenantResume>,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<SlugParam>,
) -> Result<web::Json<TenantView>, ApiError> {
    let tenant =
        platform::set_suspended(&state, &path_slug(&path)?, false, &request_meta(&req)).await?;
    Ok(web::Json(tenant.into()))
}

/// Delete a tenant.
///
/// Drops its schema (or file) with all its data and destroys its keys. Requires the operator
/// token.
#[utoipa::path(
    tag = "platform",
    params(SlugParam),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem), OperatorErrors),
    security(("operator" = []))
)]
#[delete("/tenants/{slug}")]
pub async fn delete_tenant(
    _operator: Operator<operator::TenantDelete>,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<SlugParam>,
) -> Result<HttpResponse, ApiError> {
    platform::delete_tenant(&state, &path_slug(&path)?, &request_meta(&req)).await?;
    Ok(HttpResponse::NoContent().finish())
}
