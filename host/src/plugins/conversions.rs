//! Between the WIT types of [`super::bindings`] and the plain types of
//! [`super`]. Values coming from a guest are untrusted: status codes are
//! checked and reason texts made safe for a SIP status line or a log.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::bindings::sipfence::plugin::types as wit;
use super::{
    AuthAttempt, AuthFailure, CallInfo, CallStarted, Event, EventKind, Reaction, Registration,
    RequestView, RouteDecision, Verdict,
};
use crate::cdr::{Cdr, Disposition};
use crate::sip::{ip_text, Method};
use crate::transport::Transport;

/// Longest reason text kept from a plugin (a SIP reason phrase or a ban's
/// evidence); longer ones are cut.
pub(super) const MAX_REASON_BYTES: usize = 200;

/// Which hooks a plugin implements, as its `hooks()` said.
#[derive(Default)]
pub(super) struct Hooks {
    pub on_request: bool,
    /// `on-event` for these kinds, indexed by [`EventKind::index`].
    pub events: [bool; 4],
    pub route: bool,
    pub user_agent: bool,
}

pub(super) fn hooks(h: wit::Hooks) -> Hooks {
    Hooks {
        on_request: h.contains(wit::Hooks::ON_REQUEST),
        events: EventKind::ALL.map(|kind| {
            h.contains(match kind {
                EventKind::Auth => wit::Hooks::AUTH_EVENTS,
                EventKind::Registration => wit::Hooks::REGISTRATION_EVENTS,
                EventKind::Call => wit::Hooks::CALL_EVENTS,
                EventKind::Voicemail => wit::Hooks::VOICEMAIL_EVENTS,
            })
        }),
        route: h.contains(wit::Hooks::ROUTE),
        user_agent: h.contains(wit::Hooks::USER_AGENT),
    }
}

/// A new call for the `route` hook.
pub(super) fn call_info(c: &CallInfo) -> wit::CallInfo {
    wit::CallInfo {
        tenant: c.tenant.clone(),
        caller: c.caller.clone(),
        called: c.called.clone(),
        source: address(c.source),
        transport: transport(c.transport),
        from_trunk: c.from_trunk.clone(),
    }
}

/// A guest's route decision, or why it is unusable.
pub(super) fn route_decision(d: wit::RouteDecision) -> Result<RouteDecision, String> {
    Ok(match d {
        wit::RouteDecision::NoOpinion => RouteDecision::NoOpinion,
        wit::RouteDecision::Extension(n) => RouteDecision::Extension(n),
        wit::RouteDecision::RingGroup(n) => RouteDecision::RingGroup(n),
        wit::RouteDecision::Trunk(t) => RouteDecision::Trunk {
            id: t.id,
            number: t.number,
            allow_from_trunk: t.allow_from_trunk,
        },
        wit::RouteDecision::Voicemail(n) => RouteDecision::Voicemail(n),
        wit::RouteDecision::Reject(r) => {
            if !(400..=699).contains(&r.code) {
                return Err(format!("reject with status {} (must be 400-699)", r.code));
            }
            RouteDecision::Reject {
                code: r.code,
                reason: one_line(r.reason),
            }
        }
    })
}

/// A guest's verdict, or why it is unusable (then the plugin's failure
/// policy applies, as for a trap).
pub(super) fn verdict(v: wit::Verdict) -> Result<Verdict, String> {
    Ok(match v {
        wit::Verdict::Continue | wit::Verdict::ContinueForUserAgent => Verdict::Continue,
        wit::Verdict::Reject(r) => {
            if !(400..=699).contains(&r.code) {
                return Err(format!("reject with status {} (must be 400-699)", r.code));
            }
            Verdict::Reject {
                code: r.code,
                reason: one_line(r.reason),
            }
        }
        wit::Verdict::Drop => Verdict::Drop,
        wit::Verdict::Ban(b) => Verdict::Ban {
            duration: Duration::from_millis(b.duration_ms),
            reason: one_line(b.reason),
        },
        wit::Verdict::Trust(t) => Verdict::Trust {
            tenant: t.tenant,
            extension: t.extension,
        },
    })
}

pub(super) fn reaction(r: wit::Reaction) -> Reaction {
    match r {
        // The promise is kept by the caller (`Plugin::on_event`).
        wit::Reaction::None | wit::Reaction::NoneForRepeats(_) => Reaction::None,
        wit::Reaction::Ban(b) => Reaction::Ban {
            duration: Duration::from_millis(b.duration_ms),
            reason: one_line(b.reason),
        },
    }
}

/// Text fit for a status line or a log field: control characters become
/// spaces, at most [`MAX_REASON_BYTES`].
pub(super) fn one_line(mut s: String) -> String {
    if s.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    if s.chars().any(char::is_control) {
        s = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
    }
    s
}

pub(super) fn address(a: SocketAddr) -> wit::Address {
    wit::Address {
        ip: ip_text(a.ip()),
        port: a.port(),
    }
}

/// The address an `ip-address` is.
pub(super) fn ip_from_wit(ip: &wit::IpAddress) -> IpAddr {
    match *ip {
        wit::IpAddress::Ipv4(n) => IpAddr::V4(n.into()),
        wit::IpAddress::Ipv6((high, low)) => {
            IpAddr::V6((u128::from(high) << 64 | u128::from(low)).into())
        }
    }
}

/// An address as the numbers of `ip-address`; IPv4-mapped IPv6 as IPv4.
pub(super) fn ip_address(ip: IpAddr) -> wit::IpAddress {
    match ip {
        IpAddr::V4(v4) => wit::IpAddress::Ipv4(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => wit::IpAddress::Ipv4(u32::from(v4)),
            None => {
                let bits = u128::from(v6);
                wit::IpAddress::Ipv6(((bits >> 64) as u64, bits as u64))
            }
        },
    }
}

/// What `on-request` passes with the call, without the User-Agent: built
/// once per chain run (see [`user_agent`]).
pub(super) fn basics(request: &RequestView) -> wit::RequestBasics {
    let info = request.info();
    wit::RequestBasics {
        method: request
            .message()
            .method()
            .map_or(wit::Method::Other, method),
        source_ip: ip_address(info.source.ip()),
        source_port: info.source.port(),
        transport: transport(info.transport),
        source_verified: info.source_verified,
        user_agent: None,
        // Each plugin's own, set by the chain before its call.
        kv_generation: 0,
    }
}

/// `request-basics.user-agent`, for the plugins whose hooks ask for it.
pub(super) fn user_agent(request: &RequestView) -> Option<String> {
    user_agent_str(request).map(str::to_owned)
}

/// The User-Agent header's value, if any.
pub(super) fn user_agent_str(request: &RequestView) -> Option<&str> {
    request.message().headers.get("User-Agent")
}

fn method(m: &Method) -> wit::Method {
    match m {
        Method::Register => wit::Method::Register,
        Method::Invite => wit::Method::Invite,
        Method::Ack => wit::Method::Ack,
        Method::Bye => wit::Method::Bye,
        Method::Cancel => wit::Method::Cancel,
        Method::Options => wit::Method::Options,
        Method::Info => wit::Method::Info,
        Method::Update => wit::Method::Update,
        Method::Prack => wit::Method::Prack,
        Method::Subscribe => wit::Method::Subscribe,
        Method::Notify => wit::Method::Notify,
        Method::Refer => wit::Method::Refer,
        Method::Message => wit::Method::Message,
        Method::Publish => wit::Method::Publish,
        Method::Other(_) => wit::Method::Other,
    }
}

pub(super) fn transport(t: Transport) -> wit::Transport {
    match t {
        Transport::Udp => wit::Transport::Udp,
        Transport::Tcp => wit::Transport::Tcp,
    }
}

fn attempt(a: &AuthAttempt) -> wit::AuthAttempt {
    wit::AuthAttempt {
        source: address(a.source),
        transport: transport(a.transport),
        tenant: a.tenant.clone(),
        user: a.user.clone(),
        user_agent: a.user_agent.clone(),
    }
}

fn registration(r: &Registration) -> wit::Registration {
    wit::Registration {
        source: address(r.source),
        tenant: r.tenant.clone(),
        extension: r.extension.clone(),
        contact: r.contact.clone(),
    }
}

fn call_started(c: &CallStarted) -> wit::CallStarted {
    wit::CallStarted {
        call_id: c.call_id.clone(),
        tenant: c.tenant.clone(),
        caller: c.caller.clone(),
        callee: c.callee.clone(),
        source: address(c.source),
        transport: transport(c.transport),
        user_agent: c.user_agent.clone(),
        route: c.route.clone(),
    }
}

fn call_record(cdr: &Cdr, source: SocketAddr, t: Transport) -> wit::CallRecord {
    wit::CallRecord {
        call_id: cdr.call_id.clone(),
        tenant: cdr.tenant.clone(),
        caller: cdr.caller.clone(),
        source: address(source),
        transport: transport(t),
        user_agent: cdr.caller_user_agent.clone(),
        callee: cdr.callee.clone(),
        route: cdr.route.clone(),
        answered_by: cdr.answered_by.clone(),
        start_ms: cdr.start_ms,
        answer_ms: cdr.answer_ms,
        end_ms: cdr.end_ms,
        duration_ms: cdr.duration_ms,
        disposition: match cdr.disposition {
            Disposition::Answered => wit::Disposition::Answered,
            Disposition::NoAnswer => wit::Disposition::NoAnswer,
            Disposition::Busy => wit::Disposition::Busy,
            Disposition::Failed => wit::Disposition::Failed,
            Disposition::Cancelled => wit::Disposition::Cancelled,
        },
        status: cdr.status,
    }
}

/// Converted once per event, then lent to every plugin of the chain.
pub(super) fn event(e: &Event) -> wit::Event {
    match e {
        Event::AuthFailed {
            attempt: a,
            failure,
        } => wit::Event::AuthFailed(wit::AuthFailed {
            attempt: attempt(a),
            failure: match failure {
                AuthFailure::WrongPassword => wit::AuthFailure::WrongPassword,
                AuthFailure::UnknownUser => wit::AuthFailure::UnknownUser,
                AuthFailure::UserMismatch => wit::AuthFailure::UserMismatch,
                AuthFailure::RealmMismatch => wit::AuthFailure::RealmMismatch,
            },
        }),
        Event::AuthSucceeded(a) => wit::Event::AuthSucceeded(attempt(a)),
        Event::Registered(r) => wit::Event::Registered(registration(r)),
        Event::Unregistered(r) => wit::Event::Unregistered(registration(r)),
        Event::CallStarted(c) => wit::Event::CallStarted(call_started(c)),
        Event::CallEnded {
            cdr,
            source,
            transport,
        } => wit::Event::CallEnded(call_record(cdr, *source, *transport)),
        Event::VoicemailRecorded { voicemail: v, .. } => {
            wit::Event::VoicemailRecorded(wit::Voicemail {
                id: v.id,
                tenant: v.tenant.clone(),
                mailbox: v.mailbox.clone(),
                email: v.email.clone(),
                caller: v.caller.clone(),
                caller_name: v.caller_name.clone(),
                call_id: v.call_id.clone(),
                received_ms: v.received_ms,
                duration_ms: v.duration_ms,
                file_name: v.file_name.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_codes_outside_4xx_6xx_are_refused() {
        let reject = |code| {
            verdict(wit::Verdict::Reject(wit::Rejection {
                code,
                reason: "x".into(),
            }))
        };
        assert!(reject(200).is_err());
        assert!(reject(399).is_err());
        assert!(reject(700).is_err());
        assert_eq!(
            reject(403),
            Ok(Verdict::Reject {
                code: 403,
                reason: "x".into()
            })
        );
    }

    #[test]
    fn ip_addresses_as_numbers() {
        let n = |s: &str| ip_address(s.parse().unwrap());
        assert!(matches!(n("192.0.2.1"), wit::IpAddress::Ipv4(0xc000_0201)));
        assert!(matches!(
            n("::ffff:192.0.2.1"),
            wit::IpAddress::Ipv4(0xc000_0201)
        ));
        assert!(matches!(
            n("2001:db8::7"),
            wit::IpAddress::Ipv6((0x2001_0db8_0000_0000, 7))
        ));
    }

    #[test]
    fn reasons_are_one_short_line() {
        assert_eq!(one_line("a\r\nVia: x".into()), "a  Via: x");
        let long = "é".repeat(300);
        let cut = one_line(long);
        assert!(cut.len() <= MAX_REASON_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
