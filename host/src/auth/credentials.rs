//! Parsing the value of an Authorization or Proxy-Authorization header
//! (RFC 3261 section 25.1 `credentials`, RFC 7616 section 3.4).
//!
//! The grammar is `Digest` followed by a comma-separated list of
//! `name=value`, where a value is a token or a quoted-string with `\`
//! escapes (RFC 7230 section 3.2.6). We are lenient where clients are known
//! to differ and harmless (quoted `algorithm`/`qop`/`nc`, empty list
//! elements, tabs and folded line breaks as whitespace) and strict where
//! ambiguity could be abused: a parameter we use may appear only once
//! (RFC 3261 section 7.3.1), so no two components can disagree about which
//! `username` or `response` counts.

use std::borrow::Cow;

use super::digest::Algorithm;
use super::AuthError;

/// Digest credentials as the client sent them. Values borrow from the
/// header unless a quoted value had `\` escapes to undo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials<'a> {
    pub username: Cow<'a, str>,
    pub realm: Cow<'a, str>,
    pub nonce: Cow<'a, str>,
    pub uri: Cow<'a, str>,
    pub response: Cow<'a, str>,
    /// MD5 when the parameter is absent (RFC 7616 section 3.3).
    pub algorithm: Algorithm,
    pub qop: Option<Cow<'a, str>>,
    /// Parsed from exactly 8 hex digits (RFC 2617 section 3.2.2 `nc-value`).
    pub nc: Option<u32>,
    pub cnonce: Option<Cow<'a, str>>,
    pub opaque: Option<Cow<'a, str>>,
}

impl<'a> Credentials<'a> {
    /// Parses `Digest k=v, k="quoted, with \" escapes", ...`. The scheme and
    /// parameter names are case-insensitive; unknown parameters are ignored;
    /// a missing username, realm, nonce, uri or response is an error.
    pub fn parse(header_value: &'a str) -> Result<Credentials<'a>, AuthError> {
        parse_with_raw_nc(header_value).map(|(creds, _)| creds)
    }
}

/// Like [`Credentials::parse`], also returning `nc` as sent: the client
/// hashed its own spelling (e.g. upper-case hex), so verification must too.
pub(crate) fn parse_with_raw_nc(
    header_value: &str,
) -> Result<(Credentials<'_>, Option<Cow<'_, str>>), AuthError> {
    let mut cur = Cursor {
        s: header_value,
        pos: 0,
    };
    cur.skip_ws();
    let scheme = cur.token();
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(AuthError::NotDigest);
    }
    // The scheme must be separated from the first parameter by whitespace.
    if !cur.at_end() && !cur.peek().is_some_and(is_ws) {
        return Err(AuthError::Syntax("expected whitespace after Digest"));
    }

    let mut slots = Slots::default();
    loop {
        // Empty list elements ("a=1,,b=2") are allowed (RFC 7230 section 7).
        while cur.peek().is_some_and(|b| is_ws(b) || b == b',') {
            cur.bump();
        }
        if cur.at_end() {
            break;
        }
        let name = cur.token();
        if name.is_empty() {
            return Err(AuthError::Syntax("expected a parameter name"));
        }
        cur.skip_ws();
        if cur.peek() != Some(b'=') {
            return Err(AuthError::Syntax("expected '=' after a parameter name"));
        }
        cur.bump();
        cur.skip_ws();
        let value = if cur.peek() == Some(b'"') {
            cur.quoted()?
        } else {
            let v = cur.bare_value();
            if v.is_empty() {
                return Err(AuthError::Syntax("expected a parameter value"));
            }
            Cow::Borrowed(v)
        };
        cur.skip_ws();
        match cur.peek() {
            None | Some(b',') => {}
            Some(_) => return Err(AuthError::Syntax("expected ',' between parameters")),
        }
        slots.set(name, value)?;
    }
    slots.finish()
}

/// One slot per parameter we use; unknown names are dropped.
#[derive(Default)]
struct Slots<'a> {
    username: Option<Cow<'a, str>>,
    realm: Option<Cow<'a, str>>,
    nonce: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    response: Option<Cow<'a, str>>,
    algorithm: Option<Cow<'a, str>>,
    qop: Option<Cow<'a, str>>,
    nc: Option<Cow<'a, str>>,
    cnonce: Option<Cow<'a, str>>,
    opaque: Option<Cow<'a, str>>,
}

impl<'a> Slots<'a> {
    fn set(&mut self, name: &str, value: Cow<'a, str>) -> Result<(), AuthError> {
        // Lower-cased on the stack: no name we use is longer than 9 bytes.
        let mut buf = [0u8; 9];
        let Some(lower) = buf.get_mut(..name.len()) else {
            return Ok(());
        };
        lower.copy_from_slice(name.as_bytes());
        lower.make_ascii_lowercase();
        let (slot, name) = match &*lower {
            b"username" => (&mut self.username, "username"),
            b"realm" => (&mut self.realm, "realm"),
            b"nonce" => (&mut self.nonce, "nonce"),
            b"uri" => (&mut self.uri, "uri"),
            b"response" => (&mut self.response, "response"),
            b"algorithm" => (&mut self.algorithm, "algorithm"),
            b"qop" => (&mut self.qop, "qop"),
            b"nc" => (&mut self.nc, "nc"),
            b"cnonce" => (&mut self.cnonce, "cnonce"),
            b"opaque" => (&mut self.opaque, "opaque"),
            _ => return Ok(()),
        };
        if slot.is_some() {
            return Err(AuthError::DuplicateParam(name));
        }
        *slot = Some(value);
        Ok(())
    }

    fn finish(self) -> Result<(Credentials<'a>, Option<Cow<'a, str>>), AuthError> {
        let algorithm = match &self.algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(a).ok_or(AuthError::UnsupportedAlgorithm)?,
        };
        let nc = match &self.nc {
            None => None,
            Some(raw) => Some(parse_nc(raw).ok_or(AuthError::BadNonceCount)?),
        };
        let creds = Credentials {
            username: self.username.ok_or(AuthError::MissingParam("username"))?,
            realm: self.realm.ok_or(AuthError::MissingParam("realm"))?,
            nonce: self.nonce.ok_or(AuthError::MissingParam("nonce"))?,
            uri: self.uri.ok_or(AuthError::MissingParam("uri"))?,
            response: self.response.ok_or(AuthError::MissingParam("response"))?,
            algorithm,
            qop: self.qop,
            nc,
            cnonce: self.cnonce,
            opaque: self.opaque,
        };
        Ok((creds, self.nc))
    }
}

/// Exactly 8 hex digits. Checked by hand because `from_str_radix` would
/// also take a leading `+`.
fn parse_nc(raw: &str) -> Option<u32> {
    if raw.len() != 8 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(raw, 16).ok()
}

/// SP and HTAB, plus CR and LF in case the header arrives with its line
/// folding still in place (RFC 3261 section 7.3.1).
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `tchar` (RFC 7230 section 3.2.6).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A position in the header value, always on a char boundary. The grammar's
/// delimiters and tokens are ASCII, so the cursor looks at bytes: a byte of
/// a multi-byte char matches none of them (only quoted values hold those).
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// Steps over an ASCII byte (callers bump only what they peeked).
    fn bump(&mut self) {
        if self.peek().is_some_and(|b| b.is_ascii()) {
            self.pos += 1;
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.bump();
        }
    }

    /// ASCII bytes while `f` holds (stops before any non-ASCII byte).
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let rest = self.rest();
        let len = rest
            .bytes()
            .position(|b| !(b.is_ascii() && f(b)))
            .unwrap_or(rest.len());
        self.pos += len;
        rest.get(..len).unwrap_or("")
    }

    fn token(&mut self) -> &'a str {
        self.take_while(is_tchar)
    }

    /// An unquoted value. Wider than `token` because some clients leave a
    /// `uri` or `nonce` unquoted; it still stops at anything that would make
    /// the list ambiguous.
    fn bare_value(&mut self) -> &'a str {
        self.take_while(|b| b.is_ascii_graphic() && b != b',' && b != b'"')
    }

    /// A quoted-string, cursor on the opening quote. `\x` stands for `x`.
    /// Control characters other than HTAB (C1 controls included) are refused
    /// so they cannot reach logs or the user table through a username. Runs
    /// without escapes are copied whole: this is on every authenticated
    /// request's path.
    fn quoted(&mut self) -> Result<Cow<'a, str>, AuthError> {
        let unterminated = || AuthError::Syntax("unterminated quoted string");
        let control = || AuthError::Syntax("control character in quoted string");
        self.bump();
        let rest = self.rest();
        let bytes = rest.as_bytes();
        // Borrowed until the first escape.
        let mut out: Option<String> = None;
        // `run` starts the text not yet copied to `out`; `i` is always on a
        // char boundary.
        let (mut run, mut i) = (0, 0);
        while let Some(&b) = bytes.get(i) {
            match b {
                b'"' => {
                    self.pos += i + 1;
                    return Ok(match out {
                        None => Cow::Borrowed(&rest[..i]),
                        Some(mut out) => {
                            out.push_str(&rest[run..i]);
                            Cow::Owned(out)
                        }
                    });
                }
                b'\\' => {
                    let out = out.get_or_insert_with(String::new);
                    out.push_str(&rest[run..i]);
                    let c = rest[i + 1..].chars().next().ok_or_else(unterminated)?;
                    if c.is_control() && c != '\t' {
                        return Err(control());
                    }
                    out.push(c);
                    i += 1 + c.len_utf8();
                    run = i;
                }
                b'\t' => i += 1,
                _ if b.is_ascii_control() => return Err(control()),
                _ if b.is_ascii() => i += 1,
                _ => {
                    let c = rest[i..].chars().next().ok_or_else(unterminated)?;
                    if c.is_control() {
                        return Err(control());
                    }
                    i += c.len_utf8();
                }
            }
        }
        Err(unterminated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC2617: &str = r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;

    #[test]
    fn rfc2617_example_with_folding() {
        let c = Credentials::parse(RFC2617).unwrap();
        assert_eq!(
            c,
            Credentials {
                username: "Mufasa".into(),
                realm: "testrealm@host.com".into(),
                nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093".into(),
                uri: "/dir/index.html".into(),
                response: "6629fae49393a05397450978507c4ef1".into(),
                algorithm: Algorithm::Md5,
                qop: Some("auth".into()),
                nc: Some(1),
                cnonce: Some("0a4f113b".into()),
                opaque: Some("5ccc069c403ebaf9f0171e9517f40e41".into()),
            }
        );
    }

    #[test]
    fn quoted_values_with_commas_and_escapes() {
        let c = Credentials::parse(
            r#"Digest username="a\"b,c", realm="r, with \\ and \"q\"", nonce="n", uri="sip:x@y;a=b,c", response="00""#,
        )
        .unwrap();
        assert_eq!(c.username, r#"a"b,c"#);
        assert_eq!(c.realm, r#"r, with \ and "q""#);
        assert_eq!(c.uri, "sip:x@y;a=b,c");
    }

    #[test]
    fn case_insensitive_scheme_and_names_unquoted_values() {
        for scheme in ["digest", "DIGEST", "Digest", "dIgEsT"] {
            let h = format!(
                "{scheme} USERNAME=\"u\", Realm=\"r\", NONCE=\"n\", Uri=\"sip:r\", RESPONSE=\"ab\", \
                 ALGORITHM=sha-256, QOP=auth, NC=0000000A, CNonce=\"c\""
            );
            let (c, raw) = parse_with_raw_nc(&h).unwrap();
            assert_eq!(c.username, "u");
            assert_eq!(c.algorithm, Algorithm::Sha256);
            assert_eq!(c.qop.as_deref(), Some("auth"));
            assert_eq!(c.nc, Some(10));
            assert_eq!(raw.as_deref(), Some("0000000A"));
            assert_eq!(c.cnonce.as_deref(), Some("c"));
        }
    }

    #[test]
    fn quoted_algorithm_qop_nc_and_extra_whitespace() {
        let c = Credentials::parse(
            "  Digest \t username = \"u\" ,realm=\"r\",,  nonce=\"n\" , uri=\"sip:r\",\tresponse=\"ab\" ,\
             algorithm=\"MD5\", qop=\"auth\", nc=\"ffffffff\", cnonce=c1 , ",
        )
        .unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert_eq!(c.nc, Some(u32::MAX));
        assert_eq!(c.cnonce.as_deref(), Some("c1"));
    }

    #[test]
    fn unknown_params_ignored_and_algorithm_defaults_to_md5() {
        let c = Credentials::parse(
            r#"Digest username="u", realm="r", nonce="n", uri="sip:r", response="ab", foo="x, y", bar=baz, foo=again"#,
        )
        .unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.qop, None);
        assert_eq!(c.nc, None);
        assert_eq!(c.opaque, None);
    }

    #[test]
    fn utf8_username() {
        let c = Credentials::parse(
            r#"Digest username="jürgen", realm="r", nonce="n", uri="sip:r", response="ab""#,
        )
        .unwrap();
        assert_eq!(c.username, "jürgen");
    }

    #[test]
    fn missing_required_params() {
        let full = [
            ("username", r#"username="u""#),
            ("realm", r#"realm="r""#),
            ("nonce", r#"nonce="n""#),
            ("uri", r#"uri="sip:r""#),
            ("response", r#"response="ab""#),
        ];
        for (skip, _) in full {
            let params: Vec<&str> = full
                .iter()
                .filter(|(n, _)| *n != skip)
                .map(|(_, p)| *p)
                .collect();
            let h = format!("Digest {}", params.join(", "));
            assert_eq!(
                Credentials::parse(&h),
                Err(AuthError::MissingParam(skip)),
                "{h}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        let base = r#"username="u", realm="r", nonce="n", uri="sip:r", response="ab""#;
        let cases = [
            String::new(),
            "Digest".to_owned(),
            "Basic dXNlcjpwYXNz".to_owned(),
            format!("Digestusername=\"u\", {base}"),
            format!("Digest {base}, realm=\"other\""),
            format!("Digest {base}, nc=1"),
            format!("Digest {base}, nc=+0000001"),
            format!("Digest {base}, nc=0000000g"),
            format!("Digest {base}, algorithm=MD5-sess"),
            format!("Digest {base}, cnonce=\"unterminated"),
            format!("Digest {base}, cnonce=\"ends in backslash\\"),
            format!("Digest {base}, cnonce=\"nul\0\""),
            format!("Digest {base}, cnonce=\"cr\r\nlf\""),
            format!("Digest {base}, cnonce=\"c1 \u{85} control\""),
            format!("Digest {base}, cnonce=\"escaped \\\u{1} control\""),
            format!("Digest {base}, cnonce=\"escaped \\\u{85} control\""),
            format!("Digest {base}, cnonce="),
            format!("Digest {base}, =x"),
            format!("Digest {base}, cnonce"),
            format!("Digest {base} cnonce=x"),
            format!("Digest {base}, cnonce=\"a\"b"),
            "Digest username=\"u\", Digest realm=\"r\"".to_owned(),
            "\u{0}\u{ffff}".to_owned(),
            "Digest ========".to_owned(),
            "Digest \"\"\"".to_owned(),
        ];
        for h in &cases {
            assert!(Credentials::parse(h).is_err(), "{h:?}");
        }
    }

    #[test]
    fn never_panics_on_prefixes() {
        // Every prefix of a valid header, cut at each char boundary.
        let h = r#"Digest username="jü\"r", realm="r", nonce="n", uri="sip:r", response="ab", nc=00000001"#;
        for (i, _) in h.char_indices() {
            let _ = Credentials::parse(&h[..i]);
        }
    }
}
