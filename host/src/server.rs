//! The gateway core: the message path from bytes to answer.
//!
//! ```text
//! bytes -> ban list (source address; banned: dropped silently, counted)
//!       -> UDP: STUN (answered by [`crate::stun`]) | CRLF keep-alive | SIP
//!       -> parse (400, or drop when unanswerable)
//!       -> sanity (mandatory headers 400, Max-Forwards 483)
//!       -> server transaction (retransmissions answered from it; plugins
//!          not run again)
//!       -> plugin chain on-request: continue | reject | drop | ban | trust
//!       -> tenant by Request-URI host (404 for domains not served)
//!       -> digest authentication, unless a plugin trusted the request;
//!          the outcome goes to the plugins as an event
//!       -> REGISTER: registrar (answer after commit) | OPTIONS | INVITE | 405/501
//! ```
//! A UDP request is handled start to finish on the thread that received it;
//! only a REGISTER's answer waits for the store's commit. Every request has a
//! `tracing` span (at debug level, so it costs nothing when not logged).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use crate::auth::{Algorithm, Authenticator, Failure, Presented, Verdict as AuthVerdict};
use crate::config::{AuthAlgorithm, Config, Tenant};
use crate::directory::Directory;
use crate::guard::{BanOutcome, Guard};
use crate::plugins::{
    AuthAttempt, AuthFailure, Chain, Event, EventKind, Reaction, Registration, RequestInfo,
    RequestView, Verdict,
};
use crate::proxy::Proxy;
use crate::registrar::location::Aor;
use crate::registrar::{Answer, Registrar};
use crate::sip::{Checked, Message, Method, NameAddr, StartLine};
use crate::stats::Stats;
use crate::store::{Store, Write};
use crate::stun;
use crate::transaction::{Incoming, Key, Transactions};
use crate::transport::{Outbound, Source, Transport};

pub use crate::now_ms;

/// What became of a received message, as far as the transport cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    Handled,
    /// Dropped unread: its source is banned.
    Banned,
}

/// What transports hand their messages to.
pub trait Sink: Send + Sync + 'static {
    /// One datagram, or one framed message of a stream.
    fn receive(&self, data: &[u8], source: Source) -> Received;
    /// Whether a new TCP connection from `peer` may be accepted.
    fn admit(&self, _peer: SocketAddr) -> bool {
        true
    }
    /// Whether the UDP receiver should nap briefly after batches under
    /// load, trading up to 250 µs of latency for fewer wake-ups: for sinks
    /// whose requests cost less than a wake-up (STUN).
    fn nap_under_load(&self) -> bool {
        false
    }
}

/// Methods this gateway serves; listed in `Allow`.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER";

/// The tenant key used in storage and plugins: its domain, or "" for the
/// default tenant.
pub fn tenant_key(tenant: &Tenant) -> &str {
    tenant.domain.as_deref().unwrap_or("")
}

/// Everything the message path needs, shared by every thread.
pub struct Core {
    pub config: Arc<Config>,
    pub directory: Directory,
    pub auth: Authenticator,
    pub algorithms: Vec<Algorithm>,
    pub registrar: Registrar,
    pub transactions: Arc<Transactions>,
    pub out: Outbound,
    pub stats: Arc<Stats>,
    /// The ban list; shared with the standalone STUN listener.
    pub guard: Arc<Guard>,
    /// Answers STUN on the SIP UDP port (and on the STUN listener).
    pub stun: Arc<stun::Responder>,
    /// The plugin chain; a reload swaps in a new one.
    pub chain: RwLock<Arc<Chain>>,
    pub store: Store,
    /// The call router.
    pub proxy: Proxy,
    /// Addresses of phones behind NAT, and when they were last heard from.
    pub keepalive: crate::keepalive::Watch,
    /// Calls answered by a mailbox.
    pub voicemail: Arc<crate::voicemail::Voicemail>,
    /// The outgoing mail queue and its worker.
    pub mailer: Arc<crate::mail::MailerHandle>,
}

/// The gateway as the transports see it.
#[derive(Clone)]
pub struct Gateway(pub Arc<Core>);

impl Sink for Gateway {
    fn receive(&self, data: &[u8], source: Source) -> Received {
        let core = &self.0;
        // First and cheapest: a banned source costs one lookup, nothing more.
        if core.guard.is_banned(source.addr.ip()) {
            Stats::inc(&core.stats.dropped_banned);
            return Received::Banned;
        }
        core.keepalive.heard(source.addr);
        self.handle(data, source);
        Received::Handled
    }

    fn admit(&self, peer: SocketAddr) -> bool {
        !self.0.guard.is_banned(peer.ip())
    }
}

impl Gateway {
    /// Everything after the ban check.
    fn handle(&self, data: &[u8], source: Source) {
        let core = &self.0;
        match source.transport {
            Transport::Udp => {
                Stats::inc(&core.stats.udp_packets_in);
                if data.len() > core.config.server.max_message_bytes {
                    Stats::inc(&core.stats.dropped_oversized);
                    return;
                }
                // Phones ask for their public address, and keep their NAT
                // binding open, with STUN on the SIP port (RFC 5626 4.4.2).
                if stun::is_stun(data) {
                    if let Some(answer) = core.stun.answer(data, source.addr) {
                        core.out.send_datagram(&source, answer.as_bytes());
                    }
                    return;
                }
                // Stray CRLFs on UDP are keep-alives of some phones: ignore them.
                if data.iter().all(|b| matches!(b, b'\r' | b'\n' | b' ')) {
                    Stats::inc(&core.stats.keepalives);
                    return;
                }
            }
            Transport::Tcp => {}
        }
        let message = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                match e.partial {
                    Some(partial) if partial.is_request() && partial.can_answer() => {
                        Stats::inc(&core.stats.bad_requests);
                        tracing::info!(peer = %source.addr, reason = %e.reason, "bad request");
                        core.answer_stateless(&partial, 400, &e.reason, &source);
                    }
                    _ => {
                        Stats::inc(&core.stats.dropped_unparseable);
                        tracing::debug!(peer = %source.addr, reason = %e.reason, "unparseable message dropped");
                    }
                }
                return;
            }
        };
        if !message.is_request() {
            if core.voicemail.on_response(&message) {
                return;
            }
            core.proxy.on_response(core, message, &source);
            return;
        }
        if let Some(method) = message.method() {
            core.stats.count_request(method);
        }
        let span = tracing::debug_span!(
            "request",
            method = %message.method().map(Method::as_str).unwrap_or("?"),
            call_id = message.call_id().unwrap_or(""),
            peer = %source.addr,
            transport = %source.transport,
        );
        let _entered = span.enter();
        self.0.handle_request(message, source);
    }
}

/// How a request is answered. (Returned once per request, never stored, so
/// the size difference between the variants costs nothing.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Reply {
    /// Answer now with this final response.
    Now(u16, Message),
    /// The answer leaves later (after a commit) through the transaction.
    Later,
    /// No answer at all (a plugin dropped it, or its source was just banned).
    Silent,
}

impl From<(u16, Message)> for Reply {
    fn from((code, response): (u16, Message)) -> Reply {
        Reply::Now(code, response)
    }
}

/// Who vouched for a request, so that it needs no digest.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Trusted {
    /// A plugin trusted it as this extension (by its address).
    Extension(String),
    /// It came from a `trusted_from` source of this trunk of the tenant.
    Trunk(String),
}

impl Trusted {
    /// The extension vouched for, if any.
    fn extension(trusted: &Option<Trusted>) -> Option<&str> {
        match trusted {
            Some(Trusted::Extension(e)) => Some(e),
            _ => None,
        }
    }
}

/// What the plugin chain decided.
#[allow(clippy::large_enum_variant)]
enum ChainOutcome {
    /// Go on; with the extension a plugin vouched for, if any.
    Go(Option<String>),
    /// A plugin ended the request.
    Stop(Reply),
}

/// A request past its checks, on its way through the message path: the
/// message, the From and To its check parsed, where it came from, its
/// transaction, and the credentials it carries.
#[derive(Clone, Copy)]
struct Inbound<'a> {
    message: &'a Message,
    from: &'a NameAddr,
    to: &'a NameAddr,
    source: &'a Source,
    key: &'a Key,
    credentials: Option<&'a Presented<'a>>,
}

/// The outcome of the authentication step.
#[allow(clippy::large_enum_variant)]
enum AuthStep {
    Pass,
    Answer(u16, Message),
    /// The failure got the source banned: no answer.
    Silent,
}

impl Core {
    /// Runs one request through the message path.
    fn handle_request(self: &Arc<Self>, mut request: Message, source: Source) {
        let checked = match request.checked() {
            Ok(checked) => checked,
            Err(reason) => {
                Stats::inc(&self.stats.bad_requests);
                if request.can_answer() {
                    tracing::info!(%reason, "bad request");
                    self.answer_stateless(&request, 400, &reason, &source);
                } else {
                    Stats::inc(&self.stats.dropped_unparseable);
                }
                return;
            }
        };
        let Checked { top_via, from, to } = checked;
        let top_via = mark_received(&mut request, &source, top_via);
        let Some(key) = top_via.and_then(|via| Key::with_top_via(&request, &via)) else {
            self.answer_stateless(&request, 400, "Malformed Via", &source);
            return;
        };
        let is_ack = request.method() == Some(&Method::Ack);
        match self.transactions.incoming(&key, is_ack) {
            Incoming::New => {}
            Incoming::Retransmission(last) => {
                Stats::inc(&self.stats.retransmissions_absorbed);
                if let Some(bytes) = last {
                    Stats::inc(&self.stats.responses_out);
                    self.out.send(&source, bytes);
                }
                return;
            }
            Incoming::AckAbsorbed => return,
            // The ACK of a 2xx: end to end, along its dialog.
            Incoming::StrayAck => {
                if !self.voicemail.ack(&request, &source) {
                    self.proxy.ack(self, &request, &source);
                }
                return;
            }
        }
        let tenant = request
            .request_uri()
            .and_then(|uri| self.config.tenant_for(&uri.host));
        let request = Arc::new(request);
        let credentials = self.credentials(&request, tenant, &source);
        let trusted = match self.run_chain(&request, tenant, &source, &key, credentials.as_ref()) {
            ChainOutcome::Go(Some(extension)) => Some(Trusted::Extension(extension)),
            // A trunk's traffic: from one of its trusted_from sources, for
            // the tenant the trunk belongs to.
            ChainOutcome::Go(None) => {
                tenant
                    .and_then(|t| t.trunk_trusting(source.addr))
                    .map(|trunk| {
                        self.guard.protect(source.addr.ip(), now_ms());
                        Trusted::Trunk(trunk.id.clone())
                    })
            }
            ChainOutcome::Stop(reply) => return self.finish(&key, reply, &source),
        };
        let inbound = Inbound {
            message: &request,
            from: &from,
            to: &to,
            source: &source,
            key: &key,
            credentials: credentials.as_ref(),
        };
        let reply = self.process(&inbound, tenant, trusted);
        self.finish(&key, reply, &source);
    }

    fn finish(&self, key: &Key, reply: Reply, source: &Source) {
        match reply {
            Reply::Now(code, response) => self.send_response(key, code, &response, source),
            Reply::Later => {}
            Reply::Silent => self
                .transactions
                .finish_silently(key, source.transport.is_reliable()),
        }
    }

    /// The digest credentials a request carries (Authorization for a
    /// REGISTER, Proxy-Authorization otherwise), parsed and their nonce
    /// checked once for the plugins and the authenticator. A phone may
    /// carry credentials for several realms: those for the tenant's realm
    /// if present, else the first.
    fn credentials<'r>(
        &self,
        request: &'r Message,
        tenant: Option<&Tenant>,
        source: &Source,
    ) -> Option<Presented<'r>> {
        let name = if request.method() == Some(&Method::Register) {
            "Authorization"
        } else {
            "Proxy-Authorization"
        };
        let header = tenant
            .and_then(|t| {
                request
                    .headers
                    .get_all(name)
                    .find(|h| names_realm(h, &t.realm))
            })
            .or_else(|| request.headers.get(name))?;
        Some(self.auth.present(header, source.addr.ip()))
    }

    /// Runs the plugin chain's on-request hooks.
    fn run_chain(
        &self,
        request: &Arc<Message>,
        tenant: Option<&Tenant>,
        source: &Source,
        key: &Key,
        credentials: Option<&Presented<'_>>,
    ) -> ChainOutcome {
        let chain = self.chain.read().unwrap().clone();
        if chain.is_empty() || chain.promised_continue(request.headers.get("User-Agent")) {
            return ChainOutcome::Go(None);
        }
        let info = self.request_info(request, tenant, source, credentials);
        let view = RequestView::new(request.clone(), info);
        let (verdict, plugin) = chain.on_request(&view);
        let plugin = plugin.unwrap_or_default();
        match verdict {
            Verdict::Continue => ChainOutcome::Go(None),
            Verdict::Reject { code, reason } => {
                Stats::inc(&self.stats.plugin_rejects);
                tracing::info!(%plugin, code, %reason, "rejected by plugin");
                ChainOutcome::Stop(self.reply(request, code, &reason).into())
            }
            Verdict::Drop => {
                Stats::inc(&self.stats.plugin_drops);
                tracing::debug!(%plugin, "dropped by plugin");
                ChainOutcome::Stop(Reply::Silent)
            }
            Verdict::Ban { duration, reason } => {
                let ms = duration.as_millis() as u64;
                if self.apply_ban(source.addr.ip(), ms, &plugin, &reason) {
                    ChainOutcome::Stop(Reply::Silent)
                } else {
                    // An exempt source is refused, not banned.
                    ChainOutcome::Stop(self.reply(request, 403, "Forbidden").into())
                }
            }
            Verdict::Trust {
                tenant: trusted_tenant,
                extension,
            } => {
                // A plugin may only vouch for an extension of the tenant the
                // request is for.
                let valid = tenant.is_some_and(|t| {
                    tenant_key(t) == trusted_tenant
                        && self.directory.get(&trusted_tenant, &extension).is_some()
                });
                if valid {
                    self.guard.protect(source.addr.ip(), now_ms());
                    tracing::debug!(%plugin, %extension, "trusted by plugin");
                    ChainOutcome::Go(Some(extension))
                } else {
                    tracing::warn!(%plugin, tenant = %trusted_tenant, %extension, ?key,
                        "plugin trusted an extension the request's tenant does not have; ignored");
                    ChainOutcome::Go(None)
                }
            }
        }
    }

    /// What the plugins may ask about a request besides the message.
    fn request_info(
        &self,
        request: &Message,
        tenant: Option<&Tenant>,
        source: &Source,
        credentials: Option<&Presented<'_>>,
    ) -> RequestInfo {
        let answered_challenge = credentials.is_some_and(Presented::answers_our_challenge);
        let tenant = match tenant {
            Some(t) => tenant_key(t).to_owned(),
            // Not served: plugins still see it, with the host it was for.
            None => request
                .request_uri()
                .map(|u| u.host.to_string())
                .unwrap_or_default(),
        };
        RequestInfo {
            tenant,
            source: source.addr,
            transport: source.transport,
            source_verified: source.transport == Transport::Tcp || answered_challenge,
            auth_user: credentials.and_then(Presented::username).map(str::to_owned),
        }
    }

    /// Bans the source for `duration_ms` (0: the configured default), persists
    /// it and closes its TCP connections. False when the source is exempt.
    fn apply_ban(&self, ip: IpAddr, duration_ms: u64, by: &str, reason: &str) -> bool {
        let duration_ms = match duration_ms {
            0 => self.config.bans.default_duration_ms,
            ms => ms,
        };
        match self.guard.ban(ip, duration_ms, by, reason, now_ms()) {
            BanOutcome::Banned(write) => {
                Stats::inc(&self.stats.bans_added);
                tracing::warn!(source = %ip, by, reason, duration_ms, "banned");
                self.store.write_detached(vec![*write]);
                let key = self.guard.key(ip);
                self.out
                    .connections()
                    .close_where(|peer| self.guard.key(peer.ip()) == key);
                true
            }
            BanOutcome::Exempt => {
                tracing::warn!(source = %ip, by, reason, "ban refused: the address is exempt (never_ban or trusted); its request is refused instead");
                false
            }
        }
    }

    /// Whether a plugin of the chain asked for this kind of event: building
    /// one nobody hears is wasted work on a hot path.
    pub(crate) fn hears(&self, kind: EventKind) -> bool {
        self.chain.read().unwrap().hears(kind)
    }

    /// Tells the plugins what happened; applies their reactions. True when
    /// the event's source got banned. Runs the plugins on this thread: never
    /// call it with a lock held that others wait for.
    pub(crate) fn emit(&self, event: Event) -> bool {
        let chain = self.chain.read().unwrap().clone();
        if chain.is_empty() {
            return false;
        }
        let mut banned = false;
        for (plugin, reaction) in chain.on_event(&event) {
            if let Reaction::Ban { duration, reason } = reaction {
                banned |= self.apply_ban(
                    event.source().ip(),
                    duration.as_millis() as u64,
                    &plugin,
                    &reason,
                );
            }
        }
        banned
    }

    /// Sends a response of a server transaction and records it there.
    pub(crate) fn send_response(&self, key: &Key, code: u16, response: &Message, to: &Source) {
        Stats::inc(&self.stats.responses_out);
        self.stats.count_response(code);
        self.transactions
            .respond(key, response.to_bytes().into(), code, to, &self.out);
    }

    /// Does the work of a new request: its final response, or `Later`.
    fn process(
        self: &Arc<Self>,
        inbound: &Inbound<'_>,
        tenant: Option<&Tenant>,
        trusted: Option<Trusted>,
    ) -> Reply {
        let Inbound {
            message: request,
            to,
            source,
            key,
            ..
        } = *inbound;
        let unknown = Method::Other(String::new());
        let method = request.method().unwrap_or(&unknown);
        if let Ok(Some(0)) = request.max_forwards() {
            if *method != Method::Options {
                return self.reply(request, 483, "Too Many Hops").into();
            }
        }
        if *method == Method::Cancel {
            return self.proxy.cancel(self, request, key);
        }
        if self.proxy.looped(request) {
            return self.reply(request, 482, "Loop Detected").into();
        }
        // Inside a dialog (To has a tag) a request follows its dialog, whatever
        // its Request-URI (the peer's Contact) says.
        let in_dialog = !matches!(method, Method::Register | Method::Options) && to.tag().is_some();
        if in_dialog {
            if let Some(reply) = self.voicemail.in_dialog(self, request, source) {
                return reply;
            }
            return self.proxy.in_dialog(self, request, source, key);
        }
        let Some(tenant) = tenant else {
            // Never a relay: a domain we do not serve is refused, not forwarded.
            return self.reply(request, 404, "Domain not served here").into();
        };
        match method {
            Method::Register => self.register(
                inbound,
                tenant,
                Trusted::extension(&trusted).map(str::to_owned),
            ),
            Method::Options => {
                let (code, mut response) = self.reply(request, 200, "OK");
                response.headers.push("Allow", ALLOW);
                response.headers.push("Accept", "application/sdp");
                response.headers.push("Supported", "path, outbound");
                Reply::Now(code, response)
            }
            Method::Invite => self.invite(inbound, tenant, trusted),
            Method::Bye => self
                .reply(request, 481, "Call/Transaction Does Not Exist")
                .into(),
            Method::Other(_) => self.reply(request, 501, "Not Implemented").into(),
            _ => {
                let (code, mut response) = self.reply(request, 405, "Method Not Allowed");
                response.headers.push("Allow", ALLOW);
                Reply::Now(code, response)
            }
        }
    }

    fn register(
        self: &Arc<Self>,
        inbound: &Inbound<'_>,
        tenant: &Tenant,
        trusted: Option<String>,
    ) -> Reply {
        let Inbound {
            message: request,
            to,
            source,
            key,
            credentials,
            ..
        } = *inbound;
        let Some(extension) = to.uri.user.clone() else {
            return self.reply(request, 400, "To has no extension").into();
        };
        let same_tenant = self
            .config
            .tenant_for(&to.uri.host)
            .is_some_and(|t| std::ptr::eq(t, tenant));
        if !same_tenant {
            return self
                .reply(request, 403, "To domain does not match Request-URI")
                .into();
        }
        if trusted.as_deref() != Some(extension.as_str()) {
            match self.authenticate(request, tenant, &extension, source, credentials, false) {
                AuthStep::Pass => {}
                AuthStep::Answer(code, response) => return Reply::Now(code, response),
                AuthStep::Silent => return Reply::Silent,
            }
        }
        Stats::inc(&self.stats.registers);
        let max_contacts = self
            .directory
            .get(tenant_key(tenant), &extension)
            .map_or(self.config.registrar.max_contacts, |e| e.max_contacts);
        let aor = Aor {
            tenant: tenant_key(tenant).to_owned(),
            extension,
        };
        let (answer, writes) =
            self.registrar
                .register(request, &aor, max_contacts, source, now_ms());
        let (code, response) = self.reply_with(request, answer);
        if writes.is_empty() {
            return Reply::Now(code, response);
        }
        let events = if self.hears(EventKind::Registration) {
            registration_events(&writes, source.addr)
        } else {
            Vec::new()
        };
        // The 200 OK leaves from the store's writer thread once the binding is
        // committed, never before.
        let core = self.clone();
        let key = key.clone();
        let to = *source;
        self.registrar.commit(writes, move |committed| {
            if committed {
                core.send_response(&key, code, &response, &to);
                for event in events {
                    core.emit(event);
                }
            } else {
                let mut failed = response;
                failed.start = StartLine::Response {
                    code: 500,
                    reason: "Binding not stored".into(),
                };
                failed.headers.remove("Contact");
                core.send_response(&key, 500, &failed, &to);
            }
        });
        Reply::Later
    }

    /// INVITE: the caller must authenticate as the From extension (or be
    /// trusted by a plugin), unless the INVITE is a trunk's traffic; then the
    /// router decides where it goes.
    fn invite(
        self: &Arc<Self>,
        inbound: &Inbound<'_>,
        tenant: &Tenant,
        trusted: Option<Trusted>,
    ) -> Reply {
        let Inbound {
            message: request,
            from,
            source,
            key,
            credentials,
            ..
        } = *inbound;
        let Some(caller) = from.uri.user.clone() else {
            return self.reply(request, 403, "From has no extension").into();
        };
        let callee = request.request_uri().and_then(|u| u.user.clone());
        if let Some(Trusted::Trunk(trunk)) = &trusted {
            // The peer's caller is not ours: no digest, no From domain
            // check; the number analysis decides (a trunk never reaches
            // another trunk unless a rule allows it).
            let Some(callee) = callee else {
                return self.reply(request, 404, "Not Found").into();
            };
            return self.proxy.start(
                self,
                request,
                source,
                key,
                tenant,
                &caller,
                &callee,
                Some(trunk),
            );
        }
        let trusted = Trusted::extension(&trusted);
        // A caller calls within its own tenant: extension 100 of one domain
        // cannot reach another domain's numbers.
        let same_tenant = self
            .config
            .tenant_for(&from.uri.host)
            .is_some_and(|t| std::ptr::eq(t, tenant));
        if !same_tenant {
            return self
                .reply(request, 403, "From domain does not match Request-URI")
                .into();
        }
        if trusted != Some(caller.as_str()) {
            match self.authenticate(request, tenant, &caller, source, credentials, true) {
                AuthStep::Pass => {}
                AuthStep::Answer(code, response) => return Reply::Now(code, response),
                AuthStep::Silent => return Reply::Silent,
            }
        }
        let Some(callee) = callee else {
            return self.reply(request, 404, "Not Found").into();
        };
        self.proxy
            .start(self, request, source, key, tenant, &caller, &callee, None)
    }

    /// Digest authentication of `user` in `tenant`, with the credentials
    /// [`Core::credentials`] picked from the request (Proxy-Authorization
    /// for requests other than REGISTER, RFC 3261 22.3). `proxy` selects 407
    /// and Proxy-Authenticate for the challenge. Successes and real failures
    /// go to the plugins, if any asked for authentication events.
    fn authenticate(
        &self,
        request: &Message,
        tenant: &Tenant,
        user: &str,
        source: &Source,
        credentials: Option<&Presented<'_>>,
        proxy: bool,
    ) -> AuthStep {
        let method = request.method().map(Method::as_str).unwrap_or("");
        let now = now_ms();
        let tenant_key = tenant_key(tenant);
        let verdict =
            self.auth
                .verify_presented(credentials, method, &tenant.realm, user, now, |name| {
                    self.directory.get(tenant_key, name).map(|e| &e.secrets)
                });
        // The digest username is the claimed user unless it did not match
        // (the verifier checks that before anything else).
        let attempt = |mismatch: bool| AuthAttempt {
            source: source.addr,
            transport: source.transport,
            tenant: tenant_key.to_owned(),
            user: credentials
                .filter(|_| mismatch)
                .and_then(Presented::username)
                .unwrap_or(user)
                .to_owned(),
            user_agent: request.headers.get("User-Agent").map(str::to_owned),
        };
        let stale = match verdict {
            AuthVerdict::Authenticated => {
                Stats::inc(&self.stats.auth_ok);
                let hears =
                    self.chain
                        .read()
                        .unwrap()
                        .hears_success(source.addr.ip(), tenant_key, user);
                if hears {
                    self.emit(Event::AuthSucceeded(attempt(false)));
                }
                return AuthStep::Pass;
            }
            AuthVerdict::Malformed(reason) => {
                let (code, response) = self.reply(request, 400, &reason);
                return AuthStep::Answer(code, response);
            }
            AuthVerdict::Failed(failure) => {
                Stats::inc(&self.stats.auth_failed);
                // Wrong password and unknown user look the same from outside.
                tracing::info!(?failure, user, "authentication failed");
                let event = Event::AuthFailed {
                    attempt: attempt(matches!(failure, Failure::UserMismatch)),
                    failure: match failure {
                        Failure::WrongPassword => AuthFailure::WrongPassword,
                        Failure::UnknownUser => AuthFailure::UnknownUser,
                        Failure::UserMismatch => AuthFailure::UserMismatch,
                        Failure::RealmMismatch => AuthFailure::RealmMismatch,
                    },
                };
                if self.emit(event) {
                    return AuthStep::Silent;
                }
                if matches!(failure, Failure::UserMismatch | Failure::RealmMismatch) {
                    let (code, response) =
                        self.reply(request, 403, "Authentication user or realm does not match");
                    return AuthStep::Answer(code, response);
                }
                false
            }
            AuthVerdict::Stale => true,
            AuthVerdict::Challenge | AuthVerdict::ForeignNonce | AuthVerdict::Replayed => false,
        };
        Stats::inc(&self.stats.challenges);
        let (code, reason, header) = if proxy {
            (407, "Proxy Authentication Required", "Proxy-Authenticate")
        } else {
            (401, "Unauthorized", "WWW-Authenticate")
        };
        let (code, mut response) = self.reply(request, code, reason);
        for value in self.auth.challenge(
            &tenant.realm,
            source.addr.ip(),
            stale,
            &self.algorithms,
            now,
        ) {
            response.headers.push(header, value);
        }
        AuthStep::Answer(code, response)
    }

    pub(crate) fn reply(&self, request: &Message, code: u16, reason: &str) -> (u16, Message) {
        let tag = (code > 100).then(new_tag);
        let mut response = request.response(code, reason, tag.as_deref());
        response
            .headers
            .push("Server", self.config.server.user_agent.as_str());
        (code, response)
    }

    fn reply_with(&self, request: &Message, answer: Answer) -> (u16, Message) {
        let (code, mut response) = self.reply(request, answer.code, &answer.reason);
        for (name, value) in answer.headers {
            response.headers.push(name, value);
        }
        (code, response)
    }

    /// Answers outside any transaction (malformed requests).
    fn answer_stateless(&self, request: &Message, code: u16, reason: &str, to: &Source) {
        let mut request = request.clone();
        // The request may be malformed anywhere, but if its top Via parses,
        // the answer's copy still records where the request came from.
        let top = request
            .headers
            .get("Via")
            .and_then(crate::sip::Via::split_top)
            .and_then(|(item, _)| crate::sip::Via::parse_list(item).ok())
            .and_then(|vias| vias.into_iter().next());
        if let Some(top) = top {
            mark_received(&mut request, to, top);
        }
        let (_, response) = self.reply(&request, code, reason);
        Stats::inc(&self.stats.responses_out);
        self.stats.count_response(code);
        self.out.send(to, response.to_bytes().into());
    }
}

/// Whether a credentials header names `realm` (`realm="REALM"`).
fn names_realm(header: &str, realm: &str) -> bool {
    header.match_indices("realm=\"").any(|(at, marker)| {
        header[at + marker.len()..]
            .strip_prefix(realm)
            .is_some_and(|rest| rest.starts_with('"'))
    })
}

/// The registration events that committed binding writes stand for.
fn registration_events(writes: &[Write], source: SocketAddr) -> Vec<Event> {
    writes
        .iter()
        .filter_map(|w| match w {
            Write::UpsertBinding(b) => Some(Event::Registered(Registration {
                source,
                tenant: b.tenant.clone(),
                extension: b.extension.clone(),
                contact: b.contact.clone(),
            })),
            Write::DeleteBinding {
                tenant,
                extension,
                key,
            } => Some(Event::Unregistered(Registration {
                source,
                tenant: tenant.clone(),
                extension: extension.clone(),
                contact: key.clone(),
            })),
            _ => None,
        })
        .collect()
}

/// Adds `received` and fills `rport` in the top Via (RFC 3261 18.2.1, RFC 3581),
/// so the response records where the request really came from. Responses
/// always go back to that address, never to one written in a header.
/// `top` is the top Via as [`Message::checked`] parsed it; returns
/// it as marked (None if the Via line has none), so the transaction key is
/// taken from it without parsing the header again.
fn mark_received(
    request: &mut Message,
    source: &Source,
    mut top: crate::sip::Via,
) -> Option<crate::sip::Via> {
    let ip = source.addr.ip();
    let sent_by_is_source = match &top.host {
        crate::sip::Host::Ip(addr) => *addr == ip,
        crate::sip::Host::Domain(_) => false,
    };
    let wants_rport = top.param("rport").is_some();
    if sent_by_is_source && !wants_rport {
        return Some(top);
    }
    let line = request.headers.get("Via")?;
    let (_, rest) = crate::sip::Via::split_top(line)?;
    // RFC 3261 received= carries a bare IPv6 address (no brackets).
    top.set_param("received", Some(crate::sip::ip_text(ip)));
    if wants_rport {
        top.set_param("rport", Some(source.addr.port().to_string()));
    }
    // Only the top Via is written anew; the others stay as they came.
    let mut rewritten = String::with_capacity(line.len() + 40);
    // Writing to a String cannot fail.
    let _ = write!(rewritten, "{top}");
    rewritten.push_str(rest);
    request.headers.replace_first("Via", rewritten);
    Some(top)
}

/// A fresh To tag (RFC 3261 19.3: at least 32 bits of randomness).
fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The digest algorithms offered, in the configured order.
pub fn algorithms(config: &Config) -> Vec<Algorithm> {
    config
        .auth
        .algorithms
        .iter()
        .map(|a| match a {
            AuthAlgorithm::Md5 => Algorithm::Md5,
            AuthAlgorithm::Sha256 => Algorithm::Sha256,
        })
        .collect()
}
