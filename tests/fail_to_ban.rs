//! The fail-to-ban plugin through the real binary: password guessing,
//! scanner signatures over TCP and UDP, spoofing, restarts, unban.
//! Each test has its own gateway, so its ban list is its own.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

const USERS: &str = r#"
[[extension]]
number = "100"
password = "pw100"
"#;

fn gateway() -> Gateway {
    Gateway::start("127.0.0.1", &format!("{FAIL_TO_BAN}{USERS}"))
}

fn good_registration(phone: &Phone) {
    let mut reg = Register::new("127.0.0.1", "100", &format!("sip:100@{}", phone.local()));
    let ok = register_with_auth(phone, &mut reg, "pw100", "SHA-256");
    assert_eq!(ok.code(), Some(200), "{ok:?}");
}

/// Four wrong passwords are answered; the fifth bans, and is not.
fn ban_by_guessing(guesser: &Phone) {
    for attempt in 1..=4 {
        let answer = wrong_password(guesser, "100").expect("answered before the threshold");
        assert_eq!(answer.code(), Some(401), "attempt {attempt}");
    }
    assert!(
        wrong_password(guesser, "100").is_none(),
        "5th failure must be dropped"
    );
}

#[test]
fn password_guessing_is_banned_while_a_good_user_keeps_registering() {
    let gw = gateway();
    let guesser = Phone::new("127.0.0.2", gw.addr());
    let good = Phone::new("127.0.0.1", gw.addr());
    for attempt in 1..=4 {
        let answer = wrong_password(&guesser, "100").expect("answered before the threshold");
        assert_eq!(answer.code(), Some(401), "attempt {attempt}");
        good_registration(&good);
    }
    // The 5th failure bans: its answer never comes.
    assert!(
        wrong_password(&guesser, "100").is_none(),
        "5th failure must be dropped"
    );
    // Every later packet from 127.0.0.2 is dropped unanswered.
    guesser.send_raw(options(guesser.local(), "UDP", "phone", 1).as_bytes());
    assert!(guesser.recv_within(Duration::from_millis(300)).is_none());
    good_registration(&good);

    let bans = gw.cli(&["bans", "list", "--json"]);
    let bans: Vec<serde_json::Value> = serde_json::from_str(&bans).unwrap();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["address"], "127.0.0.2");
    assert_eq!(bans[0]["by"], "fail-to-ban");
    assert!(
        bans[0]["reason"].as_str().unwrap().contains('5'),
        "evidence counts: {bans:?}"
    );
    assert!(bans[0]["dropped"].as_u64().unwrap() >= 1);
    assert!(gw.stat("dropped_banned") >= 1);
}

#[test]
fn unknown_users_and_wrong_passwords_count_alike() {
    let gw = gateway();
    let guesser = Phone::new("127.0.0.2", gw.addr());
    for user in ["100", "200", "300", "400"] {
        assert_eq!(wrong_password(&guesser, user).unwrap().code(), Some(401));
    }
    assert!(wrong_password(&guesser, "500").is_none());
}

#[test]
fn scanner_user_agent_over_tcp_is_banned_at_once() {
    let gw = gateway();
    let mut stream = tcp_connect("127.0.0.4", gw.addr());
    let local = stream.local_addr().unwrap();
    stream
        .write_all(options(local, "TCP", "friendly-scanner", 1).as_bytes())
        .unwrap();
    // No answer, and the connection is closed by the ban.
    let mut buf = [0u8; 64];
    assert_eq!(stream.read(&mut buf).unwrap_or(0), 0);
    // New connections and UDP from that address are refused too.
    let udp = Phone::new("127.0.0.4", gw.addr());
    udp.send_raw(options(udp.local(), "UDP", "phone", 1).as_bytes());
    assert!(udp.recv_within(Duration::from_millis(300)).is_none());
    let mut again = tcp_connect("127.0.0.4", gw.addr());
    assert_eq!(again.read(&mut buf).unwrap_or(0), 0);
    let bans = gw.cli(&["bans", "list"]);
    assert!(
        bans.contains("127.0.0.4") && bans.contains("friendly-scanner"),
        "{bans}"
    );
}

#[test]
fn scanner_user_agent_over_udp_is_dropped_then_banned_when_it_repeats() {
    let gw = gateway();
    let scanner = Phone::new("127.0.0.5", gw.addr());
    // First signature: dropped at once, but a UDP source may be spoofed: no ban.
    scanner.send_raw(options(scanner.local(), "UDP", "friendly-scanner", 1).as_bytes());
    assert!(scanner.recv_within(Duration::from_millis(300)).is_none());
    let ok = scanner.request(&options(scanner.local(), "UDP", "phone", 1));
    assert_eq!(ok.code(), Some(200), "not banned by one spoofable packet");
    // Repeats ban.
    for _ in 0..2 {
        scanner.send_raw(options(scanner.local(), "UDP", "sipvicious", 1).as_bytes());
        assert!(scanner.recv_within(Duration::from_millis(300)).is_none());
    }
    scanner.send_raw(options(scanner.local(), "UDP", "phone", 1).as_bytes());
    assert!(
        scanner.recv_within(Duration::from_millis(300)).is_none(),
        "banned after repeats"
    );
    assert!(gw.cli(&["bans", "list"]).contains("127.0.0.5"));
}

#[test]
fn a_spoofed_scanner_packet_does_not_ban_a_registered_phone() {
    let gw = gateway();
    let phone = Phone::new("127.0.0.6", gw.addr());
    good_registration(&phone);
    // An attacker forges one packet with the phone's address and a scanner UA.
    let forged = Phone::new("127.0.0.6", gw.addr());
    forged.send_raw(options(forged.local(), "UDP", "friendly-scanner", 1).as_bytes());
    assert!(forged.recv_within(Duration::from_millis(300)).is_none());
    // The phone keeps working.
    good_registration(&phone);
    assert!(!gw.cli(&["bans", "list"]).contains("127.0.0.6"));
}

#[test]
fn a_ban_survives_kill_9_and_restart_and_unban_lifts_it() {
    let mut gw = gateway();
    let guesser = Phone::new("127.0.0.7", gw.addr());
    ban_by_guessing(&guesser);
    gw.kill9();
    // Offline: the database has it.
    assert!(gw.cli(&["bans", "list"]).contains("127.0.0.7"));
    gw.restart_same_ports();
    guesser.send_raw(options(guesser.local(), "UDP", "phone", 1).as_bytes());
    assert!(
        guesser.recv_within(Duration::from_millis(300)).is_none(),
        "still banned after restart"
    );
    // Lifted on the running gateway at once.
    let out = gw.cli(&["bans", "unban", "127.0.0.7"]);
    assert!(out.contains("unbanned"), "{out}");
    let ok = guesser.request(&options(guesser.local(), "UDP", "phone", 1));
    assert_eq!(ok.code(), Some(200));
    assert!(!gw.cli(&["bans", "list"]).contains("127.0.0.7"));
}

#[test]
fn offline_unban_edits_the_database() {
    let mut gw = gateway();
    let guesser = Phone::new("127.0.0.8", gw.addr());
    ban_by_guessing(&guesser);
    gw.kill9();
    let out = gw.cli(&["bans", "unban", "127.0.0.8"]);
    assert!(out.contains("unbanned"), "{out}");
    gw.restart_same_ports();
    let ok = guesser.request(&options(guesser.local(), "UDP", "phone", 1));
    assert_eq!(ok.code(), Some(200));
}

#[test]
fn a_banned_source_that_keeps_sending_is_dropped_by_the_kernel_until_unbanned() {
    let gw = Gateway::start(
        "127.0.0.1",
        &format!("{FAIL_TO_BAN}{USERS}\n[bans]\nkernel_drop_after = 20\n"),
    );
    let flooder = Phone::new("127.0.0.9", gw.addr());
    let good = Phone::new("127.0.0.1", gw.addr());
    ban_by_guessing(&flooder);
    let ban = || -> serde_json::Value {
        let bans: Vec<serde_json::Value> =
            serde_json::from_str(&gw.cli(&["bans", "list", "--json"])).unwrap();
        bans.into_iter()
            .find(|b| b["address"] == "127.0.0.9")
            .expect("the flooder is banned")
    };
    let flood = |n: u32| {
        for cseq in 0..n {
            flooder.send_raw(options(flooder.local(), "UDP", "phone", cseq).as_bytes());
        }
    };
    // The gateway reads and drops the first packets, then hands the source
    // to the kernel.
    flood(30);
    wait_until(
        Duration::from_secs(5),
        "the ban moves to the kernel",
        || ban()["in_kernel"] == true,
    );
    let read_and_dropped = ban()["dropped"].as_u64().unwrap();
    assert!(read_and_dropped >= 20, "{}", ban());
    let kernel_before = gw.stat("udp_kernel_drops");
    flood(300);
    wait_until(
        Duration::from_secs(5),
        "the kernel counts the drops",
        || gw.stat("udp_kernel_drops") >= kernel_before + 300,
    );
    // None of those reached the gateway, and good users are unaffected.
    assert_eq!(ban()["dropped"].as_u64().unwrap(), read_and_dropped);
    assert!(flooder.recv_within(Duration::from_millis(100)).is_none());
    good_registration(&good);
    // An unban lets the source in at once, kernel filter included.
    let out = gw.cli(&["bans", "unban", "127.0.0.9"]);
    assert!(out.contains("unbanned"), "{out}");
    let ok = flooder.request(&options(flooder.local(), "UDP", "phone", 1));
    assert_eq!(ok.code(), Some(200));
}
