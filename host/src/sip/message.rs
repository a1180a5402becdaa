//! SIP messages: the parser, the serializer, typed accessors, request checks and the response builder (RFC 3261 7, 8.1.1, 8.2.6, 18.3, 21).

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

use super::header::{
    canonical_name, has_tag, parse_contacts, CSeq, Contact, Headers, NameAddr, Via,
};
use super::method::Method;
use super::text::{
    find_lf, has_line_break, is_token, is_ws, parse_u32, scan_line, split_word, trim_end_ws,
    trim_ws,
};
use super::uri::Uri;

/// Why a message (or a header value) could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Short, names the problem; usable as a 400 reason phrase.
    pub reason: String,
    /// The request as far as it could be read, when it can still be answered:
    /// set only if the start line is a request, the header block ended, and
    /// [`Message::can_answer`] holds on it. Header lines that could not be read
    /// are left out; after "Bad Request-URI" its Request-URI is a placeholder
    /// (scheme `Other("")`, `user` = the raw text).
    pub partial: Option<Box<Message>>,
}

impl ParseError {
    pub fn new(reason: impl Into<String>) -> ParseError {
        ParseError {
            reason: reason.into(),
            partial: None,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ParseError {}

/// Request-Line or Status-Line (RFC 3261 7.1, 7.2). The version is always SIP/2.0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Method, uri: Uri },
    Response { code: u16, reason: String },
}

/// A SIP request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// What [`Message::checked`] parsed of a request that passed its checks.
#[derive(Clone, Debug)]
pub struct Checked {
    pub top_via: Via,
    pub from: NameAddr,
    pub to: NameAddr,
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Controls other than HTAB are not allowed in the start line or headers (RFC 3261 25.1 TEXT-UTF8, LWS).
fn has_ctl(line: &[u8]) -> bool {
    line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// Checks `SIP-Version` (RFC 3261 7.1); only 2.0 is spoken.
fn check_version(v: &str) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        Ok(())
    } else if v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) {
        Err(ParseError::new("Unsupported SIP version"))
    } else {
        Err(ParseError::new("Bad start line"))
    }
}

/// Parses the start line; the bool is true when the Request-URI did not parse.
fn parse_start_line(line: &[u8]) -> Result<(StartLine, bool), ParseError> {
    let bad = || ParseError::new("Bad start line");
    let line = std::str::from_utf8(line).map_err(|_| bad())?;
    if has_ctl(line.as_bytes()) {
        return Err(bad());
    }
    let (first, rest) = split_word(line);
    if first
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (RFC 3261 7.2)
        check_version(first)?;
        let (code_s, reason) = split_word(rest);
        if code_s.len() != 3 {
            return Err(bad());
        }
        let code = parse_u32(code_s).ok_or_else(bad)?;
        if !(100..=699).contains(&code) {
            return Err(bad());
        }
        return Ok((
            StartLine::Response {
                code: code as u16,
                reason: trim_ws(reason).to_owned(),
            },
            false,
        ));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version (RFC 3261 7.1). Extra
    // whitespace is tolerated; whitespace inside the URI makes it a bad URI.
    if !is_token(first) {
        return Err(bad());
    }
    let rest = trim_ws(rest);
    let sp = rest.rfind([' ', '\t']).ok_or_else(bad)?;
    let (uri_s, version) = (trim_end_ws(&rest[..sp]), &rest[sp + 1..]);
    check_version(version)?;
    if uri_s.is_empty() {
        return Err(bad());
    }
    let method = Method::from_token(first);
    Ok(match Uri::parse(uri_s) {
        Ok(uri) => (StartLine::Request { method, uri }, false),
        Err(_) => (
            StartLine::Request {
                method,
                uri: Uri::placeholder(uri_s),
            },
            true,
        ),
    })
}

/// `field-name: value` (RFC 3261 7.3.1); whitespace before the colon is allowed.
fn split_header_line(line: &str) -> Option<(Cow<'static, str>, &str)> {
    let colon = line.find(':')?;
    let name = trim_end_ws(&line[..colon]);
    if !is_token(name) {
        return None;
    }
    let name = match canonical_name(name) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(name.to_owned()),
    };
    Some((name, trim_ws(&line[colon + 1..])))
}

/// Content-Length (RFC 3261 20.14): `Ok(None)` if absent; `Err` if not 1*DIGIT or
/// if several lines disagree. Values too big for usize read as usize::MAX.
fn content_length(headers: &Headers) -> Result<Option<usize>, ()> {
    let mut found = None;
    for v in headers.get_all("Content-Length") {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let n = v.parse::<usize>().unwrap_or(usize::MAX);
        match found {
            Some(prev) if prev != n => return Err(()),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

/// Appends text that must stay on one line: a CR or LF (which could only come
/// from code building a message, never from the parser) is written as SP, so
/// no header can be smuggled in.
fn push_line_safe(out: &mut Vec<u8>, text: &str) {
    if has_line_break(text.as_bytes()) {
        out.extend(
            text.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

impl Message {
    /// Parses one complete message: a whole UDP datagram, or one frame cut by
    /// [`super::frame`] from a stream.
    ///
    /// Liberal in what it accepts (RFC 3261 7.5, 7.3.1): leading CRLFs, bare-LF
    /// line ends, folded header lines, whitespace before colons, compact names.
    /// Content-Length (RFC 3261 18.3): larger than the body is an error, smaller
    /// truncates the body, missing takes the rest.
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        // RFC 3261 7.5: ignore CRLFs before the start line.
        let skip = buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .ok_or_else(|| ParseError::new("Empty message"))?;
        let data = buf.get(skip..).unwrap_or_default();

        let first_end = find_lf(data, 0);
        let line0 = strip_cr(
            data.get(..first_end.unwrap_or(data.len()))
                .unwrap_or_default(),
        );
        let (start, bad_uri) = parse_start_line(line0)?;
        let mut pos = match first_end {
            Some(i) => i + 1,
            None => return Err(ParseError::new("Missing end of headers")),
        };

        let mut error: Option<&'static str> = bad_uri.then_some("Bad Request-URI");
        let mut headers = Headers::with_capacity(16, data.len());
        let mut current: Option<(Cow<'static, str>, Cow<'_, str>)> = None;
        let body_start = loop {
            let (Some(lf), ctl) = scan_line(data, pos) else {
                return Err(ParseError::new("Missing end of headers"));
            };
            let raw = strip_cr(data.get(pos..lf).unwrap_or_default());
            pos = lf + 1;
            if raw.is_empty() {
                break pos;
            }
            let line = match std::str::from_utf8(raw) {
                Ok(l) if !ctl => l,
                _ => {
                    error.get_or_insert("Malformed header line");
                    continue;
                }
            };
            if raw.first().is_some_and(|&b| is_ws(b)) {
                // RFC 3261 7.3.1: a line starting with whitespace continues the
                // previous one; the folding becomes a single SP.
                match current.as_mut() {
                    Some((_, value)) => {
                        let more = trim_ws(line);
                        if !more.is_empty() {
                            let v = value.to_mut();
                            let keep = trim_end_ws(v).len();
                            v.truncate(keep);
                            if !v.is_empty() {
                                v.push(' ');
                            }
                            v.push_str(more);
                        }
                    }
                    None => {
                        error.get_or_insert("Malformed header line");
                    }
                }
                continue;
            }
            if let Some((n, v)) = current.take() {
                headers.push_canonical(n, &v);
            }
            match split_header_line(line) {
                Some((n, v)) => current = Some((n, Cow::Borrowed(v))),
                None => {
                    error.get_or_insert("Malformed header line");
                }
            }
        };
        if let Some((n, v)) = current.take() {
            headers.push_canonical(n, &v);
        }

        let avail = data.get(body_start..).unwrap_or_default();
        let body = match content_length(&headers) {
            Ok(None) => avail,
            Ok(Some(n)) if n <= avail.len() => avail.get(..n).unwrap_or(avail),
            Ok(Some(_)) => {
                error.get_or_insert("Content-Length larger than body");
                avail
            }
            Err(()) => {
                error.get_or_insert("Bad Content-Length");
                avail
            }
        };
        let msg = Message {
            start,
            headers,
            body: body.to_vec(),
        };
        match error {
            None => Ok(msg),
            Some(reason) => Err(ParseError {
                reason: reason.to_owned(),
                partial: msg.can_answer().then(|| Box::new(msg)),
            }),
        }
    }

    /// Serializes: start line, headers in order, then `Content-Length` (always,
    /// last, equal to the body length; any other Content-Length is dropped), CRLF, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let hdr_len: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum();
        let mut out = Vec::with_capacity(hdr_len + self.body.len() + 128);
        // Writing into a Vec cannot fail.
        let _ = match &self.start {
            StartLine::Request { method, uri } => write!(out, "{method} {uri} SIP/2.0\r\n"),
            StartLine::Response { code, reason } => {
                let _ = write!(out, "SIP/2.0 {code} ");
                push_line_safe(&mut out, reason);
                write!(out, "\r\n")
            }
        };
        for (name, value) in self.headers.iter() {
            if name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            push_line_safe(&mut out, value);
            out.extend_from_slice(b"\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        out.extend_from_slice(&self.body);
        out
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The Call-ID value (first line).
    pub fn call_id(&self) -> Option<&str> {
        self.headers.get("Call-ID")
    }

    /// Err "Missing CSeq" / "Malformed CSeq".
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(
            self.headers
                .get("CSeq")
                .ok_or_else(|| ParseError::new("Missing CSeq"))?,
        )
    }

    /// Every Via value of every Via line, top first. Err "Missing Via" / "Malformed Via".
    pub fn vias(&self) -> Result<Vec<Via>, ParseError> {
        let mut out = Vec::new();
        for line in self.headers.get_all("Via") {
            out.extend(Via::parse_list(line)?);
        }
        if out.is_empty() {
            return Err(ParseError::new("Missing Via"));
        }
        Ok(out)
    }

    /// The topmost Via value (RFC 3261 8.2.6.2, 18.2.1).
    pub fn top_via(&self) -> Result<Via, ParseError> {
        let line = self
            .headers
            .get("Via")
            .ok_or_else(|| ParseError::new("Missing Via"))?;
        Via::parse_list(line)?
            .into_iter()
            .next()
            .ok_or_else(|| ParseError::new("Malformed Via"))
    }

    fn name_addr(&self, name: &str) -> Result<NameAddr, ParseError> {
        let v = self
            .headers
            .get(name)
            .ok_or_else(|| ParseError::new(format!("Missing {name}")))?;
        NameAddr::parse(v).map_err(|_| ParseError::new(format!("Malformed {name}")))
    }

    /// Err "Missing From" / "Malformed From".
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        self.name_addr("From")
    }

    /// Err "Missing To" / "Malformed To".
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        self.name_addr("To")
    }

    /// All Contact values; empty when there is none. Err "Malformed Contact".
    pub fn contacts(&self) -> Result<Vec<Contact>, ParseError> {
        parse_contacts(self.headers.get_all("Contact"))
    }

    /// Max-Forwards (RFC 3261 20.22): Err "Malformed Max-Forwards" if not 1*DIGIT
    /// in the range 0-255 (RFC 4475 3.1.2.4 treats 300 as an error).
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        match self.headers.get("Max-Forwards") {
            None => Ok(None),
            Some(v) => parse_u32(v)
                .filter(|&n| n <= 255)
                .map(Some)
                .ok_or_else(|| ParseError::new("Malformed Max-Forwards")),
        }
    }

    /// Expires (RFC 3261 20.19): delta-seconds; values beyond 2^32-1 saturate.
    /// Err "Malformed Expires" if not 1*DIGIT.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        match self.headers.get("Expires") {
            None => Ok(None),
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Some(v.parse().unwrap_or(u32::MAX)))
            }
            Some(_) => Err(ParseError::new("Malformed Expires")),
        }
    }

    /// Checks what every request needs before it is processed (RFC 3261 8.1.1,
    /// 8.2.2, 16.3): Via, From, To, Call-ID, CSeq present, single where they
    /// must be, and parseable; CSeq method equal to the request method;
    /// Max-Forwards numeric if present. The error names the first problem.
    pub fn check_request(&self) -> Result<(), String> {
        self.checked().map(drop)
    }

    /// [`Message::check_request`], returning what it parsed (the top Via,
    /// From and To), so that the message path does not parse them again.
    pub fn checked(&self) -> Result<Checked, String> {
        let Some(method) = self.method() else {
            return Err("Not a request".into());
        };
        let Some(top_via) = self.vias().map_err(|e| e.reason)?.into_iter().next() else {
            return Err("Missing Via".into());
        };
        for name in ["From", "To", "Call-ID", "CSeq", "Max-Forwards"] {
            if self.headers.get_all(name).nth(1).is_some() {
                return Err(format!("Multiple {name} headers"));
            }
        }
        let from = self.from().map_err(|e| e.reason)?;
        let to = self.to().map_err(|e| e.reason)?;
        match self.call_id() {
            None | Some("") => return Err("Missing Call-ID".into()),
            // Call-ID = word [ "@" word ] (RFC 3261 25.1): no whitespace.
            Some(id) if id.contains([' ', '\t']) => return Err("Malformed Call-ID".into()),
            Some(_) => {}
        }
        let cseq = self.cseq().map_err(|e| e.reason)?;
        if cseq.method != *method {
            // RFC 3261 8.1.1.5: the CSeq method MUST match the request.
            return Err("CSeq method does not match request".into());
        }
        self.max_forwards().map_err(|e| e.reason)?;
        Ok(Checked { top_via, from, to })
    }

    /// True if a response can be built: a request with at least one Via line,
    /// and From, To, Call-ID, CSeq lines present (even if malformed).
    pub fn can_answer(&self) -> bool {
        self.is_request()
            && ["Via", "From", "To", "Call-ID", "CSeq"]
                .iter()
                .all(|n| self.headers.get(n).is_some())
    }

    /// Builds a response (RFC 3261 8.2.6): every Via line, From, To, Call-ID,
    /// CSeq copied in order; `;tag=<to_tag>` added to a To without tag when
    /// `to_tag` is given (8.2.6.2); Content-Length 0.
    pub fn response(&self, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let mut headers = Headers::with_capacity(8, self.headers.text_len());
        for via in self.headers.get_all("Via") {
            headers.push_canonical(Cow::Borrowed("Via"), via);
        }
        if let Some(from) = self.headers.get("From") {
            headers.push_canonical(Cow::Borrowed("From"), from);
        }
        if let Some(to) = self.headers.get("To") {
            match to_tag {
                Some(tag) if !has_tag(to) => {
                    headers.push_canonical(Cow::Borrowed("To"), &format!("{to};tag={tag}"));
                }
                _ => headers.push_canonical(Cow::Borrowed("To"), to),
            }
        }
        for name in ["Call-ID", "CSeq"] {
            if let Some(v) = self.headers.get(name) {
                headers.push_canonical(Cow::Borrowed(name), v);
            }
        }
        headers.push_canonical(Cow::Borrowed("Content-Length"), "0");
        Message {
            start: StartLine::Response {
                code,
                reason: reason.to_owned(),
            },
            headers,
            body: Vec::new(),
        }
    }
}

/// The standard reason phrase for a status code (RFC 3261 21 and extensions), "Unknown" otherwise.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        199 => "Early Dialog Terminated",
        200 => "OK",
        202 => "Accepted",
        204 => "No Notification",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        305 => "Use Proxy",
        380 => "Alternative Service",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        417 => "Unknown Resource-Priority",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        424 => "Bad Location Information",
        428 => "Use Identity Header",
        429 => "Provide Referrer Identity",
        430 => "Flow Failed",
        433 => "Anonymity Disallowed",
        436 => "Bad Identity-Info",
        437 => "Unsupported Certificate",
        438 => "Invalid Identity Header",
        439 => "First Hop Lacks Outbound Support",
        440 => "Max-Breadth Exceeded",
        469 => "Bad Info Package",
        470 => "Consent Needed",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        493 => "Undecipherable",
        494 => "Security Agreement Required",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        555 => "Push Notification Service Not Supported",
        580 => "Precondition Failure",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        607 => "Unwanted",
        608 => "Rejected",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::{Host, Scheme};

    const REGISTER: &str = "REGISTER sip:registrar.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\n\
From: Bob <sip:bob@example.com>;tag=456248\r\n\
To: Bob <sip:bob@example.com>\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:bob@192.0.2.10:5060>\r\n\
Expires: 7200\r\n\
Content-Length: 0\r\n\
\r\n";

    #[test]
    fn parses_register() {
        let m = Message::parse(REGISTER.as_bytes()).unwrap();
        assert_eq!(m.method(), Some(&Method::Register));
        assert!(m.is_request());
        assert_eq!(m.code(), None);
        let uri = m.request_uri().unwrap();
        assert_eq!(uri.host, Host::Domain("registrar.example.com".into()));
        assert_eq!(m.headers.len(), 9);
        assert_eq!(m.call_id(), Some("843817637684230@998sdasdh09"));
        assert_eq!(m.cseq().unwrap().seq, 1826);
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bKnashds7"));
        assert_eq!(m.from().unwrap().tag(), Some("456248"));
        assert_eq!(m.to().unwrap().tag(), None);
        assert_eq!(m.contacts().unwrap().len(), 1);
        assert_eq!(m.max_forwards().unwrap(), Some(70));
        assert_eq!(m.expires().unwrap(), Some(7200));
        assert!(m.body.is_empty());
        assert_eq!(m.check_request(), Ok(()));
        assert!(m.can_answer());
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), REGISTER);
    }

    #[test]
    fn response_builder() {
        let m = Message::parse(REGISTER.as_bytes()).unwrap();
        let r = m.response(401, reason_phrase(401), Some("srv1"));
        assert_eq!(r.code(), Some(401));
        assert!(!r.is_request());
        assert_eq!(r.method(), None);
        assert_eq!(r.request_uri(), None);
        assert_eq!(r.to().unwrap().tag(), Some("srv1"));
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert_eq!(
            text,
            "SIP/2.0 401 Unauthorized\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds7;rport\r\n\
From: Bob <sip:bob@example.com>;tag=456248\r\n\
To: Bob <sip:bob@example.com>;tag=srv1\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Content-Length: 0\r\n\r\n"
        );
        // An existing To tag is kept.
        let r2 = r.clone();
        let mut req = m.clone();
        req.headers.set("To", r2.headers.get("To").unwrap());
        let r3 = req.response(200, "OK", Some("other"));
        assert_eq!(r3.to().unwrap().tag(), Some("srv1"));
        // No tag requested: To copied unchanged.
        assert_eq!(m.response(100, "Trying", None).to().unwrap().tag(), None);
        // The response parses back.
        assert_eq!(Message::parse(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn to_bytes_rewrites_content_length() {
        let mut m = Message::parse(REGISTER.as_bytes()).unwrap();
        m.body = b"hello".to_vec();
        m.headers.push("X-After", "1");
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(text.ends_with("X-After: 1\r\nContent-Length: 5\r\n\r\nhello"));
        assert_eq!(text.matches("Content-Length").count(), 1);
        m.headers.remove("Content-Length");
        assert!(String::from_utf8(m.to_bytes())
            .unwrap()
            .contains("Content-Length: 5\r\n"));
        // Line breaks in values set by code cannot inject headers.
        m.headers.push("Subject", "a\r\nInjected: 1");
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(text.contains("Subject: a  Injected: 1\r\n"));
        let r = m.response(400, "Bad\r\nX: y", None);
        assert!(r.to_bytes().starts_with(b"SIP/2.0 400 Bad  X: y\r\n"));
    }

    #[test]
    fn start_line_variants() {
        let ok = |s: &str| Message::parse(s.as_bytes()).unwrap().start;
        assert_eq!(
            ok("SIP/2.0 180 Ringing\r\n\r\n"),
            StartLine::Response {
                code: 180,
                reason: "Ringing".into()
            }
        );
        assert_eq!(
            ok("sip/2.0 200 \r\n\r\n"),
            StartLine::Response {
                code: 200,
                reason: String::new()
            }
        );
        assert!(matches!(
            ok("OPTIONS  sip:x.example  SIP/2.0\r\n\r\n"),
            StartLine::Request {
                method: Method::Options,
                ..
            }
        ));
        let err = |s: &str| Message::parse(s.as_bytes()).unwrap_err();
        for bad in [
            "SIP/2.0 99 Low\r\n\r\n",
            "SIP/2.0 700 High\r\n\r\n",
            "SIP/2.0 2000 OK\r\n\r\n",
            "SIP/2.0 abc OK\r\n\r\n",
            "INVITE sip:x.example\r\n\r\n",
            "INVITE sip:x.example HTTP/1.1\r\n\r\n",
            "INV@TE sip:x.example SIP/2.0\r\n\r\n",
            "INVITE  SIP/2.0\r\n\r\n",
            "INVITE\r\n\r\n",
            "INVITE sip:x\0 SIP/2.0\r\n\r\n",
        ] {
            let e = err(bad);
            assert_eq!(e.reason, "Bad start line", "{bad:?}");
            assert!(e.partial.is_none());
        }
        let e = err("INVITE sip:x.example SIP/3.0\r\n\r\n");
        assert_eq!(e.reason, "Unsupported SIP version");
        let e = err("SIP/1.0 200 OK\r\n\r\n");
        assert_eq!(e.reason, "Unsupported SIP version");
    }

    #[test]
    fn bad_request_uri_is_answerable() {
        let text = REGISTER.replace(
            "sip:registrar.example.com",
            "sip:user name@registrar.example.com",
        );
        let e = Message::parse(text.as_bytes()).unwrap_err();
        assert_eq!(e.reason, "Bad Request-URI");
        let p = e.partial.expect("answerable");
        let uri = p.request_uri().unwrap();
        assert_eq!(uri.scheme, Scheme::Other(String::new()));
        assert_eq!(
            uri.user.as_deref(),
            Some("sip:user name@registrar.example.com")
        );
        assert_eq!(p.response(400, &e.reason, None).code(), Some(400));
    }

    #[test]
    fn header_accessor_errors() {
        let base = "OPTIONS sip:x.example SIP/2.0\r\n";
        let m = Message::parse(format!("{base}\r\n").as_bytes()).unwrap();
        assert_eq!(m.cseq().unwrap_err().reason, "Missing CSeq");
        assert_eq!(m.vias().unwrap_err().reason, "Missing Via");
        assert_eq!(m.top_via().unwrap_err().reason, "Missing Via");
        assert_eq!(m.from().unwrap_err().reason, "Missing From");
        assert_eq!(m.to().unwrap_err().reason, "Missing To");
        assert_eq!(m.contacts().unwrap(), []);
        assert_eq!(m.max_forwards().unwrap(), None);
        assert_eq!(m.expires().unwrap(), None);
        let m = Message::parse(
            format!(
                "{base}Via: bogus\r\nFrom: <\r\nTo: x y\r\nCSeq: x\r\nContact: <a\r\nMax-Forwards: -1\r\nExpires: 1h\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(m.vias().unwrap_err().reason, "Malformed Via");
        assert_eq!(m.top_via().unwrap_err().reason, "Malformed Via");
        assert_eq!(m.from().unwrap_err().reason, "Malformed From");
        assert_eq!(m.to().unwrap_err().reason, "Malformed To");
        assert_eq!(m.cseq().unwrap_err().reason, "Malformed CSeq");
        assert_eq!(m.contacts().unwrap_err().reason, "Malformed Contact");
        assert_eq!(
            m.max_forwards().unwrap_err().reason,
            "Malformed Max-Forwards"
        );
        assert_eq!(m.expires().unwrap_err().reason, "Malformed Expires");
        let m = Message::parse(format!("{base}Expires: 99999999999\r\n\r\n").as_bytes()).unwrap();
        assert_eq!(m.expires().unwrap(), Some(u32::MAX));
    }

    #[test]
    fn check_request_rules() {
        let check = |text: String| Message::parse(text.as_bytes()).unwrap().check_request();
        assert_eq!(
            check(REGISTER.replace("CSeq: 1826 REGISTER", "CSeq: 1826 INVITE")),
            Err("CSeq method does not match request".into())
        );
        assert_eq!(
            check(REGISTER.replace("Call-ID: 843817637684230@998sdasdh09", "Call-ID: a b")),
            Err("Malformed Call-ID".into())
        );
        assert_eq!(
            check(REGISTER.replace("Call-ID: 843817637684230@998sdasdh09", "Call-ID:")),
            Err("Missing Call-ID".into())
        );
        assert_eq!(
            check(REGISTER.replace(
                "Max-Forwards: 70\r\n",
                "Max-Forwards: 70\r\nTo: <sip:x@y>\r\n"
            )),
            Err("Multiple To headers".into())
        );
        let resp = Message::parse(b"SIP/2.0 200 OK\r\n\r\n").unwrap();
        assert_eq!(resp.check_request(), Err("Not a request".into()));
        assert!(!resp.can_answer());
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(423), "Interval Too Brief");
        assert_eq!(reason_phrase(482), "Loop Detected");
        assert_eq!(reason_phrase(483), "Too Many Hops");
        assert_eq!(reason_phrase(439), "First Hop Lacks Outbound Support");
        assert_eq!(
            reason_phrase(555),
            "Push Notification Service Not Supported"
        );
        assert_eq!(reason_phrase(299), "Unknown");
    }
}
