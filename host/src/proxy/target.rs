//! Where a call goes: a called number becomes a plan of steps, each step a
//! set of phones rung at once.
//!
//! An extension is one step with every registered device ("one number, many
//! devices"). A ring-all group is one step with every member's devices; a
//! hunt group one step per member, each with its own timeout.
//!
//! The address a phone is rung at comes from its binding, and only ever
//! names a host that has itself talked to us: the Contact's port on the
//! REGISTER's source IP when the Contact names that IP (a phone that listens
//! on another port than it sent from), else the source address itself (NAT:
//! the Contact names an address we cannot reach, or one a scanner made up).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{Calls, Credentials, Strategy, Tenant, Trunk, VOICEMAIL_TARGET};
use crate::registrar::location::{Aor, Binding, Location};
use crate::sip::{Host, Uri};
use crate::transport::{Outbound, Source, Transport};

/// One phone to ring.
#[derive(Clone, Debug)]
pub struct Target {
    /// The Request-URI: the registered Contact.
    pub uri: Uri,
    /// Where the request is sent.
    pub to: Source,
    /// For a trunk that may challenge us: what we answer with.
    pub credentials: Option<Credentials>,
}

/// Phones rung together; the next step starts when they all failed or the
/// step's timeout passed.
#[derive(Clone, Debug)]
pub struct Step {
    pub targets: Vec<Target>,
    pub timeout: Option<Duration>,
}

/// The routing decision for a called number.
#[derive(Debug)]
pub enum Routed {
    Plan(Plan),
    /// Neither an extension nor a ring group of the tenant.
    NotFound,
}

/// How a call rings.
#[derive(Debug)]
pub struct Plan {
    /// "extension:101", "ring-group:600": recorded in the CDR.
    pub route: String,
    pub steps: VecDeque<Step>,
    /// The whole call rings at most this long.
    pub ring_time: Duration,
    /// Where the call goes when nobody answers, everybody is busy, or no
    /// phone could be rung.
    pub forwards: Forwards,
}

/// An extension's `no_answer`, `busy` and `unavailable` targets: a number,
/// or [`VOICEMAIL_TARGET`] for the mailbox of `mailbox`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forwards {
    pub no_answer: Option<String>,
    pub busy: Option<String>,
    pub unavailable: Option<String>,
    /// The extension whose mailbox "voicemail" means (None for groups and
    /// trunks, which have none).
    pub mailbox: Option<String>,
}

impl Forwards {
    /// A call routed straight to `mailbox`: nothing rings, the mailbox
    /// answers (through the `unavailable` path).
    pub fn straight_to_voicemail(mailbox: &str) -> Forwards {
        Forwards {
            unavailable: Some(VOICEMAIL_TARGET.to_owned()),
            mailbox: Some(mailbox.to_owned()),
            ..Forwards::default()
        }
    }
}

/// Where registered phones are found, and how they are reached.
pub struct Lookup<'a> {
    pub location: &'a Location,
    pub out: &'a Outbound,
    pub now_ms: u64,
}

/// Resolves `number` in `tenant` for a call from `caller` (who is never
/// rung by their own call to a group).
pub fn route(
    tenant: &Tenant,
    tenant_key: &str,
    number: &str,
    caller: &str,
    calls: &Calls,
    lookup: &Lookup,
) -> Routed {
    let phones = |extension: &str| -> Vec<Target> {
        let aor = Aor {
            tenant: tenant_key.to_owned(),
            extension: extension.to_owned(),
        };
        let mut targets: Vec<Target> = lookup
            .location
            .lookup(&aor, lookup.now_ms)
            .iter()
            .filter_map(|b| target(b, lookup.out))
            .collect();
        // A static binding: the configured address, always there.
        let fixed = tenant.extension(extension).and_then(|e| e.address);
        if let Some(addr) = fixed {
            if !targets.iter().any(|t| t.to.addr == addr) {
                targets.extend(static_target(extension, addr, lookup.out));
            }
        }
        targets
    };
    if let Some(extension) = tenant.extension(number) {
        let ring_time = extension.ring_time_ms.unwrap_or(calls.ring_time_ms);
        return Routed::Plan(Plan {
            route: format!("extension:{number}"),
            steps: VecDeque::from([Step {
                targets: phones(number),
                timeout: None,
            }]),
            ring_time: Duration::from_millis(ring_time),
            forwards: Forwards {
                no_answer: extension.no_answer.clone(),
                busy: extension.busy.clone(),
                unavailable: extension.unavailable.clone(),
                mailbox: Some(number.to_owned()),
            },
        });
    }
    if let Some(group) = tenant.ring_group(number) {
        let members = group.members.iter().filter(|m| m.as_str() != caller);
        let steps = match group.strategy {
            Strategy::RingAll => VecDeque::from([Step {
                targets: members.flat_map(|m| phones(m)).collect(),
                timeout: None,
            }]),
            Strategy::Hunt => members
                .map(|m| Step {
                    targets: phones(m),
                    timeout: Some(Duration::from_millis(group.member_timeout_ms)),
                })
                .filter(|s| !s.targets.is_empty())
                .collect(),
        };
        return Routed::Plan(Plan {
            route: format!("ring-group:{number}"),
            steps,
            ring_time: Duration::from_millis(group.ring_time_ms.unwrap_or(calls.ring_time_ms)),
            forwards: Forwards::default(),
        });
    }
    Routed::NotFound
}

/// A call out through `trunk`: one branch to the peer's address, with the
/// Request-URI `sip:NUMBER@ADDRESS`.
pub fn trunk_plan(trunk: &Trunk, number: &str, calls: &Calls, out: &Outbound) -> Plan {
    let uri = Uri::parse(&format!(
        "sip:{number}@{}",
        crate::transport::host_port(trunk.address)
    ));
    let targets = match (uri, out.route_to(trunk.address, Transport::Udp)) {
        (Ok(uri), Some(to)) => vec![Target {
            uri,
            to,
            credentials: trunk.credentials.clone(),
        }],
        _ => Vec::new(),
    };
    Plan {
        route: format!("trunk:{}", trunk.id),
        steps: VecDeque::from([Step {
            targets,
            timeout: None,
        }]),
        ring_time: Duration::from_millis(calls.ring_time_ms),
        forwards: Forwards::default(),
    }
}

/// An extension's configured `address` (a static binding, UDP).
fn static_target(extension: &str, addr: SocketAddr, out: &Outbound) -> Option<Target> {
    let uri = Uri::parse(&format!(
        "sip:{extension}@{}",
        crate::transport::host_port(addr)
    ))
    .ok()?;
    Some(Target {
        uri,
        to: out.route_to(addr, Transport::Udp)?,
        credentials: None,
    })
}

/// The phone behind one binding, if it can be reached.
fn target(binding: &Binding, out: &Outbound) -> Option<Target> {
    let uri = Uri::parse(&binding.contact).ok()?;
    let addr = destination(&uri, binding.source, binding.transport);
    let to = out.route_to(addr, binding.transport)?;
    Some(Target {
        uri,
        to,
        credentials: None,
    })
}

/// The address a binding is rung at (see the module comment).
pub fn destination(contact: &Uri, source: SocketAddr, transport: Transport) -> SocketAddr {
    if transport == Transport::Tcp {
        // Over TCP the phone's own connection is the only way in.
        return source;
    }
    match &contact.host {
        Host::Ip(ip) if same_ip(*ip, source.ip()) => {
            SocketAddr::new(source.ip(), contact.port.unwrap_or(5060))
        }
        _ => source,
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn contact_port_is_used_only_on_the_source_ip() {
        let contact = Uri::parse("sip:101@127.0.0.5:5090").unwrap();
        assert_eq!(
            destination(&contact, addr("127.0.0.5:40000"), Transport::Udp),
            addr("127.0.0.5:5090")
        );
    }

    #[test]
    fn a_contact_naming_another_host_is_reached_at_the_source() {
        // NAT: the phone wrote its private address; a scanner may write anything.
        for contact in [
            "sip:101@127.0.0.9:5999",
            "sip:101@1.1.1.1",
            "sip:101@phone.example",
        ] {
            let contact = Uri::parse(contact).unwrap();
            assert_eq!(
                destination(&contact, addr("127.0.0.5:40000"), Transport::Udp),
                addr("127.0.0.5:40000")
            );
        }
    }

    #[test]
    fn tcp_phones_are_reached_over_their_connection() {
        let contact = Uri::parse("sip:101@127.0.0.5:5090;transport=tcp").unwrap();
        assert_eq!(
            destination(&contact, addr("127.0.0.5:40000"), Transport::Tcp),
            addr("127.0.0.5:40000")
        );
    }
}
