//! SIP message model, parser and serializer: the one module that knows SIP syntax (RFC 3261 7, 19, 20, 25).
//!
//! ## Tour
//! - [`Message::parse`] reads one whole message (a UDP datagram, or a frame cut
//!   from a stream by [`frame`] / [`Framer`]). It is liberal in what it accepts
//!   (leading CRLFs, bare LF line ends, folded lines, compact header names,
//!   whitespace before colons) and never panics. On failure the [`ParseError`]
//!   carries a short `reason` fit for a 400 reason phrase and, when the request
//!   can still be answered, the `partial` message.
//! - [`Headers`] keeps header lines in order with canonical names (`i` and
//!   `CALL-ID` both become `Call-ID`), values unfolded and trimmed but otherwise
//!   raw. Typed views are parsed on demand: [`Message::vias`], [`Message::cseq`],
//!   [`Message::from`], [`Message::to`], [`Message::contacts`]...
//! - [`Message::check_request`] applies the RFC 3261 8.1.1 / 16.3 sanity checks;
//!   [`Message::response`] builds a response per RFC 3261 8.2.6.
//! - [`Message::to_bytes`] serializes, always writing a correct Content-Length.
//! - [`Uri`] covers sip/sips (IPv6 references, escapes, params, headers), tel,
//!   and keeps other schemes opaque so the server can answer 416.

// The submodules are public too (`sip::framing::frame` and `sip::frame` both work).
pub mod framing;
pub mod header;
pub mod message;
pub mod method;
mod text;
pub mod uri;

#[cfg(test)]
mod torture_tests;

pub use framing::{frame, Frame, Framer};
pub use header::{
    canonical_name, parse_contacts, split_list, CSeq, Contact, Headers, NameAddr, Via,
};
pub use message::{reason_phrase, Checked, Message, ParseError, StartLine};
pub use method::Method;
pub use text::unquote;
pub use uri::{ip_text, Host, Scheme, Uri};
