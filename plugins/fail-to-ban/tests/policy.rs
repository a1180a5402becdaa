//! The fail-to-ban rules, one test each, over the in-memory host state with
//! a clock the tests move. Native: `cargo test --manifest-path plugins/Cargo.toml`.

use std::cell::RefCell;

use fail_to_ban::memory::MemoryShared;
use fail_to_ban::policy::{
    Attempt, Ban, Failure, Level, Policy, Reaction, RequestView, Settings, Verdict,
};

const T0: u64 = 1_800_000_000_000;
const SEC: u64 = 1_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;

fn policy() -> Policy {
    Policy::from_json("{}").unwrap()
}

fn fail(p: &Policy, sh: &MemoryShared, ip: &str, user: &str, failure: Failure) -> Reaction {
    let attempt = Attempt {
        ip,
        tenant: "a.example",
        user,
    };
    p.on_auth_failed(sh, &attempt, failure)
}

fn wrong(p: &Policy, sh: &MemoryShared, ip: &str, user: &str) -> Reaction {
    fail(p, sh, ip, user, Failure::WrongPassword)
}

fn succeed(p: &Policy, sh: &MemoryShared, ip: &str, user: &str) {
    let attempt = Attempt {
        ip,
        tenant: "a.example",
        user,
    };
    let reaction = p.on_auth_succeeded(sh, &attempt);
    assert!(
        matches!(reaction, Reaction::None | Reaction::NoneForRepeats(_)),
        "a success never bans: {reaction:?}"
    );
}

fn ban_of(r: Reaction) -> Ban {
    match r {
        Reaction::Ban(ban) => ban,
        other => panic!("expected a ban, got {other:?}"),
    }
}

/// A request whose getters record what the policy read.
struct Req {
    method: &'static str,
    user_agent: Option<&'static str>,
    ip: &'static str,
    verified: bool,
    tenant: &'static str,
    auth_user: Option<&'static str>,
    kv_generation: Option<u64>,
    read: RefCell<Vec<&'static str>>,
}

impl Req {
    fn register(ip: &'static str, user: &'static str) -> Req {
        Req {
            method: "REGISTER",
            user_agent: Some("Yealink SIP-T46S 66.86.0.15"),
            ip,
            verified: false,
            tenant: "a.example",
            auth_user: Some(user),
            kv_generation: None,
            read: RefCell::default(),
        }
    }

    fn with_ua(ip: &'static str, ua: &'static str, verified: bool) -> Req {
        Req {
            method: "OPTIONS",
            user_agent: Some(ua),
            verified,
            auth_user: None,
            ..Req::register(ip, "")
        }
    }

    fn reads(&self) -> Vec<&'static str> {
        self.read.borrow().clone()
    }
}

impl RequestView for Req {
    fn method(&self) -> String {
        self.read.borrow_mut().push("method");
        self.method.into()
    }
    fn user_agent(&self) -> Option<&str> {
        self.read.borrow_mut().push("user-agent");
        self.user_agent
    }
    fn source_ip(&self) -> String {
        self.read.borrow_mut().push("source");
        self.ip.into()
    }
    fn source_verified(&self) -> bool {
        self.read.borrow_mut().push("source-verified");
        self.verified
    }
    fn tenant(&self) -> String {
        self.read.borrow_mut().push("tenant");
        self.tenant.into()
    }
    fn auth_user(&self) -> Option<String> {
        self.read.borrow_mut().push("auth-user");
        self.auth_user.map(Into::into)
    }
    fn kv_generation(&self) -> Option<u64> {
        self.kv_generation
    }
}

#[test]
fn threshold_bans_at_exactly_the_fifth_failure() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    for _ in 0..4 {
        assert_eq!(wrong(&p, &sh, "198.51.100.7", "1004"), Reaction::None);
        sh.advance(SEC);
    }
    let ban = ban_of(wrong(&p, &sh, "198.51.100.7", "1004"));
    assert_eq!(ban.duration_ms, HOUR);
    assert_eq!(
        ban.reason,
        "5 failed authentications in 60 s (last user 1004)"
    );
    assert_eq!(
        sh.logs_at(Level::Info),
        ["banning src:198.51.100.7 for 1 h: 5 failed authentications in 60 s (last user 1004)"]
    );
    assert_eq!(
        sh.logs_at(Level::Debug).len(),
        4,
        "one debug line per count"
    );
}

#[test]
fn counts_are_per_source_across_tenants() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    for tenant in ["a.example", "b.example", "", "c.example"] {
        let a = Attempt {
            ip: "198.51.100.7",
            tenant,
            user: "100",
        };
        assert_eq!(
            p.on_auth_failed(&sh, &a, Failure::WrongPassword),
            Reaction::None
        );
    }
    assert_eq!(wrong(&p, &sh, "198.51.100.8", "100"), Reaction::None);
    ban_of(wrong(&p, &sh, "198.51.100.7", "100"));
}

#[test]
fn ipv6_sources_count_by_their_64() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    for i in 1..=4 {
        let ip = format!("2001:db8:7:1::{i}");
        assert_eq!(wrong(&p, &sh, &ip, "100"), Reaction::None);
    }
    let ban = ban_of(wrong(&p, &sh, "2001:db8:7:1:dead:beef::5", "100"));
    assert!(ban.reason.starts_with("5 failed"));
    assert!(sh.logs_at(Level::Info)[0].starts_with("banning src:2001:db8:7:1::/64 "));
}

#[test]
fn failures_spread_wider_than_the_window_do_not_ban() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    // One failure every 20 s: never more than 3 within a minute.
    for i in 1..=19 {
        assert_eq!(
            wrong(&p, &sh, "198.51.100.7", "1004"),
            Reaction::None,
            "failure {i}"
        );
        sh.advance(20 * SEC);
    }
    // Until the low-and-slow rule: the 20th within the hour.
    let ban = ban_of(wrong(&p, &sh, "198.51.100.7", "1004"));
    assert_eq!(
        ban.reason,
        "20 failed authentications in 1 h (last user 1004)"
    );
}

#[test]
fn an_office_needs_office_threshold_failures() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    let office = "203.0.113.10";
    succeed(&p, &sh, office, "101");
    sh.advance(10 * MIN); // still within office_window_ms (1 h)
    for i in 1..=19 {
        assert_eq!(wrong(&p, &sh, office, "102"), Reaction::None, "failure {i}");
    }
    let ban = ban_of(wrong(&p, &sh, office, "102"));
    assert_eq!(
        ban.reason,
        "20 failed authentications in 60 s from an address with recent successful logins \
         (last user 102)"
    );
    // An address without a recent success is banned at 5, as before.
    for _ in 0..4 {
        assert_eq!(wrong(&p, &sh, "203.0.113.11", "102"), Reaction::None);
    }
    ban_of(wrong(&p, &sh, "203.0.113.11", "102"));
}

#[test]
fn successes_renew_their_marks_once_a_sixteenth_of_the_window_has_passed() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    let office = "203.0.113.10";
    succeed(&p, &sh, office, "101");
    let written = sh.kv_generation();
    // A phone re-registering every 30 s: no writes within 1 h / 16 (225 s).
    for _ in 0..7 {
        sh.advance(30 * SEC);
        succeed(&p, &sh, office, "101");
    }
    assert_eq!(sh.kv_generation(), written, "renewals within 225 s skipped");
    sh.advance(30 * SEC);
    succeed(&p, &sh, office, "101");
    assert!(sh.kv_generation() > written, "renewed after 240 s");
    // Another phone behind that address renews the same office mark, and
    // writes its own owner mark at once.
    let written = sh.kv_generation();
    succeed(&p, &sh, office, "102");
    assert_eq!(sh.kv_generation(), written + 1, "only 102's owner mark");
    // The mark lasts its window from the last write: an office 59 min on,
    // where an unknown address is banned at its 5th failure.
    sh.advance(59 * MIN);
    for i in 1..=5 {
        assert_eq!(wrong(&p, &sh, office, "103"), Reaction::None, "failure {i}");
    }
}

#[test]
fn an_office_is_held_to_office_slow_threshold() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    let office = "203.0.113.10";
    succeed(&p, &sh, office, "101");
    // A phone with a stale password retrying every 20 s: past the slow
    // rule's 20, up to the office's 80 within the hour.
    for i in 1..=79 {
        assert_eq!(wrong(&p, &sh, office, "102"), Reaction::None, "failure {i}");
        sh.advance(20 * SEC);
    }
    let ban = ban_of(wrong(&p, &sh, office, "102"));
    assert_eq!(
        ban.reason,
        "80 failed authentications in 1 h from an address with recent successful logins \
         (last user 102)"
    );
}

#[test]
fn an_office_is_forgotten_after_office_window_ms() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    succeed(&p, &sh, "203.0.113.10", "101");
    sh.advance(HOUR);
    for _ in 0..4 {
        assert_eq!(wrong(&p, &sh, "203.0.113.10", "102"), Reaction::None);
    }
    ban_of(wrong(&p, &sh, "203.0.113.10", "102"));
}

#[test]
fn distinct_unknown_users_ban() {
    // With the defaults 5 failures ban first; the scan rule shows where the
    // threshold is higher: behind an office's address.
    let (p, sh) = (policy(), MemoryShared::new(T0));
    let office = "203.0.113.10";
    succeed(&p, &sh, office, "101");
    // The same unknown user again counts once.
    for u in ["1000", "1001", "1000", "1001"] {
        assert_eq!(
            fail(&p, &sh, office, u, Failure::UnknownUser),
            Reaction::None
        );
    }
    for u in 1002..1009 {
        let r = fail(&p, &sh, office, &u.to_string(), Failure::UnknownUser);
        assert_eq!(r, Reaction::None, "user {u}");
        sh.advance(SEC);
    }
    let ban = ban_of(fail(&p, &sh, office, "1009", Failure::UnknownUser));
    assert_eq!(
        ban.reason,
        "10 distinct unknown users tried in 60 s (last user 1009)"
    );
}

#[test]
fn wrong_passwords_are_not_distinct_unknown_users() {
    let p = Policy::from_json(r#"{"threshold": 50, "office_threshold": 50}"#).unwrap();
    let sh = MemoryShared::new(T0);
    for u in 1000..1015 {
        assert_eq!(wrong(&p, &sh, "192.0.2.66", &u.to_string()), Reaction::None);
    }
}

#[test]
fn low_and_slow_is_banned_by_the_slow_rule() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    // 4 a minute, evenly spaced, for 5 minutes: the 20th bans.
    for i in 1..=19 {
        assert_eq!(
            wrong(&p, &sh, "192.0.2.9", "1004"),
            Reaction::None,
            "failure {i}"
        );
        sh.advance(15 * SEC);
    }
    let ban = ban_of(wrong(&p, &sh, "192.0.2.9", "1004"));
    assert_eq!(ban.duration_ms, HOUR);
    assert_eq!(
        ban.reason,
        "20 failed authentications in 1 h (last user 1004)"
    );
}

#[test]
fn a_repeat_offender_gets_a_week() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    let mut durations = Vec::new();
    for _round in 0..3 {
        for _ in 0..4 {
            assert_eq!(wrong(&p, &sh, "192.0.2.44", "1004"), Reaction::None);
        }
        let ban = ban_of(wrong(&p, &sh, "192.0.2.44", "1004"));
        durations.push(ban.duration_ms);
        if durations.len() == 3 {
            assert_eq!(
                ban.reason,
                "5 failed authentications in 60 s (last user 1004); \
                 banned 3 times in 24 h: repeat offender"
            );
        }
        sh.advance(ban.duration_ms); // the ban ends; the address comes back
    }
    assert_eq!(durations, [HOUR, HOUR, 7 * 24 * HOUR]);
    assert!(sh.logs_at(Level::Info)[2].starts_with("banning src:192.0.2.44 for 7 d: "));
}

#[test]
fn bans_spread_over_more_than_a_day_are_not_repeats() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    for _round in 0..3 {
        for _ in 0..4 {
            wrong(&p, &sh, "192.0.2.44", "1004");
        }
        assert_eq!(
            ban_of(wrong(&p, &sh, "192.0.2.44", "1004")).duration_ms,
            HOUR
        );
        sh.advance(13 * HOUR);
    }
}

#[test]
fn a_ban_starts_the_counts_afresh() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    for _ in 0..4 {
        wrong(&p, &sh, "192.0.2.44", "1004");
    }
    ban_of(wrong(&p, &sh, "192.0.2.44", "1004"));
    // A failure that was in flight when the ban began is not a second ban.
    assert_eq!(wrong(&p, &sh, "192.0.2.44", "1004"), Reaction::None);
}

#[test]
fn an_extension_guessed_from_many_addresses_is_locked_but_not_for_its_owner() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    // The owner's phone registered from its office yesterday evening.
    succeed(&p, &sh, "203.0.113.10", "1004");
    sh.advance(20 * HOUR);
    // A botnet: 20 addresses, one guess each, over 5 minutes.
    for i in 1..=19 {
        let ip = format!("192.0.2.{i}");
        assert_eq!(wrong(&p, &sh, &ip, "1004"), Reaction::None);
        sh.advance(15 * SEC);
        assert_eq!(
            p.on_request(&sh, &Req::register("198.51.100.1", "1004")),
            Verdict::ContinueForUserAgent,
            "not locked before the 20th"
        );
    }
    assert_eq!(wrong(&p, &sh, "192.0.2.20", "1004"), Reaction::None);
    let warns = sh.logs_at(Level::Warn);
    assert_eq!(warns.len(), 1);
    assert_eq!(
        warns[0],
        "locking extension 1004 of tenant a.example for 10 min: 20 wrong passwords in 10 min \
         (last from src:192.0.2.20); its credentials are refused with 403 except from \
         addresses where it authenticated within 24 h"
    );

    let locked = Verdict::Reject {
        code: 403,
        reason: "Extension temporarily locked".into(),
    };
    assert_eq!(
        p.on_request(&sh, &Req::register("198.51.100.1", "1004")),
        locked
    );
    assert_eq!(
        p.on_request(&sh, &Req::register("192.0.2.3", "1004")),
        locked
    );
    // The owner's known address passes. While an extension is locked no
    // answer is promised for the User-Agent: the lock depends on each
    // request's credentials and source.
    assert_eq!(
        p.on_request(&sh, &Req::register("203.0.113.10", "1004")),
        Verdict::Continue
    );
    // Other extensions, and other tenants' 1004, are not locked.
    assert_eq!(
        p.on_request(&sh, &Req::register("198.51.100.1", "1005")),
        Verdict::Continue
    );
    let other_tenant = Req {
        tenant: "b.example",
        ..Req::register("198.51.100.1", "1004")
    };
    assert_eq!(p.on_request(&sh, &other_tenant), Verdict::Continue);
    // ACK and CANCEL carry no credentials: auth-user is not even read.
    let ack = Req {
        method: "ACK",
        ..Req::register("198.51.100.1", "1004")
    };
    assert_eq!(p.on_request(&sh, &ack), Verdict::Continue);
    assert!(!ack.reads().contains(&"auth-user"));

    // More failures from owner addresses while locked: no second warn line.
    wrong(&p, &sh, "203.0.113.10", "1004");
    assert_eq!(sh.logs_at(Level::Warn).len(), 1);

    // The lock expires: nothing is locked, so the answer is promised again.
    sh.advance(10 * MIN);
    assert_eq!(
        p.on_request(&sh, &Req::register("198.51.100.1", "1004")),
        Verdict::ContinueForUserAgent
    );
}

#[test]
fn a_success_asks_not_to_hear_its_repeats_while_a_renewal_would_be_skipped() {
    let success = |json: &str| {
        let p = Policy::from_json(json).unwrap();
        let attempt = Attempt {
            ip: "203.0.113.10",
            tenant: "a.example",
            user: "1004",
        };
        p.on_auth_succeeded(&MemoryShared::new(T0), &attempt)
    };
    // The office mark (1 h) renews the soonest: 1/16 of it.
    assert_eq!(success("{}"), Reaction::NoneForRepeats(225 * SEC));
    // An owner mark shorter than the office mark sets the pace.
    assert_eq!(
        success(r#"{"owner_window_ms": 160000}"#),
        Reaction::NoneForRepeats(10 * SEC)
    );
    // Without the extension lock there is no owner mark.
    assert_eq!(
        success(r#"{"extension_lock_failures": 0, "owner_window_ms": 160000}"#),
        Reaction::NoneForRepeats(225 * SEC)
    );
    // Windows under 16 ms: every success is wanted.
    assert_eq!(
        success(r#"{"office_window_ms": 15, "extension_lock_failures": 0}"#),
        Reaction::None
    );
}

#[test]
fn the_lock_check_costs_no_getter_while_nothing_is_locked() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    let req = Req::register("198.51.100.1", "1004");
    assert_eq!(p.on_request(&sh, &req), Verdict::ContinueForUserAgent);
    assert_eq!(req.reads(), ["user-agent"]);
}

#[test]
fn no_lock_is_read_once_per_kv_generation_and_a_new_lock_is_seen_at_once() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    let request = |sh: &MemoryShared| Req {
        kv_generation: Some(sh.kv_generation()),
        ..Req::register("198.51.100.1", "1004")
    };
    for _ in 0..3 {
        assert_eq!(
            p.on_request(&sh, &request(&sh)),
            Verdict::ContinueForUserAgent
        );
    }
    assert_eq!(sh.kv_reads(), 1, "nothing was written: the absence holds");
    // 20 guesses from 20 addresses lock 1004: the store changed, so the
    // very next request reads it again and is refused.
    for i in 1..=20 {
        wrong(&p, &sh, &format!("192.0.2.{i}"), "1004");
    }
    let reads = sh.kv_reads();
    let locked = Verdict::Reject {
        code: 403,
        reason: "Extension temporarily locked".into(),
    };
    assert_eq!(p.on_request(&sh, &request(&sh)), locked);
    assert!(sh.kv_reads() > reads);
    // A lock present is never taken for granted: it is read every time
    // (it may expire without a write).
    let reads = sh.kv_reads();
    assert_eq!(p.on_request(&sh, &request(&sh)), locked);
    assert!(sh.kv_reads() > reads);
    sh.advance(10 * MIN);
    assert_eq!(
        p.on_request(&sh, &request(&sh)),
        Verdict::ContinueForUserAgent
    );
}

#[test]
fn unknown_users_do_not_lock_an_extension() {
    let p = Policy::from_json(r#"{"scan_distinct_users": 0}"#).unwrap();
    let sh = MemoryShared::new(T0);
    for i in 1..=25 {
        fail(
            &p,
            &sh,
            &format!("192.0.2.{i}"),
            "1004",
            Failure::UnknownUser,
        );
    }
    assert!(sh.logs_at(Level::Warn).is_empty());
    assert_eq!(
        p.on_request(&sh, &Req::register("198.51.100.1", "1004")),
        Verdict::ContinueForUserAgent
    );
}

#[test]
fn a_scanner_user_agent_from_a_verified_source_is_banned_at_once() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    let req = Req::with_ua("192.0.2.50", "friendly-scanner", true);
    match p.on_request(&sh, &req) {
        Verdict::Ban(ban) => {
            assert_eq!(ban.duration_ms, HOUR);
            assert_eq!(ban.reason, "scanner User-Agent 'friendly-scanner'");
        }
        other => panic!("expected a ban, got {other:?}"),
    }
    // Case-insensitive, anywhere in the header.
    let req = Req::with_ua("192.0.2.51", "Mozilla SIPVicious/0.3", true);
    assert!(matches!(p.on_request(&sh, &req), Verdict::Ban(_)));
}

#[test]
fn a_scanner_user_agent_over_udp_is_dropped_and_banned_on_the_third() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    let req = || Req::with_ua("192.0.2.50", "sipcli/v1.8", false);
    assert_eq!(p.on_request(&sh, &req()), Verdict::Drop);
    sh.advance(5 * SEC);
    assert_eq!(p.on_request(&sh, &req()), Verdict::Drop);
    sh.advance(5 * SEC);
    match p.on_request(&sh, &req()) {
        Verdict::Ban(ban) => assert_eq!(
            ban.reason,
            "scanner User-Agent 'sipcli/v1.8' 3 times in 60 s over UDP"
        ),
        other => panic!("expected a ban, got {other:?}"),
    }
}

#[test]
fn spoofed_scanner_packets_from_a_phones_address_need_office_threshold() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    // A registered phone at 203.0.113.10; someone spoofs its address over UDP.
    succeed(&p, &sh, "203.0.113.10", "1004");
    for i in 1..=19 {
        let req = Req::with_ua("203.0.113.10", "friendly-scanner", false);
        assert_eq!(p.on_request(&sh, &req), Verdict::Drop, "packet {i}");
    }
    let req = Req::with_ua("203.0.113.10", "friendly-scanner", false);
    assert!(matches!(p.on_request(&sh, &req), Verdict::Ban(_)));
}

#[test]
fn a_legitimate_user_agent_passes() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    for ua in [
        "Yealink SIP-T46S 66.86.0.15",
        "Zoiper rv2.10.20.3",
        "Linphone-Desktop/5.2.4 (belle-sip/5.3.0)",
        "Asterisk PBX 20.5.0",
        "MicroSIP/3.21.3",
    ] {
        for verified in [true, false] {
            let req = Req::with_ua("192.0.2.50", ua, verified);
            assert_eq!(
                p.on_request(&sh, &req),
                Verdict::ContinueForUserAgent,
                "{ua}"
            );
        }
    }
    let no_ua = Req {
        user_agent: None,
        ..Req::register("192.0.2.50", "100")
    };
    assert_eq!(p.on_request(&sh, &no_ua), Verdict::ContinueForUserAgent);
}

#[test]
fn scanner_signatures_can_be_turned_off_or_replaced() {
    let sh = MemoryShared::new(T0);
    let off = Policy::from_json(r#"{"scanner_signatures": false}"#).unwrap();
    let req = Req::with_ua("192.0.2.50", "friendly-scanner", true);
    assert_eq!(off.on_request(&sh, &req), Verdict::ContinueForUserAgent);
    assert!(!req.reads().contains(&"user-agent"));

    let own = Policy::from_json(r#"{"scanner_user_agents": ["EvilBot"]}"#).unwrap();
    let req = Req::with_ua("192.0.2.50", "friendly-scanner", true);
    assert_eq!(own.on_request(&sh, &req), Verdict::ContinueForUserAgent);
    let req = Req::with_ua("192.0.2.50", "evilbot 1.0", true);
    assert!(matches!(own.on_request(&sh, &req), Verdict::Ban(_)));
}

#[test]
fn a_limit_of_zero_turns_its_rule_off() {
    let p = Policy::from_json(
        r#"{"threshold": 0, "slow_threshold": 0, "scan_distinct_users": 0,
            "extension_lock_failures": 0, "scanner_udp_repeats": 0}"#,
    )
    .unwrap();
    let sh = MemoryShared::new(T0);
    for i in 0..100 {
        assert_eq!(wrong(&p, &sh, "192.0.2.1", "1004"), Reaction::None);
        let unknown = fail(&p, &sh, "192.0.2.1", &i.to_string(), Failure::UnknownUser);
        assert_eq!(unknown, Reaction::None);
        let req = Req::with_ua("192.0.2.1", "friendly-scanner", false);
        assert_eq!(p.on_request(&sh, &req), Verdict::Drop);
    }
}

#[test]
fn user_names_in_reasons_are_made_safe() {
    let (p, sh) = (policy(), MemoryShared::new(T0));
    for _ in 0..4 {
        wrong(&p, &sh, "192.0.2.1", "x");
    }
    let ban = ban_of(wrong(&p, &sh, "192.0.2.1", "evil\r\nX-Injected: 1"));
    assert_eq!(
        ban.reason,
        "5 failed authentications in 60 s (last user evil??X-Injected: 1)"
    );
}

// ---- config -------------------------------------------------------------

#[test]
fn config_defaults() {
    let s = Settings::default();
    assert_eq!(Settings::from_json("{}").unwrap(), s);
    assert_eq!(Settings::from_json("").unwrap(), s);
    assert_eq!(Settings::from_json("null").unwrap(), s);
    assert_eq!((s.threshold, s.window_ms, s.ban_ms), (5, 60_000, 3_600_000));
    assert_eq!((s.office_threshold, s.office_window_ms), (20, 3_600_000));
    assert_eq!(s.scan_distinct_users, 10);
    assert_eq!((s.slow_threshold, s.slow_window_ms), (20, 3_600_000));
    assert_eq!(s.office_slow_threshold, 80);
    assert_eq!(
        (s.repeat_bans, s.repeat_window_ms, s.repeat_ban_ms),
        (3, 86_400_000, 604_800_000)
    );
    assert_eq!(
        (
            s.extension_lock_failures,
            s.extension_lock_window_ms,
            s.extension_lock_ms,
            s.owner_window_ms
        ),
        (20, 600_000, 600_000, 86_400_000)
    );
    assert!(s.scanner_signatures);
    assert!(s
        .scanner_user_agents
        .iter()
        .any(|ua| ua == "friendly-scanner"));
    assert_eq!(s.scanner_udp_repeats, 3);
    assert_eq!(s.ipv6_prefix_len, 64);
}

#[test]
fn config_every_key() {
    let json = r#"{
        "threshold": 6, "window_ms": 1000, "ban_ms": 2000,
        "office_threshold": 7, "office_window_ms": 3000,
        "scan_distinct_users": 8,
        "slow_threshold": 9, "slow_window_ms": 4000, "office_slow_threshold": 10,
        "repeat_bans": 2, "repeat_window_ms": 5000, "repeat_ban_ms": 6000,
        "extension_lock_failures": 11, "extension_lock_window_ms": 7000,
        "extension_lock_ms": 8000, "owner_window_ms": 9000,
        "scanner_signatures": false, "scanner_user_agents": ["a", "b"],
        "scanner_udp_repeats": 4, "ipv6_prefix_len": 56
    }"#;
    let s = Settings::from_json(json).unwrap();
    assert_eq!(
        s,
        Settings {
            threshold: 6,
            window_ms: 1000,
            ban_ms: 2000,
            office_threshold: 7,
            office_window_ms: 3000,
            scan_distinct_users: 8,
            slow_threshold: 9,
            slow_window_ms: 4000,
            office_slow_threshold: 10,
            repeat_bans: 2,
            repeat_window_ms: 5000,
            repeat_ban_ms: 6000,
            extension_lock_failures: 11,
            extension_lock_window_ms: 7000,
            extension_lock_ms: 8000,
            owner_window_ms: 9000,
            scanner_signatures: false,
            scanner_user_agents: vec!["a".into(), "b".into()],
            scanner_udp_repeats: 4,
            ipv6_prefix_len: 56,
        }
    );
}

#[test]
fn config_unknown_key_is_named() {
    let err = Policy::from_json(r#"{"threshold": 5, "treshold": 6}"#).unwrap_err();
    assert_eq!(err.key, "treshold");
    assert!(
        err.to_string()
            .starts_with("treshold: unknown key, expected one of `threshold`, `window_ms`, "),
        "{err}"
    );
}

#[test]
fn config_wrong_type_names_the_key() {
    let err = Policy::from_json(r#"{"threshold": "5"}"#).unwrap_err();
    assert_eq!(err.key, "threshold");
    assert_eq!(
        err.to_string(),
        "threshold: invalid type: string \"5\", expected u32"
    );
    let err = Policy::from_json(r#"{"scanner_user_agents": ["ok", 3]}"#).unwrap_err();
    assert_eq!(err.key, "scanner_user_agents[1]");
    let err = Policy::from_json(r#"{"window_ms": -1}"#).unwrap_err();
    assert_eq!(err.key, "window_ms");
    let err = Policy::from_json(r#"{"scanner_signatures": "yes"}"#).unwrap_err();
    assert_eq!(err.key, "scanner_signatures");
}

#[test]
fn config_bad_values_name_the_key() {
    let cases = [
        (r#"{"window_ms": 0}"#, "window_ms: must be greater than 0"),
        (r#"{"ban_ms": 0}"#, "ban_ms: must be greater than 0"),
        (
            r#"{"office_threshold": 3}"#,
            "office_threshold: must not be below threshold (5)",
        ),
        (
            r#"{"office_slow_threshold": 19}"#,
            "office_slow_threshold: must not be below slow_threshold (20)",
        ),
        (
            r#"{"scanner_user_agents": ["a", " "]}"#,
            "scanner_user_agents[1]: must not be empty (it would match every User-Agent)",
        ),
        (
            r#"{"ipv6_prefix_len": 129}"#,
            "ipv6_prefix_len: must be between 1 and 128",
        ),
    ];
    for (json, text) in cases {
        assert_eq!(
            Policy::from_json(json).unwrap_err().to_string(),
            text,
            "{json}"
        );
    }
}

#[test]
fn config_that_is_not_a_table_is_refused() {
    let err = Policy::from_json("[1, 2]").unwrap_err();
    assert_eq!(err.key, "");
    assert_eq!(
        err.to_string(),
        "the config must be a table (a JSON object)"
    );
    assert!(Policy::from_json("5").is_err());
    let err = Policy::from_json("{").unwrap_err();
    assert_eq!(err.key, "");
    assert_eq!(err.to_string(), "EOF while parsing an object");
}
