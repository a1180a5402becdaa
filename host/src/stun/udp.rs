//! The standalone listener over UDP: the SIP transport's receive loop
//! (`recvmmsg` batches on plain threads, see [`crate::transport::udp`]) with
//! a sink that answers STUN instead of SIP. Every datagram on this port is
//! taken for STUN; anything else is malformed STUN, dropped and counted.
//!
//! A Binding request costs well under a microsecond to answer; the rest of
//! the few microseconds a request costs is the kernel's (receiving, sending,
//! and on loopback delivering the answer and waking the client) and the
//! thread's wake-ups. So this sink asks the loop to nap under load
//! ([`Sink::nap_under_load`]): from 20,000 requests/s on, one wake-up serves
//! a batch instead of two or three requests. A loop of its own answering
//! each batch with one `sendmmsg` was measured too and was no cheaper than a
//! `sendto` per answer (docs/PERFORMANCE.md).

use std::net::UdpSocket;
use std::sync::Arc;

use super::Gate;
use crate::server::{Received, Sink};
use crate::stats::Stats;
use crate::transport::Source;

/// Answers the datagrams of one STUN socket on that socket.
pub struct Datagrams {
    pub socket: Arc<UdpSocket>,
    pub gate: Gate,
}

impl Sink for Datagrams {
    fn receive(&self, data: &[u8], source: Source) -> Received {
        // The ban list first, as on the SIP port: a banned source learns
        // nothing (and a flood of them makes the receiver nap).
        if self.gate.guard.is_banned(source.addr.ip()) {
            Stats::inc(&self.gate.stats.dropped_banned);
            return Received::Banned;
        }
        if let Some(answer) = self.gate.responder.answer(data, source.addr) {
            // UDP takes it now or drops it; the client asks again.
            if let Err(e) = self.socket.send_to(answer.as_bytes(), source.addr) {
                tracing::debug!(peer = %source.addr, error = %e, "stun send failed");
            }
        }
        Received::Handled
    }

    fn nap_under_load(&self) -> bool {
        true
    }
}
