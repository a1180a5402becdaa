//! The mail subsystem's one error type.

use std::path::PathBuf;

/// Errors of the mail queue and worker; each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A sender or recipient address does not parse (nothing was queued).
    #[error("bad mail address {address:?}: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// Why it was refused.
        reason: String,
    },
    /// A mail without any recipient (nothing was queued).
    #[error("mail has no recipient")]
    NoRecipient,
    /// The database file could not be opened or prepared (or the
    /// `mail_queue` table is missing: its migration has not run).
    #[error("mail queue database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A query on the queue failed.
    #[error("mail queue database: {0}")]
    Database(#[from] rusqlite::Error),
    /// No queued mail has that id.
    #[error("no mail with id {0}")]
    NotFound(i64),
    /// The mail was sent already; it cannot be re-queued.
    #[error("mail {0} was sent already")]
    AlreadySent(i64),
    /// A stored row holds a value this code does not know (a hand edit or a
    /// newer gateway).
    #[error("mail {id}: bad stored value: {what}")]
    Corrupt {
        /// The row.
        id: i64,
        /// What was wrong.
        what: String,
    },
    /// A blocking database task panicked or was cancelled.
    #[error("mail queue task failed: {0}")]
    Task(String),
}

/// Results of the mail subsystem.
pub type Result<T, E = MailError> = std::result::Result<T, E>;
