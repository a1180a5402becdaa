//! One voicemail call as a user agent server: the 200 OK and its
//! retransmissions, the recording, our BYE, then the index row, the CDR and
//! the events.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::{Deposit, Voicemail};
use crate::cdr::{Cdr, Disposition};
use crate::media::session::{record, EndReason, MediaParams, RecordLimits, Recording};
use crate::media::{sdp, LocalMedia};
use crate::now_ms;
use crate::plugins::Event;
use crate::proxy::forward;
use crate::server::Core;
use crate::sip::{Contact, Message};
use crate::stats::Stats;
use crate::store::{StoredVoicemail, Write};
use crate::transaction::Key;
use crate::transport::{Source, Transport};

/// The Via branch prefix of our own BYEs: their responses come back to
/// [`Voicemail::on_response`], not to the router.
pub const BRANCH_PREFIX: &str = "z9hG4bKsfvm";

/// The SIP state of one voicemail call, shared by its task and the request
/// threads (BYE, ACK, re-INVITE).
pub(super) struct Session {
    pub call_id: String,
    /// Our To tag.
    pub local_tag: String,
    /// The caller's From tag.
    pub remote_tag: String,
    pub caller: Source,
    /// The SDP answer, once sent (a re-INVITE gets it again).
    answer: Mutex<Option<String>>,
    acked: AtomicBool,
    ack: Notify,
    bye_answer: Notify,
    hangup: watch::Sender<bool>,
    /// The gateway is stopping: the message ends now and we hang up.
    stopping: AtomicBool,
}

impl Session {
    pub fn new(call_id: String, remote_tag: String, caller: Source) -> Session {
        Session {
            call_id,
            local_tag: format!("{:016x}", rand::random::<u64>()),
            remote_tag,
            caller,
            answer: Mutex::new(None),
            acked: AtomicBool::new(false),
            ack: Notify::new(),
            bye_answer: Notify::new(),
            hangup: watch::channel(false).0,
            stopping: AtomicBool::new(false),
        }
    }

    pub fn hang_up(&self) {
        self.hangup.send_replace(true);
    }

    /// Ends the recording because the gateway stops: what was said is kept
    /// and the caller gets our BYE.
    pub fn stop_for_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.hang_up();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn acked(&self) {
        self.acked.store(true, Ordering::Release);
        self.ack.notify_one();
    }

    pub fn bye_answered(&self) {
        self.bye_answer.notify_one();
    }

    pub fn answer_sdp(&self) -> Option<String> {
        self.answer.lock().unwrap().clone()
    }
}

/// Everything one call's task needs.
pub(super) struct Call {
    pub core: Arc<Core>,
    pub service: Arc<Voicemail>,
    pub session: Arc<Session>,
    /// The caller's INVITE (with `received`/`rport` marked).
    pub request: Message,
    pub key: Key,
    pub offer: sdp::SessionDescription,
    pub negotiated: sdp::Negotiated,
    /// Our address facing the caller: RTP is bound and announced there.
    pub local_ip: IpAddr,
    pub greeting: Arc<[i16]>,
    pub deposit: Deposit,
}

impl Call {
    /// Answers, records, hangs up, stores; never panics the runtime.
    pub async fn run(self) {
        let active = Active::new(self.service.clone());
        self.answer_and_record(active).await;
        self.service.forget(&self.session.call_id);
    }

    /// `active` is dropped once the message is stored and the plugins have
    /// heard of it: what a shutdown waits for.
    async fn answer_and_record(&self, active: Active) {
        let (core, session) = (&self.core, &self.session);
        let rtp = match self.bind_rtp().await {
            Ok(rtp) => rtp,
            Err(why) => {
                tracing::warn!(call_id = %session.call_id, %why, "voicemail: no RTP port");
                self.fail(503, "No RTP port free").await;
                return;
            }
        };
        let local = LocalMedia {
            ip: self.local_ip,
            port: rtp.port(),
            session_id: rand::random::<u32>().into(),
            session_version: 1,
        };
        let answer = sdp::build_answer(&self.offer, &self.negotiated, &local);
        *session.answer.lock().unwrap() = Some(answer.clone());
        let ok = self.ok_response(answer);
        let answered_ms = now_ms();
        core.send_response(&self.key, 200, &ok, &session.caller);
        Stats::inc(&core.stats.voicemail_answered);
        tracing::info!(call_id = %session.call_id, mailbox = %self.deposit.mailbox,
            rtp = %local.port, codec = ?self.negotiated.codec, "voicemail: answered");

        let id = self.service.next_id.fetch_add(1, Ordering::Relaxed);
        let path = self
            .service
            .file_for(&self.deposit.tenant, &self.deposit.mailbox, id);
        if let Some(folder) = path.parent() {
            if let Err(e) = tokio::fs::create_dir_all(folder).await {
                tracing::error!(folder = %folder.display(), error = %e, "voicemail: cannot create the mailbox folder");
            }
        }
        let settings = &self.service.settings;
        let limits = RecordLimits {
            max_length: Duration::from_millis(settings.max_length_ms),
            silence_timeout: Duration::from_millis(settings.silence_timeout_ms),
            min_length: Duration::from_millis(settings.min_length_ms),
        };
        let mut media = MediaParams::from(&self.negotiated);
        // Media goes only where the caller is: the SDP address when it is
        // the caller's own signalling address, else (NAT, or an address
        // the caller merely wrote down) wherever its first RTP packet
        // comes from. An INVITE cannot aim our RTP at a third party.
        if media
            .remote
            .is_some_and(|r| r.ip() != session.caller.addr.ip())
        {
            tracing::debug!(sdp = ?media.remote, caller = %session.caller.addr,
                "SDP address is not the caller's: RTP waits for the caller's first packet");
            media.remote = None;
        }
        let mut ack_missing = false;
        let recording = {
            let retransmit = self.retransmit_ok(&ok);
            let recorder = record(
                &rtp.socket,
                &media,
                // `record` plays the beep after it.
                &self.greeting,
                &limits,
                &path,
                session.hangup.subscribe(),
            );
            tokio::pin!(retransmit, recorder);
            // The 2xx is retransmitted until the ACK while the greeting
            // plays; no ACK within 64*T1 ends the call (RFC 3261 13.3.1.4).
            let mut retransmitting = true;
            loop {
                tokio::select! {
                    acked = &mut retransmit, if retransmitting => {
                        retransmitting = false;
                        if !acked {
                            tracing::info!(call_id = %session.call_id, "voicemail: no ACK for the 200 OK, hanging up");
                            ack_missing = true;
                            session.hang_up();
                        }
                    }
                    done = &mut recorder => break done,
                }
            }
        };
        drop(rtp);
        let recording = match recording {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(call_id = %session.call_id, error = %e, "voicemail: recording failed");
                let keep = async {
                    self.write_cdr(answered_ms, None).await;
                    drop(active);
                };
                tokio::join!(self.send_bye(), keep);
                return;
            }
        };
        tracing::info!(call_id = %session.call_id, mailbox = %self.deposit.mailbox,
            ended = ?recording.ended, stopping = session.stopping(),
            duration_ms = recording.duration.as_millis() as u64,
            lost = recording.stats.lost, reordered = recording.stats.reordered,
            stored = recording.path.is_some(), "voicemail: recording ended");
        // Our BYE (when the message ended on our side) and storing the
        // message run side by side: the BYE's retransmissions do not hold
        // up the message, nor a shutdown waiting for it.
        let bye = async {
            // Ended on our side: DTMF, a limit, a stop, or no ACK (which
            // ends the dialog with a BYE too, RFC 3261 13.3.1.4).
            if recording.ended != EndReason::Hangup || session.stopping() || ack_missing {
                self.send_bye().await;
            }
        };
        let keep = async {
            self.keep(id, answered_ms, &recording).await;
            drop(active);
        };
        tokio::join!(bye, keep);
    }

    /// Stores the message, writes the call's record and tells the plugins.
    async fn keep(&self, id: u64, answered_ms: u64, recording: &Recording) {
        let stored = self.store(id, answered_ms, recording).await;
        self.write_cdr(answered_ms, stored.as_ref()).await;
        if let Some(voicemail) = stored {
            Stats::inc(&self.core.stats.voicemail_recorded);
            self.emit(Event::VoicemailRecorded {
                voicemail: crate::plugins::Voicemail {
                    id: voicemail.id,
                    tenant: voicemail.tenant.clone(),
                    mailbox: voicemail.mailbox.clone(),
                    email: self.owner_email(),
                    caller: voicemail.caller.clone(),
                    caller_name: voicemail.caller_name.clone(),
                    call_id: voicemail.call_id.clone(),
                    received_ms: voicemail.received_ms,
                    duration_ms: voicemail.duration_ms,
                    file_name: format!("{}.wav", voicemail.id),
                },
                source: self.session.caller.addr,
            })
            .await;
        }
    }

    /// An RTP socket on our address facing the caller.
    async fn bind_rtp(&self) -> Result<crate::media::RtpSocket, String> {
        let allocator = self.service.allocator(self.local_ip)?;
        allocator.allocate().await.map_err(|e| e.to_string())
    }

    /// The 200 OK with our To tag, Contact and SDP answer.
    fn ok_response(&self, sdp: String) -> Message {
        let mut ok = self
            .request
            .response(200, "OK", Some(&self.session.local_tag));
        let core = &self.core;
        ok.headers
            .push("Server", core.config.server.user_agent.as_str());
        let local = core.out.local_host_port(self.session.caller.addr);
        let transport = match self.session.caller.transport {
            Transport::Tcp => ";transport=tcp",
            Transport::Udp => "",
        };
        ok.headers.push(
            "Contact",
            format!("<sip:{}@{local}{transport}>", self.deposit.mailbox),
        );
        ok.headers
            .push("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO");
        ok.headers.push("Content-Type", "application/sdp");
        ok.body = sdp.into_bytes();
        ok
    }

    /// Sends the 200 again at T1, 2*T1, ... capped at T2, until the ACK.
    /// True when the ACK came (at once over TCP: reliable transports do not
    /// retransmit).
    async fn retransmit_ok(&self, ok: &Message) -> bool {
        let session = &self.session;
        if session.caller.transport.is_reliable() {
            return true;
        }
        let bytes: Arc<[u8]> = ok.to_bytes().into();
        let (t1, t2) = (self.service.t1, self.service.t2);
        let give_up = tokio::time::Instant::now() + 64 * t1;
        let mut interval = t1;
        loop {
            let notified = session.ack.notified();
            if session.acked.load(Ordering::Acquire) {
                return true;
            }
            let wake = (tokio::time::Instant::now() + interval).min(give_up);
            if tokio::time::timeout_at(wake, notified).await.is_ok() {
                return true;
            }
            if tokio::time::Instant::now() >= give_up {
                return session.acked.load(Ordering::Acquire);
            }
            self.core.out.send(&session.caller, bytes.clone());
            interval = (interval * 2).min(t2);
        }
    }

    /// Our BYE to the caller, at its Contact, sent to the address its
    /// INVITE came from; retransmitted over UDP until answered (Timer E),
    /// given up after 64*T1 (Timer F).
    async fn send_bye(&self) {
        let session = &self.session;
        let Some(target) = self
            .request
            .contacts()
            .ok()
            .and_then(|c| c.into_iter().next())
            .and_then(|c| match c {
                Contact::Addr(a) => Some(a.uri),
                Contact::Star => None,
            })
            .or_else(|| self.request.from().ok().map(|f| f.uri))
        else {
            return;
        };
        let (Some(from), Some(to)) = (
            self.request.headers.get("To"),
            self.request.headers.get("From"),
        ) else {
            return;
        };
        let our_side = format!("{from};tag={}", session.local_tag);
        let local = self.core.out.local_host_port(session.caller.addr);
        let branch = format!("{BRANCH_PREFIX}{:016x}", rand::random::<u64>());
        let bye = forward::bye(
            &target,
            &our_side,
            to,
            &session.call_id,
            1,
            &forward::via(session.caller.transport, &local, &branch),
        );
        let bytes: Arc<[u8]> = bye.to_bytes().into();
        let (t1, t2) = (self.service.t1, self.service.t2);
        let give_up = tokio::time::Instant::now() + 64 * t1;
        let mut interval = t1;
        loop {
            let answered = session.bye_answer.notified();
            self.core.out.send(&session.caller, bytes.clone());
            if session.caller.transport.is_reliable() {
                return;
            }
            let wake = (tokio::time::Instant::now() + interval).min(give_up);
            if tokio::time::timeout_at(wake, answered).await.is_ok()
                || tokio::time::Instant::now() >= give_up
            {
                return;
            }
            interval = (interval * 2).min(t2);
        }
    }

    /// Indexes the message; None when nothing was stored (too short, or the
    /// database refused it).
    async fn store(
        &self,
        id: u64,
        answered_ms: u64,
        recording: &Recording,
    ) -> Option<StoredVoicemail> {
        let path = recording.path.as_ref()?;
        let from = self.request.from().ok();
        let voicemail = StoredVoicemail {
            id,
            tenant: self.deposit.tenant.clone(),
            mailbox: self.deposit.mailbox.clone(),
            caller: self.deposit.cdr.caller.clone(),
            caller_name: from
                .and_then(|f| f.display.clone())
                .filter(|n| !n.is_empty()),
            call_id: self.session.call_id.clone(),
            received_ms: answered_ms,
            duration_ms: recording.duration.as_millis() as u64,
            file: path.display().to_string(),
            ended_by: match self.session.stopping() {
                true => "shutdown",
                false => ended_by(recording.ended),
            }
            .to_owned(),
            mail_message_id: None,
            mail_state: None,
        };
        match self
            .core
            .store
            .write(vec![Write::InsertVoicemail(voicemail.clone())])
            .await
        {
            Ok(()) => Some(voicemail),
            Err(e) => {
                // The WAV stays on disk; only its index row is missing.
                tracing::error!(file = %voicemail.file, error = %e, "voicemail: indexing the message failed");
                None
            }
        }
    }

    /// The call's record: answered by the mailbox, from the 200 to now.
    async fn write_cdr(&self, answered_ms: u64, stored: Option<&StoredVoicemail>) {
        let mut cdr = self.deposit.cdr.clone();
        let now = now_ms();
        cdr.answered_by = Some(match stored {
            Some(v) => format!("voicemail:{} ({}.wav)", v.mailbox, v.id),
            None => format!("voicemail:{}", self.deposit.mailbox),
        });
        cdr.answer_ms = Some(answered_ms);
        cdr.end_ms = now;
        cdr.duration_ms = now.saturating_sub(answered_ms);
        cdr.disposition = Disposition::Answered;
        cdr.status = 200;
        self.end_call(cdr).await;
    }

    /// The call could not be answered after all: a final error, and its record.
    async fn fail(&self, code: u16, reason: &str) {
        let response = self.core.reply(&self.request, code, reason).1;
        self.core
            .send_response(&self.key, code, &response, &self.session.caller);
        let mut cdr = self.deposit.cdr.clone();
        cdr.end_ms = now_ms();
        cdr.status = code;
        cdr.disposition = Disposition::Failed;
        self.end_call(cdr).await;
    }

    /// Stores the call's record and tells the plugins the call ended.
    async fn end_call(&self, cdr: Cdr) {
        self.core
            .store
            .write_detached(vec![Write::InsertCdr(cdr.clone())]);
        self.emit(Event::CallEnded {
            cdr,
            source: self.session.caller.addr,
            transport: self.session.caller.transport,
        })
        .await;
    }

    /// Runs the plugins on a blocking thread (never on the runtime's
    /// workers) and waits for them, so that a shutdown waiting for this
    /// call also waits for `mail.send` to have queued its mail.
    async fn emit(&self, event: Event) {
        let core = self.core.clone();
        let _ = self
            .core
            .proxy
            .runtime
            .spawn_blocking(move || {
                core.emit(event);
            })
            .await;
    }

    fn owner_email(&self) -> Option<String> {
        self.core
            .config
            .tenants
            .iter()
            .find(|t| crate::server::tenant_key(t) == self.deposit.tenant)
            .and_then(|t| t.extension(&self.deposit.mailbox))
            .and_then(|e| e.email.clone())
    }
}

fn ended_by(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Hangup => "hangup",
        EndReason::Dtmf => "dtmf",
        EndReason::MaxLength => "max-length",
        EndReason::Silence => "silence",
    }
}

/// Counts a call among the voicemail calls in progress while it lives.
pub(super) struct Active(Arc<Voicemail>);

impl Active {
    fn new(service: Arc<Voicemail>) -> Active {
        service.active.fetch_add(1, Ordering::Relaxed);
        Active(service)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
