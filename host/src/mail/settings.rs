//! The `[mail]` settings: the system-wide SMTP server and the retry policy.
//!
//! Mail is off until `server` is set: mail is still queued (and kept), but no
//! worker talks SMTP.

use std::time::Duration;

/// How mail is sent, and how hard the worker tries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailSettings {
    /// The SMTP server every mail goes through; `None` keeps mail queued
    /// (mail off).
    pub server: Option<SmtpServer>,
    /// The From address of mail whose sender did not name one.
    pub from: String,
    /// The delay before the first retry; doubled on each further failure.
    pub retry_initial: Duration,
    /// The longest delay between two tries, whatever the attempt count.
    pub retry_max: Duration,
    /// The longest one SMTP session (connect to QUIT) may take; a session
    /// cut by it is a transient failure.
    pub timeout: Duration,
    /// How many permanent (5xx) answers a mail gets before it is marked
    /// `failed`: the Nth 5xx fails it (0 counts as 1). A failed mail is kept
    /// and can be re-queued with `MailQueue::retry_now`.
    pub permanent_failure_attempts: u32,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            server: None,
            from: "voicemail@localhost".to_owned(),
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(30),
            permanent_failure_attempts: 3,
        }
    }
}

/// One SMTP server (the submission service of a relay).
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpServer {
    /// Host name (checked against the certificate in the TLS modes) or
    /// address.
    pub host: String,
    /// TCP port: usually 587 for STARTTLS, 465 for TLS, 25 for none.
    pub port: u16,
    /// Whether and how the session is encrypted.
    pub security: Security,
    /// Login name; no login when unset.
    pub username: Option<String>,
    /// Login password; used only with `username`.
    pub password: Option<String>,
    /// The name we give in EHLO; lettre's default (the local host name)
    /// when unset.
    pub hello_name: Option<String>,
}

impl Default for SmtpServer {
    fn default() -> Self {
        Self {
            host: "localhost".to_owned(),
            port: 587,
            security: Security::StartTls,
            username: None,
            password: None,
            hello_name: None,
        }
    }
}

// Hand-written so that the password never reaches a log line.
impl std::fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("hello_name", &self.hello_name)
            .finish()
    }
}

/// Transport security of the SMTP session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Security {
    /// Plain text all the way (a relay on loopback, tests).
    None,
    /// Plain connect, then STARTTLS, required (RFC 3207): no mail or login
    /// goes out if the upgrade fails.
    #[default]
    StartTls,
    /// TLS from the first byte ("implicit TLS", RFC 8314).
    Tls,
}
