//! Calls end to end: SIPp callers and callees (Debian `sip-tester`) through
//! the real binary, on loopback. Each test starts its own gateway on an
//! ephemeral port and uses its own 127.0.0.x addresses (block .150-.199 of
//! this file), so the tests run in parallel without clashing.
//!
//! A callee is a SIPp server scenario on the address that a harness `Phone`
//! registered for the extension ([`register_device`]): the socket is closed
//! and SIPp binds the same address, where the gateway sends the calls.
//! Every scenario makes a missed step fatal (SIPp exit code 1), so a test
//! asserts the exit codes, then what the messages carried and the call
//! detail record (`sipfence cdr list --csv`, read by column name).
//! The scenarios are in tests/sipp/; see each file's header for its flow.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use sipfence::sip::Message;

/// The caller's extension and password in every test.
const CALLER: &str = "100";
const CALLER_PW: &str = "pw100";

/// Extensions 100-102 of the default tenant; SIPp 3.6 answers only an MD5
/// challenge (and only the first one), so MD5 is the only algorithm offered.
/// `ext_101` is appended to extension 101's table (e.g. its ring time).
fn config(ext_101: &str, extra: &str) -> String {
    format!(
        r#"
[auth]
algorithms = ["MD5"]

[[extension]]
number = "100"
password = "pw100"

[[extension]]
number = "101"
password = "pw101"
{ext_101}

[[extension]]
number = "102"
password = "pw102"

{extra}
"#
    )
}

fn parse(text: &str) -> Message {
    Message::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}: {text}"))
}

/// The first line of each message.
fn first_lines(messages: &[String]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.lines().next().unwrap_or_default().trim().to_owned())
        .collect()
}

/// Messages whose first line starts with `start` (e.g. "INVITE ", "SIP/2.0 487").
fn starting_with<'a>(messages: &'a [String], start: &str) -> Vec<&'a String> {
    messages.iter().filter(|m| m.starts_with(start)).collect()
}

/// How many different INVITEs (top Via branches: retransmissions are one)
/// are among `invites`.
fn invite_branches(invites: &[&String]) -> usize {
    let mut branches: Vec<String> = invites
        .iter()
        .map(|m| {
            let via = parse(m).top_via().unwrap();
            via.branch().unwrap_or_default().to_owned()
        })
        .collect();
    branches.sort();
    branches.dedup();
    branches.len()
}

/// The status codes of the INVITE responses the caller received after its
/// authenticated INVITE (the ones after the 407), retransmissions folded.
fn invite_statuses_after_challenge(caller: &SippOutcome) -> Vec<u16> {
    let mut codes: Vec<u16> = Vec::new();
    let mut challenged = false;
    for text in caller.received() {
        let m = parse(&text);
        let Some(code) = m.code() else { continue };
        if m.cseq().unwrap().method.as_str() != "INVITE" {
            continue;
        }
        if code == 407 {
            challenged = true;
            codes.clear();
            continue;
        }
        if challenged && codes.last() != Some(&code) {
            codes.push(code);
        }
    }
    assert!(challenged, "the caller was never challenged");
    codes
}

/// The Call-ID of the caller's INVITE.
fn call_id_of(caller: &SippOutcome) -> String {
    let invite = caller
        .sent()
        .into_iter()
        .find(|m| m.starts_with("INVITE "))
        .expect("the caller sent an INVITE");
    parse(&invite).call_id().unwrap().to_owned()
}

/// The one call detail record of the gateway; each `(column, value)` of
/// `expect` must match, and the Call-ID must be the caller's.
fn assert_cdr(
    gw: &Gateway,
    caller: &SippOutcome,
    expect: &[(&str, &str)],
) -> HashMap<String, String> {
    let rows = gw.wait_cdrs(1);
    assert_eq!(rows.len(), 1, "one call, one record: {rows:#?}");
    let row = rows.into_iter().next().unwrap();
    assert_eq!(
        row.get("call_id"),
        Some(&call_id_of(caller)),
        "call_id of {row:#?}"
    );
    for (column, value) in expect {
        assert_eq!(
            row.get(*column).map(String::as_str),
            Some(*value),
            "column {column} of {row:#?}"
        );
    }
    let duration: u64 = row
        .get("duration_ms")
        .unwrap_or_else(|| panic!("no duration_ms column: {row:#?}"))
        .parse()
        .unwrap_or_else(|_| panic!("duration_ms of {row:#?}"));
    if row["disposition"] == "answered" {
        assert!(duration > 0, "an answered call lasts: {row:#?}");
    } else {
        assert_eq!(duration, 0, "an unanswered call lasts 0: {row:#?}");
    }
    row
}

/// A callee SIPp on the address registered for `extension` from `ip`.
fn callee(gw: &Gateway, extension: &str, ip: &str, scenario: &str) -> Sipp {
    let port = register_device(gw, extension, &format!("pw{extension}"), ip);
    Sipp::new(scenario, ip, port)
}

/// The caller SIPp: extension 100 calling `number` through the gateway.
fn caller(gw: &Gateway, ip: &str, scenario: &str, number: &str) -> Sipp {
    Sipp::client(scenario, ip, gw.addr()).call(CALLER, CALLER_PW, number)
}

#[test]
fn basic_call_invite_100_180_200_ack_bye() {
    const CALLER_IP: &str = "127.0.0.150";
    const CALLEE_IP: &str = "127.0.0.151";
    let gw = Gateway::start("127.0.0.1", &config("", ""));
    let dir = &gw.dir.0;
    let callee = callee(&gw, "101", CALLEE_IP, "uas_answer.xml")
        .pause_ms(200)
        .spawn(dir)
        .listening();
    let caller = caller(&gw, CALLER_IP, "uac_call_auth.xml", "101")
        .pause_ms(1200)
        .spawn(dir);
    // While the call is up the gateway lists it.
    let mut up = Vec::new();
    wait_until(Duration::from_secs(10), "the call listed as up", || {
        up = serde_json::from_str::<Vec<serde_json::Value>>(&gw.cli(&["calls", "list", "--json"]))
            .unwrap();
        !up.is_empty()
    });
    assert_eq!(up[0]["caller"], CALLER, "{up:?}");
    assert_eq!(up[0]["callee"], "101", "{up:?}");
    assert_eq!(up[0]["route"], "extension:101", "{up:?}");
    assert_eq!(gw.stat("calls_up"), 1);
    let out = wait_all(vec![caller, callee]);
    assert_sipp_success(&out);
    wait_until(Duration::from_secs(5), "no call up after the BYE", || {
        gw.stat("calls_up") == 0
    });
    let (caller, callee) = (&out[0], &out[1]);

    // Caller: 407 first, then 100 Trying, the callee's 180 and its 200.
    assert_eq!(
        invite_statuses_after_challenge(caller),
        [100, 180, 200],
        "{}",
        caller.report()
    );

    // Callee: the INVITE came through the gateway (its Via on top) with its
    // Record-Route; the ACK and BYE too (the scenario required them).
    let received = callee.received();
    let invites = starting_with(&received, "INVITE ");
    assert_eq!(invite_branches(&invites), 1, "{}", callee.report());
    let invite = parse(invites[0]);
    let gateway = gw.addr().to_string();
    let rr = invite.headers.get("Record-Route").expect("Record-Route");
    assert!(
        rr.contains(&format!("sip:{gateway}")) && rr.contains(";lr"),
        "Record-Route {rr}"
    );
    assert!(
        invite.top_via().unwrap().to_string().contains(&gateway),
        "top Via: {:?}",
        invite.headers.get("Via")
    );
    assert!(
        invite.headers.get("Proxy-Authorization").is_none(),
        "the caller's credentials are not passed on"
    );
    let lines = first_lines(&received);
    assert!(lines.iter().any(|l| l.starts_with("ACK ")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("BYE ")), "{lines:?}");

    assert_cdr(
        &gw,
        caller,
        &[
            ("caller", CALLER),
            ("callee", "101"),
            ("route", "extension:101"),
            ("disposition", "answered"),
            ("status", "200"),
        ],
    );
}

#[test]
fn three_devices_all_ring_first_answer_wins_others_cancelled() {
    const CALLER_IP: &str = "127.0.0.155";
    const ANSWERS: &str = "127.0.0.156";
    const RINGS: [&str; 2] = ["127.0.0.157", "127.0.0.158"];
    let gw = Gateway::start("127.0.0.1", &config("", ""));
    let dir = &gw.dir.0;
    // Three registrations of 101 (max_contacts defaults to 3). The answering
    // device rings 400 ms first, so the others have sent their 180 by then.
    let answerer = callee(&gw, "101", ANSWERS, "uas_answer.xml")
        .pause_ms(400)
        .spawn(dir)
        .listening();
    let ringers: Vec<SippRun> = RINGS
        .iter()
        .map(|ip| {
            callee(&gw, "101", ip, "uas_ring_noanswer.xml")
                .spawn(dir)
                .listening()
        })
        .collect();
    assert_eq!(gw.registrations().len(), 3);
    let caller = caller(&gw, CALLER_IP, "uac_call_auth.xml", "101")
        .pause_ms(500)
        .spawn(dir);
    let mut runs = vec![caller, answerer];
    runs.extend(ringers);
    let out = wait_all(runs);
    assert_sipp_success(&out);

    // Every device got the INVITE once; the two that only rang got a CANCEL
    // saying why (RFC 3326) and answered it with 200 and the INVITE with 487.
    for device in &out[1..] {
        let received = device.received();
        let invites = starting_with(&received, "INVITE ");
        assert_eq!(invite_branches(&invites), 1, "{}", device.report());
    }
    for ringer in &out[2..] {
        let received = ringer.received();
        let cancels = starting_with(&received, "CANCEL ");
        assert!(!cancels.is_empty(), "{}", ringer.report());
        let reason = parse(cancels[0])
            .headers
            .get("Reason")
            .map(str::to_owned)
            .unwrap_or_default();
        assert!(
            reason.contains("cause=200"),
            "CANCEL Reason {reason:?}: {}",
            cancels[0]
        );
        let sent = ringer.sent();
        assert!(!starting_with(&sent, "SIP/2.0 487").is_empty());
    }
    // One answer reached the caller.
    let caller = &out[0];
    assert_eq!(
        invite_statuses_after_challenge(caller).last(),
        Some(&200),
        "{}",
        caller.report()
    );

    assert_cdr(
        &gw,
        caller,
        &[
            ("caller", CALLER),
            ("callee", "101"),
            ("route", "extension:101"),
            ("disposition", "answered"),
            ("status", "200"),
        ],
    );
}

#[test]
fn caller_cancel_before_answer_gets_487() {
    const CALLER_IP: &str = "127.0.0.160";
    const CALLEE_IP: &str = "127.0.0.161";
    let gw = Gateway::start("127.0.0.1", &config("", ""));
    let dir = &gw.dir.0;
    let callee = callee(&gw, "101", CALLEE_IP, "uas_ring_noanswer.xml")
        .spawn(dir)
        .listening();
    // Rings 500 ms at the caller, then CANCEL.
    let caller = caller(&gw, CALLER_IP, "uac_cancel.xml", "101")
        .pause_ms(500)
        .spawn(dir);
    let out = wait_all(vec![caller, callee]);
    assert_sipp_success(&out);
    let (caller, callee) = (&out[0], &out[1]);
    // The callee's CANCEL came from the gateway (a new hop: its Via only).
    let received = callee.received();
    let cancel = parse(starting_with(&received, "CANCEL ")[0]);
    assert_eq!(cancel.vias().unwrap().len(), 1, "{cancel:?}");
    assert_eq!(
        invite_statuses_after_challenge(caller).last(),
        Some(&487),
        "{}",
        caller.report()
    );

    assert_cdr(
        &gw,
        caller,
        &[
            ("caller", CALLER),
            ("callee", "101"),
            ("route", "extension:101"),
            ("disposition", "cancelled"),
            ("status", "487"),
        ],
    );
}

#[test]
fn busy_callee_486_is_relayed() {
    const CALLER_IP: &str = "127.0.0.165";
    const CALLEE_IP: &str = "127.0.0.166";
    let gw = Gateway::start("127.0.0.1", &config("", ""));
    let dir = &gw.dir.0;
    let callee = callee(&gw, "101", CALLEE_IP, "uas_busy.xml")
        .spawn(dir)
        .listening();
    let caller = caller(&gw, CALLER_IP, "uac_expect_status.xml", "101")
        .set("expected", "486")
        .spawn(dir);
    let out = wait_all(vec![caller, callee]);
    assert_sipp_success(&out);

    assert_cdr(
        &gw,
        &out[0],
        &[
            ("caller", CALLER),
            ("callee", "101"),
            ("route", "extension:101"),
            ("disposition", "busy"),
            ("status", "486"),
        ],
    );
}

#[test]
fn no_answer_ends_with_480_after_the_extension_ring_time() {
    const CALLER_IP: &str = "127.0.0.170";
    const CALLEE_IP: &str = "127.0.0.171";
    const RING_MS: u64 = 1500;
    let gw = Gateway::start(
        "127.0.0.1",
        &config(&format!("ring_time_ms = {RING_MS}"), ""),
    );
    let dir = &gw.dir.0;
    // The callee rings until the gateway cancels it.
    let callee = callee(&gw, "101", CALLEE_IP, "uas_ring_noanswer.xml")
        .spawn(dir)
        .listening();
    let caller = caller(&gw, CALLER_IP, "uac_expect_status.xml", "101")
        .set("expected", "480")
        .spawn(dir);
    let out = wait_all(vec![caller, callee]);
    assert_sipp_success(&out);
    let (caller, callee) = (&out[0], &out[1]);

    // The INVITE rang RING_MS before its CANCEL (not the 30 s default).
    let received = callee.received_at();
    let at = |start: &str| {
        received
            .iter()
            .find(|(_, m)| m.starts_with(start))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no {start}: {}", callee.report()))
    };
    let rang = at("CANCEL ") - at("INVITE ");
    assert!(
        (RING_MS as f64 / 1000.0 - 0.1..RING_MS as f64 / 1000.0 + 2.0).contains(&rang),
        "rang {rang} s"
    );

    assert_cdr(
        &gw,
        caller,
        &[
            ("caller", CALLER),
            ("callee", "101"),
            ("route", "extension:101"),
            ("disposition", "no-answer"),
            ("status", "480"),
        ],
    );
}

#[test]
fn ring_group_ring_all_one_member_answers() {
    const CALLER_IP: &str = "127.0.0.175";
    const RINGS: &str = "127.0.0.176";
    const ANSWERS: &str = "127.0.0.177";
    let group = r#"
[[ring_group]]
number = "600"
strategy = "ring-all"
members = ["101", "102"]
"#;
    let gw = Gateway::start("127.0.0.1", &config("", group));
    let dir = &gw.dir.0;
    let ringer = callee(&gw, "101", RINGS, "uas_ring_noanswer.xml")
        .spawn(dir)
        .listening();
    let answerer = callee(&gw, "102", ANSWERS, "uas_answer.xml")
        .pause_ms(400)
        .spawn(dir)
        .listening();
    let caller = caller(&gw, CALLER_IP, "uac_call_auth.xml", "600")
        .pause_ms(300)
        .spawn(dir);
    let out = wait_all(vec![caller, ringer, answerer]);
    assert_sipp_success(&out);

    // Both members rang at once: their INVITEs less than the answer delay apart.
    let invite_at = |o: &SippOutcome| {
        o.received_at()
            .into_iter()
            .find(|(_, m)| m.starts_with("INVITE "))
            .map(|(t, _)| t)
            .unwrap()
    };
    let apart = (invite_at(&out[1]) - invite_at(&out[2])).abs();
    assert!(apart < 0.3, "ring-all rings together, not {apart} s apart");

    assert_cdr(
        &gw,
        &out[0],
        &[
            ("caller", CALLER),
            ("callee", "600"),
            ("route", "ring-group:600"),
            ("disposition", "answered"),
            ("status", "200"),
        ],
    );
}

#[test]
fn ring_group_hunt_next_member_after_member_timeout() {
    const CALLER_IP: &str = "127.0.0.180";
    const FIRST: &str = "127.0.0.181";
    const SECOND: &str = "127.0.0.182";
    const MEMBER_TIMEOUT_MS: u64 = 1000;
    let group = format!(
        r#"
[[ring_group]]
number = "600"
strategy = "hunt"
members = ["101", "102"]
member_timeout_ms = {MEMBER_TIMEOUT_MS}
"#
    );
    let gw = Gateway::start("127.0.0.1", &config("", &group));
    let dir = &gw.dir.0;
    // The first member rings and is cancelled after its turn; the second answers.
    let first = callee(&gw, "101", FIRST, "uas_ring_noanswer.xml")
        .spawn(dir)
        .listening();
    let second = callee(&gw, "102", SECOND, "uas_answer.xml")
        .pause_ms(200)
        .spawn(dir)
        .listening();
    let caller = caller(&gw, CALLER_IP, "uac_call_auth.xml", "600")
        .pause_ms(300)
        .spawn(dir);
    let out = wait_all(vec![caller, first, second]);
    assert_sipp_success(&out);
    let (first, second) = (&out[1], &out[2]);

    let at = |o: &SippOutcome, start: &str| {
        o.received_at()
            .into_iter()
            .find(|(_, m)| m.starts_with(start))
            .map(|(t, _)| t)
            .unwrap_or_else(|| panic!("no {start}: {}", o.report()))
    };
    let turn = MEMBER_TIMEOUT_MS as f64 / 1000.0;
    let first_rang = at(first, "CANCEL ") - at(first, "INVITE ");
    assert!(
        (turn - 0.1..turn + 1.0).contains(&first_rang),
        "first member rang {first_rang} s"
    );
    let second_after = at(second, "INVITE ") - at(first, "INVITE ");
    assert!(
        second_after >= turn - 0.1,
        "the second member rings after the first one's turn, not {second_after} s"
    );

    assert_cdr(
        &gw,
        &out[0],
        &[
            ("caller", CALLER),
            ("callee", "600"),
            ("route", "ring-group:600"),
            ("disposition", "answered"),
            ("status", "200"),
        ],
    );
}

/// An INVITE from extension 100 at `phone` to 101, with an optional
/// Proxy-Authorization value.
fn raw_invite(phone: &Phone, call_id: &str, cseq: u32, auth: Option<&str>) -> String {
    let local = phone.local();
    let branch = phone.next_branch();
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "INVITE sip:101@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:100@127.0.0.1>;tag=rawcaller\r\n\
         To: <sip:101@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} INVITE\r\n\
         Contact: <sip:100@{local}>\r\n\
         {auth}Content-Length: 0\r\n\r\n"
    )
}

/// The ACK of a non-2xx final response to `invite` (same branch, the
/// response's To tag).
fn ack_for(invite: &str, response: &Message) -> String {
    let via = invite.lines().find(|l| l.starts_with("Via:")).unwrap();
    let from = invite.lines().find(|l| l.starts_with("From:")).unwrap();
    let cseq = response.cseq().unwrap().seq;
    format!(
        "ACK sip:101@127.0.0.1 SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n{from}\r\nTo: {}\r\n\
         Call-ID: {}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
        response.headers.get("To").unwrap(),
        response.call_id().unwrap()
    )
}

#[test]
fn unauthenticated_invite_is_challenged_and_never_reaches_the_callee() {
    const CALLER_IP: &str = "127.0.0.185";
    const CALLEE_IP: &str = "127.0.0.186";
    let gw = Gateway::start("127.0.0.1", &config("", ""));
    // A registered callee that must hear nothing.
    let callee = Phone::new(CALLEE_IP, gw.addr());
    let mut reg = Register::new("127.0.0.1", "101", &format!("sip:101@{}", callee.local()));
    let ok = register_with_auth(&callee, &mut reg, "pw101", "MD5");
    assert_eq!(ok.code(), Some(200));

    // No credentials: 407 with a digest challenge of the default tenant.
    let phone = Phone::new(CALLER_IP, gw.addr());
    let call_id = format!("noauth-{:x}@test", rand::random::<u64>());
    let invite = raw_invite(&phone, &call_id, 1, None);
    let challenge = phone.request(&invite);
    assert_eq!(challenge.code(), Some(407), "{challenge:?}");
    let offered = challenges(&challenge);
    assert_eq!(offered.len(), 1, "{challenge:?}");
    assert_eq!(offered[0].realm, "sipfence");
    assert!(offered[0].algorithm.eq_ignore_ascii_case("MD5"));
    phone.send_raw(ack_for(&invite, &challenge).as_bytes());
    assert!(
        callee.recv_within(Duration::from_millis(700)).is_none(),
        "an unauthenticated INVITE reached the callee"
    );
    // Credentials of another extension (101's own password, From 100): refused.
    let uri = "sip:101@127.0.0.1";
    let auth = authorization(&offered[0], "101", "pw101", "INVITE", uri, 1);
    let other_call_id = format!("mismatch-{:x}@test", rand::random::<u64>());
    let invite = raw_invite(&phone, &other_call_id, 1, Some(&auth));
    let refused = phone.request(&invite);
    assert!(
        matches!(refused.code(), Some(403 | 407)),
        "digest user must be the From user: {refused:?}"
    );
    phone.send_raw(ack_for(&invite, &refused).as_bytes());
    assert!(
        callee.recv_within(Duration::from_millis(700)).is_none(),
        "an INVITE authenticated as someone else reached the callee"
    );

    // A challenge is a step of every call's setup, not a call: no record
    // for the first INVITE (nothing is asserted of the refused one).
    std::thread::sleep(Duration::from_millis(300));
    let cdrs = gw.cdrs();
    assert!(
        cdrs.iter().all(|r| r["call_id"] != call_id),
        "the 407 challenge left a record: {cdrs:#?}"
    );
}

#[test]
fn callee_reinvite_and_bye_go_through_the_gateway() {
    const CALLER_IP: &str = "127.0.0.190";
    const CALLEE_IP: &str = "127.0.0.191";
    let gw = Gateway::start("127.0.0.1", &config("", ""));
    let dir = &gw.dir.0;
    let callee = callee(&gw, "101", CALLEE_IP, "uas_answer_then_bye.xml")
        .pause_ms(200)
        .spawn(dir)
        .listening();
    let caller = caller(&gw, CALLER_IP, "uac_reinvite_peer.xml", "101").spawn(dir);
    let out = wait_all(vec![caller, callee]);
    assert_sipp_success(&out);
    let (caller, callee) = (&out[0], &out[1]);

    let gateway = gw.addr().to_string();
    // The callee sent them along the recorded route: Route = the gateway.
    let sent = callee.sent();
    for start in ["INVITE ", "ACK ", "BYE "] {
        let m = starting_with(&sent, start);
        assert!(!m.is_empty(), "callee sent no {start}");
        let route = parse(m[0]).headers.get("Route").map(str::to_owned);
        assert!(
            route.as_deref().is_some_and(|r| r.contains(&gateway)),
            "{start} Route {route:?}"
        );
    }
    // The caller got them from the gateway: its Via on top, the Route that
    // named it removed (loose routing, RFC 3261 16.4).
    let received = caller.received();
    for start in ["INVITE ", "ACK ", "BYE "] {
        let m = starting_with(&received, start);
        assert!(
            !m.is_empty(),
            "caller received no {start}: {}",
            caller.report()
        );
        let m = parse(m[0]);
        let vias = m.vias().unwrap();
        assert!(
            vias.len() == 2 && vias[0].to_string().contains(&gateway),
            "{start} Vias {:?}",
            m.headers.get_all("Via").collect::<Vec<_>>()
        );
        assert!(
            m.headers.get_all("Route").all(|r| !r.contains(&gateway)),
            "{start} still routed to the gateway: {m:?}"
        );
    }

    assert_cdr(
        &gw,
        caller,
        &[
            ("caller", CALLER),
            ("callee", "101"),
            ("route", "extension:101"),
            ("disposition", "answered"),
            ("status", "200"),
        ],
    );
}

/// NAT: the phone's Contact names an address where nothing of it listens
/// (127.0.0.198:5999 stands for its private address); the call must reach the
/// address its REGISTER came from, and nothing may go to the Contact.
#[test]
fn a_phone_behind_nat_is_called_at_its_source_address() {
    const CALLER_IP: &str = "127.0.0.196";
    const PHONE_IP: &str = "127.0.0.197";
    const PRIVATE: &str = "127.0.0.198:5999";
    let gw = Gateway::start("127.0.0.1", &config("", ""));
    let dir = &gw.dir.0;
    // Listens where the Contact points, to prove nothing is sent there.
    let private = std::net::UdpSocket::bind(PRIVATE).unwrap();
    private
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let port = register_behind_nat(&gw, "101", "pw101", PHONE_IP, PRIVATE);
    let callee = Sipp::new("uas_answer.xml", PHONE_IP, port)
        .pause_ms(200)
        .spawn(dir)
        .listening();
    let caller = caller(&gw, CALLER_IP, "uac_call_auth.xml", "101")
        .pause_ms(300)
        .spawn(dir);
    let out = wait_all(vec![caller, callee]);
    assert_sipp_success(&out);
    let mut buf = [0u8; 2048];
    assert!(
        private.recv_from(&mut buf).is_err(),
        "nothing may be sent to the address written in the Contact"
    );
    assert_cdr(
        &gw,
        &out[0],
        &[
            ("callee", "101"),
            ("disposition", "answered"),
            ("status", "200"),
        ],
    );
}

/// Tenants are kept apart: a caller of a.example cannot reach b.example's
/// extension 101 by number, whatever it writes in the Request-URI.
#[test]
fn a_tenant_cannot_call_another_tenants_extension() {
    const CALLER_IP: &str = "127.0.0.192";
    const CALLEE_IP: &str = "127.0.0.193";
    let gw = Gateway::start(
        "127.0.0.1",
        r#"
[auth]
algorithms = ["MD5"]
[[tenant]]
domain = "a.example"
[[tenant.extension]]
number = "100"
password = "pw100"
[[tenant]]
domain = "b.example"
[[tenant.extension]]
number = "101"
password = "pw101"
"#,
    );
    let callee = Phone::new(CALLEE_IP, gw.addr());
    let mut reg = Register::new("b.example", "101", &format!("sip:101@{}", callee.local()));
    assert_eq!(
        register_with_auth(&callee, &mut reg, "pw101", "MD5").code(),
        Some(200)
    );
    let phone = Phone::new(CALLER_IP, gw.addr());
    let invite = |uri_host: &str, call_id: &str, auth: Option<&str>| {
        let local = phone.local();
        let auth = auth
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "INVITE sip:101@{uri_host} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:100@a.example>;tag=t\r\n\
             To: <sip:101@{uri_host}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:100@{local}>\r\n\
             {auth}Content-Length: 0\r\n\r\n",
            phone.next_branch()
        )
    };
    // Straight at the other domain: refused before any challenge.
    let refused = phone.request(&invite("b.example", "x1@test", None));
    assert_eq!(refused.code(), Some(403), "{refused:?}");
    // Within its own domain, authenticated: 101 is no number of a.example.
    let challenge = phone.request(&invite("a.example", "x2@test", None));
    assert_eq!(challenge.code(), Some(407), "{challenge:?}");
    let offered = challenges(&challenge);
    let auth = authorization(
        &offered[0],
        "100",
        "pw100",
        "INVITE",
        "sip:101@a.example",
        1,
    );
    let not_found = phone.request(&invite("a.example", "x3@test", Some(&auth)));
    assert_eq!(not_found.code(), Some(404), "{not_found:?}");
    assert!(
        callee.recv_within(Duration::from_millis(500)).is_none(),
        "b.example's phone rang for a.example's caller"
    );
}

/// A phone registered over TCP is called over its own connection (the
/// gateway opens none), and the whole dialog follows it there.
#[test]
fn a_phone_registered_over_tcp_is_called_over_its_connection() {
    use std::io::Write;
    const CALLER_IP: &str = "127.0.0.194";
    const PHONE_IP: &str = "127.0.0.195";
    let gw = Gateway::start("127.0.0.1", &config("", ""));
    let dir = &gw.dir.0;
    let mut stream = tcp_connect(PHONE_IP, gw.addr());
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let local = stream.local_addr().unwrap();
    let mut buf = Vec::new();
    let register = |cseq: u32, auth: Option<&str>| {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/TCP {local};branch=z9hG4bKtcpreg{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:101@127.0.0.1>;tag=tcp\r\n\
             To: <sip:101@127.0.0.1>\r\n\
             Call-ID: tcp-reg@test\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:101@{local};transport=tcp>\r\n\
             Expires: 600\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        )
    };
    stream.write_all(register(1, None).as_bytes()).unwrap();
    let challenge = read_stream_message(&mut stream, &mut buf);
    assert_eq!(challenge.code(), Some(401));
    let offered = challenges(&challenge).remove(0);
    let auth = authorization(&offered, "101", "pw101", "REGISTER", "sip:127.0.0.1", 1);
    stream
        .write_all(register(2, Some(&auth)).as_bytes())
        .unwrap();
    assert_eq!(read_stream_message(&mut stream, &mut buf).code(), Some(200));

    let caller = caller(&gw, CALLER_IP, "uac_call_auth.xml", "101")
        .pause_ms(300)
        .spawn(dir);
    let invite = read_stream_message(&mut stream, &mut buf);
    assert_eq!(invite.method().map(|m| m.as_str()), Some("INVITE"));
    let top = invite.top_via().unwrap();
    assert_eq!(
        top.transport, "TCP",
        "sent over the phone's connection: {top}"
    );
    // UDP caller, TCP phone: one Record-Route for each side, the phone's first.
    let routes: Vec<&str> = invite.headers.get_all("Record-Route").collect();
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert!(routes[0].contains("transport=tcp"), "{routes:?}");
    assert!(!routes[1].contains("transport=tcp"), "{routes:?}");
    let answer = |code: u16| {
        let mut response =
            invite.response(code, sipfence::sip::reason_phrase(code), Some("tcpphone"));
        if code == 200 {
            response
                .headers
                .push("Contact", format!("<sip:101@{local};transport=tcp>"));
            for rr in invite.headers.get_all("Record-Route") {
                response.headers.push("Record-Route", rr);
            }
        }
        response.to_bytes()
    };
    stream.write_all(&answer(180)).unwrap();
    stream.write_all(&answer(200)).unwrap();
    let ack = read_stream_message(&mut stream, &mut buf);
    assert_eq!(ack.method().map(|m| m.as_str()), Some("ACK"));
    let bye = read_stream_message(&mut stream, &mut buf);
    assert_eq!(bye.method().map(|m| m.as_str()), Some("BYE"));
    stream
        .write_all(&bye.response(200, "OK", None).to_bytes())
        .unwrap();
    let out = wait_all(vec![caller]);
    assert_sipp_success(&out);
    assert_cdr(
        &gw,
        &out[0],
        &[
            ("callee", "101"),
            ("disposition", "answered"),
            ("status", "200"),
        ],
    );
}
