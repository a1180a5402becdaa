//! OPTIONS pings to phones behind NAT.
//!
//! A phone behind NAT is reachable only while its NAT keeps the mapping its
//! REGISTER opened, and a phone that lost power stays "registered" until its
//! binding expires. So, when `nat.ping_interval_ms` is set, every UDP binding
//! whose Contact does not name the address its REGISTER came from gets an
//! OPTIONS from the gateway once it has sent nothing for that long, always to
//! that source address, never to the Contact. Anything the address sends
//! counts as an answer (the 200 to the ping, a re-REGISTER, a STUN
//! keep-alive); a binding that leaves `nat.ping_failures` pings in a row
//! unanswered is removed.
//!
//! The receive path records "last heard" only for addresses on the watch
//! list (one read lock and a lookup per message), which the pinger rebuilds
//! every round.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::registrar::location::{Aor, Binding};
use crate::server::Core;
use crate::sip::{Host, Uri};
use crate::transport::Transport;

/// Branch prefix of our pings: their answers need no matching.
pub const PING_BRANCH: &str = "z9hG4bKsfping";

/// When each watched address was last heard from (Unix ms).
#[derive(Default)]
pub struct Watch {
    heard: RwLock<HashMap<SocketAddr, AtomicU64>>,
    /// Whether `heard` has entries: without pings (the default) the receive
    /// path pays one relaxed load, not a lock.
    watching: AtomicBool,
}

impl Watch {
    /// Called for every message received: cheap unless `addr` is watched.
    pub fn heard(&self, addr: SocketAddr) {
        if !self.watching.load(Ordering::Relaxed) {
            return;
        }
        if let Some(at) = self.heard.read().unwrap().get(&addr) {
            at.store(crate::now_ms(), Ordering::Relaxed);
        }
    }

    fn last_heard(&self, addr: SocketAddr) -> Option<u64> {
        self.heard
            .read()
            .unwrap()
            .get(&addr)
            .map(|at| at.load(Ordering::Relaxed))
    }

    /// Watches exactly `addrs` from now on; a new address counts as heard now.
    fn replace(&self, addrs: impl Iterator<Item = SocketAddr>, now_ms: u64) {
        let mut heard = self.heard.write().unwrap();
        let mut next = HashMap::new();
        for addr in addrs {
            let at = heard
                .remove(&addr)
                .unwrap_or_else(|| AtomicU64::new(now_ms));
            next.insert(addr, at);
        }
        self.watching.store(!next.is_empty(), Ordering::Relaxed);
        *heard = next;
    }
}

/// Whether a binding is behind NAT: its Contact names another host than the
/// one its REGISTER came from.
pub fn behind_nat(binding: &Binding) -> bool {
    match Uri::parse(&binding.contact).map(|u| u.host) {
        Ok(Host::Ip(ip)) => ip.to_canonical() != binding.source.ip().to_canonical(),
        _ => true,
    }
}

/// Ping state of one binding.
#[derive(Default)]
struct Pinged {
    /// When the unanswered ping left.
    sent_at: Option<u64>,
    failures: u32,
}

/// Runs the pinger every `interval` until the task is dropped.
pub fn spawn(core: Arc<Core>, interval: Duration, failures: u32) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pinged: HashMap<(Aor, String), Pinged> = HashMap::new();
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            round(&core, &mut pinged, interval.as_millis() as u64, failures);
        }
    })
}

fn round(core: &Arc<Core>, pinged: &mut HashMap<(Aor, String), Pinged>, interval: u64, limit: u32) {
    let now = crate::now_ms();
    let natted: Vec<(Aor, Binding)> = core
        .registrar
        .location
        .all(now)
        .into_iter()
        .filter(|(_, b)| b.transport == Transport::Udp && behind_nat(b))
        .collect();
    core.keepalive
        .replace(natted.iter().map(|(_, b)| b.source), now);
    let mut next = HashMap::with_capacity(natted.len());
    for (aor, binding) in natted {
        let key = (aor, binding.key().to_owned());
        let mut state = pinged.remove(&key).unwrap_or_default();
        let heard = core.keepalive.last_heard(binding.source).unwrap_or(now);
        match state.sent_at {
            Some(sent) if heard < sent => state.failures += 1,
            Some(_) => state = Pinged::default(),
            None => {}
        }
        if state.failures >= limit {
            tracing::info!(extension = %key.0.extension, source = %binding.source,
                failures = state.failures, "phone behind NAT stopped answering pings: binding removed");
            crate::stats::Stats::inc(&core.stats.keepalive_removed);
            let emitter = core.clone();
            core.registrar
                .forget(&key.0, &key.1, binding.source, now, move |event| {
                    emitter.emit(event);
                });
            continue;
        }
        if now.saturating_sub(heard) >= interval {
            ping(core, &binding);
            state.sent_at = Some(now);
        } else {
            state.sent_at = None;
        }
        next.insert(key, state);
    }
    *pinged = next;
}

/// One OPTIONS to the address the binding's REGISTER came from.
fn ping(core: &Core, binding: &Binding) {
    let Some(to) = core.out.route_to(binding.source, Transport::Udp) else {
        return;
    };
    let local = core.out.local_host_port(binding.source);
    let tag = rand::random::<u64>();
    let text = format!(
        "OPTIONS {contact} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={PING_BRANCH}{tag:x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:keepalive@{local}>;tag={tag:x}\r\n\
         To: <{contact}>\r\n\
         Call-ID: ping-{tag:x}\r\n\
         CSeq: 1 OPTIONS\r\n\
         User-Agent: {ua}\r\n\
         Content-Length: 0\r\n\r\n",
        contact = binding.contact,
        ua = core.config.server.user_agent,
    );
    crate::stats::Stats::inc(&core.stats.keepalive_pings);
    core.out.send(&to, text.into_bytes().into());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(contact: &str, source: &str) -> Binding {
        Binding {
            instance_key: None,
            contact: contact.into(),
            source: source.parse().unwrap(),
            transport: Transport::Udp,
            call_id: "c".into(),
            cseq: 1,
            expires_at_ms: 0,
            registered_at_ms: 0,
            user_agent: None,
        }
    }

    #[test]
    fn behind_nat_when_the_contact_names_another_host() {
        assert!(!behind_nat(&binding(
            "sip:1@127.0.0.5:5090",
            "127.0.0.5:40000"
        )));
        assert!(behind_nat(&binding(
            "sip:1@127.0.0.9:5999",
            "127.0.0.5:40000"
        )));
        assert!(behind_nat(&binding("sip:1@phone.lan", "127.0.0.5:40000")));
    }

    #[test]
    fn only_watched_addresses_are_recorded() {
        let watch = Watch::default();
        let a: SocketAddr = "127.0.0.5:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.6:1".parse().unwrap();
        watch.heard(a);
        assert_eq!(watch.last_heard(a), None);
        watch.replace([a].into_iter(), 10);
        watch.heard(a);
        watch.heard(b);
        let heard_a = watch.last_heard(a).unwrap();
        assert!(heard_a > 10, "a message from a watched address is recorded");
        assert_eq!(watch.last_heard(b), None);
        // Replacing keeps what was heard of an address still watched.
        watch.replace([a, b].into_iter(), 30);
        assert_eq!(watch.last_heard(a), Some(heard_a));
        assert_eq!(watch.last_heard(b), Some(30));
    }
}
