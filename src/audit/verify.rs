//! Verification of an audit trail's chain and its signed checkpoints.
//!
//! Detects an edited event (its hash no longer matches), a deleted or inserted event (a gap in
//! the sequence or a broken link), reordered events (broken links), a truncated tail (the head,
//! or a signed checkpoint, lies beyond the last event) and a rewritten chain (an event differs
//! from a signed checkpoint, or a checkpoint's signature fails). The anchor, a copy of the newest
//! checkpoint in the key store, must name an event of the chain with the same hash, so a
//! rewrite that also deleted the checkpoints in the database is caught too.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use entity::tenant::{audit_checkpoint, audit_event, audit_head};
use sea_orm::{
    ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use serde::Serialize;
use tokio::sync::SemaphorePermit;
use utoipa::ToSchema;

use super::chain::{Head, event_hash};
use super::trail::Trail;
use super::{AuditError, anchor};
use crate::keystore::KeyStore;
use crate::tenancy::{Access, Databases, Turn, Turns};

const PAGE: u64 = 1_000;

/// Verifications that walk a chain at once, in the whole process; others wait their turn. Each
/// reads its chain a page at a time, in a read transaction per page, so that a long walk never
/// holds one of the connections that every tenant's requests share.
static WALKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// One walk of a trail at a time, taken before a turn at [`WALKS`]: however many verifications
/// one tenant asks for at once, it walks in one of them and leaves the other to the rest.
static TRAIL_WALKS: LazyLock<Turns> = LazyLock::new(Turns::default);

/// Longest a verification waits for its turns before it is answered as busy: however long the
/// walks under way take (a tenant with a long trail, or two of them holding both slots), the
/// other tenants' verifications wait at most this, then hear when to retry.
const TURN_WAIT: Duration = Duration::from_secs(30);

/// `trail`'s turn and a turn at [`WALKS`], within `wait` ([`TURN_WAIT`]).
async fn walk_turns(
    trail: &Trail,
    wait: Duration,
) -> Result<(Turn<'static>, SemaphorePermit<'static>), AuditError> {
    let turns = async {
        let trail_turn = TRAIL_WALKS.take(trail.name()).await;
        let turn = WALKS
            .acquire()
            .await
            .map_err(|_| anyhow::anyhow!("verification is shut down"))?;
        Ok::<_, AuditError>((trail_turn, turn))
    };
    tokio::time::timeout(wait, turns)
        .await
        .map_err(|_| AuditError::Busy)?
}

/// The result of verifying one trail.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct VerifyReport {
    /// True when every event and checkpoint checked out.
    pub ok: bool,
    /// Events checked.
    pub events: u64,
    /// Signed checkpoints checked.
    pub checkpoints: u64,
    /// Sequence number of the checkpoint kept in the key store (the anchor), when there is one.
    pub anchored_seq: Option<i64>,
    /// Sequence number of the chain head.
    pub head_seq: i64,
    /// The first sequence number at which the chain is broken.
    pub first_broken_seq: Option<i64>,
    /// What is wrong there.
    pub problem: Option<String>,
}

/// Verifies `trail` from its first event to its head.
pub async fn verify(
    dbs: &Databases,
    keystore: &dyn KeyStore,
    trail: impl Into<Trail>,
) -> Result<VerifyReport, AuditError> {
    let trail = trail.into();
    // The turns before anything is read: a verification waiting for one holds nothing.
    let _turns = walk_turns(&trail, TURN_WAIT).await?;
    // The anchor first: any honest anchor read now names an event at or before the head.
    let anchor = anchor::load(keystore, &trail).await?;
    let tx = trail.begin(dbs, Access::Read).await?;
    // The newest checkpoint before the head (a statement may see a snapshot of its own): any
    // honest checkpoint read now is at or before the head read next.
    let newest = audit_checkpoint::Entity::find()
        .order_by_desc(audit_checkpoint::Column::Seq)
        .one(&tx)
        .await?
        .map_or(0, |c| c.seq);
    let head = audit_head::Entity::find_by_id(1)
        .one(&tx)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the audit chain head is missing"))?;
    // Checkpoints beyond the head cover events that are gone, or are forged: the first page of
    // them is checked.
    let beyond_head = if newest > head.seq {
        audit_checkpoint::Entity::find()
            .filter(audit_checkpoint::Column::Seq.gt(head.seq))
            .order_by_asc(audit_checkpoint::Column::Seq)
            .limit(PAGE)
            .all(&tx)
            .await?
    } else {
        Vec::new()
    };
    tx.commit().await?;
    let mut report = VerifyReport {
        ok: true,
        events: 0,
        checkpoints: 0,
        anchored_seq: anchor.as_ref().ok().and_then(|a| a.as_ref().map(|a| a.seq)),
        head_seq: head.seq,
        first_broken_seq: None,
        problem: None,
    };
    let anchored = anchor.as_ref().ok().and_then(Option::as_ref);
    let walked = walk(
        dbs,
        &trail,
        Start::genesis(),
        &head,
        anchored,
        Some(keystore),
        &mut report,
    )
    .await?;
    for checkpoint in &beyond_head {
        report.checkpoints += 1;
        let signed = anchor::signs(
            keystore,
            &trail,
            checkpoint.seq,
            &checkpoint.hash,
            &checkpoint.signature,
        );
        if !signed.await? {
            return Ok(report.broken(
                checkpoint.seq,
                "the signed checkpoint's signature is not valid",
            ));
        }
    }
    if !beyond_head.is_empty() {
        return Ok(report.broken(
            head.seq + 1,
            "events covered by a signed checkpoint are missing",
        ));
    }
    let anchor = match anchor {
        Ok(anchor) => anchor,
        Err(problem) => return Ok(report.unverifiable(problem)),
    };
    if anchor.as_ref().is_some_and(|a| a.seq > head.seq) {
        return Ok(report.broken(
            head.seq + 1,
            "events covered by the checkpoint kept in the key store are missing",
        ));
    }
    Ok(match walked {
        Some((seq, problem)) => report.broken(seq, problem),
        None => report,
    })
}

/// Whether the events from `anchor` (the first event when there is none) to `head` are still
/// the chain the anchor signed: the event it names has its hash, and each one after it links to
/// the one before, hashes to what it says, and leads to the head. The checkpoint signer signs
/// only such a head, so that a history rewritten in the database behind the anchor is never
/// signed (and the anchor never moves onto it). When the chain is already known to continue
/// the anchor up to the event `known`, the walk starts after it. The first break found, if any.
pub(super) async fn continues(
    dbs: &Databases,
    trail: &Trail,
    anchor: Option<&anchor::Anchor>,
    known: Option<&Head>,
    head: &audit_head::Model,
) -> Result<Option<(i64, &'static str)>, AuditError> {
    let start = match (known, anchor) {
        (Some(known), _) if known.seq > head.seq => {
            return Ok(Some((
                head.seq + 1,
                "events the chain was known to hold are missing",
            )));
        }
        (Some(known), _) => Start {
            seq: known.seq + 1,
            prev_hash: Some(known.hash.clone()),
        },
        (None, Some(anchor)) if anchor.seq > head.seq => {
            return Ok(Some((
                head.seq + 1,
                "events covered by the checkpoint kept in the key store are missing",
            )));
        }
        (None, Some(anchor)) => Start {
            seq: anchor.seq,
            prev_hash: None,
        },
        (None, None) => Start::genesis(),
    };
    let mut counted = VerifyReport::default();
    walk(dbs, trail, start, head, anchor, None, &mut counted).await
}

/// Where a walk begins: the first event it reads, and the hash that event links to (`None`:
/// its link is not checked, as for the anchored event, whose own hash is).
struct Start {
    seq: i64,
    prev_hash: Option<String>,
}

impl Start {
    fn genesis() -> Self {
        Start {
            seq: 1,
            prev_hash: Some(migration::AUDIT_GENESIS_HASH.to_owned()),
        }
    }
}

/// Walks the events from `start` up to `head` a page at a time, counting them in `report`; with
/// the key store, the signed checkpoints among them too (each against its event and by its
/// signature, after the page's transaction has ended, so that a slow key store never holds a
/// database connection). The first break found, in the order of the chain, if any.
async fn walk(
    dbs: &Databases,
    trail: &Trail,
    start: Start,
    head: &audit_head::Model,
    anchor: Option<&anchor::Anchor>,
    signatures: Option<&dyn KeyStore>,
    report: &mut VerifyReport,
) -> Result<Option<(i64, &'static str)>, AuditError> {
    let mut expected = start.seq;
    let mut prev_hash = start.prev_hash;
    loop {
        let tx = trail.begin(dbs, Access::Read).await?;
        let page = audit_event::Entity::find()
            .filter(audit_event::Column::Seq.gte(expected))
            .filter(audit_event::Column::Seq.lte(head.seq))
            .order_by_asc(audit_event::Column::Seq)
            .limit(PAGE)
            .all(&tx)
            .await?;
        let last = page.last().map(|row| row.seq);
        let checkpoints: BTreeMap<i64, audit_checkpoint::Model> = match (signatures, last) {
            (Some(_), Some(last)) => audit_checkpoint::Entity::find()
                .filter(audit_checkpoint::Column::Seq.gte(expected))
                .filter(audit_checkpoint::Column::Seq.lte(last))
                .all(&tx)
                .await?
                .into_iter()
                .map(|c| (c.seq, c))
                .collect(),
            _ => BTreeMap::new(),
        };
        tx.commit().await?;
        if page.is_empty() {
            break;
        }
        for row in page {
            if row.seq != expected {
                return Ok(Some((expected, "the event is missing")));
            }
            if prev_hash
                .as_ref()
                .is_some_and(|prev| *prev != row.prev_hash)
            {
                return Ok(Some((
                    row.seq,
                    "the event does not link to the one before it",
                )));
            }
            if event_hash(&row) != row.hash {
                return Ok(Some((
                    row.seq,
                    "the event was changed after it was written",
                )));
            }
            if let Some(checkpoint) = checkpoints.get(&row.seq) {
                if checkpoint.hash != row.hash {
                    return Ok(Some((
                        row.seq,
                        "the event differs from its signed checkpoint",
                    )));
                }
                if let Some(keystore) = signatures {
                    report.checkpoints += 1;
                    let signed = anchor::signs(
                        keystore,
                        trail,
                        row.seq,
                        &checkpoint.hash,
                        &checkpoint.signature,
                    );
                    if !signed.await? {
                        return Ok(Some((
                            row.seq,
                            "the signed checkpoint's signature is not valid",
                        )));
                    }
                }
            }
            if anchor.is_some_and(|a| a.seq == row.seq && a.hash != row.hash) {
                return Ok(Some((
                    row.seq,
                    "the event differs from the checkpoint kept in the key store",
                )));
            }
            prev_hash = Some(row.hash);
            expected += 1;
            report.events += 1;
        }
    }
    if expected - 1 != head.seq {
        return Ok(Some((expected, "events up to the chain head are missing")));
    }
    if prev_hash.as_deref() != Some(head.hash.as_str()) {
        return Ok(Some((
            head.seq,
            "the chain head does not match the last event",
        )));
    }
    Ok(None)
}

impl VerifyReport {
    /// The chain cannot be trusted, though no event is known to be wrong.
    fn unverifiable(mut self, problem: &str) -> Self {
        self.ok = false;
        self.problem = Some(problem.to_owned());
        self
    }

    fn broken(mut self, seq: i64, problem: &str) -> Self {
        self.ok = false;
        self.first_broken_seq = Some(seq);
        self.problem = Some(problem.to_owned());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_verification_that_finds_no_turn_in_time_is_busy() {
        let acme = Trail::Tenant(crate::tenancy::Slug::parse("acme").unwrap());
        let busy = || async {
            let waited = walk_turns(&acme, Duration::from_millis(50)).await;
            matches!(waited, Err(AuditError::Busy))
        };
        // Two other tenants' walks hold both slots.
        let slots = WALKS.acquire_many(2).await.unwrap();
        assert!(busy().await, "waited past its deadline for a slot");
        drop(slots);
        // The trail's own walk under way.
        let own = walk_turns(&acme, TURN_WAIT).await.unwrap();
        assert!(busy().await, "waited past its deadline for its trail");
        drop(own);
        assert!(!busy().await, "free turns are taken at once");
    }
}
