//! UDP: one datagram is one message (RFC 3261 18.3). The receive loop does no
//! work of its own beyond counting and handing the bytes to the gateway.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::{Route, Source, Transport};
use crate::server::Sink;

/// Binds a UDP socket with a large receive buffer, so bursts are queued by
/// the kernel instead of dropped.
pub fn bind(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // The kernel caps this at net.core.rmem_max; a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(recv_buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Receives datagrams until shutdown.
pub async fn receive_loop(
    socket: Arc<UdpSocket>,
    index: usize,
    sink: Arc<dyn Sink>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, peer)) => sink.receive(&buf[..len], Source {
                    addr: peer,
                    transport: Transport::Udp,
                    via: Route::UdpSocket(index),
                }),
                // ICMP errors from earlier sends surface here on some systems: not fatal.
                Err(e) => tracing::debug!(error = %e, "udp receive error"),
            },
            _ = shutdown.changed() => break,
        }
    }
}
