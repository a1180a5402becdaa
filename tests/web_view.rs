//! The web view in a real browser: headless Chromium (Debian's `chromium`,
//! driven by `playwright-core` from npm, tests/web/) loads the page served
//! by the real binary, sees a ban made by a real failed-auth flood, presses
//! Unban and sees it gone. The screenshots are saved under the test's
//! target tmp dir (`web-view.png`, `web-view-after.png`); the path is printed.
//! A missing node, playwright-core or chromium fails the test.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const CONFIG: &str = r#"
[[plugin]]
name = "fail-to-ban"
path = "builtin:fail-to-ban"
grants = ["counter", "kv"]

[[extension]]
number = "100"
password = "pw100"
"#;

#[test]
fn unban_from_the_web_view() {
    let gw = Gateway::start("127.0.0.1", CONFIG);
    let api = gw.api_addr.expect("the API listens");
    let token = gw.api_token.clone().expect("a generated token");

    // A real flood of wrong passwords from 127.0.0.9: fail-to-ban bans it.
    let guesser = Phone::new("127.0.0.9", gw.addr());
    for _ in 0..4 {
        assert!(wrong_password(&guesser, "100").is_some());
    }
    assert!(wrong_password(&guesser, "100").is_none(), "banned");
    // Its later packets are dropped (and counted for the chart).
    for cseq in 1..=3 {
        guesser.send_raw(options(guesser.local(), "UDP", "phone", cseq).as_bytes());
    }
    wait_until(Duration::from_secs(5), "the drops", || {
        gw.stat("dropped_banned") >= 3
    });

    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/web");
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-view.png");
    let out = std::process::Command::new("node")
        .arg("web_view.mjs")
        .current_dir(&web)
        .env("SIPFENCE_URL", format!("http://{api}/"))
        .env("SIPFENCE_TOKEN", &token)
        .env("SIPFENCE_BANNED", "127.0.0.9")
        .env("SIPFENCE_SCREENSHOT", &screenshot)
        .output()
        .expect("node is needed (apt-get install nodejs npm; npm install in tests/web)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser test failed:\n{report}");
    assert!(report.contains("ban gone"), "{report}");
    assert!(screenshot.is_file(), "screenshot saved");
    println!("screenshots: {}", screenshot.display());

    // The gateway agrees: the ban is lifted and 127.0.0.9 is answered again.
    assert!(!gw.cli(&["bans", "list"]).contains("127.0.0.9"));
    let answer = guesser.request(&options(guesser.local(), "UDP", "phone", 9));
    assert_eq!(answer.code(), Some(200));
    wait_until(Duration::from_secs(5), "the unban's log line", || {
        gw.log_text()
            .lines()
            .any(|l| l.contains("unbanned") && l.contains("api token"))
    });
}
