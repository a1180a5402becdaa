//! The `none-for-repeats` answers of one plugin to `auth-succeeded`: which
//! successes (source address, tenant, user) it does not need to hear of
//! again, and until when. Until then the host does not deliver such a
//! success to it: no event built, no call made.
//!
//! Bounded: at most [`CAPACITY`] successes, all forgotten when full (a
//! forgotten one is delivered again, which costs only the call). Shared by
//! the threads that authenticate, behind one mutex held for a look-up only.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;

use super::runtime::lock;

/// Successes remembered at most.
pub const CAPACITY: usize = 4096;

/// One success the plugin need not hear of again before `until_ms`.
struct Quiet {
    ip: IpAddr,
    tenant: Box<str>,
    user: Box<str>,
    until_ms: u64,
}

#[derive(Default)]
pub struct Repeats {
    /// By the hash of (ip, tenant, user); the entry holds the key itself, so
    /// a hash collision is a miss, never a wrong skip.
    by_success: Mutex<HashMap<u64, Quiet, foldhash::fast::RandomState>>,
    hasher: foldhash::fast::RandomState,
}

impl Repeats {
    /// Whether the plugin asked not to hear of this success before a time
    /// after `now_ms`.
    pub fn quiet(&self, ip: IpAddr, tenant: &str, user: &str, now_ms: u64) -> bool {
        let hash = self.hasher.hash_one((ip, tenant, user));
        lock(&self.by_success).get(&hash).is_some_and(|q| {
            q.ip == ip && *q.tenant == *tenant && *q.user == *user && now_ms < q.until_ms
        })
    }

    /// Records that the plugin need not hear of this success for `for_ms`.
    pub fn remember(&self, ip: IpAddr, tenant: &str, user: &str, now_ms: u64, for_ms: u64) {
        if for_ms == 0 {
            return;
        }
        let hash = self.hasher.hash_one((ip, tenant, user));
        let mut map = lock(&self.by_success);
        if map.len() >= CAPACITY && !map.contains_key(&hash) {
            map.clear();
        }
        map.insert(
            hash,
            Quiet {
                ip,
                tenant: tenant.into(),
                user: user.into(),
                until_ms: now_ms.saturating_add(for_ms),
            },
        );
    }

    /// Forgets everything (the plugin failed: it hears every success again).
    pub fn forget(&self) {
        lock(&self.by_success).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn a_success_is_quiet_for_its_time_and_only_itself() {
        let r = Repeats::default();
        r.remember(IP, "a.example", "100", 1_000, 500);
        assert!(r.quiet(IP, "a.example", "100", 1_000));
        assert!(r.quiet(IP, "a.example", "100", 1_499));
        assert!(!r.quiet(IP, "a.example", "100", 1_500), "its time is over");
        assert!(!r.quiet(IP, "a.example", "101", 1_000), "another user");
        assert!(!r.quiet(IP, "b.example", "100", 1_000), "another tenant");
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(!r.quiet(other, "a.example", "100", 1_000), "another source");
    }

    #[test]
    fn zero_milliseconds_is_no_promise() {
        let r = Repeats::default();
        r.remember(IP, "", "100", 1_000, 0);
        assert!(!r.quiet(IP, "", "100", 1_000));
    }

    #[test]
    fn when_full_everything_is_forgotten_and_the_newcomer_kept() {
        let r = Repeats::default();
        for n in 0..CAPACITY {
            r.remember(IP, "", &n.to_string(), 0, 1_000);
        }
        assert!(r.quiet(IP, "", "0", 0));
        r.remember(IP, "", "one more", 0, 1_000);
        assert!(r.quiet(IP, "", "one more", 0));
        assert!(!r.quiet(IP, "", "0", 0));
    }

    #[test]
    fn forget_drops_everything() {
        let r = Repeats::default();
        r.remember(IP, "", "100", 0, 1_000);
        r.forget();
        assert!(!r.quiet(IP, "", "100", 0));
    }
}
