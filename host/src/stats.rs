//! Counters of what the gateway saw and did, readable through the control
//! socket. Plain relaxed atomics: they are statistics, not synchronisation.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Gateway-wide counters.
        #[derive(Debug, Default)]
        pub struct Stats { $($(#[$doc])* pub $name: AtomicU64,)* }

        impl Stats {
            /// Name and value of every counter, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Packets (and TCP connections) from banned sources: dropped unread.
    dropped_banned,
    /// Datagrams received on SIP UDP sockets.
    udp_packets_in,
    /// SIP messages framed from TCP connections.
    tcp_messages_in,
    /// TCP connections accepted (SIP and STUN).
    tcp_connections_accepted,
    /// TCP connections refused by the total or per-source limit (SIP and STUN).
    tcp_connections_refused,
    /// TCP connections closed for idleness (SIP and STUN).
    tcp_idle_closed,
    /// CRLF keep-alives seen (RFC 5626).
    keepalives,
    /// STUN messages received, on the SIP UDP port and the STUN listener;
    /// each is answered (`stun_errors` of them with a 420) or dropped.
    stun_requests,
    /// STUN messages dropped unanswered: malformed, a wrong FINGERPRINT, or
    /// not a Binding request.
    stun_dropped,
    /// STUN Binding requests answered 420 Unknown Attribute.
    stun_errors,
    /// Messages that could not be parsed well enough to answer: dropped.
    dropped_unparseable,
    /// Datagrams larger than `server.max_message_bytes`: dropped.
    dropped_oversized,
    /// Responses received (the gateway sends no requests yet): dropped.
    dropped_responses,
    /// Requests answered 400 because they were malformed.
    bad_requests,
    /// Request retransmissions answered from the transaction.
    retransmissions_absorbed,
    /// Responses sent (including retransmissions).
    responses_out,
    /// REGISTER requests that reached the registrar.
    registers,
    /// Digest authentications that succeeded.
    auth_ok,
    /// Digest authentications that failed (wrong password, unknown user, mismatch).
    auth_failed,
    /// Challenges sent (401/407).
    challenges,
    /// Requests a plugin rejected with a SIP status.
    plugin_rejects,
    /// Requests a plugin dropped.
    plugin_drops,
    /// Bans made (by plugins or operators).
    bans_added,
}

impl Stats {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
