//! One SMTP try: the lettre message built from a queued row, the transport
//! built from the settings, and what the outcome means for the queue.

use std::time::{Duration, UNIX_EPOCH};

use lettre::message::header::ContentType;
use lettre::message::{Attachment as MimeAttachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rand::Rng;

use crate::mail::queue::PendingMail;
use crate::mail::settings::{Security, SmtpServer};

/// The lettre transport the worker sends with (no pool: one session per
/// mail).
pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// What one try came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server accepted the mail (a 2xx after DATA).
    Sent,
    /// Worth trying again as it is: no connection, timeout, TLS, 4xx.
    Transient(String),
    /// The server answered 5xx (RFC 5321 4.2.1); retried a few times all
    /// the same (a misconfigured relay is often fixed), then failed.
    Permanent(String),
    /// The stored row cannot become a message (should not happen: enqueue
    /// validates); failed at once.
    Unsendable(String),
}

/// Builds the transport for `server`; `timeout` bounds each SMTP command
/// (the worker also bounds the whole session with it).
pub fn transport(server: &SmtpServer, timeout: Duration) -> Result<Transport, String> {
    let builder = match server.security {
        Security::None => Transport::builder_dangerous(&server.host),
        Security::StartTls => Transport::starttls_relay(&server.host).map_err(|e| e.to_string())?,
        Security::Tls => Transport::relay(&server.host).map_err(|e| e.to_string())?,
    };
    let mut builder = builder.port(server.port).timeout(Some(timeout));
    if let Some(user) = &server.username {
        let password = server.password.clone().unwrap_or_default();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    if let Some(name) = &server.hello_name {
        builder = builder.hello_name(ClientId::Domain(name.clone()));
    }
    Ok(builder.build())
}

/// Sends `mail` once through `transport`, the whole session bounded by
/// `timeout`. The message is read, encoded and formatted on a blocking
/// thread: base64 of a 2-minute recording is milliseconds of CPU that must
/// not hold up the runtime's workers, which also run SIP over TCP, timers
/// and voicemail media.
pub async fn send(transport: &Transport, mail: &PendingMail, timeout: Duration) -> Outcome {
    let pending = mail.clone();
    let built = tokio::task::spawn_blocking(move || {
        build_message(&pending).map(|m| (m.envelope().clone(), m.formatted()))
    })
    .await;
    let (envelope, raw) = match built {
        Ok(Ok(built)) => built,
        Ok(Err(e)) => return Outcome::Unsendable(e),
        Err(e) => return Outcome::Transient(format!("building the message failed: {e}")),
    };
    match tokio::time::timeout(timeout, transport.send_raw(&envelope, &raw)).await {
        Err(_) => Outcome::Transient(format!("SMTP session timed out after {timeout:?}")),
        Ok(Ok(_response)) => Outcome::Sent,
        Ok(Err(e)) if e.is_permanent() => Outcome::Permanent(e.to_string()),
        Ok(Err(e)) => Outcome::Transient(e.to_string()),
    }
}

/// The message for `mail`: its stored Message-ID and Date (so every try is
/// the same message), and the attachment read now. A missing or unreadable
/// attachment does not stop the mail: the body says so instead. Blocking
/// (it reads the file).
pub fn build_message(mail: &PendingMail) -> Result<Message, String> {
    let mailbox = |s: &str| {
        s.parse::<Mailbox>()
            .map_err(|e| format!("address {s:?}: {e}"))
    };
    let mut builder = Message::builder()
        .from(mailbox(&mail.from)?)
        .subject(mail.subject.clone())
        .date(UNIX_EPOCH + Duration::from_millis(mail.created_ms))
        .message_id(Some(mail.message_id.clone()));
    for to in &mail.to {
        builder = builder.to(mailbox(to)?);
    }
    let Some(attachment) = &mail.attachment else {
        return builder
            .singlepart(SinglePart::plain(mail.body.clone()))
            .map_err(|e| e.to_string());
    };
    match std::fs::read(&attachment.path) {
        Ok(bytes) => {
            let content_type = ContentType::parse(&attachment.content_type)
                .or_else(|_| ContentType::parse("application/octet-stream"))
                .map_err(|e| e.to_string())?;
            let file = MimeAttachment::new(attachment.name.clone()).body(bytes, content_type);
            builder
                .multipart(
                    MultiPart::mixed()
                        .singlepart(SinglePart::plain(mail.body.clone()))
                        .singlepart(file),
                )
                .map_err(|e| e.to_string())
        }
        Err(e) => {
            tracing::warn!(
                id = mail.id,
                message_id = %mail.message_id,
                path = %attachment.path,
                error = %e,
                "mail attachment unreadable; sending the mail without it"
            );
            let body = format!(
                "{}\n\n[The recording file {} could not be read ({e}); it is not attached.]\n",
                mail.body.trim_end(),
                attachment.name
            );
            builder
                .singlepart(SinglePart::plain(body))
                .map_err(|e| e.to_string())
        }
    }
}

/// The delay before the next try after a failure, without jitter:
/// `initial × 2^attempts` (attempts = tries before this one, so the first
/// retry waits `initial`), capped at `max`.
pub fn backoff(initial: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 2u32.checked_pow(attempts).unwrap_or(u32::MAX);
    initial.checked_mul(factor).unwrap_or(max).min(max)
}

/// `delay` moved by up to ±10 % at random (so mails that failed together
/// do not retry together), still at most `max`.
pub fn jitter(delay: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    delay.mul_f64(rng.gen_range(0.9..=1.1)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::queue::Attachment;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_from_initial_and_stops_at_the_cap() {
        let (initial, max) = (20 * MS, 200 * MS);
        let got: Vec<_> = (0..6).map(|a| backoff(initial, max, a)).collect();
        assert_eq!(
            got,
            [20 * MS, 40 * MS, 80 * MS, 160 * MS, 200 * MS, 200 * MS]
        );
        // Defaults: 30 s, 1 min, ... capped at 1 h; no overflow however many.
        let (initial, max) = (Duration::from_secs(30), Duration::from_secs(3600));
        assert_eq!(backoff(initial, max, 2), Duration::from_secs(120));
        assert_eq!(backoff(initial, max, 7), max);
        assert_eq!(backoff(initial, max, 31), max);
        assert_eq!(backoff(initial, max, u32::MAX), max);
        assert_eq!(backoff(Duration::ZERO, max, 10), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_within_ten_percent_and_the_cap() {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let d = jitter(100 * MS, Duration::from_secs(1), &mut rng);
            assert!(d >= 90 * MS && d <= 110 * MS, "{d:?}");
            assert!(jitter(200 * MS, 200 * MS, &mut rng) <= 200 * MS);
        }
    }

    #[test]
    fn transports_build_for_every_security_mode() {
        for security in [Security::None, Security::StartTls, Security::Tls] {
            let server = SmtpServer {
                host: "localhost".to_owned(),
                port: 2525,
                security,
                username: Some("vm".to_owned()),
                password: Some("secret".to_owned()),
                hello_name: Some("gw.example.com".to_owned()),
            };
            assert!(
                transport(&server, Duration::from_secs(1)).is_ok(),
                "{security:?}"
            );
        }
    }

    fn pending(attachment: Option<Attachment>) -> PendingMail {
        PendingMail {
            id: 7,
            message_id: "<abc.1@example.com>".to_owned(),
            created_ms: 1_700_000_000_000,
            from: "voicemail@example.com".to_owned(),
            to: vec!["Alice <alice@example.com>".to_owned()],
            subject: "Voicemail".to_owned(),
            body: "Hello".to_owned(),
            attachment,
            attempts: 0,
            rejections: 0,
        }
    }

    #[tokio::test]
    async fn message_carries_the_stored_id_and_date() {
        let text = String::from_utf8(build_message(&pending(None)).unwrap().formatted()).unwrap();
        assert!(
            text.contains("Message-ID: <abc.1@example.com>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"),
            "{text}"
        );
        assert!(text.contains("To: Alice <alice@example.com>\r\n"), "{text}");
    }

    #[tokio::test]
    async fn missing_attachment_is_said_in_the_body() {
        let gone = Attachment::wav("/nonexistent/sipfence/vm.wav", "vm.wav");
        let text =
            String::from_utf8(build_message(&pending(Some(gone))).unwrap().formatted()).unwrap();
        assert!(
            text.contains("recording file vm.wav could not be read"),
            "{text}"
        );
        assert!(!text.contains("multipart"), "{text}");
    }
}
