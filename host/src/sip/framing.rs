//! Cutting SIP messages out of a byte stream (TCP/TLS): RFC 3261 18.3 framing by Content-Length, RFC 5626 3.5.1 CRLF keep-alives.

use super::text::find_lf;

/// What the front of a stream buffer holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Not enough bytes yet; read more and call again.
    Incomplete,
    /// CRLF keep-alive bytes to consume: a "\r\n\r\n" ping is 4 (answer with a
    /// "\r\n" pong, RFC 5626 3.5.1); a lone "\r\n" (or "\n") before a message is 2 (1).
    KeepAlive(usize),
    /// The next message is this many bytes long (headers plus Content-Length body).
    Message(usize),
    /// The stream cannot be framed; close the connection.
    Invalid(String),
}

/// Frames the front of `buf` (see [`Frame`]). Content-Length (or `l`) is
/// mandatory on streams (RFC 3261 18.3, 20.14): missing counts as 0,
/// non-numeric or conflicting values are `Invalid`; a header block or message
/// longer than `max_len` is `Invalid("message too large")`.
///
/// Stateless: after `Incomplete` it rescans from the start next time. Use a
/// [`Framer`] per connection to avoid rescanning large partial headers.
pub fn frame(buf: &[u8], max_len: usize) -> Frame {
    Framer::new().frame(buf, max_len)
}

/// Per-connection framing state: remembers how far the header block was
/// scanned, or the length of a message whose body is still arriving, so
/// repeated calls on a growing buffer stay linear.
///
/// Contract: between calls that return `Incomplete` the caller only appends to
/// the buffer; after any other result it consumes the given bytes (or closes).
#[derive(Clone, Debug, Default)]
pub struct Framer {
    /// Where to resume looking for the end of the header block.
    resume: usize,
    /// Total length of the message being received, once its headers are known.
    known_total: Option<usize>,
}

impl Framer {
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Frames the front of `buf`; see [`frame`].
    pub fn frame(&mut self, buf: &[u8], max_len: usize) -> Frame {
        let result = self.frame_inner(buf, max_len);
        if result != Frame::Incomplete {
            *self = Framer::default();
        }
        result
    }

    fn frame_inner(&mut self, buf: &[u8], max_len: usize) -> Frame {
        if let Some(total) = self.known_total {
            return if buf.len() >= total {
                Frame::Message(total)
            } else {
                Frame::Incomplete
            };
        }
        // RFC 5626 3.5.1 keep-alives; RFC 3261 7.5 CRLFs before a message.
        match buf {
            [] | [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Frame::Incomplete,
            [b'\r', b'\n', b'\r', b'\n', ..] => return Frame::KeepAlive(4),
            [b'\r', b'\n', ..] => return Frame::KeepAlive(2),
            [b'\n', ..] => return Frame::KeepAlive(1),
            _ => {}
        }
        let header_len = match find_header_end(buf, self.resume.min(buf.len())) {
            Ok(end) => end,
            Err(resume) => {
                // No end yet: the header block is at least buf.len() + 1 bytes.
                if buf.len() >= max_len {
                    return Frame::Invalid("message too large".into());
                }
                self.resume = resume;
                return Frame::Incomplete;
            }
        };
        if header_len > max_len {
            return Frame::Invalid("message too large".into());
        }
        let body_len = match stream_content_length(buf.get(..header_len).unwrap_or_default()) {
            Ok(n) => n,
            Err(reason) => return Frame::Invalid(reason.into()),
        };
        let total = match header_len.checked_add(body_len) {
            Some(t) if t <= max_len => t,
            _ => return Frame::Invalid("message too large".into()),
        };
        if buf.len() >= total {
            Frame::Message(total)
        } else {
            self.known_total = Some(total);
            Frame::Incomplete
        }
    }
}

/// Finds the end of the header block: the index just past the first empty line
/// (CRLF CRLF, LF LF, or mixed). Scans lines from `from`, which must be a line
/// start. `Err(start of the last, unfinished line)` if there is none yet.
fn find_header_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut line_start = from;
    while let Some(lf) = find_lf(buf, line_start) {
        let line = buf.get(line_start..lf).unwrap_or_default();
        if line_start > 0 && (line.is_empty() || line == b"\r") {
            return Ok(lf + 1);
        }
        line_start = lf + 1;
    }
    Err(line_start)
}

/// Reads Content-Length / `l` from a raw header block (start line included),
/// following folded lines. Missing is 0; several lines must agree.
fn stream_content_length(block: &[u8]) -> Result<usize, &'static str> {
    // Line starts after the start line; each line found with the word-wise LF search.
    let line_at = |pos: usize| -> (&[u8], usize) {
        let end = find_lf(block, pos).unwrap_or(block.len());
        (block.get(pos..end).unwrap_or_default(), end + 1)
    };
    let mut found: Option<usize> = None;
    let (_, mut pos) = line_at(0);
    while pos < block.len() {
        let (line, next) = line_at(pos);
        pos = next;
        // Cheap filter: only names starting with c/C or l/L can match.
        if !matches!(line.first(), Some(b'c' | b'C' | b'l' | b'L')) {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line.get(..colon).unwrap_or_default().trim_ascii_end();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let mut n: Option<usize> = None;
        let mut words = 0;
        let mut part = line.get(colon + 1..).unwrap_or_default();
        loop {
            // Digits, possibly on folded continuation lines (RFC 3261 7.3.1).
            for word in part
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
            {
                words += 1;
                if !word.iter().all(u8::is_ascii_digit) {
                    return Err("bad Content-Length");
                }
                n = Some(
                    std::str::from_utf8(word)
                        .ok()
                        .and_then(|s| s.parse::<usize>().ok())
                        .unwrap_or(usize::MAX),
                );
            }
            if !block.get(pos).is_some_and(|&b| b == b' ' || b == b'\t') {
                break;
            }
            let (cont, next) = line_at(pos);
            part = cont;
            pos = next;
        }
        let n = match (n, words) {
            (Some(n), 1) => n,
            _ => return Err("bad Content-Length"),
        };
        match found {
            Some(prev) if prev != n => return Err("conflicting Content-Length"),
            _ => found = Some(n),
        }
    }
    Ok(found.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Message;

    const MSG: &[u8] = b"MESSAGE sip:u@example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n\
Max-Forwards: 70\r\n\
From: <sip:a@example.com>;tag=1\r\n\
To: <sip:u@example.com>\r\n\
Call-ID: c1\r\n\
CSeq: 1 MESSAGE\r\n\
Content-Type: text/plain\r\n\
Content-Length: 5\r\n\
\r\n\
hello";

    #[test]
    fn two_messages_in_one_buffer() {
        let mut buf = MSG.to_vec();
        buf.extend_from_slice(MSG);
        assert_eq!(frame(&buf, 65536), Frame::Message(MSG.len()));
        assert_eq!(frame(&buf[MSG.len()..], 65536), Frame::Message(MSG.len()));
        let m = Message::parse(&buf[..MSG.len()]).unwrap();
        assert_eq!(m.body, b"hello");
    }

    #[test]
    fn every_split_point() {
        let mut framer = Framer::new();
        for cut in 0..MSG.len() {
            assert_eq!(frame(&MSG[..cut], 65536), Frame::Incomplete, "cut {cut}");
            // The stateful framer sees the buffer grow byte by byte.
            assert_eq!(
                framer.frame(&MSG[..cut], 65536),
                Frame::Incomplete,
                "cut {cut}"
            );
        }
        assert_eq!(framer.frame(MSG, 65536), Frame::Message(MSG.len()));
        // Reset after a result: the next frame starts fresh.
        assert_eq!(framer.frame(MSG, 65536), Frame::Message(MSG.len()));
    }

    #[test]
    fn keep_alives() {
        assert_eq!(frame(b"\r\n\r\n", 100), Frame::KeepAlive(4));
        assert_eq!(frame(b"\r\n\r\nREGISTER", 100), Frame::KeepAlive(4));
        assert_eq!(frame(b"\r\nREGISTER", 100), Frame::KeepAlive(2));
        assert_eq!(frame(b"\nREGISTER", 100), Frame::KeepAlive(1));
        assert_eq!(frame(b"\r\n", 100), Frame::Incomplete);
        assert_eq!(frame(b"\r\n\r", 100), Frame::Incomplete);
        assert_eq!(frame(b"\r", 100), Frame::Incomplete);
        assert_eq!(frame(b"", 100), Frame::Incomplete);
    }

    #[test]
    fn oversize() {
        assert_eq!(
            frame(MSG, MSG.len() - 1),
            Frame::Invalid("message too large".into())
        );
        assert_eq!(frame(MSG, MSG.len()), Frame::Message(MSG.len()));
        let huge = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(
            frame(huge, 65536),
            Frame::Invalid("message too large".into())
        );
        let long_headers = vec![b'A'; 5000];
        assert_eq!(
            frame(&long_headers, 4096),
            Frame::Invalid("message too large".into())
        );
        assert_eq!(frame(&long_headers[..100], 4096), Frame::Incomplete);
    }

    #[test]
    fn content_length_forms() {
        // (text, trailing bytes that are not part of the message)
        let msg = |s: &str, extra: usize| (frame(s.as_bytes(), 65536), s.len() - extra);
        let (f, n) = msg("OPTIONS sip:x SIP/2.0\r\nl: 2\r\n\r\nabXX", 2);
        assert_eq!(f, Frame::Message(n));
        let (f, n) = msg("OPTIONS sip:x SIP/2.0\r\nCONTENT-LENGTH : 2\r\n\r\nab", 0);
        assert_eq!(f, Frame::Message(n));
        // Folded value (RFC 3261 7.3.1).
        let (f, n) = msg(
            "OPTIONS sip:x SIP/2.0\r\nContent-Length:\r\n 2\r\n\r\nab",
            0,
        );
        assert_eq!(f, Frame::Message(n));
        // Missing: 0 on streams.
        let (f, n) = msg("OPTIONS sip:x SIP/2.0\r\nTo: <sip:x>\r\n\r\nzz", 2);
        assert_eq!(f, Frame::Message(n));
        // LF-only line ends.
        let (f, n) = msg("OPTIONS sip:x SIP/2.0\nl: 1\n\nz", 0);
        assert_eq!(f, Frame::Message(n));
        let (f, _) = msg("OPTIONS sip:x SIP/2.0\r\nl: 1\r\n\r\n", 0);
        assert_eq!(f, Frame::Incomplete);
        let (f, _) = msg("OPTIONS sip:x SIP/2.0\r\nContent-Length: abc\r\n\r\n", 0);
        assert_eq!(f, Frame::Invalid("bad Content-Length".into()));
        let (f, _) = msg(
            "OPTIONS sip:x SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab",
            0,
        );
        assert_eq!(f, Frame::Invalid("conflicting Content-Length".into()));
        // A Content-Length look-alike inside another header's value is ignored.
        let (f, n) = msg(
            "OPTIONS sip:x SIP/2.0\r\nSubject: Content-Length: 9\r\n\r\n",
            0,
        );
        assert_eq!(f, Frame::Message(n));
    }
}
