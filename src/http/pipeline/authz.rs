//! Stage 5, authorization: the handler's first argument, [`Authorized<A, T>`], resolves the
//! target `T` that the path names and asks the request's [`TenantContext`] for the decision of
//! `A` on it; its extraction is the proof, and it completes before any body is read.

use std::marker::PhantomData;
use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use futures_util::future::LocalBoxFuture;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use crate::authz::schema::EntityKind;
use crate::authz::{Action, Resource, process_folder};
use crate::http::contract::{Contract, Documented, Guard, Requirement, Security};
use crate::http::error::{ApiError, ErrorCode};
use crate::tenancy::slug::SLUG_PATTERN;
use crate::tenancy::work::{Allowed, TenantContext, WorkError, WriteTx};

/// Where an action applies, resolved from the request path before the decision.
pub trait Target: 'static {
    /// Where the decision is made, for the documentation (`the folder of the path`); `None` for
    /// the tenant.
    const ON: Option<&'static str>;

    fn resolve(
        context: &TenantContext,
        http: &HttpRequest,
    ) -> impl Future<Output = Result<Resource, ApiError>>;
}

/// The tenant itself: tenant-wide actions such as listing users.
pub struct OnTenant;

/// The folder `{id}` of the path.
pub struct OnFolder;

/// The process `{id}` of the path.
pub struct OnProcess;

impl Target for OnTenant {
    const ON: Option<&'static str> = None;

    async fn resolve(context: &TenantContext, _: &HttpRequest) -> Result<Resource, ApiError> {
        Ok(context.policies().tenant())
    }
}

impl Target for OnFolder {
    const ON: Option<&'static str> = Some("the folder");

    async fn resolve(context: &TenantContext, http: &HttpRequest) -> Result<Resource, ApiError> {
        let id = path_id(http)?;
        context
            .policies()
            .folder(id)
            .ok_or_else(ApiError::not_found)
    }
}

impl Target for OnProcess {
    const ON: Option<&'static str> = Some("the process");

    async fn resolve(context: &TenantContext, http: &HttpRequest) -> Result<Resource, ApiError> {
        let id = path_id(http)?;
        let tx = context.read().await?;
        let folder = process_folder(&tx, id).await?;
        tx.commit().await?;
        folder
            .and_then(|folder| {
                context
                    .policies()
                    .resource_in(EntityKind::Process, id.to_string(), folder)
            })
            .ok_or_else(ApiError::not_found)
    }
}

/// The secret named `{name}` in the path.
pub struct OnSecret;

impl Target for OnSecret {
    const ON: Option<&'static str> = Some("the secret");

    async fn resolve(context: &TenantContext, http: &HttpRequest) -> Result<Resource, ApiError> {
        let name = http.match_info().get("name").unwrap_or_default();
        if crate::secrets::check_name(name).is_err() {
            return Err(ApiError::not_found());
        }
        let tx = context.read().await?;
        let secret = crate::secrets::by_name(&tx, name).await?;
        tx.commit().await?;
        secret
            .and_then(|s| {
                context
                    .policies()
                    .resource_in(EntityKind::Secret, s.id.to_string(), s.folder_id)
            })
            .ok_or_else(ApiError::not_found)
    }
}

/// A handler argument proving that the caller may do `A` on the target `T` of the request
/// (the tenant unless said otherwise).
pub struct Authorized<A: Action, T: Target = OnTenant> {
    context: TenantContext,
    allowed: Allowed<A>,
    _target: PhantomData<T>,
}

impl<A: Action, T: Target> Authorized<A, T> {
    /// The resource the decision was about.
    pub fn resource(&self) -> &Resource {
        self.allowed.resource()
    }

    /// The proof of the decision, for the domain functions that make the change.
    pub fn allowed(&self) -> &Allowed<A> {
        &self.allowed
    }

    /// The write transaction of the change this decision allowed.
    pub async fn write(&self) -> Result<WriteTx, ApiError> {
        Ok(self.context.write(&self.allowed).await?)
    }
}

impl<A: Action, T: Target> Deref for Authorized<A, T> {
    type Target = TenantContext;

    fn deref(&self) -> &TenantContext {
        &self.context
    }
}

impl<A: Action, T: Target> FromRequest for Authorized<A, T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    /// Resolves the target and decides. Handlers read their bodies only afterwards (see
    /// `JsonBody`), so a denial always wins over a body error.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let context = context_of(req);
        let http = req.clone();
        Box::pin(async move {
            let context = context?;
            let resource = T::resolve(&context, &http).await?;
            let allowed = context.authorize::<A>(resource)?;
            Ok(Authorized {
                context,
                allowed,
                _target: PhantomData,
            })
        })
    }
}

/// A tenant operation: the tenant's bearer credential, the decision of `A` on `T`, and what the
/// pipeline and the decision can answer.
impl<A: Action, T: Target> Documented for Authorized<A, T> {
    fn document(contract: &mut Contract) {
        contract.security = Some(Security::Tenant);
        contract.requirement = Some(Requirement {
            action: A::NAME,
            on: T::ON,
            sensitive: A::SENSITIVE,
        });
        contract.parameters(vec![tenant_parameter()]);
        contract.errors(&[
            ErrorCode::Unauthenticated,
            ErrorCode::InvalidCredentials,
            ErrorCode::MfaRequired,
            ErrorCode::Forbidden,
            ErrorCode::TenantSuspended,
            ErrorCode::NotFound,
            ErrorCode::RateLimited,
            ErrorCode::DependencyUnavailable,
        ]);
        if A::SENSITIVE {
            contract.errors(&[ErrorCode::StepUpRequired]);
        }
    }
}

impl<A: Action, T: Target> Guard for Authorized<A, T> {}

/// The `{tenant}` path parameter of every operation under a tenant.
pub fn tenant_parameter() -> Parameter {
    ParameterBuilder::new()
        .name("tenant")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The tenant's slug."))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(SLUG_PATTERN)),
        ))
        .build()
}

fn path_id(http: &HttpRequest) -> Result<uuid::Uuid, ApiError> {
    http.match_info()
        .get("id")
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .ok_or_else(ApiError::not_found)
}

/// A handler argument for operations any authenticated caller may make about themselves
/// (`/me/sessions`…): the caller's unit of work, with no decision to make. A person whose
/// session owes the tenant a second factor is refused (see [`Identified`]).
pub struct Caller(TenantContext);

impl Deref for Caller {
    type Target = TenantContext;

    fn deref(&self) -> &TenantContext {
        &self.0
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(context_of(req).and_then(|context| {
            if context.principal().owes_second_factor() {
                return Err(WorkError::SecondFactorOwed(context.slug().clone()).into());
            }
            Ok(Caller(context))
        }))
    }
}

/// The tenant's credential, and nothing to decide.
impl Documented for Caller {
    fn document(contract: &mut Contract) {
        Authorized::<crate::authz::actions::UserRead>::document(contract);
        contract.requirement = None;
        contract.self_service = true;
        contract.errors.remove(&ErrorCode::Forbidden);
    }
}

impl Guard for Caller {}

/// A handler argument for the few operations open to any authenticated caller, even a person
/// whose session still owes the tenant a second factor: who am I, and which passkeys do I have
/// (what the sign-in page needs to ask for the assertion or an enrollment).
pub struct Identified(TenantContext);

impl Deref for Identified {
    type Target = TenantContext;

    fn deref(&self) -> &TenantContext {
        &self.0
    }
}

impl FromRequest for Identified {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(context_of(req).map(Identified))
    }
}

impl Documented for Identified {
    fn document(contract: &mut Contract) {
        Caller::document(contract);
        contract.errors.remove(&ErrorCode::MfaRequired);
    }
}

impl Guard for Identified {}

/// The unit of work the pipeline opened for the request.
fn context_of(req: &HttpRequest) -> Result<TenantContext, ApiError> {
    req.extensions()
        .get::<TenantContext>()
        .cloned()
        .ok_or_else(|| {
            ApiError::internal(
                "http",
                anyhow::anyhow!("tenant route outside the tenant pipeline"),
            )
        })
}
