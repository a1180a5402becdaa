//! The plugin chain is real: swapping plugins changes what the gateway does,
//! counters survive a reload, misbehaving plugins are contained, and a plugin
//! that asks for a capability it was not granted does not load.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sipfence::plugins::testing::{misbehaving, Import, TestPlugin};
use sipfence::plugins::Verdict;
use sipfence::sip::Message;

const USERS: &str = r#"
[[extension]]
number = "100"
password = "pw100"
"#;

/// Runs `sipfence ARGS CONFIG` with `text` as the config in `dir`; it must
/// fail. Returns what it said.
fn fails(args: &[&str], dir: &TempDir, text: &str) -> String {
    let config = dir.0.join("sipfence.toml");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(BIN).args(args).arg(&config).output().unwrap();
    assert!(!out.status.success(), "sipfence {args:?} must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn plugin_entry(name: &str, path: &std::path::Path, extra: &str) -> String {
    format!(
        "[[plugin]]\nname = {name:?}\npath = {:?}\n{extra}\n",
        path.display().to_string()
    )
}

#[test]
fn without_fail_to_ban_in_the_chain_there_is_no_ban() {
    let gw = Gateway::start("127.0.0.1", USERS);
    let guesser = Phone::new("127.0.0.2", gw.addr());
    for attempt in 1..=10 {
        let answer = wrong_password(&guesser, "100");
        assert_eq!(
            answer.map(|m| m.code()),
            Some(Some(401)),
            "attempt {attempt}"
        );
    }
    assert!(!gw.cli(&["bans", "list"]).contains("127.0.0.2"));
}

#[test]
fn a_wat_plugin_swapped_in_changes_the_verdicts() {
    let dir = Arc::new(TempDir::new("gw"));
    let reject = TestPlugin::returns(&Verdict::Reject {
        code: 403,
        reason: "test plugin says no".into(),
    });
    let path = write_plugin(&dir.0, "reject", &reject.wat());
    let gw = Gateway::start_in(
        dir,
        "127.0.0.1",
        "",
        &format!("{}{USERS}", plugin_entry("reject", &path, "")),
    );
    let phone = Phone::new("127.0.0.1", gw.addr());
    let answer = phone.request(&options(phone.local(), "UDP", "phone", 1));
    assert_eq!(answer.code(), Some(403));
    assert!(matches!(&answer.start,
        sipfence::sip::StartLine::Response { reason, .. } if reason == "test plugin says no"));
    // A REGISTER never reaches the registrar either.
    let reg = Register::new("127.0.0.1", "100", "sip:100@127.0.0.1:9");
    assert_eq!(phone.request(&reg.text(&phone)).code(), Some(403));
    assert_eq!(gw.stat("plugin_rejects"), 2);
}

#[test]
fn counters_survive_a_reload_with_two_workers() {
    let gw = Gateway::start_full("127.0.0.1", "workers = 2", &format!("{FAIL_TO_BAN}{USERS}"));
    let guesser = Phone::new("127.0.0.3", gw.addr());
    for _ in 0..3 {
        assert_eq!(wrong_password(&guesser, "100").unwrap().code(), Some(401));
    }
    gw.reload();
    assert_eq!(wrong_password(&guesser, "100").unwrap().code(), Some(401));
    assert!(
        wrong_password(&guesser, "100").is_none(),
        "3 + 2 failures across a reload still ban"
    );
    assert!(gw.cli(&["bans", "list"]).contains("127.0.0.3"));
}

#[test]
fn a_reload_that_fails_keeps_the_old_chain() {
    let gw = Gateway::start("127.0.0.1", &format!("{FAIL_TO_BAN}{USERS}"));
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(
        &gw.config_path,
        text.replace("builtin:fail-to-ban", "/nonexistent.wasm"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["plugins", "reload", "--config"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nonexistent.wasm"), "{err}");
    // fail-to-ban still works.
    let guesser = Phone::new("127.0.0.4", gw.addr());
    for _ in 0..4 {
        wrong_password(&guesser, "100").unwrap();
    }
    assert!(wrong_password(&guesser, "100").is_none());
}

/// The misbehaving plugin loops on CSeq 1, eats memory on 2, traps on 3,
/// and rejects with 403 otherwise.
fn misbehaving_gateway(on_error: &str) -> Gateway {
    let dir = Arc::new(TempDir::new("gw"));
    let path = write_plugin(&dir.0, "bad", &misbehaving().wat());
    let entry = plugin_entry(
        "bad",
        &path,
        &format!("on_error = {on_error:?}\ntimeout_ms = 50\nmemory_limit_bytes = 1048576"),
    );
    Gateway::start_in(dir, "127.0.0.1", "", &format!("{entry}{USERS}"))
}

fn plugin_stats(gw: &Gateway) -> serde_json::Value {
    let text = gw.cli(&["plugins", "list"]);
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    list[0].clone()
}

#[test]
fn misbehaving_plugin_fail_open_is_stopped_and_the_gateway_keeps_answering() {
    let gw = misbehaving_gateway("fail-open");
    let phone = Phone::new("127.0.0.1", gw.addr());
    for cseq in [1, 2, 3] {
        // Stopped, then treated as `continue`: OPTIONS is answered.
        let answer = phone.request(&options(phone.local(), "UDP", "phone", cseq));
        assert_eq!(answer.code(), Some(200), "cseq {cseq}");
    }
    // Three failures in a row put the plugin in a short backoff (100 ms),
    // during which its policy answers; then healthy requests reach a fresh
    // instance again.
    std::thread::sleep(Duration::from_millis(300));
    let answer = phone.request(&options(phone.local(), "UDP", "phone", 9));
    assert_eq!(answer.code(), Some(403));
    let stats = plugin_stats(&gw);
    assert_eq!(stats["timeouts"], 1, "{stats}");
    assert_eq!(stats["out_of_memory"], 1, "{stats}");
    assert_eq!(stats["traps"], 1, "{stats}");
    gw.wait_log("plugin call failed", 3);
    let log = gw.log_text();
    let reported = log
        .lines()
        .filter(|l| l.contains("plugin call failed") && l.contains("\"plugin\":\"bad\""))
        .count();
    assert_eq!(reported, 3, "each failure is logged with the plugin's name");
}

#[test]
fn misbehaving_plugin_fail_closed_drops_and_the_gateway_keeps_answering() {
    let gw = misbehaving_gateway("fail-closed");
    let phone = Phone::new("127.0.0.1", gw.addr());
    phone.send_raw(options(phone.local(), "UDP", "phone", 1).as_bytes());
    assert!(
        phone.recv_within(Duration::from_millis(500)).is_none(),
        "fail-closed: the request whose plugin looped is dropped"
    );
    let answer = phone.request(&options(phone.local(), "UDP", "phone", 9));
    assert_eq!(answer.code(), Some(403), "the next request is served");
    assert_eq!(plugin_stats(&gw)["timeouts"], 1);
}

/// Extension 101 exists but nobody registered it: a call to it is routed
/// (call-started), rings nobody and ends with 480 (call-ended).
const TWO_USERS: &str = r#"
[[extension]]
number = "100"
password = "pw100"

[[extension]]
number = "101"
password = "pw101"
"#;

/// A gateway whose only plugin bans the source of every event of `case`
/// (4 call-started, 5 call-ended), with the Call-ID as the reason.
fn call_event_banner(case: u8) -> Gateway {
    let dir = Arc::new(TempDir::new("gw"));
    // The ban's duration echoes the event's transport byte (udp: 0, so the
    // default ban duration), its reason the call-id (at +8 in both cases).
    let transport_at = if case == 4 { 52 } else { 44 };
    let banner = TestPlugin::echoes(case, transport_at, 1, 8);
    let path = write_plugin(&dir.0, "banner", &banner.wat());
    Gateway::start_in(
        dir,
        "127.0.0.1",
        "",
        &format!("{}{TWO_USERS}", plugin_entry("call-banner", &path, "")),
    )
}

/// 100 calls 101 with digest auth; returns the final answer to the
/// authenticated INVITE, or None when the gateway stayed silent.
fn call_101(phone: &Phone, call_id: &str) -> Option<Message> {
    let local = phone.local();
    let invite = |branch: &str, authorization: &str| {
        format!(
            "INVITE sip:101@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:100@127.0.0.1>;tag=c1\r\nTo: <sip:101@127.0.0.1>\r\n\
             Call-ID: {call_id}\r\nCSeq: {} INVITE\r\nUser-Agent: test-phone\r\n{authorization}\
             Content-Length: 0\r\n\r\n",
            if authorization.is_empty() { 1 } else { 2 }
        )
    };
    let challenge = phone.request(&invite(&phone.next_branch(), ""));
    assert_eq!(challenge.code(), Some(407), "{challenge:?}");
    let ch = challenges(&challenge).remove(0);
    let authz = authorization(&ch, "100", "pw100", "INVITE", "sip:101@127.0.0.1", 1);
    phone.send_raw(
        invite(
            &phone.next_branch(),
            &format!("Proxy-Authorization: {authz}\r\n"),
        )
        .as_bytes(),
    );
    loop {
        let answer = phone.recv_within(Duration::from_millis(1000))?;
        if answer.code().unwrap_or(0) >= 200 {
            return Some(answer);
        }
    }
}

fn bans(gw: &Gateway) -> Vec<serde_json::Value> {
    serde_json::from_str(&gw.cli(&["bans", "list", "--json"])).unwrap()
}

#[test]
fn a_plugin_banning_on_call_ended_bans_the_caller_after_the_call() {
    let gw = call_event_banner(5);
    let caller = Phone::new("127.0.0.7", gw.addr());
    let answer = call_101(&caller, "ended-1@test").expect("the call is answered");
    assert_eq!(answer.code(), Some(480));
    // call-ended is emitted off the router's lock, just after the answer.
    wait_until(Duration::from_secs(5), "the caller banned", || {
        !bans(&gw).is_empty()
    });
    let bans = bans(&gw);
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["address"], "127.0.0.7");
    assert_eq!(bans[0]["by"], "call-banner");
    assert_eq!(bans[0]["reason"], "ended-1@test");
}

#[test]
fn a_plugin_banning_on_call_started_stops_the_call() {
    let gw = call_event_banner(4);
    let caller = Phone::new("127.0.0.8", gw.addr());
    assert!(
        call_101(&caller, "started-1@test").is_none(),
        "no answer: the caller was banned before anything rang"
    );
    let bans = bans(&gw);
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["address"], "127.0.0.8");
    assert_eq!(bans[0]["reason"], "started-1@test");
    assert_eq!(gw.stat("calls_started"), 0);
}

#[test]
fn a_plugin_asking_for_an_ungranted_capability_does_not_load() {
    let dir = TempDir::new("gw");
    let mut greedy = TestPlugin::default();
    greedy.imports.push(Import::Kv);
    let path = write_plugin(&dir.0, "greedy", &greedy.wat());
    let text = format!(
        "{}\n{}",
        base_config(&dir.0, &["127.0.0.1:0".into()], ""),
        plugin_entry("greedy", &path, "grants = [\"counter\"]")
    );
    let err = fails(&["run", "--config"], &dir, &text);
    assert!(
        err.contains("plugin \"greedy\"") && err.contains("not granted \"kv\""),
        "{err}"
    );
}

#[test]
fn check_config_loads_the_chain_and_names_a_bad_plugin_setting() {
    let dir = TempDir::new("cfg");
    let text = format!(
        "{}\n{FAIL_TO_BAN}[plugin.config]\nthreshold = \"five\"\n",
        base_config(&dir.0, &["127.0.0.1:0".into()], "")
    );
    let err = fails(&["check-config"], &dir, &text);
    assert!(
        err.contains("fail-to-ban") && err.contains("threshold"),
        "{err}"
    );
}
