//! SIP, SIPS and tel URIs (RFC 3261 19.1, 25.1; RFC 3966), with hosts that may be IPv6 references.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::message::ParseError;
use super::text::{
    find_param, is_password_char, is_user_char, percent_decode, trim_ws, write_params, Escaped,
};

/// A host: a domain name (lowercased, RFC 3261 19.1.4 compares hosts
/// case-insensitively) or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Domain(String),
    Ip(IpAddr),
}

impl Host {
    /// Parses `hostname / IPv4address / IPv6reference` (RFC 3261 25.1);
    /// IPv6 must be in brackets.
    pub fn parse(s: &str) -> Result<Host, ParseError> {
        parse_host(s).ok_or_else(|| ParseError::new("Bad host"))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ip(IpAddr::V4(a)) => f.write_str(Ipv4Text::new(*a).as_str()),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// Dotted-quad text of an IPv4 address, written without the formatting
/// machinery: hosts are written into every Via, key and response.
pub struct Ipv4Text {
    buf: [u8; 15],
    len: usize,
}

impl Ipv4Text {
    pub fn new(addr: Ipv4Addr) -> Ipv4Text {
        let mut text = Ipv4Text {
            buf: [0; 15],
            len: 0,
        };
        for (i, octet) in addr.octets().into_iter().enumerate() {
            if i > 0 {
                text.push(b'.');
            }
            if octet >= 100 {
                text.push(b'0' + octet / 100);
            }
            if octet >= 10 {
                text.push(b'0' + octet / 10 % 10);
            }
            text.push(b'0' + octet % 10);
        }
        text
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and dots were written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// An address as `received=` and logs write it: IPv6 without brackets.
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => Ipv4Text::new(a).as_str().to_owned(),
        IpAddr::V6(a) => a.to_string(),
    }
}

/// `host` (RFC 3261 25.1): `[IPv6]`, dotted IPv4, or a hostname (letters,
/// digits, `-`, `.`; `_` accepted too, as real deployments use it).
pub(crate) fn parse_host(s: &str) -> Option<Host> {
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        return inner
            .parse::<Ipv6Addr>()
            .ok()
            .map(|a| Host::Ip(IpAddr::V6(a)));
    }
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    if b.iter().all(|c| c.is_ascii_digit() || *c == b'.') {
        return s.parse::<Ipv4Addr>().ok().map(|a| Host::Ip(IpAddr::V4(a)));
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
    {
        return None;
    }
    // No empty labels; one trailing dot is allowed (RFC 3261 25.1 hostname).
    let body = s.strip_suffix('.').unwrap_or(s);
    if body.is_empty() || body.split('.').any(str::is_empty) {
        return None;
    }
    Some(Host::Domain(s.to_ascii_lowercase()))
}

/// `port` = 1*DIGIT fitting in 16 bits.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `hostport` (RFC 3261 25.1); whitespace around the colon is tolerated for
/// Via sent-by (`COLON = SWS ":" SWS`).
pub(crate) fn parse_hostport(s: &str) -> Option<(Host, Option<u16>)> {
    let s = trim_ws(s);
    let (host, rest) = if s.starts_with('[') {
        let close = s.find(']')?;
        s.split_at(close + 1)
    } else {
        match s.find(':') {
            Some(c) => s.split_at(c),
            None => (s, ""),
        }
    };
    let host = parse_host(trim_ws(host))?;
    let rest = trim_ws(rest);
    if rest.is_empty() {
        return Some((host, None));
    }
    let port = parse_port(trim_ws(rest.strip_prefix(':')?))?;
    Some((host, Some(port)))
}

/// A URI scheme; compared case-insensitively (RFC 3261 19.1.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// Any other absoluteURI scheme, lowercased.
    Other(String),
}

impl Scheme {
    pub fn as_str(&self) -> &str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
            Scheme::Other(s) => s,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed URI.
///
/// - `sip:`/`sips:`: all fields as in RFC 3261 19.1.1.
/// - `tel:` (RFC 3966): `user` is the number, `host` is `Domain("")`, `params` as parsed.
/// - other schemes (RFC 3261 allows any absoluteURI, e.g. to answer 416):
///   `user` holds everything after `scheme:` verbatim, `host` is `Domain("")`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri {
    pub scheme: Scheme,
    /// Percent-decoded user part.
    pub user: Option<String>,
    /// Percent-decoded password (deprecated by RFC 3261 19.1.1, still parsed).
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    /// uri-parameters, names lowercased, values raw.
    pub params: Vec<(String, Option<String>)>,
    /// Raw headers part after `?`.
    pub headers: Option<String>,
}

impl Uri {
    /// Parses a URI (RFC 3261 19.1.1 / 25.1 SIP-URI, SIPS-URI, absoluteURI).
    pub fn parse(s: &str) -> Result<Uri, ParseError> {
        parse_uri(s).ok_or_else(|| ParseError::new("Bad URI"))
    }

    /// A URI parameter by case-insensitive name: `Some(None)` for a flag like `;lr`.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    /// A placeholder that keeps unparseable text, used as the Request-URI of a
    /// partial message whose Request-URI was bad: scheme `Other("")`, `user` = the text.
    pub(crate) fn placeholder(raw: &str) -> Uri {
        Uri {
            scheme: Scheme::Other(String::new()),
            user: Some(raw.to_owned()),
            password: None,
            host: Host::Domain(String::new()),
            port: None,
            params: Vec::new(),
            headers: None,
        }
    }
}

/// `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` (RFC 3261 25.1).
fn valid_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

fn parse_uri(s: &str) -> Option<Uri> {
    let colon = s.find(':')?;
    let (scheme_s, rest) = (&s[..colon], &s[colon + 1..]);
    if !valid_scheme(scheme_s) || rest.is_empty() {
        return None;
    }
    // No whitespace, controls, non-ASCII or delimiters that end a URI in a header.
    if !rest
        .bytes()
        .all(|b| (0x21..0x7f).contains(&b) && !matches!(b, b'<' | b'>' | b'"'))
    {
        return None;
    }
    let scheme = if scheme_s.eq_ignore_ascii_case("sip") {
        Scheme::Sip
    } else if scheme_s.eq_ignore_ascii_case("sips") {
        Scheme::Sips
    } else if scheme_s.eq_ignore_ascii_case("tel") {
        Scheme::Tel
    } else {
        Scheme::Other(scheme_s.to_ascii_lowercase())
    };
    match scheme {
        Scheme::Sip | Scheme::Sips => parse_sip(scheme, rest),
        Scheme::Tel => parse_tel(rest),
        Scheme::Other(_) => Some(Uri {
            scheme,
            user: Some(rest.to_owned()),
            password: None,
            host: Host::Domain(String::new()),
            port: None,
            params: Vec::new(),
            headers: None,
        }),
    }
}

/// `uri-parameters` (RFC 3261 25.1): names lowercased, values raw; empty items skipped.
fn parse_uri_params(s: &str, out: &mut Vec<(String, Option<String>)>) -> Option<()> {
    for item in s.split(';') {
        if item.is_empty() {
            continue;
        }
        let (name, value) = match item.find('=') {
            Some(eq) => (&item[..eq], Some(&item[eq + 1..])),
            None => (item, None),
        };
        if name.is_empty() {
            return None;
        }
        out.push((name.to_ascii_lowercase(), value.map(str::to_owned)));
    }
    Some(())
}

/// `sip:` / `sips:` after the colon (RFC 3261 19.1.1).
fn parse_sip(scheme: Scheme, rest: &str) -> Option<Uri> {
    // `@` cannot appear unescaped after the userinfo, so the first one ends it.
    let (userinfo, hostpart) = match rest.find('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => {
            let (u, p) = match ui.find(':') {
                Some(c) => (&ui[..c], Some(&ui[c + 1..])),
                None => (ui, None),
            };
            if u.is_empty() {
                return None;
            }
            let user = percent_decode(u)?.into_owned();
            let password = match p {
                Some(p) => Some(percent_decode(p)?.into_owned()),
                None => None,
            };
            (Some(user), password)
        }
    };
    let (hostpart, headers) = match hostpart.find('?') {
        Some(q) => (&hostpart[..q], Some(hostpart[q + 1..].to_owned())),
        None => (hostpart, None),
    };
    let (hostport, params_s) = match hostpart.find(';') {
        Some(i) => (&hostpart[..i], Some(&hostpart[i + 1..])),
        None => (hostpart, None),
    };
    let (host, port) = parse_hostport(hostport)?;
    let mut params = Vec::new();
    if let Some(p) = params_s {
        parse_uri_params(p, &mut params)?;
    }
    Some(Uri {
        scheme,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

/// `tel:` after the colon (RFC 3966 3): the number, then `;`-parameters.
fn parse_tel(rest: &str) -> Option<Uri> {
    let (number, params_s) = match rest.find(';') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if number.is_empty() || number.contains(['?', '@']) {
        return None;
    }
    let mut params = Vec::new();
    if let Some(p) = params_s {
        parse_uri_params(p, &mut params)?;
    }
    Some(Uri {
        scheme: Scheme::Tel,
        user: Some(percent_decode(number)?.into_owned()),
        password: None,
        host: Host::Domain(String::new()),
        port: None,
        params,
        headers: None,
    })
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme.as_str())?;
        f.write_str(":")?;
        match self.scheme {
            Scheme::Other(_) => return f.write_str(self.user.as_deref().unwrap_or("")),
            Scheme::Tel => {
                // RFC 3966 escapes the same reserved characters as a SIP user part.
                Escaped(self.user.as_deref().unwrap_or(""), is_user_char).fmt(f)?;
            }
            Scheme::Sip | Scheme::Sips => {
                if let Some(user) = &self.user {
                    // RFC 3261 19.1.2: escape what is not allowed in the user part.
                    Escaped(user, is_user_char).fmt(f)?;
                    if let Some(pw) = &self.password {
                        f.write_str(":")?;
                        Escaped(pw, is_password_char).fmt(f)?;
                    }
                    f.write_str("@")?;
                }
                self.host.fmt(f)?;
                if let Some(port) = self.port {
                    write!(f, ":{port}")?;
                }
            }
        }
        write_params(f, &self.params)?;
        if let Some(h) = &self.headers {
            f.write_str("?")?;
            f.write_str(h)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(s: &str) -> Uri {
        let u = Uri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let again = Uri::parse(&u.to_string()).unwrap();
        assert_eq!(u, again, "{s} -> {u}");
        u
    }

    #[test]
    fn simple_sip_uri() {
        let u = roundtrip("sip:alice@Example.COM");
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, Host::Domain("example.com".into()));
        assert_eq!(u.port, None);
        assert_eq!(u.to_string(), "sip:alice@example.com");
    }

    #[test]
    fn full_sip_uri() {
        let u = roundtrip("SIPS:bob:secret@10.0.0.1:5061;Transport=TCP;lr?subject=hi&x=y");
        assert_eq!(u.scheme, Scheme::Sips);
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::Ip("10.0.0.1".parse().unwrap()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.param("transport"), Some(Some("TCP")));
        assert_eq!(u.param("LR"), Some(None));
        assert_eq!(u.param("maddr"), None);
        assert_eq!(u.headers.as_deref(), Some("subject=hi&x=y"));
        assert_eq!(
            u.to_string(),
            "sips:bob:secret@10.0.0.1:5061;transport=TCP;lr?subject=hi&x=y"
        );
    }

    #[test]
    fn ipv6_hosts() {
        let u = roundtrip("sip:[2001:db8::10]:5070");
        assert_eq!(u.host, Host::Ip("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.to_string(), "sip:[2001:db8::10]:5070");
        let u = roundtrip("sip:carol@[2001:DB8::1];transport=udp");
        assert_eq!(u.host.to_string(), "[2001:db8::1]");
        assert!(Uri::parse("sip:[2001:db8::1").is_err());
        assert!(Uri::parse("sip:2001:db8::1").is_err());
        assert!(Uri::parse("sip:[10.0.0.1]").is_err());
        let u = roundtrip("sip:[::ffff:192.0.2.1]");
        assert!(matches!(u.host, Host::Ip(IpAddr::V6(_))));
    }

    #[test]
    fn escaped_user() {
        let u = roundtrip("sip:%61lice@example.com");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.to_string(), "sip:alice@example.com");
        let u = roundtrip("sip:user%20name@example.com");
        assert_eq!(u.user.as_deref(), Some("user name"));
        assert_eq!(u.to_string(), "sip:user%20name@example.com");
        let u = roundtrip("sip:a%40b%3Ac@example.com");
        assert_eq!(u.user.as_deref(), Some("a@b:c"));
        assert_eq!(u.to_string(), "sip:a%40b%3Ac@example.com");
        let u = roundtrip("sip:+1-555;phone-context=x@example.com;user=phone");
        assert_eq!(u.user.as_deref(), Some("+1-555;phone-context=x"));
        assert_eq!(u.param("user"), Some(Some("phone")));
        assert!(Uri::parse("sip:%zzuser@example.com").is_err());
        assert!(Uri::parse("sip:%@example.com").is_err());
    }

    #[test]
    fn tel_and_other_schemes() {
        let u = roundtrip("tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user.as_deref(), Some("+1-201-555-0123"));
        assert_eq!(u.host, Host::Domain(String::new()));
        assert_eq!(u.param("phone-context"), Some(Some("example.com")));
        assert_eq!(
            u.to_string(),
            "tel:+1-201-555-0123;phone-context=example.com"
        );
        let u = roundtrip("mailto:someone@example.com");
        assert_eq!(u.scheme, Scheme::Other("mailto".into()));
        assert_eq!(u.to_string(), "mailto:someone@example.com");
    }

    #[test]
    fn bad_uris() {
        for s in [
            "",
            ":",
            "sip:",
            "sip:@example.com",
            "sip:alice@",
            "sip:alice@exa mple.com",
            "sip:alice@example.com:",
            "sip:alice@example.com:99999",
            "sip:alice@example.com:12a",
            "sip:alice@example..com",
            "sip:alice@.example.com",
            "sip:alice@1.2.3.256",
            "sip:alice@exa$mple.com",
            "sip:alice@example.com;=x",
            "sip:<alice@example.com>",
            "1sip:alice@example.com",
            "tel:",
            "sip:alice@example.com\r\n",
            "sip:al\u{e9}@example.com",
        ] {
            assert!(Uri::parse(s).is_err(), "{s:?} should fail");
        }
    }

    #[test]
    fn host_display() {
        assert_eq!(Host::parse("[::1]").unwrap().to_string(), "[::1]");
        assert_eq!(Host::parse("192.0.2.1").unwrap().to_string(), "192.0.2.1");
        assert_eq!(
            Host::parse("Example.COM.").unwrap().to_string(),
            "example.com."
        );
        assert!(Host::parse("").is_err());
    }

    #[test]
    fn ipv4_text_matches_std_for_every_octet() {
        for octet in 0..=255u8 {
            let a = Ipv4Addr::new(octet, 0, 255 - octet, octet / 3);
            assert_eq!(Ipv4Text::new(a).as_str(), a.to_string());
            assert_eq!(ip_text(IpAddr::V4(a)), a.to_string());
        }
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "::ffff:192.0.2.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
