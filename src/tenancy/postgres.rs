//! PostgreSQL tenant connections: a pool of our own, so that a tenant transaction costs the
//! fewest exchanges with the server.
//!
//! sqlx's pool pings every connection it hands out and every one it takes back; with sea-orm's
//! transactions, a tenant read was six exchanges (ping, BEGIN, configuration, SELECT, COMMIT,
//! ping). Here it is three: `BEGIN … ; SET LOCAL search_path …` in one simple query, the
//! statements, `COMMIT`.
//!
//! Invariants:
//! - Every transaction sets its tenant's schema, transaction-locally, in the same exchange as its
//!   `BEGIN`; the connections' own search path names no schema, so a statement outside such a
//!   transaction finds no table. The schema name comes from a validated slug, never from request
//!   text, and is quoted.
//! - Reads are `READ ONLY` transactions, enforced by PostgreSQL.
//! - A connection is reused only after its transaction ended: committed, or rolled back by a task
//!   of its own when the transaction was dropped; a connection that failed is closed.
//! - Nothing is pinged. A connection that the server closed while it was idle (a restart, a
//!   terminated backend) fails its `BEGIN`, which has done nothing yet: it is dropped together
//!   with every other idle connection (they met the same fate, most likely), and the
//!   transaction begins on a new one.

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

/// A bounded pool of connections to the tenants' database.
pub struct PgConnections {
    options: PgConnectOptions,
    size: u32,
    idle: SyncMutex<Vec<(PgConnection, Instant)>>,
    permits: Arc<Semaphore>,
}

/// What a transaction may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Read,
    Write,
}

impl PgConnections {
    pub fn new(options: PgConnectOptions, size: u32) -> Arc<Self> {
        Arc::new(PgConnections {
            options,
            size,
            idle: SyncMutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size as usize)),
        })
    }

    fn idle(&self) -> SyncGuard<'_, Vec<(PgConnection, Instant)>> {
        // A push, a pop or a clear; a panic elsewhere cannot leave the list half-changed.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A recently used idle connection, if there is one.
    fn reuse(&self) -> Option<PgConnection> {
        let mut idle = self.idle();
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT {
                return Some(conn);
            }
            // Closed by dropping; the server ends the session when the socket closes.
        }
        None
    }

    /// Begins a transaction in `schema` (a tenant's validated schema name).
    pub async fn begin(pool: &Arc<Self>, schema: &str, mode: Mode) -> Result<PgTx, DbErr> {
        let permit =
            tokio::time::timeout(ACQUIRE_TIMEOUT, Arc::clone(&pool.permits).acquire_owned())
                .await
                .map_err(|_| DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout))?
                .map_err(|_| DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed))?;
        let access = match mode {
            Mode::Read => "READ ONLY",
            Mode::Write => "READ WRITE",
        };
        let begin = format!("BEGIN {access}; SET LOCAL search_path TO \"{schema}\"");
        // Every idle connection may have died with the one that failed: at most that many
        // failures before a new connection is made, and a new one is not retried.
        for _ in 0..=pool.size {
            let (mut conn, reused) = match pool.reuse() {
                Some(conn) => (conn, true),
                None => (connect(&pool.options).await?, false),
            };
            // The only text spliced in is the schema name, made from a validated slug.
            match conn.execute(sqlx::AssertSqlSafe(begin.as_str())).await {
                Ok(_) => {
                    return Ok(PgTx {
                        conn: Mutex::new(Some(conn)),
                        pool: Arc::clone(pool),
                        permit: Some(permit),
                    });
                }
                Err(e) if reused && is_dead(&e) => pool.idle().clear(),
                Err(e) => return Err(DbErr::Conn(runtime(e))),
            }
        }
        Err(DbErr::Conn(RuntimeErr::Internal(
            "no connection to the database could begin a transaction".to_owned(),
        )))
    }

    /// Takes back a connection whose transaction ended.
    fn give_back(&self, conn: PgConnection) {
        self.idle().push((conn, Instant::now()));
    }
}

async fn connect(options: &PgConnectOptions) -> Result<PgConnection, DbErr> {
    let connecting = PgConnection::connect_with(options);
    match tokio::time::timeout(ACQUIRE_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(DbErr::Conn(runtime(e))),
        Err(_) => Err(DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout)),
    }
}

/// Whether `e` says the connection was already gone (rather than that the statement failed).
fn is_dead(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        // 57P01-57P03: terminated by an administrator, a crash, or a shutdown.
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

fn runtime(e: sqlx::Error) -> RuntimeErr {
    RuntimeErr::SqlxError(Arc::new(e))
}

/// A transaction on a tenant's schema. Dropping it rolls it back.
pub struct PgTx {
    /// `None` once committed. An async mutex: sea-orm shares transactions by reference.
    conn: Mutex<Option<PgConnection>>,
    pool: Arc<PgConnections>,
    permit: Option<OwnedSemaphorePermit>,
}

impl PgTx {
    /// Commits. The connection goes back to the pool only when the commit succeeded.
    pub async fn commit(mut self) -> Result<(), DbErr> {
        let Some(mut conn) = self.conn.get_mut().take() else {
            return Ok(());
        };
        conn.execute("COMMIT")
            .await
            .map_err(|e| DbErr::Exec(runtime(e)))?;
        self.pool.give_back(conn);
        Ok(())
    }

    pub async fn execute(&self, statement: &Statement) -> Result<ExecResult, DbErr> {
        let mut conn = self.conn.lock().await;
        let conn = conn.as_mut().ok_or_else(ended)?;
        query(statement)
            .execute(conn)
            .await
            .map(ExecResult::from)
            .map_err(|e| DbErr::Exec(runtime(e)))
    }

    pub async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let mut conn = self.conn.lock().await;
        let conn = conn.as_mut().ok_or_else(ended)?;
        conn.execute(sqlx::AssertSqlSafe(sql))
            .await
            .map(ExecResult::from)
            .map_err(|e| DbErr::Exec(runtime(e)))
    }

    pub async fn query_one(&self, statement: &Statement) -> Result<Option<QueryResult>, DbErr> {
        let mut conn = self.conn.lock().await;
        let conn = conn.as_mut().ok_or_else(ended)?;
        query(statement)
            .fetch_optional(conn)
            .await
            .map(|row| row.map(QueryResult::from))
            .map_err(|e| DbErr::Query(runtime(e)))
    }

    pub async fn query_all(&self, statement: &Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut conn = self.conn.lock().await;
        let conn = conn.as_mut().ok_or_else(ended)?;
        query(statement)
            .fetch_all(conn)
            .await
            .map(|rows| rows.into_iter().map(QueryResult::from).collect())
            .map_err(|e| DbErr::Query(runtime(e)))
    }

    /// Runs `run` on the transaction's connection, for a statement sea-orm cannot build (the
    /// audit trail's batch of arrays).
    pub async fn with_connection<T>(
        &self,
        run: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, DbErr> {
        let mut conn = self.conn.lock().await;
        let conn = conn.as_mut().ok_or_else(ended)?;
        run(conn).await.map_err(|e| DbErr::Exec(runtime(e)))
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.get_mut().take() else {
            return;
        };
        let (pool, permit) = (Arc::clone(&self.pool), self.permit.take());
        // Rolled back before anyone else may use the connection; without a runtime (the
        // process is stopping) it is closed, which ends the transaction too.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if conn.execute("ROLLBACK").await.is_ok() {
                    pool.give_back(conn);
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

fn ended() -> DbErr {
    DbErr::Custom("the transaction has ended".to_owned())
}
