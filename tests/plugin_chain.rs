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
