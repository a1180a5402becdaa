//! The `continue-for-user-agent` promises of one plugin: which User-Agents it
//! answered `continue` for, at which `kv-generation`. While the generation
//! stays the same, the host answers a request with such a User-Agent itself
//! instead of calling the plugin (`cargo bench -p sipfence --bench chain`:
//! fail-to-ban 1.15 µs asked, 97 ns answered from its promise, on the slow
//! VM of docs/PLUGINS.md's second table).
//!
//! Bounded: at most [`CAPACITY`] User-Agents of at most
//! [`MAX_USER_AGENT_BYTES`] each, all forgotten when full (a miss only
//! costs the call it would have made anyway, so a sender that varies its
//! User-Agent gains nothing and holds at most 64 KiB here). Shared by the
//! receiving threads behind one mutex, held for a look-up only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::runtime::lock;

/// User-Agents remembered at most.
pub const CAPACITY: usize = 256;

/// A longer User-Agent is not remembered: its requests are always asked.
/// Phones send well under 100 bytes.
pub const MAX_USER_AGENT_BYTES: usize = 256;

/// No generation is remembered for requests without a User-Agent.
const NONE: u64 = 0;

#[derive(Default)]
pub struct Promises {
    /// User-Agent → the kv-generation it was promised at.
    by_user_agent: Mutex<HashMap<Box<str>, u64, foldhash::fast::RandomState>>,
    /// For requests without a User-Agent: the generation + 1 ([`NONE`]: no
    /// promise).
    without_user_agent: AtomicU64,
}

impl Promises {
    /// Whether the plugin promised `continue` for this User-Agent at this
    /// kv-generation.
    pub fn hold(&self, user_agent: Option<&str>, generation: u64) -> bool {
        match user_agent {
            None => self.without_user_agent.load(Ordering::Relaxed) == generation.wrapping_add(1),
            Some(ua) => lock(&self.by_user_agent).get(ua) == Some(&generation),
        }
    }

    /// Records a promise given for this User-Agent at this kv-generation.
    pub fn remember(&self, user_agent: Option<&str>, generation: u64) {
        match user_agent {
            None => self
                .without_user_agent
                .store(generation.wrapping_add(1), Ordering::Relaxed),
            Some(ua) if ua.len() > MAX_USER_AGENT_BYTES => {}
            Some(ua) => {
                let mut map = lock(&self.by_user_agent);
                if let Some(g) = map.get_mut(ua) {
                    *g = generation;
                    return;
                }
                if map.len() >= CAPACITY {
                    map.clear();
                }
                map.insert(ua.into(), generation);
            }
        }
    }

    /// Forgets every promise (the plugin failed: its instances are suspect).
    pub fn forget(&self) {
        lock(&self.by_user_agent).clear();
        self.without_user_agent.store(NONE, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promise_holds_for_its_user_agent_at_its_generation_only() {
        let p = Promises::default();
        p.remember(Some("Yealink SIP-T46S"), 7);
        assert!(p.hold(Some("Yealink SIP-T46S"), 7));
        assert!(!p.hold(Some("Yealink SIP-T46S"), 8), "kv changed since");
        assert!(!p.hold(Some("Yealink SIP-T46"), 7), "another User-Agent");
        assert!(!p.hold(None, 7), "no User-Agent is not any User-Agent");
    }

    #[test]
    fn requests_without_a_user_agent_have_their_own_promise() {
        let p = Promises::default();
        assert!(
            !p.hold(None, 0),
            "nothing promised yet, even at generation 0"
        );
        p.remember(None, 0);
        assert!(p.hold(None, 0));
        assert!(!p.hold(None, 1));
        assert!(!p.hold(Some(""), 0), "an empty User-Agent is a User-Agent");
        p.remember(None, u64::MAX);
        assert!(p.hold(None, u64::MAX));
    }

    #[test]
    fn a_new_promise_replaces_the_old_generation() {
        let p = Promises::default();
        p.remember(Some("a"), 1);
        p.remember(Some("a"), 2);
        assert!(!p.hold(Some("a"), 1));
        assert!(p.hold(Some("a"), 2));
    }

    #[test]
    fn when_full_everything_is_forgotten_and_the_newcomer_kept() {
        let p = Promises::default();
        for n in 0..CAPACITY {
            p.remember(Some(&format!("ua {n}")), 1);
        }
        assert!(p.hold(Some("ua 0"), 1));
        p.remember(Some("one more"), 1);
        assert!(p.hold(Some("one more"), 1));
        assert!(!p.hold(Some("ua 0"), 1));
        assert_eq!(p.by_user_agent.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_user_agent_too_long_to_keep_is_always_asked() {
        let p = Promises::default();
        let long = "x".repeat(MAX_USER_AGENT_BYTES + 1);
        p.remember(Some(&long), 1);
        assert!(!p.hold(Some(&long), 1));
        let longest = "x".repeat(MAX_USER_AGENT_BYTES);
        p.remember(Some(&longest), 1);
        assert!(p.hold(Some(&longest), 1));
    }

    #[test]
    fn forget_drops_every_promise() {
        let p = Promises::default();
        p.remember(Some("a"), 3);
        p.remember(None, 3);
        p.forget();
        assert!(!p.hold(Some("a"), 3));
        assert!(!p.hold(None, 3));
    }
}
