//! SDP offer/answer (RFC 4566 syntax, RFC 3264 negotiation), just enough
//! for a voicemail leg: the caller offers, we pick G.711 and answer.
//!
//! We read the connection address (session or media level, IPv4 or IPv6),
//! every media line, `a=rtpmap`, `a=ptime` and the direction attributes.
//! The answer keeps every offered media line in order (RFC 3264 section 6);
//! all but the first audio line are rejected with port 0.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::media::g711::Law;

/// An offer we cannot answer. Every variant means 488 Not Acceptable Here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// A line that breaks RFC 4566 syntax where we need it.
    #[error("SDP line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No `m=audio` line.
    #[error("no audio stream offered")]
    NoAudio,
    /// The audio stream is offered with port 0 (disabled).
    #[error("audio stream disabled (port 0)")]
    PortZero,
    /// The audio stream is not plain RTP (e.g. SRTP's RTP/SAVP).
    #[error("unsupported media protocol {0}")]
    UnsupportedProtocol(String),
    /// Neither PCMU nor PCMA offered.
    #[error("no G.711 (PCMU/PCMA) format offered")]
    NoCommonCodec,
    /// No `c=` at session or media level for the audio stream.
    #[error("no connection address for the audio stream")]
    NoConnection,
}

/// The two codecs we record and play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// G.711 μ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl Codec {
    /// The `a=rtpmap` encoding name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The payload type RFC 3551 section 6 assigns it.
    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The companding law for the G.711 coder.
    pub fn law(self) -> Law {
        match self {
            Codec::Pcmu => Law::Ulaw,
            Codec::Pcma => Law::Alaw,
        }
    }
}

/// Media direction attributes (RFC 3264 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The default.
    SendRecv,
    /// The offerer only sends (e.g. holds us with music).
    SendOnly,
    /// The offerer only receives.
    RecvOnly,
    /// Neither side sends.
    Inactive,
}

impl Direction {
    fn parse(attr: &str) -> Option<Self> {
        match attr {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The answer's direction for this offered one (RFC 3264 section 6.1).
    pub fn answer(self) -> Self {
        match self {
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            other => other,
        }
    }
}

/// One `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type it names.
    pub payload_type: u8,
    /// Encoding name as written (compare case-insensitively).
    pub encoding: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
}

/// One `m=` line and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, ...
    pub media: String,
    /// The transport port; 0 disables the stream.
    pub port: u16,
    /// `RTP/AVP`, `RTP/SAVP`, ...
    pub protocol: String,
    /// The formats in preference order, as written.
    pub formats: Vec<String>,
    /// Media-level `c=`, overriding the session's.
    pub connection: Option<IpAddr>,
    /// Its `a=rtpmap` lines.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=ptime` in milliseconds.
    pub ptime: Option<u32>,
    /// Media-level direction, overriding the session's.
    pub direction: Option<Direction>,
}

impl MediaDescription {
    /// The rtpmap of a payload type, if any.
    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == payload_type)
    }

    /// The G.711 codec a payload type stands for: by rtpmap, or by the
    /// static assignment when there is none.
    fn g711(&self, payload_type: u8) -> Option<Codec> {
        match self.rtpmap(payload_type) {
            Some(m) if m.clock_rate != 8000 => None,
            Some(m) if m.encoding.eq_ignore_ascii_case("PCMU") => Some(Codec::Pcmu),
            Some(m) if m.encoding.eq_ignore_ascii_case("PCMA") => Some(Codec::Pcma),
            Some(_) => None,
            None => match payload_type {
                0 => Some(Codec::Pcmu),
                8 => Some(Codec::Pcma),
                _ => None,
            },
        }
    }

    /// The numeric formats, in order.
    fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse().ok())
    }
}

/// A parsed offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// Session-level `c=`.
    pub connection: Option<IpAddr>,
    /// Session-level direction.
    pub direction: Option<Direction>,
    /// Every `m=` line, in order.
    pub media: Vec<MediaDescription>,
}

/// Parses an SDP body. Unknown lines and attributes are ignored; lines we
/// rely on (`v=`, `c=`, `m=`, `a=rtpmap`, `a=ptime`) must be well formed.
pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
    let mut sdp = SessionDescription {
        connection: None,
        direction: None,
        media: Vec::new(),
    };
    let mut saw_version = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let bad = |reason| SdpError::Malformed { line, reason };
        let raw = raw.trim_end_matches('\r');
        if raw.is_empty() {
            continue;
        }
        let Some((kind, value)) = raw.split_once('=') else {
            return Err(bad("not a <type>=<value> line"));
        };
        if !saw_version {
            if kind != "v" || value.trim() != "0" {
                return Err(bad("SDP must start with v=0"));
            }
            saw_version = true;
            continue;
        }
        match kind {
            "c" => {
                let addr = parse_connection(value).ok_or(bad("bad c= line"))?;
                match sdp.media.last_mut() {
                    Some(m) => m.connection = Some(addr),
                    None => sdp.connection = Some(addr),
                }
            }
            "m" => sdp
                .media
                .push(parse_media(value).ok_or(bad("bad m= line"))?),
            "a" => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                if let Some(dir) = Direction::parse(name) {
                    match sdp.media.last_mut() {
                        Some(m) => m.direction = Some(dir),
                        None => sdp.direction = Some(dir),
                    }
                }
                let Some(m) = sdp.media.last_mut() else {
                    continue;
                };
                match name {
                    "rtpmap" => m
                        .rtpmaps
                        .push(parse_rtpmap(arg).ok_or(bad("bad a=rtpmap"))?),
                    "ptime" => m.ptime = Some(arg.trim().parse().map_err(|_| bad("bad a=ptime"))?),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !saw_version {
        return Err(SdpError::Malformed {
            line: 1,
            reason: "empty SDP",
        });
    }
    Ok(sdp)
}

/// `IN IP4 <addr>[/ttl[/n]]` or `IN IP6 <addr>[/n]`.
fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut parts = value.split_whitespace();
    if parts.next()? != "IN" {
        return None;
    }
    let family = parts.next()?;
    let addr = parts.next()?.split('/').next()?;
    match family {
        "IP4" => addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
        "IP6" => addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        _ => None,
    }
}

/// `<media> <port>[/<count>] <proto> <fmt>...`.
fn parse_media(value: &str) -> Option<MediaDescription> {
    let mut parts = value.split_whitespace();
    let media = parts.next()?.to_owned();
    let port = parts.next()?.split('/').next()?.parse().ok()?;
    let protocol = parts.next()?.to_owned();
    let formats: Vec<String> = parts.map(str::to_owned).collect();
    if formats.is_empty() {
        return None;
    }
    Some(MediaDescription {
        media,
        port,
        protocol,
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        ptime: None,
        direction: None,
    })
}

/// `<pt> <encoding>/<clock>[/<channels>]`.
fn parse_rtpmap(arg: &str) -> Option<RtpMap> {
    let (pt, rest) = arg.trim().split_once(char::is_whitespace)?;
    let mut enc = rest.trim().split('/');
    let encoding = enc.next()?.to_owned();
    let clock_rate = enc.next()?.parse().ok()?;
    Some(RtpMap {
        payload_type: pt.parse().ok()?,
        encoding,
        clock_rate,
    })
}

/// What we agreed to: everything the media session needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Index of the chosen audio line among the offer's media.
    pub media_index: usize,
    /// The codec we send and record.
    pub codec: Codec,
    /// Its payload type in this call (the offer's number).
    pub payload_type: u8,
    /// The offer's telephone-event/8000 payload type, for DTMF.
    pub telephone_event: Option<u8>,
    /// Where the offer says to send RTP (until symmetric RTP latches).
    pub remote: SocketAddr,
    /// The offer's packet time, informational: we always send 20 ms.
    pub offer_ptime: Option<u32>,
    /// Our direction in the answer.
    pub direction: Direction,
}

/// Picks the first audio line and the first PCMU/PCMA format in the
/// offer's order (RFC 3264 section 6.1: the offerer's preference).
pub fn negotiate(offer: &SessionDescription) -> Result<Negotiated, SdpError> {
    let (media_index, audio) = offer
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.media == "audio")
        .ok_or(SdpError::NoAudio)?;
    if audio.port == 0 {
        return Err(SdpError::PortZero);
    }
    if audio.protocol != "RTP/AVP" && audio.protocol != "RTP/AVPF" {
        return Err(SdpError::UnsupportedProtocol(audio.protocol.clone()));
    }
    let (payload_type, codec) = audio
        .payload_types()
        .find_map(|pt| audio.g711(pt).map(|c| (pt, c)))
        .ok_or(SdpError::NoCommonCodec)?;
    let telephone_event = audio.payload_types().find(|&pt| {
        audio.rtpmap(pt).is_some_and(|m| {
            m.encoding.eq_ignore_ascii_case("telephone-event") && m.clock_rate == 8000
        })
    });
    let ip = audio
        .connection
        .or(offer.connection)
        .ok_or(SdpError::NoConnection)?;
    let offered = audio
        .direction
        .or(offer.direction)
        .unwrap_or(Direction::SendRecv);
    Ok(Negotiated {
        media_index,
        codec,
        payload_type,
        telephone_event,
        remote: SocketAddr::new(ip, audio.port),
        offer_ptime: audio.ptime,
        direction: offered.answer(),
    })
}

/// Our side of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address the caller should send RTP to.
    pub ip: IpAddr,
    /// Our bound RTP port.
    pub port: u16,
    /// `o=` session id (random per call).
    pub session_id: u64,
    /// `o=` version (bumped on re-offers).
    pub session_version: u64,
}

/// Writes the SDP answer (CRLF line ends, RFC 4566 section 5).
pub fn build_answer(
    offer: &SessionDescription,
    negotiated: &Negotiated,
    local: &LocalMedia,
) -> String {
    let family = if local.ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut sdp = String::with_capacity(256);
    // Writing to a String cannot fail; the results are ignored.
    let _ = write!(
        sdp,
        "v=0\r\no=sipfence {} {} IN {family} {ip}\r\ns=sipfence\r\nc=IN {family} {ip}\r\nt=0 0\r\n",
        local.session_id,
        local.session_version,
        ip = local.ip
    );
    for (i, m) in offer.media.iter().enumerate() {
        if i != negotiated.media_index {
            // Rejected: port 0, one of its formats (RFC 3264 section 6).
            let _ = write!(sdp, "m={} 0 {} {}\r\n", m.media, m.protocol, m.formats[0]);
            continue;
        }
        let pt = negotiated.payload_type;
        let _ = write!(sdp, "m=audio {} {} {pt}", local.port, m.protocol);
        if let Some(te) = negotiated.telephone_event {
            let _ = write!(sdp, " {te}");
        }
        let _ = write!(
            sdp,
            "\r\na=rtpmap:{pt} {}/8000\r\n",
            negotiated.codec.name()
        );
        if let Some(te) = negotiated.telephone_event {
            let _ = write!(
                sdp,
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-15\r\n"
            );
        }
        let _ = write!(sdp, "a=ptime:20\r\na={}\r\n", negotiated.direction.as_str());
    }
    sdp
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP: &str = "v=0\n\
o=user1 53655765 2353687637 IN IP4 127.0.0.1\n\
s=-\n\
c=IN IP4 127.0.0.1\n\
t=0 0\n\
m=audio 6400 RTP/AVP 0 8\n\
a=rtpmap:0 PCMU/8000\n\
a=rtpmap:8 PCMA/8000\n\
a=ptime:20\n\
a=sendrecv\n";

    /// A Linphone-style offer: many codecs, G.711 late, DTMF, a video line,
    /// CRLF line ends.
    const LINPHONE: &str = "v=0\r\n\
o=alice 1234 678 IN IP4 127.0.0.1\r\n\
s=Talk\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n\
m=audio 7078 RTP/AVP 96 97 98 8 0 9 18 101 99\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 useinbandfec=1\r\n\
a=rtpmap:97 speex/16000\r\n\
a=rtpmap:98 speex/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=rtpmap:99 telephone-event/48000\r\n\
a=rtcp-fb:* trr-int 1000\r\n\
m=video 9078 RTP/AVP 100\r\n\
a=rtpmap:100 VP8/90000\r\n";

    /// A Yealink-style desk phone: PCMA first without rtpmaps for the
    /// static types, G722, DTMF at 101, media-level c=.
    const YEALINK: &str = "v=0\r\n\
o=- 20017 20017 IN IP4 127.0.0.1\r\n\
s=SDP data\r\n\
c=IN IP4 127.0.0.2\r\n\
t=0 0\r\n\
m=audio 11800 RTP/AVP 9 8 0 18 101\r\n\
c=IN IP4 127.0.0.1\r\n\
a=rtpmap:9 G722/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

    fn local() -> LocalMedia {
        LocalMedia {
            ip: "127.0.0.1".parse().unwrap(),
            port: 30000,
            session_id: 42,
            session_version: 1,
        }
    }

    #[test]
    fn sipp_offer() {
        let offer = parse(SIPP).unwrap();
        let n = negotiate(&offer).unwrap();
        assert_eq!(
            (n.codec, n.payload_type, n.telephone_event),
            (Codec::Pcmu, 0, None)
        );
        assert_eq!(n.remote, "127.0.0.1:6400".parse().unwrap());
        assert_eq!(
            (n.offer_ptime, n.direction),
            (Some(20), Direction::SendRecv)
        );
        let answer = build_answer(&offer, &n, &local());
        assert_eq!(
            answer,
            "v=0\r\no=sipfence 42 1 IN IP4 127.0.0.1\r\ns=sipfence\r\nc=IN IP4 127.0.0.1\r\n\
t=0 0\r\nm=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        // Our own answer parses back as an offer would.
        let back = negotiate(&parse(&answer).unwrap()).unwrap();
        assert_eq!(back.remote, "127.0.0.1:30000".parse().unwrap());
    }

    #[test]
    fn linphone_offer_many_codecs_and_video() {
        let offer = parse(LINPHONE).unwrap();
        assert_eq!(offer.media.len(), 2);
        let n = negotiate(&offer).unwrap();
        assert_eq!(
            (n.codec, n.payload_type),
            (Codec::Pcma, 8),
            "offer order wins"
        );
        assert_eq!(n.telephone_event, Some(101), "the 8 kHz one");
        let answer = build_answer(&offer, &n, &local());
        assert!(
            answer.contains("m=audio 30000 RTP/AVP 8 101\r\n"),
            "{answer}"
        );
        assert!(answer.contains(
            "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
        ));
        assert!(answer.ends_with("m=video 0 RTP/AVP 100\r\n"), "{answer}");
    }

    #[test]
    fn yealink_media_level_connection_and_static_types() {
        let offer = parse(YEALINK).unwrap();
        let n = negotiate(&offer).unwrap();
        assert_eq!(
            (n.codec, n.payload_type, n.telephone_event),
            (Codec::Pcma, 8, Some(101))
        );
        assert_eq!(n.remote, "127.0.0.1:11800".parse().unwrap());
    }

    #[test]
    fn ipv6_offer_and_answer() {
        let offer = parse(
            "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n\
m=audio 5004 RTP/AVP 0\r\na=sendonly\r\n",
        )
        .unwrap();
        let n = negotiate(&offer).unwrap();
        assert_eq!(n.remote, "[::1]:5004".parse().unwrap());
        assert_eq!(n.direction, Direction::RecvOnly);
        let local = LocalMedia {
            ip: "::1".parse().unwrap(),
            ..local()
        };
        let answer = build_answer(&offer, &n, &local);
        assert!(answer.contains("c=IN IP6 ::1\r\n") && answer.contains("a=recvonly\r\n"));
    }

    #[test]
    fn dynamic_payload_type_named_pcmu() {
        let offer = parse("v=0\nc=IN IP4 127.0.0.1\nm=audio 4000 RTP/AVP 97 120\na=rtpmap:97 iLBC/8000\na=rtpmap:120 pcmu/8000\n").unwrap();
        let n = negotiate(&offer).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 120));
    }

    #[test]
    fn unacceptable_offers() {
        let cases = [
            (SIPP.replace("6400", "0"), SdpError::PortZero),
            (
                SIPP.replace("RTP/AVP", "RTP/SAVP"),
                SdpError::UnsupportedProtocol("RTP/SAVP".into()),
            ),
            (
                SIPP.replace("0 8\n", "9 96\n").replace("PCM", "X"),
                SdpError::NoCommonCodec,
            ),
            (SIPP.replace("m=audio", "m=video"), SdpError::NoAudio),
            (
                SIPP.replace("c=IN IP4 127.0.0.1\n", ""),
                SdpError::NoConnection,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(negotiate(&parse(&text).unwrap()), Err(want), "{text}");
        }
    }

    #[test]
    fn malformed_offers() {
        for (text, line) in [
            ("", 1),
            ("o=x\nv=0\n", 1),
            ("v=0\nc=IN IP4 not-an-ip\n", 2),
            ("v=0\nm=audio x RTP/AVP 0\n", 2),
            ("v=0\nm=audio 4000 RTP/AVP 0\na=rtpmap:zero PCMU/8000\n", 3),
            ("v=0\nm=audio 4000 RTP/AVP 0\na=ptime:abc\n", 3),
            ("v=0\ngarbage\n", 2),
        ] {
            match parse(text) {
                Err(SdpError::Malformed { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
