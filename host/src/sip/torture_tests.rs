//! Named torture cases for the SIP parser in the spirit of RFC 4475 (our own messages), plus round-trip and robustness tests.

use super::*;
use std::net::IpAddr;

/// Builds a message from lines joined with CRLF; `body` follows the blank line.
fn msg(lines: &[&str], body: &str) -> Vec<u8> {
    let mut s = lines.join("\r\n");
    s.push_str("\r\n\r\n");
    s.push_str(body);
    s.into_bytes()
}

fn parse_ok(buf: &[u8]) -> Message {
    Message::parse(buf)
        .unwrap_or_else(|e| panic!("parse failed: {e}\n{}", String::from_utf8_lossy(buf)))
}

/// parse -> to_bytes -> parse gives the same message.
fn assert_roundtrip(m: &Message) {
    let bytes = m.to_bytes();
    let again = Message::parse(&bytes)
        .unwrap_or_else(|e| panic!("reparse failed: {e}\n{}", String::from_utf8_lossy(&bytes)));
    let mut expected = m.clone();
    // to_bytes always writes exactly one Content-Length, last.
    expected.headers.remove("Content-Length");
    expected
        .headers
        .push("Content-Length", m.body.len().to_string());
    assert_eq!(again, expected);
}

const REGISTER_LINES: &[&str] = &[
    "REGISTER sip:example.com SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.44:5060;branch=z9hG4bK-reg-1;rport",
    "Max-Forwards: 70",
    "From: \"Carol\" <sip:carol@example.com>;tag=a73kszlfl",
    "To: \"Carol\" <sip:carol@example.com>",
    "Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.44",
    "CSeq: 1 REGISTER",
    "Contact: <sip:carol@192.0.2.44:5060;transport=udp>;expires=3600",
    "User-Agent: TortureUA/1.0",
    "Content-Length: 0",
];

fn register() -> Vec<u8> {
    msg(REGISTER_LINES, "")
}

/// REGISTER_LINES with the line starting with `prefix` removed.
fn register_without(prefix: &str) -> Vec<u8> {
    let lines: Vec<&str> = REGISTER_LINES
        .iter()
        .copied()
        .filter(|l| !l.starts_with(prefix))
        .collect();
    msg(&lines, "")
}

#[test]
fn valid_register_roundtrips() {
    let m = parse_ok(&register());
    assert_eq!(m.check_request(), Ok(()));
    assert_roundtrip(&m);
    assert_eq!(m.to_bytes(), register());
}

#[test]
fn ipv6_request_uri_and_via() {
    let buf = msg(
        &[
            "OPTIONS sip:[2001:db8::10]:5070 SIP/2.0",
            "Via: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bK-v6;received=2001:db8::9",
            "Max-Forwards: 70",
            "From: <sip:alice@[2001:db8::9]>;tag=v6",
            "To: <sip:[2001:db8::10]:5070>",
            "Call-ID: v6call@2001:db8::9",
            "CSeq: 8 OPTIONS",
        ],
        "",
    );
    let m = parse_ok(&buf);
    let uri = m.request_uri().unwrap();
    assert_eq!(
        uri.host,
        Host::Ip("2001:db8::10".parse::<IpAddr>().unwrap())
    );
    assert_eq!(uri.port, Some(5070));
    assert_eq!(uri.to_string(), "sip:[2001:db8::10]:5070");
    let via = m.top_via().unwrap();
    assert_eq!(via.host, Host::Ip("2001:db8::9".parse::<IpAddr>().unwrap()));
    assert_eq!(via.port, Some(5060));
    assert_eq!(via.param("received"), Some(Some("2001:db8::9")));
    assert_eq!(m.check_request(), Ok(()));
    assert_roundtrip(&m);
}

#[test]
fn compact_header_forms() {
    let buf = msg(
        &[
            "INVITE sip:bob@example.com SIP/2.0",
            "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-compact",
            "Max-Forwards: 70",
            "f: <sip:alice@example.com>;tag=c1",
            "t: <sip:bob@example.com>",
            "i: compact-1@192.0.2.1",
            "CSeq: 2 INVITE",
            "m: <sip:alice@192.0.2.1>",
            "c: application/sdp",
            "e: gzip",
            "k: path, outbound",
            "s: hi",
            "o: presence",
            "u: dialog",
            "r: <sip:carol@example.com>",
            "b: <sip:dave@example.com>",
            "x: 1800",
            "l: 4",
        ],
        "v=0\r\n",
    );
    let m = parse_ok(&buf);
    let names: Vec<&str> = m.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "Via",
            "Max-Forwards",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Contact",
            "Content-Type",
            "Content-Encoding",
            "Supported",
            "Subject",
            "Event",
            "Allow-Events",
            "Refer-To",
            "Referred-By",
            "Session-Expires",
            "Content-Length"
        ]
    );
    assert_eq!(m.call_id(), Some("compact-1@192.0.2.1"));
    assert_eq!(m.headers.get("i"), Some("compact-1@192.0.2.1"));
    assert_eq!(m.body, b"v=0\r");
    assert_eq!(m.check_request(), Ok(()));
    assert_roundtrip(&m);
}

#[test]
fn folded_header_lines() {
    let buf = msg(
        &[
            "OPTIONS sip:example.com SIP/2.0",
            "Via: SIP/2.0/UDP 192.0.2.3;branch=z9hG4bK-fold",
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>",
            "  ;tag=fold1",
            "To: <sip:example.com>",
            "Call-ID: fold@192.0.2.3",
            "CSeq:",
            "\t 9",
            "  OPTIONS",
            "Subject: this subject",
            "   is folded   ",
            "\t",
            "   twice",
        ],
        "",
    );
    let m = parse_ok(&buf);
    assert_eq!(
        m.headers.get("From"),
        Some("<sip:alice@example.com> ;tag=fold1")
    );
    assert_eq!(m.from().unwrap().tag(), Some("fold1"));
    assert_eq!(m.headers.get("CSeq"), Some("9 OPTIONS"));
    assert_eq!(
        m.headers.get("Subject"),
        Some("this subject is folded twice")
    );
    assert_eq!(m.check_request(), Ok(()));
    assert_roundtrip(&m);
}

#[test]
fn several_vias_in_one_line() {
    let buf = msg(
        &[
            "BYE sip:bob@192.0.2.2 SIP/2.0",
            "Via: SIP/2.0/TCP proxy2.example.net;branch=z9hG4bK-p2 , SIP/2.0/UDP proxy1.example.com:5080;branch=z9hG4bK-p1",
            "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-ua;received=192.0.2.100",
            "Max-Forwards: 68",
            "From: <sip:alice@example.com>;tag=1",
            "To: <sip:bob@example.com>;tag=2",
            "Call-ID: vias@192.0.2.1",
            "CSeq: 3 BYE",
        ],
        "",
    );
    let m = parse_ok(&buf);
    let vias = m.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].transport, "TCP");
    assert_eq!(vias[0].branch(), Some("z9hG4bK-p2"));
    assert_eq!(vias[1].port, Some(5080));
    assert_eq!(vias[2].param("received"), Some(Some("192.0.2.100")));
    assert_eq!(m.top_via().unwrap(), vias[0]);
    assert_eq!(m.headers.get_all("Via").count(), 2);
    // The response copies both Via lines unchanged and in order.
    let r = m.response(200, "OK", None);
    assert_eq!(
        r.headers.get_all("Via").collect::<Vec<_>>(),
        m.headers.get_all("Via").collect::<Vec<_>>()
    );
    assert_roundtrip(&m);
}

#[test]
fn whitespace_before_colon_and_mixed_case_names() {
    let buf = msg(
        &[
            "OPTIONS sip:example.com SIP/2.0",
            "vIA   : SIP/2.0/UDP 192.0.2.5;branch=z9hG4bK-ws",
            "MAX-FORWARDS\t: 70",
            "from: <sip:alice@example.com>;tag=w",
            "TO :<sip:example.com>",
            "CALL-ID:ws@192.0.2.5",
            "cseq :   10   OPTIONS   ",
            "www-authenticate: Digest realm=\"x\"",
            "X-cUsToM-Header :  kept spelling ",
        ],
        "",
    );
    let m = parse_ok(&buf);
    let names: Vec<&str> = m.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "Via",
            "Max-Forwards",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "WWW-Authenticate",
            "X-cUsToM-Header"
        ]
    );
    assert_eq!(m.headers.get("x-custom-header"), Some("kept spelling"));
    assert_eq!(m.cseq().unwrap().seq, 10);
    assert_eq!(m.check_request(), Ok(()));
    assert_roundtrip(&m);
}

#[test]
fn unknown_method() {
    let buf = msg(
        &[
            "NEWMETHOD sip:example.com SIP/2.0",
            "Via: SIP/2.0/UDP 192.0.2.6;branch=z9hG4bK-new",
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=n",
            "To: <sip:example.com>",
            "Call-ID: newmethod@192.0.2.6",
            "CSeq: 1 NEWMETHOD",
        ],
        "",
    );
    let m = parse_ok(&buf);
    assert_eq!(m.method(), Some(&Method::Other("NEWMETHOD".into())));
    assert_eq!(m.check_request(), Ok(()));
    assert_roundtrip(&m);
}

#[test]
fn escaped_user_parts() {
    let buf = msg(
        &[
            "INVITE sip:%61lice@example.com SIP/2.0",
            "Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK-esc",
            "Max-Forwards: 70",
            "From: <sip:user%20name@example.com>;tag=e",
            "To: <sip:%61lice@example.com>",
            "Call-ID: esc@192.0.2.7",
            "CSeq: 1 INVITE",
        ],
        "",
    );
    let m = parse_ok(&buf);
    assert_eq!(m.request_uri().unwrap().user.as_deref(), Some("alice"));
    let from = m.from().unwrap();
    assert_eq!(from.uri.user.as_deref(), Some("user name"));
    assert_eq!(from.uri.to_string(), "sip:user%20name@example.com");
    assert_roundtrip(&m);
    // Re-serialised Request-URI is the unescaped-equivalent form (RFC 3261 19.1.4).
    assert!(m
        .to_bytes()
        .starts_with(b"INVITE sip:alice@example.com SIP/2.0\r\n"));
}

#[test]
fn content_length_larger_than_body() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("Content-Length"));
    lines.push("Content-Length: 50");
    let e = Message::parse(&msg(&lines, "short body")).unwrap_err();
    assert_eq!(e.reason, "Content-Length larger than body");
    let p = e.partial.expect("answerable");
    assert!(p.can_answer());
    assert_eq!(p.body, b"short body");
    let r = p.response(400, &e.reason, Some("t1"));
    assert_eq!(r.code(), Some(400));
    assert_eq!(r.call_id(), Some("1j9FpLxk3uxtm8tn@192.0.2.44"));
}

#[test]
fn content_length_smaller_than_body() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("Content-Length"));
    lines.push("Content-Length: 4");
    let m = parse_ok(&msg(&lines, "abcdEXTRA-BYTES"));
    assert_eq!(m.body, b"abcd");
    assert_roundtrip(&m);
}

#[test]
fn content_length_missing_takes_rest() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("Content-Length"));
    let m = parse_ok(&msg(&lines, "whole\r\nrest"));
    assert_eq!(m.body, b"whole\r\nrest");
    assert_roundtrip(&m);
}

#[test]
fn content_length_non_numeric() {
    for bad in [
        "Content-Length: five",
        "Content-Length: -1",
        "Content-Length: 1.0",
        "l: 0x10",
        "Content-Length:",
    ] {
        let mut lines = REGISTER_LINES.to_vec();
        lines.retain(|l| !l.starts_with("Content-Length"));
        lines.push(bad);
        let e = Message::parse(&msg(&lines, "")).unwrap_err();
        assert_eq!(e.reason, "Bad Content-Length", "{bad}");
        assert!(e.partial.is_some_and(|p| p.can_answer()));
    }
}

#[test]
fn content_length_conflicting() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.push("l: 3");
    let e = Message::parse(&msg(&lines, "abc")).unwrap_err();
    assert_eq!(e.reason, "Bad Content-Length");
    // Repeated but equal values are fine.
    let mut lines = REGISTER_LINES.to_vec();
    lines.push("l: 0");
    parse_ok(&msg(&lines, ""));
}

#[test]
fn content_length_huge() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("Content-Length"));
    lines.push("Content-Length: 99999999999999999999999999");
    let e = Message::parse(&msg(&lines, "x")).unwrap_err();
    assert_eq!(e.reason, "Content-Length larger than body");
    assert!(e.partial.is_some());
}

#[test]
fn missing_required_headers() {
    for (prefix, reason) in [
        ("Call-ID", "Missing Call-ID"),
        ("CSeq", "Missing CSeq"),
        ("From", "Missing From"),
        ("To", "Missing To"),
        ("Via", "Missing Via"),
    ] {
        let m = parse_ok(&register_without(prefix));
        assert_eq!(m.check_request(), Err(reason.to_string()), "{prefix}");
        assert!(!m.can_answer(), "{prefix}");
    }
    // Max-Forwards is optional for check_request.
    let m = parse_ok(&register_without("Max-Forwards"));
    assert_eq!(m.check_request(), Ok(()));
    assert!(m.can_answer());
}

#[test]
fn malformed_but_present_headers_are_answerable() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("Via"));
    lines.insert(1, "Via: SIP/2.0/UDP");
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(m.check_request(), Err("Malformed Via".into()));
    assert!(m.can_answer());
    let r = m.response(400, "Malformed Via", None);
    assert_eq!(r.headers.get("Via"), Some("SIP/2.0/UDP"));
}

#[test]
fn cseq_method_mismatch() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("CSeq"));
    lines.push("CSeq: 1 INVITE");
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(
        m.check_request(),
        Err("CSeq method does not match request".into())
    );
    // Case matters: methods are case-sensitive (RFC 3261 7.1).
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("CSeq"));
    lines.push("CSeq: 1 register");
    assert_eq!(
        parse_ok(&msg(&lines, "")).check_request(),
        Err("CSeq method does not match request".into())
    );
}

#[test]
fn cseq_number_overflow() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("CSeq"));
    lines.push("CSeq: 36893488147419103232 REGISTER");
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(m.cseq().unwrap_err().reason, "Malformed CSeq");
    assert_eq!(m.check_request(), Err("Malformed CSeq".into()));
    assert!(m.can_answer());
}

#[test]
fn max_forwards_non_numeric() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("Max-Forwards"));
    lines.push("Max-Forwards: seventy");
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(m.check_request(), Err("Malformed Max-Forwards".into()));
}

#[test]
fn binary_garbage() {
    let garbage: Vec<u8> = (0u8..=255).rev().cycle().take(700).collect();
    let e = Message::parse(&garbage).unwrap_err();
    assert!(e.partial.is_none());
    let e = Message::parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").unwrap_err();
    assert_eq!(e.reason, "Bad start line");
    assert!(e.partial.is_none());
    // A valid start line followed by binary junk in the header block.
    let mut buf = b"REGISTER sip:example.com SIP/2.0\r\n".to_vec();
    buf.extend_from_slice(b"\x00\xff\xfe\x01\r\n\r\n");
    let e = Message::parse(&buf).unwrap_err();
    assert_eq!(e.reason, "Malformed header line");
    assert!(e.partial.is_none());
}

#[test]
fn empty_input() {
    assert_eq!(Message::parse(b"").unwrap_err().reason, "Empty message");
    assert_eq!(
        Message::parse(b"\r\n\r\n\n").unwrap_err().reason,
        "Empty message"
    );
    assert!(Message::parse(b"").unwrap_err().partial.is_none());
}

#[test]
fn truncated_message() {
    let full = register();
    // Cut inside the final blank line: no end of headers.
    let cut = &full[..full.len() - 2];
    let e = Message::parse(cut).unwrap_err();
    assert_eq!(e.reason, "Missing end of headers");
    assert!(e.partial.is_none());
    let e = Message::parse(b"REGISTER sip:example.com SIP/2.0").unwrap_err();
    assert_eq!(e.reason, "Missing end of headers");
    assert!(e.partial.is_none());
}

#[test]
fn lf_only_line_endings() {
    let text = String::from_utf8(register()).unwrap().replace("\r\n", "\n");
    let m = parse_ok(text.as_bytes());
    assert_eq!(m, parse_ok(&register()));
    assert_eq!(m.check_request(), Ok(()));
    // Mixed endings too.
    let mixed = String::from_utf8(register())
        .unwrap()
        .replacen("\r\n", "\n", 3);
    assert_eq!(parse_ok(mixed.as_bytes()), m);
}

#[test]
fn leading_crlfs_are_ignored() {
    let mut buf = b"\r\n\r\n\r\n".to_vec();
    buf.extend_from_slice(&register());
    assert_eq!(parse_ok(&buf), parse_ok(&register()));
}

#[test]
fn long_header_values() {
    let long_value = "x".repeat(20_000);
    let long_param = format!(
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK{}",
        "a".repeat(5000)
    );
    let subject = format!("Subject: {long_value}");
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("Via"));
    lines.insert(1, &long_param);
    lines.push(&subject);
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(m.headers.get("Subject").map(str::len), Some(20_000));
    assert_eq!(m.top_via().unwrap().branch().map(str::len), Some(5007));
    assert_roundtrip(&m);
}

#[test]
fn contact_list_with_quoted_display_names() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("Contact"));
    lines.push(r#"Contact: "Smith, Jane \"JJ\"" <sip:jane@192.0.2.20>;q=0.7, "Comma, Inc." <sip:jane@192.0.2.21;transport=tcp>;expires=60"#);
    lines.push(r#"m: Bare <sip:jane@[2001:db8::20]>, sip:jane@host.example.com;expires=10"#);
    let m = parse_ok(&msg(&lines, ""));
    let contacts = m.contacts().unwrap();
    assert_eq!(contacts.len(), 4);
    let addrs: Vec<&NameAddr> = contacts
        .iter()
        .map(|c| match c {
            Contact::Addr(a) => a,
            Contact::Star => panic!("unexpected *"),
        })
        .collect();
    assert_eq!(addrs[0].display.as_deref(), Some(r#"Smith, Jane "JJ""#));
    assert_eq!(addrs[0].param("q"), Some(Some("0.7")));
    assert_eq!(addrs[1].display.as_deref(), Some("Comma, Inc."));
    assert_eq!(addrs[1].uri.param("transport"), Some(Some("tcp")));
    assert_eq!(addrs[1].param("expires"), Some(Some("60")));
    assert_eq!(addrs[2].display.as_deref(), Some("Bare"));
    assert_eq!(addrs[3].param("expires"), Some(Some("10")));
    assert!(addrs[3].uri.params.is_empty());
    // Each contact re-serialises and parses back to the same value.
    for c in &contacts {
        assert_eq!(
            parse_contacts([c.to_string().as_str()].into_iter()).unwrap(),
            std::slice::from_ref(c)
        );
    }
    assert_roundtrip(&m);
}

#[test]
fn contact_star() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("Contact"));
    lines.push("Contact: *");
    lines.push("Expires: 0");
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(m.contacts().unwrap(), [Contact::Star]);
    assert_eq!(m.expires().unwrap(), Some(0));
}

#[test]
fn contact_outbound_params() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("Contact"));
    lines.push(r#"Contact: <sip:carol@192.0.2.44:5060;ob>;expires=600;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1"#);
    let m = parse_ok(&msg(&lines, ""));
    let contacts = m.contacts().unwrap();
    let Contact::Addr(a) = &contacts[0] else {
        panic!("expected an address");
    };
    assert_eq!(a.param("expires"), Some(Some("600")));
    assert_eq!(a.param("reg-id"), Some(Some("1")));
    let inst = a.param("+sip.instance").flatten().unwrap();
    assert_eq!(inst, "\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"");
    assert_eq!(
        unquote(inst),
        "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    );
    assert_eq!(a.uri.param("ob"), Some(None));
    assert_roundtrip(&m);
}

#[test]
fn response_start_line() {
    let buf = msg(
        &[
            "SIP/2.0 401 Unauthorized  Really ",
            "Via: SIP/2.0/UDP 192.0.2.44:5060;branch=z9hG4bK-reg-1;rport=5060;received=198.51.100.7",
            "From: <sip:carol@example.com>;tag=a73kszlfl",
            "To: <sip:carol@example.com>;tag=srv",
            "Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.44",
            "CSeq: 1 REGISTER",
            "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"abc\", algorithm=MD5",
            "Content-Length: 0",
        ],
        "",
    );
    let m = parse_ok(&buf);
    assert_eq!(
        m.start,
        StartLine::Response {
            code: 401,
            reason: "Unauthorized  Really".into()
        }
    );
    assert!(!m.is_request());
    assert!(!m.can_answer());
    assert_eq!(m.cseq().unwrap().method, Method::Register);
    // Responses are never partial.
    let mut lines = String::from_utf8(buf).unwrap();
    lines = lines.replace("Content-Length: 0", "Content-Length: 10");
    assert!(Message::parse(lines.as_bytes())
        .unwrap_err()
        .partial
        .is_none());
    assert_roundtrip(&m);
}

#[test]
fn line_without_colon() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.insert(3, "This line has no colon");
    let e = Message::parse(&msg(&lines, "")).unwrap_err();
    assert_eq!(e.reason, "Malformed header line");
    let p = e.partial.expect("required headers present -> answerable");
    assert!(p.headers.iter().all(|(n, _)| !n.starts_with("This")));
    assert_eq!(p.headers.len(), REGISTER_LINES.len() - 1);
    // Without the required headers there is nothing to answer.
    let e =
        Message::parse(b"REGISTER sip:example.com SIP/2.0\r\nno colon here\r\n\r\n").unwrap_err();
    assert_eq!(e.reason, "Malformed header line");
    assert!(e.partial.is_none());
    // A continuation line before any header is malformed too.
    let e = Message::parse(b"OPTIONS sip:example.com SIP/2.0\r\n  folded: nothing\r\n\r\n")
        .unwrap_err();
    assert_eq!(e.reason, "Malformed header line");
}

#[test]
fn header_name_with_space_is_malformed() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.push("Bad Name: value");
    let e = Message::parse(&msg(&lines, "")).unwrap_err();
    assert_eq!(e.reason, "Malformed header line");
    assert!(e.partial.is_some());
}

#[test]
fn bad_request_uri_answerable() {
    let mut lines = REGISTER_LINES.to_vec();
    lines[0] = "REGISTER sip:exa mple.com SIP/2.0";
    let e = Message::parse(&msg(&lines, "")).unwrap_err();
    assert_eq!(e.reason, "Bad Request-URI");
    assert!(e.partial.is_some());
    lines[0] = "REGISTER sip:[2001:db8::1 SIP/2.0";
    let e = Message::parse(&msg(&lines, "")).unwrap_err();
    assert_eq!(e.reason, "Bad Request-URI");
    assert!(e.partial.is_some());
}

#[test]
fn unsupported_uri_scheme_parses() {
    let mut lines = REGISTER_LINES.to_vec();
    lines[0] = "OPTIONS mailto:someone@example.com SIP/2.0";
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(
        m.request_uri().unwrap().scheme,
        Scheme::Other("mailto".into())
    );
    lines[0] = "INVITE tel:+1-201-555-0123 SIP/2.0";
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(m.request_uri().unwrap().scheme, Scheme::Tel);
    assert_roundtrip(&m);
}

#[test]
fn sip_version_other_than_2_0() {
    let mut lines = REGISTER_LINES.to_vec();
    lines[0] = "REGISTER sip:example.com SIP/7.0";
    let e = Message::parse(&msg(&lines, "")).unwrap_err();
    assert_eq!(e.reason, "Unsupported SIP version");
    assert!(e.partial.is_none());
}

#[test]
fn utf8_display_name_and_reason() {
    let buf = msg(
        &[
            "MESSAGE sip:bob@example.com SIP/2.0",
            "Via: SIP/2.0/TCP 192.0.2.9;branch=z9hG4bK-u",
            "Max-Forwards: 70",
            "From: \"J\u{f6}rg \u{1F600}\" <sip:joerg@example.com>;tag=u",
            "To: <sip:bob@example.com>",
            "Call-ID: utf8@192.0.2.9",
            "CSeq: 1 MESSAGE",
            "Content-Type: text/plain;charset=utf-8",
        ],
        "gr\u{fc}\u{df}e",
    );
    let m = parse_ok(&buf);
    assert_eq!(
        m.from().unwrap().display.as_deref(),
        Some("J\u{f6}rg \u{1F600}")
    );
    assert_eq!(m.body, "gr\u{fc}\u{df}e".as_bytes());
    assert_roundtrip(&m);
}

#[test]
fn body_may_hold_any_bytes() {
    let mut buf = msg(
        &[
            "MESSAGE sip:bob@example.com SIP/2.0",
            "Via: SIP/2.0/TCP 192.0.2.9;branch=z9hG4bK-b",
            "From: <sip:a@example.com>;tag=b",
            "To: <sip:bob@example.com>",
            "Call-ID: bin@192.0.2.9",
            "CSeq: 1 MESSAGE",
            "Content-Length: 6",
        ],
        "",
    );
    buf.extend_from_slice(b"\0\r\n\xff\n\x01");
    let m = parse_ok(&buf);
    assert_eq!(m.body, b"\0\r\n\xff\n\x01");
    assert_roundtrip(&m);
}

#[test]
fn bare_cr_in_header_rejected() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.push("X-Inject: a\rInjected: b");
    let e = Message::parse(&msg(&lines, "")).unwrap_err();
    assert_eq!(e.reason, "Malformed header line");
    let p = e.partial.unwrap();
    assert!(p.headers.get("X-Inject").is_none());
}

#[test]
fn duplicate_single_value_headers() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.push("CSeq: 2 REGISTER");
    assert_eq!(
        parse_ok(&msg(&lines, "")).check_request(),
        Err("Multiple CSeq headers".into())
    );
}

#[test]
fn via_with_spaces_in_sent_protocol() {
    let mut lines = REGISTER_LINES.to_vec();
    lines[1] = "Via  :  SIP  /  2.0  /  UDP   192.0.2.44 : 5060 ; branch = z9hG4bK-sp ; rport";
    let m = parse_ok(&msg(&lines, ""));
    let v = m.top_via().unwrap();
    assert_eq!(v.protocol, "SIP/2.0");
    assert_eq!(v.transport, "UDP");
    assert_eq!(v.port, Some(5060));
    assert_eq!(v.branch(), Some("z9hG4bK-sp"));
    assert_eq!(
        v.to_string(),
        "SIP/2.0/UDP 192.0.2.44:5060;branch=z9hG4bK-sp;rport"
    );
}

#[test]
fn to_tag_added_only_when_absent() {
    let m = parse_ok(&register());
    let r = m.response(200, "OK", Some("abc"));
    assert_eq!(
        r.headers.get("To"),
        Some("\"Carol\" <sip:carol@example.com>;tag=abc")
    );
    let r2 = parse_ok(&r.to_bytes()).response(200, "OK", Some("zzz"));
    assert_eq!(r2.to().unwrap().tag(), Some("abc"));
}

#[test]
fn framing_a_stream_of_messages_and_pings() {
    let one = register();
    let mut stream = b"\r\n\r\n".to_vec();
    stream.extend_from_slice(&one);
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(&one);
    let mut framer = Framer::new();
    let mut pos = 0;
    let mut seen = Vec::new();
    while pos < stream.len() {
        match framer.frame(&stream[pos..], 65536) {
            Frame::KeepAlive(n) => {
                seen.push(format!("ka{n}"));
                pos += n;
            }
            Frame::Message(n) => {
                let m = parse_ok(&stream[pos..pos + n]);
                assert_eq!(m.check_request(), Ok(()));
                seen.push("msg".into());
                pos += n;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ka4", "msg", "ka2", "msg"]);
}

/// xorshift64 (Marsaglia), enough to scramble bytes deterministically.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Runs every parser entry point on `buf`; only checks nothing panics.
fn exercise(buf: &[u8]) {
    let _ = frame(buf, 4096);
    match Message::parse(buf) {
        Ok(m) => {
            let _ = m.check_request();
            let _ = m.vias();
            let _ = m.contacts();
            let _ = m.from();
            let _ = m.to();
            let _ = m.expires();
            let _ = m.can_answer();
            let bytes = m.to_bytes();
            // What we write must parse again.
            let again = Message::parse(&bytes).unwrap_or_else(|e| {
                panic!("reparse failed: {e}\n{}", String::from_utf8_lossy(&bytes))
            });
            assert_eq!(again.start, m.start);
            let _ = m.response(400, "Bad Request", Some("x"));
        }
        Err(e) => {
            if let Some(p) = e.partial {
                assert!(p.can_answer());
                let _ = p.response(400, &e.reason, Some("x")).to_bytes();
            }
        }
    }
}

#[test]
fn robustness_prefixes_and_mutations() {
    let mut base = register();
    base.extend_from_slice(b"");
    let mut lines = REGISTER_LINES.to_vec();
    lines
        .push("Contact: \"A, \\\"B\" <sip:x@[2001:db8::1]:5060;ob>;+sip.instance=\"<urn:uuid:1>\"");
    lines.push("v: SIP / 2.0 / TCP [::1] ; branch=z9hG4bKx, SIP/2.0/UDP h");
    let rich = msg(&lines, "");
    for b in [&base, &rich] {
        for cut in 0..=b.len() {
            exercise(&b[..cut]);
        }
    }
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let interesting = b"\r\n:;,<>\"\\[]@% \t\x00\xff=?/";
    for i in 0..6000 {
        let mut m = if i % 2 == 0 {
            base.clone()
        } else {
            rich.clone()
        };
        let edits = 1 + (rng.next() % 8) as usize;
        for _ in 0..edits {
            if m.is_empty() {
                break;
            }
            let pos = (rng.next() % m.len() as u64) as usize;
            match rng.next() % 4 {
                0 => m[pos] = rng.next() as u8,
                1 => m[pos] = interesting[(rng.next() % interesting.len() as u64) as usize],
                2 => {
                    m.remove(pos);
                }
                _ => m.insert(
                    pos,
                    interesting[(rng.next() % interesting.len() as u64) as usize],
                ),
            }
        }
        exercise(&m);
    }
}

#[test]
fn tortuous_but_valid_request() {
    // Our own message mixing many legal oddities at once (in the spirit of RFC 4475 3.1.1.1).
    let buf = msg(
        &[
            "INVITE sip:dana@tortuous.example.com;oddparam SIP/2.0",
            "tO :",
            " sip:dana@tortuous.example.com ;   tag    = 8813ab",
            "FROM   : \"D. Jones \\\\\\\"\" <sip:djones@example.org>",
            "  ;",
            "  tag = 33kk",
            "mAx-fOrWaRdS: 0069",
            "i: tort.9kd83@192.0.2.50",
            "Content-Length   : 4",
            "cseq: 0011",
            "   INVITE",
            "Via  : SIP  /   2.0",
            " /UDP",
            "    192.0.2.50;branch=z9hG4bK-t1",
            "s :",
            "X-Weird-Header:   first part",
            " second part",
            "X-Only-Separators: ;;,,;;,;",
            "Route:",
            " <sip:edge.example.com;lr;unknown=val;flag>",
            "v:  SIP  / 2.0  / TCP     relay.example.com   ;",
            "  branch  =   z9hG4bK-t2  ,",
            " SIP  /    2.0   / UDP  192.0.2.51   ; branch=",
            " z9hG4bK-t3",
            "m:\"Quoted \\\"\\\"\" <sip:djones@192.0.2.50> ; fresh =",
            " value ;",
            " flagged ; q = 0.5",
        ],
        "body",
    );
    let m = parse_ok(&buf);
    assert_eq!(m.check_request(), Ok(()));
    assert_eq!(m.to().unwrap().tag(), Some("8813ab"));
    let from = m.from().unwrap();
    assert_eq!(from.display.as_deref(), Some("D. Jones \\\""));
    assert_eq!(from.tag(), Some("33kk"));
    assert_eq!(m.max_forwards().unwrap(), Some(69));
    assert_eq!(
        m.cseq().unwrap(),
        CSeq {
            seq: 11,
            method: Method::Invite
        }
    );
    let vias = m.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].branch(), Some("z9hG4bK-t1"));
    assert_eq!(vias[1].host, Host::Domain("relay.example.com".into()));
    assert_eq!(vias[2].branch(), Some("z9hG4bK-t3"));
    assert_eq!(m.headers.get("Subject"), Some(""));
    assert_eq!(
        m.headers.get("x-weird-header"),
        Some("first part second part")
    );
    let contacts = m.contacts().unwrap();
    let Contact::Addr(c) = &contacts[0] else {
        panic!("expected an address")
    };
    assert_eq!(c.display.as_deref(), Some("Quoted \"\""));
    assert_eq!(c.param("fresh"), Some(Some("value")));
    assert_eq!(c.param("flagged"), Some(None));
    assert_eq!(c.param("q"), Some(Some("0.5")));
    assert_eq!(m.body, b"body");
    assert_roundtrip(&m);
}

#[test]
fn wide_range_of_valid_characters() {
    // Every token character in the method and header names, every user/password
    // character in the Request-URI, quoted-pair escaped controls in a display name.
    let method = "!odd-Method0123456789_*+`.%indeed'~";
    let first = format!(
        "{method} sip:1_odd.URI~(yes!)&isn't+it$/odd?,/;;*:&pw+has=1,odd!*pa$s~w_too.(ok)@example.com SIP/2.0"
    );
    let cseq = format!("CSeq: 139122385 {method}");
    let mut lines = vec![
        first.as_str(),
        "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~",
        "To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_odd.URI~(yes!)&isn't+it$/odd?,/;;*@example.com>",
        "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.",
        "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        "Max-Forwards: 255",
        "extensionHeader-!.%*+_`'~: \u{ef}\u{bb}\u{bf}\u{5927}\u{505c}\u{96fb}",
    ];
    lines.push(&cseq);
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(m.method(), Some(&Method::Other(method.into())));
    let uri = m.request_uri().unwrap();
    assert_eq!(
        uri.user.as_deref(),
        Some("1_odd.URI~(yes!)&isn't+it$/odd?,/;;*")
    );
    assert_eq!(
        uri.password.as_deref(),
        Some("&pw+has=1,odd!*pa$s~w_too.(ok)")
    );
    assert_eq!(
        m.to().unwrap().display.as_deref(),
        Some("BEL:\u{7} NUL:\u{0} DEL:\u{7f}")
    );
    let from = m.from().unwrap();
    assert_eq!(
        from.display.as_deref(),
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(m.check_request(), Ok(()));
    assert_roundtrip(&m);
    // A control that is not escaped is still rejected.
    let bad = msg(&[first.as_str(), "Subject: raw\x07bell"], "");
    assert_eq!(
        Message::parse(&bad).unwrap_err().reason,
        "Malformed header line"
    );
}

#[test]
fn percent_that_is_not_an_escape() {
    // '%' is a token character: no unescaping in methods, Call-IDs or parameters.
    let buf = msg(
        &[
            "RE%47IST%45R sip:registrar.example.com SIP/2.0",
            "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK-pct",
            "To: \"%Z%45\" <sip:resource@example.com>",
            "From: \"%Z%45\" <sip:resource@example.com>;tag=f%zz",
            "Call-ID: esc%zz01@192.0.2.5",
            "CSeq: 14398234 RE%47IST%45R",
            "Max-Forwards: 70",
        ],
        "",
    );
    let m = parse_ok(&buf);
    assert_eq!(m.method(), Some(&Method::Other("RE%47IST%45R".into())));
    assert_eq!(m.check_request(), Ok(()));
    assert_eq!(m.to().unwrap().display.as_deref(), Some("%Z%45"));
    assert_eq!(m.from().unwrap().tag(), Some("f%zz"));
}

#[test]
fn overlarge_scalar_fields() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("Max-Forwards"));
    lines.push("Max-Forwards: 300");
    lines.push("Expires: 4294967297");
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(m.check_request(), Err("Malformed Max-Forwards".into()));
    // Expires beyond 2^32-1 saturates (RFC 4475 3.1.2.4 allows a default instead).
    assert_eq!(m.expires().unwrap(), Some(u32::MAX));
}

#[test]
fn bracketed_request_uri_and_embedded_lws() {
    for first in [
        "REGISTER <sip:example.com> SIP/2.0",
        "REGISTER sip:example.com; lr SIP/2.0",
    ] {
        let mut lines = REGISTER_LINES.to_vec();
        lines[0] = first;
        let e = Message::parse(&msg(&lines, "")).unwrap_err();
        assert_eq!(e.reason, "Bad Request-URI", "{first}");
        assert!(e.partial.is_some());
    }
}

#[test]
fn name_addr_with_unbracketed_question_mark() {
    // RFC 3261 20.10: an addr-spec with `?` must be in <>.
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("From"));
    lines.push("From: sip:carol@example.com?Subject=hi;tag=1");
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(m.check_request(), Err("Malformed From".into()));
}

#[test]
fn via_with_empty_params_and_list_items() {
    let mut lines = REGISTER_LINES.to_vec();
    lines[1] = "Via: SIP/2.0/UDP 192.0.2.44;;,;,,";
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(m.check_request(), Err("Malformed Via".into()));
}

#[test]
fn escaped_separators_in_user() {
    let mut lines = REGISTER_LINES.to_vec();
    lines.retain(|l| !l.starts_with("Contact"));
    lines.push("Contact: <sip:user%3Aname%40host@192.0.2.44>");
    lines[0] = "REGISTER sip:sips%3Auser%40example.com@example.net SIP/2.0";
    let m = parse_ok(&msg(&lines, ""));
    assert_eq!(
        m.request_uri().unwrap().user.as_deref(),
        Some("sips:user@example.com")
    );
    let Contact::Addr(c) = &m.contacts().unwrap()[0] else {
        panic!("expected an address")
    };
    assert_eq!(c.uri.user.as_deref(), Some("user:name@host"));
    assert_eq!(c.uri.to_string(), "sip:user%3Aname%40host@192.0.2.44");
    assert_roundtrip(&m);
}

#[test]
fn framer_agrees_with_stateless_frame() {
    let mut rng = XorShift(0xC0FF_EE00_1234_5678);
    let mut stream = b"\r\n\r\n".to_vec();
    stream.extend_from_slice(&register());
    let mut with_body = REGISTER_LINES.to_vec();
    with_body.retain(|l| !l.starts_with("Content-Length"));
    with_body.push("l: 7");
    stream.extend_from_slice(&msg(&with_body, "1234567"));
    for _ in 0..2000 {
        let mut buf = stream.clone();
        for _ in 0..(rng.next() % 4) {
            let pos = (rng.next() % buf.len() as u64) as usize;
            buf[pos] = b"\r\n:l0 9x"[(rng.next() % 8) as usize];
        }
        let max_len = 200 + (rng.next() % 1000) as usize;
        let mut framer = Framer::new();
        let mut start = 0;
        let mut end = 0;
        while start < buf.len() && end < buf.len() {
            end = (end + 1 + (rng.next() % 40) as usize).min(buf.len());
            let window = &buf[start..end];
            let got = framer.frame(window, max_len);
            assert_eq!(got, frame(window, max_len));
            match got {
                Frame::Incomplete => {}
                Frame::KeepAlive(n) | Frame::Message(n) => {
                    assert!(n > 0 && n <= window.len());
                    start += n;
                    end = start;
                }
                Frame::Invalid(_) => break,
            }
        }
    }
}
