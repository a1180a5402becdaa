//! SIPp (Debian `sip-tester`) registers 100 users with digest auth through
//! the real binary. A missing `sipp` fails the test: it never skips quietly.

mod common;

use std::process::Command;

use common::*;

const USERS: u32 = 100;
const FIRST: u32 = 2000;

/// Reads a counter from the last line of SIPp's `-trace_stat` CSV.
fn stat_column(csv: &str, column: &str) -> u64 {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().expect("stat header").split(';').collect();
    let last: Vec<&str> = lines.next_back().expect("stat row").split(';').collect();
    let i = header
        .iter()
        .position(|h| *h == column)
        .unwrap_or_else(|| panic!("no column {column}"));
    last[i].trim().parse().unwrap()
}

#[test]
fn sipp_registers_100_users_with_digest() {
    let mut extensions = String::new();
    let mut csv = String::from("SEQUENTIAL\n");
    for user in FIRST..FIRST + USERS {
        extensions.push_str(&format!(
            "[[extension]]\nnumber = \"{user}\"\npassword = \"pw{user}\"\n"
        ));
        csv.push_str(&format!(
            "{user};[authentication username={user} password=pw{user}]\n"
        ));
    }
    // SIPp 3.6 answers only the first challenge and knows only MD5.
    let gw = Gateway::start(
        "127.0.0.1",
        &format!("[auth]\nalgorithms = [\"MD5\", \"SHA-256\"]\n{extensions}"),
    );
    let dir = &gw.dir.0;
    std::fs::write(dir.join("users.csv"), csv).unwrap();
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/sipp/register_auth.xml"
    );
    let output = Command::new("sipp")
        .current_dir(dir)
        .arg(gw.addr().to_string())
        .args(["-sf", scenario, "-inf", "users.csv"])
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-p", &free_udp_port("127.0.0.1").to_string()])
        .args(["-cp", &free_udp_port("127.0.0.1").to_string()])
        .args(["-key", "domain", "127.0.0.1", "-key", "expires", "600"])
        .args(["-auth_uri", "127.0.0.1"])
        .args(["-m", &USERS.to_string(), "-r", "50", "-timeout", "60s"])
        .args(["-trace_stat", "-stf", "stat.csv", "-fd", "1"])
        .args(["-trace_err", "-error_file", "errors.log", "-nostdin"])
        .output()
        .expect("`sipp` is needed: apt-get install sip-tester");
    let stat = std::fs::read_to_string(dir.join("stat.csv")).unwrap_or_default();
    assert_eq!(
        output.status.code(),
        Some(0),
        "sipp failed\nstdout: {}\nstderr: {}\nerrors: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default()
    );
    assert_eq!(stat_column(&stat, "SuccessfulCall(C)"), u64::from(USERS));
    assert_eq!(stat_column(&stat, "FailedCall(C)"), 0);

    // The table shows every user once, with SIPp's User-Agent.
    let table = gw.cli(&["registrations", "list"]);
    for user in FIRST..FIRST + USERS {
        assert!(
            table.lines().any(|l| l.starts_with(&format!("{user} "))),
            "{user} missing from:\n{table}"
        );
    }
    assert!(table.contains("sipp-sipfence-test"));
    assert!(table.contains(&format!("{USERS} registration(s)")));
}
