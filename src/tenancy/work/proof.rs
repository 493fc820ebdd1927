//! Proofs of authorization: values that only a decision (or the operator's authority) makes.
//!
//! Invariant: an [`Allowed<A>`] exists only if the tenant's policies allowed its context's
//! principal the action `A` on its resource; it cannot be built or cloned outside this module,
//! and it opens write transactions only in the context that decided it. Every write transaction is opened from a [`Proof`], and every domain
//! function that changes tenant data also takes a [`Permit`] for its own action, so a change
//! that nobody authorized does not compile.

use std::marker::PhantomData;

use crate::authz::Action;
use crate::authz::Resource;
use crate::authz::actions::{
    ApiKeyCreate, ApiKeyRevoke, GroupCreate, GroupMemberAdd, PasskeyReset, RoleBindingCreate,
    ServiceAccountCreate, SessionRevoke, UserCreate,
};
use crate::identity::operator::OperatorAuthority;
use crate::identity::{Principal, UserCredential};
use crate::signin::Vouched;

/// The tenant's policies allowed the actor of a unit of work to do `A` on [`Self::resource`].
#[derive(Debug)]
pub struct Allowed<A: Action> {
    resource: Resource,
    /// Ties the proof to the context that decided it.
    context: u64,
    _action: PhantomData<fn() -> A>,
}

impl<A: Action> Allowed<A> {
    /// Made by [`super::TenantContext::authorize`] only.
    pub(super) fn new(resource: Resource, context: u64) -> Self {
        Allowed {
            resource,
            context,
            _action: PhantomData,
        }
    }

    /// What the decision was about.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }
}

/// The platform operator is onboarding a tenant: the bootstrap service account, its Admin
/// binding and its first API key are made by the operator's authority, before any policy
/// of the tenant exists.
#[derive(Debug)]
pub struct Onboarding {
    _made_by_the_operator: (),
}

impl Onboarding {
    /// Only the operator onboards.
    pub fn new(_: &OperatorAuthority) -> Self {
        Onboarding {
            _made_by_the_operator: (),
        }
    }
}

/// A person's own sign-in: an identity provider vouched for them (the just-in-time user, its
/// mapped groups and the new session are made under it), or their session ends by their own
/// hand. Nobody's policy decides these; the provider's word or the session itself does.
#[derive(Debug)]
pub struct SignIn {
    action: &'static str,
}

impl SignIn {
    /// The provider vouched for the person: only a verified login makes a [`Vouched`].
    pub fn vouched(_: &Vouched) -> Self {
        SignIn {
            action: "auth.login",
        }
    }

    /// A break-glass step vouches: the one-time enrollment token or the passkey assertion,
    /// checked in the transaction this proof opens, before anything is made under it.
    pub fn break_glass(action: &'static str) -> Self {
        SignIn { action }
    }

    /// The person manages their own sessions (ends one of them); `None` unless `principal` is
    /// a person. Returns the proof and the person's user id.
    pub fn own_sessions(principal: &Principal, action: &'static str) -> Option<(Self, uuid::Uuid)> {
        match principal {
            Principal::User { id, .. } => Some((SignIn { action }, *id)),
            Principal::ServiceAccount { .. } => None,
        }
    }

    /// The person ends their own session; `None` unless `principal` signed in with one.
    pub fn own_session(principal: &Principal, action: &'static str) -> Option<(Self, uuid::Uuid)> {
        match principal {
            Principal::User {
                credential: UserCredential::Session { id, .. },
                ..
            } => Some((SignIn { action }, *id)),
            Principal::User {
                credential: UserCredential::AccessToken { .. },
                ..
            }
            | Principal::ServiceAccount { .. } => None,
        }
    }
}

/// A signal fired and the tenant attached an automatic response to it: the tenant's own
/// configuration (changed only under `settings.manage`) is the authority. Responses only take
/// access away — revoke keys, end sessions, deactivate a person — so this proof permits
/// nothing else.
#[derive(Debug)]
pub struct AutomaticResponse {
    _made_by_a_signal: (),
}

impl AutomaticResponse {
    /// Only a fired signal makes one.
    pub fn new(_: &crate::signals::Fired) -> Self {
        AutomaticResponse {
            _made_by_a_signal: (),
        }
    }
}

/// Evidence that a change may be made in a unit of work: what opens its write transaction.
pub trait Proof: sealed::Sealed {
    /// The action the change is recorded under.
    fn action(&self) -> &'static str;

    /// Whether the proof was made by the unit of work numbered `context`.
    fn decided_by(&self, context: u64) -> bool;
}

/// A proof that covers the action `A`: what a domain function changing tenant data for `A`
/// requires.
pub trait Permit<A: Action>: Proof {}

impl<A: Action> Proof for Allowed<A> {
    fn action(&self) -> &'static str {
        A::NAME
    }

    fn decided_by(&self, context: u64) -> bool {
        self.context == context
    }
}

impl<A: Action> Permit<A> for Allowed<A> {}

impl Proof for Onboarding {
    fn action(&self) -> &'static str {
        "tenant.create"
    }

    /// Onboarding is no principal's decision.
    fn decided_by(&self, _: u64) -> bool {
        false
    }
}

impl Permit<ServiceAccountCreate> for Onboarding {}
impl Permit<RoleBindingCreate> for Onboarding {}
impl Permit<ApiKeyCreate> for Onboarding {}
/// The operator creates a tenant's break-glass account, and on a new enrollment removes its
/// passkeys and ends its sessions (`signin::break_glass` touches no other person).
impl Permit<UserCreate> for Onboarding {}
impl Permit<PasskeyReset> for Onboarding {}

impl Proof for SignIn {
    fn action(&self) -> &'static str {
        self.action
    }

    /// A sign-in is no principal's decision.
    fn decided_by(&self, _: u64) -> bool {
        false
    }
}

/// Groups the provider's mappings grant are created and joined at sign-in.
impl Permit<GroupCreate> for SignIn {}
impl Permit<GroupMemberAdd> for SignIn {}
/// A person ends their own sessions (the callers pass only the person's own user id).
impl Permit<SessionRevoke> for SignIn {}

impl Proof for AutomaticResponse {
    fn action(&self) -> &'static str {
        "security.response"
    }

    /// A response is no principal's decision.
    fn decided_by(&self, _: u64) -> bool {
        false
    }
}

/// Revoking a service account's keys and OAuth clients, ending a person's sessions. (A person's
/// deactivation takes the response itself: a `Permit<UserUpdate>` would also change claims.)
impl Permit<ApiKeyRevoke> for AutomaticResponse {}
impl Permit<SessionRevoke> for AutomaticResponse {}

mod sealed {
    /// Only this module's proofs are proofs.
    pub trait Sealed {}

    impl<A: crate::authz::Action> Sealed for super::Allowed<A> {}
    impl Sealed for super::Onboarding {}
    impl Sealed for super::SignIn {}
    impl Sealed for super::AutomaticResponse {}
}
