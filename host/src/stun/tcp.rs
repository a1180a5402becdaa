//! The standalone listener over TCP (RFC 8489 section 6.2.2): messages back
//! to back, each framed by its own header's length. The `[tcp]` limits of
//! SIP apply (total and per-source connections, idle timeout), in a table of
//! their own so that STUN clients do not use up SIP's share.
//!
//! A frame that does not start like STUN, or claims more than
//! [`MAX_MESSAGE`] bytes, leaves the stream impossible to resynchronise:
//! it is counted as dropped and the connection closed.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::header::HEADER_LEN;
use super::Gate;
use crate::stats::Stats;
use crate::transport::tcp::Limits;
use crate::transport::Connections;

/// The largest STUN message read from a stream. A Binding request is well
/// under 200 bytes even with ICE's attributes; this leaves ample room.
pub const MAX_MESSAGE: usize = 2048;

/// Accepts STUN connections until shutdown.
pub async fn accept_loop(
    listener: TcpListener,
    limits: Limits,
    gate: Gate,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Connections::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "stun tcp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        if gate.guard.is_banned(peer.ip()) {
            Stats::inc(&gate.stats.dropped_banned);
            continue;
        }
        // The queue is only there to close the connection (an empty message),
        // as for SIP connections; answers are written by the task itself.
        let (tx, rx) = mpsc::channel::<Arc<[u8]>>(1);
        let id = match connections.admit(peer, tx, limits.max_connections, limits.max_per_source) {
            Ok(id) => id,
            Err(refusal) => {
                Stats::inc(&gate.stats.tcp_connections_refused);
                tracing::warn!(%peer, ?refusal, "stun tcp connection refused");
                continue;
            }
        };
        Stats::inc(&gate.stats.tcp_connections_accepted);
        let (conns, gate, shutdown) = (connections.clone(), gate.clone(), shutdown.clone());
        tokio::spawn(async move {
            serve(stream, peer, rx, limits, &gate, shutdown).await;
            conns.remove(id);
        });
    }
}

/// Reads, answers and writes messages until the peer hangs up, idles, sends
/// something that is not STUN, or gets banned.
async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    mut close: mpsc::Receiver<Arc<[u8]>>,
    limits: Limits,
    gate: &Gate,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut message = [0u8; MAX_MESSAGE];
    loop {
        let length = tokio::select! {
            read = tokio::time::timeout(limits.idle_timeout, read_frame(&mut stream, &mut message)) => match read {
                Err(_) => {
                    Stats::inc(&gate.stats.tcp_idle_closed);
                    break;
                }
                Ok(Frame::Closed) => break,
                Ok(Frame::NotStun) => {
                    Stats::inc(&gate.stats.stun_requests);
                    Stats::inc(&gate.stats.stun_dropped);
                    tracing::debug!(%peer, "closing stun tcp connection: not a stun frame");
                    break;
                }
                Ok(Frame::Message(length)) => length,
            },
            _ = close.recv() => break,
            _ = shutdown.changed() => break,
        };
        if gate.guard.is_banned(peer.ip()) {
            Stats::inc(&gate.stats.dropped_banned);
            break;
        }
        if let Some(answer) = gate.responder.answer(&message[..length], peer) {
            if stream.write_all(answer.as_bytes()).await.is_err() {
                break;
            }
        }
    }
}

/// One frame read from a stream.
enum Frame {
    /// A whole message of this length is in the buffer.
    Message(usize),
    /// The header cannot start a STUN message, or claims too much.
    NotStun,
    /// End of stream or a read error.
    Closed,
}

async fn read_frame(stream: &mut TcpStream, buf: &mut [u8; MAX_MESSAGE]) -> Frame {
    if stream.read_exact(&mut buf[..HEADER_LEN]).await.is_err() {
        return Frame::Closed;
    }
    let length = HEADER_LEN + usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if buf[0] & 0xC0 != 0 || length > MAX_MESSAGE {
        return Frame::NotStun;
    }
    match stream.read_exact(&mut buf[HEADER_LEN..length]).await {
        Ok(_) => Frame::Message(length),
        Err(_) => Frame::Closed,
    }
}
