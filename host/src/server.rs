//! The gateway core: the message path from bytes to answer.
//!
//! ```text
//! bytes -> classify (CRLF keep-alive | SIP) -> parse (400 or drop)
//!       -> sanity (mandatory headers 400, Max-Forwards 483)
//!       -> server transaction (retransmissions answered from it)
//!       -> tenant by Request-URI host (404 for domains not served)
//!       -> method: REGISTER (digest, registrar) | OPTIONS | INVITE (digest) | 405 / 501
//! ```
//! Every request runs in its own task under a `tracing` span.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::{Algorithm, Authenticator, Failure, Verdict};
use crate::config::{AuthAlgorithm, Config, Tenant};
use crate::directory::Directory;
use crate::registrar::location::Aor;
use crate::registrar::{Answer, Registrar};
use crate::sip::{Message, Method, StartLine};
use crate::stats::Stats;
use crate::transaction::{Incoming, Key, Transactions};
use crate::transport::{Outbound, Source};

/// What transports hand their messages to.
pub trait Sink: Send + Sync + 'static {
    /// One datagram, or one framed message of a stream.
    fn receive(&self, data: &[u8], source: Source);
    /// Whether a new TCP connection from `peer` may be accepted.
    fn admit(&self, _peer: SocketAddr) -> bool {
        true
    }
    /// Whether an open connection from `peer` must now be closed.
    fn is_closed(&self, _peer: SocketAddr) -> bool {
        false
    }
}

/// Methods this gateway serves; listed in `Allow`.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER";

/// The tenant key used in storage: its domain, or "" for the default tenant.
pub fn tenant_key(tenant: &Tenant) -> &str {
    tenant.domain.as_deref().unwrap_or("")
}

/// Milliseconds since the UNIX epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Everything the message path needs, shared by all tasks.
pub struct Core {
    pub config: Arc<Config>,
    pub directory: Directory,
    pub auth: Authenticator,
    pub algorithms: Vec<Algorithm>,
    pub registrar: Registrar,
    pub transactions: Arc<Transactions>,
    pub out: Outbound,
    pub stats: Arc<Stats>,
}

/// The gateway as the transports see it.
#[derive(Clone)]
pub struct Gateway(pub Arc<Core>);

impl Sink for Gateway {
    fn receive(&self, data: &[u8], source: Source) {
        let core = &self.0;
        match source.transport {
            crate::transport::Transport::Udp => {
                Stats::inc(&core.stats.udp_packets_in);
                if data.len() > core.config.server.max_message_bytes {
                    Stats::inc(&core.stats.dropped_oversized);
                    return;
                }
                // Stray CRLFs on UDP are keep-alives of some phones: ignore them.
                if data.iter().all(|b| matches!(b, b'\r' | b'\n' | b' ')) {
                    Stats::inc(&core.stats.keepalives);
                    return;
                }
            }
            crate::transport::Transport::Tcp => {}
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
            Stats::inc(&core.stats.dropped_responses);
            return;
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
enum Reply {
    /// Answer now with this final response.
    Now(u16, Message),
    /// The answer leaves later (after a commit) through the transaction.
    Later,
}

impl From<(u16, Message)> for Reply {
    fn from((code, response): (u16, Message)) -> Reply {
        Reply::Now(code, response)
    }
}

impl Core {
    /// Runs one request through the message path, on the receiving thread:
    /// no task is spawned and nothing waits, so a request costs what its work
    /// costs. Only the registrar's commit defers the answer.
    fn handle_request(self: &Arc<Self>, mut request: Message, source: Source) {
        if let Err(reason) = request.check_request() {
            Stats::inc(&self.stats.bad_requests);
            if request.can_answer() {
                tracing::info!(%reason, "bad request");
                self.answer_stateless(&request, 400, &reason, &source);
            } else {
                Stats::inc(&self.stats.dropped_unparseable);
            }
            return;
        }
        mark_received(&mut request, &source);
        let Some(key) = Key::of(&request) else {
            self.answer_stateless(&request, 400, "Malformed Via", &source);
            return;
        };
        let method = request
            .method()
            .cloned()
            .unwrap_or(Method::Other(String::new()));
        match self
            .transactions
            .incoming(&key, matches!(method, Method::Ack))
        {
            Incoming::New => {}
            Incoming::Retransmission(last) => {
                Stats::inc(&self.stats.retransmissions_absorbed);
                if let Some(bytes) = last {
                    Stats::inc(&self.stats.responses_out);
                    self.out.send(&source, bytes);
                }
                return;
            }
            Incoming::AckAbsorbed | Incoming::StrayAck => return,
        }
        if let Reply::Now(code, response) = self.process(request, &method, &source, &key) {
            self.send_final(&key, code, &response, &source);
        }
    }

    /// Sends a transaction's final response and records it there.
    fn send_final(&self, key: &Key, code: u16, response: &Message, to: &Source) {
        Stats::inc(&self.stats.responses_out);
        self.transactions
            .respond(key, response.to_bytes().into(), code, to, &self.out);
    }

    /// Does the work of a new request: its final response, or `Later`.
    fn process(
        self: &Arc<Self>,
        request: Message,
        method: &Method,
        source: &Source,
        key: &Key,
    ) -> Reply {
        if let Ok(Some(0)) = request.max_forwards() {
            if *method != Method::Options {
                return self.reply(&request, 483, "Too Many Hops").into();
            }
        }
        if *method == Method::Cancel {
            // No INVITE is ever left pending here yet, so nothing can be cancelled.
            return self
                .reply(&request, 481, "Call/Transaction Does Not Exist")
                .into();
        }
        let Some(uri) = request.request_uri() else {
            return self.reply(&request, 400, "Bad Request-URI").into();
        };
        let host = uri.host.to_string();
        let Some(tenant) = self.config.tenant_for_host(host.trim_matches(['[', ']'])) else {
            // Never a relay: a domain we do not serve is refused, not forwarded.
            return self.reply(&request, 404, "Domain not served here").into();
        };
        let request = &request;
        match method {
            Method::Register => self.register(request, tenant, source, key),
            Method::Options => {
                let (code, mut response) = self.reply(request, 200, "OK");
                response.headers.push("Allow", ALLOW);
                response.headers.push("Accept", "application/sdp");
                response.headers.push("Supported", "path, outbound");
                Reply::Now(code, response)
            }
            Method::Invite => self.invite(request, tenant, source).into(),
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
        request: &Message,
        tenant: &Tenant,
        source: &Source,
        key: &Key,
    ) -> Reply {
        let Ok(to) = request.to() else {
            return self.reply(request, 400, "Malformed To").into();
        };
        let Some(extension) = to.uri.user.clone() else {
            return self.reply(request, 400, "To has no extension").into();
        };
        let to_host = to.uri.host.to_string();
        let same_tenant = self
            .config
            .tenant_for_host(to_host.trim_matches(['[', ']']))
            .is_some_and(|t| std::ptr::eq(t, tenant));
        if !same_tenant {
            return self
                .reply(request, 403, "To domain does not match Request-URI")
                .into();
        }
        if let Some(answer) = self.authenticate(request, tenant, &extension, source, false) {
            return answer.into();
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
        // The 200 OK leaves from the store's writer thread once the binding is
        // committed, never before.
        let core = self.clone();
        let key = key.clone();
        let to = *source;
        self.registrar.commit(writes, move |committed| {
            if committed {
                core.send_final(&key, code, &response, &to);
            } else {
                let mut failed = response;
                failed.start = StartLine::Response {
                    code: 500,
                    reason: "Binding not stored".into(),
                };
                failed.headers.remove("Contact");
                core.send_final(&key, 500, &failed, &to);
            }
        });
        Reply::Later
    }

    /// INVITE: the caller must authenticate as the From extension. Routing comes
    /// with the call router; until then the callee is reported unavailable.
    fn invite(&self, request: &Message, tenant: &Tenant, source: &Source) -> (u16, Message) {
        let Ok(from) = request.from() else {
            return self.reply(request, 400, "Malformed From");
        };
        let Some(caller) = from.uri.user.clone() else {
            return self.reply(request, 403, "From has no extension");
        };
        if let Some(answer) = self.authenticate(request, tenant, &caller, source, true) {
            return answer;
        }
        let callee = request.request_uri().and_then(|u| u.user.clone());
        let known = callee
            .as_deref()
            .is_some_and(|c| self.directory.get(tenant_key(tenant), c).is_some());
        if !known {
            return self.reply(request, 404, "Not Found");
        }
        self.reply(request, 480, "Temporarily Unavailable")
    }

    /// Digest authentication of `user` in `tenant`: None when authenticated,
    /// else the answer to send (challenge or refusal). `proxy` selects 407 and
    /// Proxy-Authorization (requests other than REGISTER, RFC 3261 22.3).
    fn authenticate(
        &self,
        request: &Message,
        tenant: &Tenant,
        user: &str,
        source: &Source,
        proxy: bool,
    ) -> Option<(u16, Message)> {
        let header_name = if proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        let realm_marker = format!("realm=\"{}\"", tenant.realm);
        // A phone may carry credentials for several realms: use ours if present.
        let header = request
            .headers
            .get_all(header_name)
            .find(|h| h.contains(&realm_marker))
            .or_else(|| request.headers.get(header_name));
        let method = request.method().map(Method::as_str).unwrap_or("");
        let now = now_ms();
        let tenant_key = tenant_key(tenant);
        let verdict = self.auth.verify(
            header,
            method,
            &tenant.realm,
            user,
            source.addr.ip(),
            now,
            |name| {
                self.directory
                    .get(tenant_key, name)
                    .map(|e| e.secrets.clone())
            },
        );
        let stale = match verdict {
            Verdict::Authenticated => {
                Stats::inc(&self.stats.auth_ok);
                return None;
            }
            Verdict::Malformed(reason) => return Some(self.reply(request, 400, &reason)),
            Verdict::Failed(failure @ (Failure::UserMismatch | Failure::RealmMismatch)) => {
                Stats::inc(&self.stats.auth_failed);
                tracing::info!(?failure, user, "authentication refused");
                return Some(self.reply(
                    request,
                    403,
                    "Authentication user or realm does not match",
                ));
            }
            Verdict::Failed(failure) => {
                Stats::inc(&self.stats.auth_failed);
                // Wrong password and unknown user look the same from outside.
                tracing::info!(?failure, user, "authentication failed");
                false
            }
            Verdict::Stale => true,
            Verdict::Challenge | Verdict::ForeignNonce | Verdict::Replayed => false,
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
        Some((code, response))
    }

    fn reply(&self, request: &Message, code: u16, reason: &str) -> (u16, Message) {
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
        mark_received(&mut request, to);
        let (_, response) = self.reply(&request, code, reason);
        Stats::inc(&self.stats.responses_out);
        self.out.send(to, response.to_bytes().into());
    }
}

/// Adds `received` and fills `rport` in the top Via (RFC 3261 18.2.1, RFC 3581),
/// so the response records where the request really came from. Responses
/// always go back to that address, never to one written in a header.
fn mark_received(request: &mut Message, source: &Source) {
    let Some(first_line) = request.headers.get("Via").map(str::to_owned) else {
        return;
    };
    let Ok(mut vias) = crate::sip::Via::parse_list(&first_line) else {
        return;
    };
    let Some(top) = vias.first_mut() else {
        return;
    };
    let ip = source.addr.ip();
    let sent_by_is_source = match &top.host {
        crate::sip::Host::Ip(addr) => *addr == ip,
        crate::sip::Host::Domain(_) => false,
    };
    let mut changed = false;
    if !sent_by_is_source {
        top.set_param("received", Some(ip_text(ip)));
        changed = true;
    }
    if top.param("rport").is_some() {
        top.set_param("rport", Some(source.addr.port().to_string()));
        if sent_by_is_source {
            top.set_param("received", Some(ip_text(ip)));
        }
        changed = true;
    }
    if !changed {
        return;
    }
    let rewritten = vias
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    // Replace the first Via line only, keeping the others in order.
    let rest: Vec<String> = request
        .headers
        .get_all("Via")
        .skip(1)
        .map(str::to_owned)
        .collect();
    request.headers.remove("Via");
    let mut lines = vec![rewritten];
    lines.extend(rest);
    // Via must stay the first headers' order-wise relevant set; position within
    // the header block does not matter to peers, only the order among Vias.
    for line in lines {
        request.headers.push("Via", line);
    }
}

fn ip_text(ip: IpAddr) -> String {
    // RFC 3261 received= carries a bare IPv6 address (no brackets).
    ip.to_string()
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

/// The StartLine of a request, for logs.
pub fn describe(message: &Message) -> String {
    match &message.start {
        StartLine::Request { method, uri } => format!("{method} {uri}"),
        StartLine::Response { code, reason } => format!("{code} {reason}"),
    }
}
