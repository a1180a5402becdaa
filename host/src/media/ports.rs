//! RTP ports from the configured range.
//!
//! RTP goes on even ports, the odd one above is left for RTCP (RFC 3550
//! section 11). Ports are handed out round robin so a port just released is
//! not reused at once: late packets of the last call must not land in the
//! next one. A port something else holds is skipped. The port returns to
//! the pool when its [`RtpSocket`] is dropped.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::UdpSocket;

/// No port could be had.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The range holds no even port (`start` > `end` or a single odd port).
    #[error("RTP port range {start}-{end} has no even port")]
    EmptyRange {
        /// First port of the range.
        start: u16,
        /// Last port of the range.
        end: u16,
    },
    /// Every even port is in use or failed to bind.
    #[error("no free RTP port in {start}-{end} on {ip}")]
    Exhausted {
        /// The address we bind on.
        ip: IpAddr,
        /// First port of the range.
        start: u16,
        /// Last port of the range.
        end: u16,
    },
}

/// State shared by the allocator and the leases it handed out.
#[derive(Debug)]
struct Pool {
    /// Ports leased now.
    in_use: HashSet<u16>,
    /// The next port to try (round robin cursor).
    cursor: u16,
}

/// Hands out bound RTP sockets on even ports of `start..=end`.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    ip: IpAddr,
    /// First even port of the range.
    first: u16,
    /// Number of even ports.
    count: u16,
    end: u16,
    pool: Arc<Mutex<Pool>>,
}

/// A bound RTP socket; dropping it frees its port for the allocator.
#[derive(Debug)]
pub struct RtpSocket {
    /// The socket, bound on the allocator's IP.
    pub socket: UdpSocket,
    port: u16,
    pool: Arc<Mutex<Pool>>,
}

impl RtpSocket {
    /// The bound port, for the SDP answer.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for RtpSocket {
    fn drop(&mut self) {
        lock(&self.pool).in_use.remove(&self.port);
    }
}

/// A poisoned lock only means a panic elsewhere; the set is still valid.
fn lock(pool: &Mutex<Pool>) -> MutexGuard<'_, Pool> {
    pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PortAllocator {
    /// An allocator over the even ports of `start..=end` on `ip`.
    pub fn new(ip: IpAddr, start: u16, end: u16) -> Result<Self, PortError> {
        let first = start.saturating_add(start % 2);
        if first > end || !first.is_multiple_of(2) {
            return Err(PortError::EmptyRange { start, end });
        }
        let count = (end - first) / 2 + 1;
        Ok(Self {
            ip,
            first,
            count,
            end,
            pool: Arc::new(Mutex::new(Pool {
                in_use: HashSet::new(),
                cursor: 0,
            })),
        })
    }

    /// Ports leased now.
    pub fn in_use(&self) -> usize {
        lock(&self.pool).in_use.len()
    }

    /// Binds the next free even port, trying each port of the range once.
    pub async fn allocate(&self) -> Result<RtpSocket, PortError> {
        for _ in 0..self.count {
            // Reserve under the lock, bind without it (binding awaits).
            let port = {
                let mut pool = lock(&self.pool);
                let port = self.first + 2 * pool.cursor;
                pool.cursor = (pool.cursor + 1) % self.count;
                if !pool.in_use.insert(port) {
                    continue;
                }
                port
            };
            let lease = RtpSocket {
                socket: match UdpSocket::bind(SocketAddr::new(self.ip, port)).await {
                    Ok(socket) => socket,
                    Err(error) => {
                        tracing::debug!(port, %error, "RTP port busy, skipped");
                        lock(&self.pool).in_use.remove(&port);
                        continue;
                    }
                },
                port,
                pool: Arc::clone(&self.pool),
            };
            return Ok(lease);
        }
        Err(PortError::Exhausted {
            ip: self.ip,
            start: self.first,
            end: self.end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// An even port the OS just gave us, still held by the returned socket.
    fn held_even_port() -> (std::net::UdpSocket, u16) {
        loop {
            let s = std::net::UdpSocket::bind((LOCALHOST, 0)).unwrap();
            let port = s.local_addr().unwrap().port();
            if port.is_multiple_of(2) && port < 65000 {
                return (s, port);
            }
        }
    }

    #[test]
    fn ranges() {
        assert!(matches!(
            PortAllocator::new(LOCALHOST, 5001, 5001),
            Err(PortError::EmptyRange { .. })
        ));
        assert!(PortAllocator::new(LOCALHOST, 65535, 65535).is_err());
        let a = PortAllocator::new(LOCALHOST, 5001, 5004).unwrap();
        assert_eq!((a.first, a.count), (5002, 2));
    }

    #[tokio::test]
    async fn skips_busy_port_exhausts_and_releases() {
        let (held, busy) = held_even_port();
        let alloc = PortAllocator::new(LOCALHOST, busy, busy + 3).unwrap();
        let first = alloc.allocate().await.unwrap();
        assert_eq!(first.port(), busy + 2, "busy port skipped");
        assert_eq!(first.socket.local_addr().unwrap().port(), busy + 2);
        let err = alloc.allocate().await.unwrap_err();
        assert!(matches!(err, PortError::Exhausted { .. }), "{err}");
        drop(first);
        assert_eq!(alloc.in_use(), 0);
        drop(held);
        // Round robin: the cursor is back at `busy`, now free.
        let again = alloc.allocate().await.unwrap();
        assert_eq!(again.port(), busy);
        let other = alloc.allocate().await.unwrap();
        assert_eq!(other.port(), busy + 2);
        assert_eq!(alloc.in_use(), 2);
    }
}
