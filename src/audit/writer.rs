//! The group-commit audit writer and the checkpoint schedule.
//!
//! Requests hand their event to one writer task and wait for it to be committed. The task takes
//! everything that queued up while it was committing and appends it in one transaction per
//! tenant, so concurrent requests share commits instead of queuing for the chain lock one by one.
//!
//! Checkpoints are signed by a second task, so that a slow or unreachable key store delays
//! signatures but never an append (and so never a response). The two share only the count of
//! each chain's unsigned events, which is bounded by the number of tenants.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use entity::tenant::{audit_checkpoint, audit_event, audit_head};
use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, EntityTrait as _};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::anchor::{self, Anchor};
use super::chain::{
    Head, Linked, append, append_after, append_after_known, append_unless_appended,
    checkpoint_message, read_head,
};
use super::refusals::{Broken, Refusals};
use super::trail::{PLATFORM, Trail};
use super::verify;
use super::{AuditError, AuditEvent, Outcome, RequestMeta};
use crate::keystore::{KeyName, KeyStore, Purpose};
use crate::signals::SignalFeed;
use crate::telemetry::{self, security};
use crate::tenancy::{Access, Databases, DbKind, Slug, TenancyError};

/// Most events taken into one flush.
const MAX_BATCH: usize = 2048;
/// Longest the writer waits for more events after the first of a batch, under load: each flush
/// costs a transaction, so a short wait buys large batches for a little latency. The writer
/// waits for at most as many events as its last batch held (when that was one there is no load
/// to wait for, and the next flushes at once) and for at most half of the requests under way
/// ([`AuditWriter::under_way`]): a batch of every client's event keeps every client waiting on
/// one commit while the processors sit idle (measured with 32 clients: 15–18 % idle), where
/// half the clients keep them busy while the other half's batch commits (8 % idle; the secured
/// read 7 % faster on SQLite, 13 % on PostgreSQL). Events sent while no request is under way
/// (background tasks) are flushed at once. While it waits the writer does not listen on its
/// channel: see [`Backlog`].
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
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

/// An event to append, and who waits for it.
struct Append {
    trail: Trail,
    event: Box<AuditEvent>,
    done: Done,
}

/// Chains with events not yet covered by a checkpoint, and how many; shared by the writer,
/// changes' transactions and the checkpoint task.
#[derive(Default)]
struct Unsigned {
    counts: Mutex<HashMap<Trail, u64>>,
    /// Woken when a chain reaches [`CHECKPOINT_EVERY`] unsigned events.
    due: Notify,
}

impl Unsigned {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Trail, u64>> {
        // Plain counters: a panic elsewhere cannot leave them half-updated.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `events` more; wakes the signer when the count crosses [`CHECKPOINT_EVERY`] (not
    /// on every add above it: a chain whose checkpoint failed waits for the next tick).
    fn add(&self, trail: &Trail, events: u64) {
        let (before, after) = {
            let mut counts = self.counts();
            let count = counts.entry(trail.clone()).or_default();
            let before = *count;
            *count += events;
            (before, *count)
        };
        if before < CHECKPOINT_EVERY && after >= CHECKPOINT_EVERY {
            self.due.notify_one();
        }
    }

    /// Forgets `trail` (its tenant is being deleted): nothing is left to sign.
    fn forget(&self, trail: &Trail) {
        self.counts().remove(trail);
    }

    /// Puts back the count of a chain whose checkpoint failed, without waking the signer: the
    /// next tick retries it, so an unreachable key store is not retried in a tight loop.
    fn restore(&self, trail: &Trail, events: u64) {
        *self.counts().entry(trail.clone()).or_default() += events;
    }

    /// Takes the counts of the chains that `pick` selects.
    fn take(&self, pick: impl Fn(u64) -> bool) -> Vec<(Trail, u64)> {
        let mut counts = self.counts();
        let taken: Vec<(Trail, u64)> = counts
            .iter()
            .filter(|(_, n)| pick(**n))
            .map(|(trail, n)| (trail.clone(), *n))
            .collect();
        for (trail, _) in &taken {
            counts.remove(trail);
        }
        taken
    }
}

/// How far each trail's chain is known to continue what its anchor signed: the last event the
/// signer walked to, moved on by this writer's own appends when they link to it (their hashes
/// are the writer's own, computed from the events it was given, so a history rewritten in the
/// database cannot move it). The signer then reads only what lies between it and the head
/// (events of changes' transactions, of other replicas): the checkpoint of a trail whose events
/// all passed through this writer reads nothing.
///
/// The writer's latest appends are kept as a run of linked batch ends, because under load they
/// go on while the signer walks: a walk ends at the head it read, which by then is one batch end
/// of the run, and the position moves on to the run's newest end. (Before, appends made during
/// the walk linked to nothing known, and every checkpoint walked again over every event since
/// the one before: 6 % of the server's time in a read-heavy load, `perf`.)
///
/// A deleted tenant's positions are forgotten, and a walk or an append that began before any
/// forgetting is not recorded: it may be the deleted tenant's, whose slug a new one may hold.
#[derive(Default)]
struct Continued(Mutex<Positions>);

#[derive(Default)]
struct Positions {
    trails: HashMap<Trail, Tracked>,
    /// Forgettings so far.
    generation: u64,
}

/// One trail's known position and the ends of the writer's latest linked appends.
#[derive(Default)]
struct Tracked {
    known: Option<Head>,
    /// Oldest first: where the run's first batch attached, then each batch's last event; each
    /// batch linked to the end before it. At most [`RUN_ENDS`].
    run: VecDeque<Head>,
}

/// Batch ends kept per trail: more than the batches appended while one checkpoint is made.
/// Past them, the next checkpoint walks.
const RUN_ENDS: usize = 32;

impl Tracked {
    /// Moves the known position to the run's newest end when it is one of the run's ends.
    fn carry_on(&mut self) {
        let Some(known) = &self.known else {
            return;
        };
        let Some(at) = self.run.iter().position(|end| end == known) else {
            return;
        };
        self.run.drain(..at);
        if let Some(newest) = self.run.back() {
            self.known = Some(newest.clone());
        }
    }
}

impl Positions {
    /// The trail's entry, made if there is room for one more; none for work that began before
    /// the generation `since` ended.
    fn entry(&mut self, trail: &Trail, since: u64) -> Option<&mut Tracked> {
        if since != self.generation
            || (!self.trails.contains_key(trail) && self.trails.len() >= MAX_KNOWN_HEADS)
        {
            return None;
        }
        Some(self.trails.entry(trail.clone()).or_default())
    }
}

impl Continued {
    fn positions(&self) -> std::sync::MutexGuard<'_, Positions> {
        // Plain positions: a panic elsewhere cannot leave them half-updated.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation that work beginning now records its positions in.
    fn generation(&self) -> u64 {
        self.positions().generation
    }

    /// Where `trail` is known to continue its anchor, if anywhere.
    fn get(&self, trail: &Trail) -> Option<Head> {
        self.positions()
            .trails
            .get(trail)
            .and_then(|t| t.known.clone())
    }

    /// Records that `trail` continues its anchor up to `head` (the signer walked there, in a
    /// walk that began in generation `since`), and on over the writer's appends that followed
    /// it; a position further on stays.
    fn walked(&self, trail: &Trail, head: Head, since: u64) {
        let mut positions = self.positions();
        let Some(entry) = positions.entry(trail, since) else {
            return;
        };
        if entry.known.as_ref().is_none_or(|at| at.seq < head.seq) {
            entry.known = Some(head);
        }
        entry.carry_on();
    }

    /// Adds `rows`, just appended by this writer in a flush that began in generation `since`,
    /// to the trail's run (or starts a new run when they do not link to its newest end), and
    /// moves the known position on over them.
    fn appended(&self, trail: &Trail, rows: &[audit_event::Model], since: u64) {
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return;
        };
        let mut positions = self.positions();
        let Some(entry) = positions.entry(trail, since) else {
            return;
        };
        let attached = Head {
            seq: first.seq - 1,
            hash: first.prev_hash.clone(),
        };
        if entry.run.back() != Some(&attached) {
            entry.run.clear();
            entry.run.push_back(attached);
        }
        entry.run.push_back(Head {
            seq: last.seq,
            hash: last.hash.clone(),
        });
        if entry.run.len() > RUN_ENDS {
            entry.run.pop_front();
        }
        entry.carry_on();
    }

    fn forget(&self, trail: &Trail) {
        let mut positions = self.positions();
        positions.trails.remove(trail);
        positions.generation += 1;
    }

    fn forget_all(&self) {
        let mut positions = self.positions();
        positions.trails.clear();
        positions.generation += 1;
    }
}

/// How many events wait in the channel, so that a lingering writer is woken once, by the event
/// that completes the batch it waits for, instead of by every event (each wake is a thread
/// switch, which under load cost more than the rest of the audit path together).
///
/// Senders count their event after sending it and the writer uncounts each event it takes, so
/// `queued` never exceeds the events in the channel (it is negative for a moment when the writer
/// takes an event before its sender counted it). The writer stores `wanted` then reads `queued`;
/// a sender adds to `queued` then reads `wanted`: sequentially consistent, so at least one of
/// them sees the other's write and no wake is lost.
struct Backlog {
    queued: AtomicIsize,
    /// Requests under way on the public listener ([`UnderWay`] guards alive): an upper bound
    /// of those that may still send an event (writes commit theirs in their own transaction).
    under_way: AtomicUsize,
    /// Events the lingering writer waits for; `isize::MAX` when it is not lingering.
    wanted: AtomicIsize,
    full: Notify,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog {
            queued: AtomicIsize::new(0),
            under_way: AtomicUsize::new(0),
            wanted: AtomicIsize::new(isize::MAX),
            full: Notify::new(),
        }
    }
}

impl Backlog {
    /// Counts a sent event; wakes the writer if it completes the batch the writer waits for.
    fn sent(&self) {
        let queued = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
        if queued >= self.wanted.load(Ordering::SeqCst) {
            self.full.notify_one();
        }
    }

    /// Uncounts an event the writer took.
    fn taken(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether `wanted` events are counted, after declaring that the writer waits for them
    /// (so that a sender counting after this check wakes it).
    fn wait_for(&self, wanted: usize) -> bool {
        let wanted = isize::try_from(wanted).unwrap_or(isize::MAX);
        self.wanted.store(wanted, Ordering::SeqCst);
        self.queued.load(Ordering::SeqCst) >= wanted
    }

    /// Declares that the writer no longer waits.
    fn stop_waiting(&self) {
        self.wanted.store(isize::MAX, Ordering::Release);
    }

    /// Counts a request under way while the guard lives.
    fn under_way(self: &Arc<Self>) -> UnderWay {
        self.under_way.fetch_add(1, Ordering::Relaxed);
        UnderWay(Arc::clone(self))
    }

    /// The most events worth waiting for, given that the last batch held `last_batch`.
    fn linger_target(&self, last_batch: usize) -> usize {
        let half_under_way = self.under_way.load(Ordering::Relaxed).div_ceil(2);
        last_batch.min(half_under_way).min(MAX_BATCH)
    }
}

/// A request under way, counted by the writer while this lives (see [`LINGER`]).
#[must_use = "the request counts as under way only while the guard lives"]
pub struct UnderWay(Arc<Backlog>);

impl Drop for UnderWay {
    fn drop(&mut self) {
        self.0.under_way.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Handle to the writer task. Cloning shares the task.
#[derive(Clone)]
pub struct AuditWriter {
    sender: mpsc::Sender<Append>,
    backlog: Arc<Backlog>,
    unsigned: Arc<Unsigned>,
    continued: Arc<Continued>,
    refusals: Arc<Mutex<Refusals>>,
    checkpoint_requests: mpsc::Sender<oneshot::Sender<()>>,
}

impl AuditWriter {
    /// Starts the writer and checkpoint tasks; they end once every handle is dropped, after a
    /// last checkpoint.
    pub fn start(
        dbs: Arc<Databases>,
        keystore: Arc<dyn KeyStore>,
        checkpoint_interval: Duration,
        signals: SignalFeed,
    ) -> (Self, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let (checkpoint_requests, requests) = mpsc::channel(16);
        let unsigned = Arc::new(Unsigned::default());
        let continued = Arc::new(Continued::default());
        let backlog = Arc::new(Backlog::default());
        let refusals = Arc::new(Mutex::new(Refusals::new(checkpoint_interval)));
        let signer = Signer {
            dbs: Arc::clone(&dbs),
            keystore,
            unsigned: Arc::clone(&unsigned),
            continued: Arc::clone(&continued),
            refusals: Arc::clone(&refusals),
            appends: sender.downgrade(),
            backlog: Arc::clone(&backlog),
        };
        let task = Task {
            dbs,
            unsigned: Arc::clone(&unsigned),
            backlog: Arc::clone(&backlog),
            heads: HashMap::new(),
            signals,
            continued: Arc::clone(&continued),
        };
        let handle = tokio::spawn(async move {
            let (stop, stopped) = oneshot::channel();
            let signing = tokio::spawn(signer.run(requests, checkpoint_interval, stopped));
            task.run(receiver).await;
            // The last events are appended: the signer signs what is left and stops.
            let _ = stop.send(());
            if let Err(e) = signing.await {
                tracing::error!(error = %e, "the audit checkpoint task failed");
            }
        });
        let writer = AuditWriter {
            sender,
            backlog,
            unsigned,
            continued,
            refusals,
            checkpoint_requests,
        };
        (writer, handle)
    }

    /// Counts a request under way until the guard is dropped, so that a lingering writer leaves
    /// half of them working (see [`LINGER`]). Requests that never send an event (writes, health
    /// checks) count too: the count only bounds how long the writer waits.
    pub fn under_way(&self) -> UnderWay {
        self.backlog.under_way()
    }

    /// Appends `event` to `trail` (a tenant's, given its slug, or the platform's); returns once
    /// it is committed.
    pub async fn record(
        &self,
        trail: impl Into<Trail>,
        event: AuditEvent,
    ) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        let command = Append {
            trail: trail.into(),
            event: Box::new(event),
            done,
        };
        self.sender
            .send(command)
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        self.backlog.sent();
        // No span of its own: the flush is shared by many requests, and the request's span
        // already ends only once its event is durable.
        match wait.await.map_err(|_| AuditError::WriterStopped)? {
            Ok(()) => Ok(()),
            Err(e) if e.unavailable => Err(AuditError::Tenancy(TenancyError::Unavailable(
                sea_orm::DbErr::Custom(e.message),
            ))),
            Err(e) => Err(anyhow::anyhow!("audit flush failed: {}", e.message).into()),
        }
    }

    /// Tells the writer that `events` were appended to `trail` in a change's transaction, so
    /// that the chain gets its checkpoint in time.
    pub fn touched(&self, trail: impl Into<Trail>, events: u64) {
        self.unsigned.add(&trail.into(), events);
    }

    /// Stops signing the trail of `tenant`, which is being deleted.
    pub fn forget(&self, tenant: &Slug) {
        self.unsigned.forget(&Trail::from(tenant));
        self.continued.forget(&Trail::from(tenant));
        lock(&self.refusals).cleared(&Trail::from(tenant));
    }

    /// Forgets how far the trail of the tenant `slug` is known to continue its anchor, on any
    /// change to the tenant (its deletion, made here or on another replica, among them): the
    /// next checkpoint walks from the anchor, and a slug onboarded again starts from nothing.
    pub fn forget_positions(&self, slug: &str) {
        if let Ok(slug) = Slug::parse(slug) {
            self.continued.forget(&Trail::from(&slug));
            // A tenant made again under the slug must not wait out, or inherit, a refusal of
            // the trail it replaced.
            lock(&self.refusals).cleared(&Trail::from(&slug));
        }
    }

    /// [`AuditWriter::forget_positions`] of every trail (notifications of changes were lost).
    pub fn forget_all_positions(&self) {
        self.continued.forget_all();
        lock(&self.refusals).clear();
    }

    /// Signs a checkpoint on every chain with unsigned events now.
    pub async fn checkpoint_now(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.checkpoint_requests
            .send(done)
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        wait.await.map_err(|_| AuditError::WriterStopped)
    }
}

/// The appending task.
struct Task {
    dbs: Arc<Databases>,
    unsigned: Arc<Unsigned>,
    backlog: Arc<Backlog>,
    /// Where this writer last left each chain's head (PostgreSQL); a guess, checked by the
    /// conditional append.
    heads: HashMap<Trail, Head>,
    /// Where committed events go to the detectors.
    signals: SignalFeed,
    continued: Arc<Continued>,
}

impl Task {
    async fn run(mut self, mut receiver: mpsc::Receiver<Append>) {
        let mut last_batch = 0;
        while let Some(first) = receiver.recv().await {
            self.backlog.taken();
            let mut batch = vec![first];
            self.drain(&mut receiver, &mut batch);
            let target = self.backlog.linger_target(last_batch);
            self.linger(&mut receiver, &mut batch, target).await;
            last_batch = batch.len();
            self.process(batch).await;
        }
    }

    /// Moves what the channel holds into `batch`, up to [`MAX_BATCH`].
    fn drain(&self, receiver: &mut mpsc::Receiver<Append>, batch: &mut Vec<Append>) {
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(command) => {
                    self.backlog.taken();
                    batch.push(command);
                }
                Err(_) => break,
            }
        }
    }

    /// Waits until `batch` holds `target` events or [`LINGER`] has passed, woken by the
    /// [`Backlog`] rather than by each event.
    async fn linger(
        &self,
        receiver: &mut mpsc::Receiver<Append>,
        batch: &mut Vec<Append>,
        target: usize,
    ) {
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < target {
            if !self.backlog.wait_for(target - batch.len()) {
                tokio::select! {
                    _ = self.backlog.full.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        self.drain(receiver, batch);
                        break;
                    }
                }
            }
            self.drain(receiver, batch);
        }
        self.backlog.stop_waiting();
    }

    async fn process(&mut self, batch: Vec<Append>) {
        let mut appends: HashMap<Trail, Vec<(AuditEvent, Done)>> = HashMap::new();
        for Append { trail, event, done } in batch {
            appends.entry(trail).or_default().push((*event, done));
        }
        let flushes = appends.into_iter().map(|(trail, entries)| {
            let dbs = Arc::clone(&self.dbs);
            let signals = self.signals.clone();
            let continued = Arc::clone(&self.continued);
            let known_head = self.heads.remove(&trail);
            async move {
                let (events, dones): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
                let count = events.len() as u64;
                let started = std::time::Instant::now();
                let (result, head) =
                    flush(&dbs, &signals, &continued, &trail, events, known_head).await;
                tracing::debug!(trail = %trail, events = count, micros = started.elapsed().as_micros() as u64, "audit flush");
                if let Err(e) = &result {
                    tracing::error!(trail = %trail, error = %e.message, "audit flush failed");
                }
                for done in dones {
                    // A request that stopped waiting no longer needs the answer.
                    let _ = done.send(result.clone());
                }
                (trail, result.is_ok().then_some(count), head)
            }
        });
        for (trail, written, head) in futures_util::future::join_all(flushes).await {
            if let Some(count) = written {
                self.unsigned.add(&trail, count);
            }
            if let Some(head) = head
                && self.heads.len() < MAX_KNOWN_HEADS
            {
                self.heads.insert(trail, head);
            }
        }
    }
}

/// The checkpoint task: signs chains every interval, at once when one has
/// [`CHECKPOINT_EVERY`] unsigned events, and when asked.
struct Signer {
    dbs: Arc<Databases>,
    keystore: Arc<dyn KeyStore>,
    unsigned: Arc<Unsigned>,
    continued: Arc<Continued>,
    /// Broken chains, each walked again after a longer wait than the last (shared with the
    /// writer's handles, which forget a tenant's).
    refusals: Arc<Mutex<Refusals>>,
    /// Where a broken chain is reported: the writer's queue, held weakly so that the writer
    /// still stops once every [`AuditWriter`] is dropped.
    appends: mpsc::WeakSender<Append>,
    backlog: Arc<Backlog>,
}

impl Signer {
    /// Runs until `stop` fires (after the writer's last append), then signs what is left.
    async fn run(
        self,
        mut requests: mpsc::Receiver<oneshot::Sender<()>>,
        interval: Duration,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut requests_open = true;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                request = requests.recv(), if requests_open => match request {
                    Some(done) => {
                        self.sign(|_| true, Asked::Now).await;
                        let _ = done.send(());
                    }
                    None => requests_open = false,
                },
                _ = self.unsigned.due.notified() => {
                    self.sign(|n| n >= CHECKPOINT_EVERY, Asked::InTurn).await;
                }
                _ = ticker.tick() => self.sign(|_| true, Asked::InTurn).await,
            }
        }
        self.sign(|_| true, Asked::InTurn).await;
    }

    /// Signs the chains that `pick` selects by their unsigned count; a chain whose checkpoint
    /// fails keeps its count and is retried later, a broken one only once its wait is over
    /// (unless a checkpoint is asked for now).
    async fn sign(&self, pick: impl Fn(u64) -> bool, asked: Asked) {
        let now = Instant::now();
        for (trail, count) in self.unsigned.take(pick) {
            if asked == Asked::InTurn && !lock(&self.refusals).due(&trail, now) {
                self.unsigned.restore(&trail, count);
                continue;
            }
            let checkpoint =
                write_checkpoint(&self.dbs, self.keystore.as_ref(), &self.continued, &trail);
            match checkpoint.await {
                Ok(Ok(())) | Err(AuditError::Tenancy(TenancyError::NotFound(_))) => {
                    lock(&self.refusals).cleared(&trail);
                }
                Ok(Err(broken)) => {
                    self.unsigned.restore(&trail, count);
                    self.refused(&trail, broken).await;
                }
                Err(e) => {
                    tracing::warn!(trail = %trail, error = %e, "audit checkpoint failed; the chain stays due");
                    self.unsigned.restore(&trail, count);
                }
            }
        }
    }

    /// Notes that the chain of `trail` is broken. A break not reported yet is said in the log
    /// and on the trail itself (`audit.checkpoint`, which reaches the SIEM and, on a tenant's
    /// trail, raises the `audit_tamper` signal); one reported already only in the log. A report
    /// that could not be committed is made again at the next refusal.
    async fn refused(&self, trail: &Trail, broken: Broken) {
        let report = lock(&self.refusals).refused(trail, broken.seq, Instant::now());
        if !report {
            tracing::warn!(trail = %trail, seq = broken.seq,
                "the audit chain is still broken and is not signed");
            return;
        }
        tracing::error!(trail = %trail, seq = broken.seq, problem = %broken.problem,
            "the audit chain is broken and is not signed; `flowgate audit verify` shows where");
        let Some(appends) = self.appends.upgrade() else {
            return;
        };
        let meta = RequestMeta {
            request_id: crate::http::request_id::generate(),
            ..RequestMeta::default()
        };
        let (resource, id) = match trail {
            Trail::Tenant(slug) => ("tenant", slug.as_str()),
            Trail::Platform => ("platform", PLATFORM),
        };
        let event = AuditEvent::new(&meta, "audit.checkpoint", resource)
            .resource_id(id)
            .actor("system", "audit-signer")
            .outcome(Outcome::None, 409)
            .detail("verified_ok", false)
            .detail("first_broken_seq", broken.seq)
            .detail("problem", broken.problem);
        let (done, committed) = oneshot::channel();
        let append = Append {
            trail: trail.clone(),
            event: Box::new(event),
            done,
        };
        if appends.send(append).await.is_err() {
            return;
        }
        self.backlog.sent();
        // The writer never waits for the signer: waiting for its flush cannot deadlock.
        drop(appends);
        if let Ok(Ok(())) = committed.await {
            lock(&self.refusals).reported(trail, broken.seq);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the chains are signed because someone asked for it now, or in their turn (on the
/// timer, once enough events are unsigned, at shutdown), when a broken one waits its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Now,
    InTurn,
}

/// Appends `events` to `trail`; returns the outcome and the head after it (to skip reading it
/// next time). Once committed, the rows go to the SIEM ([`security::committed`]) and to the
/// detectors.
async fn flush(
    dbs: &Databases,
    signals: &SignalFeed,
    continued: &Continued,
    trail: &Trail,
    events: Vec<AuditEvent>,
    known_head: Option<Head>,
) -> (Result<(), FlushError>, Option<Head>) {
    let oldest = events.iter().map(|e| e.occurred_at).min();
    let since = continued.generation();
    let result: Result<Linked, TenancyError> = match dbs.kind() {
        DbKind::Postgres => append_optimistically(dbs, trail, events, known_head).await,
        // SQLite: the transaction holds the file's write lock from its start.
        DbKind::Sqlite => {
            async {
                let tx = trail.begin(dbs, Access::Audit).await?;
                let linked = append_after_known(&tx, known_head.as_ref(), &events).await?;
                tx.commit().await?;
                Ok(linked)
            }
            .await
        }
    };
    match result {
        Ok(linked) => {
            let lag = oldest.map_or(Duration::ZERO, |at| {
                (Utc::now() - at).to_std().unwrap_or_default()
            });
            telemetry::metrics().observe_audit_flush(linked.rows.len(), lag);
            // Shared, not copied, by the SIEM's queue and the detectors.
            let rows: Arc<[audit_event::Model]> = linked.rows.into();
            continued.appended(trail, &rows, since);
            security::committed(trail.name(), &rows);
            signals.observe(trail.name(), rows);
            (Ok(()), Some(linked.head))
        }
        Err(e) => (
            Err(FlushError {
                unavailable: matches!(e, TenancyError::Unavailable(_)),
                message: e.to_string(),
            }),
            None,
        ),
    }
}

/// Most bytes of events one append statement carries. A statement larger than a TLS record
/// (16 KiB) leaves the client as several socket writes, and the last one waits for the
/// server's delayed ACK of the first (Nagle's algorithm; sqlx sets no TCP_NODELAY): on
/// loopback that was 40 ms per flush, a hundred times the statement itself.
const STATEMENT_BYTES: usize = 12 * 1024;

/// `events` cut into runs of at most [`STATEMENT_BYTES`] (an event larger than that alone).
fn statements(events: &[AuditEvent]) -> Vec<&[AuditEvent]> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, event) in events.iter().enumerate() {
        let size = wire_size(event);
        if i > start && bytes + size > STATEMENT_BYTES {
            parts.push(&events[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < events.len() {
        parts.push(&events[start..]);
    }
    parts
}

/// About how many bytes `event` takes in an append statement: its text, its two hashes, and the
/// binary protocol's lengths and fixed-size columns.
fn wire_size(event: &AuditEvent) -> usize {
    let text: usize = [
        &event.request_id,
        &event.actor_type,
        &event.actor_id,
        &event.action,
        &event.resource_type,
    ]
    .iter()
    .map(|s| s.len())
    .sum();
    let optional: usize = [&event.resource_id, &event.source_ip, &event.user_agent]
        .iter()
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum();
    text + optional + event.details.to_string().len() + 256
}

/// PostgreSQL: a batch appended by statements of at most [`STATEMENT_BYTES`], the first of which
/// appends only if the head is where this writer last left it (and so locks the head's row for
/// the others); when another writer (a change's transaction, another replica) moved it, the
/// head is read again and the batch re-linked. After a few lost races the batch takes the
/// head's lock.
///
/// A batch of one statement after a known head, the usual flush, is that statement alone on
/// the audit pool's autocommit connections: one exchange, committed as it returns, where a
/// transaction costs three (`BEGIN`, the statement, `COMMIT`), each a wait for the server's
/// turn on a busy machine (the secured read on PostgreSQL 1.07× in alternating rounds). It is
/// atomic as any statement is. A batch of several statements, or one that must read the head
/// first, is a transaction.
async fn append_optimistically(
    dbs: &Databases,
    trail: &Trail,
    events: Vec<AuditEvent>,
    known_head: Option<Head>,
) -> Result<Linked, TenancyError> {
    let mut head = known_head;
    let parts = statements(&events);
    let schema = trail.schema();
    for _ in 0..OPTIMISTIC_ATTEMPTS {
        // One statement after a known head: on its own, committed as it returns.
        if let (Some(known), [only]) = (&head, parts.as_slice()) {
            let work = trail.begin(dbs, Access::AuditAppend).await?;
            let Some(pg) = work.postgres() else {
                return Err(anyhow::anyhow!("an optimistic append outside PostgreSQL").into());
            };
            let appended = append_after(pg, &schema, known, only).await;
            drop(work);
            match appended {
                Ok(Some(linked)) => return Ok(linked),
                Ok(None) => {
                    head = None;
                    continue;
                }
                // Whether a statement that failed had committed is not always known (its
                // connection failed, perhaps after the commit, or the server still runs it):
                // the chain says, under the head's lock, and the batch is appended only if not.
                Err(_) => {
                    let tx = trail.begin(dbs, Access::Audit).await?;
                    let linked = append_unless_appended(&tx, known, only).await?;
                    tx.commit().await?;
                    return Ok(linked);
                }
            }
        }
        let tx = trail.begin(dbs, Access::Audit).await?;
        let current = match head.take() {
            Some(head) => head,
            None => read_head(&tx).await?,
        };
        let Some(pg) = tx.postgres() else {
            return Err(anyhow::anyhow!("an optimistic append outside PostgreSQL").into());
        };
        let mut parts = parts.iter();
        let first = parts.next().copied().unwrap_or_default();
        let Some(mut moved) = append_after(pg, &schema, &current, first).await? else {
            // Another writer appended first: read the head again.
            tx.commit().await?;
            continue;
        };
        // The first statement locked the head's row: the rest follow it unopposed.
        for part in parts {
            let next = append_after(pg, &schema, &moved.head, part)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the audit head moved under its row lock"))?;
            moved.head = next.head;
            moved.rows.extend(next.rows);
        }
        tx.commit().await?;
        return Ok(moved);
    }
    let tx = trail.begin(dbs, Access::Audit).await?;
    let linked = append(&tx, &events).await?;
    tx.commit().await?;
    Ok(linked)
}

/// Signs the current head of `trail` unless it is already signed, and moves the anchor in the
/// key store to the newest checkpoint.
///
/// Only a head that continues what the anchor signed is signed ([`verify::continues`]): someone
/// who can write the database could otherwise rewrite the history behind the anchor, re-link
/// it, and have the next checkpoint sign the rewrite and carry the anchor onto it. Such a trail
/// is refused (`Ok(Err(broken))`) until an operator looks at it (`audit verify` names the
/// first broken event; the signer waits longer each time, see [`super::refusals`]); its events
/// still append.
async fn write_checkpoint(
    dbs: &Databases,
    keystore: &dyn KeyStore,
    continued: &Continued,
    trail: &Trail,
) -> Result<Result<(), Broken>, AuditError> {
    // Read before the head: the position names only committed events, so it is never ahead
    // of the head read next (read after, the writer's appends could carry it past that head,
    // which reads as events gone missing).
    let since = continued.generation();
    let known = continued.get(trail);
    let anchored = match anchor::load(keystore, trail).await? {
        Ok(anchored) => anchored,
        Err(problem) => return Ok(Err(broken(0, problem))),
    };
    // A position behind the anchor saves nothing: the walk starts from the anchor then.
    let known = known.filter(|k| anchored.as_ref().is_none_or(|a| k.seq >= a.seq));
    let tx = trail.begin(dbs, Access::Read).await?;
    let head = audit_head::Entity::find_by_id(1).one(&tx).await?;
    let Some(head) = head.filter(|h| h.seq > 0) else {
        return Ok(Ok(()));
    };
    let signed = audit_checkpoint::Entity::find_by_id(head.seq)
        .one(&tx)
        .await?;
    tx.commit().await?;
    if anchored
        .as_ref()
        .is_some_and(|a| a.seq == head.seq && a.hash == head.hash)
    {
        return Ok(Ok(()));
    }
    if let Some((seq, problem)) =
        verify::continues(dbs, trail, anchored.as_ref(), known.as_ref(), &head).await?
    {
        return Ok(Err(broken(seq, problem)));
    }
    continued.walked(
        trail,
        Head {
            seq: head.seq,
            hash: head.hash.clone(),
        },
        since,
    );
    let message = checkpoint_message(trail.name(), head.seq, &head.hash);
    let key = KeyName::new(trail.name(), Purpose::AuditSigning);
    let checkpoint = match signed {
        // Another replica signed this head first; a row that is not its signature is not.
        Some(signed)
            if signed.hash == head.hash
                && keystore.verify(&key, &message, &signed.signature).await? =>
        {
            Anchor {
                seq: signed.seq,
                hash: signed.hash,
                signature: signed.signature,
            }
        }
        Some(_) => {
            return Ok(Err(broken(
                head.seq,
                "a checkpoint stored at the head does not sign it",
            )));
        }
        None => {
            let checkpoint = Anchor {
                seq: head.seq,
                signature: keystore.sign(&key, &message).await?,
                hash: head.hash,
            };
            insert_checkpoint(dbs, trail, &checkpoint).await?;
            checkpoint
        }
    };
    anchor::advance(dbs, keystore, trail, &checkpoint)
        .await
        .map(Ok)
}

fn broken(seq: i64, problem: &str) -> Broken {
    Broken {
        seq,
        problem: problem.to_owned(),
    }
}

/// Stores a signed checkpoint; one that another replica stored first is as good. The event it
/// signs must still be in the chain, with its hash: a signer that read the head of a tenant
/// deleted since (and made again under the same slug) stores nothing in the new one.
async fn insert_checkpoint(
    dbs: &Databases,
    trail: &Trail,
    checkpoint: &Anchor,
) -> Result<(), AuditError> {
    let tx = trail.begin(dbs, Access::Audit).await?;
    let event = audit_event::Entity::find_by_id(checkpoint.seq)
        .one(&tx)
        .await?;
    if event.is_none_or(|e| e.hash != checkpoint.hash) {
        return Err(anyhow::anyhow!(
            "the event a checkpoint of {trail} signed is no longer in its chain"
        )
        .into());
    }
    let inserted = audit_checkpoint::ActiveModel {
        seq: Set(checkpoint.seq),
        hash: Set(checkpoint.hash.clone()),
        created_at: Set(Utc::now()),
        signature: Set(checkpoint.signature.clone()),
    }
    .insert(&tx)
    .await;
    match inserted {
        Ok(_) => Ok(tx.commit().await?),
        Err(e) if crate::tenancy::is_unique_violation(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linked(seq: i64, prev_hash: &str, hash: &str) -> audit_event::Model {
        let mut row = crate::audit::chain::tests::row(serde_json::Value::Null);
        (row.seq, row.prev_hash, row.hash) = (seq, prev_hash.into(), hash.into());
        row
    }

    fn head(seq: i64, hash: &str) -> Head {
        Head {
            seq,
            hash: hash.into(),
        }
    }

    #[test]
    fn only_appends_that_link_to_the_walked_chain_move_it_on() {
        let trail = Trail::Platform;
        let continued = Continued::default();
        continued.appended(&trail, &[linked(1, "g", "h1")], 0);
        assert_eq!(continued.get(&trail), None, "nothing walked, nothing known");
        continued.walked(&trail, head(1, "h1"), 0);
        continued.appended(&trail, &[linked(2, "h1", "h2"), linked(3, "h2", "h3")], 0);
        assert_eq!(continued.get(&trail), Some(head(3, "h3")));
        // After a rewritten head, or past a gap (another writer's events), it stays.
        continued.appended(&trail, &[linked(4, "forged", "h4")], 0);
        continued.appended(&trail, &[linked(6, "h5", "h6")], 0);
        assert_eq!(continued.get(&trail), Some(head(3, "h3")));
        // A walk that ended short of it does not take it back.
        continued.walked(&trail, head(2, "h2"), 0);
        assert_eq!(continued.get(&trail), Some(head(3, "h3")));
        continued.forget(&trail);
        assert_eq!(continued.get(&trail), None);
        // A walk or an append that began before the tenant's deletion records nothing: the slug
        // may be a new tenant's by then.
        continued.walked(&trail, head(3, "h3"), 0);
        continued.appended(&trail, &[linked(4, "h3", "h4")], 0);
        assert_eq!(continued.get(&trail), None);
        let now = continued.generation();
        continued.walked(&trail, head(3, "h3"), now);
        assert_eq!(continued.get(&trail), Some(head(3, "h3")));
        continued.forget_all();
        assert_eq!(continued.get(&trail), None);
        continued.walked(&trail, head(3, "h3"), now);
        assert_eq!(
            continued.get(&trail),
            None,
            "begun before everything was forgotten"
        );
    }

    /// Under load the writer appends while the signer walks: a walk that ends at one of the
    /// appends' ends carries on to the newest; one that ends elsewhere (a rewritten head, or
    /// events of a change between them) does not.
    #[test]
    fn a_walk_carries_on_over_the_appends_made_during_it() {
        let trail = Trail::Platform;
        let continued = Continued::default();
        continued.walked(&trail, head(1, "h1"), 0);
        // The signer reads head 3; the writer goes on to 5 before the walk ends.
        continued.appended(&trail, &[linked(4, "h3", "h4")], 0);
        continued.appended(&trail, &[linked(5, "h4", "h5")], 0);
        assert_eq!(
            continued.get(&trail),
            Some(head(1, "h1")),
            "4 and 5 link to nothing known"
        );
        continued.walked(&trail, head(3, "h3"), 0);
        assert_eq!(continued.get(&trail), Some(head(5, "h5")));
        continued.appended(&trail, &[linked(6, "h5", "h6")], 0);
        assert_eq!(continued.get(&trail), Some(head(6, "h6")));

        // A walk to a head that is no end of the run stops there.
        let other = Trail::Tenant(crate::tenancy::Slug::parse("acme").unwrap());
        continued.appended(&other, &[linked(4, "h3", "h4"), linked(5, "h4", "h5")], 0);
        continued.walked(&other, head(4, "h4"), 0);
        assert_eq!(
            continued.get(&other),
            Some(head(4, "h4")),
            "4 is inside a batch"
        );
        continued.walked(&other, head(3, "forged"), 0);
        assert_eq!(continued.get(&other), Some(head(4, "h4")));
        // Only the newest ends are kept: a walk older than them stops where it ended.
        let long = Trail::Tenant(crate::tenancy::Slug::parse("long").unwrap());
        for seq in 1..=(RUN_ENDS as i64 + 5) {
            let (prev, hash) = (format!("h{}", seq - 1), format!("h{seq}"));
            continued.appended(&long, &[linked(seq, &prev, &hash)], 0);
        }
        continued.walked(&long, head(2, "h2"), 0);
        assert_eq!(continued.get(&long), Some(head(2, "h2")));
    }

    #[test]
    fn batches_are_cut_into_statements_that_fit_a_tls_record() {
        let meta = crate::audit::RequestMeta::default();
        let event = |details: usize| {
            AuditEvent::new(&meta, "user.read", "user").detail("pad", "x".repeat(details))
        };
        let small: Vec<AuditEvent> = (0..100).map(|_| event(100)).collect();
        let parts = statements(&small);
        assert!(parts.len() > 1);
        assert_eq!(
            parts.iter().map(|p| p.len()).sum::<usize>(),
            100,
            "nothing lost"
        );
        assert!(
            parts
                .iter()
                .all(|p| p.iter().map(wire_size).sum::<usize>() <= STATEMENT_BYTES)
        );
        // An event larger than a statement goes alone; none are empty.
        let mixed = vec![event(10), event(20_000), event(10)];
        let parts = statements(&mixed);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [1, 1, 1]);
        assert!(statements(&[]).is_empty());
    }

    #[tokio::test]
    async fn the_backlog_wakes_the_writer_once_the_batch_it_waits_for_is_sent() {
        let backlog = Backlog::default();
        backlog.sent();
        assert!(backlog.wait_for(1), "one event is already counted");
        assert!(!backlog.wait_for(3));
        backlog.sent();
        let early = tokio::time::timeout(Duration::from_millis(20), backlog.full.notified());
        assert!(
            early.await.is_err(),
            "two of three events do not wake the writer"
        );
        backlog.sent();
        let woken = tokio::time::timeout(Duration::from_secs(1), backlog.full.notified());
        assert!(woken.await.is_ok(), "the third does");
        backlog.stop_waiting();
        for _ in 0..3 {
            backlog.taken();
        }
        assert!(!backlog.wait_for(1), "taken events are no longer counted");
    }

    #[test]
    fn the_writer_waits_for_at_most_half_of_the_requests_under_way() {
        let backlog = Arc::new(Backlog::default());
        assert_eq!(
            backlog.linger_target(31),
            0,
            "no request under way: flush at once"
        );
        let mut under_way: Vec<UnderWay> = (0..32).map(|_| backlog.under_way()).collect();
        assert_eq!(
            backlog.linger_target(31),
            16,
            "half of 32 clients keep working"
        );
        assert_eq!(
            backlog.linger_target(9),
            9,
            "never more than the last batch"
        );
        assert_eq!(backlog.linger_target(1), 1, "a lone event does not wait");
        let more: Vec<UnderWay> = (0..2 * MAX_BATCH).map(|_| backlog.under_way()).collect();
        assert_eq!(backlog.linger_target(usize::MAX), MAX_BATCH);
        drop(more);
        drop(under_way.split_off(3));
        assert_eq!(backlog.linger_target(31), 2, "half of 3, rounded up");
        drop(under_way);
        assert_eq!(backlog.under_way.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_event_taken_before_it_is_counted_leaves_the_count_right() {
        let backlog = Backlog::default();
        backlog.taken();
        assert!(!backlog.wait_for(1));
        backlog.sent();
        assert!(!backlog.wait_for(1), "the event was taken already");
        backlog.sent();
        assert!(backlog.wait_for(1));
    }
}
