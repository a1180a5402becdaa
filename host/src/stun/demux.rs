//! One UDP port, two protocols: a datagram on the SIP port is a CRLF
//! keep-alive, STUN or SIP, told apart by its first bytes. RFC 5626
//! section 4.4.2 puts STUN keep-alives on the SIP port; RFC 7983 draws the
//! same kind of first-byte map for media ports.
//!
//! SIP starts with a method name or "SIP/2.0": a letter, so its first byte
//! has the top bits 01. STUN's first two bits are 00 (RFC 8489 section 5).
//! On top of that, RFC 5389/8489 messages carry the magic cookie in bytes
//! 4..8, and RFC 3489 Binding requests (no cookie) start with 0x0001 and
//! carry a length that matches the datagram.

use super::header::{BINDING_REQUEST, HEADER_LEN, MAGIC_COOKIE};

/// Whether a datagram received on the SIP port is STUN. A STUN-looking
/// datagram that turns out malformed is still STUN: dropped and counted
/// as such, never handed to the SIP parser.
pub fn is_stun(datagram: &[u8]) -> bool {
    if datagram.len() < 8 || datagram[0] & 0xC0 != 0 {
        return false;
    }
    if datagram[4..8] == MAGIC_COOKIE {
        return true;
    }
    datagram.len() >= HEADER_LEN
        && u16::from_be_bytes([datagram[0], datagram[1]]) == BINDING_REQUEST
        && HEADER_LEN + usize::from(u16::from_be_bytes([datagram[2], datagram[3]]))
            == datagram.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_and_not_stun() {
        let mut modern = vec![0x00, 0x01, 0x00, 0x00];
        modern.extend_from_slice(&MAGIC_COOKIE);
        modern.extend_from_slice(&[7; 12]);
        assert!(is_stun(&modern));
        // Truncated, but the cookie says STUN: dropped as malformed STUN.
        assert!(is_stun(&modern[..8]));
        // Other methods and classes are STUN too (a Binding indication).
        let mut indication = modern.clone();
        indication[1] = 0x11;
        assert!(is_stun(&indication));

        let mut classic = vec![0x00, 0x01, 0x00, 0x08];
        classic.extend_from_slice(&[5; 16]);
        classic.extend_from_slice(&[0, 3, 0, 4]);
        assert!(!is_stun(&classic[..24]), "length must match");
        classic.extend_from_slice(&[0, 0, 0, 0]);
        assert!(is_stun(&classic));

        assert!(!is_stun(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"));
        assert!(!is_stun(b"SIP/2.0 200 OK\r\n"));
        assert!(!is_stun(b"\r\n\r\n"));
        assert!(!is_stun(b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n"));
        assert!(!is_stun(&[]));
        assert!(!is_stun(&[0; 7]));
        // Binary that is neither: left to the SIP parser, which drops it.
        assert!(!is_stun(&[0x00, 0x02, 0x00, 0x00, 1, 2, 3, 4, 5, 6, 7, 8]));
    }
}
