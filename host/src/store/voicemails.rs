//! The voicemail index in the `voicemails` table (schema version 5): one row
//! per recorded message, the WAV file beside it on disk.

use rusqlite::{params, Connection, Transaction};
use serde::Serialize;

use super::StoreError;

/// One recorded message, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StoredVoicemail {
    /// Assigned by the gateway (see `crate::voicemail`), unique.
    pub id: u64,
    /// "" for the default tenant.
    pub tenant: String,
    pub mailbox: String,
    pub caller: String,
    pub caller_name: Option<String>,
    pub call_id: String,
    /// When the recording started (Unix ms).
    pub received_ms: u64,
    pub duration_ms: u64,
    /// The WAV file's path.
    pub file: String,
    /// What ended the recording: hangup, dtmf, max-length, silence.
    pub ended_by: String,
    /// The Message-ID of the mail a plugin queued for it, if any.
    pub mail_message_id: Option<String>,
    /// That mail's state in the queue (queued, sent, failed), if any.
    pub mail_state: Option<String>,
}

/// Appends one message (run by the writer thread).
pub(super) fn insert(tx: &Transaction<'_>, v: &StoredVoicemail) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO voicemails (id, tenant, mailbox, caller, caller_name, call_id, \
         received_ms, duration_ms, file, ended_by) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        v.id as i64,
        v.tenant,
        v.mailbox,
        v.caller,
        v.caller_name,
        v.call_id,
        v.received_ms as i64,
        v.duration_ms as i64,
        v.file,
        v.ended_by,
    ])?;
    Ok(())
}

/// Notes the mail queued for a message (run by the writer thread).
pub(super) fn set_mail(
    tx: &Transaction<'_>,
    id: u64,
    message_id: &str,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached("UPDATE voicemails SET mail_message_id = ?2 WHERE id = ?1")?
        .execute(params![id as i64, message_id])?;
    Ok(())
}

/// The highest id in use (0 for none): ids continue from it after a restart.
pub fn last_voicemail_id(conn: &Connection) -> Result<u64, StoreError> {
    let max: Option<i64> = conn.query_row("SELECT MAX(id) FROM voicemails", [], |r| r.get(0))?;
    Ok(max.unwrap_or(0).max(0) as u64)
}

/// One message by id.
pub fn voicemail(conn: &Connection, id: u64) -> Result<Option<StoredVoicemail>, StoreError> {
    Ok(select(conn, "WHERE v.id = ?1", params![id as i64], 1)?.pop())
}

/// Messages, newest first; a mailbox's only when `mailbox` is given (with
/// its tenant); at most `limit` (0: all).
pub fn load_voicemails(
    conn: &Connection,
    tenant: &str,
    mailbox: Option<&str>,
    limit: usize,
) -> Result<Vec<StoredVoicemail>, StoreError> {
    match mailbox {
        Some(m) => select(
            conn,
            "WHERE v.tenant = ?1 AND v.mailbox = ?2",
            params![tenant, m],
            limit,
        ),
        None => select(conn, "", params![], limit),
    }
}

fn select(
    conn: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
    limit: usize,
) -> Result<Vec<StoredVoicemail>, StoreError> {
    let limit = if limit == 0 { -1 } else { limit as i64 };
    let sql = format!(
        "SELECT v.id, v.tenant, v.mailbox, v.caller, v.caller_name, v.call_id, v.received_ms, \
         v.duration_ms, v.file, v.ended_by, v.mail_message_id, m.state \
         FROM voicemails v LEFT JOIN mail_queue m ON m.message_id = v.mail_message_id \
         {filter} ORDER BY v.received_ms DESC, v.id DESC LIMIT {limit}"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok(StoredVoicemail {
            id: r.get::<_, i64>(0)? as u64,
            tenant: r.get(1)?,
            mailbox: r.get(2)?,
            caller: r.get(3)?,
            caller_name: r.get(4)?,
            call_id: r.get(5)?,
            received_ms: r.get::<_, i64>(6)? as u64,
            duration_ms: r.get::<_, i64>(7)? as u64,
            file: r.get(8)?,
            ended_by: r.get(9)?,
            mail_message_id: r.get(10)?,
            mail_state: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
