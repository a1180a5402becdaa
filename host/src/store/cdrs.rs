//! Call detail records in the `cdrs` table (schema version 3).

use std::path::Path;

use rusqlite::types::{FromSqlError, Value};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Transaction};

use super::{open_read_only, StoreError};
use crate::cdr::{Cdr, CdrFilter, Disposition};

/// Appends one record (run by the writer thread for `Write::InsertCdr`).
pub(super) fn insert(tx: &Transaction<'_>, c: &Cdr) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO cdrs (call_id, tenant, caller, caller_source, caller_user_agent, callee, \
         route, answered_by, start_ms, answer_ms, end_ms, duration_ms, disposition, status) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        c.call_id,
        c.tenant,
        c.caller,
        c.caller_source,
        c.caller_user_agent,
        c.callee,
        c.route,
        c.answered_by,
        c.start_ms as i64,
        c.answer_ms.map(|t| t as i64),
        c.end_ms as i64,
        c.duration_ms as i64,
        c.disposition.as_str(),
        c.status,
    ])?;
    Ok(())
}

/// The records `filter` selects, newest first (`start_ms`, then insertion),
/// `filter.offset` skipped, at most `filter.limit` (0: all).
pub fn load_cdrs(conn: &Connection, filter: &CdrFilter) -> Result<Vec<Cdr>, StoreError> {
    let mut sql = String::from(
        "SELECT call_id, tenant, caller, caller_source, caller_user_agent, callee, route, \
         answered_by, start_ms, answer_ms, end_ms, duration_ms, disposition, status \
         FROM cdrs WHERE 1",
    );
    let mut args: Vec<Value> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, value: Value| {
        args.push(value);
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(t) = filter.since_ms {
        arg(&mut sql, " AND start_ms >= ?", Value::Integer(clamp(t)));
    }
    if let Some(t) = filter.until_ms {
        arg(&mut sql, " AND start_ms < ?", Value::Integer(clamp(t)));
    }
    if let Some(e) = &filter.extension {
        arg(
            &mut sql,
            " AND (caller = ? OR callee = ?)",
            Value::Text(e.clone()),
        );
    }
    if let Some(d) = filter.disposition {
        arg(
            &mut sql,
            " AND disposition = ?",
            Value::Text(d.as_str().into()),
        );
    }
    if let Some(t) = &filter.tenant {
        arg(&mut sql, " AND tenant = ?", Value::Text(t.clone()));
    }
    // A negative LIMIT is no limit in SQLite.
    let limit = if filter.limit == 0 {
        -1
    } else {
        clamp(filter.limit as u64)
    };
    arg(
        &mut sql,
        " ORDER BY start_ms DESC, id DESC LIMIT ?",
        Value::Integer(limit),
    );
    arg(
        &mut sql,
        " OFFSET ?",
        Value::Integer(clamp(filter.offset as u64)),
    );

    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        let disposition: String = r.get(12)?;
        Ok(Cdr {
            call_id: r.get(0)?,
            tenant: r.get(1)?,
            caller: r.get(2)?,
            caller_source: r.get(3)?,
            caller_user_agent: r.get(4)?,
            callee: r.get(5)?,
            route: r.get(6)?,
            answered_by: r.get(7)?,
            start_ms: r.get::<_, i64>(8)? as u64,
            answer_ms: r.get::<_, Option<i64>>(9)?.map(|t| t as u64),
            end_ms: r.get::<_, i64>(10)? as u64,
            duration_ms: r.get::<_, i64>(11)? as u64,
            disposition: disposition.parse::<Disposition>().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    12,
                    rusqlite::types::Type::Text,
                    Box::new(FromSqlError::Other(Box::new(e))),
                )
            })?,
            status: r.get(13)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Like [`load_cdrs`], on a read-only connection of its own to the database
/// at `path`: what `sipfence cdr list` does, whether or not the gateway runs
/// (in WAL mode a reader never blocks the writer). A database that does not
/// exist yet, or that no gateway of this version has migrated, has no calls.
pub fn read_cdrs(path: &Path, filter: &CdrFilter) -> Result<Vec<Cdr>, StoreError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = open_read_only(path)?;
    let has_table = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cdrs'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !has_table {
        return Ok(Vec::new());
    }
    load_cdrs(&conn, filter)
}

/// SQLite integers are signed; no time or count of ours comes near the top.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
