//! Connections: the control plane, and per-tenant transactions on PostgreSQL or SQLite.

use std::num::NonZeroUsize;
use std::os::unix::fs::OpenOptionsExt as _;

use sea_orm::sqlx::postgres::PgSslMode;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lru::LruCache;
use migration::{ControlMigrator, MigratorTrait as _, TenantMigrator};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    AccessMode, ConnectOptions, ConnectionTrait as _, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, RuntimeErr, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait as _,
};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::Mutex;

use super::{Slug, TenancyError};
use crate::config::DatabaseSettings;

/// Schema of the control plane on PostgreSQL.
pub const CONTROL_SCHEMA: &str = "flowgate";
/// Default search path of the shared tenant pool: a schema that never exists, so a statement
/// that escaped [`Databases::begin`] finds no table instead of another tenant's.
const NO_TENANT_SCHEMA: &str = "flowgate_no_tenant";
/// Open SQLite tenant pools kept at once; older ones are closed when the bound is reached.
const SQLITE_OPEN_TENANTS: usize = 64;
/// Reading connections per SQLite tenant file (WAL: many readers, and one writer beside them).
const SQLITE_TENANT_CONNECTIONS: u32 = 8;
/// Connections of the shared PostgreSQL tenant pool.
const PG_TENANT_CONNECTIONS: u32 = 16;
/// Connections reserved for the audit writer on PostgreSQL, so that a burst of reads can never
/// starve the appends those reads are waiting for.
const PG_AUDIT_CONNECTIONS: u32 = 4;
/// How long a SQLite writer waits for the file's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Postgres,
    Sqlite,
}

/// What a tenant transaction may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read-only (enforced by PostgreSQL; a deferred transaction on SQLite).
    Read,
    /// Read-write. On SQLite all writes of a tenant go through its one writer connection and
    /// take the file's write lock at `BEGIN`, so writers queue instead of failing busy.
    Write,
    /// The audit writer's appends: a write on connections that reads cannot exhaust.
    Audit,
}

/// A transaction confined to one tenant.
pub type TenantTx = DatabaseTransaction;

/// The control plane and every tenant's storage.
pub struct Databases {
    control: DatabaseConnection,
    backend: Backend,
}

enum Backend {
    Postgres {
        url: PgUrl,
        tenants: DatabaseConnection,
        audit: DatabaseConnection,
    },
    Sqlite {
        dir: PathBuf,
        pools: Mutex<LruCache<Slug, SqlitePools>>,
    },
}

/// The pools of one SQLite tenant file: readers, and the single writer (SQLite allows one).
#[derive(Clone)]
struct SqlitePools {
    read: DatabaseConnection,
    write: DatabaseConnection,
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
                let tenants =
                    connect_postgres(url, NO_TENANT_SCHEMA, PG_TENANT_CONNECTIONS).await?;
                let audit = connect_postgres(url, NO_TENANT_SCHEMA, PG_AUDIT_CONNECTIONS).await?;
                Databases {
                    control,
                    backend: Backend::Postgres {
                        url: url.clone(),
                        tenants,
                        audit,
                    },
                }
            }
            DatabaseSettings::Sqlite { control_file } => {
                let dir = control_file
                    .parent()
                    .map(|p| p.join("tenants"))
                    .unwrap_or_else(|| PathBuf::from("tenants"));
                crate::files::create_private_dir(&dir)?;
                let control = connect_sqlite(control_file, true, 4).await?;
                let capacity = NonZeroUsize::new(SQLITE_OPEN_TENANTS).unwrap_or(NonZeroUsize::MIN);
                Databases {
                    control,
                    backend: Backend::Sqlite {
                        dir,
                        pools: Mutex::new(LruCache::new(capacity)),
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
        if let Backend::Postgres { tenants, audit, .. } = &self.backend {
            tenants.ping().await?;
            audit.ping().await?;
        }
        Ok(())
    }

    /// Creates the tenant's schema or file and migrates it. Fails with
    /// [`TenancyError::AlreadyExists`] when the storage is already there.
    pub async fn create_tenant_storage(&self, slug: &Slug) -> Result<(), TenancyError> {
        match &self.backend {
            Backend::Postgres { url, tenants, .. } => {
                let created = tenants
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
                let file = tenant_file(dir, slug);
                // Private from the start; SQLite gives the journal files the same mode.
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&file)
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(TenancyError::AlreadyExists(slug.to_string()));
                    }
                    Err(e) => {
                        return Err(anyhow::anyhow!("creating {}: {e}", file.display()).into());
                    }
                }
                let pools = self.sqlite_pools(slug).await?;
                Ok(TenantMigrator::up(&pools.write, None).await?)
            }
        }
    }

    /// Applies pending tenant migrations; returns how many were applied.
    pub async fn migrate_tenant(&self, slug: &Slug) -> Result<usize, TenancyError> {
        let conn = match &self.backend {
            Backend::Postgres { url, .. } => connect_postgres(url, &slug.schema(), 1).await?,
            Backend::Sqlite { .. } => self.sqlite_pools(slug).await?.write,
        };
        let pending = TenantMigrator::get_pending_migrations(&conn).await?.len();
        TenantMigrator::up(&conn, None).await?;
        if matches!(self.backend, Backend::Postgres { .. }) {
            conn.close().await?;
        }
        Ok(pending)
    }

    /// Drops the tenant's schema or deletes its file. Idempotent.
    pub async fn drop_tenant_storage(&self, slug: &Slug) -> Result<(), TenancyError> {
        match &self.backend {
            Backend::Postgres { tenants, .. } => {
                tenants
                    .execute_unprepared(&format!(
                        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                        slug.schema()
                    ))
                    .await?;
            }
            Backend::Sqlite { dir, pools } => {
                // Under the cache's lock, so that no reader can open a pool on the file between
                // its leaving the cache and its removal: such a pool would outlive the tenant
                // and serve a re-created one the deleted one's data.
                let mut cache = pools.lock().await;
                let open = cache.pop(slug);
                // Closing marks the pools closed at once (no new connection to this path from
                // here); the wait for borrowed connections happens outside the lock.
                let closing = open.as_ref().map(|open| {
                    futures_util::future::join(
                        open.read.get_sqlite_connection_pool().close(),
                        open.write.get_sqlite_connection_pool().close(),
                    )
                });
                let removed = remove_tenant_files(&tenant_file(dir, slug));
                drop(cache);
                if let Some(closing) = closing {
                    closing.await;
                }
                removed?;
            }
        }
        Ok(())
    }

    /// Begins a transaction confined to the tenant `slug`.
    pub async fn begin(
        &self,
        slug: &Slug,
        access: Access,
    ) -> Result<DatabaseTransaction, TenancyError> {
        match &self.backend {
            Backend::Postgres { tenants, audit, .. } => {
                let (pool, read_only) = match access {
                    Access::Read => (tenants, "on"),
                    Access::Write => (tenants, "off"),
                    Access::Audit => (audit, "off"),
                };
                // One exchange after BEGIN sets both the tenant's schema and the access mode
                // (what `SET TRANSACTION READ ONLY` would take a second exchange for), both
                // for this transaction only.
                let tx = pool.begin().await?;
                tx.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT set_config('search_path', $1, true), \
                            set_config('transaction_read_only', $2, true)",
                    [slug.schema().into(), read_only.into()],
                ))
                .await?;
                Ok(tx)
            }
            Backend::Sqlite { .. } => {
                let pools = self.sqlite_pools(slug).await?;
                let (pool, mode) = match access {
                    Access::Read => (&pools.read, SqliteTransactionMode::Deferred),
                    Access::Write | Access::Audit => {
                        (&pools.write, SqliteTransactionMode::Immediate)
                    }
                };
                Ok(pool
                    .begin_with_options(TransactionOptions {
                        sqlite_transaction_mode: Some(mode),
                        ..TransactionOptions::default()
                    })
                    .await?)
            }
        }
    }

    /// Begins a transaction on the control plane (the platform's own audit trail).
    pub async fn begin_control(&self, access: Access) -> Result<DatabaseTransaction, TenancyError> {
        Ok(match &self.backend {
            Backend::Postgres { .. } => {
                let mode = match access {
                    Access::Read => AccessMode::ReadOnly,
                    Access::Write | Access::Audit => AccessMode::ReadWrite,
                };
                self.control.begin_with_config(None, Some(mode)).await?
            }
            Backend::Sqlite { .. } => {
                let mode = match access {
                    Access::Read => SqliteTransactionMode::Deferred,
                    Access::Write | Access::Audit => SqliteTransactionMode::Immediate,
                };
                self.control
                    .begin_with_options(TransactionOptions {
                        sqlite_transaction_mode: Some(mode),
                        ..TransactionOptions::default()
                    })
                    .await?
            }
        })
    }

    /// The pools of a SQLite tenant file, opened on first use; the file must exist.
    async fn sqlite_pools(&self, slug: &Slug) -> Result<SqlitePools, TenancyError> {
        let Backend::Sqlite { dir, pools } = &self.backend else {
            return Err(anyhow::anyhow!("not a SQLite deployment").into());
        };
        let mut pools = pools.lock().await;
        if let Some(open) = pools.get(slug) {
            return Ok(open.clone());
        }
        let file = tenant_file(dir, slug);
        if !file.is_file() {
            return Err(TenancyError::NotFound(slug.to_string()));
        }
        let open = SqlitePools {
            read: connect_sqlite(&file, false, SQLITE_TENANT_CONNECTIONS).await?,
            write: connect_sqlite(&file, false, 1).await?,
        };
        pools.put(slug.clone(), open.clone());
        Ok(open)
    }

    /// The PostgreSQL pool reserved for the audit writer's statements, which name their tenant's
    /// schema themselves; `None` on SQLite.
    pub fn audit_pool(&self) -> Option<&sea_orm::sqlx::PgPool> {
        match &self.backend {
            Backend::Postgres { audit, .. } => Some(audit.get_postgres_connection_pool()),
            Backend::Sqlite { .. } => None,
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

async fn connect_postgres(
    url: &PgUrl,
    schema: &str,
    max: u32,
) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(url.url.expose_secret());
    if let Some(ca) = url.ca_file.clone() {
        // A CA is asked for to verify the server: verify the host name too, unless the URL
        // chose its own `sslmode`.
        let chosen = url.url.expose_secret().contains("sslmode=");
        opts.map_sqlx_postgres_opts(move |o| {
            let o = o.ssl_root_cert(&ca);
            if chosen {
                o
            } else {
                o.ssl_mode(PgSslMode::VerifyFull)
            }
        });
    }
    opts.max_connections(max)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .set_schema_search_path(schema)
        .sqlx_logging(false);
    Database::connect(opts).await
}

/// A pool on one SQLite file in WAL mode. Without `mmap_size`: the audit trail grows the file
/// hundreds of times a second, and every growth remaps each connection's view at the cost of
/// TLB shootdowns on every core (measured with `benches/load.sh`: 8 % of throughput).
async fn connect_sqlite(file: &Path, create: bool, max: u32) -> Result<DatabaseConnection, DbErr> {
    if create {
        // Created private before SQLite opens it; SQLite gives the journal files its mode.
        crate::files::touch_private(file).map_err(|e| DbErr::Custom(format!("{e:#}")))?;
    }
    // The URL only selects the driver; the file is set on the parsed options so that paths with
    // URL-special characters need no escaping.
    let mut opts = ConnectOptions::new("sqlite://flowgate.db");
    let file = file.to_owned();
    opts.max_connections(max)
        .min_connections(0)
        .acquire_timeout(SQLITE_BUSY_TIMEOUT)
        .idle_timeout(Duration::from_secs(60))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |o| {
            o.filename(&file)
                .create_if_missing(create)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
        });
    Database::connect(opts).await
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
        // deadlock, worth a retry; 25006 a read-only server (a failover in progress).
        code.starts_with("08")
            || code.starts_with("53")
            || matches!(
                code,
                "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01" | "25006"
            )
    } else {
        // A SQLite result code; extended codes keep the primary one in the low byte: BUSY,
        // LOCKED, IOERR, FULL, CANTOPEN.
        code.parse::<u32>()
            .is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13 | 14))
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
mod tests {
    use super::is_unavailable_code;

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
