//! Bad input over real sockets: answered 400 where a response can be built,
//! dropped and counted otherwise, never a crash. TCP framing and limits.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

fn options(local: std::net::SocketAddr, branch: &str) -> String {
    format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=9\r\nTo: <sip:127.0.0.1>\r\n\
         Call-ID: {branch}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The gateway still answers a good request.
fn still_serving(phone: &Phone, tag: &str) {
    let ok = phone.request(&options(phone.local(), tag));
    assert_eq!(ok.code(), Some(200));
}

#[test]
fn malformed_requests_get_400_naming_the_problem() {
    let gw = Gateway::start("127.0.0.1", "");
    let phone = Phone::new("127.0.0.1", gw.addr());
    let local = phone.local();
    let cases: Vec<(String, &str)> = vec![
        (
            options(local, "cl1").replace("Content-Length: 0", "Content-Length: 50"),
            "Content-Length",
        ),
        (
            options(local, "cl2").replace("Content-Length: 0", "Content-Length: abc"),
            "Content-Length",
        ),
        (
            options(local, "cseq").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"),
            "CSeq",
        ),
        (
            options(local, "mf").replace("Max-Forwards: 70", "Max-Forwards: many"),
            "Max-Forwards",
        ),
    ];
    for (text, word) in cases {
        let resp = phone.request(&text);
        assert_eq!(resp.code(), Some(400), "{text}");
        match &resp.start {
            sipfence::sip::StartLine::Response { reason, .. } => {
                assert!(
                    reason.contains(word),
                    "reason {reason:?} should name {word}"
                )
            }
            _ => unreachable!(),
        }
    }
    still_serving(&phone, "after400");
}

#[test]
fn unanswerable_input_is_dropped_and_counted() {
    let gw = Gateway::start_full("127.0.0.1", "max_message_bytes = 4096", "");
    let phone = Phone::new("127.0.0.1", gw.addr());
    let local = phone.local();
    let full = options(local, "trunc");
    let drops: Vec<Vec<u8>> = vec![
        // Truncated: no end of headers.
        full.as_bytes()[..60].to_vec(),
        // Binary garbage.
        (0..300u32).map(|i| (i * 7919 % 251) as u8).collect(),
        // Missing Via: no way to address a response.
        options(local, "novia")
            .replace(&format!("Via: SIP/2.0/UDP {local};branch=z9hG4bKnovia\r\n"), "")
            .into_bytes(),
        // Missing Call-ID: a response must carry it (RFC 3261 8.2.6.2).
        options(local, "cid").replace("Call-ID: cid@test\r\n", "").into_bytes(),
        // Missing From and To.
        options(local, "noft")
            .replace("From: <sip:probe@127.0.0.1>;tag=9\r\n", "")
            .replace("To: <sip:127.0.0.1>\r\n", "")
            .into_bytes(),
        // Oversized datagram.
        {
            let mut big = options(local, "big").replace("Content-Length: 0\r\n\r\n", "");
            big.push_str(&format!("X-Pad: {}\r\nContent-Length: 0\r\n\r\n", "a".repeat(5_000)));
            big.into_bytes()
        },
        // A response: the gateway sends no requests, so it expects none.
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
    ];
    for bytes in &drops {
        phone.send_raw(bytes);
        assert!(
            phone.recv_within(Duration::from_millis(300)).is_none(),
            "no answer expected to {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        );
    }
    still_serving(&phone, "afterdrops");
    let stats = gw.stats();
    let dropped = stats["dropped_unparseable"].as_u64().unwrap()
        + stats["dropped_oversized"].as_u64().unwrap()
        + stats["dropped_responses"].as_u64().unwrap();
    assert_eq!(dropped, drops.len() as u64, "{stats}");
    assert!(stats["dropped_oversized"].as_u64().unwrap() >= 1);
}

#[test]
fn torture_messages_from_the_wire_are_answered() {
    let gw = Gateway::start("127.0.0.1", "");
    let phone = Phone::new("127.0.0.1", gw.addr());
    let local = phone.local();
    // Compact forms, folded header, several Vias on one line, odd spacing.
    let text = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\n\
         v: SIP/2.0/UDP {local};branch=z9hG4bKtort1;rport, SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKinner\r\n\
         Max-Forwards : 70\r\n\
         f: <sip:probe@127.0.0.1>\r\n ;tag=9\r\n\
         t: <sip:127.0.0.1>\r\n\
         i: tort1@test\r\n\
         CSeq:1 OPTIONS\r\n\
         l: 0\r\n\r\n"
    );
    let resp = phone.request(&text);
    assert_eq!(resp.code(), Some(200));
    let vias = resp.vias().unwrap();
    assert_eq!(vias.len(), 2, "both Vias come back in order");
    assert_eq!(vias[0].branch(), Some("z9hG4bKtort1"));
    assert_eq!(
        vias[0].param("rport"),
        Some(Some(local.port().to_string().as_str()))
    );
    assert_eq!(resp.call_id(), Some("tort1@test"));
}

#[test]
fn ipv6_requests_are_served() {
    let gw = Gateway::start("[::1]", "");
    let phone = Phone::new("[::1]", gw.addr());
    let local = phone.local();
    let text = format!(
        "OPTIONS sip:[::1]:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKv6\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@[::1]>;tag=9\r\nTo: <sip:[::1]>\r\n\
         Call-ID: v6@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        port = gw.addr().port()
    );
    assert_eq!(phone.request(&text).code(), Some(200));
}

#[test]
fn tcp_frames_by_content_length_across_partial_writes() {
    let gw = Gateway::start("127.0.0.1", "");
    let mut stream = tcp_connect("127.0.0.1", gw.addr());
    let local = stream.local_addr().unwrap();
    let one = options(local, "tcp1").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let with_body = options(local, "tcp2")
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        .replace(
            "Content-Length: 0",
            "Content-Type: text/plain\r\nContent-Length: 5",
        )
        + "hello";
    let three = options(local, "tcp3").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    // Two messages in one write, then a third byte by byte.
    stream
        .write_all(format!("{one}{with_body}").as_bytes())
        .unwrap();
    for b in three.as_bytes() {
        stream.write_all(&[*b]).unwrap();
        stream.flush().unwrap();
    }
    let mut branches = Vec::new();
    let mut buf = Vec::new();
    for _ in 0..3 {
        let m = read_stream_message(&mut stream, &mut buf);
        assert_eq!(m.code(), Some(200));
        branches.push(m.top_via().unwrap().branch().unwrap().to_owned());
    }
    branches.sort();
    assert_eq!(branches, ["z9hG4bKtcp1", "z9hG4bKtcp2", "z9hG4bKtcp3"]);
    // Keep-alive ping (RFC 5626): double CRLF answered with one CRLF.
    stream.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0u8; 2];
    stream.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
}

#[test]
fn tcp_limits_per_source_and_idle_timeout() {
    let gw = Gateway::start(
        "127.0.0.1",
        "[tcp]\nmax_connections_per_source = 2\nidle_timeout_ms = 300\n",
    );
    let mut a = tcp_connect("127.0.0.9", gw.addr());
    let _b = tcp_connect("127.0.0.9", gw.addr());
    let mut c = tcp_connect("127.0.0.9", gw.addr());
    // The third from the same source is closed at once.
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "third connection must be closed");
    // Another source is unaffected.
    let mut other = tcp_connect("127.0.0.10", gw.addr());
    let local = other.local_addr().unwrap();
    other
        .write_all(options(local, "other").replace("UDP", "TCP").as_bytes())
        .unwrap();
    assert_eq!(
        read_stream_message(&mut other, &mut Vec::new()).code(),
        Some(200)
    );
    // Idle connections are closed after the timeout.
    a.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let n = a.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "idle connection closed");
    assert!(gw.stat("tcp_connections_refused") >= 1);
    assert!(gw.stat("tcp_idle_closed") >= 1);
}

#[test]
fn garbage_on_tcp_closes_only_that_connection() {
    let gw = Gateway::start("127.0.0.1", "");
    let mut bad = tcp_connect("127.0.0.1", gw.addr());
    bad.write_all(b"INVITE sip:x SIP/2.0\r\nContent-Length: nope\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(bad.read(&mut buf).unwrap_or(0), 0);
    let phone = Phone::new("127.0.0.1", gw.addr());
    still_serving(&phone, "aftertcp");
}
