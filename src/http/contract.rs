//! What an operation promises, derived from its handler's signature.
//!
//! Each handler argument type states what it adds to the operation's contract: the credential
//! it demands and the decision it makes ([`Guard`]s: `Authorized<A, T>`, `Operator<A>`,
//! [`Public`]), the parameters it reads, the body it parses, and the error codes it can answer
//! with. The route table and the OpenAPI document are built from the same registration
//! ([`super::operation`]), so the document cannot promise what the code does not do, and the
//! code cannot do what the document does not say.
//!
//! Invariant: the first argument of every operation is a [`Guard`]; a handler without one does
//! not compile into an operation. Guards complete before any body is read, so a caller without
//! the credential or the permission learns nothing from body errors.

use std::collections::BTreeSet;
use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorCode};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Anyone; the operation says so in its signature.
    Public,
    /// The platform operator token.
    Operator,
    /// A credential of the tenant in the path.
    Tenant,
    /// The session cookie of a person signed in to the tenant in the path (the WebAuthn
    /// ceremonies), with this server's `Origin`.
    Session,
}

/// The permission an operation requires.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    /// The action's name (`user.create`, `tenant.delete`).
    pub action: &'static str,
    /// Where it is decided, for the description (`the folder of the path`); `None` for the
    /// tenant or the platform as a whole.
    pub on: Option<&'static str>,
    /// A person needs a recent passkey assertion (step-up) for it.
    pub sensitive: bool,
}

/// A request body.
pub struct Body {
    /// `application/json`, or `application/x-www-form-urlencoded` for the token endpoint.
    pub media_type: &'static str,
    pub schema: RefOr<Schema>,
    /// The example its schema gives, shown with the operation.
    pub example: Option<serde_json::Value>,
    /// Whether a value is a body the handler accepts: the example must be one.
    pub accepts: fn(&serde_json::Value) -> bool,
}

/// Component schemas by name, as utoipa collects them.
pub type Schemas = Vec<(String, RefOr<Schema>)>;

/// An operation's contract, as its arguments declare it.
#[derive(Default)]
pub struct Contract {
    pub security: Option<Security>,
    pub requirement: Option<Requirement>,
    /// A tenant operation any authenticated principal may call about itself (`/me`).
    pub self_service: bool,
    /// Path and query parameters, in the order the arguments declare them.
    pub parameters: Vec<Parameter>,
    pub body: Option<Body>,
    /// Every error code the arguments can answer with.
    pub errors: BTreeSet<ErrorCode>,
    /// Component schemas the parameters and the body refer to.
    pub schemas: Schemas,
}

impl Contract {
    /// Adds `parameters` unless one of the same name and location is already declared.
    pub fn parameters(&mut self, parameters: Vec<Parameter>) {
        for parameter in parameters {
            let known = self
                .parameters
                .iter()
                .any(|p| p.name == parameter.name && p.parameter_in == parameter.parameter_in);
            if !known {
                self.parameters.push(parameter);
            }
        }
    }

    pub fn errors(&mut self, codes: &[ErrorCode]) {
        self.errors.extend(codes.iter().copied());
    }

    /// Declares `T`'s component schema and everything it refers to.
    pub fn schema<T: ToSchema>(&mut self) {
        self.schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(&mut self.schemas);
    }
}

/// A handler argument that contributes to its operation's contract.
pub trait Documented {
    fn document(contract: &mut Contract);
}

/// A handler argument that decides who may call: it must be the first.
pub trait Guard: Documented {}

/// The arguments of a handler: a [`Guard`] first, then [`Documented`] extractors.
pub trait Signature {
    fn document(contract: &mut Contract);
}

macro_rules! signatures {
    ($(($($arg:ident),*))*) => {
        $(
            impl<G: Guard, $($arg: Documented),*> Signature for (G, $($arg,)*) {
                fn document(contract: &mut Contract) {
                    G::document(contract);
                    $($arg::document(contract);)*
                }
            }
        )*
    };
}

signatures! {
    ()
    (A)
    (A, B)
    (A, B, C)
    (A, B, C, D)
    (A, B, C, D, E)
}

/// The guard of an operation that anyone may call (health probes). Saying so is required: an
/// operation without a guard does not compile.
pub struct Public;

impl FromRequest for Public {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(_: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Public))
    }
}

impl Documented for Public {
    fn document(contract: &mut Contract) {
        contract.security = Some(Security::Public);
    }
}

impl Guard for Public {}

impl<T: 'static> Documented for web::Data<T> {
    fn document(_: &mut Contract) {}
}

impl Documented for HttpRequest {
    fn document(_: &mut Contract) {}
}

/// Query strings refuse unknown and malformed parameters (422, see `http::query_config`).
impl<T: IntoParams> Documented for web::Query<T> {
    fn document(contract: &mut Contract) {
        contract.parameters(T::into_params(|| Some(ParameterIn::Query)));
        contract.errors(&[ErrorCode::ValidationFailed]);
    }
}

/// A path naming no object is 404.
impl<T: IntoParams> Documented for web::Path<T> {
    fn document(contract: &mut Contract) {
        contract.parameters(T::into_params(|| Some(ParameterIn::Path)));
        contract.errors(&[ErrorCode::NotFound]);
    }
}
