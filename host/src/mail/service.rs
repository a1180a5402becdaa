//! The gateway's mail queue as plugins see it (`mail.send`, granted by
//! `grants = ["mail"]`), and the `[mail]` config turned into settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Attachment, MailSettings, MailerHandle, OutgoingMail, Security, SmtpServer};
use crate::config::{Mail, MailSecurity};
use crate::plugins::{MailService, PluginMail};
use crate::store::{self, Store, Write};

/// Plugins' mail into the queue; a voicemail named as the attachment is
/// looked up in the index, so a plugin attaches recordings by id and can
/// never name a file of its own.
pub struct PluginMailer {
    pub mailer: Arc<MailerHandle>,
    pub store: Store,
    pub database: PathBuf,
}

impl MailService for PluginMailer {
    fn send(&self, plugin: &str, mail: PluginMail) -> Result<String, String> {
        let attachment = match mail.voicemail {
            Some(id) => {
                let conn = store::open_read_only(&self.database).map_err(|e| e.to_string())?;
                let voicemail = store::voicemail(&conn, id)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no voicemail {id}"))?;
                Some(Attachment::wav(
                    voicemail.file,
                    format!("voicemail-{}-{id}.wav", voicemail.mailbox),
                ))
            }
            None => None,
        };
        let queued = self
            .mailer
            .queue()
            .enqueue(OutgoingMail {
                from: mail.from,
                to: mail.to,
                subject: mail.subject,
                body: mail.body,
                attachment,
                source: plugin.to_owned(),
            })
            .map_err(|e| e.to_string())?;
        self.mailer.notify();
        if let Some(id) = mail.voicemail {
            self.store.write_detached(vec![Write::SetVoicemailMail {
                id,
                message_id: queued.message_id.clone(),
            }]);
        }
        tracing::info!(plugin, message_id = %queued.message_id, "mail queued");
        Ok(queued.message_id)
    }
}

/// `[mail]` as the worker takes it.
pub fn settings(mail: &Mail) -> MailSettings {
    let security = match mail.security {
        MailSecurity::None => Security::None,
        MailSecurity::Starttls => Security::StartTls,
        MailSecurity::Tls => Security::Tls,
    };
    let default_port = match security {
        Security::None => 25,
        Security::StartTls => 587,
        Security::Tls => 465,
    };
    MailSettings {
        server: mail.smtp_host.as_ref().map(|host| SmtpServer {
            host: host.clone(),
            port: mail.smtp_port.unwrap_or(default_port),
            security,
            username: mail.username.clone(),
            password: mail.password.clone(),
            hello_name: mail.hello_name.clone(),
        }),
        from: mail.from.clone(),
        retry_initial: Duration::from_millis(mail.retry_initial_ms),
        retry_max: Duration::from_millis(mail.retry_max_ms),
        timeout: Duration::from_millis(mail.timeout_ms),
        permanent_failure_attempts: mail.permanent_failure_attempts,
    }
}
