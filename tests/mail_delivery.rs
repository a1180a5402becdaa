//! End to end: the queue, the worker and lettre against a real SMTP server,
//! the kit's aiosmtpd sink (`tests/smtp_sink.py`, needs `aiosmtpd`), on
//! loopback. Each test has its own temp dir, database and port.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use sipfence::mail::{
    Attachment, MailQueue, MailSettings, MailState, MailSummary, Mailer, OutgoingMail, Security,
    SmtpServer, MAIL_QUEUE_DDL,
};

use common::smtp::{free_tcp_port, SmtpSink};
use common::TempDir;
use sipfence::now_ms;

/// A fresh database file with the mail table, and a queue on it.
fn open_queue(dir: &Path) -> (PathBuf, Arc<MailQueue>) {
    let db = dir.join("gateway.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(MAIL_QUEUE_DDL)
        .unwrap();
    let queue = MailQueue::open(&db, "voicemail@sipfence.test").unwrap();
    (db, Arc::new(queue))
}

fn settings(port: Option<u16>) -> MailSettings {
    MailSettings {
        server: port.map(|port| SmtpServer {
            host: "127.0.0.1".to_owned(),
            port,
            security: Security::None,
            hello_name: Some("sipfence.test".to_owned()),
            ..SmtpServer::default()
        }),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        ..MailSettings::default()
    }
}

/// A valid 8 kHz mono 16-bit WAV of `samples` samples; the samples run
/// through every byte value.
fn write_wav(path: &Path, samples: u32) -> Vec<u8> {
    let data_len = samples * 2;
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes()); // byte rate
    wav.extend_from_slice(&2u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        wav.extend_from_slice(&((i.wrapping_mul(257) % 65536) as u16).to_le_bytes());
    }
    std::fs::write(path, &wav).unwrap();
    wav
}

fn voicemail(to: &str) -> OutgoingMail {
    OutgoingMail {
        to: vec![to.to_owned()],
        subject: "New voicemail from 1001".to_owned(),
        body: "You have a new voicemail (12 s).".to_owned(),
        source: "voicemail".to_owned(),
        ..OutgoingMail::default()
    }
}

fn row(queue: &MailQueue, id: i64) -> MailSummary {
    queue
        .list(100)
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap()
}

/// Polls `cond` every 10 ms until it holds or `secs` pass.
async fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of header `name` in the top-level header block of `eml`.
fn header<'a>(eml: &'a str, name: &str) -> Option<&'a str> {
    let head = eml.split("\r\n\r\n").next()?;
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// The decoded body of the base64 MIME part whose headers mention
/// `attachment`.
fn attachment_bytes(eml: &str) -> Vec<u8> {
    let start = eml
        .find("Content-Disposition: attachment")
        .expect("an attachment");
    let part = &eml[start..];
    let body_start = part.find("\r\n\r\n").unwrap() + 4;
    let body = &part[body_start..];
    let body = &body[..body.find("\r\n--").unwrap()];
    let b64: String = body.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_mail_with_the_wav_attached() {
    let tmp = TempDir::new("deliver");
    let port = free_tcp_port();
    let sink = SmtpSink::start(port, &tmp.0.join("sink"));
    let (_db, queue) = open_queue(&tmp.0);
    let wav_path = tmp.0.join("msg0001.wav");
    let wav = write_wav(&wav_path, 4000);
    let mailer = Mailer::spawn(queue.clone(), settings(Some(port)));

    let mut mail = voicemail("Alice <alice@example.com>");
    mail.attachment = Some(Attachment::wav(wav_path.to_string_lossy(), "msg0001.wav"));
    let queued = mailer.enqueue(mail).await.unwrap();
    wait_for(15, "mail sent", || {
        row(&queue, queued.id).state == MailState::Sent
    })
    .await;

    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    let eml = &msgs[0];
    assert_eq!(header(eml, "X-Sink-Rcpt-To"), Some("alice@example.com"));
    assert_eq!(
        header(eml, "X-Sink-Mail-From"),
        Some("voicemail@sipfence.test")
    );
    assert_eq!(header(eml, "To"), Some("Alice <alice@example.com>"));
    assert_eq!(header(eml, "Subject"), Some("New voicemail from 1001"));
    assert_eq!(header(eml, "Message-ID"), Some(queued.message_id.as_str()));
    assert!(eml.contains("Content-Type: audio/wav"), "{eml}");
    assert!(eml.contains("filename=\"msg0001.wav\""), "{eml}");
    assert!(eml.contains("You have a new voicemail (12 s)."));
    assert_eq!(attachment_bytes(eml), wav);

    let r = row(&queue, queued.id);
    assert_eq!(r.attempts, 1);
    assert!(r.sent_ms.is_some());
    assert_eq!(queue.depth().unwrap(), 0);
    // The counter moves just after the row is written.
    let sent = &mailer.stats().sent;
    wait_for(5, "sent counter", || {
        sent.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    mailer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_recording_still_sends_the_notification() {
    let tmp = TempDir::new("missing");
    let port = free_tcp_port();
    let sink = SmtpSink::start(port, &tmp.0.join("sink"));
    let (_db, queue) = open_queue(&tmp.0);
    let mailer = Mailer::spawn(queue.clone(), settings(Some(port)));
    let mut mail = voicemail("bob@example.com");
    let gone = tmp.0.join("deleted.wav");
    mail.attachment = Some(Attachment::wav(gone.to_string_lossy(), "deleted.wav"));
    let queued = mailer.enqueue(mail).await.unwrap();
    wait_for(15, "mail sent", || {
        row(&queue, queued.id).state == MailState::Sent
    })
    .await;
    let eml = &sink.messages()[0];
    assert_eq!(header(eml, "Message-ID"), Some(queued.message_id.as_str()));
    assert!(
        eml.contains("recording file deleted.wav could not be read"),
        "{eml}"
    );
    mailer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_retries_with_backoff_then_delivers() {
    let tmp = TempDir::new("down");
    let port = free_tcp_port(); // nothing listens yet
    let (_db, queue) = open_queue(&tmp.0);
    let mailer = Mailer::spawn(queue.clone(), settings(Some(port)));
    let queued = mailer
        .enqueue(voicemail("carol@example.com"))
        .await
        .unwrap();

    // Watch the row: each new attempt moves next_attempt_ms further out,
    // never more than retry_max (200 ms) after the failure.
    let mut seen: Vec<(u32, u64)> = Vec::new();
    wait_for(15, "five failed tries", || {
        let r = row(&queue, queued.id);
        assert_eq!(r.state, MailState::Queued);
        if r.attempts > 0 && seen.last().map(|s| s.0) != Some(r.attempts) {
            let now = now_ms();
            assert!(
                r.next_attempt_ms <= now + 200,
                "next try {} ms out",
                r.next_attempt_ms - now
            );
            assert!(r.last_error.as_deref().is_some_and(|e| !e.is_empty()));
            seen.push((r.attempts, r.next_attempt_ms));
        }
        r.attempts >= 5
    })
    .await;
    assert!(
        seen.windows(2).all(|w| w[1].1 > w[0].1),
        "next_attempt_ms moves out: {seen:?}"
    );
    // The counter moves just after the row is written.
    let retried = &mailer.stats().retried;
    wait_for(5, "retry counter", || {
        retried.load(std::sync::atomic::Ordering::Relaxed) >= 5
    })
    .await;
    // Spacing grows: after try k the next is due backoff(k-1) = 20 × 2^(k-1)
    // ms later (±10 %, at most 200), and try k+1 happens no earlier than
    // that; so between two observed rows the due time moved at least the
    // sum of the delays in between.
    for w in seen.windows(2) {
        let ((a1, n1), (a2, n2)) = (w[0], w[1]);
        let min: u64 = (a1..a2).map(|k| (20u64 << k).min(200) * 9 / 10).sum();
        assert!(n2 - n1 >= min, "{seen:?}");
    }

    let sink = SmtpSink::start(port, &tmp.0.join("sink"));
    wait_for(15, "mail sent after the server came up", || {
        row(&queue, queued.id).state == MailState::Sent
    })
    .await;
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        header(&msgs[0], "Message-ID"),
        Some(queued.message_id.as_str())
    );
    mailer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_queued_mail_with_the_same_message_id() {
    let tmp = TempDir::new("restart");
    let port = free_tcp_port();
    let sink = SmtpSink::start(port, &tmp.0.join("sink"));
    let (db, queue) = open_queue(&tmp.0);
    let wav_path = tmp.0.join("vm.wav");
    let wav = write_wav(&wav_path, 800);

    // First run: mail off (no server). The mail is queued and stays so.
    let mailer = Mailer::spawn(queue.clone(), settings(None));
    let mut mail = voicemail("dave@example.com");
    mail.attachment = Some(Attachment::wav(wav_path.to_string_lossy(), "vm.wav"));
    let queued = mailer.enqueue(mail).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(row(&queue, queued.id).state, MailState::Queued);
    assert_eq!(row(&queue, queued.id).attempts, 0);
    mailer.shutdown().await;
    drop(queue);

    // Second run: a new connection on the same file, a worker with a server.
    let queue = Arc::new(MailQueue::open(&db, "voicemail@sipfence.test").unwrap());
    assert_eq!(queue.depth().unwrap(), 1);
    let mailer = Mailer::spawn(queue.clone(), settings(Some(port)));
    wait_for(15, "queued mail sent after restart", || {
        row(&queue, queued.id).state == MailState::Sent
    })
    .await;
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        header(&msgs[0], "Message-ID"),
        Some(queued.message_id.as_str())
    );
    assert_eq!(attachment_bytes(&msgs[0]), wav);
    drop(mailer); // dropping the handle stops the worker too
}
