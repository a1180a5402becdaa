//! UDP: one datagram is one message (RFC 3261 18.3).
//!
//! Each socket is served by a few plain threads blocked in `recv_from`, the
//! way Kamailio's UDP workers are: a datagram is handled start to finish on
//! the thread that received it, with no task to spawn and no other thread to
//! wake. (A reactor would add an epoll round and a hand-off per packet.)

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::{Route, Source, Transport};
use crate::server::Sink;

/// How often a blocked receiver looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

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
    let mut buf = vec![0u8; 65_535];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((len, peer)) => sink.receive(
                &buf[..len],
                Source {
                    addr: peer,
                    transport: Transport::Udp,
                    via: Route::UdpSocket(index),
                },
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // ICMP errors from earlier sends surface here on some systems: not fatal.
            Err(e) => tracing::debug!(error = %e, "udp receive error"),
        }
    }
}
