//! UDP: one datagram is one message (RFC 3261 18.3).
//!
//! Each socket is served by a few plain threads blocked in `recvmmsg`, the
//! way Kamailio's UDP workers block in `recvfrom`: a datagram is handled
//! start to finish on the thread that received it, with no task to spawn and
//! no other thread to wake (a reactor would add an epoll round and a hand-off
//! per packet). `recvmmsg` takes up to [`BATCH`] waiting datagrams in one
//! system call, so under a flood the kernel crossing is paid once per batch,
//! not once per packet: that is most of what a dropped packet costs.

use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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

/// Starts `threads` receivers on `socket`; they stop when `stop` is set.
pub fn spawn_receivers(
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
                .name(format!("sipfence-udp{index}-{n}"))
                .spawn(move || receive_loop(&socket, index, &*sink, &stop))
        })
        .collect()
}

fn receive_loop(socket: &UdpSocket, index: usize, sink: &dyn Sink, stop: &AtomicBool) {
    let fd = socket.as_raw_fd();
    let mut buffers: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; 65_535]).collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut received: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        received.clear();
        {
            let mut slices: Vec<[IoSliceMut; 1]> = buffers
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            // MSG_WAITFORONE: block for the first datagram (up to the socket's
            // read timeout), then take whatever else is already queued.
            match recvmmsg(
                fd,
                &mut headers,
                slices.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
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
        if banned > 0 && banned == received.len() && received.len() < BATCH {
            std::thread::sleep(FLOOD_NAP);
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
