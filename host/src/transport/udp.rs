//! UDP: one datagram is one message (RFC 3261 18.3).
//!
//! Each socket is served by a few plain threads blocked in `recvmmsg`, the
//! way Kamailio's UDP workers block in `recvfrom`: a datagram is handled
//! start to finish on the thread that received it, with no task to spawn and
//! no other thread to wake (a reactor would add an epoll round and a hand-off
//! per packet). `recvmmsg` takes up to [`BATCH`] waiting datagrams in one
//! system call, so under a flood the kernel crossing is paid once per batch,
//! not once per packet: that is most of what a dropped packet costs. A sink
//! whose requests cost less than a wake-up (STUN) can ask for a short nap
//! between batches while the rate is high, so that batches grow.

use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use socket2::{Domain, Protocol, Socket, Type};

use super::{Route, Source, Transport};
use crate::server::{Received, Sink};

/// How often a blocked receiver looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Datagrams taken per system call at most.
pub const BATCH: usize = 32;

/// When a whole batch came from banned sources (a flood), the receiver naps
/// this long before the next call, so the next batch is a full one: one
/// wake-up per batch instead of one per packet. Good traffic waits at most
/// this long, and only during a flood.
const FLOOD_NAP: Duration = Duration::from_micros(250);

/// Under load, a receiver whose sink asks for it ([`Sink::nap_under_load`])
/// naps this long after a batch, so that the next `recvmmsg` finds many
/// datagrams: one wake-up for many requests that each cost little (STUN).
const LOAD_NAP: Duration = Duration::from_micros(250);

/// Decides whether to nap after a batch: only while datagrams arrive at
/// [`FAST_RATE`] per second or more. A nap costs a timer wake-up, far more
/// than a datagram's; measured on STUN, it pays at 40,000 requests/s (it
/// gathers ~10) and costs at 10,000/s (it gathers ~2).
struct Pacer {
    /// The current measuring window started then...
    window_start: Instant,
    /// ...and this many datagrams came in it.
    in_window: u64,
    /// The last full window was at least FAST_RATE.
    fast: bool,
}

/// Datagrams per second from which naps pay.
const FAST_RATE: u64 = 20_000;

/// How long the rate is measured before the pacer changes its mind.
const PACE_WINDOW: Duration = Duration::from_millis(10);

impl Pacer {
    fn new(now: Instant) -> Pacer {
        Pacer {
            window_start: now,
            in_window: 0,
            fast: false,
        }
    }

    /// Whether to nap after a batch of `n` datagrams, read at `now`.
    fn nap_after(&mut self, n: usize, now: Instant) -> bool {
        self.in_window += n as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= PACE_WINDOW {
            self.fast = u128::from(self.in_window) * 1_000_000
                >= u128::from(FAST_RATE) * elapsed.as_micros();
            self.window_start = now;
            self.in_window = 0;
        }
        // Nothing came (the nap gathered nothing) or a full batch (more is
        // waiting): read again at once.
        self.fast && (1..BATCH).contains(&n)
    }
}

/// Binds a UDP socket with a large receive buffer, so bursts are queued by
/// the kernel instead of dropped.
pub fn bind(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // The kernel caps this at net.core.rmem_max; a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(recv_buffer);
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(STOP_POLL))?;
    Ok(socket.into())
}

/// Starts `threads` receivers on `socket`, named `{name}{index}-{n}`; they
/// stop when `stop` is set.
pub fn spawn_receivers(
    name: &str,
    socket: Arc<UdpSocket>,
    index: usize,
    sink: Arc<dyn Sink>,
    stop: Arc<AtomicBool>,
    threads: usize,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..threads.max(1))
        .map(|n| {
            let socket = socket.clone();
            let sink = sink.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("{name}{index}-{n}"))
                .spawn(move || receive_loop(&socket, index, &*sink, &stop))
        })
        .collect()
}

fn receive_loop(socket: &UdpSocket, index: usize, sink: &dyn Sink, stop: &AtomicBool) {
    let fd = socket.as_raw_fd();
    let mut buffers: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; 65_535]).collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut received: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
    let pace = sink.nap_under_load();
    let mut pacer = Pacer::new(Instant::now());
    // MSG_WAITFORONE: block for the first datagram (up to the socket's read
    // timeout), then take whatever else is already queued. After a nap:
    // MSG_DONTWAIT, to see what the nap gathered.
    let mut flags = MsgFlags::MSG_WAITFORONE;
    while !stop.load(Ordering::Relaxed) {
        received.clear();
        {
            let mut slices: Vec<[IoSliceMut; 1]> = buffers
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            match recvmmsg(fd, &mut headers, slices.iter_mut(), flags, None) {
                Ok(messages) => {
                    for m in messages {
                        if let Some(peer) = m.address.as_ref().and_then(socket_addr) {
                            received.push((m.bytes, peer));
                        } else {
                            received.push((0, SocketAddr::from(([0, 0, 0, 0], 0))));
                        }
                    }
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                // ICMP errors from earlier sends surface here on some systems: not fatal.
                Err(e) => tracing::debug!(error = %e, "udp receive error"),
            }
        }
        let mut banned = 0;
        for (buffer, (len, peer)) in buffers.iter().zip(&received) {
            if peer.port() == 0 {
                continue;
            }
            let outcome = sink.receive(
                &buffer[..(*len).min(buffer.len())],
                Source {
                    addr: *peer,
                    transport: Transport::Udp,
                    via: Route::UdpSocket(index),
                },
            );
            banned += usize::from(outcome == Received::Banned);
        }
        flags = MsgFlags::MSG_WAITFORONE;
        if banned > 0 && banned == received.len() && received.len() < BATCH {
            std::thread::sleep(FLOOD_NAP);
        } else if pace && pacer.nap_after(received.len(), Instant::now()) {
            std::thread::sleep(LOAD_NAP);
            flags = MsgFlags::MSG_DONTWAIT;
        }
    }
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    let v6 = storage.as_sockaddr_in6()?;
    Some(SocketAddr::V6(SocketAddrV6::new(
        v6.ip(),
        v6.port(),
        v6.flowinfo(),
        v6.scope_id(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_naps_only_at_high_rates() {
        let start = Instant::now();
        let at = |us: u64| start + Duration::from_micros(us);
        let mut p = Pacer::new(start);
        // 10,000/s: 100 datagrams in the first 10 ms window, then none of
        // the batches that follow get a nap.
        assert!(!p.nap_after(50, at(5_000)));
        assert!(!p.nap_after(50, at(10_000)));
        assert!(!p.nap_after(3, at(11_000)));
        // 40,000/s over the next window: naps from its end on...
        assert!(!p.nap_after(397, at(19_000)));
        assert!(p.nap_after(4, at(21_000)));
        assert!(p.nap_after(10, at(22_000)));
        // ...but never after a full batch or an empty read.
        assert!(!p.nap_after(BATCH, at(23_000)));
        assert!(!p.nap_after(0, at(24_000)));
        // The rate falls: naps stop at the end of the window.
        assert!(!p.nap_after(2, at(35_000)));
        assert!(!p.nap_after(2, at(36_000)));
    }
}
