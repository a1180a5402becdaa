//! STUN (RFC 8489, formerly RFC 5389): a phone behind NAT asks "which
//! address do my packets come from?" with a Binding request, and keeps its
//! NAT binding open by repeating it on the SIP port (RFC 5626 section 4.4.2).
//!
//! - [`demux`]: is a datagram on the SIP UDP port STUN, not SIP?
//! - [`header`]: the 20-byte header every STUN message starts with.
//! - [`binding`]: RFC 5389/8489 Binding requests, decoded and answered with
//!   the `stun-rs` crate: XOR-MAPPED-ADDRESS, SOFTWARE, FINGERPRINT when the
//!   request had one.
//! - [`classic`]: RFC 3489 requests (no magic cookie), answered by hand with
//!   MAPPED-ADDRESS: `stun-rs` only speaks messages with the cookie.
//! - [`udp`], [`tcp`]: the standalone listener (`[stun] listen`, default
//!   port 3478): UDP and TCP (RFC 8489 section 6.2.2 framing), behind the
//!   same ban list as SIP.
//!
//! [`Responder`] ties them together: one message in, an answer or nothing
//! out, and the counters. What gets what:
//! - a Binding request: a success response to the address it came from,
//!   never to an address written in the message (RFC 3489's RESPONSE-ADDRESS
//!   would make us a reflector: it counts as an unknown attribute);
//! - a well-formed request with comprehension-required attributes this
//!   server does not understand: 420 Unknown Attribute listing them, as RFC
//!   8489 section 6.3.1 says (counted in `stun_errors`). A CHANGE-REQUEST
//!   asking for another address or port is one of them: this server has
//!   one address per listener (RFC 5780 section 6 says 420 then too);
//!   one that asks for no change, as every RFC 3489 client sends, is fine;
//! - anything else, dropped and counted in `stun_dropped`: a broken header
//!   or attribute layout, a length that does not match the datagram, a
//!   wrong FINGERPRINT (RFC 8489 section 6.3), responses and indications,
//!   methods other than Binding. Dropping costs nothing and tells a scanner
//!   nothing.

pub mod binding;
pub mod classic;
pub mod demux;
pub mod header;
pub mod tcp;
pub mod udp;

#[cfg(test)]
mod torture_tests;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use demux::is_stun;
pub use header::Dropped;

use crate::guard::Guard;
use crate::server::Sink;
use crate::stats::Stats;
use crate::transport::tcp::Limits;

/// The largest answer: header, XOR-MAPPED-ADDRESS (IPv6), ERROR-CODE,
/// UNKNOWN-ATTRIBUTES ([`MAX_UNKNOWN`] types), SOFTWARE ([`MAX_SOFTWARE_BYTES`])
/// and FINGERPRINT, with room to spare.
pub const MAX_ANSWER: usize = 768;

/// At most this many unknown attribute types are listed in a 420.
pub const MAX_UNKNOWN: usize = 16;

/// SOFTWARE is at most 127 characters (RFC 8489 section 14.14) and, here,
/// at most this many bytes (what `stun-rs` accepts).
pub const MAX_SOFTWARE_BYTES: usize = 509;

/// An answer ready to send: the bytes live on the stack, nothing allocated
/// for the send.
pub struct Answer {
    bytes: [u8; MAX_ANSWER],
    len: usize,
    /// An error response (420) rather than a success.
    pub error: bool,
}

impl Answer {
    fn new() -> Answer {
        Answer {
            bytes: [0; MAX_ANSWER],
            len: 0,
            error: false,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Answers STUN messages; shared by the SIP port and the standalone listener.
pub struct Responder {
    binding: binding::Binding,
    /// SOFTWARE's value: `server.user_agent`, cut to what RFC 8489 allows.
    software: String,
    stats: Arc<Stats>,
}

impl Responder {
    /// `software` is the SOFTWARE attribute's text (the SIP user agent).
    pub fn new(software: &str, stats: Arc<Stats>) -> Responder {
        let software = software_text(software);
        Responder {
            binding: binding::Binding::new(&software),
            software,
            stats,
        }
    }

    /// The answer to one STUN message from `peer`, or None (dropped). Counts
    /// either way. Never panics, whatever the bytes.
    pub fn answer(&self, message: &[u8], peer: SocketAddr) -> Option<Answer> {
        Stats::inc(&self.stats.stun_requests);
        match self.respond(message, peer) {
            Ok(answer) => {
                if answer.error {
                    Stats::inc(&self.stats.stun_errors);
                }
                Some(answer)
            }
            Err(why) => {
                Stats::inc(&self.stats.stun_dropped);
                tracing::debug!(%peer, ?why, "stun message dropped");
                None
            }
        }
    }

    /// The answer, or why there is none (no counting: see [`Responder::answer`]).
    pub fn respond(&self, message: &[u8], peer: SocketAddr) -> Result<Answer, Dropped> {
        let header = header::Header::parse(message)?;
        if header.message_type != header::BINDING_REQUEST {
            return Err(Dropped::NotBindingRequest);
        }
        // A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d; the
        // client knows itself by its IPv4 address.
        let peer = match peer {
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::from((v4, v6.port())),
                None => peer,
            },
            v4 => v4,
        };
        let mut answer = Answer::new();
        let (len, error) = if header.classic {
            classic::answer(message, peer, &self.software, &mut answer.bytes)?
        } else {
            self.binding.answer(message, peer, &mut answer.bytes)?
        };
        answer.len = len;
        answer.error = error;
        Ok(answer)
    }
}

/// What the standalone listener shares with the gateway.
#[derive(Clone)]
pub struct Gate {
    pub responder: Arc<Responder>,
    /// The gateway's ban list: a banned source gets no STUN answer either.
    pub guard: Arc<Guard>,
    pub stats: Arc<Stats>,
}

/// One address of the standalone listener, running; kept for shutdown.
pub struct Running {
    pub thread: std::thread::JoinHandle<()>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves STUN on one address, bound for UDP and TCP: one receiver thread
/// for the UDP socket (a request costs a few microseconds: one thread keeps
/// up with tens of thousands per second, see [`udp`]) and one accept task
/// for TCP. UDP stops when `stop` is set, TCP on `shutdown`. `index` names
/// the thread.
pub fn serve(
    index: usize,
    socket: Arc<UdpSocket>,
    listener: TcpListener,
    gate: &Gate,
    limits: Limits,
    stop: &Arc<AtomicBool>,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<Running> {
    let sink: Arc<dyn Sink> = Arc::new(udp::Datagrams {
        socket: socket.clone(),
        gate: gate.clone(),
    });
    let thread = crate::transport::udp::spawn_receivers(
        "sipfence-stun",
        socket,
        index,
        sink,
        stop.clone(),
        1,
    )?
    .pop()
    .ok_or_else(|| std::io::Error::other("no stun receiver"))?;
    let task = tokio::spawn(tcp::accept_loop(
        listener,
        limits,
        gate.clone(),
        shutdown.clone(),
    ));
    Ok(Running { thread, task })
}

/// `text` cut to at most 127 characters and [`MAX_SOFTWARE_BYTES`] bytes,
/// on a character boundary.
fn software_text(text: &str) -> String {
    let mut end = 0;
    for (count, (at, c)) in text.char_indices().enumerate() {
        if count == 127 || at + c.len_utf8() > MAX_SOFTWARE_BYTES {
            break;
        }
        end = at + c.len_utf8();
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_is_cut_to_127_characters_on_a_character_boundary() {
        assert_eq!(software_text("sipfence"), "sipfence");
        assert_eq!(software_text(&"x".repeat(200)).len(), 127);
        let wide = "é".repeat(300);
        let cut = software_text(&wide);
        assert_eq!(cut.chars().count(), 127);
        assert!(cut.len() <= MAX_SOFTWARE_BYTES);
        let wider = "😀".repeat(200);
        assert!(software_text(&wider).len() <= MAX_SOFTWARE_BYTES);
        assert_eq!(software_text(""), "");
    }
}
