//! Audit: an append-only, hash-chained trail per tenant, with signed checkpoints.
//!
//! Invariants:
//! - Every event of a tenant has a sequence number without gaps, and its hash covers the previous
//!   event's hash and every field of the event ([`chain`]). Appending locks the chain head, so
//!   the chain is a total order even with many writers and replicas.
//! - An event that records a change is written in the same transaction as the change
//!   (`tenancy::work::WriteTx`); every other event goes through the [`AuditWriter`], which commits
//!   events in groups and answers each request only after its event is durable.
//! - Checkpoints sign `(seq, hash)` with the tenant's key in the key store, so that rewriting the
//!   chain from some point on is detected even by someone who can write the database; the newest
//!   one is also kept in the key store ([`anchor`]), so deleting checkpoints does not help.
//! - Events carry no secrets: no credentials, tokens, keys or secret values go into `details`.

pub mod anchor;
pub mod chain;
mod event;
mod refusals;
mod trail;
pub mod verify;
mod writer;

pub use event::{AuditEvent, Outcome, RequestMeta};
pub use trail::{PLATFORM, Trail, read_platform_trail};
pub use verify::{VerifyReport, verify};
pub use writer::{AuditWriter, UnderWay};

use crate::keystore::KeyStoreError;
use crate::tenancy::TenancyError;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    #[error(transparent)]
    KeyStore(#[from] KeyStoreError),
    #[error("the audit writer has stopped")]
    WriterStopped,
    /// A verification found no turn to walk its trail in time (see `verify`).
    #[error("audit verifications are all under way")]
    Busy,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sea_orm::DbErr> for AuditError {
    fn from(e: sea_orm::DbErr) -> Self {
        AuditError::Tenancy(e.into())
    }
}
