//! Counters of what the gateway saw and did, readable through the control
//! socket. Plain relaxed atomics: they are statistics, not synchronisation.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::sip::Method;

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Gateway-wide counters.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            /// Requests received (parsed), by method: indexed like [`METHODS`].
            pub requests_by_method: [AtomicU64; METHODS.len()],
            /// Final and provisional responses sent, by class: 1xx at 0 .. 6xx at 5
            /// (retransmissions not included).
            pub responses_by_class: [AtomicU64; 6],
        }

        impl Stats {
            /// Name and value of every counter, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }

            /// Name and doc comment of every counter, in declaration order
            /// (the metrics' help texts).
            pub fn describe() -> Vec<(&'static str, &'static str)> {
                vec![$((stringify!($name), concat!($($doc),*).trim_ascii()),)*]
            }
        }
    };
}

counters! {
    /// Packets (and TCP connections) from banned sources: dropped unread.
    dropped_banned,
    /// Datagrams the kernel dropped on the gateway's UDP sockets before the
    /// gateway read them: banned sources in the kernel filter
    /// (`bans.kernel_drop_after`), and receive-buffer overflows. Read from
    /// the kernel every 200 ms while the filter holds sources.
    udp_kernel_drops,
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
    /// Responses that matched no request the gateway sent: dropped.
    dropped_responses,
    /// Responses received to requests the gateway forwarded.
    responses_in,
    /// Requests forwarded to a phone or peer (each fork branch counts).
    requests_forwarded,
    /// New calls (initial INVITEs that passed authentication and routing).
    calls_started,
    /// Calls that were answered.
    calls_answered,
    /// Calls the gateway answered for a mailbox.
    voicemail_answered,
    /// Voicemail messages stored (long enough, indexed).
    voicemail_recorded,
    /// OPTIONS pings sent to phones behind NAT.
    keepalive_pings,
    /// Bindings removed because their phone stopped answering pings.
    keepalive_removed,
    /// In-dialog requests refused: no such dialog, or not from its party.
    dialog_refused,
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

/// The methods requests are counted by; the last stands for every other.
pub const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "REFER",
    "PUBLISH",
    "other",
];

impl Stats {
    /// Counts a received request by method (one relaxed add).
    pub fn count_request(&self, method: &Method) {
        let index = match method {
            Method::Invite => 0,
            Method::Ack => 1,
            Method::Bye => 2,
            Method::Cancel => 3,
            Method::Options => 4,
            Method::Register => 5,
            Method::Info => 6,
            Method::Update => 7,
            Method::Prack => 8,
            Method::Subscribe => 9,
            Method::Notify => 10,
            Method::Message => 11,
            Method::Refer => 12,
            Method::Publish => 13,
            Method::Other(_) => 14,
        };
        self.requests_by_method[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a response sent by its class (one relaxed add).
    pub fn count_response(&self, code: u16) {
        let class = usize::from(code / 100).clamp(1, 6) - 1;
        self.responses_by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
