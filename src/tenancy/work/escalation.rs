//! No escalation by delegation: nobody hands out more than they hold.
//!
//! Invariant: a change that gives a principal new permissions (a new credential, group or
//! claims) is refused unless the context's own principal holds every one of them, including the
//! grants that only a request context (a source address, an amount) reveals.

use super::{TenantContext, WorkError};
use crate::authz::Subject;
use crate::authz::impact::{Universe, exceeding};

impl TenantContext {
    /// Refuses a grant of `missing` actions the principal does not hold, noting the refusal for
    /// the audit event.
    pub fn refuse_delegation(&self, missing: &[String]) -> WorkError {
        self.note_denial(format!(
            "delegation: the caller lacks {}",
            missing.join(", ")
        ));
        WorkError::Delegation(missing.to_vec())
    }

    /// Refuses a change of a principal from `before` to `after` (a new group, new claims; or,
    /// with no `before`, a new credential of `after`) when it would give `after` a permission
    /// the caller does not hold.
    ///
    /// It reads in a transaction of its own: call it before opening the write transaction of
    /// the change, so that its evaluations (thousands in a large tenant) never hold the
    /// tenant's write lock.
    pub async fn refuse_escalation(
        &self,
        before: Option<&Subject>,
        after: &Subject,
    ) -> Result<(), WorkError> {
        // Grants that only a context shows (a source address, an amount) are not in a
        // default-context comparison: their whole reach must be the caller's.
        let conditional = self.engine().conditional_not_delegable(
            self.policies(),
            &self.grantor(),
            before,
            after,
        );
        let tx = self.read().await?;
        let universe = Universe::load_resources(&tx, self.policies()).await?;
        tx.commit().await?;
        let (context, before, after) = (self.clone(), before.cloned(), after.clone());
        // Thousands of decisions in a large tenant: off the worker thread.
        let excess = tokio::task::spawn_blocking(move || {
            exceeding(
                context.engine(),
                context.policies(),
                &universe,
                before.as_ref(),
                &after,
                &context.grantor(),
            )
        })
        .await
        .map_err(|e| WorkError::Tenancy(anyhow::anyhow!("escalation check failed: {e}").into()))?;
        if excess.is_empty() && conditional.is_empty() {
            return Ok(());
        }
        let mut actions: Vec<String> = excess.into_iter().map(|p| p.action).collect();
        actions.extend(conditional);
        actions.sort();
        actions.dedup();
        Err(self.refuse_delegation(&actions))
    }
}
