//! The mail worker: one tokio task that drains the queue.
//!
//! Loop: take a batch of due mails, send them one at a time, record each
//! outcome, then sleep until the next mail is due, a `notify` (new mail) or
//! shutdown. Every SQLite call runs in `spawn_blocking`, so a busy database
//! never stalls the runtime that carries calls; the queue's mutex is never
//! held across an await.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::mail::error::{MailError, Result};
use crate::mail::queue::{MailQueue, OutgoingMail, PendingMail, QueuedMail};
use crate::mail::sender::{self, Outcome, Transport};
use crate::mail::settings::MailSettings;
use crate::now_ms;

/// Mails taken from the queue per round.
const BATCH: usize = 32;
/// The longest sleep with nothing due: a safety net for mail queued by
/// another connection without a `notify`.
const IDLE_MAX: Duration = Duration::from_secs(60);
/// The pause after a database error, so a broken database is not hammered.
const DB_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Counters for metrics; they only grow.
#[derive(Debug, Default)]
pub struct MailStats {
    /// Mails the server accepted.
    pub sent: AtomicU64,
    /// Failed tries that were rescheduled.
    pub retried: AtomicU64,
    /// Mails given up (`failed`).
    pub failed: AtomicU64,
}

/// The mail worker; see `Mailer::spawn`.
pub struct Mailer {
    queue: Arc<MailQueue>,
    settings: MailSettings,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    stats: Arc<MailStats>,
}

/// Controls a running worker. Dropping it stops the worker (as `shutdown`
/// does, without waiting).
pub struct MailerHandle {
    queue: Arc<MailQueue>,
    wake: Arc<Notify>,
    shutdown: watch::Sender<bool>,
    stats: Arc<MailStats>,
    task: Option<JoinHandle<()>>,
}

impl Mailer {
    /// Starts the worker on the current tokio runtime. It first sends
    /// whatever is queued and due (mail left by an earlier run).
    pub fn spawn(queue: Arc<MailQueue>, settings: MailSettings) -> MailerHandle {
        let wake = Arc::new(Notify::new());
        let stats = Arc::new(MailStats::default());
        let (shutdown_tx, shutdown) = watch::channel(false);
        let mailer = Mailer {
            queue: queue.clone(),
            settings,
            wake: wake.clone(),
            shutdown,
            stats: stats.clone(),
        };
        let task = tokio::spawn(mailer.run());
        MailerHandle {
            queue,
            wake,
            shutdown: shutdown_tx,
            stats,
            task: Some(task),
        }
    }

    async fn run(mut self) {
        let Some(server) = self.settings.server.clone() else {
            tracing::info!("mail is off (no SMTP server configured); mail stays queued");
            self.stopped().await;
            return;
        };
        let transport = match sender::transport(&server, self.settings.timeout) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(host = %server.host, error = %e, "mail transport unusable; mail stays queued");
                self.stopped().await;
                return;
            }
        };
        tracing::info!(host = %server.host, port = server.port, security = ?server.security, "mail worker started");
        while !self.is_stopping() {
            let wait = match self.round(&transport).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::error!(error = %e, "mail queue");
                    DB_ERROR_PAUSE
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = self.shutdown.changed() => {}
            }
        }
        tracing::info!("mail worker stopped");
    }

    /// Sends one batch of due mail; answers how long to sleep.
    async fn round(&mut self, transport: &Transport) -> Result<Duration> {
        let batch = blocking(&self.queue, |q| q.due(now_ms(), BATCH)).await?;
        let full = batch.len() == BATCH;
        for mail in batch {
            let outcome = tokio::select! {
                o = sender::send(transport, &mail, self.settings.timeout) => o,
                // Cut short: the row stays queued and is tried again on the
                // next start (at worst a duplicate with the same Message-ID).
                _ = self.shutdown.changed() => return Ok(Duration::ZERO),
            };
            self.record(&mail, outcome).await?;
            if self.is_stopping() {
                return Ok(Duration::ZERO);
            }
        }
        if full {
            return Ok(Duration::ZERO);
        }
        let next = blocking(&self.queue, |q| q.next_due_ms()).await?;
        Ok(match next {
            Some(at) => Duration::from_millis(at.saturating_sub(now_ms())).min(IDLE_MAX),
            None => IDLE_MAX,
        })
    }

    /// Writes the outcome of one try to the queue and the counters.
    async fn record(&self, mail: &PendingMail, outcome: Outcome) -> Result<()> {
        let (id, now) = (mail.id, now_ms());
        let s = &self.settings;
        let next = || {
            let delay = sender::backoff(s.retry_initial, s.retry_max, mail.attempts);
            let delay = sender::jitter(delay, s.retry_max, &mut rand::thread_rng());
            now.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
        };
        let span = tracing::info_span!("mail", id, message_id = %mail.message_id);
        let _enter = span.enter();
        match outcome {
            Outcome::Sent => {
                blocking(&self.queue, move |q| q.mark_sent(id, now)).await?;
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                tracing::info!(to = ?mail.to, "mail sent");
            }
            Outcome::Transient(error) => {
                let at = next();
                tracing::warn!(%error, attempts = mail.attempts + 1, retry_in_ms = at - now, "mail try failed; will retry");
                blocking(&self.queue, move |q| q.mark_retry(id, &error, at)).await?;
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Permanent(error) if mail.rejections + 1 < s.permanent_failure_attempts => {
                let at = next();
                tracing::warn!(%error, rejections = mail.rejections + 1, retry_in_ms = at - now, "mail refused; will retry");
                blocking(&self.queue, move |q| q.mark_rejected(id, &error, at)).await?;
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Permanent(error) | Outcome::Unsendable(error) => {
                tracing::error!(%error, "mail failed; kept as failed");
                blocking(&self.queue, move |q| q.mark_failed(id, &error)).await?;
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn is_stopping(&self) -> bool {
        // A dropped handle (closed channel) means stop too.
        *self.shutdown.borrow() || self.shutdown.has_changed().is_err()
    }

    async fn stopped(&mut self) {
        while !self.is_stopping() {
            if self.shutdown.changed().await.is_err() {
                break;
            }
        }
    }
}

impl MailerHandle {
    /// Queues `mail` (committed when this returns) and wakes the worker.
    /// The SQLite insert runs off the async threads.
    pub async fn enqueue(&self, mail: OutgoingMail) -> Result<QueuedMail> {
        let queued = blocking(&self.queue, move |q| q.enqueue(mail)).await?;
        self.notify();
        Ok(queued)
    }

    /// Wakes the worker: call after queueing (or `retry_now`) directly on
    /// the `MailQueue`.
    pub fn notify(&self) {
        // notify_one keeps a permit when the worker is busy, so no wake-up
        // is lost.
        self.wake.notify_one();
    }

    /// The queue the worker drains.
    pub fn queue(&self) -> &Arc<MailQueue> {
        &self.queue
    }

    /// The worker's counters.
    pub fn stats(&self) -> &MailStats {
        &self.stats
    }

    /// Stops the worker and waits for it. A send in progress is cut; that
    /// mail stays queued.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "mail worker task ended abnormally");
            }
        }
    }
}

impl Drop for MailerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Runs `f` on the queue on a blocking thread.
async fn blocking<T, F>(queue: &Arc<MailQueue>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&MailQueue) -> Result<T> + Send + 'static,
{
    let queue = queue.clone();
    tokio::task::spawn_blocking(move || f(&queue))
        .await
        .map_err(|e| MailError::Task(e.to_string()))?
}
