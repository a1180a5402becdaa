//! The rate-limit policy, in plain Rust: no WIT types, no wasm.
//!
//! Each source address (an IPv6 source by its `/ipv6_prefix_len`, as the
//! gateway bans) may send `requests` requests within `window_ms`. The count
//! is of everything the source sends, refused requests included, the way
//! flood protection counts (Kamailio's pike does the same): a source that
//! keeps sending faster than the limit is refused until it slows down.
//!
//! Over the limit:
//! - the first excess request of a window is answered `503 Rate limit
//!   exceeded` (a phone that merely bursts learns why);
//! - every other excess request of that window is dropped: a flood costs
//!   no answers;
//! - with `ban_after_windows` N > 0, a source over the limit in N windows in
//!   a row is banned for `ban_ms` (at its first excess request of the N-th).
//!
//! "A window" for the 503 and the ban is a fixed slot of `window_ms` on the
//! clock (`now_ms / window_ms`); the limit itself is counted over the last
//! `window_ms`, sliding (the host's windowed counter).
//!
//! Costs: an ordinary request reads one getter (`source-ip`) and makes one
//! `counter.add`; the first excess request of a window two to four host
//! calls more, the others one more.

use std::net::IpAddr;

use plugin_kit::config::{self, ConfigError};
use plugin_kit::net::source_key_of;
use plugin_kit::text::human;
use serde::Deserialize;

pub use plugin_kit::Level;

/// The host's shared state, as the policy sees it: windowed counters (the
/// `counter` import), the clock and the log. Keys are namespaced per plugin
/// by the host.
pub trait Shared {
    /// Adds `by` to `key`; returns its total over the last `window_ms`.
    fn add(&self, key: &str, by: u32, window_ms: u64) -> u64;
    /// The total of `key` over the last `window_ms`.
    fn get(&self, key: &str, window_ms: u64) -> u64;
    /// Milliseconds since the UNIX epoch.
    fn now_ms(&self) -> u64;
    fn log(&self, level: Level, message: &str);
}

/// One request, read lazily (each getter crosses the sandbox boundary).
pub trait RequestView {
    /// The source IP (the `source-ip` getter: no text to allocate).
    fn source_ip(&self) -> IpAddr;
}

pub use plugin_kit::verdict::{Ban, Verdict};

/// The answer to the first excess request of a window.
pub const REJECT_CODE: u16 = 503;
pub const REJECT_REASON: &str = "Rate limit exceeded";

/// The plugin's config table (`[plugin.config]`, handed to `init` as JSON).
/// Every key is optional; durations are in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Requests one source may send within `window_ms`.
    pub requests: u32,
    pub window_ms: u64,
    /// Windows over the limit in a row that ban the source; 0: never.
    pub ban_after_windows: u32,
    /// How long such a ban lasts.
    pub ban_ms: u64,
    /// IPv6 sources are counted by this prefix (the gateway bans by /64 by
    /// default).
    pub ipv6_prefix_len: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            requests: 200,
            window_ms: 1000,
            ban_after_windows: 0,
            ban_ms: 600_000,
            ipv6_prefix_len: 64,
        }
    }
}

impl Settings {
    /// Parses the config JSON; empty text or `null` means all defaults.
    pub fn from_json(json: &str) -> Result<Settings, ConfigError> {
        let settings: Settings = config::from_json(json)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.requests == 0 {
            return Err(ConfigError::new(
                "requests",
                "must be greater than 0 (to stop limiting, leave the plugin out)",
            ));
        }
        for (key, value) in [("window_ms", self.window_ms), ("ban_ms", self.ban_ms)] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        if !(1..=128).contains(&self.ipv6_prefix_len) {
            return Err(ConfigError::new(
                "ipv6_prefix_len",
                "must be between 1 and 128",
            ));
        }
        Ok(())
    }
}

/// The rate-limit policy: settings, and the rule over [`Shared`] counters.
#[derive(Debug, Clone)]
pub struct Policy {
    settings: Settings,
}

impl Policy {
    pub fn new(settings: Settings) -> Result<Policy, ConfigError> {
        settings.validate()?;
        Ok(Policy { settings })
    }

    /// Parses and checks the config JSON handed to `init`.
    pub fn from_json(json: &str) -> Result<Policy, ConfigError> {
        Policy::new(Settings::from_json(json)?)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Counts the request against its source; decides when over the limit.
    pub fn on_request(&self, sh: &impl Shared, req: &impl RequestView) -> Verdict {
        let s = &self.settings;
        let src = source_key_of(req.source_ip(), s.ipv6_prefix_len);
        let seen = sh.add(&src, 1, s.window_ms);
        if seen <= u64::from(s.requests) {
            return Verdict::Continue;
        }
        self.over(sh, &src, seen)
    }

    /// An excess request: 503 for the first of its window, else silence;
    /// a ban after `ban_after_windows` such windows in a row.
    fn over(&self, sh: &impl Shared, src: &str, seen: u64) -> Verdict {
        let s = &self.settings;
        let slot = sh.now_ms() / s.window_ms;
        if sh.add(&format!("{src}/over/{slot}"), 1, s.window_ms) > 1 {
            return Verdict::Drop;
        }
        let window = human(s.window_ms);
        if s.ban_after_windows > 0 {
            // Windows over the limit in a row, ending with this one: each
            // slot's key holds it; the previous slot's is read within two
            // windows, while the host still keeps it.
            let two = s.window_ms.saturating_mul(2);
            let before = sh.get(&format!("{src}/streak/{}", slot.wrapping_sub(1)), two);
            let streak = before.saturating_add(1);
            let by = u32::try_from(streak).unwrap_or(u32::MAX);
            sh.add(&format!("{src}/streak/{slot}"), by, two);
            if streak >= u64::from(s.ban_after_windows) {
                let reason = format!(
                    "over {} requests in {window} in {streak} windows in a row \
                     ({seen} in the last {window})",
                    s.requests
                );
                sh.log(
                    Level::Info,
                    &format!("banning {src} for {}: {reason}", human(s.ban_ms)),
                );
                return Verdict::Ban(Ban {
                    duration_ms: s.ban_ms,
                    reason,
                });
            }
        }
        sh.log(
            Level::Debug,
            &format!(
                "{src} sent {seen} requests in {window} (limit {}): {REJECT_CODE} now, \
                 dropping the rest of this window",
                s.requests
            ),
        );
        Verdict::Reject {
            code: REJECT_CODE,
            reason: REJECT_REASON.into(),
        }
    }
}
