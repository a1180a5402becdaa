//! # Voicemail media engine
//!
//! Everything below the SIP layer for a call the gateway answers itself:
//! agree on a codec, play a greeting and a beep over RTP, record the
//! caller into a WAV file.
//!
//! ## Layout
//! - [`sdp`]: parse the caller's offer, pick PCMU or PCMA, build the answer
//!   (RFC 4566, RFC 3264). Any [`sdp::SdpError`] is a 488.
//! - [`ports`]: even RTP ports from the configured range, bound on our IP,
//!   freed when the socket is dropped.
//! - [`rtp`]: RTP packets (RFC 3550) and DTMF telephone-events (RFC 4733),
//!   parsed without allocating.
//! - [`g711`]: μ-law and A-law, table-driven decoding.
//! - [`jitter`]: a reorder buffer turning packets into one sample stream,
//!   losses filled with silence by RTP timestamp.
//! - [`wav`]: write recordings (8 kHz mono 16-bit, via `.part` + rename),
//!   read greetings (PCM, A-law, μ-law).
//! - [`prompt`]: the built-in chime greeting, the beep, per-mailbox greetings.
//! - [`session`]: one call's media: [`session::record`].
//!
//! ## Data flow
//! ```text
//! INVITE SDP --sdp::parse/negotiate--> Negotiated --> 200 OK with sdp::build_answer
//!                                          |           (port from ports::PortAllocator)
//!                                          v
//! greeting + beep --g711 encode--> rtp::write_packet --> UDP to caller (latched)
//! UDP from caller --> rtp::parse --> g711 decode --> jitter::ReorderBuffer
//!     --> Vec<i16> in memory --> wav::write_wav (spawn_blocking) --> <file>.wav
//! ```
//! The session ends on the SIP side's stop signal (BYE/CANCEL), `#`, the
//! maximum length or silence; see [`session::RecordLimits`].

pub mod g711;
pub mod jitter;
pub mod ports;
pub mod prompt;
pub mod rtp;
pub mod sdp;
pub mod session;
pub mod wav;

pub use jitter::{JitterConfig, JitterStats, ReorderBuffer};
pub use ports::{PortAllocator, PortError, RtpSocket};
pub use sdp::{build_answer, negotiate, Codec, LocalMedia, Negotiated, SdpError};
pub use session::{record, EndReason, MediaParams, RecordLimits, Recording};
pub use wav::WavError;
