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
//! Costs: an ordinary request reads `source-ip` (it came with the call) and
//! makes one `counter.add-source` (a key of numbers: nothing formatted, no
//! text across the boundary); the first excess request of a window two to
//! four host calls more, the others one more.

use std::net::IpAddr;

use plugin_kit::config::{self, ConfigError};
use plugin_kit::net::{canonical, source_key_of};
use plugin_kit::text::human;
use serde::Deserialize;

pub use plugin_kit::Level;

/// The host's shared state, as the policy sees it: windowed counters (the
/// `counter` import), the clock and the log. Keys are namespaced per plugin
/// by the host.
pub trait Shared {
    /// Adds `by` to `key`; returns its total over the last `window_ms`.
    fn add(&self, key: &str, by: u32, window_ms: u64) -> u64;
    /// [`Shared::add`] under a key of numbers: the source `ip` (IPv6 by its
    /// first `ipv6_prefix_len` bits) and `tag` (the `counter.add-source`
    /// import: no text crosses the boundary).
    fn add_source(&self, ip: IpAddr, ipv6_prefix_len: u8, tag: u8, by: u32, window_ms: u64) -> u64;
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
        let ip = req.source_ip();
        let seen = sh.add_source(ip, s.ipv6_prefix_len, REQUESTS_TAG, 1, s.window_ms);
        if seen <= u64::from(s.requests) {
            return Verdict::Continue;
        }
        let key = CounterKey::of(ip, s.ipv6_prefix_len);
        self.over(sh, key.as_str(), ip, seen)
    }

    /// An excess request: 503 for the first of its window, else silence;
    /// a ban after `ban_after_windows` such windows in a row.
    fn over(&self, sh: &impl Shared, key: &str, ip: IpAddr, seen: u64) -> Verdict {
        let s = &self.settings;
        let slot = sh.now_ms() / s.window_ms;
        if sh.add(&format!("{key}/over/{slot}"), 1, s.window_ms) > 1 {
            return Verdict::Drop;
        }
        // For people: `src:192.0.2.7`, `src:2001:db8::/64`.
        let src = source_key_of(ip, s.ipv6_prefix_len);
        let window = human(s.window_ms);
        if s.ban_after_windows > 0 {
            // Windows over the limit in a row, ending with this one: each
            // slot's key holds it; the previous slot's is read within two
            // windows, while the host still keeps it.
            let two = s.window_ms.saturating_mul(2);
            let before = sh.get(&format!("{key}/streak/{}", slot.wrapping_sub(1)), two);
            let streak = before.saturating_add(1);
            let by = u32::try_from(streak).unwrap_or(u32::MAX);
            sh.add(&format!("{key}/streak/{slot}"), by, two);
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

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The `counter.add-source` tag of a source's request count.
const REQUESTS_TAG: u8 = 0;

/// A source's key for the counters of an excess (the 503 and the streak),
/// made on the stack without formatting. `4` and the IPv4 address in hex, or `6` and the
/// source's IPv6 prefix (`ipv6_prefix_len`) in hex; an IPv4-mapped IPv6
/// source counts as IPv4. Log lines use the readable `src:` form instead.
struct CounterKey {
    bytes: [u8; 33],
    len: usize,
}

impl CounterKey {
    fn of(ip: IpAddr, ipv6_prefix_len: u8) -> CounterKey {
        let mut octets = [0u8; 16];
        let (family, used) = match canonical(ip) {
            IpAddr::V4(v4) => {
                octets[..4].copy_from_slice(&v4.octets());
                (b'4', 4)
            }
            IpAddr::V6(v6) => {
                let len = u32::from(ipv6_prefix_len.clamp(1, 128));
                let prefix = u128::from(v6) & (u128::MAX << (128 - len));
                octets = prefix.to_be_bytes();
                (b'6', 16)
            }
        };
        let mut key = CounterKey {
            bytes: [0; 33],
            len: 1 + 2 * used,
        };
        key.bytes[0] = family;
        // Byte by byte: wasm has no 128-bit shifts (each is a library call).
        for (i, octet) in octets[..used].iter().enumerate() {
            key.bytes[1 + 2 * i] = HEX[usize::from(octet >> 4)];
            key.bytes[2 + 2 * i] = HEX[usize::from(octet & 0xf)];
        }
        key
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("hex digits are ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_keys_are_one_per_source_and_prefix() {
        let key = |ip: &str, len| CounterKey::of(ip.parse().unwrap(), len).as_str().to_owned();
        assert_eq!(key("192.0.2.7", 64), "4c0000207");
        assert_eq!(key("::ffff:192.0.2.7", 64), "4c0000207");
        assert_eq!(key("0.0.0.0", 64), "400000000");
        assert_eq!(
            key("2001:db8:1:2:aaaa::1", 64),
            "620010db800010002".to_owned() + "0000000000000000"
        );
        assert_eq!(key("2001:db8:1:2:aaaa::1", 64), key("2001:db8:1:2::9", 64));
        assert_ne!(key("2001:db8:1:2::1", 128), key("2001:db8:1:2::9", 128));
        assert_ne!(key("2001:db8:1:3::1", 64), key("2001:db8:1:2::1", 64));
    }
}
