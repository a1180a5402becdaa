//! The registrar end to end: the real binary, real UDP sockets on loopback.

mod common;

use std::time::Duration;

use common::*;

const USERS: &str = r#"
[[extension]]
number = "100"
password = "pw100"

[[extension]]
number = "101"
password = "pw101"

[[tenant]]
domain = "a.example"
[[tenant.extension]]
number = "100"
password = "secret-a"

[[tenant]]
domain = "b.example"
[[tenant.extension]]
number = "100"
password = "secret-b"
"#;

fn gateway() -> Gateway {
    Gateway::start("127.0.0.1", USERS)
}

fn contact_of(phone: &Phone, user: &str) -> String {
    format!("sip:{user}@{}", phone.local())
}

/// Sends `reg` without credentials; the first challenge of the 401.
fn first_challenge(phone: &Phone, reg: &Register) -> Challenge {
    challenges(&phone.request(&reg.text(phone))).remove(0)
}

#[test]
fn register_with_md5_and_sha256_digest() {
    let gw = gateway();
    for (user, password, alg) in [("100", "pw100", "MD5"), ("101", "pw101", "SHA-256")] {
        let phone = Phone::new("127.0.0.1", gw.addr());
        let mut reg = Register::new("127.0.0.1", user, &contact_of(&phone, user));
        let first = phone.request(&reg.text(&phone));
        assert_eq!(first.code(), Some(401));
        let offered: Vec<_> = challenges(&first)
            .into_iter()
            .map(|c| c.algorithm)
            .collect();
        assert_eq!(
            offered,
            ["SHA-256", "MD5"],
            "SHA-256 offered first (RFC 8760)"
        );
        reg.cseq = 1;
        let ok = register_with_auth(&phone, &mut reg, password, alg);
        assert_eq!(ok.code(), Some(200), "{alg}: {ok:?}");
        let contacts: Vec<_> = ok.headers.get_all("Contact").collect();
        assert_eq!(contacts.len(), 1);
        assert!(contacts[0].contains(&contact_of(&phone, user)));
        assert!(contacts[0].contains("expires="));
    }
    let rows = gw.registrations();
    let exts: Vec<_> = rows
        .iter()
        .map(|r| r["extension"].as_str().unwrap())
        .collect();
    assert_eq!(exts, ["100", "101"]);
    assert_eq!(rows[0]["user_agent"], "sipfence-test");
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_answer() {
    let gw = gateway();
    let mut answers = Vec::new();
    for user in ["100", "999"] {
        let phone = Phone::new("127.0.0.1", gw.addr());
        let mut reg = Register::new("127.0.0.1", user, &contact_of(&phone, user));
        let resp = register_with_auth(&phone, &mut reg, "not-the-password", "MD5");
        let mut names: Vec<String> = resp.headers.iter().map(|(n, _)| n.to_owned()).collect();
        names.sort();
        answers.push((
            resp.code(),
            resp.start.clone(),
            names,
            challenges(&resp).len(),
        ));
    }
    // Same status line, same header set, same number of challenges.
    assert_eq!(answers[0].0, Some(401));
    assert_eq!(answers[0].1, answers[1].1);
    assert_eq!(answers[0].2, answers[1].2);
    assert_eq!(answers[0].3, answers[1].3);
    assert!(gw.registrations().is_empty());
    assert_eq!(gw.stat("auth_failed"), 2);
}

#[test]
fn digest_user_must_be_the_to_extension_and_realm_the_tenant() {
    let gw = gateway();
    let phone = Phone::new("127.0.0.1", gw.addr());
    // Extension 100's credentials used to register 101.
    let mut reg = Register::new("127.0.0.1", "101", &contact_of(&phone, "101"));
    let ch = first_challenge(&phone, &reg);
    reg.cseq += 1;
    reg.authorization = Some(authorization(
        &ch,
        "100",
        "pw100",
        "REGISTER",
        "sip:127.0.0.1",
        1,
    ));
    let resp = phone.request(&reg.text(&phone));
    assert_eq!(resp.code(), Some(403), "{resp:?}");

    // a.example's password for 100 tried against b.example's 100: the realm is b.example.
    let mut reg = Register::new("b.example", "100", &contact_of(&phone, "100"));
    let mut ch = first_challenge(&phone, &reg);
    assert_eq!(ch.realm, "b.example");
    ch.realm = "a.example".into();
    reg.cseq += 1;
    reg.authorization = Some(authorization(
        &ch,
        "100",
        "secret-a",
        "REGISTER",
        "sip:b.example",
        1,
    ));
    let resp = phone.request(&reg.text(&phone));
    assert_eq!(resp.code(), Some(403), "{resp:?}");
    assert!(gw.registrations().is_empty());
}

#[test]
fn of_several_realms_credentials_those_for_ours_are_checked() {
    let gw = gateway();
    let phone = Phone::new("127.0.0.1", gw.addr());
    let mut reg = Register::new("127.0.0.1", "100", &contact_of(&phone, "100"));
    let ours = first_challenge(&phone, &reg);
    // A phone registered with another server too sends that server's
    // credentials first; a wrong answer there must not count here.
    let mut theirs = ours.clone();
    theirs.realm = "elsewhere.example".into();
    let answer = |ch: &Challenge, password| {
        authorization(ch, "100", password, "REGISTER", "sip:127.0.0.1", 1)
    };
    reg.cseq += 1;
    reg.authorization = Some(answer(&theirs, "another-password"));
    reg.extra = vec![format!("Authorization: {}", answer(&ours, "pw100"))];
    let ok = phone.request(&reg.text(&phone));
    assert_eq!(ok.code(), Some(200), "{ok:?}");
    assert_eq!(gw.registrations().len(), 1);
    assert_eq!(gw.stat("auth_failed"), 0);
}

#[test]
fn tenants_are_kept_apart() {
    let gw = gateway();
    let phone = Phone::new("127.0.0.1", gw.addr());
    let mut reg = Register::new("a.example", "100", &contact_of(&phone, "100"));
    assert_eq!(
        register_with_auth(&phone, &mut reg, "secret-a", "SHA-256").code(),
        Some(200)
    );
    // b.example's 100 cannot be registered with a.example's password.
    let mut reg_b = Register::new("b.example", "100", &contact_of(&phone, "100"));
    assert_eq!(
        register_with_auth(&phone, &mut reg_b, "secret-a", "SHA-256").code(),
        Some(401)
    );
    let rows = gw.registrations();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["tenant"], "a.example");
    // A query of b.example's 100 shows no binding.
    let mut query = Register::new("b.example", "100", "unused");
    query.contacts.clear();
    let ok = register_with_auth(&phone, &mut query, "secret-b", "MD5");
    assert_eq!(ok.code(), Some(200));
    assert_eq!(ok.headers.get_all("Contact").count(), 0);
}

#[test]
fn nonce_answered_from_another_address_is_refused() {
    let gw = gateway();
    let phone = Phone::new("127.0.0.1", gw.addr());
    let mut reg = Register::new("127.0.0.1", "100", &contact_of(&phone, "100"));
    let ch = first_challenge(&phone, &reg);
    // Someone at 127.0.0.7 answers the challenge issued to 127.0.0.1.
    let spoofer = Phone::new("127.0.0.7", gw.addr());
    reg.cseq += 1;
    reg.authorization = Some(authorization(
        &ch,
        "100",
        "pw100",
        "REGISTER",
        "sip:127.0.0.1",
        1,
    ));
    let resp = spoofer.request(&reg.text(&spoofer));
    assert_eq!(resp.code(), Some(401), "a fresh challenge, no binding");
    assert!(gw.registrations().is_empty());
    // Not counted as a failed guess: no password was checked.
    assert_eq!(gw.stat("auth_failed"), 0);
}

#[test]
fn domain_not_served_is_refused_and_nothing_is_forwarded() {
    let gw = gateway();
    let phone = Phone::new("127.0.0.1", gw.addr());
    let reg = Register::new("evil.example", "100", &contact_of(&phone, "100"));
    let resp = phone.request(&reg.text(&phone));
    assert_eq!(resp.code(), Some(404));
    let invite = format!(
        "INVITE sip:100@elsewhere.example SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKrelay1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:100@127.0.0.1>;tag=1\r\nTo: <sip:100@elsewhere.example>\r\n\
         Call-ID: relay@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        local = phone.local()
    );
    let resp = phone.request(&invite);
    assert_eq!(resp.code(), Some(404));
    assert_eq!(gw.stat("responses_out"), 2);
}

#[test]
fn stale_nonce_gets_stale_true_and_replayed_nc_is_refused() {
    let gw = Gateway::start(
        "127.0.0.1",
        &format!("[auth]\nnonce_lifetime_ms = 400\n{USERS}"),
    );
    let phone = Phone::new("127.0.0.1", gw.addr());
    let mut reg = Register::new("127.0.0.1", "100", &contact_of(&phone, "100"));
    let ch = first_challenge(&phone, &reg);
    reg.cseq += 1;
    reg.authorization = Some(authorization(
        &ch,
        "100",
        "pw100",
        "REGISTER",
        "sip:127.0.0.1",
        1,
    ));
    let ok = phone.request(&reg.text(&phone));
    assert_eq!(ok.code(), Some(200));
    // The same nonce count again (a replay, new transaction): challenged.
    reg.cseq += 1;
    let replay = phone.request(&reg.text(&phone));
    assert_eq!(replay.code(), Some(401));
    assert!(!challenges(&replay)[0].stale);
    // After the lifetime: stale=true, and it is not a failure.
    std::thread::sleep(Duration::from_millis(500));
    reg.cseq += 1;
    reg.authorization = Some(authorization(
        &ch,
        "100",
        "pw100",
        "REGISTER",
        "sip:127.0.0.1",
        2,
    ));
    let stale = phone.request(&reg.text(&phone));
    assert_eq!(stale.code(), Some(401));
    assert!(challenges(&stale).iter().all(|c| c.stale));
    assert_eq!(gw.stat("auth_failed"), 0);
}

/// Registers `reg` fully (challenge + answer) and returns the 200 OK.
fn register(phone: &Phone, reg: &mut Register, password: &str) -> sipfence::sip::Message {
    let resp = register_with_auth(phone, reg, password, "SHA-256");
    assert_eq!(resp.code(), Some(200), "{resp:?}");
    reg.cseq += 1;
    resp
}

#[test]
fn several_devices_one_extension_limit_unregister_and_star() {
    let gw = Gateway::start(
        "127.0.0.1",
        &format!("[registrar]\nmax_contacts = 3\n{USERS}"),
    );
    let phones: Vec<Phone> = (0..4).map(|_| Phone::new("127.0.0.1", gw.addr())).collect();
    let mut regs = Vec::new();
    for phone in phones.iter() {
        let mut reg = Register::new("127.0.0.1", "100", &contact_of(phone, "100"));
        let ok = register(phone, &mut reg, "pw100");
        regs.push((
            reg.call_id.clone(),
            reg.cseq,
            ok.headers.get_all("Contact").count(),
        ));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(regs.iter().map(|r| r.2).collect::<Vec<_>>(), [1, 2, 3, 3]);
    let rows = gw.registrations();
    assert_eq!(rows.len(), 3);
    // The first phone's binding (the oldest) made room for the fourth.
    let first_contact = contact_of(&phones[0], "100");
    assert!(rows.iter().all(|r| r["contact"] != first_contact.as_str()));

    // One phone unregisters itself with Expires: 0.
    let mut bye = Register::new("127.0.0.1", "100", &contact_of(&phones[3], "100"));
    bye.expires = Some(0);
    let ok = register(&phones[3], &mut bye, "pw100");
    assert_eq!(ok.headers.get_all("Contact").count(), 2);

    // Contact: * with Expires: 0 removes all.
    let mut star = Register::new("127.0.0.1", "100", "unused");
    star.contacts = vec!["*".into()];
    star.expires = Some(0);
    let ok = register(&phones[1], &mut star, "pw100");
    assert_eq!(ok.headers.get_all("Contact").count(), 0);
    assert!(gw.registrations().is_empty());

    // Contact: * without Expires: 0 is a 400.
    let mut bad = Register::new("127.0.0.1", "100", "unused");
    bad.contacts = vec!["*".into()];
    let resp = register_with_auth(&phones[1], &mut bad, "pw100", "MD5");
    assert_eq!(resp.code(), Some(400));
}

#[test]
fn too_brief_expires_gets_423_with_min_expires() {
    let gw = gateway();
    let phone = Phone::new("127.0.0.1", gw.addr());
    let mut reg = Register::new("127.0.0.1", "100", &contact_of(&phone, "100"));
    reg.expires = Some(10);
    let resp = register_with_auth(&phone, &mut reg, "pw100", "MD5");
    assert_eq!(resp.code(), Some(423));
    assert_eq!(resp.headers.get("Min-Expires"), Some("60"));
}

#[test]
fn instance_id_binding_replaces_itself_when_the_nat_port_changes() {
    let gw = gateway();
    let phone = Phone::new("127.0.0.1", gw.addr());
    let instance = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1";
    for port in [5555, 5556] {
        let mut reg = Register::new("127.0.0.1", "100", "x");
        reg.contacts = vec![format!("<sip:100@127.0.0.1:{port}>;{instance}")];
        register(&phone, &mut reg, "pw100");
    }
    let rows = gw.registrations();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["contact"], "sip:100@127.0.0.1:5556");
}

/// Huge pages stall the thread whose first touch zeroes one, and its
/// answers then leave in bursts (see ARCHITECTURE, memory).
#[test]
fn the_gateway_runs_without_transparent_huge_pages() {
    let gw = gateway();
    assert_eq!(gw.proc_status("THP_enabled").as_deref(), Some("0"));
}

#[test]
fn retransmission_is_answered_from_the_transaction() {
    let gw = gateway();
    let phone = Phone::new("127.0.0.1", gw.addr());
    let mut reg = Register::new("127.0.0.1", "100", &contact_of(&phone, "100"));
    let ch = first_challenge(&phone, &reg);
    reg.cseq += 1;
    reg.authorization = Some(authorization(
        &ch,
        "100",
        "pw100",
        "REGISTER",
        "sip:127.0.0.1",
        1,
    ));
    let text = reg.text(&phone);
    phone.send_raw(text.as_bytes());
    let ok = phone.recv();
    assert_eq!(ok.code(), Some(200));
    // The same request again (same branch): the same 200, not a replay challenge.
    phone.send_raw(text.as_bytes());
    let again = phone.recv();
    assert_eq!(again, ok, "byte-identical answer from the transaction");
    assert_eq!(gw.stat("retransmissions_absorbed"), 1);
    assert_eq!(gw.stat("registers"), 1);
}

#[test]
fn out_of_order_cseq_is_refused() {
    let gw = gateway();
    let phone = Phone::new("127.0.0.1", gw.addr());
    let mut reg = Register::new("127.0.0.1", "100", &contact_of(&phone, "100"));
    reg.cseq = 10;
    register(&phone, &mut reg, "pw100");
    reg.cseq = 5;
    let resp = register_with_auth(&phone, &mut reg, "pw100", "MD5");
    assert_eq!(resp.code(), Some(400));
}

#[test]
fn bindings_survive_restart_and_kill_9_right_after_200() {
    let mut gw = gateway();
    let mut phone = Phone::new("127.0.0.1", gw.addr());
    let mut reg = Register::new("127.0.0.1", "100", &contact_of(&phone, "100"));
    register(&phone, &mut reg, "pw100");
    // Kill -9 the moment the 200 OK is in hand.
    gw.kill9();
    // Offline listing reads the database.
    let rows = gw.registrations();
    assert_eq!(rows.len(), 1);
    gw.restart_same_ports();
    let rows = gw.registrations();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["contact"], contact_of(&phone, "100").as_str());
    // The restarted gateway answers the same phone.
    phone.server = gw.addr();
    let mut reg2 = Register::new("127.0.0.1", "101", &contact_of(&phone, "101"));
    register(&phone, &mut reg2, "pw101");
    assert_eq!(gw.registrations().len(), 2);
}

#[test]
fn expired_bindings_are_purged_after_restart() {
    let mut gw = Gateway::start(
        "127.0.0.1",
        &format!("[registrar]\nmin_expires_s = 1\n{USERS}"),
    );
    let phone = Phone::new("127.0.0.1", gw.addr());
    let mut reg = Register::new("127.0.0.1", "100", &contact_of(&phone, "100"));
    reg.expires = Some(1);
    register(&phone, &mut reg, "pw100");
    gw.kill9();
    std::thread::sleep(Duration::from_millis(1100));
    gw.restart_same_ports();
    assert!(gw.registrations().is_empty());
}

#[test]
fn options_is_answered_and_unknown_methods_get_501() {
    let gw = gateway();
    let phone = Phone::new("127.0.0.1", gw.addr());
    let local = phone.local();
    let req = |method: &str, mf: u32| {
        format!(
            "{method} sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{method}{mf}\r\n\
             Max-Forwards: {mf}\r\nFrom: <sip:probe@127.0.0.1>;tag=9\r\nTo: <sip:127.0.0.1>\r\n\
             Call-ID: {method}{mf}@test\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let ok = phone.request(&req("OPTIONS", 70));
    assert_eq!(ok.code(), Some(200));
    assert!(ok.headers.get("Allow").unwrap().contains("REGISTER"));
    assert_eq!(phone.request(&req("FROBNICATE", 70)).code(), Some(501));
    let not_allowed = phone.request(&req("SUBSCRIBE", 70));
    assert_eq!(not_allowed.code(), Some(405));
    assert!(not_allowed.headers.get("Allow").is_some());
    assert_eq!(phone.request(&req("REGISTER", 0)).code(), Some(483));
}

#[test]
fn invite_challenge_is_not_amplified_and_finals_are_retransmitted_until_ack() {
    let gw = Gateway::start(
        "127.0.0.1",
        &format!("[transaction]\nt1_ms = 50\nt2_ms = 200\n{USERS}"),
    );
    let phone = Phone::new("127.0.0.1", gw.addr());
    let local = phone.local();
    let invite = |branch: &str, from: &str| {
        format!(
            "INVITE sip:101@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{from}@127.0.0.1>;tag=a1\r\nTo: <sip:101@127.0.0.1>\r\n\
             Call-ID: {branch}@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // An unauthenticated INVITE: one 407, never retransmitted by timer (an
    // unverified source must not get more answers than it sends requests).
    let text = invite("z9hG4bKinv1", "100");
    phone.send_raw(text.as_bytes());
    let first = phone.recv();
    assert_eq!(first.code(), Some(407));
    assert!(phone.recv_within(Duration::from_millis(400)).is_none());
    // Its own retransmission gets the same 407 from the transaction.
    phone.send_raw(text.as_bytes());
    assert_eq!(phone.recv(), first);

    // A final non-2xx answer after authentication (480: callee not registered)
    // is retransmitted with Timer G until the ACK comes.
    let mut auth_invite = invite("z9hG4bKinv2", "100");
    let ch = challenges(&first).remove(0);
    let authz = authorization(&ch, "100", "pw100", "INVITE", "sip:101@127.0.0.1", 1);
    auth_invite = auth_invite.replace(
        "Content-Length: 0",
        &format!("Proxy-Authorization: {authz}\r\nContent-Length: 0"),
    );
    phone.send_raw(auth_invite.as_bytes());
    let trying = phone.recv();
    assert_eq!(
        trying.code(),
        Some(100),
        "the proxy answers at once: {trying:?}"
    );
    let unavailable = phone.recv();
    assert_eq!(unavailable.code(), Some(480), "{unavailable:?}");
    let again = phone
        .recv_within(Duration::from_millis(500))
        .expect("retransmitted 480");
    assert_eq!(again, unavailable);
    let to = unavailable.headers.get("To").unwrap();
    let ack = format!(
        "ACK sip:101@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKinv2\r\n\
         Max-Forwards: 70\r\nFrom: <sip:100@127.0.0.1>;tag=a1\r\nTo: {to}\r\n\
         Call-ID: z9hG4bKinv2@test\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    phone.send_raw(ack.as_bytes());
    // Drain anything in flight, then silence.
    while phone.recv_within(Duration::from_millis(150)).is_some() {}
    assert!(
        phone.recv_within(Duration::from_millis(600)).is_none(),
        "no more retransmissions after ACK"
    );
}

/// Path (RFC 3327): a registrar echoes the Path of a UA that supports it.
#[test]
fn path_is_echoed_to_a_ua_that_supports_it() {
    let gw = gateway();
    let phone = Phone::new("127.0.0.1", gw.addr());
    let mut reg = Register::new("127.0.0.1", "100", &contact_of(&phone, "100"));
    reg.extra = vec![
        "Supported: path, outbound".into(),
        "Path: <sip:edge.example;lr>".into(),
    ];
    let ok = register(&phone, &mut reg, "pw100");
    assert_eq!(ok.code(), Some(200));
    assert_eq!(ok.headers.get("Path"), Some("<sip:edge.example;lr>"));
    // Without Supported: path, no Path comes back.
    reg.extra = vec!["Path: <sip:edge.example;lr>".into()];
    reg.call_id = format!("reg-{:x}@test", rand::random::<u64>());
    reg.cseq = 1;
    reg.authorization = None;
    let ok = register(&phone, &mut reg, "pw100");
    assert_eq!(ok.code(), Some(200));
    assert!(ok.headers.get("Path").is_none());
}
