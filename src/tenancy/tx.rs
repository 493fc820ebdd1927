//! A transaction on one tenant's storage (or on the control plane), whichever the driver.

use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, EntityTrait, ExecResult, QueryResult, QueryTrait as _,
    Select, Statement, TryIntoModel,
};

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

    /// The models `select` finds, whole: a select of every column of `E` (`E::find()` with its
    /// filters, order and limit; a select of other columns is an error). On SQLite each row is
    /// decoded straight into its model, without the map of named values that sea-orm's rows
    /// are made of, where a page of 50 users spent a fifth of its time (`perf`, README).
    pub async fn all<E>(&self, select: Select<E>) -> Result<Vec<E::Model>, DbErr>
    where
        E: EntityTrait,
        E::ActiveModel: TryIntoModel<E::Model>,
    {
        match self {
            Tx::Postgres(_) => select.all(self).await,
            Tx::Sqlite(tx) => tx.models::<E>(&select.build(DbBackend::Sqlite)),
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
