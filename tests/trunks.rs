//! SIP trunks between gateways, number analysis and IP-authenticated
//! devices, end to end: real gateway processes, SIPp callers and callees
//! on loopback. Addresses of this file: gateways on 127.0.1.1 (office 1),
//! 127.0.2.1 (office 2) and 127.0.1.2, 127.0.2.2; phones on other
//! 127.0.1.x / 127.0.2.x / 127.0.3.x; the IP-authenticated device on
//! 127.0.0.3 and the impostor on 127.0.0.4.

mod common;

use std::sync::Arc;

use common::*;

/// One office: its extensions (password "pw" + number), trunk 1 to the
/// other office at `peer` (trusted from there, address and port), and
/// number analysis with "called prefix `other` -> SIP trunk 1".
fn office(dir: &TempDir, listen: &str, extensions: &[&str], peer: &str, other: &str) -> String {
    let mut text = base_config(&dir.0, &[listen.to_owned()], "");
    text.push_str("\n[auth]\nalgorithms = [\"MD5\"]\n");
    for number in extensions {
        text.push_str(&format!(
            "\n[[extension]]\nnumber = \"{number}\"\npassword = \"pw{number}\"\n"
        ));
    }
    text.push_str(&format!(
        r#"
[[trunk]]
id = "1"
description = "the other office"
address = "{peer}"
trusted_from = ["{peer}"]

[[plugin]]
name = "number-analysis"
path = "builtin:number-analysis"

[[plugin.config.rules]]
prefix = "{other}"
route = "trunk"
target = "1"
"#
    ));
    text
}

fn start(tag: &str, config: impl FnOnce(&TempDir) -> String) -> Gateway {
    let dir = Arc::new(TempDir::new(tag));
    let text = config(&dir);
    Gateway::start_with(dir, &text)
}

/// The one CDR of `gw`, checked column by column.
fn assert_one_cdr(gw: &Gateway, expect: &[(&str, &str)]) {
    let rows = gw.wait_cdrs(1);
    assert_eq!(rows.len(), 1, "one call, one record: {rows:#?}");
    for (column, value) in expect {
        assert_eq!(
            rows[0].get(*column).map(String::as_str),
            Some(*value),
            "column {column} of {rows:#?}"
        );
    }
}

fn invite(phone: &Phone, to: &str, from: &str) -> String {
    format!(
        "INVITE sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{from}>;tag=t{tag:x}\r\nTo: <sip:{to}>\r\n\
         Call-ID: trunk-{tag:x}\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{local}>\r\n\
         Content-Length: 0\r\n\r\n",
        local = phone.local(),
        branch = phone.next_branch(),
        tag = rand::random::<u64>(),
    )
}

#[test]
fn two_offices_call_each_other_through_trunk_1() {
    let port1 = free_udp_port("127.0.1.1");
    let port2 = free_udp_port("127.0.2.1");
    let (addr1, addr2) = (format!("127.0.1.1:{port1}"), format!("127.0.2.1:{port2}"));
    let office1 = start("office1", |d| {
        office(d, &addr1, &["101", "102"], &addr2, "2")
    });
    let office2 = start("office2", |d| {
        office(d, &addr2, &["201", "202"], &addr1, "1")
    });
    let dir = &office1.dir.0;

    // 201 registered at office 2 answers; 101 registered at office 1 calls it.
    let port = register_device(&office2, "201", "pw201", "127.0.2.10");
    let callee = Sipp::new("uas_answer.xml", "127.0.2.10", port)
        .pause_ms(200)
        .spawn(dir)
        .listening();
    register_device(&office1, "101", "pw101", "127.0.1.10");
    let caller = Sipp::client("uac_call_auth.xml", "127.0.1.10", office1.addr())
        .call("101", "pw101", "201")
        .pause_ms(800)
        .spawn(dir);
    let out = wait_all(vec![caller, callee]);
    assert_sipp_success(&out);

    // The callee got the call from office 2, which got it from office 1.
    let received = out[1].received();
    let first = received
        .iter()
        .find(|m| m.starts_with("INVITE "))
        .expect("the callee got an INVITE");
    assert!(
        first.contains(&format!("<sip:{addr2};lr;sipfence>")),
        "{first}"
    );
    assert!(
        first.contains(&format!("<sip:{addr1};lr;sipfence>")),
        "{first}"
    );

    assert_one_cdr(
        &office1,
        &[
            ("caller", "101"),
            ("callee", "201"),
            ("route", "trunk:1"),
            ("disposition", "answered"),
        ],
    );
    assert_one_cdr(
        &office2,
        &[
            ("caller", "101"),
            ("callee", "201"),
            ("route", "extension:201 from trunk:1"),
            ("disposition", "answered"),
        ],
    );

    // Another address claiming to be office 1 is an ordinary, unknown caller:
    // challenged, never routed.
    let impostor = Phone::new("127.0.3.1", office2.addr());
    let answer = impostor.request(&invite(&impostor, &format!("201@{addr2}"), "101@127.0.1.1"));
    assert_eq!(answer.code(), Some(407), "{answer:?}");
    assert_eq!(office2.cdrs().len(), 1);
}

#[test]
fn a_call_from_a_trunk_is_not_sent_out_through_a_trunk() {
    // The peer is a test socket; the trunk's outbound address is one where
    // nothing listens (and nothing may be sent).
    let peer = Phone::new("127.0.1.5", "127.0.0.1:9".parse().unwrap());
    let peer_addr = peer.local();
    let gw = start("transit", |d| {
        let mut text = base_config(&d.0, &["127.0.2.2:0".to_owned()], "");
        text.push_str(&format!(
            r#"
[[extension]]
number = "201"
password = "pw201"

[[trunk]]
id = "1"
address = "127.0.1.6:5060"
trusted_from = ["{peer_addr}"]

[[trunk]]
id = "2"
address = "127.0.1.7:5060"

[[plugin]]
name = "number-analysis"
path = "builtin:number-analysis"

[[plugin.config.rules]]
prefix = "1"
route = "trunk"
target = "1"

[[plugin.config.rules]]
prefix = "0"
route = "trunk"
target = "2"
"#
        ));
        text
    });
    let peer = Phone {
        sock: peer.sock,
        server: gw.addr(),
    };
    let host = gw.addr();
    for number in ["105", "0049"] {
        let answer = peer.request(&invite(&peer, &format!("{number}@{host}"), "101@127.0.1.1"));
        assert_eq!(answer.code(), Some(403), "{number}: {answer:?}");
    }
    // An extension is fine: routed (201 is not registered: 480).
    let answer = peer.request(&invite(&peer, &format!("201@{host}"), "101@127.0.1.1"));
    assert_eq!(answer.code(), Some(480), "{answer:?}");
    gw.wait_log("call from a trunk routed out through a trunk: refused", 2);
}

#[test]
fn an_ip_authenticated_device_calls_is_called_and_rings_in_a_group() {
    const DEVICE_IP: &str = "127.0.0.3";
    let device_port = free_udp_port(DEVICE_IP);
    let gw = start("ip-auth", |d| {
        let mut text = base_config(&d.0, &["127.0.1.2:0".to_owned()], "");
        text.push_str(&format!(
            r#"
[auth]
algorithms = ["MD5"]

[[extension]]
number = "100"
password = "pw100"

[[extension]]
number = "150"
display_name = "Door"
address = "{DEVICE_IP}:{device_port}"

[[ring_group]]
number = "600"
strategy = "ring-all"
members = ["150"]

[[plugin]]
name = "ip-auth"
path = "builtin:ip-auth"
on_error = "fail-open"

[[plugin.config.device]]
extension = "150"
source = "{DEVICE_IP}"
"#
        ));
        text
    });
    let dir = &gw.dir.0;

    // The device calls 100 without REGISTER and without a challenge.
    let port = register_device(&gw, "100", "pw100", "127.0.1.20");
    let callee = Sipp::new("uas_answer.xml", "127.0.1.20", port)
        .pause_ms(200)
        .spawn(dir)
        .listening();
    let caller = Sipp::client("uac_call_auth.xml", DEVICE_IP, gw.addr())
        .call("150", "not-needed", "100")
        .pause_ms(300)
        .spawn(dir);
    let out = wait_all(vec![caller, callee]);
    assert_sipp_success(&out);
    assert!(
        !out[0]
            .received()
            .iter()
            .any(|m| m.starts_with("SIP/2.0 407")),
        "a trusted device is not challenged"
    );

    // 100 calls the device at its configured address, directly and through
    // ring group 600.
    for (number, route) in [("150", "extension:150"), ("600", "ring-group:600")] {
        let callee = Sipp::new("uas_answer.xml", DEVICE_IP, device_port)
            .pause_ms(200)
            .spawn(dir)
            .listening();
        let caller = Sipp::client("uac_call_auth.xml", "127.0.1.21", gw.addr())
            .call("100", "pw100", number)
            .pause_ms(300)
            .spawn(dir);
        let out = wait_all(vec![caller, callee]);
        assert_sipp_success(&out);
        let cdrs = gw.wait_cdrs(if number == "150" { 2 } else { 3 });
        assert!(
            cdrs.iter()
                .any(|r| r["callee"] == number && r["route"] == route),
            "{cdrs:#?}"
        );
    }
    let cdrs = gw.cdrs();
    assert!(
        cdrs.iter()
            .any(|r| r["caller"] == "150" && r["callee"] == "100"),
        "{cdrs:#?}"
    );

    // The same extension claimed from another address: the digest way.
    let impostor = Phone::new("127.0.0.4", gw.addr());
    let host = gw.addr();
    let answer = impostor.request(&invite(&impostor, &format!("100@{host}"), "150@127.0.0.1"));
    assert_eq!(answer.code(), Some(407), "{answer:?}");
}

/// A trunk peer that challenges: the gateway answers its 407 once with the
/// trunk's credentials (a new branch, the next CSeq) and the call goes
/// through; the peer checks the digest itself (SIPp verifyauth).
#[test]
fn a_challenging_trunk_peer_gets_the_trunks_credentials() {
    let gw_port = free_udp_port("127.0.4.1");
    let listen = format!("127.0.4.1:{gw_port}");
    let peer_port = free_udp_port("127.0.4.2");
    let peer = format!("127.0.4.2:{peer_port}");
    let gw = start("trunk-auth", |dir| {
        let mut text = base_config(&dir.0, std::slice::from_ref(&listen), "");
        text.push_str(&format!(
            r#"
[auth]
algorithms = ["MD5"]

[[extension]]
number = "101"
password = "pw101"

[[trunk]]
id = "1"
address = "{peer}"
username = "office1"
password = "trunk-secret"

[[plugin]]
name = "number-analysis"
path = "builtin:number-analysis"

[[plugin.config.rules]]
prefix = "9"
route = "trunk"
target = "1"
strip = 1
"#
        ));
        text
    });
    let dir = &gw.dir.0;
    let peer_sipp = Sipp::new("uas_trunk_challenge.xml", "127.0.4.2", peer_port)
        .key("trunk_user", "office1")
        .key("trunk_pw", "trunk-secret")
        .spawn(dir)
        .listening();
    register_device(&gw, "101", "pw101", "127.0.4.10");
    let caller = Sipp::client("uac_call_auth.xml", "127.0.4.10", gw.addr())
        .call("101", "pw101", "9201")
        .pause_ms(300)
        .spawn(dir);
    let out = wait_all(vec![caller, peer_sipp]);
    assert_sipp_success(&out);
    let received = out[1].received();
    let invites: Vec<&String> = received
        .iter()
        .filter(|m| m.starts_with("INVITE "))
        .collect();
    assert_eq!(invites.len(), 2, "first without, then with credentials");
    assert!(
        invites[0].starts_with("INVITE sip:201@"),
        "number rewritten: {}",
        invites[0]
    );
    assert!(invites[1].contains("\nAuthorization: Digest username=\"office1\""));
    assert_one_cdr(
        &gw,
        &[
            ("caller", "101"),
            ("callee", "9201"),
            ("route", "trunk:1"),
            ("disposition", "answered"),
        ],
    );
}
