//! Voicemail: the gateway answers an unanswered call itself, plays the
//! mailbox's greeting and a beep, records the caller's message to a WAV
//! file, indexes it in SQLite and tells the plugins (`voicemail-recorded`;
//! the voicemail-mail plugin mails it).
//!
//! The router hands a call over with [`Voicemail::answer`] when an
//! extension's `no_answer`, `busy` or `unavailable` says "voicemail", or a
//! route plugin decides so. From then on this module is the caller's user
//! agent (RFC 3261 UAS): it sends the 200 OK with an SDP answer (G.711,
//! retransmitted over UDP until the ACK, 13.3.1.4), answers the caller's
//! in-dialog requests (BYE, re-INVITE) and, when the recording ends on our
//! side (DTMF `#`, the maximum length, silence), sends the BYE.
//!
//! The media work (RTP, greeting, jitter buffer, WAV) is `crate::media`'s;
//! each call runs as one task, so a recording never holds up signalling.

mod session;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cdr::Cdr;
use crate::config::{self, Config};
use crate::media::{ports::PortAllocator, prompt, sdp};
use crate::server::{tenant_key, Core, Reply};
use crate::sip::{Message, Method};
use crate::transaction::Key;
use crate::transport::Source;

pub use session::BRANCH_PREFIX;

/// A call handed over to a mailbox.
#[derive(Debug)]
pub struct Deposit {
    /// "" for the default tenant.
    pub tenant: String,
    /// The extension whose mailbox takes the message.
    pub mailbox: String,
    /// The call's record so far; finished when the voicemail call ends.
    pub cdr: Cdr,
}

/// The voicemail service: settings, greetings, RTP ports and the calls in
/// progress.
pub struct Voicemail {
    settings: config::Voicemail,
    /// Greetings by (tenant, mailbox), and the default one.
    greetings: HashMap<(String, String), Arc<[i16]>>,
    default_greeting: Arc<[i16]>,
    /// One allocator per local IP the gateway answers on.
    ports: Mutex<HashMap<IpAddr, PortAllocator>>,
    /// Calls in progress, by Call-ID.
    sessions: Mutex<HashMap<String, Arc<session::Session>>>,
    /// The next message id (ids continue from the database's highest).
    next_id: AtomicU64,
    /// Calls running now, until stored (see [`Voicemail::in_progress`]).
    active: AtomicUsize,
    /// SIP timers for the 200 OK and BYE retransmissions.
    t1: Duration,
    t2: Duration,
}

impl Voicemail {
    /// Loads every greeting the config names (an unreadable one is an
    /// error naming its file, at start, not at the first call) and creates
    /// the recordings folder.
    pub fn load(config: &Config, last_id: u64) -> Result<Voicemail, String> {
        let settings = config.voicemail.clone();
        std::fs::create_dir_all(&settings.dir).map_err(|e| {
            format!(
                "voicemail.dir {}: cannot create it: {e}",
                settings.dir.display()
            )
        })?;
        let (default_greeting, greetings) = greetings(config)?;
        Ok(Voicemail {
            settings,
            greetings,
            default_greeting,
            ports: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(last_id + 1),
            active: AtomicUsize::new(0),
            t1: Duration::from_millis(config.transaction.t1_ms),
            t2: Duration::from_millis(config.transaction.t2_ms),
        })
    }

    /// Answers `request` (an initial INVITE whose server transaction is
    /// `key`) for `deposit`'s mailbox. Err: the final response the caller
    /// gets instead (488 for an offer without G.711, 415/488 without SDP).
    /// Ok: the call is this module's now; its 200 OK leaves from a task.
    pub fn answer(
        self: &Arc<Self>,
        core: &Arc<Core>,
        request: &Message,
        key: &Key,
        caller: &Source,
        deposit: Deposit,
    ) -> Result<(), (u16, String)> {
        let offer = offer_of(request)?;
        let negotiated =
            sdp::negotiate(&offer).map_err(|e| (488, format!("Not Acceptable Here ({e})")))?;
        let Some(local) = core.out.local_for(caller.addr) else {
            return Err((500, "No local address for the caller".to_owned()));
        };
        let (Some(call_id), Ok(from)) = (request.call_id(), request.from()) else {
            return Err((400, "Bad Request".to_owned()));
        };
        let greeting = self
            .greetings
            .get(&(deposit.tenant.clone(), deposit.mailbox.clone()))
            .unwrap_or(&self.default_greeting)
            .clone();
        let session = Arc::new(session::Session::new(
            call_id.to_owned(),
            from.tag().unwrap_or("").to_owned(),
            *caller,
        ));
        self.sessions
            .lock()
            .unwrap()
            .insert(call_id.to_owned(), session.clone());
        let call = session::Call {
            core: core.clone(),
            service: self.clone(),
            session,
            request: request.clone(),
            key: key.clone(),
            offer,
            negotiated,
            local_ip: local.ip(),
            greeting,
            deposit,
        };
        core.proxy.runtime.spawn(call.run());
        Ok(())
    }

    /// An in-dialog request of one of our voicemail calls: its answer.
    /// None: not ours (the router's dialogs are tried next).
    pub(crate) fn in_dialog(
        &self,
        core: &Arc<Core>,
        request: &Message,
        source: &Source,
    ) -> Option<Reply> {
        let session = self.session_of(request)?;
        if session.caller.addr.ip() != source.addr.ip() {
            tracing::info!(peer = %source.addr, call_id = %session.call_id,
                "voicemail: in-dialog request from a stranger refused");
            return Some(
                core.reply(request, 481, "Call/Transaction Does Not Exist")
                    .into(),
            );
        }
        Some(match request.method() {
            Some(Method::Bye) => {
                session.hang_up();
                core.reply(request, 200, "OK").into()
            }
            // A session refresh or hold: the same answer again.
            Some(Method::Invite) => match session.answer_sdp() {
                Some(sdp) => {
                    let (code, mut ok) = core.reply(request, 200, "OK");
                    ok.headers.push("Content-Type", "application/sdp");
                    ok.body = sdp.into_bytes();
                    Reply::Now(code, ok)
                }
                None => core.reply(request, 491, "Request Pending").into(),
            },
            Some(Method::Options | Method::Info | Method::Update) => {
                core.reply(request, 200, "OK").into()
            }
            _ => core.reply(request, 405, "Method Not Allowed").into(),
        })
    }

    /// The ACK of our 2xx: stops its retransmissions. False: not ours.
    pub fn ack(&self, request: &Message, source: &Source) -> bool {
        match self.session_of(request) {
            Some(session) if session.caller.addr.ip() == source.addr.ip() => {
                session.acked();
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// A response to a BYE of ours (its Via branch has [`BRANCH_PREFIX`]).
    /// False: not ours.
    pub fn on_response(&self, response: &Message) -> bool {
        let ours = response
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(|b| b.starts_with(BRANCH_PREFIX)))
            .unwrap_or(false);
        if ours {
            if let Some(session) = response
                .call_id()
                .and_then(|id| self.sessions.lock().unwrap().get(id).cloned())
            {
                session.bye_answered();
            }
        }
        ours
    }

    /// Ends every recording in progress because the gateway stops: each
    /// keeps what was said so far (stored, indexed, handed to the plugins
    /// as usual, `ended_by` "shutdown") and its caller gets our BYE. Waits
    /// up to `within` for them to be stored.
    pub async fn shutdown(&self, within: Duration) {
        let sessions: Vec<_> = self.sessions.lock().unwrap().values().cloned().collect();
        if sessions.is_empty() {
            return;
        }
        tracing::info!(
            calls = sessions.len(),
            "voicemail: ending the messages being recorded"
        );
        for session in &sessions {
            session.stop_for_shutdown();
        }
        let deadline = tokio::time::Instant::now() + within;
        while self.in_progress() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.in_progress() > 0 {
            tracing::warn!(
                left = self.in_progress(),
                "voicemail: messages not stored before shutdown"
            );
        }
    }

    /// Recordings in progress.
    pub fn in_progress(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The session a request belongs to: its Call-ID, our To tag and the
    /// caller's From tag.
    fn session_of(&self, request: &Message) -> Option<Arc<session::Session>> {
        let call_id = request.call_id()?;
        let session = self.sessions.lock().unwrap().get(call_id).cloned()?;
        let to_tag = request.to().ok()?.tag().map(str::to_owned)?;
        let from_tag = request.from().ok()?.tag().unwrap_or("").to_owned();
        (to_tag == session.local_tag && from_tag == session.remote_tag).then_some(session)
    }

    fn forget(&self, call_id: &str) {
        self.sessions.lock().unwrap().remove(call_id);
    }

    /// The port allocator for `ip` (created on first use).
    fn allocator(&self, ip: IpAddr) -> Result<PortAllocator, String> {
        let mut ports = self.ports.lock().unwrap();
        if let Some(a) = ports.get(&ip) {
            return Ok(a.clone());
        }
        let allocator =
            PortAllocator::new(ip, self.settings.rtp_port_min, self.settings.rtp_port_max)
                .map_err(|e| e.to_string())?;
        ports.insert(ip, allocator.clone());
        Ok(allocator)
    }

    /// Where a new recording goes: `<dir>/<tenant or "default">/<mailbox>/<id>.wav`.
    fn file_for(&self, tenant: &str, mailbox: &str, id: u64) -> PathBuf {
        let tenant = if tenant.is_empty() { "default" } else { tenant };
        self.settings
            .dir
            .join(tenant)
            .join(mailbox)
            .join(format!("{id}.wav"))
    }
}

/// Greetings by mailbox, and the default one.
type Greetings = (Arc<[i16]>, HashMap<(String, String), Arc<[i16]>>);

/// Reads every greeting the config names; the error names the file.
fn greetings(config: &Config) -> Result<Greetings, String> {
    let read = |path: &Path| -> Result<Arc<[i16]>, String> {
        prompt::load_greeting(path)
            .map(Arc::from)
            .map_err(|e| format!("greeting {e}"))
    };
    let default = match &config.voicemail.greeting {
        Some(path) => read(path)?,
        None => Arc::from(prompt::chime()),
    };
    let mut by_mailbox = HashMap::new();
    for tenant in &config.tenants {
        for ext in &tenant.extensions {
            if let Some(path) = &ext.greeting {
                by_mailbox.insert(
                    (tenant_key(tenant).to_owned(), ext.number.clone()),
                    read(path)?,
                );
            }
        }
    }
    Ok((default, by_mailbox))
}

/// Checks that every greeting file the config names can be played (for
/// `sipfence check-config`).
pub fn check_greetings(config: &Config) -> Result<(), String> {
    greetings(config).map(|_| ())
}

/// The SDP offer of an INVITE. Err: the status for an INVITE without one.
fn offer_of(request: &Message) -> Result<sdp::SessionDescription, (u16, String)> {
    let content_type = request.headers.get("Content-Type").unwrap_or("");
    if request.body.is_empty() {
        // A late offer (the SDP in our 200, the answer in the ACK) is not
        // supported: phones and SIPp offer in the INVITE.
        return Err((488, "Not Acceptable Here (no SDP offer)".to_owned()));
    }
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
    {
        return Err((415, "Unsupported Media Type".to_owned()));
    }
    let text =
        std::str::from_utf8(&request.body).map_err(|_| (400, "SDP is not UTF-8".to_owned()))?;
    sdp::parse(text).map_err(|e| (400, format!("Bad SDP ({e})")))
}
