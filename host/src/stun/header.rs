//! The 20-byte header every STUN message starts with (RFC 8489 section 5):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0 0|     STUN Message Type     |         Message Length        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Magic Cookie (0x2112A442)                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                Transaction ID (96 bits)                       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! RFC 3489 had no cookie: its transaction id is all 128 bits after the
//! length. A message is checked here once, for both kinds, before anything
//! looks at its attributes.

/// The magic cookie, as it appears on the wire.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Header size; the Message Length counts the bytes after it.
pub const HEADER_LEN: usize = 20;

/// Message type of a Binding request (class request, method Binding).
pub const BINDING_REQUEST: u16 = 0x0001;

/// Why a STUN message got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// The header or the attribute layout is broken.
    Malformed(&'static str),
    /// FINGERPRINT is there and wrong: not STUN after all, or damaged
    /// (RFC 8489 section 6.3 says discard).
    BadFingerprint,
    /// Well-formed, but not a Binding request: a response, an indication
    /// (they need no answer) or another method.
    NotBindingRequest,
}

/// What the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Class and method (the 14 bits after the leading zeros).
    pub message_type: u16,
    /// Bytes after the header; the message is exactly that long.
    pub length: usize,
    /// No magic cookie: an RFC 3489 message.
    pub classic: bool,
}

impl Header {
    /// Checks the header of `message`, which must be one whole message
    /// (a datagram, or one frame of a TCP stream).
    pub fn parse(message: &[u8]) -> Result<Header, Dropped> {
        if message.len() < HEADER_LEN {
            return Err(Dropped::Malformed("shorter than a STUN header"));
        }
        if message[0] & 0xC0 != 0 {
            return Err(Dropped::Malformed("first two bits are not zero"));
        }
        let length = usize::from(u16::from_be_bytes([message[2], message[3]]));
        // Attributes are padded to 4 bytes, so the length always is too.
        if length % 4 != 0 {
            return Err(Dropped::Malformed("length is not a multiple of 4"));
        }
        if HEADER_LEN + length != message.len() {
            return Err(Dropped::Malformed("length does not match the message"));
        }
        Ok(Header {
            message_type: u16::from_be_bytes([message[0], message[1]]),
            length,
            classic: message[4..8] != MAGIC_COOKIE,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(length: u16, cookie: bool, extra: usize) -> Vec<u8> {
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&length.to_be_bytes());
        m.extend_from_slice(if cookie { &MAGIC_COOKIE } else { &[1, 2, 3, 4] });
        m.extend_from_slice(&[9; 12]);
        m.extend(std::iter::repeat_n(0, extra));
        m
    }

    #[test]
    fn good_headers() {
        let h = Header::parse(&request(0, true, 0)).unwrap();
        assert_eq!((h.message_type, h.length, h.classic), (1, 0, false));
        let h = Header::parse(&request(8, false, 8)).unwrap();
        assert_eq!((h.message_type, h.length, h.classic), (1, 8, true));
    }

    #[test]
    fn bad_headers() {
        let m = |r| match r {
            Err(Dropped::Malformed(why)) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            m(Header::parse(&request(0, true, 0)[..19])),
            "shorter than a STUN header"
        );
        let mut sip = request(0, true, 0);
        sip[0] = b'O';
        assert_eq!(m(Header::parse(&sip)), "first two bits are not zero");
        assert_eq!(
            m(Header::parse(&request(2, true, 2))),
            "length is not a multiple of 4"
        );
        assert_eq!(
            m(Header::parse(&request(8, true, 4))),
            "length does not match the message"
        );
        assert_eq!(
            m(Header::parse(&request(4, true, 8))),
            "length does not match the message"
        );
    }
}
