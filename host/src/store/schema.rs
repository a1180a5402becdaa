//! The database schema and its migrations, keyed by `PRAGMA user_version`.

use rusqlite::Connection;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 6;

const V1: &str = "
CREATE TABLE IF NOT EXISTS bindings (
    tenant           TEXT    NOT NULL,
    extension        TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    contact          TEXT    NOT NULL,
    source           TEXT    NOT NULL,
    transport        TEXT    NOT NULL,
    call_id          TEXT    NOT NULL,
    cseq             INTEGER NOT NULL,
    expires_at_ms    INTEGER NOT NULL,
    registered_at_ms INTEGER NOT NULL,
    user_agent       TEXT,
    PRIMARY KEY (tenant, extension, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bindings_expiry ON bindings (expires_at_ms);
CREATE TABLE IF NOT EXISTS generated_passwords (
    tenant        TEXT    NOT NULL,
    extension     TEXT    NOT NULL,
    password      TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, extension)
) WITHOUT ROWID;
";

/// Version 2: bans with their evidence.
const V2: &str = "
CREATE TABLE IF NOT EXISTS bans (
    address    TEXT    NOT NULL PRIMARY KEY,
    by_whom    TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    until_ms   INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 3: call detail records, one row per call (see `crate::cdr`).
/// Times are Unix ms; `disposition` is `Disposition::as_str`. The `caller` and
/// `callee` indexes serve the extension filter (caller OR callee, newest
/// first), the `start_ms` one the time range and the order.
const V3: &str = "
CREATE TABLE IF NOT EXISTS cdrs (
    id                INTEGER PRIMARY KEY,
    call_id           TEXT    NOT NULL,
    tenant            TEXT    NOT NULL,
    caller            TEXT    NOT NULL,
    caller_source     TEXT    NOT NULL,
    caller_user_agent TEXT,
    callee            TEXT    NOT NULL,
    route             TEXT    NOT NULL,
    answered_by       TEXT,
    start_ms          INTEGER NOT NULL,
    answer_ms         INTEGER,
    end_ms            INTEGER NOT NULL,
    duration_ms       INTEGER NOT NULL,
    disposition       TEXT    NOT NULL,
    status            INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cdrs_start ON cdrs (start_ms);
CREATE INDEX IF NOT EXISTS cdrs_caller ON cdrs (caller, start_ms);
CREATE INDEX IF NOT EXISTS cdrs_callee ON cdrs (callee, start_ms);
";

/// Version 4: values the gateway generated for itself and must keep across
/// restarts, by name (`api_token`).
const V4: &str = "
CREATE TABLE IF NOT EXISTS settings (
    name          TEXT    NOT NULL PRIMARY KEY,
    value         TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 5: voicemail messages (the WAV files live in `[voicemail] dir`)
/// and the outgoing mail queue (see `crate::mail`).
const V5: &str = "
CREATE TABLE IF NOT EXISTS voicemails (
    id              INTEGER PRIMARY KEY,
    tenant          TEXT    NOT NULL,
    mailbox         TEXT    NOT NULL,
    caller          TEXT    NOT NULL,
    caller_name     TEXT,
    call_id         TEXT    NOT NULL,
    received_ms     INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    file            TEXT    NOT NULL,
    ended_by        TEXT    NOT NULL,
    mail_message_id TEXT
);
CREATE INDEX IF NOT EXISTS voicemails_mailbox ON voicemails (tenant, mailbox, received_ms);
";

/// Version 6: no index on a binding's expiry. Every REGISTER rewrites its
/// binding, so the index cost a second b-tree update (and WAL pages) per
/// registration; the only query it served is the periodic purge, which
/// scans the table instead (100,000 bindings: milliseconds, every
/// `storage.purge_interval_ms`).
const V6: &str = "DROP INDEX IF EXISTS bindings_expiry;";

/// Every migration: the version it brings the database to, and its SQL.
const MIGRATIONS: [(i64, &[&str]); 6] = [
    (1, &[V1]),
    (2, &[V2]),
    (3, &[V3]),
    (4, &[V4]),
    (5, &[V5, crate::mail::MAIL_QUEUE_DDL]),
    (6, &[V6]),
];

/// Brings the database up to [`SCHEMA_VERSION`], one version at a time.
pub fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Brings the database up to `target` (tests build older databases with it).
pub(crate) fn migrate_to(conn: &Connection, target: i64) -> Result<(), rusqlite::Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (to, sqls) in MIGRATIONS.into_iter().take_while(|(to, _)| *to <= target) {
        if version < to {
            for sql in sqls {
                conn.execute_batch(sql)?;
            }
            conn.pragma_update(None, "user_version", to)?;
        }
    }
    Ok(())
}
