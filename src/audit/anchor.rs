//! The anchor: a copy of a trail's newest signed checkpoint kept in the key store.
//!
//! Checkpoints in the database prove the chain up to them only while they are there: someone
//! who can write the database could rewrite the events after some point, move the head and
//! delete the checkpoints beyond it. The anchor lives outside the database, so verification
//! still finds the event it names and compares hashes; what such a rewrite can reach is only
//! the tail signed after the anchor was last moved (at most a checkpoint interval).
//!
//! Invariant: the anchor is written after its checkpoint committed, so an honest chain always
//! holds the event it names; it only moves forward: its moves are made one at a time per trail
//! (in this process by a lock, across replicas by a PostgreSQL advisory lock held from reading
//! the anchor to writing it), so a replica that signed an older checkpoint cannot overwrite a
//! newer anchor another replica wrote meanwhile.

use sea_orm::{ConnectionTrait as _, DbBackend, Statement};
use serde::{Deserialize, Serialize};

use super::AuditError;
use super::chain::checkpoint_message;
use super::trail::Trail;
use crate::keystore::{KeyName, KeyStore, Purpose};
use crate::tenancy::{Access, Databases, DbKind};

/// This process's anchor moves, one at a time, whatever the trail (one per checkpoint: they are
/// rare).
static MOVES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A signed checkpoint as kept in the key store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
    pub signature: String,
}

fn name(trail: &Trail) -> KeyName {
    KeyName::new(trail.name(), Purpose::AuditAnchor)
}

/// The trail's anchor: `Ok(None)` if no checkpoint was ever signed, `Err(problem)` when the
/// stored anchor does not parse or its signature fails (what verification reports).
pub async fn load(
    keystore: &dyn KeyStore,
    trail: &Trail,
) -> Result<Result<Option<Anchor>, &'static str>, AuditError> {
    let Some(bytes) = keystore.record(&name(trail)).await? else {
        return Ok(Ok(None));
    };
    let Ok(anchor) = serde_json::from_slice::<Anchor>(&bytes) else {
        return Ok(Err("the checkpoint kept in the key store does not parse"));
    };
    if !signs(keystore, trail, anchor.seq, &anchor.hash, &anchor.signature).await? {
        return Ok(Err(
            "the checkpoint kept in the key store has no valid signature",
        ));
    }
    Ok(Ok(Some(anchor)))
}

/// Whether `signature` is the trail's signature of the checkpoint `(seq, hash)`.
pub(super) async fn signs(
    keystore: &dyn KeyStore,
    trail: &Trail,
    seq: i64,
    hash: &str,
    signature: &str,
) -> Result<bool, crate::keystore::KeyStoreError> {
    let message = checkpoint_message(trail.name(), seq, hash);
    let key = KeyName::new(trail.name(), Purpose::AuditSigning);
    keystore.verify(&key, &message, signature).await
}

/// Moves the anchor to `checkpoint` unless it is already there or beyond, under the trail's
/// anchor lock (see the module's invariant).
pub async fn advance(
    dbs: &Databases,
    keystore: &dyn KeyStore,
    trail: &Trail,
    checkpoint: &Anchor,
) -> Result<(), AuditError> {
    let bytes = serde_json::to_vec(checkpoint).map_err(anyhow::Error::from)?;
    let _this_process = MOVES.lock().await;
    // Across replicas (SQLite has a single process): held until this transaction ends. A write
    // transaction, which is one: PostgreSQL reads run outside any, where a transaction-scoped
    // lock would end with its own statement.
    let replicas = match dbs.kind() {
        DbKind::Postgres => {
            let tx = trail.begin(dbs, Access::Write).await?;
            tx.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                [format!("flowgate.audit_anchor.{}", trail.schema()).into()],
            ))
            .await
            .map_err(crate::tenancy::TenancyError::from)?;
            Some(tx)
        }
        DbKind::Sqlite => None,
    };
    let current = match keystore.record(&name(trail)).await? {
        Some(bytes) => serde_json::from_slice::<Anchor>(&bytes).ok(),
        None => None,
    };
    if current.is_none_or(|a| a.seq < checkpoint.seq) {
        keystore.put_record(&name(trail), &bytes).await?;
    }
    if let Some(tx) = replicas {
        tx.commit().await?;
    }
    Ok(())
}
