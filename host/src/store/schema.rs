//! The database schema and its migrations, keyed by `PRAGMA user_version`.

use rusqlite::Connection;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 2;

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

/// Brings the database up to [`SCHEMA_VERSION`], one version at a time.
pub fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (to, sql) in [(1, V1), (2, V2)] {
        if version < to {
            conn.execute_batch(sql)?;
            conn.pragma_update(None, "user_version", to)?;
        }
    }
    Ok(())
}
