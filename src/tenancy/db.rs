//! Connections: the control plane, and per-tenant transactions on PostgreSQL or SQLite.

use std::num::NonZeroUsize;
use std::str::FromStr as _;
use std::sync::Arc;

use sea_orm::sqlx::postgres::{PgConnectOptions, PgSslMode};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lru::LruCache;
use migration::{ControlMigrator, MigratorTrait as _, TenantMigrator};
use sea_orm::{
    ConnAcquireErr, ConnectOptions, ConnectionTrait as _, Database, DatabaseConnection, DbErr,
    RuntimeErr,
};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Mutex;

use super::postgres::{Mode as PgMode, PgConnections};
use super::sqlite::{self, Mode, SqliteFile};
use super::tx::Tx;
use super::{Slug, TenancyError};
use crate::config::DatabaseSettings;
use crate::telemetry;

/// Schema of the control plane on PostgreSQL.
pub const CONTROL_SCHEMA: &str = "flowgate";
/// Default search path of the shared tenant pool: a schema that never exists, so a statement
/// that escaped [`Databases::begin`] finds no table instead of another tenant's.
const NO_TENANT_SCHEMA: &str = "flowgate_no_tenant";
/// Open SQLite tenant files kept at once; older ones are closed when the bound is reached.
const SQLITE_OPEN_TENANTS: usize = 64;
/// Reading connections to the tenants' PostgreSQL schemas.
const PG_READ_CONNECTIONS: u32 = 12;
/// Connections for the tenants' PostgreSQL write transactions.
const PG_WRITE_CONNECTIONS: u32 = 8;
/// Connections reserved for the audit writer on PostgreSQL, so that a burst of reads can never
/// starve the appends those reads are waiting for: for its appends of one statement (outside
/// any transaction), and for its transactions (a batch of several statements, a lost race).
const PG_APPEND_CONNECTIONS: u32 = 3;
const PG_AUDIT_CONNECTIONS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Postgres,
    Sqlite,
}

impl DbKind {
    /// The database's name in spans (OpenTelemetry's `db.system.name`).
    pub fn system_name(self) -> &'static str {
        match self {
            DbKind::Postgres => "postgresql",
            DbKind::Sqlite => "sqlite",
        }
    }
}

/// What a tenant transaction may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read-only (PostgreSQL: on a read-only session, outside a transaction; SQLite: a deferred
    /// transaction).
    Read,
    /// Read-write. On SQLite all writes of a tenant go through its one writer connection and
    /// take the file's write lock at `BEGIN`, so writers queue instead of failing busy.
    Write,
    /// The audit writer's transactions: a write on connections that reads cannot exhaust.
    Audit,
    /// One append of the audit writer, on connections that reads cannot exhaust: on
    /// PostgreSQL a statement that names its schema, outside any transaction (it commits as it
    /// returns); on SQLite a write.
    AuditAppend,
}

impl Access {
    /// The access's name in spans.
    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Audit => "audit",
            Access::AuditAppend => "audit_append",
        }
    }
}

/// The control plane and every tenant's storage.
pub struct Databases {
    control: DatabaseConnection,
    backend: Backend,
}

enum Backend {
    Postgres {
        url: PgUrl,
        reads: Arc<PgConnections>,
        writes: Arc<PgConnections>,
        audit: Arc<PgConnections>,
        appends: Arc<PgConnections>,
    },
    Sqlite {
        dir: PathBuf,
        /// The control plane's file; `control` runs its statements outside transactions.
        control: Arc<SqliteFile>,
        files: Mutex<SqliteFiles>,
    },
}

/// The SQLite tenant files open in this process: the most recently used, and those pushed out
/// of them that are still closing. A slug's file is not opened again while the writing
/// connection of one pushed out is still in use: two writing connections to one file would
/// wait on each other's lock, and SQLite waits for a lock by blocking its thread, which the
/// transaction holding it may need. (Readers may go on beside a new file: WAL lets them.)
struct SqliteFiles {
    open: LruCache<Slug, Arc<SqliteFile>>,
    closing: std::collections::HashMap<Slug, Arc<SqliteFile>>,
}

impl Databases {
    /// Connects to the configured database and migrates the control plane.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, TenancyError> {
        let dbs = match settings {
            DatabaseSettings::Postgres { url, ca_file } => {
                let url = PgUrl {
                    url: url.clone(),
                    ca_file: ca_file.clone(),
                };
                let url = &url;
                let control = connect_postgres(url, CONTROL_SCHEMA, 4).await?;
                control
                    .execute_unprepared(&format!(
                        "CREATE SCHEMA IF NOT EXISTS \"{CONTROL_SCHEMA}\""
                    ))
                    .await?;
                let options = url.options(NO_TENANT_SCHEMA)?;
                let reads = PgConnections::new(options.clone(), PgMode::Read, PG_READ_CONNECTIONS);
                let writes =
                    PgConnections::new(options.clone(), PgMode::Write, PG_WRITE_CONNECTIONS);
                let audit =
                    PgConnections::new(options.clone(), PgMode::Write, PG_AUDIT_CONNECTIONS);
                let appends =
                    PgConnections::new(options, PgMode::Autocommit, PG_APPEND_CONNECTIONS);
                Databases {
                    control,
                    backend: Backend::Postgres {
                        url: url.clone(),
                        reads,
                        writes,
                        audit,
                        appends,
                    },
                }
            }
            DatabaseSettings::Sqlite { control_file } => {
                let dir = control_file
                    .parent()
                    .map(|p| p.join("tenants"))
                    .unwrap_or_else(|| PathBuf::from("tenants"));
                crate::files::create_private_dir(&dir)?;
                sqlite::create(control_file)?;
                let file = Arc::new(SqliteFile::open(control_file));
                let capacity = NonZeroUsize::new(SQLITE_OPEN_TENANTS).unwrap_or(NonZeroUsize::MIN);
                Databases {
                    control: sqlite::connection(Arc::clone(&file))?,
                    backend: Backend::Sqlite {
                        dir,
                        control: file,
                        files: Mutex::new(SqliteFiles {
                            open: LruCache::new(capacity),
                            closing: Default::default(),
                        }),
                    },
                }
            }
        };
        ControlMigrator::up(&dbs.control, None).await?;
        Ok(dbs)
    }

    pub fn kind(&self) -> DbKind {
        match self.backend {
            Backend::Postgres { .. } => DbKind::Postgres,
            Backend::Sqlite { .. } => DbKind::Sqlite,
        }
    }

    /// The control-plane connection (tenant registry, platform settings).
    pub fn control(&self) -> &DatabaseConnection {
        &self.control
    }

    /// Succeeds when the database answers.
    pub async fn ping(&self) -> Result<(), TenancyError> {
        self.control.ping().await?;
        if let Backend::Postgres {
            reads,
            writes,
            audit,
            appends,
            ..
        } = &self.backend
        {
            for pool in [reads, writes, audit, appends] {
                let work = PgConnections::begin(pool, NO_TENANT_SCHEMA).await?;
                work.execute_unprepared("SELECT 1").await?;
                work.commit().await?;
            }
        }
        Ok(())
    }

    /// Creates the tenant's schema or file and migrates it. Fails with
    /// [`TenancyError::AlreadyExists`] when the storage is already there.
    pub async fn create_tenant_storage(&self, slug: &Slug) -> Result<(), TenancyError> {
        match &self.backend {
            Backend::Postgres { url, .. } => {
                let created = self
                    .control
                    .execute_unprepared(&format!("CREATE SCHEMA \"{}\"", slug.schema()))
                    .await;
                match created {
                    Ok(_) => {}
                    Err(e) if is_duplicate_schema(&e) => {
                        return Err(TenancyError::AlreadyExists(slug.to_string()));
                    }
                    Err(e) => return Err(e.into()),
                }
                let conn = connect_postgres(url, &slug.schema(), 1).await?;
                let migrated = TenantMigrator::up(&conn, None).await;
                conn.close().await?;
                Ok(migrated?)
            }
            Backend::Sqlite { dir, .. } => {
                if !sqlite::create(&tenant_file(dir, slug))? {
                    return Err(TenancyError::AlreadyExists(slug.to_string()));
                }
                let conn = sqlite::connection(self.sqlite_file(slug).await?)?;
                Ok(TenantMigrator::up(&conn, None).await?)
            }
        }
    }

    /// Applies pending tenant migrations; returns how many were applied.
    pub async fn migrate_tenant(&self, slug: &Slug) -> Result<usize, TenancyError> {
        let conn = match &self.backend {
            Backend::Postgres { url, .. } => connect_postgres(url, &slug.schema(), 1).await?,
            Backend::Sqlite { .. } => sqlite::connection(self.sqlite_file(slug).await?)?,
        };
        let migrated = async {
            let pending = TenantMigrator::get_pending_migrations(&conn).await?.len();
            TenantMigrator::up(&conn, None).await?;
            Ok::<_, DbErr>(pending)
        }
        .await;
        if matches!(self.backend, Backend::Postgres { .. }) {
            conn.close().await?;
        }
        Ok(migrated?)
    }

    /// Drops the tenant's schema or deletes its file. Idempotent.
    pub async fn drop_tenant_storage(&self, slug: &Slug) -> Result<(), TenancyError> {
        match &self.backend {
            Backend::Postgres { .. } => {
                self.control
                    .execute_unprepared(&format!(
                        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                        slug.schema()
                    ))
                    .await?;
            }
            Backend::Sqlite { dir, files, .. } => {
                // Under the cache's lock, so that no reader can open the file between its
                // leaving the cache and its removal: such a pool would outlive the tenant and
                // serve a re-created one the deleted one's data.
                let mut cache = files.lock().await;
                let open = cache.open.pop(slug);
                let pushed_out = cache.closing.remove(slug);
                // Closing refuses new transactions at once; the wait for those under way
                // happens outside the lock.
                let closing = open
                    .iter()
                    .chain(pushed_out.iter())
                    .map(|file| file.close());
                let closing = futures_util::future::join_all(closing);
                let removed = remove_tenant_files(&tenant_file(dir, slug));
                drop(cache);
                closing.await;
                removed?;
            }
        }
        Ok(())
    }

    /// Begins a transaction confined to the tenant `slug` (a child span `db.begin` of the
    /// request: the wait for a connection and the `BEGIN`).
    pub async fn begin(&self, slug: &Slug, access: Access) -> Result<Tx, TenancyError> {
        let attributes = || {
            vec![
                opentelemetry::KeyValue::new("db.system.name", self.kind().system_name()),
                opentelemetry::KeyValue::new("flowgate.db.access", access.name()),
            ]
        };
        telemetry::trace::traced("db.begin", attributes, self.begin_untraced(slug, access)).await
    }

    async fn begin_untraced(&self, slug: &Slug, access: Access) -> Result<Tx, TenancyError> {
        match &self.backend {
            Backend::Postgres {
                reads,
                writes,
                audit,
                appends,
                ..
            } => {
                let pool = pg_pool([reads, writes, audit, appends], access);
                Ok(Tx::Postgres(
                    PgConnections::begin(pool, &slug.schema()).await?,
                ))
            }
            Backend::Sqlite { .. } => {
                let file = self.sqlite_file(slug).await?;
                Ok(Tx::Sqlite(file.begin(mode_of(access)).await?))
            }
        }
    }

    /// Begins a transaction on the control plane (the platform's own audit trail).
    pub async fn begin_control(&self, access: Access) -> Result<Tx, TenancyError> {
        Ok(match &self.backend {
            Backend::Postgres {
                reads,
                writes,
                audit,
                appends,
                ..
            } => {
                let pool = pg_pool([reads, writes, audit, appends], access);
                Tx::Postgres(PgConnections::begin(pool, CONTROL_SCHEMA).await?)
            }
            Backend::Sqlite { control, .. } => Tx::Sqlite(control.begin(mode_of(access)).await?),
        })
    }

    /// A SQLite tenant file, opened on first use; it must exist. A file pushed out of the
    /// bounded cache is closed once its transactions end.
    async fn sqlite_file(&self, slug: &Slug) -> Result<Arc<SqliteFile>, TenancyError> {
        let Backend::Sqlite { dir, files, .. } = &self.backend else {
            return Err(anyhow::anyhow!("not a SQLite deployment").into());
        };
        let mut files = loop {
            let mut files = files.lock().await;
            match files.closing.get(slug).cloned() {
                // Pushed out while writing: that write ends first (waited for outside the lock,
                // as long as a connection is waited for).
                Some(closing) if !closing.is_writer_closed() => {
                    drop(files);
                    tokio::time::timeout(sqlite::ACQUIRE_TIMEOUT, closing.writer_closed())
                        .await
                        .map_err(|_| {
                            TenancyError::from(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout))
                        })?;
                }
                Some(_) => {
                    files.closing.remove(slug);
                    break files;
                }
                None => break files,
            }
        };
        if let Some(open) = files.open.get(slug) {
            return Ok(Arc::clone(open));
        }
        let path = tenant_file(dir, slug);
        if !path.is_file() {
            return Err(TenancyError::NotFound(slug.to_string()));
        }
        let open = Arc::new(SqliteFile::open(&path));
        if let Some((evicted_slug, evicted)) = files.open.push(slug.clone(), Arc::clone(&open)) {
            files.closing.retain(|_, file| !file.is_writer_closed());
            files.closing.insert(evicted_slug, Arc::clone(&evicted));
            tokio::spawn(async move { evicted.close().await });
        }
        Ok(open)
    }

    /// How saturated the tenant connection pools are: (pool, connections in use, size) of each
    /// (PostgreSQL; SQLite has no pools).
    pub fn pool_usage(&self) -> Vec<(&'static str, u32, u32)> {
        match &self.backend {
            Backend::Postgres {
                reads,
                writes,
                audit,
                appends,
                ..
            } => [
                ("reads", reads),
                ("writes", writes),
                ("audit", audit),
                ("audit_appends", appends),
            ]
            .into_iter()
            .map(|(name, pool)| {
                let (used, size) = pool.usage();
                (name, used, size)
            })
            .collect(),
            Backend::Sqlite { .. } => Vec::new(),
        }
    }

    /// The PostgreSQL pool of the control plane, for LISTEN/NOTIFY.
    pub fn postgres_pool(&self) -> Option<&sea_orm::sqlx::PgPool> {
        match &self.backend {
            Backend::Postgres { .. } => Some(self.control.get_postgres_connection_pool()),
            Backend::Sqlite { .. } => None,
        }
    }
}

fn tenant_file(dir: &Path, slug: &Slug) -> PathBuf {
    dir.join(format!("{slug}.db"))
}

/// Removes a SQLite file and its journal files; those already gone are not an error.
fn remove_tenant_files(file: &Path) -> Result<(), TenancyError> {
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", file.display()));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::anyhow!("removing {}: {e}", path.display()).into()),
        }
    }
    Ok(())
}

/// How to reach PostgreSQL: the URL and, when set, the CA its certificate must chain to.
#[derive(Clone)]
struct PgUrl {
    url: SecretString,
    ca_file: Option<PathBuf>,
}

impl PgUrl {
    /// The options of a connection whose search path is `schema`.
    fn options(&self, schema: &str) -> Result<PgConnectOptions, DbErr> {
        let url = self.url.expose_secret();
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))))?
            .options([("search_path", schema)]);
        Ok(match &self.ca_file {
            // A CA is asked for to verify the server: verify the host name too, unless the URL
            // chose its own `sslmode`.
            Some(ca) if url.contains("sslmode=") => options.ssl_root_cert(ca),
            Some(ca) => options.ssl_root_cert(ca).ssl_mode(PgSslMode::VerifyFull),
            None => options,
        })
    }
}

async fn connect_postgres(
    url: &PgUrl,
    schema: &str,
    max: u32,
) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.url.expose_secret());
    let ca = url.ca_file.clone();
    let chosen = url.url.expose_secret().contains("sslmode=");
    opts.map_sqlx_postgres_opts(move |o| {
        // As every tenant pool's (see `postgres::PgConnections::new`): each statement sees what
        // committed before it, whatever the server's or the database's default.
        let o = o.options([("default_transaction_isolation", "read committed")]);
        match &ca {
            // A CA is asked for to verify the server: verify the host name too, unless the URL
            // chose its own `sslmode`.
            Some(ca) if chosen => o.ssl_root_cert(ca),
            Some(ca) => o.ssl_root_cert(ca).ssl_mode(PgSslMode::VerifyFull),
            None => o,
        }
    });
    opts.max_connections(max)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .set_schema_search_path(schema)
        .sqlx_logging(false);
    Database::connect(opts).await
}

/// The PostgreSQL pool (of reads, writes, audit transactions, audit appends) for `access`: the
/// audit writer has connections of its own, so that a burst of reads or writes cannot starve
/// the appends they wait for.
fn pg_pool(
    [reads, writes, audit, appends]: [&Arc<PgConnections>; 4],
    access: Access,
) -> &Arc<PgConnections> {
    match access {
        Access::Read => reads,
        Access::Write => writes,
        Access::Audit => audit,
        Access::AuditAppend => appends,
    }
}

/// The kind of SQLite transaction an access needs: all writes of a file go through its one
/// writing connection.
fn mode_of(access: Access) -> Mode {
    match access {
        Access::Read => Mode::Read,
        Access::Write | Access::Audit | Access::AuditAppend => Mode::Write,
    }
}

/// Whether `e` means the database cannot serve the statement now (as opposed to a bad
/// statement): it could not be reached, it is shutting down or out of connections or space, or
/// SQLite's file stayed locked past the busy timeout. Callers answer 503 with `Retry-After`.
pub(super) fn is_connection_error(e: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                Sqlx::Io(_)
                | Sqlx::Tls(_)
                | Sqlx::PoolTimedOut
                | Sqlx::PoolClosed
                | Sqlx::WorkerCrashed => true,
                Sqlx::Database(d) => d.code().is_some_and(|code| is_unavailable_code(&code)),
                _ => false,
            }
        }
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs and SQLite result codes that mean "not now" rather than "never".
fn is_unavailable_code(code: &str) -> bool {
    if code.len() == 5 {
        // A PostgreSQL SQLSTATE: 08 connection exception; 53 insufficient resources (too many
        // connections, disk full, out of memory); 57P01-57P03 shutting down or starting up;
        // 57014 cancelled (a statement timeout); 40001 and 40P01 a serialization failure or
        // deadlock, worth a retry; 25006 a read-only server (a failover in progress); 25P03 and
        // 25P04 a session ended by the idle-in-transaction or transaction timeout.
        code.starts_with("08")
            || code.starts_with("53")
            || matches!(
                code,
                "57P01"
                    | "57P02"
                    | "57P03"
                    | "57014"
                    | "40001"
                    | "40P01"
                    | "25006"
                    | "25P03"
                    | "25P04"
            )
    } else {
        // A SQLite result code; extended codes keep the primary one in the low byte: BUSY,
        // LOCKED, IOERR, FULL, CANTOPEN.
        code.parse::<u32>()
            .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13 | 14))
    }
}

/// Whether `e` is a unique-constraint violation (a duplicate name or email).
pub fn is_unique_violation(e: &DbErr) -> bool {
    database_error(e).is_some_and(|d| d.is_unique_violation())
}

/// Whether `e` is a foreign-key violation (a parent that vanished, or a child that appeared).
pub fn is_foreign_key_violation(e: &DbErr) -> bool {
    database_error(e).is_some_and(|d| d.is_foreign_key_violation())
}

/// The database's own error inside `e`, whichever the driver (sea-orm's `sql_err` knows only
/// sqlx's drivers).
fn database_error(e: &DbErr) -> Option<&dyn sea_orm::sqlx::error::DatabaseError> {
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                sea_orm::sqlx::Error::Database(d) => Some(d.as_ref()),
                _ => None,
            }
        }
        _ => None,
    }
}

fn is_duplicate_schema(e: &DbErr) -> bool {
    // 42P06: duplicate_schema.
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(e)) => e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| code == "42P06"),
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PostgreSQL database made for one test, `setup` run in it (`{db}` names it); dropped
    /// with the value.
    pub(crate) struct Scratch(pub(crate) String);

    impl Scratch {
        pub(crate) fn new(setup: &str) -> Scratch {
            let scratch = Scratch(format!("fg_scratch_{}", uuid::Uuid::new_v4().simple()));
            let made = scratch.psql(&format!("CREATE DATABASE {}", scratch.0))
                && scratch.psql(&setup.replace("{db}", &scratch.0));
            assert!(
                made,
                "psql could not make the scratch database {}",
                scratch.0
            );
            scratch
        }

        fn psql(&self, sql: &str) -> bool {
            std::process::Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-qc",
                    sql,
                ])
                .status()
                .is_ok_and(|status| status.success())
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            self.psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
        }
    }

    /// The control plane's pool, like the tenants' (`postgres` tests), is `READ COMMITTED` in
    /// a database whose default is `REPEATABLE READ`.
    #[tokio::test]
    async fn the_control_pool_is_read_committed_whatever_the_database_default() {
        let scratch = Scratch::new(
            "ALTER DATABASE {db} SET default_transaction_isolation = 'repeatable read'",
        );
        let url = PgUrl {
            url: SecretString::from(format!("postgres://postgres@127.0.0.1:5432/{}", scratch.0)),
            ca_file: None,
        };
        let control = connect_postgres(&url, CONTROL_SCHEMA, 1).await.unwrap();
        let level = control
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT current_setting('transaction_isolation') AS level",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            level.try_get::<String>("", "level").unwrap(),
            "read committed"
        );
        control.close().await.unwrap();
    }

    /// Databases on SQLite files in a new directory of their own (removed by the caller).
    pub(crate) async fn sqlite_databases(name: &str) -> (PathBuf, Databases) {
        let dir = std::env::temp_dir().join(format!("fg-{name}-{}", uuid::Uuid::new_v4()));
        crate::files::create_private_dir(&dir).unwrap();
        let settings = DatabaseSettings::Sqlite {
            control_file: dir.join("control.db"),
        };
        let dbs = Databases::connect(&settings).await.unwrap();
        (dir, dbs)
    }

    /// On one thread, as an actix worker is: a transaction on a file pushed out of the cache
    /// ends while another waits to begin on the same file, which before waited for SQLite's
    /// lock by blocking the thread that transaction needed.
    #[tokio::test(flavor = "current_thread")]
    #[expect(
        clippy::disallowed_methods,
        reason = "the storage layer's own test of its transactions"
    )]
    async fn a_file_pushed_out_while_in_use_is_not_opened_beside_itself() {
        let (dir, dbs) = sqlite_databases("files").await;
        let slug = |i: usize| Slug::parse(&format!("t{i}")).unwrap();
        for i in 0..=SQLITE_OPEN_TENANTS {
            dbs.create_tenant_storage(&slug(i)).await.unwrap();
        }
        let held = dbs.begin(&slug(0), Access::Write).await.unwrap();
        for i in 1..=SQLITE_OPEN_TENANTS {
            let tx = dbs.begin(&slug(i), Access::Read).await.unwrap();
            tx.commit().await.unwrap();
        }
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            held.commit().await
        });
        let again = dbs.begin(&slug(0), Access::Write).await;
        assert!(again.is_ok(), "{:?}", again.err());
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Models decoded straight from SQLite's rows are those sea-orm decodes from its own rows of
    /// the same select: UUIDs, timestamps, JSON, integers, and NULLs.
    #[tokio::test]
    #[expect(
        clippy::disallowed_methods,
        reason = "the storage layer's own test of its reads"
    )]
    async fn models_read_straight_from_rows_are_sea_orms() {
        use chrono::Utc;
        use entity::tenant::{folder, secret, user};
        use sea_orm::{ActiveModelTrait as _, EntityTrait as _, QuerySelect as _, Set};

        let (dir, dbs) = sqlite_databases("models").await;
        let slug = Slug::parse("models").unwrap();
        dbs.create_tenant_storage(&slug).await.unwrap();
        let tx = dbs.begin(&slug, Access::Write).await.unwrap();
        let folder = folder::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            name: Set("f".to_owned()),
            parent_id: Set(None),
            created_at: Set(Utc::now()),
            updated_at: Set(Utc::now()),
        }
        .insert(&tx)
        .await
        .unwrap();
        for (i, folder) in [None, Some(folder.id)].into_iter().enumerate() {
            let now = Utc::now();
            user::ActiveModel {
                id: Set(uuid::Uuid::now_v7()),
                email: Set(format!("u{i}@example.com")),
                display_name: Set(format!("Ü {i} \"quoted\"")),
                attributes: Set(serde_json::json!({"region": "eu", "level": i.to_string()})),
                status: Set("active".to_owned()),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&tx)
            .await
            .unwrap();
            secret::ActiveModel {
                id: Set(uuid::Uuid::now_v7()),
                name: Set(format!("s{i}")),
                folder_id: Set(folder),
                description: Set(folder.map(|_| "in a folder".to_owned())),
                labels: Set(serde_json::json!({})),
                current_version: Set(i32::try_from(i).unwrap() + 1),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();

        let read = dbs.begin(&slug, Access::Read).await.unwrap();
        let users = read.all(user::Entity::find()).await.unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users, user::Entity::find().all(&read).await.unwrap());
        let folders = read.all(folder::Entity::find()).await.unwrap();
        assert_eq!(folders, folder::Entity::find().all(&read).await.unwrap());
        let secrets = read.all(secret::Entity::find()).await.unwrap();
        assert_eq!(secrets.len(), 2);
        assert!(
            secrets
                .iter()
                .any(|s| s.folder_id.is_none() && s.description.is_none())
        );
        assert_eq!(secrets, secret::Entity::find().all(&read).await.unwrap());
        // Not every column: not a model.
        let partial = user::Entity::find().select_only().column(user::Column::Id);
        assert!(read.all(partial).await.is_err());
        read.commit().await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outages_are_told_from_bad_statements() {
        for code in [
            "08006", "53300", "53100", "57P01", "57P03", "5", "517", "6", "13",
        ] {
            assert!(is_unavailable_code(code), "{code}");
        }
        for code in ["22021", "23505", "42P01", "42501", "1", "19", "2067"] {
            assert!(!is_unavailable_code(code), "{code}");
        }
    }
}
