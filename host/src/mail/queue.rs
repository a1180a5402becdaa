//! The durable outgoing-mail queue: one SQLite table, `mail_queue`.
//!
//! Every method is synchronous and short (one statement, or one small
//! transaction) and takes the connection's mutex for its own duration only.
//! From async code call them through `tokio::task::spawn_blocking`, as the
//! worker and `MailerHandle::enqueue` do.
//!
//! States: `queued` (waiting for `next_attempt_ms`), `sent` (the SMTP server
//! accepted it; `sent_ms` says when) and `failed` (too many permanent
//! refusals; kept, and `retry_now` queues it again).

use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lettre::Address;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::mail::error::{MailError, Result};
use crate::now_ms;

/// The table and its index, for the gateway's migrations (one version).
///
/// `rcpt_to` is a comma-separated list (enqueue refuses an address with a
/// comma). `attempts` counts SMTP tries of any outcome, `rejections` the
/// permanent (5xx) refusals among them (it decides `failed`). Times are Unix
/// ms.
pub const MAIL_QUEUE_DDL: &str = "
CREATE TABLE IF NOT EXISTS mail_queue (
    id              INTEGER PRIMARY KEY,
    message_id      TEXT    NOT NULL UNIQUE,
    created_ms      INTEGER NOT NULL,
    mail_from       TEXT    NOT NULL,
    rcpt_to         TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    attachment_path TEXT,
    attachment_name TEXT,
    attachment_type TEXT,
    state           TEXT    NOT NULL DEFAULT 'queued',
    attempts        INTEGER NOT NULL DEFAULT 0,
    rejections      INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    sent_ms         INTEGER,
    source          TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS mail_queue_due ON mail_queue (state, next_attempt_ms);
";

/// The columns `due` reads, in `PendingMail::from_row` order.
const PENDING_COLUMNS: &str = "id, message_id, created_ms, mail_from, rcpt_to, subject, body, \
     attachment_path, attachment_name, attachment_type, attempts, rejections";

/// A mail to queue, as a plugin or the voicemail code hands it over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutgoingMail {
    /// The From address; the queue's default (`MailSettings::from`) when
    /// `None`.
    pub from: Option<String>,
    /// Recipients (at least one); each is an RFC 5322 addr-spec, optionally
    /// with a display name (`Name <a@b>`).
    pub to: Vec<String>,
    /// Subject line.
    pub subject: String,
    /// The text/plain body.
    pub body: String,
    /// A file attached at send time (the voicemail WAV).
    pub attachment: Option<Attachment>,
    /// Who queued it (plugin name, "voicemail"): for the management API.
    pub source: String,
}

/// A file to attach. It is read when the mail is sent, not when queued, so
/// it must stay in place until then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Where the file is.
    pub path: String,
    /// The file name the recipient sees.
    pub name: String,
    /// Its MIME type, e.g. `audio/wav`.
    pub content_type: String,
}

impl Attachment {
    /// A WAV recording at `path`, shown as `name`.
    pub fn wav(path: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            name: name.into(),
            content_type: "audio/wav".to_owned(),
        }
    }
}

/// What `enqueue` answers: the row and the mail's fixed Message-ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMail {
    /// Row id, for `retry_now` and the API.
    pub id: i64,
    /// The Message-ID header every try of this mail carries.
    pub message_id: String,
}

/// A queued mail as the worker sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingMail {
    /// Row id.
    pub id: i64,
    /// The Message-ID fixed at enqueue time.
    pub message_id: String,
    /// When it was queued (Unix ms): also its Date header, the same on
    /// every try.
    pub created_ms: u64,
    /// From address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject line.
    pub subject: String,
    /// text/plain body.
    pub body: String,
    /// The file to attach, if any.
    pub attachment: Option<Attachment>,
    /// Tries so far (drives the backoff).
    pub attempts: u32,
    /// Permanent refusals so far (drives `failed`).
    pub rejections: u32,
}

impl PendingMail {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        let path: Option<String> = row.get(7)?;
        let name: Option<String> = row.get(8)?;
        let content_type: Option<String> = row.get(9)?;
        let attachment = path.map(|path| Attachment {
            name: name.unwrap_or_else(|| file_name(&path)),
            content_type: content_type.unwrap_or_else(|| "application/octet-stream".to_owned()),
            path,
        });
        Ok(Self {
            id: row.get(0)?,
            message_id: row.get(1)?,
            created_ms: to_u64(row.get(2)?),
            from: row.get(3)?,
            to: split_rcpt(&row.get::<_, String>(4)?),
            subject: row.get(5)?,
            body: row.get(6)?,
            attachment,
            attempts: to_u32(row.get(10)?),
            rejections: to_u32(row.get(11)?),
        })
    }
}

/// The state of a queued mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MailState {
    /// Waiting for its next try.
    Queued,
    /// Accepted by the SMTP server.
    Sent,
    /// Refused permanently too often; kept for inspection and `retry_now`.
    Failed,
}

impl MailState {
    /// The value stored in `mail_queue.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(Self::Queued),
            "sent" => Some(Self::Sent),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One row as the management API lists it (no body).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct MailSummary {
    /// Row id.
    pub id: i64,
    /// The fixed Message-ID.
    pub message_id: String,
    /// Recipients.
    pub rcpt: Vec<String>,
    /// Subject line.
    pub subject: String,
    /// Where it stands.
    pub state: MailState,
    /// SMTP tries so far.
    pub attempts: u32,
    /// When the next try is due (Unix ms; meaningful while queued).
    pub next_attempt_ms: u64,
    /// What the last failed try said.
    pub last_error: Option<String>,
    /// When it was queued (Unix ms).
    pub created_ms: u64,
    /// When the server accepted it (Unix ms).
    pub sent_ms: Option<u64>,
    /// Who queued it.
    pub source: String,
}

/// The outgoing-mail queue over the gateway's database file.
pub struct MailQueue {
    /// Our own connection (the store has its own on the same file); the
    /// mutex is held for one statement or transaction, never across an
    /// await.
    conn: Mutex<Connection>,
    /// From address for mail that names none (already validated).
    default_from: String,
}

impl MailQueue {
    /// Opens the queue on the database at `path`. The `mail_queue` table
    /// must exist (`MAIL_QUEUE_DDL`, run by the gateway's migrations);
    /// `default_from` must parse as an address.
    pub fn open(path: &Path, default_from: &str) -> Result<Self> {
        let open_err = |source| MailError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        // Fails here, with the path, when the migration has not run.
        conn.prepare("SELECT 1 FROM mail_queue LIMIT 0")
            .map_err(open_err)?;
        parse_address(default_from)?;
        Ok(Self {
            conn: Mutex::new(conn),
            default_from: default_from.to_owned(),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable
        // (SQLite rolls back an unfinished transaction), so poisoning is
        // ignored.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Validates `mail` and stores it, committed, before returning: from
    /// then on it survives a crash. Bad addresses store nothing. The
    /// Message-ID is made here, once.
    pub fn enqueue(&self, mail: OutgoingMail) -> Result<QueuedMail> {
        self.enqueue_at(mail, now_ms())
    }

    fn enqueue_at(&self, mail: OutgoingMail, now: u64) -> Result<QueuedMail> {
        let from = mail.from.as_deref().unwrap_or(&self.default_from);
        let from_address = parse_address(from)?;
        if mail.to.is_empty() {
            return Err(MailError::NoRecipient);
        }
        for to in &mail.to {
            parse_address(to)?;
        }
        let message_id = make_message_id(now, from_address.domain());
        let (path, name, content_type) = match mail.attachment {
            Some(a) => (Some(a.path), Some(a.name), Some(a.content_type)),
            None => (None, None, None),
        };
        let conn = self.conn();
        conn.execute(
            "INSERT INTO mail_queue (message_id, created_ms, mail_from, rcpt_to, subject, body,
                 attachment_path, attachment_name, attachment_type, state, attempts, rejections,
                 next_attempt_ms, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'queued', 0, 0, ?2, ?10)",
            params![
                message_id,
                to_i64(now),
                from,
                mail.to.join(","),
                mail.subject,
                mail.body,
                path,
                name,
                content_type,
                mail.source,
            ],
        )?;
        Ok(QueuedMail {
            id: conn.last_insert_rowid(),
            message_id,
        })
    }

    /// Up to `limit` queued mails due at `now_ms`, the longest-waiting
    /// first.
    pub fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<PendingMail>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {PENDING_COLUMNS} FROM mail_queue
             WHERE state = 'queued' AND next_attempt_ms <= ?1
             ORDER BY next_attempt_ms, id LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![to_i64(now_ms), limit], PendingMail::from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the earliest queued mail is due (Unix ms), if any is queued.
    pub fn next_due_ms(&self) -> Result<Option<u64>> {
        let conn = self.conn();
        let next: Option<i64> = conn.query_row(
            "SELECT MIN(next_attempt_ms) FROM mail_queue WHERE state = 'queued'",
            [],
            |row| row.get(0),
        )?;
        Ok(next.map(to_u64))
    }

    /// The server accepted mail `id`.
    pub fn mark_sent(&self, id: i64, now_ms: u64) -> Result<()> {
        self.update(
            id,
            "UPDATE mail_queue SET state = 'sent', sent_ms = ?2, attempts = attempts + 1,
                 last_error = NULL
             WHERE id = ?1",
            params![id, to_i64(now_ms)],
        )
    }

    /// A try of mail `id` failed transiently; the next is due at
    /// `next_attempt_ms`.
    pub fn mark_retry(&self, id: i64, error: &str, next_attempt_ms: u64) -> Result<()> {
        self.update(
            id,
            "UPDATE mail_queue SET attempts = attempts + 1, last_error = ?2, next_attempt_ms = ?3
             WHERE id = ?1 AND state = 'queued'",
            params![id, error, to_i64(next_attempt_ms)],
        )
    }

    /// The server refused mail `id` permanently (5xx), but it is tried again
    /// at `next_attempt_ms` (fewer than the allowed refusals so far).
    pub fn mark_rejected(&self, id: i64, error: &str, next_attempt_ms: u64) -> Result<()> {
        self.update(
            id,
            "UPDATE mail_queue SET attempts = attempts + 1, rejections = rejections + 1,
                 last_error = ?2, next_attempt_ms = ?3
             WHERE id = ?1 AND state = 'queued'",
            params![id, error, to_i64(next_attempt_ms)],
        )
    }

    /// Mail `id` is given up: `failed`, kept with its last error.
    pub fn mark_failed(&self, id: i64, error: &str) -> Result<()> {
        self.update(
            id,
            "UPDATE mail_queue SET state = 'failed', attempts = attempts + 1,
                 rejections = rejections + 1, last_error = ?2
             WHERE id = ?1 AND state = 'queued'",
            params![id, error],
        )
    }

    /// Queues mail `id` (queued or failed) for an immediate try and forgets
    /// its refusals. Call `MailerHandle::notify` after it.
    pub fn retry_now(&self, id: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM mail_queue WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()?;
        match state.as_deref() {
            None => return Err(MailError::NotFound(id)),
            Some("sent") => return Err(MailError::AlreadySent(id)),
            Some(_) => {}
        }
        tx.execute(
            "UPDATE mail_queue SET state = 'queued', rejections = 0, next_attempt_ms = ?2
             WHERE id = ?1",
            params![id, to_i64(now_ms())],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// How many mails are queued (not sent, not failed).
    pub fn depth(&self) -> Result<u64> {
        let conn = self.conn();
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM mail_queue WHERE state = 'queued'",
            [],
            |row| row.get(0),
        )?;
        Ok(to_u64(n))
    }

    /// The newest `limit` mails, newest first, for the management API.
    pub fn list(&self, limit: usize) -> Result<Vec<MailSummary>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, message_id, rcpt_to, subject, state, attempts, next_attempt_ms,
                 last_error, created_ms, sent_ms, source
             FROM mail_queue ORDER BY id DESC LIMIT ?1",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![limit], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, i64>(6)?,
                row.get::<_, Option<String>>(7)?,
                row.get::<_, i64>(8)?,
                row.get::<_, Option<i64>>(9)?,
                row.get::<_, String>(10)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (
                id,
                message_id,
                rcpt,
                subject,
                state,
                attempts,
                next,
                last_error,
                created,
                sent,
                source,
            ) = row?;
            let state = MailState::parse(&state).ok_or_else(|| MailError::Corrupt {
                id,
                what: format!("state {state:?}"),
            })?;
            out.push(MailSummary {
                id,
                message_id,
                rcpt: split_rcpt(&rcpt),
                subject,
                state,
                attempts: to_u32(attempts),
                next_attempt_ms: to_u64(next),
                last_error,
                created_ms: to_u64(created),
                sent_ms: sent.map(to_u64),
                source,
            });
        }
        Ok(out)
    }

    /// Runs one UPDATE on row `id`; no row changed is `NotFound`.
    fn update(&self, id: i64, sql: &str, params: impl rusqlite::Params) -> Result<()> {
        let conn = self.conn();
        let changed = conn.prepare_cached(sql)?.execute(params)?;
        if changed == 0 {
            return Err(MailError::NotFound(id));
        }
        Ok(())
    }
}

/// Parses one address (`a@b` or `Name <a@b>`), refusing commas (the
/// `rcpt_to` separator) and control characters.
fn parse_address(s: &str) -> Result<Address> {
    let bad = |reason: &str| MailError::Address {
        address: s.to_owned(),
        reason: reason.to_owned(),
    };
    if s.contains(',') {
        return Err(bad("contains a comma"));
    }
    if s.chars().any(char::is_control) {
        return Err(bad("contains a control character"));
    }
    let spec = match (s.rfind('<'), s.ends_with('>')) {
        (Some(open), true) => &s[open + 1..s.len() - 1],
        _ => s,
    };
    Address::from_str(spec.trim()).map_err(|e| bad(&e.to_string()))
}

/// `<random-hex.unix-ms@domain>`: 128 random bits make it unique; the time
/// helps a human reading logs.
fn make_message_id(now_ms: u64, domain: &str) -> String {
    format!("<{:032x}.{now_ms}@{domain}>", rand::random::<u128>())
}

fn split_rcpt(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "attachment".to_owned())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> (tempdir::TempDir, MailQueue) {
        let dir = tempdir::TempDir::new("queue");
        let path = dir.path().join("gateway.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MAIL_QUEUE_DDL).unwrap();
        drop(conn);
        let q = MailQueue::open(&path, "voicemail@localhost").unwrap();
        (dir, q)
    }

    /// A tiny self-cleaning temp dir (no extra dependency).
    mod tempdir {
        use std::path::{Path, PathBuf};

        pub struct TempDir(PathBuf);

        impl TempDir {
            pub fn new(tag: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "sipfence-mail-{tag}-{}-{:x}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn mail(to: &str) -> OutgoingMail {
        OutgoingMail {
            to: vec![to.to_owned()],
            subject: "Voicemail from 1001".to_owned(),
            body: "You have a new message.".to_owned(),
            source: "test".to_owned(),
            ..OutgoingMail::default()
        }
    }

    #[test]
    fn enqueue_rejects_bad_addresses_and_stores_nothing() {
        let (_dir, q) = queue();
        for bad in [
            "",
            "no-at-sign",
            "a@",
            "@b.example",
            "a,b@c.example",
            "a@b\r\nBcc: x@y",
        ] {
            let err = q.enqueue(mail(bad)).unwrap_err();
            assert!(matches!(err, MailError::Address { .. }), "{bad:?}: {err}");
        }
        let mut m = mail("ok@example.com");
        m.from = Some("not an address".to_owned());
        assert!(matches!(
            q.enqueue(m).unwrap_err(),
            MailError::Address { .. }
        ));
        let mut m = mail("ok@example.com");
        m.to.clear();
        assert!(matches!(q.enqueue(m).unwrap_err(), MailError::NoRecipient));
        assert_eq!(q.depth().unwrap(), 0);
        assert!(q.list(10).unwrap().is_empty());
        let dir = tempdir::TempDir::new("badfrom");
        let path = dir.path().join("g.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(MAIL_QUEUE_DDL)
            .unwrap();
        assert!(MailQueue::open(&path, "nope").is_err());
    }

    #[test]
    fn open_without_the_table_names_the_file() {
        let dir = tempdir::TempDir::new("notable");
        let path = dir.path().join("g.db");
        let err = MailQueue::open(&path, "a@b.example").err().unwrap();
        assert!(err.to_string().contains("g.db"), "{err}");
    }

    #[test]
    fn enqueue_stores_everything_with_a_message_id_from_the_sender_domain() {
        let (_dir, q) = queue();
        let mut m = mail("Alice <alice@example.com>");
        m.to.push("bob@example.org".to_owned());
        m.from = Some("pbx@voice.example.net".to_owned());
        m.attachment = Some(Attachment::wav("/var/lib/vm/1.wav", "message.wav"));
        let queued = q.enqueue_at(m, 1_700_000_000_123).unwrap();
        let id = &queued.message_id;
        assert!(
            id.starts_with('<') && id.ends_with(".1700000000123@voice.example.net>"),
            "{id}"
        );
        assert_eq!(
            id.len(),
            1 + 32 + 1 + 13 + 1 + "voice.example.net".len() + 1
        );
        let due = q.due(1_700_000_000_123, 10).unwrap();
        assert_eq!(due.len(), 1);
        let p = &due[0];
        assert_eq!(p.id, queued.id);
        assert_eq!(&p.message_id, id);
        assert_eq!(p.from, "pbx@voice.example.net");
        assert_eq!(p.to, ["Alice <alice@example.com>", "bob@example.org"]);
        assert_eq!(p.created_ms, 1_700_000_000_123);
        assert_eq!(
            p.attachment,
            Some(Attachment::wav("/var/lib/vm/1.wav", "message.wav"))
        );
        assert_eq!((p.attempts, p.rejections), (0, 0));
        // The default sender, and a fresh id each time.
        let other = q.enqueue(mail("c@example.com")).unwrap();
        assert!(other.message_id.ends_with("@localhost>"));
        assert_ne!(other.message_id, queued.message_id);
        assert_eq!(q.depth().unwrap(), 2);
    }

    #[test]
    fn due_is_oldest_first_and_respects_time_and_limit() {
        let (_dir, q) = queue();
        let a = q.enqueue_at(mail("a@example.com"), 1000).unwrap();
        let b = q.enqueue_at(mail("b@example.com"), 2000).unwrap();
        let c = q.enqueue_at(mail("c@example.com"), 3000).unwrap();
        assert!(q.due(999, 10).unwrap().is_empty());
        let ids = |v: Vec<PendingMail>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(ids(q.due(2500, 10).unwrap()), [a.id, b.id]);
        assert_eq!(ids(q.due(5000, 2).unwrap()), [a.id, b.id]);
        // a retried later goes behind c.
        q.mark_retry(a.id, "421 busy", 4000).unwrap();
        assert_eq!(ids(q.due(5000, 10).unwrap()), [b.id, c.id, a.id]);
        assert_eq!(q.next_due_ms().unwrap(), Some(2000));
        q.mark_sent(b.id, 5000).unwrap();
        q.mark_sent(c.id, 5000).unwrap();
        assert_eq!(q.next_due_ms().unwrap(), Some(4000));
        q.mark_sent(a.id, 5000).unwrap();
        assert_eq!(q.next_due_ms().unwrap(), None);
        assert_eq!(q.depth().unwrap(), 0);
    }

    #[test]
    fn mark_transitions() {
        let (_dir, q) = queue();
        let m = q.enqueue_at(mail("a@example.com"), 1000).unwrap();
        let row = |q: &MailQueue| q.list(1).unwrap().remove(0);

        q.mark_retry(m.id, "connection refused", 2000).unwrap();
        let r = row(&q);
        assert_eq!(
            (r.state, r.attempts, r.next_attempt_ms),
            (MailState::Queued, 1, 2000)
        );
        assert_eq!(r.last_error.as_deref(), Some("connection refused"));

        q.mark_rejected(m.id, "550 no such user", 3000).unwrap();
        assert_eq!(q.due(3000, 1).unwrap()[0].rejections, 1);
        q.mark_failed(m.id, "550 no such user").unwrap();
        let r = row(&q);
        assert_eq!((r.state, r.attempts), (MailState::Failed, 3));
        assert_eq!(q.depth().unwrap(), 0);
        assert!(q.due(u64::MAX / 2, 10).unwrap().is_empty());
        // A failed mail only changes through retry_now.
        assert!(matches!(
            q.mark_retry(m.id, "x", 1),
            Err(MailError::NotFound(_))
        ));

        q.retry_now(m.id).unwrap();
        let r = row(&q);
        assert_eq!(r.state, MailState::Queued);
        assert!(r.next_attempt_ms <= now_ms());
        assert_eq!(q.due(now_ms(), 1).unwrap()[0].rejections, 0);

        q.mark_sent(m.id, 9000).unwrap();
        let r = row(&q);
        assert_eq!(
            (r.state, r.attempts, r.sent_ms),
            (MailState::Sent, 4, Some(9000))
        );
        assert_eq!(r.last_error, None);
        assert!(matches!(q.retry_now(m.id), Err(MailError::AlreadySent(_))));
        assert!(matches!(q.retry_now(4242), Err(MailError::NotFound(4242))));
        assert!(matches!(
            q.mark_sent(4242, 1),
            Err(MailError::NotFound(4242))
        ));
    }
}
