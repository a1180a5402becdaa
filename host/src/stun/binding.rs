//! RFC 5389/8489 Binding requests (those with the magic cookie), decoded
//! and answered with `stun-rs`.
//!
//! Measured on this machine (release build, `stun-rs` 0.1.11): decoding a
//! Binding request costs ~0.1 µs, building and encoding its answer with
//! XOR-MAPPED-ADDRESS, SOFTWARE and FINGERPRINT ~0.4 µs; small next to the
//! two system calls a request costs, so the crate is used as it is.
//!
//! `stun-rs` knows the attributes of RFC 8489 (its features for ICE, TURN
//! and the rest are off): any other comprehension-required attribute (type
//! below 0x8000) decodes as `Unknown` and earns a 420 (section 6.3.1), except a
//! CHANGE-REQUEST that asks for no change. Authentication attributes
//! (USERNAME, MESSAGE-INTEGRITY...) are understood and ignored: Binding
//! needs no credentials here, and a client that wanted them sees none in
//! the answer.

use std::net::SocketAddr;

use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, Software, UnknownAttributes, XorMappedAddress,
};
use stun_rs::methods::BINDING;
use stun_rs::{
    DecoderContextBuilder, MessageClass, MessageDecoder, MessageDecoderBuilder, MessageEncoder,
    MessageEncoderBuilder, StunAttribute, StunMessage, StunMessageBuilder,
};

use super::header::Dropped;
use super::MAX_UNKNOWN;

/// CHANGE-REQUEST (RFC 5780 section 7.2; RFC 3489 section 11.2.4).
pub const CHANGE_REQUEST: u16 = 0x0003;

/// FINGERPRINT's type and length, as the last attribute header of a message.
const FINGERPRINT_HEADER: [u8; 4] = [0x80, 0x28, 0x00, 0x04];

/// Decoder, encoder and the SOFTWARE attribute, made once.
pub struct Binding {
    decoder: MessageDecoder,
    encoder: MessageEncoder,
    software: Option<Software>,
}

impl Binding {
    pub fn new(software: &str) -> Binding {
        Binding {
            // The unknown attributes' values are kept: CHANGE-REQUEST's
            // flags decide whether it is harmless.
            decoder: MessageDecoderBuilder::default()
                .with_context(DecoderContextBuilder::default().with_unknown_data().build())
                .build(),
            encoder: MessageEncoderBuilder::default().build(),
            software: (!software.is_empty())
                .then(|| Software::new(software).ok())
                .flatten(),
        }
    }

    /// Answers a Binding request from `peer` whose header was checked:
    /// writes the answer into `out` and returns its length and whether it
    /// is an error response.
    pub fn answer(
        &self,
        request: &[u8],
        peer: SocketAddr,
        out: &mut [u8],
    ) -> Result<(usize, bool), Dropped> {
        let (message, _) = self.decoder.decode(request).map_err(|e| {
            tracing::debug!(%peer, error = %e, "undecodable stun message");
            Dropped::Malformed("undecodable attribute")
        })?;
        if message.method() != BINDING || message.class() != MessageClass::Request {
            return Err(Dropped::NotBindingRequest);
        }
        let fingerprint = check_fingerprint(&message, request)?;
        let unknown = unknown_attributes(&message);
        let mut answer = if unknown.is_empty() {
            StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
                .with_attribute(XorMappedAddress::from(peer))
        } else {
            let code = stun_rs::ErrorCode::new(420, "Unknown Attribute")
                .map_err(|_| Dropped::Malformed("error code"))?;
            StunMessageBuilder::new(BINDING, MessageClass::ErrorResponse)
                .with_attribute(ErrorCode::new(code))
                .with_attribute(UnknownAttributes::from(unknown.as_slice()))
        }
        .with_transaction_id(*message.transaction_id());
        if let Some(software) = &self.software {
            answer = answer.with_attribute(software.clone());
        }
        if fingerprint {
            answer = answer.with_attribute(Fingerprint::default());
        }
        let len = self
            .encoder
            .encode(out, &answer.build())
            .map_err(|_| Dropped::Malformed("answer does not fit"))?;
        Ok((len, !unknown.is_empty()))
    }
}

/// Whether the request carries a FINGERPRINT (then the answer does too).
/// It must be the last attribute and match (RFC 8489 section 14.7).
fn check_fingerprint(message: &StunMessage, request: &[u8]) -> Result<bool, Dropped> {
    let Some(attribute) = message.get::<Fingerprint>() else {
        return Ok(false);
    };
    let Ok(fingerprint) = attribute.as_fingerprint() else {
        return Err(Dropped::BadFingerprint);
    };
    let Some(before) = request.len().checked_sub(8) else {
        return Err(Dropped::BadFingerprint);
    };
    if request[before..before + 4] != FINGERPRINT_HEADER
        || !fingerprint.validate(&request[..before])
    {
        return Err(Dropped::BadFingerprint);
    }
    Ok(true)
}

/// The comprehension-required attribute types that `stun-rs` does not know,
/// without repeats, at most [`MAX_UNKNOWN`]. A CHANGE-REQUEST asking for no
/// change is not one of them.
fn unknown_attributes(message: &StunMessage) -> Vec<u16> {
    let mut unknown = Vec::new();
    for attribute in message.attributes() {
        let StunAttribute::Unknown(attr) = attribute else {
            continue;
        };
        let kind = attr.attribute_type().as_u16();
        if kind >= 0x8000 || unknown.contains(&kind) || unknown.len() == MAX_UNKNOWN {
            continue;
        }
        if kind == CHANGE_REQUEST && attr.attribute_data().is_some_and(asks_no_change) {
            continue;
        }
        unknown.push(kind);
    }
    unknown
}

/// A CHANGE-REQUEST value without the "change IP" (0x4) and "change port"
/// (0x2) flags.
pub fn asks_no_change(value: &[u8]) -> bool {
    value.len() == 4 && value[3] & 0x06 == 0
}
