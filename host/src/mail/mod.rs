//! # Outgoing mail
//!
//! Voicemail notifications (and mail from plugins) go out over SMTP from a
//! queue kept in SQLite, by one background task, so sending never blocks
//! call handling and a slow or absent mail server only delays mail.
//!
//! ## Layout
//! - [`settings`]: the `[mail]` settings; mail is off until a server is set.
//! - [`queue`]: the `mail_queue` table ([`MAIL_QUEUE_DDL`]) and its
//!   operations: enqueue, due, mark_*, list, retry_now.
//! - [`sender`]: one SMTP try with lettre (message, transport, outcome) and
//!   the backoff arithmetic.
//! - [`worker`]: the task that drains the queue ([`Mailer::spawn`]).
//! - [`service`]: `mail.send` of plugins into the queue, and `[mail]` into
//!   [`MailSettings`].
//!
//! ## Never lost, delivered at least once
//! [`MailQueue::enqueue`] returns only after the row is committed, so from
//! then on a crash cannot lose the mail. A row becomes `sent` only after the
//! SMTP server has accepted the message (its reply to DATA), and in a
//! separate write after that. A crash, a shutdown or a database error in
//! between leaves the row `queued`, and it is sent again: delivery is at
//! least once, never at most once. A mail that keeps being refused (5xx) is
//! marked `failed` but kept; [`MailQueue::retry_now`] queues it again.
//!
//! ## Why the Message-ID is fixed at enqueue time
//! The Message-ID (`<random-hex.unix-ms@sender-domain>`) is made once and
//! stored with the row; every try sends it, and the same Date (the queueing
//! time). A duplicate from the at-least-once rule is therefore the same
//! message to the recipient's server and mail client, which can recognise
//! (and often drop) it. Were it made per try, a duplicate would look like
//! a second, different message.
//!
//! The attachment (the voicemail WAV) is read from its path at send time; if
//! the file is gone the mail still goes, saying so in its body.

pub mod error;
pub mod queue;
pub mod sender;
pub mod service;
pub mod settings;
pub mod worker;

pub use error::{MailError, Result};
pub use queue::{
    Attachment, MailQueue, MailState, MailSummary, OutgoingMail, PendingMail, QueuedMail,
    MAIL_QUEUE_DDL,
};
pub use settings::{MailSettings, Security, SmtpServer};
pub use worker::{MailStats, Mailer, MailerHandle};
