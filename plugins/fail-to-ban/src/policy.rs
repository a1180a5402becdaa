//! The fail-to-ban policy, in plain Rust: no WIT types, no wasm.
//!
//! [`Policy`] is built from [`Settings`] (the plugin's config table) and
//! decides over two small traits: [`Shared`], the host's shared counters and
//! key-value store (everything that must outlive one call lives there, never
//! in this crate's memory), and [`RequestView`], a lazy view of one request
//! (each getter is a boundary crossing in the component, so the policy reads
//! only what a decision needs, in the cheapest order).
//!
//! ## The rules
//! Counts are per source address (IPv6 by its `/ipv6_prefix_len`, as the host
//! bans), across all tenants.
//! - **Threshold**: `threshold` auth failures within `window_ms` ban for
//!   `ban_ms`; an address where someone authenticated within
//!   `office_window_ms` (an office behind NAT) needs `office_threshold`.
//! - **Extension scan**: `scan_distinct_users` distinct unknown users within
//!   `window_ms` ban.
//! - **Low and slow**: `slow_threshold` failures within `slow_window_ms` ban
//!   (`office_slow_threshold` from an office).
//! - **Repeat offender**: the `repeat_bans`-th ban within `repeat_window_ms`
//!   lasts `repeat_ban_ms`.
//! - **Extension lock**: `extension_lock_failures` wrong passwords for one
//!   (tenant, user), from any addresses, within `extension_lock_window_ms`
//!   lock it for `extension_lock_ms`: requests carrying its credentials get
//!   403, except from addresses where it authenticated within
//!   `owner_window_ms`.
//! - **Scanner signatures**: a User-Agent containing one of
//!   `scanner_user_agents` bans at once from a verified source; from an
//!   unverified (UDP) one it is dropped, and the `scanner_udp_repeats`-th
//!   within `window_ms` bans (`office_threshold` for a known address).
//!
//! A limit of 0 turns its rule off.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use plugin_kit::config;
use serde::Deserialize;

use crate::renewals::{Renewals, RENEW_FRACTION};
use crate::scan::Scanners;

pub use plugin_kit::config::ConfigError;
pub use plugin_kit::net::source_key;
pub use plugin_kit::text::human;
use plugin_kit::text::{key_part, shown, shown_tenant};
pub use plugin_kit::Level;

/// The host's shared state, as the policy sees it: windowed counters and a
/// key-value store with expiry (the `counter` and `kv` imports), the clock
/// and the log. Keys are namespaced per plugin by the host.
///
/// Every counter key is used with one window only, so a host may forget
/// entries older than the window it was last given.
pub trait Shared {
    /// Adds `by` to `key`; returns its total over the last `window_ms`.
    fn add(&self, key: &str, by: u32, window_ms: u64) -> u64;
    /// The total of `key` over the last `window_ms`.
    fn get(&self, key: &str, window_ms: u64) -> u64;
    /// Records `member` under `key`; returns how many distinct members were
    /// recorded within the last `window_ms`.
    fn add_distinct(&self, key: &str, member: &str, window_ms: u64) -> u64;
    /// Forgets a counter key.
    fn reset(&self, key: &str);
    fn kv_get(&self, key: &str) -> Option<String>;
    /// `ttl_ms` 0 keeps the value until deleted.
    fn kv_set(&self, key: &str, value: &str, ttl_ms: u64);
    fn kv_delete(&self, key: &str);
    /// Milliseconds since the UNIX epoch.
    fn now_ms(&self) -> u64;
    fn log(&self, level: Level, message: &str);
}

/// One request, read lazily: in the component each call crosses the sandbox
/// boundary, so the policy calls only what it needs.
pub trait RequestView {
    /// E.g. "REGISTER".
    fn method(&self) -> String;
    fn user_agent(&self) -> Option<&str>;
    /// The source IP, without brackets or port.
    fn source_ip(&self) -> String;
    /// True over TCP, or when the request answers a nonce issued to this
    /// very address: the source cannot be spoofed.
    fn source_verified(&self) -> bool;
    /// The tenant domain; "" for the default tenant.
    fn tenant(&self) -> String;
    /// The digest username of the request's credentials, if any.
    fn auth_user(&self) -> Option<String>;
    /// The host's `kv-generation`: while it stays the same, a key found
    /// missing is still missing. None: read the store every time.
    fn kv_generation(&self) -> Option<u64> {
        None
    }
}

pub use plugin_kit::verdict::{Ban, Verdict};

/// What the policy asks for in answer to an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    None,
    Ban(Ban),
    /// `None`, and the same for repeats of this success (same address,
    /// tenant and user) within this many milliseconds (WIT
    /// `none-for-repeats`): the host does not deliver those.
    NoneForRepeats(u64),
}

/// How an authentication failed (the host's `auth-failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    WrongPassword,
    UnknownUser,
    UserMismatch,
    RealmMismatch,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::WrongPassword => "wrong password",
            Failure::UnknownUser => "unknown user",
            Failure::UserMismatch => "user mismatch",
            Failure::RealmMismatch => "realm mismatch",
        })
    }
}

/// Who tried to authenticate (the host's `auth-attempt`, the parts we use).
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub ip: &'a str,
    /// "" for the default tenant.
    pub tenant: &'a str,
    /// The digest username.
    pub user: &'a str,
}

/// The plugin's config table (`[plugin.config]`, handed to `init` as JSON).
/// Every key is optional; every duration is in milliseconds; a limit of 0
/// turns its rule off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Auth failures from one address within `window_ms` that ban it.
    pub threshold: u32,
    /// The window of `threshold`, `scan_distinct_users` and
    /// `scanner_udp_repeats`.
    pub window_ms: u64,
    /// How long a ban lasts.
    pub ban_ms: u64,
    /// `threshold` for an address where someone authenticated within
    /// `office_window_ms` (an office behind NAT); also the scanner repeats
    /// such an address needs over UDP. 0: never banned by those rules.
    pub office_threshold: u32,
    /// How long a successful authentication makes its address an office.
    pub office_window_ms: u64,
    /// Distinct unknown user names from one address within `window_ms`
    /// that ban it.
    pub scan_distinct_users: u32,
    /// Auth failures from one address within `slow_window_ms` that ban it.
    pub slow_threshold: u32,
    pub slow_window_ms: u64,
    /// `slow_threshold` for an office address (else the slow rule would cap
    /// an office at `slow_threshold` whatever `office_threshold` says).
    /// 0: offices are never banned by the slow rule.
    pub office_slow_threshold: u32,
    /// The ban, counting this one, within `repeat_window_ms` that lasts
    /// `repeat_ban_ms` instead of `ban_ms`.
    pub repeat_bans: u32,
    pub repeat_window_ms: u64,
    pub repeat_ban_ms: u64,
    /// Wrong passwords for one extension (any addresses) within
    /// `extension_lock_window_ms` that lock it for `extension_lock_ms`.
    pub extension_lock_failures: u32,
    pub extension_lock_window_ms: u64,
    pub extension_lock_ms: u64,
    /// How long an address where an extension authenticated stays its
    /// owner's: it passes the extension's lock.
    pub owner_window_ms: u64,
    /// Whether scanner User-Agents are refused.
    pub scanner_signatures: bool,
    /// Substrings (case-insensitive) of scanner User-Agents. Scanner names
    /// only: a legitimate product name here bans real phones.
    pub scanner_user_agents: Vec<String>,
    /// The scanner request from one unverified (UDP) address within
    /// `window_ms` that bans it; the earlier ones are dropped.
    pub scanner_udp_repeats: u32,
    /// IPv6 sources are counted by this prefix (the host bans by /64 by
    /// default).
    pub ipv6_prefix_len: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            threshold: 5,
            window_ms: 60_000,
            ban_ms: 3_600_000,
            office_threshold: 20,
            office_window_ms: 3_600_000,
            scan_distinct_users: 10,
            slow_threshold: 20,
            slow_window_ms: 3_600_000,
            office_slow_threshold: 80,
            repeat_bans: 3,
            repeat_window_ms: 86_400_000,
            repeat_ban_ms: 604_800_000,
            extension_lock_failures: 20,
            extension_lock_window_ms: 600_000,
            extension_lock_ms: 600_000,
            owner_window_ms: 86_400_000,
            scanner_signatures: true,
            scanner_user_agents: DEFAULT_SCANNERS.iter().map(|s| s.to_string()).collect(),
            scanner_udp_repeats: 3,
            ipv6_prefix_len: 64,
        }
    }
}

/// User-Agent substrings of SIP scanners and attack tools. Names of
/// legitimate products must never be here.
pub const DEFAULT_SCANNERS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "VaxSIPUserAgent",
    "sipsak",
    "iWar",
    "sundayddr",
    "SIPScan",
    "smap",
    "sip-scan",
];

impl Settings {
    /// Parses the config JSON; empty text or `null` means all defaults.
    pub fn from_json(json: &str) -> Result<Settings, ConfigError> {
        let settings: Settings = config::from_json(json)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| ConfigError {
            key: key.into(),
            message: message.into(),
        };
        for (key, value) in [
            ("window_ms", self.window_ms),
            ("ban_ms", self.ban_ms),
            ("office_window_ms", self.office_window_ms),
            ("slow_window_ms", self.slow_window_ms),
            ("repeat_window_ms", self.repeat_window_ms),
            ("repeat_ban_ms", self.repeat_ban_ms),
            ("extension_lock_window_ms", self.extension_lock_window_ms),
            ("extension_lock_ms", self.extension_lock_ms),
            ("owner_window_ms", self.owner_window_ms),
        ] {
            if value == 0 {
                return Err(bad(key, "must be greater than 0"));
            }
        }
        if self.threshold > 0 && self.office_threshold > 0 && self.office_threshold < self.threshold
        {
            return Err(bad(
                "office_threshold",
                &format!("must not be below threshold ({})", self.threshold),
            ));
        }
        if self.slow_threshold > 0
            && self.office_slow_threshold > 0
            && self.office_slow_threshold < self.slow_threshold
        {
            return Err(bad(
                "office_slow_threshold",
                &format!("must not be below slow_threshold ({})", self.slow_threshold),
            ));
        }
        if let Some(i) = self
            .scanner_user_agents
            .iter()
            .position(|s| s.trim().is_empty())
        {
            return Err(bad(
                &format!("scanner_user_agents[{i}]"),
                "must not be empty (it would match every User-Agent)",
            ));
        }
        if !(1..=128).contains(&self.ipv6_prefix_len) {
            return Err(bad("ipv6_prefix_len", "must be between 1 and 128"));
        }
        Ok(())
    }
}

/// Methods that can never carry credentials (RFC 3261 22.1): the extension
/// lock does not read `auth-user` for them.
const NO_CREDENTIALS: &[&str] = &["ACK", "CANCEL"];

/// The kv key that exists while any extension is locked: without it, a
/// request costs the lock check one kv read and no request getter.
const ANY_LOCK: &str = "lock:any";

/// The fail-to-ban policy: settings, and the rules over [`Shared`] state.
#[derive(Debug)]
pub struct Policy {
    settings: Settings,
    /// `scanner_user_agents`, prepared for searching (empty when
    /// `scanner_signatures` is off).
    scanners: Scanners,
    /// The `kv-generation` at which no extension was locked, plus one (0:
    /// not known). Locks are rare: this spares nearly every request the
    /// `kv.get` of [`ANY_LOCK`] (~80 ns). A cache, not state: a new
    /// instance starts without it and reads the store.
    no_lock_at: AtomicU64,
    /// The marks this instance wrote lately: a success renews a mark only
    /// once 1/16 of its window has passed (see [`Renewals`]).
    renewals: Renewals,
}

impl Policy {
    pub fn new(settings: Settings) -> Result<Policy, ConfigError> {
        settings.validate()?;
        let scanners = if settings.scanner_signatures {
            Scanners::new(&settings.scanner_user_agents)
        } else {
            Scanners::default()
        };
        Ok(Policy {
            settings,
            scanners,
            no_lock_at: AtomicU64::new(0),
            renewals: Renewals::default(),
        })
    }

    /// Whether any extension is locked now: [`ANY_LOCK`] in the store,
    /// unless it was missing at this very `kv-generation`.
    fn any_lock(&self, sh: &impl Shared, req: &impl RequestView) -> bool {
        let generation = req.kv_generation();
        if let Some(g) = generation {
            if self.no_lock_at.load(Ordering::Relaxed) == g.wrapping_add(1) {
                return false;
            }
        }
        let locked = sh.kv_get(ANY_LOCK).is_some();
        // Only an absence is kept: a lock may expire without a write.
        let known = match generation {
            Some(g) if !locked => g.wrapping_add(1),
            _ => 0,
        };
        self.no_lock_at.store(known, Ordering::Relaxed);
        locked
    }

    /// Parses and checks the config JSON handed to `init`.
    pub fn from_json(json: &str) -> Result<Policy, ConfigError> {
        Policy::new(Settings::from_json(json)?)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Decides about one request: scanner signatures first, then the
    /// extension lock. Reads nothing else.
    ///
    /// A request that passes both without a lock in the store gets
    /// [`Verdict::ContinueForUserAgent`]: that decision read only the
    /// User-Agent (not a scanner's) and the store (no lock), so it holds for
    /// every request with this User-Agent until the store changes, and the
    /// host answers those without calling. While some extension is locked
    /// each request is looked at ([`Verdict::Continue`]): the lock depends
    /// on its credentials and source.
    pub fn on_request(&self, sh: &impl Shared, req: &impl RequestView) -> Verdict {
        if !self.scanners.is_empty() {
            if let Some(ua) = req.user_agent() {
                if self.scanners.find(ua).is_some() {
                    return self.scanner(sh, req, ua);
                }
            }
        }
        if self.settings.extension_lock_failures > 0 && self.any_lock(sh, req) {
            return self.check_lock(sh, req);
        }
        Verdict::ContinueForUserAgent
    }

    /// Counts a failed authentication and bans its source when a rule says so.
    pub fn on_auth_failed(&self, sh: &impl Shared, a: &Attempt<'_>, failure: Failure) -> Reaction {
        let s = &self.settings;
        let src = self.source_key(a.ip);
        let user = shown(a.user);
        if failure == Failure::WrongPassword && s.extension_lock_failures > 0 {
            self.count_extension_failure(sh, a, &src);
        }

        let fails = if s.threshold > 0 {
            sh.add(&key(&src, "fail"), 1, s.window_ms)
        } else {
            0
        };
        let slow = if s.slow_threshold > 0 {
            sh.add(&key(&src, "slow"), 1, s.slow_window_ms)
        } else {
            0
        };
        let distinct = if failure == Failure::UnknownUser && s.scan_distinct_users > 0 {
            let member = format!("{}/{}", a.tenant, key_part(a.user));
            sh.add_distinct(&key(&src, "users"), &member, s.window_ms)
        } else {
            0
        };

        // Whether the address is an office costs a kv read: only when it
        // can change the decision.
        let office = (s.threshold > 0 && fails >= u64::from(s.threshold)
            || s.slow_threshold > 0 && slow >= u64::from(s.slow_threshold))
            && self.is_known(sh, &src);
        let (limit, slow_limit, from) = if office {
            (
                if s.threshold > 0 {
                    s.office_threshold
                } else {
                    0
                },
                if s.slow_threshold > 0 {
                    s.office_slow_threshold
                } else {
                    0
                },
                " from an address with recent successful logins",
            )
        } else {
            (s.threshold, s.slow_threshold, "")
        };
        let window = human(s.window_ms);
        let slow_window = human(s.slow_window_ms);
        let evidence = if limit > 0 && fails >= u64::from(limit) {
            Some(format!(
                "{fails} failed authentications in {window}{from} (last user {user})"
            ))
        } else if s.scan_distinct_users > 0 && distinct >= u64::from(s.scan_distinct_users) {
            Some(format!(
                "{distinct} distinct unknown users tried in {window} (last user {user})"
            ))
        } else if slow_limit > 0 && slow >= u64::from(slow_limit) {
            Some(format!(
                "{slow} failed authentications in {slow_window}{from} (last user {user})"
            ))
        } else {
            None
        };
        match evidence {
            Some(evidence) => Reaction::Ban(self.ban(sh, &src, evidence)),
            None => {
                let mut line = format!(
                    "auth failure from {src} ({failure}, user {user}, tenant {}): \
                     {fails}/{limit} in {window}, {slow}/{slow_limit} in {slow_window}{}",
                    shown_tenant(a.tenant),
                    if office { " (office)" } else { "" },
                );
                if failure == Failure::UnknownUser {
                    line += &format!(
                        ", {distinct}/{} distinct unknown users",
                        s.scan_distinct_users
                    );
                }
                sh.log(Level::Debug, &line);
                Reaction::None
            }
        }
    }

    /// Remembers a successful authentication: its address is an office for
    /// `office_window_ms`, and the extension's owner for `owner_window_ms`
    /// (each give or take 1/16, as renewals are spaced out).
    pub fn on_auth_succeeded(&self, sh: &impl Shared, a: &Attempt<'_>) -> Reaction {
        let s = &self.settings;
        let src = self.source_key(a.ip);
        let now = sh.now_ms();
        let mark = |key: String, value: &str, ttl_ms: u64| {
            if self.renewals.due(&key, value, ttl_ms, now) {
                sh.kv_set(&key, value, ttl_ms);
            }
        };
        // The same value whoever authenticated: phones taking turns behind
        // one office NAT then renew the mark instead of rewriting it, which
        // would move `kv-generation` and cost every request a lock read.
        mark(key(&src, "ok"), "1", s.office_window_ms);
        let mut shortest = s.office_window_ms;
        if s.extension_lock_failures > 0 {
            mark(
                owner_key(&extension_key(a.tenant, a.user), &src),
                "1",
                s.owner_window_ms,
            );
            shortest = shortest.min(s.owner_window_ms);
        }
        // Repeats within the time a renewal is skipped anyway would change
        // nothing: the host need not deliver them. A mark then lives its TTL
        // after the last success, give or take 2/16 (a skipped delivery,
        // then a skipped write).
        match shortest / RENEW_FRACTION {
            0 => Reaction::None,
            quiet_ms => Reaction::NoneForRepeats(quiet_ms),
        }
    }

    /// Bans `src`: for `repeat_ban_ms` if it is a repeat offender. Forgets
    /// its counts, so the ban is counted once and a lifted ban starts afresh.
    fn ban(&self, sh: &impl Shared, src: &str, evidence: String) -> Ban {
        let s = &self.settings;
        let mut duration_ms = s.ban_ms;
        let mut reason = evidence;
        if s.repeat_bans > 0 {
            let bans = sh.add(&key(src, "bans"), 1, s.repeat_window_ms);
            if bans >= u64::from(s.repeat_bans) {
                duration_ms = s.repeat_ban_ms;
                reason += &format!(
                    "; banned {bans} times in {}: repeat offender",
                    human(s.repeat_window_ms)
                );
            }
        }
        for what in ["fail", "slow", "users", "scanner"] {
            sh.reset(&key(src, what));
        }
        sh.log(
            Level::Info,
            &format!("banning {src} for {}: {reason}", human(duration_ms)),
        );
        Ban {
            duration_ms,
            reason,
        }
    }

    /// A scanner User-Agent: ban a verified source at once; drop from an
    /// unverified one until it repeats (a spoofed UDP packet must not ban the
    /// address it names on its own).
    fn scanner(&self, sh: &impl Shared, req: &impl RequestView, ua: &str) -> Verdict {
        let s = &self.settings;
        let src = self.source_key(&req.source_ip());
        let ua = shown(ua);
        if req.source_verified() {
            return Verdict::Ban(self.ban(sh, &src, format!("scanner User-Agent '{ua}'")));
        }
        if s.scanner_udp_repeats == 0 {
            sh.log(
                Level::Debug,
                &format!("dropping unverified request from {src} with scanner User-Agent '{ua}'"),
            );
            return Verdict::Drop;
        }
        let seen = sh.add(&key(&src, "scanner"), 1, s.window_ms);
        let mut limit = s.scanner_udp_repeats;
        if seen >= u64::from(limit) && self.is_known(sh, &src) {
            limit = match s.office_threshold {
                0 => 0,
                office => office.max(limit),
            };
        }
        let window = human(s.window_ms);
        if limit > 0 && seen >= u64::from(limit) {
            return Verdict::Ban(self.ban(
                sh,
                &src,
                format!("scanner User-Agent '{ua}' {seen} times in {window} over UDP"),
            ));
        }
        sh.log(
            Level::Debug,
            &format!(
                "dropping unverified request from {src} with scanner User-Agent '{ua}': \
                 {seen}/{limit} in {window}"
            ),
        );
        Verdict::Drop
    }

    /// Counts a wrong password for one extension; locks it at the limit and
    /// says so once.
    fn count_extension_failure(&self, sh: &impl Shared, a: &Attempt<'_>, src: &str) {
        let s = &self.settings;
        let ext = extension_key(a.tenant, a.user);
        let fails_key = format!("{ext}/fails");
        let fails = sh.add(&fails_key, 1, s.extension_lock_window_ms);
        if fails < u64::from(s.extension_lock_failures) {
            return;
        }
        let lock_key = format!("{ext}/lock");
        if sh.kv_get(&lock_key).is_some() {
            return;
        }
        let until = sh.now_ms().saturating_add(s.extension_lock_ms);
        sh.kv_set(&lock_key, &until.to_string(), s.extension_lock_ms);
        // The newest lock lasts longest: it keeps the marker alive for all.
        sh.kv_set(ANY_LOCK, &until.to_string(), s.extension_lock_ms);
        sh.reset(&fails_key);
        sh.log(
            Level::Warn,
            &format!(
                "locking extension {} of tenant {} for {}: {fails} wrong passwords in {} \
                 (last from {src}); its credentials are refused with 403 except from \
                 addresses where it authenticated within {}",
                shown(a.user),
                shown_tenant(a.tenant),
                human(s.extension_lock_ms),
                human(s.extension_lock_window_ms),
                human(s.owner_window_ms),
            ),
        );
    }

    /// Some extension is locked: refuse this request if it carries that
    /// extension's credentials and does not come from its owner.
    fn check_lock(&self, sh: &impl Shared, req: &impl RequestView) -> Verdict {
        let method = req.method();
        if NO_CREDENTIALS.contains(&method.as_str()) {
            return Verdict::Continue;
        }
        let Some(user) = req.auth_user() else {
            return Verdict::Continue;
        };
        let tenant = req.tenant();
        let ext = extension_key(&tenant, &user);
        let Some(until) = sh.kv_get(&format!("{ext}/lock")) else {
            return Verdict::Continue;
        };
        let now = sh.now_ms();
        if until.parse::<u64>().is_ok_and(|until| now >= until) {
            return Verdict::Continue;
        }
        let src = self.source_key(&req.source_ip());
        let who = format!(
            "{method} for locked extension {} of tenant {} from {src}",
            shown(&user),
            shown_tenant(&tenant)
        );
        if sh.kv_get(&owner_key(&ext, &src)).is_some() {
            sh.log(Level::Debug, &format!("letting {who}: its owner's address"));
            return Verdict::Continue;
        }
        sh.log(Level::Debug, &format!("refusing {who}"));
        Verdict::Reject {
            code: 403,
            reason: "Extension temporarily locked".into(),
        }
    }

    /// Whether someone authenticated from `src` within `office_window_ms`.
    fn is_known(&self, sh: &impl Shared, src: &str) -> bool {
        sh.kv_get(&key(src, "ok")).is_some()
    }

    /// The address that counts are kept by: IPv4 as is, IPv6 by its prefix.
    pub fn source_key(&self, ip: &str) -> String {
        source_key(ip, self.settings.ipv6_prefix_len)
    }
}

/// A per-source key: `src:<ip>/<what>`.
fn key(src: &str, what: &str) -> String {
    format!("{src}/{what}")
}

/// `ext:<tenant>/<user>`: one extension across sources.
fn extension_key(tenant: &str, user: &str) -> String {
    format!("ext:{}/{}", key_part(tenant), key_part(user))
}

/// Marks `src` as an address where the extension authenticated.
fn owner_key(ext: &str, src: &str) -> String {
    format!("{ext}/owner/{src}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_keys_cannot_collide() {
        assert_ne!(
            extension_key("", "x/lock"),
            format!("{}/lock", extension_key("", "x"))
        );
    }
}
