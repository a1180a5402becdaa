//! RFC 3489 ("classic STUN") Binding requests: no magic cookie, a 128-bit
//! transaction id, MAPPED-ADDRESS in the answer. Old phones and Debian's
//! `stun` client still send them. Written by hand because `stun-rs` only
//! decodes and encodes messages with the cookie; the answer is a few
//! fixed-size attributes.
//!
//! The answer carries MAPPED-ADDRESS (the client's address in the clear:
//! XOR-MAPPED-ADDRESS did not exist yet) and SOFTWARE, the same transaction
//! id, and none of RFC 3489's SOURCE-ADDRESS / CHANGED-ADDRESS: with one
//! address per listener there is no other address to advertise, and a
//! client then skips the tests that need one.

use std::net::{IpAddr, SocketAddr};

use super::binding::{asks_no_change, CHANGE_REQUEST};
use super::header::{Dropped, HEADER_LEN};
use super::MAX_UNKNOWN;

const MAPPED_ADDRESS: u16 = 0x0001;
/// "Send the answer there instead": never honoured (it would make the
/// server a reflector), so it counts as unknown.
const RESPONSE_ADDRESS: u16 = 0x0002;
const ERROR_CODE: u16 = 0x0009;
const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// The last attribute type RFC 3489 defines (REFLECTED-FROM).
const LAST_RFC3489_ATTRIBUTE: u16 = 0x000B;
/// SERVER in the drafts after RFC 3489, SOFTWARE in RFC 5389: same type.
const SOFTWARE: u16 = 0x8022;

const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;

/// Answers an RFC 3489 Binding request from `peer` whose header was
/// checked; returns the answer's length in `out` and whether it is an error.
pub fn answer(
    request: &[u8],
    peer: SocketAddr,
    software: &str,
    out: &mut [u8],
) -> Result<(usize, bool), Dropped> {
    let unknown = unknown_attributes(&request[HEADER_LEN..])?;
    let mut w = Writer::new(out);
    let error = !unknown.is_empty();
    w.put(
        &(if error {
            BINDING_ERROR
        } else {
            BINDING_SUCCESS
        })
        .to_be_bytes(),
    )?;
    w.put(&[0, 0])?; // length, filled in at the end
    w.put(&request[4..HEADER_LEN])?; // transaction id
    if error {
        // Class 4, number 20: 420 (RFC 3489 section 11.2.9).
        w.attribute(ERROR_CODE, &[&[0, 0, 4, 20], b"Unknown Attribute"])?;
        // An odd count repeats one type, so the value stays a multiple of 4
        // (RFC 3489's rule for this attribute).
        let mut types: Vec<u8> = unknown.iter().flat_map(|t| t.to_be_bytes()).collect();
        if unknown.len() % 2 == 1 {
            types.extend_from_slice(&unknown[0].to_be_bytes());
        }
        w.attribute(UNKNOWN_ATTRIBUTES, &[&types])?;
    } else {
        let (family, address): (u8, Vec<u8>) = match peer.ip() {
            IpAddr::V4(v4) => (1, v4.octets().to_vec()),
            IpAddr::V6(v6) => (2, v6.octets().to_vec()),
        };
        w.attribute(
            MAPPED_ADDRESS,
            &[&[0, family], &peer.port().to_be_bytes(), &address],
        )?;
    }
    if !software.is_empty() {
        w.attribute(SOFTWARE, &[software.as_bytes()])?;
    }
    let len = w.len;
    let body =
        u16::try_from(len - HEADER_LEN).map_err(|_| Dropped::Malformed("answer too long"))?;
    out[2..4].copy_from_slice(&body.to_be_bytes());
    Ok((len, error))
}

/// Walks the attributes: the comprehension-required types this server does
/// not act on (at most [`MAX_UNKNOWN`], no repeats), or Malformed when the
/// attributes do not fill the body exactly.
fn unknown_attributes(mut body: &[u8]) -> Result<Vec<u16>, Dropped> {
    let mut unknown = Vec::new();
    while !body.is_empty() {
        if body.len() < 4 {
            return Err(Dropped::Malformed("attribute header cut short"));
        }
        let kind = u16::from_be_bytes([body[0], body[1]]);
        let len = usize::from(u16::from_be_bytes([body[2], body[3]]));
        let padded = (len + 3) & !3;
        if 4 + padded > body.len() {
            return Err(Dropped::Malformed("attribute longer than the message"));
        }
        let value = &body[4..4 + len];
        let understood = match kind {
            CHANGE_REQUEST => asks_no_change(value),
            RESPONSE_ADDRESS => false,
            // Known to RFC 3489 and harmless to ignore.
            _ => kind <= LAST_RFC3489_ATTRIBUTE || kind >= 0x8000,
        };
        if !understood && !unknown.contains(&kind) && unknown.len() < MAX_UNKNOWN {
            unknown.push(kind);
        }
        body = &body[4 + padded..];
    }
    Ok(unknown)
}

/// Appends to a fixed buffer; never writes past its end.
struct Writer<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8]) -> Writer<'a> {
        Writer { out, len: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), Dropped> {
        let end = self.len + bytes.len();
        let Some(slot) = self.out.get_mut(self.len..end) else {
            return Err(Dropped::Malformed("answer does not fit"));
        };
        slot.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// One attribute: type, length, the value's parts, zero padding.
    fn attribute(&mut self, kind: u16, parts: &[&[u8]]) -> Result<(), Dropped> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len16 = u16::try_from(len).map_err(|_| Dropped::Malformed("attribute too long"))?;
        self.put(&kind.to_be_bytes())?;
        self.put(&len16.to_be_bytes())?;
        for part in parts {
            self.put(part)?;
        }
        self.put(&[0; 3][..(4 - len % 4) % 4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RFC 3489 request as Debian's `stun` 0.97 sends it: CHANGE-REQUEST
    /// with the given flags.
    fn request(flags: u8) -> Vec<u8> {
        let mut m = vec![0x00, 0x01, 0x00, 0x08];
        m.extend_from_slice(&[0x5a; 16]);
        m.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, flags]);
        m
    }

    #[test]
    fn answers_mapped_address_with_the_same_transaction_id() {
        let mut out = [0u8; 256];
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (len, error) = answer(&request(0), peer, "sipfence", &mut out).unwrap();
        assert!(!error);
        let a = &out[..len];
        assert_eq!(&a[..2], &[0x01, 0x01]);
        assert_eq!(usize::from(u16::from_be_bytes([a[2], a[3]])), len - 20);
        assert_eq!(&a[4..20], &[0x5a; 16]);
        // MAPPED-ADDRESS: family 1, port 40000, 127.0.0.1.
        assert_eq!(&a[20..32], &[0, 1, 0, 8, 0, 1, 0x9c, 0x40, 127, 0, 0, 1]);
        assert_eq!(&a[32..36], &[0x80, 0x22, 0, 8]);
        assert_eq!(&a[36..44], b"sipfence");
        assert_eq!(len, 44);
    }

    #[test]
    fn a_change_request_gets_420_listing_it() {
        let mut out = [0u8; 256];
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let (len, error) = answer(&request(4), peer, "x", &mut out).unwrap();
        assert!(error);
        let a = &out[..len];
        assert_eq!(&a[..2], &[0x01, 0x11]);
        assert_eq!(&a[20..28], &[0, 9, 0, 21, 0, 0, 4, 20]);
        assert_eq!(&a[28..45], b"Unknown Attribute");
        // Padded to 48; then UNKNOWN-ATTRIBUTES with 0x0003 twice.
        assert_eq!(&a[48..56], &[0, 0x0a, 0, 4, 0, 3, 0, 3]);
    }

    #[test]
    fn broken_attribute_layout_is_malformed() {
        let mut m = request(0);
        m[23] = 8; // CHANGE-REQUEST claims 8 bytes
        assert!(matches!(
            unknown_attributes(&m[20..]),
            Err(Dropped::Malformed(_))
        ));
        assert!(matches!(
            unknown_attributes(&m[20..22]),
            Err(Dropped::Malformed(_))
        ));
        assert_eq!(unknown_attributes(&[]), Ok(vec![]));
        // RESPONSE-ADDRESS is never honoured.
        assert_eq!(
            unknown_attributes(&[0, 2, 0, 8, 0, 1, 0, 1, 1, 2, 3, 4]),
            Ok(vec![2])
        );
    }
}
