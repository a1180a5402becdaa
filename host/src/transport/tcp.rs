//! TCP: a stream of messages framed by Content-Length (RFC 3261 18.3), CRLF
//! keep-alives answered (RFC 5626 3.5.1), a limit on connections in total and
//! per source address, and an idle timeout, so one address cannot exhaust the
//! gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::{Connections, Route, Source, Transport};
use crate::server::Sink;
use crate::sip::framing::{frame, Frame};
use crate::stats::Stats;

/// Connection limits and timing, from the config.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_source: usize,
    pub idle_timeout: Duration,
    pub max_message_bytes: usize,
}

/// Binds a TCP listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections until shutdown.
pub async fn accept_loop(
    listener: TcpListener,
    connections: Arc<Connections>,
    limits: Limits,
    sink: Arc<dyn Sink>,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        if !sink.admit(peer) {
            // A banned source: close at once, unread.
            Stats::inc(&stats.dropped_banned);
            continue;
        }
        let (tx, rx) = mpsc::channel::<Arc<[u8]>>(64);
        let id = match connections.admit(peer, tx, limits.max_connections, limits.max_per_source) {
            Ok(id) => id,
            Err(refusal) => {
                Stats::inc(&stats.tcp_connections_refused);
                tracing::warn!(%peer, ?refusal, "tcp connection refused");
                continue;
            }
        };
        Stats::inc(&stats.tcp_connections_accepted);
        let conns = connections.clone();
        let sink = sink.clone();
        let stats = stats.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve(stream, peer, id, rx, limits, sink, stats, shutdown).await;
            conns.remove(id);
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    id: super::ConnId,
    mut outgoing: mpsc::Receiver<Arc<[u8]>>,
    limits: Limits,
    sink: Arc<dyn Sink>,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let source = Source {
        addr: peer,
        transport: Transport::Tcp,
        via: Route::TcpConn(id),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = tokio::time::timeout(limits.idle_timeout, reader.read(&mut chunk)) => {
                let n = match read {
                    Err(_) => {
                        Stats::inc(&stats.tcp_idle_closed);
                        tracing::debug!(%peer, "tcp connection idle, closing");
                        break;
                    }
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                if !drain_frames(&mut buf, &source, &limits, &*sink, &stats, &mut writer).await {
                    break;
                }
            }
            Some(bytes) = outgoing.recv() => {
                // Empty: the gateway closes the connection (its source was banned).
                if bytes.is_empty() || writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// Hands every complete message in `buf` to the sink and removes it; answers
/// keep-alives. False when the stream is unusable and must be closed.
async fn drain_frames(
    buf: &mut Vec<u8>,
    source: &Source,
    limits: &Limits,
    sink: &dyn Sink,
    stats: &Stats,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
) -> bool {
    let mut start = 0;
    let ok = loop {
        match frame(&buf[start..], limits.max_message_bytes) {
            Frame::Incomplete => break true,
            Frame::KeepAlive(len) => {
                Stats::inc(&stats.keepalives);
                // A double-CRLF ping gets a single-CRLF pong (RFC 5626 4.4.1).
                if len == 4 && writer.write_all(b"\r\n").await.is_err() {
                    break false;
                }
                start += len;
            }
            Frame::Message(len) => {
                Stats::inc(&stats.tcp_messages_in);
                let _ = sink.receive(&buf[start..start + len], *source);
                start += len;
            }
            Frame::Invalid(reason) => {
                Stats::inc(&stats.dropped_unparseable);
                tracing::info!(peer = %source.addr, %reason, "closing tcp connection: bad framing");
                break false;
            }
        }
    };
    buf.drain(..start);
    ok
}
