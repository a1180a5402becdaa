//! # sipfence
//!
//! An edge SIP security gateway and registrar. Every SIP message that reaches
//! it passes the ban list, the parser and sanity checks, the transaction
//! layer and authentication before the registrar sees it.
//!
//! ## Layout
//! - [`config`]: the TOML configuration, with errors that name file, line and key.
//! - [`sip`]: our SIP message model, parser and serializer (RFC 3261 section 7, 25).
//! - [`auth`]: HTTP digest for SIP (RFC 3261 22, RFC 7616, RFC 8760).
//! - [`cdr`]: call detail records: the record, filters, CSV and the CLI times.
//! - [`manage`]: management operations (bans, registrations, CDRs, plugins),
//!   shared by the control socket ([`control`]) and the HTTP API ([`api`]).
//! - [`stun`]: STUN Binding (RFC 8489, RFC 3489) on the SIP port and on a
//!   standalone listener.
//! - [`voicemail`]: unanswered calls answered and recorded; [`media`] is
//!   its RTP, SDP, G.711, jitter buffer and WAV; [`mail`] the SMTP queue
//!   that plugins' mail (voicemail-mail) goes through.

pub mod api;
pub mod auth;
pub mod cdr;
pub mod config;
pub mod control;
pub mod directory;
pub mod guard;
pub mod keepalive;
pub mod mail;
pub mod manage;
pub mod media;
pub mod plugins;
pub mod proxy;
pub mod registrar;
pub mod run;
pub mod server;
pub mod sip;
pub mod stats;
pub mod store;
pub mod stun;
pub mod transaction;
pub mod transport;
pub mod voicemail;

/// Milliseconds since the UNIX epoch: the one wall clock of the gateway
/// (ban ends, binding expiry and nonce ages are all kept in it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
