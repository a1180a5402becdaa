//! SIP transports: UDP sockets and TCP connections on the same port
//! (RFC 3261 section 18), IPv4 and IPv6.
//!
//! - [`udp`]: one receive loop per socket; each datagram is one message.
//! - [`tcp`]: accept loop with per-source and total connection limits, one
//!   task per connection that frames messages by Content-Length and answers
//!   CRLF keep-alives, and an idle timeout.
//! - [`Outbound`]: where responses leave: the UDP socket the request came in
//!   on, or the TCP connection it came over.

pub mod ban_filter;
pub mod tcp;
pub mod udp;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::net::UdpSocket;
use tokio::sync::mpsc;

/// `host:port` of a socket address as SIP writes it, IPv6 in brackets (no
/// scope id: it means nothing to the peer).
pub fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// The transport a message came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// Reliable transports need no retransmissions (RFC 3261 17.1.1.2).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one accepted TCP connection.
pub type ConnId = u64;

/// Where a message came from, and so where its answer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    /// The peer's address as seen on the wire.
    pub addr: SocketAddr,
    pub transport: Transport,
    /// For UDP: index of the receiving socket in [`Outbound`]; for TCP: the connection.
    pub via: Route,
}

/// The local end a message used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    UdpSocket(usize),
    TcpConn(ConnId),
}

/// Sends bytes back to peers. Cloned into every task that answers.
#[derive(Clone)]
pub struct Outbound {
    udp: Arc<Vec<Arc<UdpSocket>>>,
    tcp: Arc<Connections>,
    /// Messages handed to the network, [UDP, TCP] (metrics).
    sent: Arc<[AtomicU64; 2]>,
}

impl Outbound {
    pub fn new(udp: Vec<Arc<UdpSocket>>) -> Outbound {
        Outbound {
            udp: Arc::new(udp),
            tcp: Arc::new(Connections::default()),
            sent: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
        }
    }

    pub fn connections(&self) -> &Arc<Connections> {
        &self.tcp
    }

    /// Messages sent so far over UDP and over TCP.
    pub fn sent(&self) -> [u64; 2] {
        [
            self.sent[0].load(Ordering::Relaxed),
            self.sent[1].load(Ordering::Relaxed),
        ]
    }

    /// Local address of a UDP socket.
    pub fn udp_local(&self, index: usize) -> Option<SocketAddr> {
        self.udp.get(index).and_then(|s| s.local_addr().ok())
    }

    /// Our address as `peer` sees it: the local address of the UDP socket of
    /// the peer's family (TCP listens on the same addresses). A wildcard
    /// listener (0.0.0.0, ::) is resolved to the source address the kernel
    /// would route from: connecting a UDP socket sends nothing.
    pub fn local_for(&self, peer: SocketAddr) -> Option<SocketAddr> {
        let local = self
            .udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .find(|local| local.is_ipv4() == peer.is_ipv4())?;
        if !local.ip().is_unspecified() {
            return Some(local);
        }
        let probe = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).ok()?;
        probe.connect(peer).ok()?;
        Some(SocketAddr::new(probe.local_addr().ok()?.ip(), local.port()))
    }

    /// [`Self::local_for`] as Via and Record-Route write it ("" if there is
    /// no socket of the peer's family, which `route_to` refuses anyway).
    pub fn local_host_port(&self, peer: SocketAddr) -> String {
        self.local_for(peer).map(host_port).unwrap_or_default()
    }

    /// The way to reach `addr` over `transport`: the first UDP socket of the
    /// address's family, or the open TCP connection from that peer. None when
    /// there is no such socket or connection (the gateway does not open TCP
    /// connections itself: phones on TCP keep theirs open).
    pub fn route_to(&self, addr: SocketAddr, transport: Transport) -> Option<Source> {
        let via = match transport {
            Transport::Udp => Route::UdpSocket(self.udp.iter().position(|s| {
                s.local_addr()
                    .is_ok_and(|local| local.is_ipv4() == addr.is_ipv4())
            })?),
            Transport::Tcp => Route::TcpConn(self.tcp.find(addr)?),
        };
        Some(Source {
            addr,
            transport,
            via,
        })
    }

    /// Sends one message to where `to` came from. Failures are logged, never
    /// fatal: the peer may have gone.
    pub fn send(&self, to: &Source, bytes: Arc<[u8]>) {
        self.sent[usize::from(to.transport == Transport::Tcp)].fetch_add(1, Ordering::Relaxed);
        match to.via {
            Route::UdpSocket(index) => {
                let Some(socket) = self.udp.get(index) else {
                    return;
                };
                // UDP either takes the datagram now or drops it, which a
                // retransmission repairs.
                if let Err(e) = socket.send_to(&bytes, to.addr) {
                    tracing::debug!(peer = %to.addr, error = %e, "udp send failed");
                }
            }
            Route::TcpConn(id) => {
                if !self.tcp.send(id, bytes) {
                    tracing::debug!(peer = %to.addr, conn = id, "tcp connection gone");
                }
            }
        }
    }

    /// Sends one datagram back on the UDP socket `to` came in on, straight
    /// from the caller's buffer (STUN answers: nothing to queue or keep).
    pub fn send_datagram(&self, to: &Source, bytes: &[u8]) {
        let Route::UdpSocket(index) = to.via else {
            return;
        };
        if let Some(socket) = self.udp.get(index) {
            if let Err(e) = socket.send_to(bytes, to.addr) {
                tracing::debug!(peer = %to.addr, error = %e, "udp send failed");
            }
        }
    }
}

/// Open TCP connections: a queue to each connection's writer.
#[derive(Default)]
pub struct Connections {
    next_id: AtomicU64,
    inner: Mutex<ConnTable>,
}

/// The queue feeding one connection's writer.
pub type Writer = mpsc::Sender<Arc<[u8]>>;

#[derive(Default)]
struct ConnTable {
    writers: HashMap<ConnId, (SocketAddr, Writer)>,
    per_source: HashMap<std::net::IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    TooManyTotal,
    TooManyFromSource,
}

impl Connections {
    /// Registers a new connection if the limits allow it.
    pub fn admit(
        &self,
        peer: SocketAddr,
        writer: Writer,
        max_total: usize,
        max_per_source: usize,
    ) -> Result<ConnId, Refusal> {
        let mut table = self.inner.lock().unwrap();
        if table.writers.len() >= max_total {
            return Err(Refusal::TooManyTotal);
        }
        let count = table.per_source.entry(peer.ip()).or_insert(0);
        if *count >= max_per_source {
            return Err(Refusal::TooManyFromSource);
        }
        *count += 1;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        table.writers.insert(id, (peer, writer));
        Ok(id)
    }

    /// Forgets a closed connection.
    pub fn remove(&self, id: ConnId) {
        let mut table = self.inner.lock().unwrap();
        if let Some((peer, _)) = table.writers.remove(&id) {
            if let Some(count) = table.per_source.get_mut(&peer.ip()) {
                *count -= 1;
                if *count == 0 {
                    table.per_source.remove(&peer.ip());
                }
            }
        }
    }

    /// Closes every connection whose peer matches (e.g. a banned source): an
    /// empty message tells the connection's task to hang up.
    pub fn close_where(&self, matches: impl Fn(SocketAddr) -> bool) {
        let table = self.inner.lock().unwrap();
        for (peer, writer) in table.writers.values() {
            if matches(*peer) {
                let _ = writer.try_send(Arc::from(Vec::new()));
            }
        }
    }

    /// The open connection from `peer`, if any.
    pub fn find(&self, peer: SocketAddr) -> Option<ConnId> {
        let table = self.inner.lock().unwrap();
        table
            .writers
            .iter()
            .find(|(_, (p, _))| *p == peer)
            .map(|(id, _)| *id)
    }

    /// Queues bytes for a connection's writer; false if it is gone or choked.
    pub fn send(&self, id: ConnId, bytes: Arc<[u8]>) -> bool {
        let writer = {
            let table = self.inner.lock().unwrap();
            match table.writers.get(&id) {
                Some((_, w)) => w.clone(),
                None => return false,
            }
        };
        writer.try_send(bytes).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_limit_counts_connections_and_frees_them() {
        let conns = Connections::default();
        let peer: SocketAddr = "127.0.0.2:4000".parse().unwrap();
        let other: SocketAddr = "127.0.0.3:4000".parse().unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let a = conns.admit(peer, tx.clone(), 10, 2).unwrap();
        let _b = conns.admit(peer, tx.clone(), 10, 2).unwrap();
        assert_eq!(
            conns.admit(peer, tx.clone(), 10, 2),
            Err(Refusal::TooManyFromSource)
        );
        assert!(conns.admit(other, tx.clone(), 10, 2).is_ok());
        conns.remove(a);
        assert!(conns.admit(peer, tx.clone(), 10, 2).is_ok());
        assert_eq!(conns.admit(other, tx, 3, 9), Err(Refusal::TooManyTotal));
    }
}
