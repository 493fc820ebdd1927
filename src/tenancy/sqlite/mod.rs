//! SQLite files (the control plane's and each tenant's), driven by rusqlite on the calling
//! thread.
//!
//! sqlx runs each SQLite connection on a worker thread of its own and hands every statement and
//! every row across channels: about fifteen context switches for one page of users, which was
//! nearly half the server's time (`perf`, issue 10). Here a statement runs where it is awaited,
//! with its prepared form cached on the connection. SQLite reads take microseconds; a write
//! waits for the file's single writer connection asynchronously, never by blocking a thread,
//! and `BEGIN IMMEDIATE` then finds the write lock free (only another process, such as the
//! command line, can hold it, for at most the busy timeout).
//!
//! Invariants:
//! - Each file has at most [`READERS`] reading connections and one writing connection; a caller
//!   waits for one at most [`ACQUIRE_TIMEOUT`], then the database is "unavailable" (503).
//! - A transaction that is dropped without its commit is rolled back before its connection is
//!   used again; a connection whose rollback failed is closed, never reused.
//! - A closed pool opens no connection and hands out none; closing waits for the connections
//!   in use to come back, so no connection to a deleted file outlives its deletion.

mod error;
mod proxy;
mod values;

pub use proxy::{connection, open};

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags, params_from_iter};
use sea_orm::{
    DbErr, EntityTrait, ExecResult, ProxyExecResult, ProxyRow, QueryResult, Statement, TryIntoModel,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use error::{Phase, db_err};

/// Reading connections per file (WAL: many readers beside one writer).
pub const READERS: u32 = 8;
/// How long a caller waits for a connection, and SQLite for a lock another process holds.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// The connections of one file.
pub struct SqliteFile {
    readers: Arc<Pool>,
    writer: Arc<Pool>,
}

/// What a transaction is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `BEGIN DEFERRED` on a reading connection.
    Read,
    /// `BEGIN IMMEDIATE` on the writing connection.
    Write,
}

impl SqliteFile {
    /// The pools of an existing file; connections open on first use.
    pub fn open(path: &Path) -> Self {
        SqliteFile {
            readers: Pool::new(path, READERS, Mode::Read),
            writer: Pool::new(path, 1, Mode::Write),
        }
    }

    /// Begins a transaction on the file.
    pub async fn begin(&self, mode: Mode) -> Result<SqliteTx, DbErr> {
        let (pool, begin) = match mode {
            Mode::Read => (&self.readers, "BEGIN DEFERRED"),
            Mode::Write => (&self.writer, "BEGIN IMMEDIATE"),
        };
        let checkout = Pool::checkout(pool).await?;
        checkout.with(|conn| control(conn, begin).map_err(|e| db_err(Phase::Connect, e)))?;
        Ok(SqliteTx {
            checkout: Some(checkout),
        })
    }

    /// Runs `f` on a connection outside any transaction (each statement commits by itself).
    async fn autocommit<T>(
        &self,
        mode: Mode,
        f: impl FnOnce(&Connection) -> Result<T, DbErr>,
    ) -> Result<T, DbErr> {
        let pool = match mode {
            Mode::Read => &self.readers,
            Mode::Write => &self.writer,
        };
        Pool::checkout(pool).await?.with(f)
    }

    /// Runs one query outside any transaction: on a reading connection, or on the writing one
    /// when the statement writes (`INSERT … RETURNING`), which reading connections refuse.
    async fn autocommit_query(&self, statement: &Statement) -> Result<Vec<ProxyRow>, DbErr> {
        let read = self
            .autocommit(Mode::Read, |conn| {
                let (sql, _) = prepared(statement).map_err(DbErr::Custom)?;
                let reads_only = conn
                    .prepare_cached(&sql)
                    .map_err(|e| db_err(Phase::Query, e))?
                    .readonly();
                reads_only
                    .then(|| query(conn, statement, usize::MAX))
                    .transpose()
            })
            .await?;
        match read {
            Some(rows) => Ok(rows),
            None => {
                self.autocommit(Mode::Write, |conn| query(conn, statement, usize::MAX))
                    .await
            }
        }
    }

    /// Refuses new transactions at once, then waits for those under way to end. Any number of
    /// callers may wait for it at once; each returns once the last transaction ended.
    pub async fn close(&self) {
        futures_util::future::join(self.readers.close(), self.writer.close()).await;
    }

    /// Waits until the file's writing connection is closed (after [`SqliteFile::close`] began):
    /// no write transaction is left on it. Readers may go on; WAL lets them.
    pub async fn writer_closed(&self) {
        self.writer.close().await;
    }

    /// Whether the file's writing connection is closed.
    pub fn is_writer_closed(&self) -> bool {
        self.writer.permits.is_closed()
    }
}

/// Connections to one file, at most `size` at once.
struct Pool {
    path: PathBuf,
    size: u32,
    /// A reading pool's connections refuse to write (`PRAGMA query_only`), as PostgreSQL's
    /// read transactions do: a read transaction that tried would change nothing.
    mode: Mode,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    closed: AtomicBool,
}

impl Pool {
    fn new(path: &Path, size: u32, mode: Mode) -> Arc<Self> {
        Arc::new(Pool {
            path: path.to_owned(),
            size,
            mode,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size as usize)),
            closed: AtomicBool::new(false),
        })
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // A push or a pop; a panic elsewhere cannot leave the list half-changed.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn checkout(pool: &Arc<Pool>) -> Result<Checkout, DbErr> {
        let closed = || DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed);
        if pool.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let permit =
            tokio::time::timeout(ACQUIRE_TIMEOUT, Arc::clone(&pool.permits).acquire_owned())
                .await
                .map_err(|_| DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout))?
                .map_err(|_| closed())?;
        if pool.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let conn = match pool.idle().pop() {
            Some(conn) => conn,
            None => connect(&pool.path, pool.mode).map_err(|e| db_err(Phase::Connect, e))?,
        };
        Ok(Checkout {
            conn: Mutex::new(Some(conn)),
            pool: Arc::clone(pool),
            _permit: permit,
        })
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle().clear();
        // Every permit back means every connection in use was returned (and dropped).
        if let Ok(all) = self.permits.acquire_many(self.size).await {
            all.forget();
        }
        self.permits.close();
    }
}

/// Creates a SQLite database at `path`, readable by its owner only and in WAL mode, unless one
/// is there (`false`). The file takes its name only once it is a WAL database: switching a file
/// to WAL needs it to itself, so no connection may find it before.
pub fn create(path: &Path) -> anyhow::Result<bool> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let staging = path.with_file_name(format!(
        ".{}.{}.new",
        name.unwrap_or_default(),
        uuid::Uuid::new_v4().simple()
    ));
    crate::files::touch_private(&staging)?;
    let initialised = Connection::open_with_flags(&staging, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .and_then(|conn| conn.pragma_update(None, "journal_mode", "WAL"));
    let linked = initialised.map(|()| std::fs::hard_link(&staging, path));
    std::fs::remove_file(&staging).with_context(|| format!("removing {}", staging.display()))?;
    match linked.with_context(|| format!("creating {}", path.display()))? {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn connect(path: &Path, mode: Mode) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(ACQUIRE_TIMEOUT)?;
    // The file is in WAL mode since its creation (`create`); the rest is per connection.
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    if mode == Mode::Read {
        conn.pragma_update(None, "query_only", true)?;
    }
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// A connection taken from its pool, given back when dropped.
struct Checkout {
    /// Behind a mutex only so that transactions can be shared (sea-orm's connections are
    /// `Sync`); one transaction's statements never contend for it. `None` once given back.
    conn: Mutex<Option<Connection>>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Checkout {
    /// Runs `f` on the connection.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T, DbErr>) -> Result<T, DbErr> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        match conn.as_ref() {
            Some(conn) => f(conn),
            None => Err(DbErr::Custom("the connection was given back".to_owned())),
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let taken = self.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(conn) = taken else {
            return;
        };
        // Only a connection outside any transaction goes back.
        if conn.is_autocommit() && !self.pool.closed.load(Ordering::Acquire) {
            self.pool.idle().push(conn);
        }
    }
}

/// A transaction on a SQLite file. Dropping it rolls it back.
pub struct SqliteTx {
    checkout: Option<Checkout>,
}

impl SqliteTx {
    fn checkout(&self) -> Result<&Checkout, DbErr> {
        self.checkout
            .as_ref()
            .ok_or_else(|| DbErr::Custom("the transaction has ended".to_owned()))
    }

    /// Commits; on failure the transaction is rolled back.
    pub fn commit(mut self) -> Result<(), DbErr> {
        let checkout = self.checkout.take();
        match checkout {
            Some(checkout) => {
                checkout.with(|conn| control(conn, "COMMIT").map_err(|e| db_err(Phase::Execute, e)))
            }
            None => Ok(()),
        }
    }

    pub fn execute(&self, statement: &Statement) -> Result<ExecResult, DbErr> {
        self.checkout()?
            .with(|conn| execute(conn, statement))
            .map(Into::into)
    }

    pub fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.checkout()?.with(|conn| {
            conn.execute_batch(sql)
                .map_err(|e| db_err(Phase::Execute, e))?;
            Ok(ProxyExecResult::new(0, conn.changes()).into())
        })
    }

    /// The rows of `statement`, at most `limit`.
    pub fn query(&self, statement: &Statement, limit: usize) -> Result<Vec<QueryResult>, DbErr> {
        let rows = self
            .checkout()?
            .with(|conn| query(conn, statement, limit))?;
        Ok(rows.into_iter().map(QueryResult::from).collect())
    }

    /// The models of `statement`, a select of every column of `E`, each row decoded straight
    /// into its model.
    pub fn models<E>(&self, statement: &Statement) -> Result<Vec<E::Model>, DbErr>
    where
        E: EntityTrait,
        E::ActiveModel: TryIntoModel<E::Model>,
    {
        self.checkout()?.with(|conn| models::<E>(conn, statement))
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if let Some(checkout) = self.checkout.take() {
            // A failed rollback leaves the connection inside a transaction, and the checkout's
            // own drop then closes it rather than give it back.
            let _ = checkout
                .with(|conn| control(conn, "ROLLBACK").map_err(|e| db_err(Phase::Execute, e)));
        }
    }
}

/// Runs a transaction-control statement, prepared once per connection.
fn control(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs one statement that returns no rows.
fn execute(conn: &Connection, statement: &Statement) -> Result<ProxyExecResult, DbErr> {
    let (sql, params) = prepared(statement).map_err(DbErr::Custom)?;
    let mut prepared = conn
        .prepare_cached(&sql)
        .map_err(|e| db_err(Phase::Execute, e))?;
    let affected = prepared
        .execute(params_from_iter(params))
        .map_err(|e| db_err(Phase::Execute, e))?;
    let last = u64::try_from(conn.last_insert_rowid()).unwrap_or_default();
    Ok(ProxyExecResult::new(last, affected as u64))
}

/// Runs one query and reads at most `limit` of its rows.
fn query(conn: &Connection, statement: &Statement, limit: usize) -> Result<Vec<ProxyRow>, DbErr> {
    let (sql, params) = prepared(statement).map_err(DbErr::Custom)?;
    let mut prepared = conn
        .prepare_cached(&sql)
        .map_err(|e| db_err(Phase::Query, e))?;
    let kinds = values::result_kinds(&prepared);
    let mut rows = prepared
        .query(params_from_iter(params))
        .map_err(|e| db_err(Phase::Query, e))?;
    let mut results = Vec::new();
    while results.len() < limit {
        let Some(row) = rows.next().map_err(|e| db_err(Phase::Query, e))? else {
            break;
        };
        let values: BTreeMap<_, _> = values::read_row(row, &kinds).map_err(DbErr::Type)?;
        results.push(ProxyRow::new(values));
    }
    Ok(results)
}

/// Runs one select of every column of `E` and reads its rows as models.
fn models<E>(conn: &Connection, statement: &Statement) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    E::ActiveModel: TryIntoModel<E::Model>,
{
    let (sql, params) = prepared(statement).map_err(DbErr::Custom)?;
    let mut prepared = conn
        .prepare_cached(&sql)
        .map_err(|e| db_err(Phase::Query, e))?;
    let columns = values::model_columns::<E>(&prepared).map_err(DbErr::Type)?;
    let mut rows = prepared
        .query(params_from_iter(params))
        .map_err(|e| db_err(Phase::Query, e))?;
    let mut models = Vec::new();
    while let Some(row) = rows.next().map_err(|e| db_err(Phase::Query, e))? {
        models.push(values::read_model::<E>(row, &columns).map_err(DbErr::Type)?);
    }
    Ok(models)
}

/// The SQL text to prepare and the parameters to bind.
///
/// A bound `LIMIT` or `OFFSET` makes SQLite prepare the statement again at every execution (it
/// plans by their values since 3.45; measured: every page of users was parsed anew, a tenth of
/// the server's time). sea-query puts them last, so trailing integer ones are written into the
/// text instead: the only text spliced in is an integer formatted here.
fn prepared(statement: &Statement) -> Result<(Cow<'_, str>, Vec<rusqlite::types::Value>), String> {
    let mut params: Vec<rusqlite::types::Value> = match &statement.values {
        None => Vec::new(),
        Some(values) => values
            .0
            .iter()
            .map(values::bind)
            .collect::<Result<_, _>>()?,
    };
    let mut head = statement.sql.as_str();
    let mut tail = String::new();
    for clause in [" OFFSET ", " LIMIT "] {
        let placeholder = format!("{clause}?");
        let (Some(rest), Some(rusqlite::types::Value::Integer(n))) =
            (head.strip_suffix(placeholder.as_str()), params.last())
        else {
            continue;
        };
        tail = format!("{clause}{n}{tail}");
        head = rest;
        params.pop();
    }
    let sql = if tail.is_empty() {
        Cow::Borrowed(head)
    } else {
        Cow::Owned(format!("{head}{tail}"))
    };
    Ok((sql, params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::DbBackend;

    fn file() -> (tempfile_dir::Dir, SqliteFile) {
        let dir = tempfile_dir::Dir::new();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE users (id uuid_text PRIMARY KEY, email varchar NOT NULL UNIQUE, \
             attributes json_text NOT NULL, created_at timestamp_with_timezone_text NOT NULL)",
        )
        .unwrap();
        drop(conn);
        let file = SqliteFile::open(&path);
        (dir, file)
    }

    /// A directory removed when dropped.
    mod tempfile_dir {
        pub struct Dir(std::path::PathBuf);

        impl Dir {
            pub fn new() -> Self {
                let path = std::env::temp_dir().join(format!("fg-sqlite-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }

            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn insert(email: &str) -> Statement {
        Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO users (id, email, attributes, created_at) VALUES (?, ?, ?, ?)",
            [
                uuid::Uuid::new_v4().into(),
                email.into(),
                serde_json::json!({"region": "EU"}).into(),
                chrono::Utc::now().into(),
            ],
        )
    }

    fn count() -> Statement {
        Statement::from_string(DbBackend::Sqlite, "SELECT COUNT(*) AS n FROM users")
    }

    fn counted(tx: &SqliteTx) -> i64 {
        tx.query(&count(), 1).unwrap()[0]
            .try_get::<i64>("", "n")
            .unwrap()
    }

    #[test]
    fn trailing_integer_limits_and_offsets_are_written_into_the_text() {
        let page = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT a FROM t WHERE b = ? ORDER BY a LIMIT ? OFFSET ?",
            ["x".into(), 50i64.into(), 100i64.into()],
        );
        let (sql, params) = prepared(&page).unwrap();
        assert_eq!(
            sql,
            "SELECT a FROM t WHERE b = ? ORDER BY a LIMIT 50 OFFSET 100"
        );
        assert_eq!(params, vec![rusqlite::types::Value::Text("x".into())]);
        let text = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT a FROM t WHERE b = ? LIMIT ?",
            ["x".into(), "y".into()],
        );
        let (sql, params) = prepared(&text).unwrap();
        assert_eq!(
            sql, "SELECT a FROM t WHERE b = ? LIMIT ?",
            "only integers are inlined"
        );
        assert_eq!(params.len(), 2);
    }

    #[tokio::test]
    async fn a_page_is_prepared_once() {
        let (_dir, file) = file();
        let tx = file.begin(Mode::Write).await.unwrap();
        for _ in 0..3 {
            let page = Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "SELECT email FROM users ORDER BY email LIMIT ?",
                [50i64.into()],
            );
            tx.query(&page, 100).unwrap();
        }
        // Whichever text the page was prepared under, it was not prepared again.
        for sql in [
            "SELECT email FROM users ORDER BY email LIMIT ?",
            "SELECT email FROM users ORDER BY email LIMIT 50",
        ] {
            let reprepared = tx
                .checkout()
                .unwrap()
                .with(|conn| {
                    Ok(conn
                        .prepare_cached(sql)
                        .unwrap()
                        .get_status(rusqlite::StatementStatus::RePrepare))
                })
                .unwrap();
            assert_eq!(reprepared, 0, "{sql}");
        }
    }

    #[tokio::test]
    async fn committed_writes_are_seen_and_dropped_ones_are_not() {
        let (_dir, file) = file();
        let tx = file.begin(Mode::Write).await.unwrap();
        tx.execute(&insert("kept@example.com")).unwrap();
        tx.commit().unwrap();
        let tx = file.begin(Mode::Write).await.unwrap();
        tx.execute(&insert("dropped@example.com")).unwrap();
        drop(tx);
        let read = file.begin(Mode::Read).await.unwrap();
        assert_eq!(counted(&read), 1);
    }

    #[tokio::test]
    async fn a_read_transaction_writes_nothing() {
        let (_dir, file) = file();
        let read = file.begin(Mode::Read).await.unwrap();
        assert!(read.execute(&insert("sneaked@example.com")).is_err());
        read.commit().unwrap();
        let read = file.begin(Mode::Read).await.unwrap();
        assert_eq!(counted(&read), 0);
    }

    /// SQLite reports a restricted delete as a trigger's constraint (1811), not as a foreign key
    /// (787): both must read as a foreign-key violation, or a delete racing an insert is a 500.
    #[tokio::test]
    async fn a_restricted_delete_is_recognised_as_a_foreign_key_violation() {
        let (_dir, file) = file();
        let tx = file.begin(Mode::Write).await.unwrap();
        for sql in [
            "CREATE TABLE folders (id integer PRIMARY KEY)",
            "CREATE TABLE items (id integer PRIMARY KEY, \
             folder_id integer REFERENCES folders (id) ON DELETE RESTRICT)",
            "INSERT INTO folders (id) VALUES (1)",
            "INSERT INTO items (id, folder_id) VALUES (1, 1)",
        ] {
            tx.execute(&Statement::from_string(DbBackend::Sqlite, sql))
                .unwrap();
        }
        for sql in [
            "DELETE FROM folders WHERE id = 1",
            "INSERT INTO items (id, folder_id) VALUES (2, 9)",
        ] {
            let e = tx
                .execute(&Statement::from_string(DbBackend::Sqlite, sql))
                .unwrap_err();
            assert!(crate::tenancy::is_foreign_key_violation(&e), "{sql}: {e:?}");
        }
    }

    #[tokio::test]
    async fn a_unique_violation_is_recognised_as_one() {
        let (_dir, file) = file();
        let tx = file.begin(Mode::Write).await.unwrap();
        tx.execute(&insert("twice@example.com")).unwrap();
        let again = tx.execute(&insert("twice@example.com")).unwrap_err();
        let DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e)) = &again else {
            panic!("{again:?}");
        };
        let sea_orm::sqlx::Error::Database(e) = e.as_ref() else {
            panic!("{e:?}");
        };
        assert!(e.is_unique_violation(), "{e}");
    }

    #[tokio::test]
    async fn rows_are_typed_by_their_columns() {
        let (_dir, file) = file();
        let tx = file.begin(Mode::Write).await.unwrap();
        tx.execute(&insert("ada@example.com")).unwrap();
        let select = Statement::from_string(
            DbBackend::Sqlite,
            "SELECT id, email, attributes, created_at FROM users",
        );
        let rows = tx.query(&select, 10).unwrap();
        let row = &rows[0];
        row.try_get::<uuid::Uuid>("", "id").unwrap();
        row.try_get::<chrono::DateTime<chrono::Utc>>("", "created_at")
            .unwrap();
        let attributes: serde_json::Value = row.try_get("", "attributes").unwrap();
        assert_eq!(attributes["region"], "EU");
        assert_eq!(
            row.try_get::<String>("", "email").unwrap(),
            "ada@example.com"
        );
    }

    #[tokio::test]
    async fn a_closed_file_hands_out_nothing_and_waits_for_what_it_lent() {
        let (_dir, file) = file();
        let lent = file.begin(Mode::Read).await.unwrap();
        let file = Arc::new(file);
        let closing = tokio::spawn({
            let file = Arc::clone(&file);
            async move { file.close().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !closing.is_finished(),
            "close waits for the lent connection"
        );
        assert!(file.begin(Mode::Read).await.is_err());
        drop(lent);
        closing.await.unwrap();
    }
}
