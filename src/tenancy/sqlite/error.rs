//! SQLite's errors as sea-orm's, so that the rest of Flowgate tells them apart as it does those
//! of the other drivers: an outage (busy, locked, I/O, full) is "unavailable", a unique or
//! foreign-key violation is recognised as one, and anything else is unexpected.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use sea_orm::sqlx::error::{DatabaseError, ErrorKind};
use sea_orm::{DbErr, RuntimeErr};

/// SQLite's message for a violated foreign key, whichever result code carries it.
const FOREIGN_KEY_FAILED: &str = "FOREIGN KEY constraint failed";

/// A failure SQLite reported, with its extended result code.
#[derive(Debug)]
pub(super) struct SqliteFailure {
    code: i32,
    message: String,
}

impl fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SQLite error {}: {}", self.code, self.message)
    }
}

impl StdError for SqliteFailure {}

impl DatabaseError for SqliteFailure {
    fn message(&self) -> &str {
        &self.message
    }

    /// The extended result code, as sqlx's SQLite driver gives it.
    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }

    fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.code {
            // SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY
            2067 | 1555 => ErrorKind::UniqueViolation,
            // SQLITE_CONSTRAINT_FOREIGNKEY; and SQLITE_CONSTRAINT_TRIGGER with SQLite's own
            // foreign-key text, which is how it reports an `ON DELETE RESTRICT` (the action runs
            // as a built-in trigger). Flowgate has no triggers of its own.
            787 => ErrorKind::ForeignKeyViolation,
            1811 if self.message == FOREIGN_KEY_FAILED => ErrorKind::ForeignKeyViolation,
            // SQLITE_CONSTRAINT_NOTNULL
            1299 => ErrorKind::NotNullViolation,
            // SQLITE_CONSTRAINT_CHECK
            275 => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// Where the failure happened, for sea-orm's error kinds.
#[derive(Debug, Clone, Copy)]
pub(super) enum Phase {
    /// Opening or beginning: the database could not be reached.
    Connect,
    Execute,
    Query,
}

/// `e` as sea-orm's error for a failure in `phase`.
pub(super) fn db_err(phase: Phase, e: rusqlite::Error) -> DbErr {
    let runtime = match e {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let failure = SqliteFailure {
                code: failure.extended_code,
                message: message.unwrap_or_else(|| failure.to_string()),
            };
            RuntimeErr::SqlxError(Arc::new(sea_orm::sqlx::Error::Database(Box::new(failure))))
        }
        other => RuntimeErr::Internal(other.to_string()),
    };
    match phase {
        Phase::Connect => DbErr::Conn(runtime),
        Phase::Execute => DbErr::Exec(runtime),
        Phase::Query => DbErr::Query(runtime),
    }
}
