//! Durable state in SQLite (WAL): registrations, generated passwords, bans
//! and call detail records.
//!
//! All writes go through one writer thread that commits in groups: it takes
//! the first waiting operation, drains whatever else is queued (up to
//! `commit_batch_max`), applies them in one transaction and only then tells
//! every waiter "committed". A REGISTER's 200 OK waits for that signal, so an
//! acknowledged binding is on disk, yet a burst of REGISTERs costs one commit,
//! not one each.
//!
//! Durability: with `synchronous = NORMAL` (the default) a committed
//! transaction survives a crash of the process (`kill -9`): it is in the WAL,
//! which the OS holds. Only a power loss or kernel crash can lose the last
//! commits before a checkpoint. `synchronous = FULL` fsyncs every commit group
//! and survives those too, at a cost per group.

mod cdrs;
mod schema;
mod voicemails;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::cdr::Cdr;
use crate::config::Synchronous;

pub use cdrs::{load_cdrs, read_cdrs};
pub use schema::SCHEMA_VERSION;
pub use voicemails::{last_voicemail_id, load_voicemails, voicemail, StoredVoicemail};

/// Errors of the store; each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or prepared.
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The writer thread has stopped (the gateway is shutting down).
    #[error("database writer has stopped")]
    WriterGone,
    /// A group commit failed; every write in the group is lost.
    #[error("database commit failed: {0}")]
    Commit(String),
}

/// One registration binding as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBinding {
    /// Tenant key: the tenant's domain, or "" for the default tenant.
    pub tenant: String,
    pub extension: String,
    /// What identifies the binding within the extension (instance/reg-id or contact URI).
    pub key: String,
    pub contact: String,
    /// Source address the REGISTER came from ("ip:port").
    pub source: String,
    /// "UDP" or "TCP".
    pub transport: String,
    pub call_id: String,
    pub cseq: u32,
    /// Unix time in milliseconds when the binding expires.
    pub expires_at_ms: u64,
    pub registered_at_ms: u64,
    pub user_agent: Option<String>,
}

/// One ban as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBan {
    /// The address, or the IPv6 network ("2001:db8::/64").
    pub address: String,
    /// The plugin (or "operator") that asked for it.
    pub by: String,
    pub reason: String,
    pub created_ms: u64,
    pub until_ms: u64,
}

/// A change to durable state.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    UpsertBinding(StoredBinding),
    DeleteBinding {
        tenant: String,
        extension: String,
        key: String,
    },
    /// Removes every binding that expired at or before this Unix time (ms).
    PurgeExpired {
        now_ms: u64,
    },
    UpsertBan(StoredBan),
    DeleteBan {
        address: String,
    },
    SetGeneratedPassword {
        tenant: String,
        extension: String,
        password: String,
        created_at_ms: u64,
    },
    /// Appends a call detail record (a call has ended).
    InsertCdr(Cdr),
    /// Sets a generated value kept across restarts (the API token).
    SetSetting {
        name: String,
        value: String,
        created_at_ms: u64,
    },
    /// Indexes a recorded voicemail message.
    InsertVoicemail(StoredVoicemail),
    /// Notes the mail queued for a voicemail message.
    SetVoicemailMail {
        id: u64,
        message_id: String,
    },
}

/// Runs on the writer thread once a job's writes are committed (or failed).
pub type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

struct Job {
    writes: Vec<Write>,
    done: Done,
}

/// Who is told that a job is committed.
enum Done {
    Nobody,
    Waiter(oneshot::Sender<Result<(), String>>),
    Callback(Completion),
}

/// Handle to the database: a queue to the writer thread, and the path for readers.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    queue: mpsc::Sender<Job>,
    /// Jobs queued and not yet taken by the writer.
    queued: Arc<AtomicUsize>,
    /// Woken when `queued` reaches the group target.
    writer: thread::Thread,
    target: usize,
}

/// How the writer groups jobs into commits: it takes the first job, waits
/// up to `delay` for more, and commits as soon as `target` are queued (or
/// the delay is over), at most `max` at once. Waiting makes a commit's cost
/// shared by many registrations at low rates; the target keeps groups (and
/// the bursts of 200 OKs that leave when one commits) small at high rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grouping {
    pub max: usize,
    pub target: usize,
    pub delay: Duration,
}

impl Grouping {
    /// Commits whatever is queued at once, up to `max` jobs.
    pub fn immediate(max: usize) -> Grouping {
        Grouping {
            max,
            target: 1,
            delay: Duration::ZERO,
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database, migrates the schema and starts
    /// the writer thread.
    pub fn open(path: &Path, sync: Synchronous, grouping: Grouping) -> Result<Store, StoreError> {
        let conn = open_connection(path, sync)?;
        schema::migrate(&conn).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let (queue, jobs) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let grouping = Grouping {
            max: grouping.max.max(1),
            target: grouping.target.max(1),
            ..grouping
        };
        let writer = thread::Builder::new()
            .name("sipfence-db-writer".into())
            .spawn({
                let queued = queued.clone();
                move || writer_loop(conn, jobs, &queued, grouping)
            })
            .expect("spawning the database writer thread");
        Ok(Store {
            path: path.to_owned(),
            queue,
            queued,
            writer: writer.thread().clone(),
            target: grouping.target,
        })
    }

    /// Queues a job; wakes the writer early when the group is full.
    fn send(&self, job: Job) -> Result<(), mpsc::SendError<Job>> {
        // Counted before it is queued, so the writer never takes a job
        // that is not counted yet.
        let queued = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if let Err(e) = self.queue.send(job) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        if queued == self.target {
            self.writer.unpark();
        }
        Ok(())
    }

    /// Queues writes and resolves once they are committed.
    pub async fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job {
            writes,
            done: Done::Waiter(tx),
        })
        .map_err(|_| StoreError::WriterGone)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Commit(e)),
            Err(_) => Err(StoreError::WriterGone),
        }
    }

    /// Queues writes; `done` runs on the writer thread right after the commit.
    /// This is how a REGISTER's 200 OK leaves: no task waits, no thread is
    /// woken just to send it.
    pub fn write_then(&self, writes: Vec<Write>, done: Completion) {
        if let Err(mpsc::SendError(job)) = self.send(Job {
            writes,
            done: Done::Callback(done),
        }) {
            if let Done::Callback(done) = job.done {
                done(Err("database writer has stopped".into()));
            }
        }
    }

    /// Queues writes without waiting for the commit (housekeeping).
    pub fn write_detached(&self, writes: Vec<Write>) {
        let _ = self.send(Job {
            writes,
            done: Done::Nobody,
        });
    }

    /// Waits until everything queued so far is committed (used at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write(Vec::new()).await
    }

    /// A separate read connection (readers never block the writer in WAL mode).
    pub fn reader(&self) -> Result<Connection, StoreError> {
        open_read_only(&self.path)
    }
}

/// Opens a database for reading only, e.g. for `sipfence registrations list`
/// when the gateway is not running.
pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn open_connection(path: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    let open = || -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let level = match sync {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", level)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Keep the page cache small: the location set lives in memory already.
        conn.pragma_update(None, "cache_size", -2048)?;
        Ok(conn)
    };
    open().map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })
}

fn writer_loop(
    mut conn: Connection,
    jobs: mpsc::Receiver<Job>,
    queued: &AtomicUsize,
    grouping: Grouping,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(grouping.max);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        // Gather what arrives within the commit delay into the same commit.
        // Parked rather than waiting on the queue, so the jobs queued
        // meanwhile wake nobody but the one that fills the group: one
        // wake-up per commit group, not one per job (each costs the sender
        // a system call and this thread a context switch).
        let until = Instant::now() + grouping.delay;
        while queued.load(Ordering::Acquire) < grouping.target {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::park_timeout(left);
        }
        while batch.len() < grouping.max {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        let result = apply(&mut conn, &batch).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, writes = batch.len(), "database commit failed");
        }
        for job in batch.drain(..) {
            match job.done {
                Done::Nobody => {}
                Done::Waiter(tx) => {
                    let _ = tx.send(result.clone());
                }
                Done::Callback(f) => f(result.clone()),
            }
        }
    }
}

fn apply(conn: &mut Connection, batch: &[Job]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    for write in batch.iter().flat_map(|job| job.writes.iter()) {
        match write {
            Write::UpsertBinding(b) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO bindings (tenant, extension, key, contact, source, \
                     transport, call_id, cseq, expires_at_ms, registered_at_ms, user_agent) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?
                .execute(params![
                    b.tenant,
                    b.extension,
                    b.key,
                    b.contact,
                    b.source,
                    b.transport,
                    b.call_id,
                    b.cseq,
                    b.expires_at_ms as i64,
                    b.registered_at_ms as i64,
                    b.user_agent,
                ])?;
            }
            Write::DeleteBinding {
                tenant,
                extension,
                key,
            } => {
                tx.prepare_cached(
                    "DELETE FROM bindings WHERE tenant = ?1 AND extension = ?2 AND key = ?3",
                )?
                .execute(params![tenant, extension, key])?;
            }
            Write::PurgeExpired { now_ms } => {
                tx.prepare_cached("DELETE FROM bindings WHERE expires_at_ms <= ?1")?
                    .execute(params![*now_ms as i64])?;
                tx.prepare_cached("DELETE FROM bans WHERE until_ms <= ?1")?
                    .execute(params![*now_ms as i64])?;
            }
            Write::UpsertBan(b) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO bans (address, by_whom, reason, created_ms, until_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    b.address,
                    b.by,
                    b.reason,
                    b.created_ms as i64,
                    b.until_ms as i64
                ])?;
            }
            Write::DeleteBan { address } => {
                tx.prepare_cached("DELETE FROM bans WHERE address = ?1")?
                    .execute(params![address])?;
            }
            Write::SetGeneratedPassword {
                tenant,
                extension,
                password,
                created_at_ms,
            } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO generated_passwords \
                     (tenant, extension, password, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    tenant,
                    extension,
                    password,
                    *created_at_ms as i64
                ])?;
            }
            Write::InsertCdr(cdr) => cdrs::insert(&tx, cdr)?,
            Write::SetSetting {
                name,
                value,
                created_at_ms,
            } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO settings (name, value, created_at_ms) \
                     VALUES (?1, ?2, ?3)",
                )?
                .execute(params![name, value, *created_at_ms as i64])?;
            }
            Write::InsertVoicemail(v) => voicemails::insert(&tx, v)?,
            Write::SetVoicemailMail { id, message_id } => {
                voicemails::set_mail(&tx, *id, message_id)?
            }
        }
    }
    tx.commit()
}

/// Every binding that has not expired at `now_ms`.
pub fn load_bindings(conn: &Connection, now_ms: u64) -> Result<Vec<StoredBinding>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT tenant, extension, key, contact, source, transport, call_id, cseq, \
         expires_at_ms, registered_at_ms, user_agent FROM bindings \
         WHERE expires_at_ms > ?1 ORDER BY tenant, extension, registered_at_ms",
    )?;
    let rows = stmt.query_map(params![now_ms as i64], |r| {
        Ok(StoredBinding {
            tenant: r.get(0)?,
            extension: r.get(1)?,
            key: r.get(2)?,
            contact: r.get(3)?,
            source: r.get(4)?,
            transport: r.get(5)?,
            call_id: r.get(6)?,
            cseq: r.get(7)?,
            expires_at_ms: r.get::<_, i64>(8)? as u64,
            registered_at_ms: r.get::<_, i64>(9)? as u64,
            user_agent: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Every ban that has not ended at `now_ms`.
pub fn load_bans(conn: &Connection, now_ms: u64) -> Result<Vec<StoredBan>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT address, by_whom, reason, created_ms, until_ms FROM bans \
         WHERE until_ms > ?1 ORDER BY until_ms",
    )?;
    let rows = stmt.query_map(params![now_ms as i64], |r| {
        Ok(StoredBan {
            address: r.get(0)?,
            by: r.get(1)?,
            reason: r.get(2)?,
            created_ms: r.get::<_, i64>(3)? as u64,
            until_ms: r.get::<_, i64>(4)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Deletes a ban straight from the database (the gateway is not running).
pub fn delete_ban(path: &Path, address: &str) -> Result<bool, StoreError> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    schema::migrate(&conn)?;
    Ok(conn.execute("DELETE FROM bans WHERE address = ?1", params![address])? > 0)
}

/// The password generated earlier for an extension without one, if any.
pub fn generated_password(
    conn: &Connection,
    tenant: &str,
    extension: &str,
) -> Result<Option<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT password FROM generated_passwords WHERE tenant = ?1 AND extension = ?2",
    )?;
    let mut rows = stmt.query(params![tenant, extension])?;
    Ok(match rows.next()? {
        Some(row) => Some(row.get(0)?),
        None => None,
    })
}

/// A value set earlier with [`Write::SetSetting`], if any.
pub fn setting(conn: &Connection, name: &str) -> Result<Option<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT value FROM settings WHERE name = ?1")?;
    let mut rows = stmt.query(params![name])?;
    Ok(match rows.next()? {
        Some(row) => Some(row.get(0)?),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::{CdrFilter, Disposition};

    fn binding(key: &str, expires_at_ms: u64) -> StoredBinding {
        StoredBinding {
            tenant: String::new(),
            extension: "100".into(),
            key: key.into(),
            contact: format!("sip:100@127.0.0.1:{key}"),
            source: "127.0.0.1:5062".into(),
            transport: "UDP".into(),
            call_id: "c1".into(),
            cseq: 1,
            expires_at_ms,
            registered_at_ms: 1,
            user_agent: Some("test".into()),
        }
    }

    #[tokio::test]
    async fn committed_writes_are_visible_to_a_new_connection() {
        let dir = tempdir();
        let path = dir.join("t.db");
        let store = Store::open(&path, Synchronous::Normal, Grouping::immediate(16)).unwrap();
        store
            .write(vec![
                Write::UpsertBinding(binding("a", 10_000)),
                Write::UpsertBinding(binding("b", 500)),
            ])
            .await
            .unwrap();
        let reader = open_read_only(&path).unwrap();
        let live = load_bindings(&reader, 1_000).unwrap();
        assert_eq!(live, vec![binding("a", 10_000)]);

        store
            .write(vec![Write::PurgeExpired { now_ms: 1_000 }])
            .await
            .unwrap();
        let all = load_bindings(&reader, 0).unwrap();
        assert_eq!(all.len(), 1);

        store
            .write(vec![Write::DeleteBinding {
                tenant: String::new(),
                extension: "100".into(),
                key: "a".into(),
            }])
            .await
            .unwrap();
        assert!(load_bindings(&reader, 0).unwrap().is_empty());
    }

    #[tokio::test]
    async fn generated_passwords_persist() {
        let dir = tempdir();
        let path = dir.join("t.db");
        let store = Store::open(
            &path,
            Synchronous::Full,
            Grouping {
                max: 16,
                target: 16,
                delay: Duration::from_millis(1),
            },
        )
        .unwrap();
        store
            .write(vec![Write::SetGeneratedPassword {
                tenant: "a.example".into(),
                extension: "100".into(),
                password: "pw".into(),
                created_at_ms: 5,
            }])
            .await
            .unwrap();
        let reader = store.reader().unwrap();
        assert_eq!(
            generated_password(&reader, "a.example", "100").unwrap(),
            Some("pw".into())
        );
        assert_eq!(generated_password(&reader, "", "100").unwrap(), None);
    }

    #[test]
    fn a_full_group_commits_without_waiting_out_the_delay() {
        let dir = tempdir();
        let grouping = Grouping {
            max: 64,
            target: 4,
            delay: Duration::from_secs(30),
        };
        let store = Store::open(&dir.join("t.db"), Synchronous::Normal, grouping).unwrap();
        let (tx, rx) = mpsc::channel();
        let started = Instant::now();
        for i in 0..4 {
            let tx = tx.clone();
            store.write_then(
                vec![Write::SetSetting {
                    name: format!("s{i}"),
                    value: "v".into(),
                    created_at_ms: 1,
                }],
                Box::new(move |result| tx.send(result).unwrap()),
            );
        }
        for _ in 0..4 {
            let result = rx.recv_timeout(Duration::from_secs(10));
            assert_eq!(result, Ok(Ok(())));
        }
        // Committed because the group filled, not because 30 s passed.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    fn cdr(call_id: &str, start_ms: u64) -> Cdr {
        crate::cdr::tests::cdr(call_id, start_ms)
    }

    #[tokio::test]
    async fn cdrs_round_trip_newest_first() {
        let dir = tempdir();
        let path = dir.join("t.db");
        assert_eq!(read_cdrs(&path, &CdrFilter::default()).unwrap(), vec![]);
        let store = Store::open(&path, Synchronous::Normal, Grouping::immediate(16)).unwrap();
        let first = cdr("c1", 1_000);
        let mut second = cdr("c2", 2_000);
        second.tenant = "a.example".into();
        second.caller_user_agent = None;
        second.answered_by = None;
        second.answer_ms = None;
        second.duration_ms = 0;
        second.disposition = Disposition::Cancelled;
        second.status = 487;
        // Same start as c2 but written later: listed before it.
        let mut third = cdr("c3", 2_000);
        third.caller_user_agent = Some("UA, \"quoted\"\nnext line \u{e9}".into());
        third.status = u16::MAX;
        third.end_ms = u64::MAX >> 1;
        store
            .write(vec![Write::InsertCdr(first.clone())])
            .await
            .unwrap();
        store
            .write(vec![
                Write::InsertCdr(second.clone()),
                Write::InsertCdr(third.clone()),
            ])
            .await
            .unwrap();
        let all = read_cdrs(&path, &CdrFilter::default()).unwrap();
        assert_eq!(all, vec![third, second, first]);
        // Through the store's own reader too.
        let reader = store.reader().unwrap();
        assert_eq!(load_cdrs(&reader, &CdrFilter::default()).unwrap(), all);
    }

    /// The database query against [`CdrFilter::matches`] and a sort, over
    /// many random records and filters.
    #[tokio::test]
    async fn cdr_filters_and_paging_agree_with_the_model() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(4);
        let dir = tempdir();
        let path = dir.join("t.db");
        let store = Store::open(&path, Synchronous::Normal, Grouping::immediate(64)).unwrap();
        let numbers = ["100", "101", "102", "600", "+4930123"];
        let tenants = ["", "a.example", "b.example"];
        let mut written = Vec::new();
        for i in 0..300 {
            let mut c = cdr(&format!("call-{i}"), rng.gen_range(0..50) * 1000);
            c.caller = numbers[rng.gen_range(0..numbers.len())].into();
            c.callee = numbers[rng.gen_range(0..numbers.len())].into();
            c.tenant = tenants[rng.gen_range(0..tenants.len())].into();
            c.disposition = Disposition::ALL[rng.gen_range(0..5)];
            written.push(c);
        }
        for chunk in written.chunks(37) {
            let writes = chunk.iter().cloned().map(Write::InsertCdr).collect();
            store.write(writes).await.unwrap();
        }
        // Newest first; the same start: the later insert first.
        let mut model: Vec<(usize, &Cdr)> = written.iter().enumerate().collect();
        model.sort_by_key(|(i, c)| std::cmp::Reverse((c.start_ms, *i)));

        let reader = store.reader().unwrap();
        for round in 0..400 {
            let some = |rng: &mut StdRng| rng.gen_bool(0.4);
            let filter = CdrFilter {
                since_ms: some(&mut rng).then(|| rng.gen_range(0..55) * 1000),
                until_ms: some(&mut rng).then(|| rng.gen_range(0..55) * 1000),
                extension: some(&mut rng).then(|| numbers[rng.gen_range(0..5)].into()),
                disposition: some(&mut rng).then(|| Disposition::ALL[rng.gen_range(0..5)]),
                tenant: some(&mut rng).then(|| tenants[rng.gen_range(0..3)].into()),
                limit: [0, 1, 5, 100][rng.gen_range(0..4)],
                offset: [0, 0, 3, 40][rng.gen_range(0..4)],
            };
            let expected: Vec<Cdr> = model
                .iter()
                .filter(|(_, c)| filter.matches(c))
                .skip(filter.offset)
                .take(if filter.limit == 0 {
                    usize::MAX
                } else {
                    filter.limit
                })
                .map(|(_, c)| (*c).clone())
                .collect();
            let got = load_cdrs(&reader, &filter).unwrap();
            assert_eq!(got, expected, "round {round}: {filter:?}");
        }
        // And the plain cases spelled out.
        let ext = |e: &str| CdrFilter {
            extension: Some(e.into()),
            limit: 0,
            ..CdrFilter::default()
        };
        let involving_600 = load_cdrs(&reader, &ext("600")).unwrap();
        assert!(involving_600
            .iter()
            .all(|c| c.caller == "600" || c.callee == "600"));
        assert!(involving_600.iter().any(|c| c.caller == "600"));
        assert!(involving_600.iter().any(|c| c.callee == "600"));
        let page = |offset| CdrFilter {
            limit: 7,
            offset,
            ..CdrFilter::default()
        };
        let pages: Vec<Cdr> = (0..50)
            .flat_map(|p| load_cdrs(&reader, &page(p * 7)).unwrap())
            .collect();
        assert_eq!(pages.len(), 300, "pages cover every record once");
        assert_eq!(
            pages,
            model.iter().map(|(_, c)| (*c).clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn cdr_extension_filter_uses_the_indexes() {
        let dir = tempdir();
        let conn = Connection::open(dir.join("t.db")).unwrap();
        schema::migrate(&conn).unwrap();
        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT * FROM cdrs WHERE (caller = ?1 OR callee = ?1) \
                 ORDER BY start_ms DESC, id DESC LIMIT 100",
            )
            .unwrap()
            .query_map(params!["101"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("cdrs_caller") && plan.contains("cdrs_callee"),
            "{plan}"
        );
    }

    #[test]
    fn an_unknown_disposition_in_the_database_is_an_error() {
        let dir = tempdir();
        let path = dir.join("t.db");
        let conn = Connection::open(&path).unwrap();
        schema::migrate(&conn).unwrap();
        conn.execute(
            "INSERT INTO cdrs (call_id, tenant, caller, caller_source, callee, route, start_ms, \
             end_ms, duration_ms, disposition, status) \
             VALUES ('c', '', '1', 's', '2', 'none', 1, 2, 0, 'voicemail', 200)",
            [],
        )
        .unwrap();
        let err = read_cdrs(&path, &CdrFilter::default()).unwrap_err();
        assert!(err.to_string().contains("\"voicemail\""), "{err}");
    }

    /// A database of schema version 2 (before CDRs) with a binding and a ban
    /// in it is migrated on open and keeps both.
    #[tokio::test]
    async fn a_version_2_database_migrates() {
        let dir = tempdir();
        let path = dir.join("t.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            schema::migrate_to(&conn, 2).unwrap();
            let version: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, 2);
            conn.execute(
                "INSERT INTO bindings (tenant, extension, key, contact, source, transport, \
                 call_id, cseq, expires_at_ms, registered_at_ms, user_agent) \
                 VALUES ('', '100', 'a', 'sip:100@127.0.0.1:a', '127.0.0.1:5062', 'UDP', \
                 'c1', 1, 10000, 1, 'test')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO bans (address, by_whom, reason, created_ms, until_ms) \
                 VALUES ('192.0.2.1', 'fail-to-ban', 'guessing', 1, 10000)",
                [],
            )
            .unwrap();
        }
        // Not migrated yet: no calls, and no error.
        assert_eq!(read_cdrs(&path, &CdrFilter::default()).unwrap(), vec![]);

        let store = Store::open(&path, Synchronous::Normal, Grouping::immediate(16)).unwrap();
        let reader = store.reader().unwrap();
        let version: i64 = reader
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 6);
        let expiry_index: i64 = reader
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'bindings_expiry'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(expiry_index, 0, "version 6 drops the expiry index");
        assert_eq!(
            load_bindings(&reader, 0).unwrap(),
            vec![binding("a", 10_000)]
        );
        assert_eq!(load_bans(&reader, 0).unwrap().len(), 1);
        store
            .write(vec![Write::InsertCdr(cdr("c1", 5))])
            .await
            .unwrap();
        assert_eq!(
            read_cdrs(&path, &CdrFilter::default()).unwrap(),
            vec![cdr("c1", 5)]
        );
        assert_eq!(setting(&reader, "api_token").unwrap(), None);
        store
            .write(vec![Write::SetSetting {
                name: "api_token".into(),
                value: "t".into(),
                created_at_ms: 1,
            }])
            .await
            .unwrap();
        assert_eq!(setting(&reader, "api_token").unwrap().as_deref(), Some("t"));
        // Version 5: the voicemail index (ids continue from the highest).
        assert_eq!(last_voicemail_id(&reader).unwrap(), 0);
        let message = StoredVoicemail {
            id: 7,
            tenant: String::new(),
            mailbox: "101".into(),
            caller: "100".into(),
            caller_name: Some("Bob".into()),
            call_id: "c7".into(),
            received_ms: 1_000,
            duration_ms: 4_200,
            file: "/vm/default/101/7.wav".into(),
            ended_by: "hangup".into(),
            mail_message_id: None,
            mail_state: None,
        };
        store
            .write(vec![
                Write::InsertVoicemail(message.clone()),
                Write::SetVoicemailMail {
                    id: 7,
                    message_id: "<m7@sipfence.test>".into(),
                },
            ])
            .await
            .unwrap();
        assert_eq!(last_voicemail_id(&reader).unwrap(), 7);
        let stored = voicemail(&reader, 7).unwrap().unwrap();
        assert_eq!(
            stored.mail_message_id.as_deref(),
            Some("<m7@sipfence.test>")
        );
        // No such mail in the queue: no state to show.
        assert_eq!(stored.mail_state, None);
        assert_eq!(
            load_voicemails(&reader, "", Some("101"), 0).unwrap().len(),
            1
        );
        assert!(load_voicemails(&reader, "", Some("100"), 0)
            .unwrap()
            .is_empty());
        // Migrating again changes nothing.
        let again = Connection::open(&path).unwrap();
        schema::migrate(&again).unwrap();
        assert_eq!(load_cdrs(&again, &CdrFilter::default()).unwrap().len(), 1);
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sipfence-store-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
