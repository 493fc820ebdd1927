//! PostgreSQL tenant connections: pools of our own, so that a tenant's work costs the fewest
//! exchanges with the server.
//!
//! sqlx's pool pings every connection it hands out and every one it takes back; with sea-orm's
//! transactions a tenant read was six exchanges (ping, BEGIN, configuration, SELECT, COMMIT,
//! ping). Here a read is its statements alone, and a write three exchanges: `BEGIN; SET LOCAL
//! search_path …` in one simple query, the statements, `COMMIT`. An audit append of one
//! statement is one exchange: it runs outside any transaction and commits as it returns.
//!
//! Invariants:
//! - Reads run on connections whose sessions are read-only (`default_transaction_read_only`,
//!   enforced by PostgreSQL) and outside transactions: under `READ COMMITTED` a transaction gave
//!   them nothing (each statement takes its own snapshot either way). A reading connection keeps
//!   the search path of the tenant it last served, and a read for another tenant sets its own
//!   before its first statement; the schema each connection is set to is tracked, and a
//!   connection whose setting failed is closed, never reused.
//! - Writes run in transactions on other connections, whose own search path names no schema: the
//!   tenant's schema is set transaction-locally in the same exchange as `BEGIN`. Every session
//!   is `READ COMMITTED`, whatever the server's or the database's default.
//! - Autocommit work (the audit writer's pool) runs each statement on its own, committed (and
//!   flushed to the WAL, as any commit) when it returns; its statements name their schema, and
//!   one that fails changed nothing. Such a statement is never run again on a new connection:
//!   it may have committed before its connection failed.
//! - Schema names come from validated slugs, never from request text, and are quoted.
//! - A connection is reused only after its work ended: a committed transaction, a read whose
//!   statements are done, or a transaction rolled back by a task of its own when it was dropped;
//!   a connection that failed is closed.
//! - Every exchange is bounded. The server cancels a statement after [`STATEMENT_TIMEOUT`] (its
//!   sessions' `statement_timeout`) and ends a transaction left idle for
//!   [`IDLE_IN_TRANSACTION_TIMEOUT`], freeing its locks; the client gives up on an exchange the
//!   server has not answered after [`EXCHANGE_TIMEOUT`] (a half-open connection: a failover or a
//!   partition that sent no reset) and closes its connection. A connection found dead, silent,
//!   or cut off mid-statement (its caller went away) is closed, never given back; a transaction
//!   whose connection was lost cannot commit.
//! - Nothing is pinged. A connection that the server closed while it was idle (a restart, a
//!   terminated backend) fails its first exchange, which changed nothing (a `BEGIN`, a `SET`, or
//!   a read): it is dropped together with every other idle connection (they met the same fate,
//!   most likely), and the work starts again on a new one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as SyncMutex, MutexGuard as SyncGuard};
use std::time::{Duration, Instant};

use sea_orm::sqlx::postgres::{PgConnectOptions, PgConnection};
use sea_orm::sqlx::{self, Connection as _, Executor as _};
use sea_orm::{DbErr, ExecResult, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// How long a caller waits for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest a statement of tenant work runs before the server cancels it (SQLSTATE 57014, which
/// callers answer with 503).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a transaction may wait on its client between statements before the server ends it:
/// a replica that hung mid-transaction releases its locks.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the client waits for any answer from the server. A statement the server cancelled
/// has answered by then, so only a server gone silent reaches it.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(35);
/// Longest a dropped write transaction's `ROLLBACK` may take before its connection is closed
/// instead (a server gone silent would otherwise hold the pool's place until TCP gives up).
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// What a pool's connections are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read-only sessions; statements outside transactions.
    Read,
    /// Transactions.
    Write,
    /// Writable sessions; each statement outside any transaction, committed when it returns
    /// (one exchange, where a transaction of one statement is three). Statements name their
    /// schema: the session's search path names none.
    Autocommit,
}

/// A bounded pool of connections to the tenants' database, all for one [`Mode`].
pub struct PgConnections {
    options: PgConnectOptions,
    mode: Mode,
    size: u32,
    idle: SyncMutex<Vec<Pooled>>,
    permits: Arc<Semaphore>,
    /// [`EXCHANGE_TIMEOUT`], shorter in tests.
    exchange_timeout: Duration,
}

/// A connection and the schema its session's search path names (reading connections only).
struct Pooled {
    conn: PgConnection,
    schema: Option<String>,
    since: Instant,
}

impl PgConnections {
    /// Connections handed out now, and the pool's size.
    pub fn usage(&self) -> (u32, u32) {
        let free = u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX);
        (self.size.saturating_sub(free), self.size)
    }

    /// A pool of `size` connections made with `options`, whose search path must name no schema.
    pub fn new(options: PgConnectOptions, mode: Mode, size: u32) -> Arc<Self> {
        let options = options.options([
            ("statement_timeout", millis(STATEMENT_TIMEOUT)),
            (
                "idle_in_transaction_session_timeout",
                millis(IDLE_IN_TRANSACTION_TIMEOUT),
            ),
            // Whatever the server's or the database's default: the audit chain's conditional
            // appends and the head's lock rely on each statement seeing what committed before
            // it (under `REPEATABLE READ` the lock after a concurrent append fails instead).
            ("default_transaction_isolation", "read committed".to_owned()),
        ]);
        let options = match mode {
            Mode::Read => options.options([("default_transaction_read_only", "on")]),
            Mode::Write | Mode::Autocommit => options,
        };
        Arc::new(PgConnections {
            options,
            mode,
            size,
            idle: SyncMutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size as usize)),
            exchange_timeout: EXCHANGE_TIMEOUT,
        })
    }

    /// `exchange`, given up as the connection's death ([`is_dead`]) when the server has not
    /// answered it within the exchange timeout. Whoever holds the connection must close it.
    async fn bounded<T>(
        &self,
        exchange: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        tokio::time::timeout(self.exchange_timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the database did not answer in time",
                )))
            })
    }

    fn idle(&self) -> SyncGuard<'_, Vec<Pooled>> {
        // A push, a pop or a clear; a panic elsewhere cannot leave the list half-changed.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A recently used idle connection, one already set to `schema` when there is one.
    fn reuse(&self, schema: &str) -> Option<Pooled> {
        let mut idle = self.idle();
        idle.retain(|p| p.since.elapsed() < IDLE_TIMEOUT);
        let at = idle
            .iter()
            .rposition(|p| p.schema.as_deref() == Some(schema))
            .or_else(|| idle.len().checked_sub(1))?;
        Some(idle.swap_remove(at))
    }

    /// Starts work in `schema` (a tenant's validated schema name): a read, or a transaction.
    pub async fn begin(pool: &Arc<Self>, schema: &str) -> Result<PgTx, DbErr> {
        let permit =
            tokio::time::timeout(ACQUIRE_TIMEOUT, Arc::clone(&pool.permits).acquire_owned())
                .await
                .map_err(|_| DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout))?
                .map_err(|_| DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed))?;
        // Every idle connection may have died with the one that failed: at most that many
        // failures before a new connection is made, and a new one is not retried.
        for _ in 0..=pool.size {
            let (mut pooled, reused) = match pool.reuse(schema) {
                Some(pooled) => (pooled, true),
                None => (pool.connect().await?, false),
            };
            let prepared = pool.prepare(&mut pooled, schema).await;
            match prepared {
                Ok(exchanged) => {
                    return Ok(PgTx {
                        conn: Mutex::new(Some(pooled)),
                        pool: Arc::clone(pool),
                        schema: schema.to_owned(),
                        // A read on a connection already set to its schema has not heard from
                        // the server yet: its first statement proves the connection alive.
                        // Only a read is run again: a write outside a transaction may have
                        // committed before its connection failed.
                        unproven: AtomicBool::new(pool.mode == Mode::Read && reused && !exchanged),
                        failed: AtomicBool::new(false),
                        permit: Some(permit),
                    });
                }
                Err(e) if reused && is_dead(&e) => pool.idle().clear(),
                Err(e) => return Err(DbErr::Conn(runtime(e))),
            }
        }
        Err(DbErr::Conn(RuntimeErr::Internal(
            "no connection to the database could start work".to_owned(),
        )))
    }

    async fn connect(&self) -> Result<Pooled, DbErr> {
        let connecting = PgConnection::connect_with(&self.options);
        match tokio::time::timeout(ACQUIRE_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => Ok(Pooled {
                conn,
                schema: None,
                since: Instant::now(),
            }),
            Ok(Err(e)) => Err(DbErr::Conn(runtime(e))),
            Err(_) => Err(DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout)),
        }
    }

    /// Readies `pooled` for work in `schema`; whether that took an exchange with the server.
    async fn prepare(&self, pooled: &mut Pooled, schema: &str) -> Result<bool, sqlx::Error> {
        // The only text spliced in is the schema name, made from a validated slug.
        match self.mode {
            Mode::Write => {
                let begin = format!("BEGIN; SET LOCAL search_path TO \"{schema}\"");
                self.bounded(pooled.conn.execute(sqlx::AssertSqlSafe(begin)))
                    .await?;
                Ok(true)
            }
            Mode::Autocommit => Ok(false),
            Mode::Read if pooled.schema.as_deref() == Some(schema) => Ok(false),
            Mode::Read => {
                // Not known to be set until the server says so.
                pooled.schema = None;
                let set = format!("SET search_path TO \"{schema}\"");
                self.bounded(pooled.conn.execute(sqlx::AssertSqlSafe(set)))
                    .await?;
                pooled.schema = Some(schema.to_owned());
                Ok(true)
            }
        }
    }

    /// Takes back a connection whose work ended.
    fn give_back(&self, mut pooled: Pooled) {
        pooled.since = Instant::now();
        self.idle().push(pooled);
    }
}

/// Whether `e` says the connection was already gone (rather than that the statement failed).
fn is_dead(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        // 57P01-57P03: terminated by an administrator, a crash, or a shutdown; 25P03 and 25P04:
        // the session ended by the idle-in-transaction or the transaction timeout.
        sqlx::Error::Database(d) => d.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("57P0")
                || matches!(&*code, "25P03" | "25P04")
        }),
        _ => false,
    }
}

fn runtime(e: sqlx::Error) -> RuntimeErr {
    RuntimeErr::SqlxError(Arc::new(e))
}

/// The error of work whose connection was closed: it ended, or a statement found it dead.
fn lost() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the work's connection to the database was lost",
    ))
}

/// A duration as a PostgreSQL setting's value in milliseconds.
fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Runs `$statement` (a future using `$conn`, the work's connection), bounded by the exchange
/// timeout, and, if it found an unproven connection dead, runs it again on a new one (see
/// [`PgTx::recover`]). The connection is out of the work while the statement runs, so a
/// statement cut short (its caller went away) closes it with the answer still on the way; one
/// found dead or silent is closed too.
macro_rules! retried {
    ($tx:expr, $conn:ident => $statement:expr) => {{
        let mut guard = $tx.conn.lock().await;
        match guard.take() {
            None => Err(lost()),
            Some(mut pooled) => {
                let first = {
                    let $conn = &mut pooled.conn;
                    $tx.pool.bounded($statement).await
                };
                let (outcome, alive) = match first {
                    Ok(done) => {
                        $tx.unproven.store(false, Ordering::Relaxed);
                        (Ok(done), true)
                    }
                    Err(e) => match $tx.recover(&mut pooled, &e).await {
                        Ok(true) => {
                            let $conn = &mut pooled.conn;
                            let again = $tx.pool.bounded($statement).await;
                            let alive = !again.as_ref().is_err_and(is_dead);
                            (again, alive)
                        }
                        Ok(false) => {
                            let alive = !is_dead(&e);
                            (Err(e), alive)
                        }
                        // The connection was dead and no new one could replace it.
                        Err(again) => (Err(again), false),
                    },
                };
                $tx.statement_ended(&mut guard, pooled, alive, &outcome);
                outcome
            }
        }
    }};
}

/// Work on a tenant's schema: a read, or a transaction. Dropping a transaction rolls it back.
pub struct PgTx {
    /// `None` once committed, while a statement runs, and once the connection was lost. An
    /// async mutex: sea-orm shares transactions by reference.
    conn: Mutex<Option<Pooled>>,
    pool: Arc<PgConnections>,
    schema: String,
    /// The connection has not answered yet (a read on a connection already set to its schema).
    unproven: AtomicBool,
    /// A statement of this transaction failed: PostgreSQL then answers `COMMIT` with a
    /// rollback and no error, so the commit must fail here instead.
    failed: AtomicBool,
    permit: Option<OwnedSemaphorePermit>,
}

impl PgTx {
    /// Ends the work: commits a transaction; a read has nothing to commit, nor has autocommit
    /// work (each statement committed as it returned). The connection goes back to the pool
    /// only when that succeeded. Fails when the connection was lost (a
    /// transaction whose statement found it dead or silent did not commit), and when one of the
    /// transaction's statements failed (PostgreSQL rolled it back).
    pub async fn commit(mut self) -> Result<(), DbErr> {
        if self.pool.mode == Mode::Write && *self.failed.get_mut() {
            // Dropped: rolled back.
            return Err(DbErr::Custom(
                "a statement of the transaction failed: it was rolled back".to_owned(),
            ));
        }
        let Some(mut pooled) = self.conn.get_mut().take() else {
            return Err(DbErr::Exec(runtime(lost())));
        };
        if self.pool.mode == Mode::Write {
            self.pool
                .bounded(pooled.conn.execute("COMMIT"))
                .await
                .map_err(|e| DbErr::Exec(runtime(e)))?;
        }
        self.pool.give_back(pooled);
        Ok(())
    }

    /// Ends a statement that took the work's connection out of `slot`: the connection goes back
    /// only when `alive`, and a failed statement marks the work failed.
    fn statement_ended<T>(
        &self,
        slot: &mut Option<Pooled>,
        pooled: Pooled,
        alive: bool,
        outcome: &Result<T, sqlx::Error>,
    ) {
        if alive {
            *slot = Some(pooled);
        }
        if outcome.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
    }

    /// Replaces a connection found dead by the first statement of a read that had not heard
    /// from the server yet (`unproven`); whether the statement should run again. It changed
    /// nothing, and a read has no effect to repeat.
    async fn recover(
        &self,
        pooled: &mut Pooled,
        failure: &sqlx::Error,
    ) -> Result<bool, sqlx::Error> {
        if !self.unproven.swap(false, Ordering::Relaxed) || !is_dead(failure) {
            return Ok(false);
        }
        self.pool.idle().clear();
        let mut fresh = self
            .pool
            .connect()
            .await
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        self.pool.prepare(&mut fresh, &self.schema).await?;
        *pooled = fresh;
        Ok(true)
    }

    pub async fn execute(&self, statement: &Statement) -> Result<ExecResult, DbErr> {
        retried!(self, conn => query(statement).execute(conn))
            .map(ExecResult::from)
            .map_err(|e| DbErr::Exec(runtime(e)))
    }

    pub async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        retried!(self, conn => conn.execute(sqlx::AssertSqlSafe(sql)))
            .map(ExecResult::from)
            .map_err(|e| DbErr::Exec(runtime(e)))
    }

    pub async fn query_one(&self, statement: &Statement) -> Result<Option<QueryResult>, DbErr> {
        retried!(self, conn => query(statement).fetch_optional(conn))
            .map(|row| row.map(QueryResult::from))
            .map_err(|e| DbErr::Query(runtime(e)))
    }

    pub async fn query_all(&self, statement: &Statement) -> Result<Vec<QueryResult>, DbErr> {
        retried!(self, conn => query(statement).fetch_all(conn))
            .map(|rows| rows.into_iter().map(QueryResult::from).collect())
            .map_err(|e| DbErr::Query(runtime(e)))
    }

    /// Runs `run` on the transaction's connection, for a statement sea-orm cannot build (the
    /// audit trail's batch of arrays).
    pub async fn with_connection<T>(
        &self,
        run: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, DbErr> {
        let mut guard = self.conn.lock().await;
        let mut pooled = guard.take().ok_or_else(|| DbErr::Exec(runtime(lost())))?;
        // Out of the work while `run` runs, as in `retried!`.
        let outcome = self.pool.bounded(run(&mut pooled.conn)).await;
        let alive = !outcome.as_ref().is_err_and(is_dead);
        self.statement_ended(&mut guard, pooled, alive, &outcome);
        outcome.map_err(|e| DbErr::Exec(runtime(e)))
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(mut pooled) = self.conn.get_mut().take() else {
            return;
        };
        let (pool, permit) = (Arc::clone(&self.pool), self.permit.take());
        if pool.mode != Mode::Write {
            // Nothing to undo, and no statement under way (a statement takes the connection).
            pool.give_back(pooled);
            return;
        }
        // Rolled back before anyone else may use the connection; without a runtime (the
        // process is stopping) it is closed, which ends the transaction too.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let rollback = pooled.conn.execute("ROLLBACK");
                if let Ok(Ok(_)) = tokio::time::timeout(ROLLBACK_TIMEOUT, rollback).await {
                    pool.give_back(pooled);
                }
                drop(permit);
            });
        }
    }
}

fn query(statement: &Statement) -> sqlx::query::Query<'_, sqlx::Postgres, SqlxValues> {
    let values = SqlxValues(
        statement
            .values
            .clone()
            .unwrap_or(sea_orm::Values(Vec::new())),
    );
    sqlx::query_with(sqlx::AssertSqlSafe(statement.sql.as_str()), values)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::tenancy::db::tests::Scratch;

    /// A TCP relay to the local PostgreSQL that can go silent: once `silent` is set it keeps
    /// every connection open and forwards nothing either way, as a half-open connection does
    /// after a failover that sent no reset.
    async fn relay(silent: Arc<AtomicBool>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect("127.0.0.1:5432").await else {
                    return;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, Arc::clone(&silent)));
                tokio::spawn(forward(server_read, client_write, Arc::clone(&silent)));
            }
        });
        port
    }

    async fn forward(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        silent: Arc<AtomicBool>,
    ) {
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if !silent.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn pool(port: u16, mode: Mode) -> Arc<PgConnections> {
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username("postgres")
            .database("postgres");
        let mut pool = PgConnections::new(options, mode, 2);
        Arc::get_mut(&mut pool).unwrap().exchange_timeout = Duration::from_millis(500);
        pool
    }

    /// A pool of `mode` on the scratch database.
    fn scratch_pool(scratch: &Scratch, mode: Mode) -> Arc<PgConnections> {
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(5432)
            .username("postgres")
            .database(&scratch.0);
        PgConnections::new(options, mode, 2)
    }

    fn select(sql: &str) -> Statement {
        Statement::from_string(sea_orm::DbBackend::Postgres, sql)
    }

    /// Every exchange with a server gone silent gives up within bounds, closes its connection
    /// and never hands it to the next caller; a transaction that lost its connection cannot
    /// say it committed. Before, each of these waited for TCP to give up (minutes).
    #[tokio::test]
    async fn a_silent_server_fails_the_work_instead_of_hanging_it() {
        let silent = Arc::new(AtomicBool::new(false));
        let port = relay(Arc::clone(&silent)).await;
        let reads = pool(port, Mode::Read);

        // The server cancels long statements itself.
        let read = PgConnections::begin(&reads, "public").await.unwrap();
        let row = read
            .query_one(&select(
                "SELECT current_setting('statement_timeout') AS timeout",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get::<String>("", "timeout").unwrap(), "30s");

        // A proven connection that goes silent mid-read: the statement fails, the connection
        // is closed, and the read cannot be ended as if it had succeeded.
        silent.store(true, Ordering::SeqCst);
        let started = Instant::now();
        let failed = read.query_one(&select("SELECT 1")).await.unwrap_err();
        assert!(
            crate::tenancy::db::is_connection_error(&failed),
            "{failed:?}"
        );
        assert!(read.commit().await.is_err());
        assert!(reads.idle().is_empty());
        assert!(started.elapsed() < Duration::from_secs(3));

        // A write whose server goes silent after BEGIN does not commit.
        silent.store(false, Ordering::SeqCst);
        let writes = pool(port, Mode::Write);
        let write = PgConnections::begin(&writes, "public").await.unwrap();
        silent.store(true, Ordering::SeqCst);
        assert!(write.execute_unprepared("SELECT 1").await.is_err());
        assert!(write.commit().await.is_err());
        assert!(writes.idle().is_empty());
        assert_eq!(writes.usage().0, 0, "the pool's place is given back");
    }

    /// A database whose default isolation is `REPEATABLE READ` does not make the audit chain's
    /// transactions fail their head lock after a concurrent append: every pool's sessions are
    /// `READ COMMITTED`.
    #[tokio::test]
    async fn transactions_are_read_committed_whatever_the_database_default() {
        let scratch = Scratch::new(
            "ALTER DATABASE {db} SET default_transaction_isolation = 'repeatable read'",
        );
        for mode in [Mode::Write, Mode::Autocommit, Mode::Read] {
            let pool = scratch_pool(&scratch, mode);
            let work = PgConnections::begin(&pool, "public").await.unwrap();
            let row = work
                .query_one(&select(
                    "SELECT current_setting('transaction_isolation') AS level",
                ))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                row.try_get::<String>("", "level").unwrap(),
                "read committed"
            );
            work.commit().await.unwrap();
        }
    }

    /// PostgreSQL answers `COMMIT` after a failed statement with a rollback and no error: the
    /// transaction says it did not commit rather than let a caller that went on take it as done.
    #[tokio::test]
    async fn a_transaction_with_a_failed_statement_does_not_say_it_committed() {
        let silent = Arc::new(AtomicBool::new(false));
        let writes = pool(relay(silent).await, Mode::Write);
        let write = PgConnections::begin(&writes, "public").await.unwrap();
        assert!(write.execute_unprepared("SELECT 1/0").await.is_err());
        assert!(write.commit().await.is_err());
        let again = PgConnections::begin(&writes, "public").await.unwrap();
        again.execute_unprepared("SELECT 1").await.unwrap();
        again.commit().await.unwrap();
    }

    /// A read whose caller went away mid-statement closes its connection rather than handing
    /// the next caller one with an answer still on the way.
    #[tokio::test]
    async fn a_read_cut_short_does_not_give_its_connection_back() {
        let silent = Arc::new(AtomicBool::new(false));
        let reads = pool(relay(silent).await, Mode::Read);
        let read = PgConnections::begin(&reads, "public").await.unwrap();
        let sleep = read.execute_unprepared("SELECT pg_sleep(2)");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), sleep)
                .await
                .is_err()
        );
        assert!(read.commit().await.is_err());
        assert!(reads.idle().is_empty());
        let again = PgConnections::begin(&reads, "public").await.unwrap();
        assert!(again.execute_unprepared("SELECT 1").await.is_ok());
        again.commit().await.unwrap();
        assert_eq!(reads.idle().len(), 1);
    }

    /// A statement of autocommit work has committed when it returns, before and without the
    /// work's end; work dropped unended gives its connection back with nothing to undo, and a
    /// failed statement leaves no aborted transaction behind for the next one.
    #[tokio::test]
    async fn autocommit_statements_commit_as_they_return() {
        let silent = Arc::new(AtomicBool::new(false));
        let port = relay(silent).await;
        let appends = pool(port, Mode::Autocommit);
        let table = format!("public.fg_autocommit_{}", uuid::Uuid::new_v4().simple());
        let work = PgConnections::begin(&appends, "public").await.unwrap();
        work.execute_unprepared(&format!("CREATE TABLE {table} (n int)"))
            .await
            .unwrap();
        work.execute_unprepared(&format!("INSERT INTO {table} VALUES (1)"))
            .await
            .unwrap();
        let reads = pool(port, Mode::Read);
        let read = PgConnections::begin(&reads, "public").await.unwrap();
        let seen = read
            .query_one(&select(&format!("SELECT count(*) AS n FROM {table}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            seen.try_get::<i64>("", "n").unwrap(),
            1,
            "committed as it returned"
        );
        drop(work);
        assert_eq!(appends.idle().len(), 1, "given back with nothing to undo");
        assert_eq!(appends.usage().0, 0);

        let work = PgConnections::begin(&appends, "public").await.unwrap();
        assert!(work.execute_unprepared("SELECT 1/0").await.is_err());
        work.commit().await.unwrap();
        let work = PgConnections::begin(&appends, "public").await.unwrap();
        work.execute_unprepared(&format!("DROP TABLE {table}"))
            .await
            .unwrap();
        work.commit().await.unwrap();
        read.commit().await.unwrap();
    }
}
