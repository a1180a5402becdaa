//! RTP packets (RFC 3550 section 5.1) and telephone-events (RFC 4733
//! section 2.3): parsed in place, the payload borrowed from the datagram,
//! so receiving costs no allocation.

/// Fixed RTP header length without CSRCs or extension.
pub const HEADER_LEN: usize = 12;

/// Why a datagram is not an RTP packet we accept. Network input: the
/// session drops and counts it, never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Fewer bytes than the fixed header (or, for an event, than 4 bytes).
    #[error("packet too short: {0} bytes")]
    TooShort(usize),
    /// The version field is not 2 (STUN, ZRTP or garbage on the port).
    #[error("RTP version {0}, expected 2")]
    Version(u8),
    /// The CSRC list or header extension runs past the end of the packet.
    #[error("CSRC list or header extension overruns the packet")]
    HeaderOverrun,
    /// The padding count is zero or larger than the payload (section 5.1).
    #[error("invalid padding length")]
    Padding,
    /// Payload type 72..=76: an RTCP packet on a muxed port (RFC 5761 section 4).
    #[error("RTCP packet (payload type {0})")]
    Rtcp(u8),
    /// The output buffer cannot hold the packet being built.
    #[error("output buffer too small: need {0} bytes")]
    BufferTooSmall(usize),
}

/// A parsed RTP packet borrowing its payload from the received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The padding bit; the padding itself is already stripped from `payload`.
    pub padding: bool,
    /// The extension bit; the extension is skipped, its contents unused.
    pub extension: bool,
    /// Contributing sources (a mixer's inputs); unused but counted in the header.
    pub csrc_count: u8,
    /// Start of a talkspurt for audio (RFC 3551 section 4.1).
    pub marker: bool,
    /// Selects the codec (0 PCMU, 8 PCMA, dynamic ones from the SDP).
    pub payload_type: u8,
    /// Detects loss and reordering; wraps at 65535.
    pub sequence: u16,
    /// Sampling instant of the first payload sample (8 kHz units for G.711).
    pub timestamp: u32,
    /// The stream's source; a change means the sender restarted.
    pub ssrc: u32,
    /// The media bytes, without padding.
    pub payload: &'a [u8],
}

/// The header fields we set when sending (no CSRC, no extension, no padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Set on the first packet of the stream (a talkspurt start).
    pub marker: bool,
    /// The negotiated payload type.
    pub payload_type: u8,
    /// Incremented by one per packet.
    pub sequence: u16,
    /// Incremented by the samples per packet.
    pub timestamp: u32,
    /// Our stream's source identifier.
    pub ssrc: u32,
}

/// Parses one datagram as RTP (RFC 3550 section 5.1), rejecting malformed
/// headers and RTCP.
pub fn parse(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    if buf.len() < HEADER_LEN {
        return Err(RtpError::TooShort(buf.len()));
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(RtpError::Version(version));
    }
    let padding = buf[0] & 0x20 != 0;
    let extension = buf[0] & 0x10 != 0;
    let csrc_count = buf[0] & 0x0F;
    let marker = buf[1] & 0x80 != 0;
    let payload_type = buf[1] & 0x7F;
    if (72..=76).contains(&payload_type) {
        return Err(RtpError::Rtcp(payload_type));
    }
    let mut offset = HEADER_LEN + 4 * usize::from(csrc_count);
    if extension {
        // Section 5.3.1: 16-bit profile id, 16-bit length in 32-bit words.
        let Some(ext) = buf.get(offset..offset + 4) else {
            return Err(RtpError::HeaderOverrun);
        };
        offset += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    if offset > buf.len() {
        return Err(RtpError::HeaderOverrun);
    }
    let mut end = buf.len();
    if padding {
        // The last byte counts the padding bytes, itself included.
        let pad = usize::from(buf[end - 1]);
        if pad == 0 || offset + pad > end {
            return Err(RtpError::Padding);
        }
        end -= pad;
    }
    Ok(RtpPacket {
        padding,
        extension,
        csrc_count,
        marker,
        payload_type,
        sequence: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        payload: &buf[offset..end],
    })
}

/// Writes a packet (header then payload) into `out`; returns its length.
pub fn write_packet(header: &RtpHeader, payload: &[u8], out: &mut [u8]) -> Result<usize, RtpError> {
    let len = HEADER_LEN + payload.len();
    if out.len() < len {
        return Err(RtpError::BufferTooSmall(len));
    }
    out[0] = 2 << 6;
    out[1] = (u8::from(header.marker) << 7) | (header.payload_type & 0x7F);
    out[2..4].copy_from_slice(&header.sequence.to_be_bytes());
    out[4..8].copy_from_slice(&header.timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&header.ssrc.to_be_bytes());
    out[HEADER_LEN..len].copy_from_slice(payload);
    Ok(len)
}

/// The DTMF event for `#` (RFC 4733 section 3.2, table 7).
pub const EVENT_HASH: u8 = 11;

/// One telephone-event payload (RFC 4733 section 2.3). A key press is sent
/// as several packets with the same RTP timestamp; the last ones (usually
/// three) carry the end bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// 0-9 digits, 10 `*`, 11 `#`, 12-15 A-D.
    pub event: u8,
    /// The key was released: the event is complete.
    pub end: bool,
    /// Power level in -dBm0 (0..=63).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first event of a telephone-event payload.
    pub fn parse(payload: &[u8]) -> Result<Self, RtpError> {
        let [event, flags, d0, d1, ..] = *payload else {
            return Err(RtpError::TooShort(payload.len()));
        };
        Ok(Self {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The key as a character, for DTMF events 0..=15.
    pub fn key(&self) -> Option<char> {
        b"0123456789*#ABCD"
            .get(usize::from(self.event))
            .map(|&b| char::from(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 8,
            sequence: 0xFFFF,
            timestamp: 0xDEAD_BEEF,
            ssrc: 0x0102_0304,
        }
    }

    #[test]
    fn build_then_parse() {
        let mut buf = [0u8; 64];
        let n = write_packet(&header(), &[1, 2, 3], &mut buf).unwrap();
        assert_eq!(n, 15);
        assert_eq!(&buf[..4], &[0x80, 0x88, 0xFF, 0xFF]);
        let p = parse(&buf[..n]).unwrap();
        assert!(p.marker && !p.padding && !p.extension);
        assert_eq!((p.payload_type, p.sequence), (8, 0xFFFF));
        assert_eq!((p.timestamp, p.ssrc), (0xDEAD_BEEF, 0x0102_0304));
        assert_eq!(p.payload, &[1, 2, 3]);
        assert_eq!(
            write_packet(&header(), &[0; 60], &mut buf),
            Err(RtpError::BufferTooSmall(72))
        );
    }

    #[test]
    fn csrc_extension_and_padding_are_skipped() {
        let mut pkt = vec![0xB1, 0x00, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
        pkt.extend_from_slice(&[0xAA; 4]); // one CSRC
        pkt.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0x20, 0, 0]); // extension, 1 word
        pkt.extend_from_slice(&[7, 8, 9]); // payload
        pkt.extend_from_slice(&[0, 0, 3]); // padding of 3
        let p = parse(&pkt).unwrap();
        assert!(p.padding && p.extension);
        assert_eq!(p.csrc_count, 1);
        assert_eq!(p.payload, &[7, 8, 9]);
        assert_eq!((p.sequence, p.timestamp, p.ssrc), (1, 160, 9));
    }

    #[test]
    fn malformed_packets_are_rejected() {
        assert_eq!(parse(&[0x80; 11]), Err(RtpError::TooShort(11)));
        let mut pkt = [0u8; 12];
        pkt[0] = 0x40;
        assert_eq!(parse(&pkt), Err(RtpError::Version(1)));
        pkt[0] = 0x82; // two CSRCs, none present
        assert_eq!(parse(&pkt), Err(RtpError::HeaderOverrun));
        pkt[0] = 0x90; // extension bit, no extension header
        assert_eq!(parse(&pkt), Err(RtpError::HeaderOverrun));
        let mut ext = [0u8; 16];
        ext[0] = 0x90;
        ext[14] = 0x00;
        ext[15] = 0x05; // 5 words announced, none present
        assert_eq!(parse(&ext), Err(RtpError::HeaderOverrun));
        let mut pad = [0u8; 14];
        pad[0] = 0xA0;
        pad[13] = 0;
        assert_eq!(parse(&pad), Err(RtpError::Padding));
        pad[13] = 3; // more padding than payload
        assert_eq!(parse(&pad), Err(RtpError::Padding));
        let mut rtcp = [0u8; 12];
        rtcp[0] = 0x80;
        rtcp[1] = 200; // sender report: marker bit + 72
        assert_eq!(parse(&rtcp), Err(RtpError::Rtcp(72)));
    }

    #[test]
    fn telephone_event() {
        let e = TelephoneEvent::parse(&[11, 0x8A, 0x03, 0x20]).unwrap();
        assert_eq!(
            e,
            TelephoneEvent {
                event: EVENT_HASH,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(e.key(), Some('#'));
        let e = TelephoneEvent::parse(&[5, 0x0A, 0, 160]).unwrap();
        assert!(!e.end);
        assert_eq!(e.key(), Some('5'));
        assert_eq!(TelephoneEvent::parse(&[16, 0, 0, 0]).unwrap().key(), None);
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(RtpError::TooShort(3))
        );
    }
}
