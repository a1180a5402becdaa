//! The rate-limit rule, natively, over in-memory counters with a clock the
//! tests move: `cargo test --manifest-path plugins/Cargo.toml -p rate-limit`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;

use rate_limit::policy::{Ban, Level, Policy, RequestView, Settings, Shared, Verdict};

/// A multiple of every window below, so fixed slots start at whole seconds.
const T0: u64 = 1_800_000_000_000;

/// The host's counters (what was added when) and a clock.
#[derive(Default)]
struct Memory {
    now: Cell<u64>,
    counters: RefCell<HashMap<String, Vec<(u64, u64)>>>,
    logs: RefCell<Vec<(Level, String)>>,
    calls: Cell<usize>,
}

impl Memory {
    fn new() -> Memory {
        let m = Memory::default();
        m.now.set(T0);
        m
    }

    fn advance(&self, ms: u64) {
        self.now.set(self.now.get() + ms);
    }

    fn logs_at(&self, level: Level) -> Vec<String> {
        let logs = self.logs.borrow();
        logs.iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

impl Shared for Memory {
    fn add(&self, key: &str, by: u32, window_ms: u64) -> u64 {
        self.calls.set(self.calls.get() + 1);
        let now = self.now.get();
        let mut counters = self.counters.borrow_mut();
        let entries = counters.entry(key.to_owned()).or_default();
        entries.push((now, u64::from(by)));
        entries
            .iter()
            .filter(|(t, _)| now - t < window_ms)
            .map(|(_, n)| n)
            .sum()
    }

    fn add_source(&self, ip: IpAddr, prefix: u8, tag: u8, by: u32, window_ms: u64) -> u64 {
        // The host's key of numbers, as text here: one entry per source
        // (an IPv6 source by its prefix) and tag.
        let ip = match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let bits = u128::from(v6) & (u128::MAX << (128 - u32::from(prefix)));
                IpAddr::V6(bits.into())
            }
            IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().unwrap()),
            v4 => v4,
        };
        self.add(&format!("source {ip} tag {tag}"), by, window_ms)
    }

    fn get(&self, key: &str, window_ms: u64) -> u64 {
        self.calls.set(self.calls.get() + 1);
        let now = self.now.get();
        self.counters.borrow().get(key).map_or(0, |entries| {
            entries
                .iter()
                .filter(|(t, _)| now - t < window_ms)
                .map(|(_, n)| n)
                .sum()
        })
    }

    fn now_ms(&self) -> u64 {
        self.now.get()
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }
}

struct Req(&'static str);

impl RequestView for Req {
    fn source_ip(&self) -> IpAddr {
        self.0.parse().unwrap()
    }
}

fn policy(json: &str) -> Policy {
    Policy::from_json(json).unwrap_or_else(|e| panic!("{e}"))
}

fn reject() -> Verdict {
    Verdict::Reject {
        code: 503,
        reason: "Rate limit exceeded".into(),
    }
}

/// Sends `n` requests from `ip` at the current time; returns the verdicts.
fn send(p: &Policy, sh: &Memory, ip: &'static str, n: usize) -> Vec<Verdict> {
    (0..n).map(|_| p.on_request(sh, &Req(ip))).collect()
}

#[test]
fn the_limit_passes_then_one_503_then_silence() {
    let (p, sh) = (policy("{}"), Memory::new());
    let verdicts = send(&p, &sh, "198.51.100.7", 205);
    assert!(verdicts[..200].iter().all(|v| *v == Verdict::Continue));
    assert_eq!(verdicts[200], reject());
    assert!(verdicts[201..].iter().all(|v| *v == Verdict::Drop));
    assert_eq!(
        sh.logs_at(Level::Debug),
        ["src:198.51.100.7 sent 201 requests in 1 s (limit 200): 503 now, dropping the rest of this window"]
    );
}

#[test]
fn an_ordinary_request_costs_one_counter_call() {
    let (p, sh) = (policy("{}"), Memory::new());
    assert_eq!(p.on_request(&sh, &Req("198.51.100.7")), Verdict::Continue);
    assert_eq!(sh.calls.get(), 1);
}

#[test]
fn sources_are_counted_apart() {
    let (p, sh) = (policy(r#"{"requests": 3}"#), Memory::new());
    send(&p, &sh, "198.51.100.7", 3);
    assert_eq!(send(&p, &sh, "198.51.100.8", 3), vec![Verdict::Continue; 3]);
    assert_eq!(p.on_request(&sh, &Req("198.51.100.7")), reject());
}

#[test]
fn ipv6_sources_count_by_their_64() {
    let (p, sh) = (policy(r#"{"requests": 2}"#), Memory::new());
    assert_eq!(
        p.on_request(&sh, &Req("2001:db8:7:1::1")),
        Verdict::Continue
    );
    assert_eq!(
        p.on_request(&sh, &Req("2001:db8:7:1::2")),
        Verdict::Continue
    );
    assert_eq!(p.on_request(&sh, &Req("2001:db8:7:1:ffff::3")), reject());
    assert_eq!(
        p.on_request(&sh, &Req("2001:db8:7:2::1")),
        Verdict::Continue
    );
    let p56 = policy(r#"{"requests": 1, "ipv6_prefix_len": 56}"#);
    let sh = Memory::new();
    assert_eq!(
        p56.on_request(&sh, &Req("2001:db8:7:1::1")),
        Verdict::Continue
    );
    assert_eq!(p56.on_request(&sh, &Req("2001:db8:7:2::1")), reject());
}

#[test]
fn a_slower_source_is_never_limited() {
    let (p, sh) = (
        policy(r#"{"requests": 10, "window_ms": 1000}"#),
        Memory::new(),
    );
    // 10 a second, for a minute.
    for _ in 0..600 {
        assert_eq!(p.on_request(&sh, &Req("198.51.100.7")), Verdict::Continue);
        sh.advance(100);
    }
}

#[test]
fn each_window_over_the_limit_gets_one_503() {
    let (p, sh) = (policy(r#"{"requests": 10}"#), Memory::new());
    let mut rejects = 0;
    // A flood of 50 a second for 5 s, in steps of 20 ms.
    for _ in 0..250 {
        if p.on_request(&sh, &Req("198.51.100.7")) == reject() {
            rejects += 1;
        }
        sh.advance(20);
    }
    assert_eq!(rejects, 5, "one 503 per window, silence for the rest");
}

#[test]
fn a_source_that_slows_down_is_served_again() {
    let (p, sh) = (policy(r#"{"requests": 5}"#), Memory::new());
    send(&p, &sh, "198.51.100.7", 20);
    sh.advance(1000);
    assert_eq!(send(&p, &sh, "198.51.100.7", 5), vec![Verdict::Continue; 5]);
}

#[test]
fn no_ban_by_default_however_long_the_flood() {
    let (p, sh) = (policy(r#"{"requests": 5}"#), Memory::new());
    for _ in 0..30 {
        let verdicts = send(&p, &sh, "198.51.100.7", 10);
        assert!(verdicts.iter().all(|v| !matches!(v, Verdict::Ban(_))));
        sh.advance(1000);
    }
}

#[test]
fn ban_after_consecutive_windows_over_the_limit() {
    let p = policy(r#"{"requests": 5, "ban_after_windows": 3, "ban_ms": 60000}"#);
    let sh = Memory::new();
    for window in 1..=2 {
        let verdicts = send(&p, &sh, "198.51.100.7", 10);
        assert_eq!(verdicts[5], reject(), "window {window}");
        sh.advance(1000);
    }
    let verdicts = send(&p, &sh, "198.51.100.7", 6);
    assert_eq!(
        verdicts[5],
        Verdict::Ban(Ban {
            duration_ms: 60_000,
            reason: "over 5 requests in 1 s in 3 windows in a row (6 in the last 1 s)".into()
        })
    );
    assert_eq!(
        sh.logs_at(Level::Info),
        ["banning src:198.51.100.7 for 10 min: over 5 requests in 1 s in 3 windows in a row (6 in the last 1 s)"
            .replace("10 min", "60 s")]
    );
}

#[test]
fn a_quiet_window_breaks_the_streak() {
    let p = policy(r#"{"requests": 5, "ban_after_windows": 3}"#);
    let sh = Memory::new();
    for round in 0..4 {
        // Two windows over, then one quiet: never three in a row.
        for _ in 0..2 {
            let verdicts = send(&p, &sh, "198.51.100.7", 10);
            assert!(
                verdicts.iter().all(|v| !matches!(v, Verdict::Ban(_))),
                "round {round}"
            );
            sh.advance(1000);
        }
        sh.advance(1000);
    }
}

#[test]
fn ban_after_one_window_bans_at_the_first_excess() {
    let p = policy(r#"{"requests": 2, "ban_after_windows": 1}"#);
    let sh = Memory::new();
    let verdicts = send(&p, &sh, "198.51.100.7", 4);
    assert_eq!(verdicts[..2], [Verdict::Continue, Verdict::Continue]);
    assert!(matches!(verdicts[2], Verdict::Ban(_)));
    assert_eq!(verdicts[3], Verdict::Drop);
}

#[test]
fn defaults() {
    let s = Settings::from_json("{}").unwrap();
    assert_eq!(s, Settings::default());
    assert_eq!(
        (
            s.requests,
            s.window_ms,
            s.ban_after_windows,
            s.ban_ms,
            s.ipv6_prefix_len
        ),
        (200, 1000, 0, 600_000, 64)
    );
}

#[test]
fn config_errors_name_the_key() {
    let error = |json: &str| Policy::from_json(json).unwrap_err().to_string();
    assert_eq!(
        error(r#"{"request": 10}"#),
        "request: unknown key, expected one of `requests`, `window_ms`, `ban_after_windows`, `ban_ms`, `ipv6_prefix_len`"
    );
    assert_eq!(
        error(r#"{"requests": 0}"#),
        "requests: must be greater than 0 (to stop limiting, leave the plugin out)"
    );
    assert_eq!(
        error(r#"{"requests": "10"}"#),
        "requests: invalid type: string \"10\", expected u32"
    );
    assert_eq!(
        error(r#"{"window_ms": 0}"#),
        "window_ms: must be greater than 0"
    );
    assert_eq!(error(r#"{"ban_ms": 0}"#), "ban_ms: must be greater than 0");
    assert_eq!(
        error(r#"{"ipv6_prefix_len": 0}"#),
        "ipv6_prefix_len: must be between 1 and 128"
    );
    assert_eq!(
        error(r#"{"ban_after_windows": -1}"#),
        "ban_after_windows: invalid value: integer `-1`, expected u32"
    );
}
