//! SIPVicious 0.3.3 (Debian `sipvicious`), the scanner most SIP attacks start
//! with, against the real binary with fail-to-ban in its chain: `svwar`
//! (extension enumeration) finds nothing, `svcrack` (password guessing) is
//! stopped before the right password, by the scanner signature or by the
//! failed-authentication threshold, and the source ends up banned. Controls
//! without the signature or without fail-to-ban show the scanner does work
//! against this gateway, so the tests cannot pass for the wrong reason.
//!
//! Every run goes through the bench kit's wrapper `sv_bound.py` (svwar and
//! svcrack 0.3.3 ignore `-b`) with `SV_BIND`, so the scanner's source address
//! is its own 127.0.0.x, never 127.0.0.1; `-R` (reportback, which mails the
//! author over the internet) is never passed. Every run is bounded by
//! `--maximumtime` and killed after a deadline. A missing scanner or wrapper
//! fails the test: it never skips quietly.
//!
//! Timings are the tools' own: svwar waits 3 s for a first answer, svcrack
//! 10 s (both hard-coded), which is what a dropped scanner costs here.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The kit's wrapper that makes svwar/svcrack honour the binding address.
const WRAPPER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/bench/sipvicious/sv_bound.py"
);

/// Extensions 100, 101 and 105 exist; svwar scans 100-119.
const USERS: &str = r#"
[[extension]]
number = "100"
password = "Kx7-pw100"

[[extension]]
number = "101"
password = "Kx7-pw101"

[[extension]]
number = "105"
password = "Kx7-pw105"
"#;

/// svcrack answers only the first challenge, and knows only MD5.
const MD5_FIRST: &str = "[auth]\nalgorithms = [\"MD5\", \"SHA-256\"]\n";

const NO_SIGNATURES: &str = "[plugin.config]\nscanner_signatures = false\n";

fn gateway(plugins: &str) -> Gateway {
    require_sipvicious();
    Gateway::start("127.0.0.1", &format!("{MD5_FIRST}{plugins}{USERS}"))
}

fn password(user: &str) -> String {
    format!("Kx7-pw{user}")
}

/// A dictionary file: nine wrong words, `user`'s real password 10th, and a
/// few more wrong ones after it.
fn dictionary_right_10th(dir: &Path, user: &str) -> String {
    let mut words: Vec<String> = (1..=9).map(|i| format!("guess{i}")).collect();
    words.push(password(user));
    words.extend((11..=14).map(|i| format!("guess{i}")));
    write_dictionary(dir, &format!("dict-{user}-10th.txt"), &words)
}

fn write_dictionary(dir: &Path, name: &str, words: &[String]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, words.join("\n") + "\n").unwrap();
    path.display().to_string()
}

/// Where `tool` is on PATH.
fn on_path(tool: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// What one scanner run printed.
struct Scan {
    what: String,
    /// Result tables (svwar: extensions, svcrack: passwords).
    stdout: String,
    /// The tools' log lines.
    stderr: String,
    elapsed: Duration,
}

impl Scan {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    fn show(&self) -> String {
        format!(
            "{} ({:.1} s)\n--- stdout ---\n{}--- stderr ---\n{}",
            self.what,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// Fails at once, with what to install, when the scanner or the kit's
/// wrapper is missing.
fn require_sipvicious() {
    assert!(
        Path::new(WRAPPER).is_file(),
        "the SIPVicious wrapper {WRAPPER} is missing: these tests need the bench kit's \
         shared/ folder beside the repository"
    );
    for tool in ["svwar", "svcrack"] {
        assert!(
            on_path(tool).is_some(),
            "`{tool}` not found on PATH: these tests need SIPVicious 0.3.3 \
             (apt-get install sipvicious)"
        );
    }
}

/// Starts `tool` (svwar or svcrack) through the wrapper from `source`
/// against the gateway; returns a handle to wait on.
fn spawn_scanner(
    tool: &str,
    source: &str,
    gw: &Gateway,
    args: &[&str],
) -> (String, std::process::Child) {
    assert!(
        source.starts_with("127.") && source != "127.0.0.1",
        "the scanner needs its own loopback address, not {source}"
    );
    assert!(
        !args
            .iter()
            .any(|a| *a == "-R" || a.starts_with("--reportback")),
        "never -R/--reportback: it mails a report over the internet"
    );
    assert!(
        args.contains(&"--maximumtime"),
        "every scanner run must be bounded by --maximumtime"
    );
    require_sipvicious();
    let target = gw.addr();
    assert!(target.ip().is_loopback(), "loopback targets only");
    let port = target.port().to_string();
    let local_port = free_udp_port(source).to_string();
    let mut command = Command::new(WRAPPER);
    command
        .arg(tool)
        .args(["-p", &port, "-b", source, "-P", &local_port])
        .args(["--domain", "127.0.0.1"])
        .args(args)
        .arg(target.ip().to_string())
        .env("SV_BIND", source)
        // sipvicious keeps sessions under ~/.sipvicious: never the real one.
        .env("HOME", &gw.dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{tool} {} (from {source}:{local_port})", args.join(" "));
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {WRAPPER} {tool}: {e}"));
    (what, child)
}

/// Waits for a spawned scanner; kills it and fails after `limit`.
fn wait_scanner(what: String, mut child: std::process::Child, limit: Duration) -> Scan {
    let start = Instant::now();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let scan = Scan {
        what,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed: start.elapsed(),
    };
    match status {
        None => panic!("killed after {limit:?}: {}", scan.show()),
        Some(s) => assert!(s.success(), "{s}: {}", scan.show()),
    }
    eprintln!("{}", scan.show());
    scan
}

fn scanner(tool: &str, source: &str, gw: &Gateway, args: &[&str], limit: Duration) -> Scan {
    let (what, child) = spawn_scanner(tool, source, gw, args);
    wait_scanner(what, child, limit)
}

/// svwar waits 3 s for its first answer.
const SVWAR_LIMIT: Duration = Duration::from_secs(20);

/// One bounded svwar run over extensions 100-119 from `source`.
fn svwar(gw: &Gateway, source: &str, args: &[&str]) -> Scan {
    let range = ["-e", "100-119", "--maximumtime", "2"];
    scanner(
        "svwar",
        source,
        gw,
        &[&range[..], args].concat(),
        SVWAR_LIMIT,
    )
}
/// svcrack waits 10 s for an answer, after `--maximumtime` of silence.
const SVCRACK_LIMIT: Duration = Duration::from_secs(30);

fn bans(gw: &Gateway) -> Vec<serde_json::Value> {
    serde_json::from_str(&gw.cli(&["bans", "list", "--json"])).unwrap()
}

/// The ban of `address`, if any.
fn ban_of(gw: &Gateway, address: &str) -> Option<serde_json::Value> {
    bans(gw).into_iter().find(|b| b["address"] == address)
}

/// svwar found no extension: no result table, and its "found nothing".
fn assert_no_extension_found(scan: &Scan) {
    assert!(
        scan.stderr.contains("found nothing")
            && !scan.stdout.contains("Authentication")
            && !scan.all().contains("reqauth")
            && !scan.all().contains("noauth")
            && !scan.all().contains("exists"),
        "svwar must find no extension: {}",
        scan.show()
    );
}

/// svcrack did not crack `user`: no password table, its "found nothing",
/// and the password nowhere in its output.
fn assert_not_cracked(scan: &Scan, user: &str) {
    assert!(
        scan.stderr.contains("found nothing")
            && !scan.stdout.contains("Password")
            && !scan.all().contains(&password(user)),
        "svcrack must not find the password of {user}: {}",
        scan.show()
    );
}

/// The source answers nothing any more, whatever it sends.
fn assert_silenced(gw: &Gateway, source: &str) {
    // Counted by the gateway, or by the kernel once the scanner has sent
    // enough into silence for its ban to move there (bans.kernel_drop_after).
    let dropped = || gw.stat("dropped_banned") + gw.stat("udp_kernel_drops");
    let before = dropped();
    let phone = Phone::new(source, gw.addr());
    phone.send_raw(options(phone.local(), "UDP", "phone", 1).as_bytes());
    assert!(
        phone.recv_within(Duration::from_millis(300)).is_none(),
        "{source} must be banned"
    );
    wait_until(Duration::from_secs(3), "the drop to be counted", || {
        dropped() > before
    });
}

#[test]
fn svwar_finds_no_extension_and_its_repeats_ban_the_source() {
    let gw = gateway(FAIL_TO_BAN);
    let scanner_ip = "127.0.0.41";
    // svwar first probes a random extension with `User-Agent:
    // friendly-scanner` over UDP: dropped, so it gives up on that probe.
    let register = svwar(&gw, scanner_ip, &["-m", "REGISTER"]);
    let invite = svwar(&gw, scanner_ip, &["-m", "INVITE"]);
    for scan in [&register, &invite] {
        assert_no_extension_found(scan);
        assert!(
            scan.stderr.contains("timed out"),
            "no answer at all: {}",
            scan.show()
        );
    }
    // Two unverified (UDP) signatures: dropped, not yet banned (one forged
    // packet must not ban the address it names).
    assert_eq!(gw.stat("plugin_drops"), 2);
    assert_eq!(gw.stat("challenges"), 0, "nothing was answered");
    assert!(ban_of(&gw, scanner_ip).is_none(), "{:?}", bans(&gw));

    // The scanner tries again: the third signature bans.
    let again = svwar(&gw, scanner_ip, &["-m", "REGISTER"]);
    assert_no_extension_found(&again);
    let ban = ban_of(&gw, scanner_ip).expect("the scanner's source is banned");
    assert_eq!(ban["by"], "fail-to-ban");
    let reason = ban["reason"].as_str().unwrap();
    assert!(reason.contains("friendly-scanner"), "{reason}");
    assert_eq!(gw.stat("bans_added"), 1);
    assert_eq!(bans(&gw).len(), 1, "only the scanner: {:?}", bans(&gw));
    assert_silenced(&gw, scanner_ip);
}

#[test]
fn svwar_cannot_tell_real_extensions_from_unknown_ones() {
    // Control without the signature: svwar gets answers, and they are the
    // same for the real extensions (100, 101, 105) and the others.
    let gw = gateway(&format!("{FAIL_TO_BAN}{NO_SIGNATURES}"));
    let scanner_ip = "127.0.0.42";
    let register = svwar(&gw, scanner_ip, &["-m", "REGISTER"]);
    let invite = svwar(&gw, scanner_ip, &["-m", "INVITE"]);
    for scan in [&register, &invite] {
        assert_no_extension_found(scan);
        assert!(
            scan.stderr.contains(
                "SIP server replied with an authentication request for an unknown extension"
            ),
            "{}",
            scan.show()
        );
    }
    // Forced past that check, it compares every answer with the one for an
    // unknown extension: all alike, so still nothing.
    let forced = svwar(&gw, scanner_ip, &["-m", "REGISTER", "--force"]);
    assert_no_extension_found(&forced);
    assert!(gw.stat("challenges") >= 3, "svwar was answered");
    // Challenges without credentials are no failures: no ban.
    assert_eq!(gw.stat("auth_failed"), 0);
    assert!(bans(&gw).is_empty(), "{:?}", bans(&gw));
}

#[test]
fn svcrack_with_a_scanner_user_agent_is_dropped_then_banned() {
    let gw = gateway(FAIL_TO_BAN);
    let scanner_ip = "127.0.0.43";
    // The attacker goes after three extensions at once; each run's first
    // REGISTER carries `User-Agent: friendly-scanner` and is dropped, and the
    // third such packet bans. The right password is each dictionary's 10th.
    let runs: Vec<_> = ["100", "101", "105"]
        .into_iter()
        .map(|user| {
            let dict = dictionary_right_10th(&gw.dir.0, user);
            let args = ["-u", user, "-d", &dict, "--maximumtime", "2"];
            (user, spawn_scanner("svcrack", scanner_ip, &gw, &args))
        })
        .collect();
    for (user, (what, child)) in runs {
        let scan = wait_scanner(what, child, SVCRACK_LIMIT);
        assert_not_cracked(&scan, user);
        assert!(
            scan.stderr.contains("no server response"),
            "{}",
            scan.show()
        );
    }
    // Not one password was tried.
    assert_eq!(gw.stat("challenges"), 0);
    assert_eq!(gw.stat("auth_failed") + gw.stat("auth_ok"), 0);
    assert_eq!(gw.stat("plugin_drops"), 2);
    let ban = ban_of(&gw, scanner_ip).expect("the scanner's source is banned");
    assert_eq!(ban["by"], "fail-to-ban");
    let reason = ban["reason"].as_str().unwrap();
    assert!(
        reason.contains("friendly-scanner") && reason.contains("UDP"),
        "{reason}"
    );
    assert!(gw.registrations().is_empty());
    assert_silenced(&gw, scanner_ip);
}

#[test]
fn svcrack_without_the_signature_is_banned_by_the_failure_threshold() {
    let gw = gateway(&format!("{FAIL_TO_BAN}{NO_SIGNATURES}"));
    let scanner_ip = "127.0.0.44";
    let dict = dictionary_right_10th(&gw.dir.0, "100");
    let scan = scanner(
        "svcrack",
        scanner_ip,
        &gw,
        &["-u", "100", "-d", &dict, "--maximumtime", "1"],
        SVCRACK_LIMIT,
    );
    assert_not_cracked(&scan, "100");
    // Banned at the 5th wrong password: it keeps sending into silence, then
    // gives up.
    assert!(
        scan.stderr
            .contains("since we last received a response - stopping"),
        "{}",
        scan.show()
    );
    let ban = ban_of(&gw, scanner_ip).expect("the scanner's source is banned");
    assert_eq!(ban["by"], "fail-to-ban");
    let reason = ban["reason"].as_str().unwrap();
    assert!(
        reason.contains("5 failed authentications") && !reason.contains("User-Agent"),
        "banned by the threshold, not the signature: {reason}"
    );
    // Each guess was a valid MD5 digest with a wrong password (the control
    // below cracks with a dictionary built the same way): counted as such.
    let failed = gw.stat("auth_failed");
    assert!((5..10).contains(&failed), "auth_failed {failed}");
    gw.wait_log("\"authentication failed\"", failed as usize);
    let wrong = gw.log_count("\"failure\":\"WrongPassword\"");
    assert_eq!(
        gw.log_count("\"authentication failed\""),
        wrong,
        "every failure a wrong password:\n{}",
        gw.log_text()
    );
    assert!(wrong >= 5, "{wrong} wrong passwords logged");
    assert_eq!(gw.stat("auth_ok"), 0);
    assert_eq!(gw.stat("plugin_drops"), 0, "the signature is off");
    // What it sent after the ban was dropped unread.
    assert!(ban["dropped"].as_u64().unwrap() >= 1, "{ban}");
    assert!(gw.stat("dropped_banned") >= 1);
    assert!(gw.registrations().is_empty());
    assert_silenced(&gw, scanner_ip);
}

#[test]
fn control_svcrack_cracks_the_password_without_fail_to_ban() {
    // Without fail-to-ban in the chain, svcrack finds the password, first
    // word or 10th: its digests are valid, so above its wrong guesses were
    // real wrong-password failures, and only fail-to-ban stopped it.
    let gw = gateway("");
    let scanner_ip = "127.0.0.45";
    let first = write_dictionary(
        &gw.dir.0,
        "dict-100-first.txt",
        &[password("100"), "guess2".into(), "guess3".into()],
    );
    let tenth = dictionary_right_10th(&gw.dir.0, "105");
    for (user, dict, failures) in [("100", &first, 0), ("105", &tenth, 9)] {
        let before = gw.stat("auth_failed");
        let scan = scanner(
            "svcrack",
            scanner_ip,
            &gw,
            &["-u", user, "-d", dict, "--maximumtime", "2"],
            SVCRACK_LIMIT,
        );
        let row = scan
            .stdout
            .lines()
            .find(|l| l.contains(&format!("| {user} ")))
            .unwrap_or_else(|| panic!("svcrack must crack {user}: {}", scan.show()));
        assert!(row.contains(&password(user)), "{}", scan.show());
        // Every wrong guess before the right one was answered (a few after
        // it may have been in flight).
        let failed = gw.stat("auth_failed") - before;
        assert!(failed >= failures, "{failed} failures");
    }
    assert_eq!(gw.stat("auth_ok"), 2);
    // Cracked means registered: svcrack's REGISTER bound a contact.
    let regs = gw.registrations();
    assert_eq!(regs.len(), 2, "{regs:?}");
    assert!(bans(&gw).is_empty());
}
