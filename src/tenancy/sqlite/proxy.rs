//! A sea-orm connection on a SQLite file for statements outside any transaction: the control
//! plane's registry queries and the migrations (which run outside transactions on SQLite).
//!
//! Invariant: it holds no connection between statements, so it has no transaction to offer;
//! transactions are opened through [`super::SqliteFile::begin`] (the lints forbid sea-orm's
//! own `begin` outside the storage layer).

use std::sync::Arc;

use sea_orm::{
    DatabaseConnection, DbBackend, DbErr, ProxyDatabaseConnector, ProxyDatabaseTrait,
    ProxyExecResult, ProxyRow, Statement,
};

use super::{Mode, SqliteFile, execute, query};

/// Each statement on a pooled connection of the file: reads on a reading one, the rest (and
/// queries that write) on the file's writing one.
struct Autocommit(Arc<SqliteFile>);

impl std::fmt::Debug for Autocommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Autocommit")
    }
}

#[async_trait::async_trait]
impl ProxyDatabaseTrait for Autocommit {
    async fn query(&self, statement: Statement) -> Result<Vec<ProxyRow>, DbErr> {
        self.0.autocommit_query(&statement).await
    }

    async fn execute(&self, statement: Statement) -> Result<ProxyExecResult, DbErr> {
        self.0
            .autocommit(Mode::Write, |conn| execute(conn, &statement))
            .await
    }

    async fn ping(&self) -> Result<(), DbErr> {
        let select = Statement::from_string(DbBackend::Sqlite, "SELECT 1");
        self.0
            .autocommit(Mode::Read, |conn| query(conn, &select, 1).map(drop))
            .await
    }
}

/// A sea-orm connection whose statements each run by themselves on `file`.
pub fn connection(file: Arc<SqliteFile>) -> Result<DatabaseConnection, DbErr> {
    ProxyDatabaseConnector::connect(DbBackend::Sqlite, Arc::new(Box::new(Autocommit(file))))
}

/// A sea-orm connection to a Flowgate SQLite file from outside a running server (operators'
/// tools, tests); the file must exist.
pub fn open(path: &std::path::Path) -> Result<DatabaseConnection, DbErr> {
    connection(Arc::new(SqliteFile::open(path)))
}
