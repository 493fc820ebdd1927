//! Whose audit trail an event belongs to: a tenant's, kept in its schema or file, or the
//! platform's, kept in the control plane (operator calls, failed operator logins, deletions of
//! tenants whose own trail goes with them).

use std::fmt;

use crate::tenancy::Tx;

use crate::identity::operator::OperatorAuthority;
use crate::tenancy::{Access, CONTROL_SCHEMA, Databases, Slug, TenancyError};

/// One hash chain of audit events.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Trail {
    Tenant(Slug),
    Platform,
}

/// The platform trail's name: a reserved word, so that no tenant's keys or checkpoints can be
/// confused with it.
pub const PLATFORM: &str = "platform";

impl Trail {
    /// The name its checkpoints are signed under and its keys belong to.
    pub fn name(&self) -> &str {
        match self {
            Trail::Tenant(slug) => slug.as_str(),
            Trail::Platform => PLATFORM,
        }
    }

    /// A transaction on the trail's tables, for the audit module's own reading and writing.
    #[expect(
        clippy::disallowed_methods,
        reason = "the audit module appends to and verifies trails below any unit of work"
    )]
    pub(super) async fn begin(&self, dbs: &Databases, access: Access) -> Result<Tx, TenancyError> {
        match self {
            Trail::Tenant(slug) => dbs.begin(slug, access).await,
            Trail::Platform => dbs.begin_control(access).await,
        }
    }

    /// The PostgreSQL schema of the trail's tables.
    pub fn schema(&self) -> String {
        match self {
            Trail::Tenant(slug) => slug.schema(),
            Trail::Platform => CONTROL_SCHEMA.to_owned(),
        }
    }
}

/// Runs `read` in a read-only transaction on the platform's own trail, for the operator.
pub async fn read_platform_trail<T, E: From<TenancyError>>(
    dbs: &Databases,
    _: &OperatorAuthority,
    read: impl AsyncFnOnce(&Tx) -> Result<T, E>,
) -> Result<T, E> {
    let tx = Trail::Platform.begin(dbs, Access::Read).await?;
    let value = read(&tx).await?;
    tx.commit().await.map_err(TenancyError::from)?;
    Ok(value)
}

impl From<&Slug> for Trail {
    fn from(slug: &Slug) -> Self {
        Trail::Tenant(slug.clone())
    }
}

impl fmt::Display for Trail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
