//! The store's error type, and the one place database errors are classified.
//!
//! Messages name tables, columns, constraints and versions, never stored
//! values: SQLite's constraint messages carry only `table.column` or the
//! constraint's name, and nothing here formats a bound parameter.

use std::fmt;
use std::path::PathBuf;

use sqlx::error::ErrorKind;

use super::model::OutgoingState;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created (missing directory,
    /// permissions, not a database, a filesystem without WAL support).
    #[error("cannot open store {path}: {reason}")]
    Open { path: PathBuf, reason: String },

    /// The database was migrated by a newer mdgate.
    #[error(
        "store schema version {found} is newer than this mdgate supports ({supported}): \
         upgrade mdgate, or restore the backup taken before the upgrade"
    )]
    SchemaTooNew { found: i64, supported: i64 },

    /// A migration already applied to the database differs from the one
    /// built into this binary.
    #[error(
        "store migration {version} ({description}) differs from the one applied to this \
         database (checksum mismatch): released migrations must never be edited; \
         restore the original migration file or the database backup"
    )]
    MigrationModified { version: i64, description: String },

    /// Applying migrations failed, or the database's migration history is
    /// inconsistent with this binary.
    #[error("store migration failed: {reason}")]
    Migration { reason: String },

    /// The database stayed locked by another writer past the busy timeout,
    /// or no pooled connection became free in time. Retrying may succeed.
    #[error("store is busy (database locked); retry later")]
    Busy,

    /// The write contradicts stored data or the schema's constraints.
    #[error("store conflict ({kind}): {detail}")]
    Conflict { kind: ConflictKind, detail: String },

    /// The row the operation needs does not exist.
    #[error("{what} not found")]
    NotFound { what: &'static str },

    /// A stored value could not be decoded (e.g. an unknown enum spelling):
    /// the file was edited, or written by an incompatible version.
    #[error("stored data is corrupt: {detail}")]
    Corrupt { detail: String },

    /// Any other database failure (I/O, disk full, driver errors).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

/// What kind of conflict a [`StoreError::Conflict`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// A unique key is taken.
    Unique,
    /// A referenced row is missing, or a row is still referenced.
    ForeignKey,
    /// A value breaks a CHECK (bad enum spelling, range, length).
    Check,
    /// A required value is missing.
    NotNull,
    /// An idempotency key was reused with different content.
    IdempotencyKey,
    /// The row is not in the state the operation requires.
    State,
    /// An outgoing request cannot move between these states.
    Transition {
        from: OutgoingState,
        to: OutgoingState,
    },
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConflictKind::Unique => "unique",
            ConflictKind::ForeignKey => "foreign key",
            ConflictKind::Check => "check",
            ConflictKind::NotNull => "not null",
            ConflictKind::IdempotencyKey => "idempotency key",
            ConflictKind::State => "state",
            ConflictKind::Transition { from, to } => {
                return write!(f, "transition {from} -> {to}");
            }
        })
    }
}

// SQLite primary result codes (the low byte of the extended code).
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_CORRUPT: i64 = 11;
const SQLITE_NOTADB: i64 = 26;

impl StoreError {
    /// A conflict of `kind` with a fixed explanation.
    pub(crate) fn conflict(kind: ConflictKind, detail: impl Into<String>) -> Self {
        StoreError::Conflict {
            kind,
            detail: detail.into(),
        }
    }

    /// A stored value that does not decode.
    pub(crate) fn corrupt(detail: impl fmt::Display) -> Self {
        StoreError::Corrupt {
            detail: detail.to_string(),
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Busy)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) => {
                let kind = match db.kind() {
                    ErrorKind::UniqueViolation => Some(ConflictKind::Unique),
                    ErrorKind::ForeignKeyViolation => Some(ConflictKind::ForeignKey),
                    ErrorKind::CheckViolation => Some(ConflictKind::Check),
                    ErrorKind::NotNullViolation => Some(ConflictKind::NotNull),
                    _ => None,
                };
                if let Some(kind) = kind {
                    return StoreError::Conflict {
                        kind,
                        detail: db.message().to_owned(),
                    };
                }
                // SQLite reports extended codes; the primary code is the
                // low byte (https://sqlite.org/rescode.html).
                let primary = db
                    .code()
                    .and_then(|c| c.parse::<i64>().ok())
                    .map(|c| c & 0xff);
                match primary {
                    Some(SQLITE_BUSY | SQLITE_LOCKED) => StoreError::Busy,
                    Some(SQLITE_CORRUPT | SQLITE_NOTADB) => StoreError::Corrupt {
                        detail: db.message().to_owned(),
                    },
                    _ => StoreError::Database(sqlx::Error::Database(db)),
                }
            }
            sqlx::Error::PoolTimedOut => StoreError::Busy,
            // A stored value of the wrong type: cannot happen in STRICT
            // tables unless the file was edited.
            sqlx::Error::ColumnDecode { index, source } => StoreError::Corrupt {
                detail: format!("column {index}: {source}"),
            },
            other => StoreError::Database(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_too_new_message_is_actionable() {
        let e = StoreError::SchemaTooNew {
            found: 7,
            supported: 3,
        };
        assert_eq!(
            e.to_string(),
            "store schema version 7 is newer than this mdgate supports (3): \
             upgrade mdgate, or restore the backup taken before the upgrade"
        );
    }

    #[test]
    fn pool_timeout_is_busy_and_transient() {
        let e = StoreError::from(sqlx::Error::PoolTimedOut);
        assert!(matches!(e, StoreError::Busy));
        assert!(e.is_transient());
        assert!(!StoreError::NotFound { what: "grant" }.is_transient());
    }
}
