//! A transaction on one tenant's storage (or on the control plane), whichever the driver.

use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement};

use super::postgres::PgTx;
use super::sqlite::SqliteTx;

/// A transaction confined to one tenant (or to the control plane). Dropping it rolls it back.
pub enum Tx {
    /// In a PostgreSQL schema.
    Postgres(PgTx),
    /// In a SQLite file.
    Sqlite(SqliteTx),
}

impl Tx {
    /// The PostgreSQL transaction, for statements sea-orm cannot build.
    pub fn postgres(&self) -> Option<&PgTx> {
        match self {
            Tx::Postgres(tx) => Some(tx),
            Tx::Sqlite(_) => None,
        }
    }

    pub async fn commit(self) -> Result<(), DbErr> {
        match self {
            Tx::Postgres(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit(),
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Tx {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Tx::Postgres(_) => DbBackend::Postgres,
            Tx::Sqlite(_) => DbBackend::Sqlite,
        }
    }

    async fn execute_raw(&self, statement: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Tx::Postgres(tx) => tx.execute(&statement).await,
            Tx::Sqlite(tx) => tx.execute(&statement),
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Tx::Postgres(tx) => tx.execute_unprepared(sql).await,
            Tx::Sqlite(tx) => tx.execute_unprepared(sql),
        }
    }

    async fn query_one_raw(&self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Tx::Postgres(tx) => tx.query_one(&statement).await,
            Tx::Sqlite(tx) => Ok(tx.query(&statement, 1)?.into_iter().next()),
        }
    }

    async fn query_all_raw(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Tx::Postgres(tx) => tx.query_all(&statement).await,
            Tx::Sqlite(tx) => tx.query(&statement, usize::MAX),
        }
    }
}
