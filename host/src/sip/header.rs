//! The header list of a SIP message and the typed header values the server needs: name-addr (From/To/Contact), Via, CSeq, Contact lists (RFC 3261 7.3, 20, 25.1).

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use super::message::ParseError;
use super::method::Method;
use super::text::{
    find_param, is_token, parse_params, parse_u32, quoted_end, split_word, trim_ws, write_params,
    write_quoted, SplitOutside,
};
use super::uri::{parse_hostport, Host, Uri};

/// Canonical spelling of a well-known header name given in lowercase.
fn known_lowercase(name: &[u8]) -> Option<&'static str> {
    Some(match name {
        b"accept" => "Accept",
        b"accept-contact" => "Accept-Contact",
        b"accept-encoding" => "Accept-Encoding",
        b"accept-language" => "Accept-Language",
        b"accept-resource-priority" => "Accept-Resource-Priority",
        b"alert-info" => "Alert-Info",
        b"allow" => "Allow",
        b"allow-events" => "Allow-Events",
        b"authentication-info" => "Authentication-Info",
        b"authorization" => "Authorization",
        b"call-id" => "Call-ID",
        b"call-info" => "Call-Info",
        b"contact" => "Contact",
        b"content-disposition" => "Content-Disposition",
        b"content-encoding" => "Content-Encoding",
        b"content-language" => "Content-Language",
        b"content-length" => "Content-Length",
        b"content-type" => "Content-Type",
        b"cseq" => "CSeq",
        b"date" => "Date",
        b"error-info" => "Error-Info",
        b"event" => "Event",
        b"expires" => "Expires",
        b"flow-timer" => "Flow-Timer",
        b"from" => "From",
        b"history-info" => "History-Info",
        b"identity" => "Identity",
        b"identity-info" => "Identity-Info",
        b"in-reply-to" => "In-Reply-To",
        b"join" => "Join",
        b"max-breadth" => "Max-Breadth",
        b"max-forwards" => "Max-Forwards",
        b"mime-version" => "MIME-Version",
        b"min-expires" => "Min-Expires",
        b"min-se" => "Min-SE",
        b"organization" => "Organization",
        b"p-asserted-identity" => "P-Asserted-Identity",
        b"p-preferred-identity" => "P-Preferred-Identity",
        b"path" => "Path",
        b"priority" => "Priority",
        b"privacy" => "Privacy",
        b"proxy-authenticate" => "Proxy-Authenticate",
        b"proxy-authorization" => "Proxy-Authorization",
        b"proxy-require" => "Proxy-Require",
        b"rack" => "RAck",
        b"reason" => "Reason",
        b"record-route" => "Record-Route",
        b"refer-sub" => "Refer-Sub",
        b"refer-to" => "Refer-To",
        b"referred-by" => "Referred-By",
        b"reject-contact" => "Reject-Contact",
        b"replaces" => "Replaces",
        b"reply-to" => "Reply-To",
        b"request-disposition" => "Request-Disposition",
        b"require" => "Require",
        b"resource-priority" => "Resource-Priority",
        b"retry-after" => "Retry-After",
        b"route" => "Route",
        b"rseq" => "RSeq",
        b"security-client" => "Security-Client",
        b"security-server" => "Security-Server",
        b"security-verify" => "Security-Verify",
        b"server" => "Server",
        b"service-route" => "Service-Route",
        b"session-expires" => "Session-Expires",
        b"sip-etag" => "SIP-ETag",
        b"sip-if-match" => "SIP-If-Match",
        b"subject" => "Subject",
        b"subscription-state" => "Subscription-State",
        b"supported" => "Supported",
        b"target-dialog" => "Target-Dialog",
        b"timestamp" => "Timestamp",
        b"to" => "To",
        b"unsupported" => "Unsupported",
        b"user-agent" => "User-Agent",
        b"via" => "Via",
        b"warning" => "Warning",
        b"www-authenticate" => "WWW-Authenticate",
        _ => return None,
    })
}

/// Compact header forms (RFC 3261 7.3.3, 20; RFC 3265, 3515, 3892, 4028, 3841, 4474).
fn compact_name(c: u8) -> Option<&'static str> {
    Some(match c.to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => return None,
    })
}

/// The canonical spelling of a header name: compact forms expanded, well-known
/// names in their usual case; `None` for unknown names.
pub fn canonical_name(name: &str) -> Option<&'static str> {
    if let [c] = name.as_bytes() {
        return compact_name(*c);
    }
    // Lowercase into a stack buffer, then one `match` (no allocation, no search).
    let mut buf = [0u8; 32];
    let lower = buf.get_mut(..name.len())?;
    for (d, s) in lower.iter_mut().zip(name.bytes()) {
        *d = s.to_ascii_lowercase();
    }
    known_lowercase(lower)
}

fn canonical_cow(name: &str) -> Cow<'static, str> {
    match canonical_name(name) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(name.to_owned()),
    }
}

/// Expands a compact form given to a lookup; other names compare case-insensitively anyway.
fn query_name(name: &str) -> &str {
    match name.as_bytes() {
        [c] => compact_name(*c).unwrap_or(name),
        _ => name,
    }
}

/// The header fields of a message, in order, one entry per header line
/// (RFC 3261 7.3). Names are canonical (see [`canonical_name`]).
///
/// The values live one after another in a single buffer, so a parsed
/// message costs one allocation for all of them, not one per line. A
/// replaced value is appended anew; its old bytes stay until the message is
/// dropped or cloned (a clone keeps only the live values).
#[derive(Default)]
pub struct Headers {
    text: String,
    list: Vec<(Cow<'static, str>, Range<usize>)>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Room for `lines` lines whose values take `bytes` bytes.
    pub fn with_capacity(lines: usize, bytes: usize) -> Headers {
        Headers {
            text: String::with_capacity(bytes),
            list: Vec::with_capacity(lines),
        }
    }

    /// The bytes the values take (and any replaced ones still kept).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    fn value(&self, span: &Range<usize>) -> &str {
        // Spans are only made by `store`, so the lookup always succeeds.
        self.text.get(span.clone()).unwrap_or_default()
    }

    /// Copies `value` into the buffer; its span.
    fn store(&mut self, value: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(value);
        start..self.text.len()
    }

    /// The value of the first line with this name (case-insensitive; compact forms accepted).
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = query_name(name);
        self.list
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, span)| self.value(span))
    }

    /// Every line with this name, in order (values are not comma-split).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let name = query_name(name);
        self.list
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, span)| self.value(span))
    }

    /// Appends a line.
    pub fn push(&mut self, name: &str, value: impl AsRef<str>) {
        let span = self.store(value.as_ref());
        self.list.push((canonical_cow(name), span));
    }

    /// Inserts a line at `index` (clamped to the end), e.g. a new top Via at 0.
    pub fn insert(&mut self, index: usize, name: &str, value: impl AsRef<str>) {
        let index = index.min(self.list.len());
        let span = self.store(value.as_ref());
        self.list.insert(index, (canonical_cow(name), span));
    }

    /// Replaces every line with this name by one line, at the place of the
    /// first (or at the end when there was none).
    pub fn set(&mut self, name: &str, value: impl AsRef<str>) {
        let q = query_name(name);
        match self
            .list
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(q))
        {
            Some(first) => {
                let mut i = 0;
                self.list.retain(|(n, _)| {
                    let keep = i <= first || !n.eq_ignore_ascii_case(q);
                    i += 1;
                    keep
                });
                let span = self.store(value.as_ref());
                if let Some(entry) = self.list.get_mut(first) {
                    entry.1 = span;
                }
            }
            None => self.push(name, value),
        }
    }

    /// Replaces the value of the first line with this name, keeping its
    /// place and every other line (e.g. the top Via line); false if none.
    pub fn replace_first(&mut self, name: &str, value: impl AsRef<str>) -> bool {
        let q = query_name(name);
        let Some(index) = self
            .list
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(q))
        else {
            return false;
        };
        let span = self.store(value.as_ref());
        if let Some(entry) = self.list.get_mut(index) {
            entry.1 = span;
        }
        true
    }

    /// Removes the first comma-separated value of the first line with this
    /// name (the whole line when it held one value) and returns it: a proxy
    /// popping its own Via or Route (RFC 3261 7.3.1 lets peers combine lines).
    pub fn pop_first_value(&mut self, name: &str) -> Option<String> {
        let q = query_name(name);
        let index = self
            .list
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(q))?;
        let items = split_list(self.value(&self.list[index].1));
        let first = items.first()?.to_string();
        if items.len() <= 1 {
            self.list.remove(index);
        } else {
            let rest = items[1..].join(", ");
            self.list[index].1 = self.store(&rest);
        }
        Some(first)
    }

    /// Removes every line with this name.
    pub fn remove(&mut self, name: &str) {
        let q = query_name(name);
        self.list.retain(|(n, _)| !n.eq_ignore_ascii_case(q));
    }

    /// All lines as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.list
            .iter()
            .map(|(n, span)| (n.as_ref(), self.value(span)))
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Appends a line whose name the parser has already canonicalised.
    pub(crate) fn push_canonical(&mut self, name: Cow<'static, str>, value: &str) {
        let span = self.store(value);
        self.list.push((name, span));
    }
}

impl Clone for Headers {
    /// Copies the live values only.
    fn clone(&self) -> Headers {
        let live = self.list.iter().map(|(_, span)| span.len()).sum();
        let mut copy = Headers {
            text: String::with_capacity(live),
            list: Vec::with_capacity(self.list.len()),
        };
        for (name, value) in self.list.iter().map(|(n, span)| (n, self.value(span))) {
            copy.push_canonical(name.clone(), value);
        }
        copy
    }
}

/// Equal when the lines are, whatever the buffers hold besides.
impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.list.len() == other.list.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Splits a comma-separated header value (RFC 3261 7.3.1) at commas outside
/// quoted-strings and `<...>`; items are trimmed and empty ones skipped.
pub fn split_list(value: &str) -> Vec<&str> {
    list_items(value).collect()
}

/// The items of [`split_list`], without collecting them.
fn list_items(value: &str) -> impl Iterator<Item = &str> {
    SplitOutside::new(value, b',', true)
        .map(trim_ws)
        .filter(|s| !s.is_empty())
}

/// `name-addr / addr-spec` with header parameters: From, To, Contact, Route...
/// (RFC 3261 20.10, 25.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted and unescaped.
    pub display: Option<String>,
    pub uri: Uri,
    /// Header parameters (after `>`, or after a bare addr-spec), names lowercased,
    /// values raw (quoted values keep their quotes; see [`super::unquote`]).
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    /// Parses `[display-name] <URI> *(;param)` or a bare `URI *(;param)`.
    /// For a bare addr-spec, parameters belong to the header, not the URI (RFC 3261 20.10).
    pub fn parse(s: &str) -> Result<NameAddr, ParseError> {
        parse_name_addr(trim_ws(s)).ok_or_else(|| ParseError::new("Bad name-addr"))
    }

    /// A header parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// The `tag` parameter (RFC 3261 19.3).
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }
}

fn unescape_quoted_pairs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A name-addr or addr-spec cut into its parts, nothing parsed or copied yet.
struct NameAddrParts<'a> {
    /// Display name: a quoted-string's inside (still escaped), or the
    /// tokens before `<`.
    display: Option<Display<'a>>,
    uri: &'a str,
    /// Header parameters, after the `;` that starts them.
    params: Option<&'a str>,
    /// A bare addr-spec (no `<>`): its URI may not carry `?headers`.
    bare: bool,
}

enum Display<'a> {
    Quoted(&'a str),
    Tokens(&'a str),
}

fn name_addr_parts(s: &str) -> Option<NameAddrParts<'_>> {
    let bytes = s.as_bytes();
    let (display, rest) = if bytes.first() == Some(&b'"') {
        // quoted-string display name (RFC 3261 25.1)
        let end = quoted_end(bytes, 0)?;
        let inner = s.get(1..end - 1)?;
        (Some(Display::Quoted(inner)), trim_ws(&s[end..]))
    } else if let Some(lt) = s.find('<') {
        // *(token LWS) display name; read liberally, but no stray quotes.
        let d = trim_ws(&s[..lt]);
        if d.contains('"') {
            return None;
        }
        ((!d.is_empty()).then_some(Display::Tokens(d)), &s[lt..])
    } else {
        // Bare addr-spec: its ;params belong to the header (RFC 3261 20.10).
        // Split at the first `;` after the userinfo, if any.
        let after_at = s.find('@').map_or(0, |i| i + 1);
        let (uri, params) = match s[after_at..].find(';') {
            Some(i) => (&s[..after_at + i], Some(&s[after_at + i + 1..])),
            None => (s, None),
        };
        return Some(NameAddrParts {
            display: None,
            uri: trim_ws(uri),
            params,
            bare: true,
        });
    };
    let inner_and_rest = rest.strip_prefix('<')?;
    let gt = inner_and_rest.find('>')?;
    let after = trim_ws(&inner_and_rest[gt + 1..]);
    let params = if after.is_empty() {
        None
    } else {
        Some(after.strip_prefix(';')?)
    };
    Some(NameAddrParts {
        display,
        uri: trim_ws(&inner_and_rest[..gt]),
        params,
        bare: false,
    })
}

fn parse_name_addr(s: &str) -> Option<NameAddr> {
    let parts = name_addr_parts(s)?;
    let uri = parse_uri_opt(parts.uri)?;
    if parts.bare && uri.headers.is_some() {
        // RFC 3261 20.10: a URI with `?` must be enclosed in <>.
        return None;
    }
    let mut params = Vec::new();
    if let Some(p) = parts.params {
        parse_params(p, &mut params)?;
    }
    Some(NameAddr {
        display: parts.display.map(|d| match d {
            Display::Quoted(inner) => unescape_quoted_pairs(inner),
            Display::Tokens(tokens) => tokens.to_owned(),
        }),
        uri,
        params,
    })
}

/// Whether a From/To value carries a `tag=` parameter, read without
/// parsing the URI or copying anything (a response builder's question).
/// Matches `NameAddr::parse(value)?.tag().is_some()` for any value that
/// parses; false for one whose parts cannot be told apart.
pub fn has_tag(value: &str) -> bool {
    let Some(params) = name_addr_parts(trim_ws(value)).and_then(|p| p.params) else {
        return false;
    };
    SplitOutside::new(params, b';', false).any(|item| {
        let item = trim_ws(item);
        item.split_once('=')
            .is_some_and(|(name, _)| trim_ws(name).eq_ignore_ascii_case("tag"))
    })
}

fn parse_uri_opt(s: &str) -> Option<Uri> {
    Uri::parse(s).ok()
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write_quoted(f, d)?;
            f.write_str(" ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

/// One Via value (RFC 3261 20.42): `SIP/2.0/UDP host:port;params`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// protocol-name/version, e.g. "SIP/2.0" (name uppercased).
    pub protocol: String,
    /// Transport, uppercased: UDP, TCP, TLS, SCTP, WS, WSS...
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    /// via-params, names lowercased, values raw.
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// Parses one Via header line, which may hold several comma-separated values (RFC 3261 7.3.1).
    pub fn parse_list(value: &str) -> Result<Vec<Via>, ParseError> {
        let mut out = Vec::with_capacity(1);
        for item in list_items(value) {
            out.push(parse_via(item).ok_or_else(|| ParseError::new("Malformed Via"))?);
        }
        if out.is_empty() {
            return Err(ParseError::new("Malformed Via"));
        }
        Ok(out)
    }

    /// The text of the first Via of one Via header line, and the rest of the
    /// line after it (from its comma on; "" when it is alone), so that the
    /// top Via can be rewritten (`received`, `rport`) without touching the
    /// others. None for a line without a Via.
    pub fn split_top(line: &str) -> Option<(&str, &str)> {
        // Items come in order from the start of the line, each but the last
        // followed by its comma; empty ones are skipped, as in `parse_list`.
        let mut end = 0;
        for item in SplitOutside::new(line, b',', true) {
            if trim_ws(item).is_empty() {
                end += item.len() + 1;
                continue;
            }
            return Some((item, &line[end + item.len()..]));
        }
        None
    }

    /// The `branch` parameter (RFC 3261 8.1.1.7).
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// A parameter by case-insensitive name: `Some(None)` for a flag like `;rport`.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// Replaces the first parameter with this name, or appends it (e.g. `received`,
    /// `rport` per RFC 3261 18.2.1 / RFC 3581 4).
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(p) => p.1 = value,
            None => self.params.push((name.to_ascii_lowercase(), value)),
        }
    }
}

/// `sent-protocol LWS sent-by *( SEMI via-params )` (RFC 3261 25.1), with
/// `SLASH = SWS "/" SWS` so `SIP / 2.0 / UDP` is accepted.
fn parse_via(s: &str) -> Option<Via> {
    let s = trim_ws(s);
    let (name, rest) = s.split_once('/')?;
    let (version, rest) = rest.split_once('/')?;
    let (name, version) = (trim_ws(name), trim_ws(version));
    if !is_token(name) || !is_token(version) {
        return None;
    }
    let (transport, rest) = split_word(trim_ws(rest));
    if !is_token(transport) || rest.is_empty() {
        return None;
    }
    let (sent_by, params_s) = match rest.find(';') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (host, port) = parse_hostport(sent_by)?;
    let mut params = Vec::new();
    if let Some(p) = params_s {
        parse_params(p, &mut params)?;
    }
    let protocol = if name.eq_ignore_ascii_case("SIP") && version == "2.0" {
        String::from("SIP/2.0")
    } else {
        format!("{}/{}", name.to_ascii_uppercase(), version)
    };
    Some(Via {
        protocol,
        transport: transport.to_ascii_uppercase(),
        host,
        port,
        params,
    })
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Piece by piece rather than one format string: every request that
        // asks for rport has its top Via written anew.
        f.write_str(&self.protocol)?;
        f.write_str("/")?;
        f.write_str(&self.transport)?;
        f.write_str(" ")?;
        fmt::Display::fmt(&self.host, f)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)
    }
}

/// One Contact value (RFC 3261 20.10): `*` or an address.
// Boxing the address would make every match clumsier; `*` is rare and short-lived.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contact {
    Star,
    Addr(NameAddr),
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contact::Star => f.write_str("*"),
            Contact::Addr(a) => a.fmt(f),
        }
    }
}

/// Parses all Contact header lines, comma-split (RFC 3261 20.10). Err "Malformed Contact".
pub fn parse_contacts<'a>(
    values: impl Iterator<Item = &'a str>,
) -> Result<Vec<Contact>, ParseError> {
    let mut out = Vec::new();
    for line in values {
        for item in list_items(line) {
            if item == "*" {
                out.push(Contact::Star);
            } else {
                let addr =
                    parse_name_addr(item).ok_or_else(|| ParseError::new("Malformed Contact"))?;
                out.push(Contact::Addr(addr));
            }
        }
    }
    Ok(out)
}

/// The CSeq header (RFC 3261 20.16): `1*DIGIT LWS Method`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    /// Parses a CSeq value; the number must fit in 32 bits (RFC 3261 8.1.1.5).
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let bad = || ParseError::new("Malformed CSeq");
        let (num, method) = split_word(trim_ws(s));
        let seq = parse_u32(num).ok_or_else(bad)?;
        if !is_token(method) {
            return Err(bad());
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    static KNOWN_NAMES: &[&str] = &[
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Accept-Resource-Priority",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "Flow-Timer",
        "From",
        "History-Info",
        "Identity",
        "Identity-Info",
        "In-Reply-To",
        "Join",
        "Max-Breadth",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Min-SE",
        "Organization",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Priority",
        "Privacy",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Refer-Sub",
        "Refer-To",
        "Referred-By",
        "Reject-Contact",
        "Replaces",
        "Reply-To",
        "Request-Disposition",
        "Require",
        "Resource-Priority",
        "Retry-After",
        "Route",
        "RSeq",
        "Security-Client",
        "Security-Server",
        "Security-Verify",
        "Server",
        "Service-Route",
        "Session-Expires",
        "SIP-ETag",
        "SIP-If-Match",
        "Subject",
        "Subscription-State",
        "Supported",
        "Target-Dialog",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    ];

    #[test]
    fn known_names_found() {
        for n in KNOWN_NAMES {
            assert_eq!(canonical_name(n), Some(*n));
            assert_eq!(canonical_name(&n.to_ascii_uppercase()), Some(*n));
            assert_eq!(canonical_name(&n.to_ascii_lowercase()), Some(*n));
        }
        assert_eq!(canonical_name("CALL-ID"), Some("Call-ID"));
        assert_eq!(canonical_name("www-authenticate"), Some("WWW-Authenticate"));
        assert_eq!(canonical_name("cseq"), Some("CSeq"));
        assert_eq!(canonical_name("i"), Some("Call-ID"));
        assert_eq!(canonical_name("V"), Some("Via"));
        assert_eq!(canonical_name("X-Custom"), None);
        assert_eq!(canonical_name("q"), None);
        assert_eq!(canonical_name(""), None);
    }

    #[test]
    fn headers_basic_ops() {
        let mut h = Headers::new();
        h.push("via", "SIP/2.0/UDP a");
        h.push("X-Foo", "1");
        h.push("v", "SIP/2.0/UDP b");
        h.push("call-id", "abc");
        assert_eq!(h.len(), 4);
        assert_eq!(h.get("Via"), Some("SIP/2.0/UDP a"));
        assert_eq!(h.get("VIA"), Some("SIP/2.0/UDP a"));
        assert_eq!(h.get("v"), Some("SIP/2.0/UDP a"));
        assert_eq!(h.get("x-foo"), Some("1"));
        assert_eq!(
            h.get_all("Via").collect::<Vec<_>>(),
            ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]
        );
        let names: Vec<_> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Via", "X-Foo", "Via", "Call-ID"]);
        h.set("Via", "SIP/2.0/TCP c");
        assert_eq!(h.get_all("Via").collect::<Vec<_>>(), ["SIP/2.0/TCP c"]);
        assert_eq!(h.iter().next(), Some(("Via", "SIP/2.0/TCP c")));
        h.set("Expires", "60");
        assert_eq!(h.iter().last(), Some(("Expires", "60")));
        h.insert(0, "Route", "<sip:p>");
        h.insert(99, "Max-Forwards", "70");
        assert_eq!(h.iter().next(), Some(("Route", "<sip:p>")));
        assert_eq!(h.iter().last(), Some(("Max-Forwards", "70")));
        h.remove("via");
        assert_eq!(h.get("Via"), None);
        assert!(!h.is_empty());
        assert_eq!(h.len(), 5);
    }

    #[test]
    fn replaced_values_read_back_and_a_clone_keeps_only_the_live_ones() {
        let mut h = Headers::new();
        h.push("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b");
        h.push("Max-Forwards", "70");
        assert!(h.replace_first("Max-Forwards", "69"));
        assert!(!h.replace_first("Route", "<sip:x>"));
        assert_eq!(
            h.pop_first_value("Via").as_deref(),
            Some("SIP/2.0/UDP a;branch=z9hG4bK1")
        );
        assert_eq!(h.get("Via"), Some("SIP/2.0/UDP b"));
        assert_eq!(h.get("Max-Forwards"), Some("69"));
        // The replaced values' bytes are still held; a clone drops them.
        let copy = h.clone();
        assert!(copy.text_len() < h.text_len());
        assert_eq!(copy.text_len(), "SIP/2.0/UDP b".len() + "69".len());
        // Equal by lines, whatever the buffers hold.
        assert_eq!(copy, h);
        let mut other = Headers::new();
        other.push("Via", "SIP/2.0/UDP b");
        other.push("Max-Forwards", "70");
        assert_ne!(other, h);
        other.set("Max-Forwards", "69");
        assert_eq!(other, h);
        assert_eq!(
            format!("{h:?}"),
            r#"[("Via", "SIP/2.0/UDP b"), ("Max-Forwards", "69")]"#
        );
    }

    #[test]
    fn has_tag_agrees_with_the_parser() {
        for value in [
            "<sip:100@a.example>",
            "<sip:100@a.example>;tag=abc",
            "<sip:100@a.example> ; TAG = abc",
            "\"Bob; tag=x\" <sip:100@a.example>",
            "\"Bob\" <sip:100@a.example;tag=uri-param>",
            "Bob <sip:100@a.example>;x=1;tag=9;y",
            "sip:100@a.example;tag=bare",
            "sip:100;tag=x@a.example",
            "sip:100@a.example",
            "<sip:100@a.example>;tag",
            "<sip:100@a.example>;tag=",
            "<sip:100@a.example>;tagx=1",
        ] {
            match NameAddr::parse(value) {
                Ok(parsed) => assert_eq!(has_tag(value), parsed.tag().is_some(), "{value}"),
                Err(_) => assert!(!has_tag(value), "{value}"),
            }
        }
        assert!(!has_tag(""));
        assert!(!has_tag("<sip:100@a.example"));
    }

    #[test]
    fn split_list_cases() {
        assert_eq!(
            split_list(r#" "Doe, John" <sip:j@x>;q=0.5 , <sip:a,b@y>, sip:z@w ,,"#),
            [r#""Doe, John" <sip:j@x>;q=0.5"#, "<sip:a,b@y>", "sip:z@w"]
        );
        assert_eq!(
            split_list(r#""a \"quoted, \\" <sip:q@x>, <sip:r@x>"#),
            [r#""a \"quoted, \\" <sip:q@x>"#, "<sip:r@x>"]
        );
        assert!(split_list("  ").is_empty());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(r#""Alice \"A\" Smith" <sip:alice@example.com>;tag=1928"#).unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"Alice "A" Smith"#));
        assert_eq!(n.tag(), Some("1928"));
        assert_eq!(
            n.to_string(),
            r#""Alice \"A\" Smith" <sip:alice@example.com>;tag=1928"#
        );
        let n = NameAddr::parse("Bob Jones <sip:bob@example.com;transport=tcp> ; tag = x").unwrap();
        assert_eq!(n.display.as_deref(), Some("Bob Jones"));
        assert_eq!(n.uri.param("transport"), Some(Some("tcp")));
        assert_eq!(n.tag(), Some("x"));
        let n = NameAddr::parse("sip:carol@example.com;tag=77;user=phone").unwrap();
        assert_eq!(n.display, None);
        assert!(n.uri.params.is_empty());
        assert_eq!(n.tag(), Some("77"));
        assert_eq!(n.param("user"), Some(Some("phone")));
        assert_eq!(n.to_string(), "<sip:carol@example.com>;tag=77;user=phone");
        let n = NameAddr::parse("<sip:dave@example.com>").unwrap();
        assert_eq!(n.tag(), None);
        let n = NameAddr::parse(r#""" <sip:e@example.com>"#).unwrap();
        assert_eq!(n.display.as_deref(), Some(""));
        // Controls are written as quoted-pairs; CR/LF cannot be and become SP.
        let mut n = n;
        n.display = Some("a\u{7}b\r\nc\\".into());
        assert_eq!(n.to_string(), "\"a\\\u{7}b  c\\\\\" <sip:e@example.com>");
        assert_eq!(
            NameAddr::parse(&n.to_string()).unwrap().display.as_deref(),
            Some("a\u{7}b  c\\")
        );
        for bad in [
            "",
            "<sip:a@b",
            "\"open <sip:a@b>",
            "Alice sip:a@b",
            "<sip:a@b> junk",
            "<sip:a@b>;tag=\"x",
            "<sip:a@b>, <sip:c@d>",
            "sip:a@b, sip:c@d",
            "\"x\" sip:a@b",
            "<>",
            "sip:a@b?subject=x;tag=1",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_top_via_comes_apart_from_the_rest_of_its_line() {
        let line =
            "SIP/2.0/UDP a.example;branch=z9hG4bK1;rport ,SIP/2.0/TCP b.example;branch=\"x,y\"";
        let top_of = |line| {
            let (item, rest) = Via::split_top(line).unwrap();
            (Via::parse_list(item).unwrap().remove(0), rest)
        };
        let (top, rest) = top_of(line);
        assert_eq!(top.host, Host::Domain("a.example".into()));
        assert_eq!(top.branch(), Some("z9hG4bK1"));
        assert_eq!(rest, ",SIP/2.0/TCP b.example;branch=\"x,y\"");
        // What the rest holds still parses as before.
        let mut joined = top.to_string();
        joined.push_str(rest);
        assert_eq!(
            Via::parse_list(&joined).unwrap(),
            Via::parse_list(line).unwrap()
        );
        let (alone, rest) = top_of("SIP/2.0/UDP [::1]:5060;branch=z9hG4bK2");
        assert_eq!(alone.port, Some(5060));
        assert_eq!(rest, "");
        // Empty items are skipped, as parse_list does.
        let (top, rest) = top_of(" , SIP/2.0/UDP a.example,");
        assert_eq!(top.host, Host::Domain("a.example".into()));
        assert_eq!(rest, ",");
        assert_eq!(Via::split_top(""), None);
        assert_eq!(Via::split_top(" , "), None);
    }

    #[test]
    fn via_forms() {
        let v =
            Via::parse_list("SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776;rport").unwrap();
        assert_eq!(v.len(), 1);
        let v0 = &v[0];
        assert_eq!(v0.protocol, "SIP/2.0");
        assert_eq!(v0.transport, "UDP");
        assert_eq!(v0.host, Host::Domain("pc33.example.com".into()));
        assert_eq!(v0.port, Some(5066));
        assert_eq!(v0.branch(), Some("z9hG4bK776"));
        assert_eq!(v0.param("rport"), Some(None));
        assert_eq!(
            v0.to_string(),
            "SIP/2.0/UDP pc33.example.com:5066;branch=z9hG4bK776;rport"
        );
        let v = Via::parse_list(" sip / 2.0 / tcp  [2001:db8::9] : 5070 ; Branch=z9hG4bKa, SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKb").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].transport, "TCP");
        assert_eq!(
            v[0].host,
            Host::Ip("2001:db8::9".parse::<IpAddr>().unwrap())
        );
        assert_eq!(v[0].port, Some(5070));
        assert_eq!(v[0].branch(), Some("z9hG4bKa"));
        assert_eq!(
            v[0].to_string(),
            "SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bKa"
        );
        assert_eq!(v[1].transport, "WSS");
        let mut v1 = v[1].clone();
        v1.set_param("received", Some("192.0.2.7".into()));
        v1.set_param("branch", Some("z9hG4bKc".into()));
        assert_eq!(
            v1.to_string(),
            "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKc;received=192.0.2.7"
        );
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0 host",
            "SIP/2.0/UDP ;branch=x",
            "SIP/2.0/UDP host:port",
            "SIP/2.0/UDP 2001:db8::1",
            "SIP/2.0/UDP host;branch=a b",
            "SIP/2.0/U@P host",
            ",",
        ] {
            assert!(Via::parse_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cseq_forms() {
        let c = CSeq::parse("  4711   REGISTER ").unwrap();
        assert_eq!(c.seq, 4711);
        assert_eq!(c.method, Method::Register);
        assert_eq!(c.to_string(), "4711 REGISTER");
        assert_eq!(CSeq::parse("4294967295 ACK").unwrap().seq, u32::MAX);
        for bad in [
            "",
            "1",
            "REGISTER",
            "4294967296 REGISTER",
            "-1 REGISTER",
            "1 REGISTER extra",
            "1.5 INVITE",
        ] {
            assert_eq!(
                CSeq::parse(bad).unwrap_err().reason,
                "Malformed CSeq",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn contacts_list() {
        let lines = [
            r#""Lee, \"Jr\"" <sip:lee@192.0.2.4>;expires=60, <sip:lee@[2001:db8::4]>"#,
            "sip:lee@host.example;q=0.1",
        ];
        let c = parse_contacts(lines.into_iter()).unwrap();
        assert_eq!(c.len(), 3);
        match &c[0] {
            Contact::Addr(a) => {
                assert_eq!(a.display.as_deref(), Some(r#"Lee, "Jr""#));
                assert_eq!(a.param("expires"), Some(Some("60")));
            }
            Contact::Star => panic!(),
        }
        assert_eq!(parse_contacts(["*"].into_iter()).unwrap(), [Contact::Star]);
        assert_eq!(Contact::Star.to_string(), "*");
        assert_eq!(
            parse_contacts(["<sip:a@b>, garbage here"].into_iter())
                .unwrap_err()
                .reason,
            "Malformed Contact"
        );
        assert!(parse_contacts(std::iter::empty()).unwrap().is_empty());
    }
}
