//! Which kv marks this instance wrote lately, so that a success does not
//! write the same mark again and again.
//!
//! Every successful authentication renews two marks (the address is an
//! office; the address owns the extension). A phone that registers every
//! few seconds would cross the sandbox twice per registration to move an
//! expiry that is hours away. A renewal of the same key with the same value
//! is skipped until 1/[`RENEW_FRACTION`] of its TTL has passed, so a mark
//! lives its TTL after the last success, give or take that fraction.
//!
//! A cache, not state: it lives in one instance's memory, a new instance
//! starts empty (and writes once), and it never holds more than
//! [`MAX_ENTRIES`] keys.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::sync::Mutex;

/// A renewal is skipped while less than this fraction of its TTL passed.
pub const RENEW_FRACTION: u64 = 16;

/// Keys remembered at most; when full, the memory starts afresh.
pub const MAX_ENTRIES: usize = 2048;

#[derive(Debug, Default)]
pub struct Renewals {
    /// kv key -> (value written, when). SipHash with a fixed key: a random
    /// seed would need WASI, which plugins are not given, and the keys come
    /// from successful authentications, not from whoever sends a packet.
    /// (A BTreeMap spent most of its time comparing the keys' long common
    /// prefixes.)
    written: Mutex<HashMap<String, (String, u64), BuildHasherDefault<DefaultHasher>>>,
}

impl Renewals {
    /// Whether `key` = `value` with `ttl_ms` must be written at `now_ms`;
    /// if so, it is remembered as written then. (A TTL of 0, no expiry,
    /// is always written: nothing would ever renew a deleted mark.)
    pub fn due(&self, key: &str, value: &str, ttl_ms: u64, now_ms: u64) -> bool {
        // One call at a time per instance: the lock is never contended.
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((last_value, at)) = written.get(key) {
            let fresh = now_ms.saturating_sub(*at) < ttl_ms / RENEW_FRACTION;
            if last_value == value && fresh {
                return false;
            }
        }
        if written.len() >= MAX_ENTRIES && !written.contains_key(key) {
            written.clear();
        }
        written.insert(key.to_owned(), (value.to_owned(), now_ms));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn the_same_value_is_written_again_only_after_a_sixteenth_of_its_ttl() {
        let r = Renewals::default();
        assert!(r.due("a/ok", "100", HOUR, 0));
        assert!(!r.due("a/ok", "100", HOUR, HOUR / 16 - 1));
        assert!(r.due("a/ok", "100", HOUR, HOUR / 16));
        assert!(!r.due("a/ok", "100", HOUR, HOUR / 16 + 1));
    }

    #[test]
    fn a_new_value_or_another_key_is_written_at_once() {
        let r = Renewals::default();
        assert!(r.due("a/ok", "100", HOUR, 0));
        assert!(r.due("a/ok", "101", HOUR, 1));
        assert!(r.due("b/ok", "101", HOUR, 2));
        assert!(!r.due("a/ok", "101", HOUR, 3));
    }

    #[test]
    fn a_mark_without_expiry_is_always_written() {
        let r = Renewals::default();
        assert!(r.due("a/ok", "1", 0, 0));
        assert!(r.due("a/ok", "1", 0, 0));
    }

    #[test]
    fn the_memory_is_bounded() {
        let r = Renewals::default();
        for i in 0..MAX_ENTRIES * 3 {
            assert!(r.due(&format!("k{i}"), "1", HOUR, 0));
        }
        assert!(r.written.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
