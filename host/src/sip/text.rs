//! Lexical building blocks shared by the SIP parsers (RFC 3261 25.1): tokens, whitespace, quoted strings, `%` escapes and parameter lists.

use std::borrow::Cow;
use std::fmt;

/// A `token` character (RFC 3261 25.1).
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// A non-empty `token` (RFC 3261 25.1).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// SP or HTAB, the whitespace of LWS/SWS once lines are unfolded (RFC 3261 25.1).
pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Trims SP and HTAB on both sides.
pub(crate) fn trim_ws(s: &str) -> &str {
    trim_end_ws(trim_start_ws(s))
}

/// Trims SP and HTAB on the right.
pub(crate) fn trim_end_ws(s: &str) -> &str {
    // Whitespace is ASCII, so the cut is on a char boundary.
    let end = s.bytes().rposition(|c| !is_ws(c)).map_or(0, |e| e + 1);
    s.get(..end).unwrap_or("")
}

/// Trims SP and HTAB on the left.
pub(crate) fn trim_start_ws(s: &str) -> &str {
    let start = s.bytes().position(|c| !is_ws(c)).unwrap_or(s.len());
    s.get(start..).unwrap_or("")
}

/// Splits at the first run of whitespace: (first word, rest with leading whitespace removed).
pub(crate) fn split_word(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], trim_start_ws(&s[i..])),
        None => (s, ""),
    }
}

/// Index just past the closing quote of the quoted-string opening at `s[start]`,
/// honouring `\` quoted-pairs (RFC 3261 25.1). `None` if it is not closed.
pub(crate) fn quoted_end(s: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while let Some(&b) = s.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Removes the quotes and `\` escapes of a quoted-string (RFC 3261 25.1);
/// text that is not a complete quoted-string comes back unchanged.
///
/// Handy for parameter values kept raw, e.g. `+sip.instance="<urn:uuid:...>"`.
pub fn unquote(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') || quoted_end(b, 0) != Some(b.len()) {
        return Cow::Borrowed(s);
    }
    let inner = &s[1..s.len() - 1];
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Writes `s` as a quoted-string (RFC 3261 25.1): `"`, `\` and controls other
/// than HTAB become quoted-pairs; CR and LF, which cannot be quoted, become SP.
pub(crate) fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    let mut run_start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' | b'\\' | 0..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f => true,
            b'\r' | b'\n' => false,
            _ => continue,
        };
        // `b` is ASCII, so `i` and `i + 1` are char boundaries.
        f.write_str(s.get(run_start..i).unwrap_or(""))?;
        if escape {
            f.write_str("\\")?;
            f.write_str(s.get(i..i + 1).unwrap_or(""))?;
        } else {
            f.write_str(" ")?;
        }
        run_start = i + 1;
    }
    f.write_str(s.get(run_start..).unwrap_or(""))?;
    f.write_str("\"")
}

/// Iterator over the pieces of `s` between `delim` bytes that are outside
/// quoted-strings (and outside `<...>` when `angles` is set).
pub(crate) struct SplitOutside<'a> {
    s: &'a str,
    pos: usize,
    delim: u8,
    angles: bool,
    done: bool,
    /// No quotes (nor angle brackets, when they count): a plain byte search will do.
    simple: bool,
}

impl<'a> SplitOutside<'a> {
    pub(crate) fn new(s: &'a str, delim: u8, angles: bool) -> Self {
        let simple = !(s.contains('"') || (angles && s.contains('<')));
        SplitOutside {
            s,
            pos: 0,
            delim,
            angles,
            done: false,
            simple,
        }
    }
}

impl<'a> Iterator for SplitOutside<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let start = self.pos;
        if self.simple {
            let rest = self.s.get(start..).unwrap_or("");
            return match rest.find(char::from(self.delim)) {
                Some(i) => {
                    self.pos = start + i + 1;
                    rest.get(..i)
                }
                None => {
                    self.done = true;
                    Some(rest)
                }
            };
        }
        let bytes = self.s.as_bytes();
        let mut i = start;
        let mut in_angle = false;
        while let Some(&b) = bytes.get(i) {
            if b == b'"' && !in_angle {
                i = quoted_end(bytes, i).unwrap_or(bytes.len());
                continue;
            }
            if self.angles && b == b'<' {
                in_angle = true;
            } else if self.angles && b == b'>' {
                in_angle = false;
            } else if b == self.delim && !in_angle {
                self.pos = i + 1;
                // `i` indexes an ASCII byte, so both slices are on char boundaries.
                return self.s.get(start..i);
            }
            i += 1;
        }
        self.done = true;
        self.s.get(start..)
    }
}

/// A parameter value: `token / host / quoted-string` (RFC 3261 25.1 gen-value),
/// read liberally as any visible ASCII without separators, or a whole quoted-string.
fn valid_gen_value(v: &str) -> bool {
    let b = v.as_bytes();
    if b.first() == Some(&b'"') {
        return quoted_end(b, 0) == Some(b.len());
    }
    b.iter()
        .all(|&c| (0x21..0x7f).contains(&c) && !matches!(c, b'"' | b',' | b';' | b'<' | b'>'))
}

/// Parses `;`-separated header parameters (RFC 3261 25.1 generic-param,
/// `SEMI = SWS ";" SWS`) from the text after the first `;`. Names are lowercased,
/// values kept raw (quoted values keep their quotes). Empty items are skipped.
pub(crate) fn parse_params(s: &str, out: &mut Vec<(String, Option<String>)>) -> Option<()> {
    for item in SplitOutside::new(s, b';', false) {
        let item = trim_ws(item);
        if item.is_empty() {
            continue;
        }
        let (name, value) = match item.find('=') {
            Some(eq) => (
                trim_end_ws(&item[..eq]),
                Some(trim_start_ws(&item[eq + 1..])),
            ),
            None => (item, None),
        };
        if !is_token(name) {
            return None;
        }
        if let Some(v) = value {
            if !valid_gen_value(v) {
                return None;
            }
        }
        out.push((name.to_ascii_lowercase(), value.map(str::to_owned)));
    }
    Some(())
}

/// Finds a parameter by case-insensitive name.
pub(crate) fn find_param<'a>(
    params: &'a [(String, Option<String>)],
    name: &str,
) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

/// Writes `;name[=value]` for each parameter.
pub(crate) fn write_params(
    f: &mut fmt::Formatter<'_>,
    params: &[(String, Option<String>)],
) -> fmt::Result {
    for (name, value) in params {
        f.write_str(";")?;
        f.write_str(name)?;
        if let Some(v) = value {
            f.write_str("=")?;
            f.write_str(v)?;
        }
    }
    Ok(())
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%HH` escapes (RFC 3261 25.1 escaped). `None` on a broken escape or
/// when the result is not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hi = hex_val(*b.get(i + 1)?)?;
            let lo = hex_val(*b.get(i + 2)?)?;
            out.push((hi << 4) | lo);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// `unreserved` (RFC 3261 25.1): alphanum and mark.
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// Characters a SIP URI `user` may carry unescaped (RFC 3261 25.1 user).
pub(crate) fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

/// Characters a SIP URI `password` may carry unescaped (RFC 3261 25.1 password).
pub(crate) fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

/// Displays a string with every byte outside `allowed` written as `%HH`.
pub(crate) struct Escaped<'a>(pub &'a str, pub fn(u8) -> bool);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut run_start = 0;
        for (i, b) in s.bytes().enumerate() {
            if !(self.1)(b) {
                // Allowed bytes are ASCII, so the run ends on a char boundary.
                f.write_str(s.get(run_start..i).unwrap_or(""))?;
                write!(f, "%{b:02X}")?;
                run_start = i + 1;
            }
        }
        f.write_str(s.get(run_start..).unwrap_or(""))
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// True if some byte of `x` is below `n` (n <= 128); word-at-a-time bit trick.
fn has_less(x: u64, n: u8) -> bool {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0
}

/// True if some byte of `x` equals `b`.
fn has_byte(x: u64, b: u8) -> bool {
    has_less(x ^ (ONES * u64::from(b)), 1)
}

/// Index of the next LF at or after `from`, eight bytes at a time.
pub(crate) fn find_lf(data: &[u8], from: usize) -> Option<usize> {
    let hay = data.get(from..)?;
    let mut i = 0;
    for chunk in hay.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        if has_byte(u64::from_le_bytes(word), b'\n') {
            break;
        }
        i += 8;
    }
    hay.get(i..)?
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| from + i + p)
}

/// Scans one line from `from`: the index of its LF (`None` if unterminated) and
/// whether it holds a control character other than HTAB, a final CR, or one
/// escaped by `\` (RFC 3261 25.1: header text is TEXT-UTF8, LWS and quoted-pairs;
/// a stray CR could split the line for another parser). Skips eight plain
/// bytes at a time.
pub(crate) fn scan_line(data: &[u8], from: usize) -> (Option<usize>, bool) {
    let Some(hay) = data.get(from..) else {
        return (None, false);
    };
    let mut bad = false;
    let mut i = 0;
    loop {
        let word = hay
            .get(i..i + 8)
            .and_then(|c| <[u8; 8]>::try_from(c).ok())
            .map(u64::from_le_bytes);
        let end = match word {
            // No control or DEL byte in these eight: skip them.
            Some(x) if !has_less(x, 0x20) && !has_byte(x, 0x7f) => {
                i += 8;
                continue;
            }
            Some(_) => i + 8,
            None => hay.len(),
        };
        while i < end {
            let Some(&b) = hay.get(i) else {
                return (None, bad);
            };
            match b {
                b'\n' => return (Some(from + i), bad),
                b'\r' => bad |= hay.get(i + 1) != Some(&b'\n'),
                b'\t' => {}
                // A quoted-pair may escape any control but CR and LF (RFC 3261
                // 25.1; RFC 4475 3.1.1.2 puts NUL, BEL and DEL in a display name).
                0..=0x1f | 0x7f => bad |= i.checked_sub(1).and_then(|p| hay.get(p)) != Some(&b'\\'),
                _ => {}
            }
            i += 1;
        }
        if end >= hay.len() {
            return (None, bad);
        }
    }
}

/// True if `s` holds a CR or LF; eight bytes at a time.
pub(crate) fn has_line_break(s: &[u8]) -> bool {
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        // Both are below 0x20: only then look closer.
        if has_less(u64::from_le_bytes(word), 0x20)
            && chunk.iter().any(|&b| b == b'\r' || b == b'\n')
        {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b == b'\r' || b == b'\n')
}

/// Parses a string of 1*DIGIT as u32; `None` on anything else or overflow.
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_removes_escapes() {
        assert_eq!(unquote(r#""a\"b\\c""#), r#"a"b\c"#);
        assert_eq!(unquote("plain"), "plain");
        assert_eq!(unquote("\"open"), "\"open");
        assert_eq!(unquote("\"<urn:uuid:1>\""), "<urn:uuid:1>");
    }

    #[test]
    fn split_outside_respects_quotes_and_angles() {
        let v: Vec<_> = SplitOutside::new(r#"a,"b,c",<d,e>,f"#, b',', true).collect();
        assert_eq!(v, ["a", "\"b,c\"", "<d,e>", "f"]);
        let v: Vec<_> = SplitOutside::new("x;\"unterminated;y", b';', false).collect();
        assert_eq!(v, ["x", "\"unterminated;y"]);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%61lice").as_deref(), Some("alice"));
        assert_eq!(percent_decode("user%20name").as_deref(), Some("user name"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
    }

    #[test]
    fn params() {
        let mut p = Vec::new();
        parse_params(
            " Expires = 60 ; +sip.instance=\"<urn:uuid:x;y>\";rport",
            &mut p,
        )
        .unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], ("expires".into(), Some("60".into())));
        assert_eq!(p[1].1.as_deref(), Some("\"<urn:uuid:x;y>\""));
        assert_eq!(p[2], ("rport".into(), None));
        assert!(parse_params("a b=1", &mut Vec::new()).is_none());
        assert!(parse_params("a=\"open", &mut Vec::new()).is_none());
    }

    #[test]
    fn line_scanning() {
        let data = b"0123456789abcdef\r\nxyz\n\tq\x01\r\nno end";
        assert_eq!(find_lf(data, 0), Some(17));
        assert_eq!(find_lf(data, 18), Some(21));
        assert_eq!(find_lf(data, 30), None);
        assert_eq!(find_lf(data, 999), None);
        assert_eq!(scan_line(data, 0), (Some(17), false));
        assert_eq!(scan_line(data, 18), (Some(21), false));
        assert_eq!(scan_line(data, 22), (Some(26), true));
        assert_eq!(scan_line(data, 28), (None, false));
        assert_eq!(scan_line(b"a\rb\n", 0), (Some(3), true));
        assert_eq!(
            scan_line(b"\"\\\x00\\\x07\\\x7f\"\r\n", 0),
            (Some(9), false)
        );
        assert_eq!(scan_line(b"\\\r\\\r\n", 0), (Some(4), true));
        assert_eq!(scan_line(b"abcdefgh\x7fijk\r", 0), (None, true));
        assert_eq!(scan_line(b"abcdefghijklmnop", 0), (None, false));
        assert_eq!(
            scan_line(b"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\n", 0),
            (Some(10), false)
        );
        for (i, _) in data.iter().enumerate() {
            let naive = data[i..].iter().position(|&b| b == b'\n').map(|p| p + i);
            assert_eq!(find_lf(data, i), naive);
            assert_eq!(scan_line(data, i).0, naive);
        }
    }

    #[test]
    fn line_breaks() {
        assert!(!has_line_break(b""));
        assert!(!has_line_break(
            b"plain text with\ttabs, long enough for words"
        ));
        for i in 0..20 {
            let mut v = vec![b'a'; 20];
            v[i] = b'\n';
            assert!(has_line_break(&v));
            v[i] = b'\r';
            assert!(has_line_break(&v));
        }
    }

    #[test]
    fn u32_digits() {
        assert_eq!(parse_u32("70"), Some(70));
        assert_eq!(parse_u32("+7"), None);
        assert_eq!(parse_u32(""), None);
        assert_eq!(parse_u32("4294967296"), None);
    }
}
