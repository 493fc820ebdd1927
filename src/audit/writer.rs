//! The group-commit audit writer and the checkpoint schedule.
//!
//! Requests hand their event to one writer task and wait for it to be committed. The task takes
//! everything that queued up while it was committing and appends it in one transaction per
//! tenant, so concurrent requests share commits instead of queuing for the chain lock one by one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use entity::tenant::{audit_checkpoint, audit_head};
use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, EntityTrait as _};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::chain::{Head, append, append_after, checkpoint_message, read_head};
use super::{AuditError, AuditEvent};
use crate::keystore::{KeyName, KeyStore, Purpose};
use crate::tenancy::{Access, Databases, Slug, TenancyError};

/// Most events taken into one flush.
const MAX_BATCH: usize = 2048;
/// How long the writer waits for more events after the first of a batch: each flush costs a
/// transaction, so a short wait under load buys large batches for a little latency.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);
/// Events queued before requests wait for room.
const QUEUE: usize = 16_384;
/// Tries of the lock-free append before taking the head's lock.
const OPTIMISTIC_ATTEMPTS: usize = 3;
/// Chain heads remembered between flushes.
const MAX_KNOWN_HEADS: usize = 10_000;
/// A chain gets a checkpoint at once when this many events are unsigned.
const CHECKPOINT_EVERY: u64 = 1_000;

/// Why a flush failed, copied to every request whose event was in it.
#[derive(Debug, Clone)]
struct FlushError {
    unavailable: bool,
    message: String,
}

/// Where a request waits for its event's flush.
type Done = oneshot::Sender<Result<(), FlushError>>;

enum Command {
    Append {
        tenant: Slug,
        event: Box<AuditEvent>,
        done: Done,
    },
    /// Events were appended elsewhere (inside a change's transaction).
    Touched { tenant: Slug, events: u64 },
    /// Checkpoint every chain with unsigned events, then answer.
    CheckpointNow { done: oneshot::Sender<()> },
}

/// Handle to the writer task. Cloning shares the task.
#[derive(Clone)]
pub struct AuditWriter {
    sender: mpsc::Sender<Command>,
}

impl AuditWriter {
    /// Starts the writer task; it ends once every handle is dropped, after a last checkpoint.
    pub fn start(
        dbs: Arc<Databases>,
        keystore: Arc<dyn KeyStore>,
        checkpoint_interval: Duration,
    ) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let task = Task {
            dbs,
            keystore,
            unsigned: HashMap::new(),
            heads: HashMap::new(),
        };
        let handle = tokio::spawn(task.run(receiver, checkpoint_interval));
        (AuditWriter { sender }, handle)
    }

    /// Appends `event` to the chain of `tenant`; returns once it is committed.
    pub async fn record(&self, tenant: &Slug, event: AuditEvent) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        let command = Command::Append {
            tenant: tenant.clone(),
            event: Box::new(event),
            done,
        };
        self.sender
            .send(command)
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        match wait.await.map_err(|_| AuditError::WriterStopped)? {
            Ok(()) => Ok(()),
            Err(e) if e.unavailable => Err(AuditError::Tenancy(TenancyError::Unavailable(
                sea_orm::DbErr::Custom(e.message),
            ))),
            Err(e) => Err(anyhow::anyhow!("audit flush failed: {}", e.message).into()),
        }
    }

    /// Tells the writer that `events` were appended to `tenant`'s chain in a change's
    /// transaction, so that the chain gets its checkpoint in time.
    pub async fn touched(&self, tenant: &Slug, events: u64) {
        let command = Command::Touched {
            tenant: tenant.clone(),
            events,
        };
        // If the writer has stopped the process is shutting down; nothing is left to sign.
        let _ = self.sender.send(command).await;
    }

    /// Signs a checkpoint on every chain with unsigned events now.
    pub async fn checkpoint_now(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.sender
            .send(Command::CheckpointNow { done })
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        wait.await.map_err(|_| AuditError::WriterStopped)
    }
}

struct Task {
    dbs: Arc<Databases>,
    keystore: Arc<dyn KeyStore>,
    /// Chains with events not yet covered by a checkpoint, and how many.
    unsigned: HashMap<Slug, u64>,
    /// Where this writer last left each chain's head (PostgreSQL); a guess, checked by the
    /// conditional append.
    heads: HashMap<Slug, Head>,
}

impl Task {
    async fn run(mut self, mut receiver: mpsc::Receiver<Command>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = receiver.recv() => {
                    let Some(first) = command else { break };
                    let mut batch = vec![first];
                    let linger = tokio::time::sleep(LINGER);
                    tokio::pin!(linger);
                    while batch.len() < MAX_BATCH {
                        tokio::select! {
                            command = receiver.recv() => match command {
                                Some(command) => batch.push(command),
                                None => break,
                            },
                            _ = &mut linger => break,
                        }
                    }
                    self.process(batch).await;
                }
                _ = ticker.tick() => self.checkpoint_all().await,
            }
        }
        self.checkpoint_all().await;
    }

    async fn process(&mut self, batch: Vec<Command>) {
        let mut appends: HashMap<Slug, Vec<(AuditEvent, Done)>> = HashMap::new();
        let mut waiting_for_checkpoint = Vec::new();
        for command in batch {
            match command {
                Command::Append {
                    tenant,
                    event,
                    done,
                } => {
                    appends.entry(tenant).or_default().push((*event, done));
                }
                Command::Touched { tenant, events } => {
                    *self.unsigned.entry(tenant).or_default() += events;
                }
                Command::CheckpointNow { done } => waiting_for_checkpoint.push(done),
            }
        }
        let flushes = appends.into_iter().map(|(tenant, entries)| {
            let dbs = Arc::clone(&self.dbs);
            let known_head = self.heads.remove(&tenant);
            async move {
                let (events, dones): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
                let count = events.len() as u64;
                let started = std::time::Instant::now();
                let (result, head) = flush(&dbs, &tenant, events, known_head).await;
                tracing::debug!(tenant = %tenant, events = count, micros = started.elapsed().as_micros() as u64, "audit flush");
                if let Err(e) = &result {
                    tracing::error!(tenant = %tenant, error = %e.message, "audit flush failed");
                }
                for done in dones {
                    // A request that stopped waiting no longer needs the answer.
                    let _ = done.send(result.clone());
                }
                (tenant, result.is_ok().then_some(count), head)
            }
        });
        for (tenant, written, head) in futures_util::future::join_all(flushes).await {
            if let Some(head) = head
                && self.heads.len() < MAX_KNOWN_HEADS
            {
                self.heads.insert(tenant.clone(), head);
            }
            if let Some(count) = written {
                *self.unsigned.entry(tenant).or_default() += count;
            }
        }
        let due: Vec<Slug> = self
            .unsigned
            .iter()
            .filter(|(_, n)| **n >= CHECKPOINT_EVERY)
            .map(|(slug, _)| slug.clone())
            .collect();
        for slug in due {
            self.checkpoint(slug).await;
        }
        if !waiting_for_checkpoint.is_empty() {
            self.checkpoint_all().await;
            for done in waiting_for_checkpoint {
                let _ = done.send(());
            }
        }
    }

    async fn checkpoint_all(&mut self) {
        let slugs: Vec<Slug> = self.unsigned.keys().cloned().collect();
        for slug in slugs {
            self.checkpoint(slug).await;
        }
    }

    /// Signs the chain head of `slug`; on failure the chain stays due and is retried later.
    async fn checkpoint(&mut self, slug: Slug) {
        match write_checkpoint(&self.dbs, self.keystore.as_ref(), &slug).await {
            Ok(()) => {
                self.unsigned.remove(&slug);
            }
            Err(AuditError::Tenancy(TenancyError::NotFound(_))) => {
                self.unsigned.remove(&slug);
            }
            Err(e) => {
                tracing::warn!(tenant = %slug, error = %e, "audit checkpoint failed; will retry")
            }
        }
    }
}

/// Appends `events` to the chain of `tenant`; returns the outcome and, on PostgreSQL, the head
/// after it (to skip reading it next time).
async fn flush(
    dbs: &Databases,
    tenant: &Slug,
    events: Vec<AuditEvent>,
    known_head: Option<Head>,
) -> (Result<(), FlushError>, Option<Head>) {
    let result: Result<Option<Head>, TenancyError> = match dbs.audit_pool() {
        Some(pool) => append_optimistically(dbs, pool, tenant, events, known_head).await,
        None => {
            async {
                let tx = dbs.begin(tenant, Access::Audit).await?;
                append(&tx, events).await?;
                tx.commit().await?;
                Ok(None)
            }
            .await
        }
    };
    match result {
        Ok(head) => (Ok(()), head),
        Err(e) => (
            Err(FlushError {
                unavailable: matches!(e, TenancyError::Unavailable(_)),
                message: e.to_string(),
            }),
            None,
        ),
    }
}

/// PostgreSQL: one statement per batch that appends only if the head is where this writer last
/// left it; when another writer (a change's transaction, another replica) moved it, the head is
/// read again and the batch re-linked. After a few lost races the batch takes the head's lock.
async fn append_optimistically(
    dbs: &Databases,
    pool: &sea_orm::DatabaseConnection,
    tenant: &Slug,
    events: Vec<AuditEvent>,
    known_head: Option<Head>,
) -> Result<Option<Head>, TenancyError> {
    let mut head = known_head;
    for _ in 0..OPTIMISTIC_ATTEMPTS {
        let current = match head.take() {
            Some(head) => head,
            None => {
                let tx = dbs.begin(tenant, Access::Audit).await?;
                let head = read_head(&tx).await?;
                tx.commit().await?;
                head
            }
        };
        if let Some(next) = append_after(pool, &tenant.schema(), &current, events.clone()).await? {
            return Ok(Some(next));
        }
    }
    let tx = dbs.begin(tenant, Access::Audit).await?;
    let next = append(&tx, events).await?;
    tx.commit().await?;
    Ok(Some(next))
}

/// Signs the current head of the chain of `slug` unless it is already signed.
pub(super) async fn write_checkpoint(
    dbs: &Databases,
    keystore: &dyn KeyStore,
    slug: &Slug,
) -> Result<(), AuditError> {
    let tx = dbs.begin(slug, Access::Read).await?;
    let head = audit_head::Entity::find_by_id(1).one(&tx).await?;
    let Some(head) = head.filter(|h| h.seq > 0) else {
        return Ok(());
    };
    let signed = audit_checkpoint::Entity::find_by_id(head.seq)
        .one(&tx)
        .await?;
    tx.commit().await?;
    if signed.is_some() {
        return Ok(());
    }
    let key = KeyName::new(slug.as_str(), Purpose::AuditSigning);
    let signature = keystore
        .sign(
            &key,
            &checkpoint_message(slug.as_str(), head.seq, &head.hash),
        )
        .await?;
    let tx = dbs.begin(slug, Access::Write).await?;
    let inserted = audit_checkpoint::ActiveModel {
        seq: Set(head.seq),
        hash: Set(head.hash),
        created_at: Set(Utc::now()),
        signature: Set(signature),
    }
    .insert(&tx)
    .await;
    match inserted {
        Ok(_) => Ok(tx.commit().await?),
        // Another replica signed the same head first.
        Err(e)
            if matches!(
                e.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
