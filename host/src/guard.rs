//! The ban list: checked on every packet before anything else, so a flood
//! from a banned address costs one hash lookup and a counter.
//!
//! IPv4 sources are banned by address, IPv6 by prefix (/64 by default: one
//! host usually owns a whole /64). Each ban keeps its evidence (which plugin,
//! why, when it ends, how many packets it has dropped since) and is stored in
//! SQLite, so it survives a restart; expired bans are lifted lazily and by the
//! periodic purge. Networks in `never_ban`, and addresses a plugin trusted
//! recently (trunks, IP-authenticated devices), are never banned: their bad
//! traffic is rejected and logged instead.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::store::{StoredBan, Write};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How long an address a plugin trusted stays protected from bans.
const TRUSTED_PROTECTION_MS: u64 = 24 * 3600 * 1000;

/// One ban, with its evidence.
#[derive(Debug)]
struct Entry {
    until_ms: u64,
    created_ms: u64,
    /// The plugin (or "operator") that asked for it.
    by: String,
    reason: String,
    /// Packets dropped because of it since it was made (or since the restart).
    dropped: AtomicU64,
    /// The kernel filter drops its packets now, before they are read.
    in_kernel: AtomicBool,
}

/// A ban as listed, with its evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BanRow {
    /// The banned address, or the network for an IPv6 prefix ("2001:db8::/64").
    pub address: String,
    /// Who made it: the plugin (`fail-to-ban`) or `operator`.
    pub by: String,
    /// Why, in the words of whoever made it.
    pub reason: String,
    /// When it was made (Unix ms).
    pub created_ms: u64,
    /// When it ends (Unix ms).
    pub until_ms: u64,
    /// Packets the gateway read and dropped since the ban was made (or the
    /// gateway restarted).
    pub dropped: u64,
    /// The source kept sending, so the kernel now drops its UDP packets
    /// before the gateway reads them (counted in `udp_kernel_drops`, not in
    /// `dropped`).
    #[serde(default)]
    pub in_kernel: bool,
}

/// The outcome of a request to ban.
#[derive(Debug, PartialEq, Eq)]
pub enum BanOutcome {
    /// Banned (or an existing ban extended); the store write to persist it.
    Banned(Box<Write>),
    /// The address is exempt (never_ban, or trusted by a plugin).
    Exempt,
}

/// The ban list.
pub struct Guard {
    ipv6_prefix_len: u8,
    never_ban: Vec<IpNet>,
    bans: RwLock<FastMap<IpAddr, Entry>>,
    /// Number of bans (expired ones until the purge), so the common case (no bans at all) skips the lock.
    count: AtomicUsize,
    /// Sources a plugin trusted, with when that protection ends.
    trusted: Mutex<FastMap<IpAddr, u64>>,
    /// A ban moves to the kernel filter once it has dropped this many
    /// packets (0: never).
    kernel_drop_after: u64,
    kernel: KernelSync,
}

/// What the kernel filter's thread ([`crate::transport::ban_filter`]) and the
/// ban list tell each other.
#[derive(Default)]
struct KernelSync {
    state: Mutex<KernelState>,
    changed: Condvar,
}

#[derive(Default)]
struct KernelState {
    /// Bumped whenever the set of sources for the kernel may have changed.
    generation: u64,
    /// The last generation the filter installed.
    applied: u64,
    /// A filter thread runs.
    running: bool,
}

/// The sources the kernel should drop, as of `generation`.
#[derive(Debug, PartialEq, Eq)]
pub struct KernelSet {
    /// Most dropped packets first (those already in the kernel before new ones).
    pub sources: Vec<IpAddr>,
    /// When the first of their bans ends: the set changes then.
    pub next_end_ms: Option<u64>,
    pub generation: u64,
}

/// How long an unban waits for the kernel filter to let the source in again.
const UNBAN_SETTLE: Duration = Duration::from_secs(1);

impl Guard {
    pub fn new(ipv6_prefix_len: u8, never_ban: Vec<IpNet>) -> Guard {
        Guard {
            ipv6_prefix_len: ipv6_prefix_len.clamp(1, 128),
            never_ban,
            bans: RwLock::new(FastMap::default()),
            count: AtomicUsize::new(0),
            trusted: Mutex::new(FastMap::default()),
            kernel_drop_after: 0,
            kernel: KernelSync::default(),
        }
    }

    /// Bans whose source keeps sending move to the kernel filter after
    /// `packets` dropped packets (0: never).
    pub fn with_kernel_drop_after(mut self, packets: u64) -> Guard {
        self.kernel_drop_after = packets;
        self
    }

    /// The key an address is banned under: [`source_key`] with the
    /// configured IPv6 prefix.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        source_key(ip, self.ipv6_prefix_len)
    }

    /// The hot path: is this packet's source banned? Counts the drop.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        // Reading the clock only when there are bans keeps the common case free.
        self.count.load(Ordering::Relaxed) != 0 && self.is_banned_at(ip, crate::now_ms())
    }

    /// [`Guard::is_banned`] at a given time.
    pub fn is_banned_at(&self, ip: IpAddr, now_ms: u64) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let key = self.key(ip);
        let bans = self.bans.read().unwrap();
        match bans.get(&key) {
            Some(entry) if entry.until_ms > now_ms => {
                let dropped = entry.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped == self.kernel_drop_after {
                    self.kernel_changed();
                }
                true
            }
            _ => false,
        }
    }

    /// Bans `ip` until `now_ms + duration_ms` (extending an existing ban).
    pub fn ban(
        &self,
        ip: IpAddr,
        duration_ms: u64,
        by: &str,
        reason: &str,
        now_ms: u64,
    ) -> BanOutcome {
        if self.is_exempt(ip, now_ms) {
            return BanOutcome::Exempt;
        }
        let key = self.key(ip);
        let until_ms = now_ms.saturating_add(duration_ms);
        let mut bans = self.bans.write().unwrap();
        let entry = bans.entry(key).or_insert_with(|| Entry {
            until_ms: 0,
            created_ms: now_ms,
            by: String::new(),
            reason: String::new(),
            dropped: AtomicU64::new(0),
            in_kernel: AtomicBool::new(false),
        });
        if entry.until_ms <= now_ms {
            entry.created_ms = now_ms;
            entry.dropped.store(0, Ordering::Relaxed);
        }
        entry.until_ms = entry.until_ms.max(until_ms);
        entry.by = by.to_owned();
        entry.reason = reason.to_owned();
        let write = Write::UpsertBan(StoredBan {
            address: self.describe(key),
            by: entry.by.clone(),
            reason: entry.reason.clone(),
            created_ms: entry.created_ms,
            until_ms: entry.until_ms,
        });
        self.count.store(bans.len(), Ordering::Relaxed);
        BanOutcome::Banned(Box::new(write))
    }

    /// Lifts the ban covering `ip`; the store write to persist it, if there
    /// was one. Takes effect at once: when the kernel filter held the source,
    /// this returns after the filter has let it in again.
    pub fn unban(&self, ip: IpAddr) -> Option<Write> {
        let key = self.key(ip);
        let mut bans = self.bans.write().unwrap();
        let removed = bans.remove(&key);
        self.count.store(bans.len(), Ordering::Relaxed);
        drop(bans);
        let removed = removed?;
        if removed.in_kernel.load(Ordering::Relaxed) {
            let generation = self.kernel_changed();
            self.await_kernel(generation, UNBAN_SETTLE);
        }
        Some(Write::DeleteBan {
            address: self.describe(key),
        })
    }

    /// The sources whose bans the kernel should enforce at `now_ms`: bans
    /// that dropped `kernel_drop_after` packets, at most `max` of them (those
    /// already in the kernel first, then by packets dropped). Marks them.
    pub fn kernel_set(&self, now_ms: u64, max: usize) -> KernelSet {
        let generation = self.kernel.state.lock().unwrap().generation;
        let bans = self.bans.read().unwrap();
        let mut candidates: Vec<(bool, u64, IpAddr, u64)> = if self.kernel_drop_after == 0 {
            Vec::new()
        } else {
            bans.iter()
                .filter(|(_, e)| e.until_ms > now_ms)
                .map(|(key, e)| {
                    let dropped = e.dropped.load(Ordering::Relaxed);
                    (
                        e.in_kernel.load(Ordering::Relaxed),
                        dropped,
                        *key,
                        e.until_ms,
                    )
                })
                .filter(|(in_kernel, dropped, ..)| *in_kernel || *dropped >= self.kernel_drop_after)
                .collect()
        };
        candidates.sort_unstable_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)).then(a.2.cmp(&b.2)));
        candidates.truncate(max);
        for entry in bans.values() {
            entry.in_kernel.store(false, Ordering::Relaxed);
        }
        for (_, _, key, _) in &candidates {
            if let Some(entry) = bans.get(key) {
                entry.in_kernel.store(true, Ordering::Relaxed);
            }
        }
        KernelSet {
            next_end_ms: candidates.iter().map(|c| c.3).min(),
            sources: candidates.into_iter().map(|c| c.2).collect(),
            generation,
        }
    }

    /// The generation of the kernel set now: it moves when the set may have
    /// changed (a ban reached `kernel_drop_after`, an unban).
    pub fn kernel_generation(&self) -> u64 {
        self.kernel.state.lock().unwrap().generation
    }

    /// Something the kernel set depends on changed; returns the new generation.
    fn kernel_changed(&self) -> u64 {
        let mut state = self.kernel.state.lock().unwrap();
        state.generation += 1;
        self.kernel.changed.notify_all();
        state.generation
    }

    /// The kernel filter's thread runs: unbans wait for it.
    pub fn kernel_filter_started(&self) {
        self.kernel.state.lock().unwrap().running = true;
    }

    /// The filter installed the set of `generation`.
    pub fn kernel_applied(&self, generation: u64) {
        let mut state = self.kernel.state.lock().unwrap();
        state.applied = state.applied.max(generation);
        self.kernel.changed.notify_all();
    }

    /// The filter's wait: until the generation moves past `seen`, or `timeout`.
    pub fn kernel_wait(&self, seen: u64, timeout: Duration) {
        let state = self.kernel.state.lock().unwrap();
        let _ = self
            .kernel
            .changed
            .wait_timeout_while(state, timeout, |s| s.generation == seen);
    }

    fn await_kernel(&self, generation: u64, timeout: Duration) {
        let state = self.kernel.state.lock().unwrap();
        if !state.running {
            return;
        }
        let (_state, waited) = self
            .kernel
            .changed
            .wait_timeout_while(state, timeout, |s| s.applied < generation)
            .unwrap();
        if waited.timed_out() {
            tracing::warn!("the kernel ban filter did not confirm an unban in time");
        }
    }

    /// How many bans are held (expired ones until the next purge).
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Remembers that a plugin trusted this source: it will not be banned.
    pub fn protect(&self, ip: IpAddr, now_ms: u64) {
        let mut trusted = self.trusted.lock().unwrap();
        trusted.insert(ip, now_ms + TRUSTED_PROTECTION_MS);
    }

    fn is_exempt(&self, ip: IpAddr, now_ms: u64) -> bool {
        if self.never_ban.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        let trusted = self.trusted.lock().unwrap();
        trusted.get(&ip).is_some_and(|until| *until > now_ms)
    }

    /// Every current ban, soonest to end first.
    pub fn list(&self, now_ms: u64) -> Vec<BanRow> {
        let bans = self.bans.read().unwrap();
        let mut rows: Vec<BanRow> = bans
            .iter()
            .filter(|(_, e)| e.until_ms > now_ms)
            .map(|(key, e)| BanRow {
                address: self.describe(*key),
                by: e.by.clone(),
                reason: e.reason.clone(),
                created_ms: e.created_ms,
                until_ms: e.until_ms,
                dropped: e.dropped.load(Ordering::Relaxed),
                in_kernel: e.in_kernel.load(Ordering::Relaxed),
            })
            .collect();
        rows.sort_by_key(|r| r.until_ms);
        rows
    }

    /// Lifts expired bans and forgets expired trust; returns the bans lifted.
    pub fn purge(&self, now_ms: u64) -> usize {
        let mut bans = self.bans.write().unwrap();
        let before = bans.len();
        bans.retain(|_, e| e.until_ms > now_ms);
        self.count.store(bans.len(), Ordering::Relaxed);
        drop(bans);
        self.trusted
            .lock()
            .unwrap()
            .retain(|_, until| *until > now_ms);
        before - self.count.load(Ordering::Relaxed)
    }

    /// Restores stored bans at start; unreadable or expired rows are skipped.
    pub fn restore(&self, stored: Vec<StoredBan>, now_ms: u64) -> usize {
        let mut bans = self.bans.write().unwrap();
        for s in stored.into_iter().filter(|s| s.until_ms > now_ms) {
            let Some(ip) = parse_address(&s.address) else {
                tracing::warn!(address = %s.address, "skipping unreadable stored ban");
                continue;
            };
            bans.insert(
                self.key(ip),
                Entry {
                    until_ms: s.until_ms,
                    created_ms: s.created_ms,
                    by: s.by,
                    reason: s.reason,
                    dropped: AtomicU64::new(0),
                    in_kernel: AtomicBool::new(false),
                },
            );
        }
        self.count.store(bans.len(), Ordering::Relaxed);
        bans.len()
    }

    /// How a ban key is written: an IPv4 address, or an IPv6 network.
    pub fn describe(&self, key: IpAddr) -> String {
        match key {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) if self.ipv6_prefix_len == 128 => v6.to_string(),
            IpAddr::V6(v6) => format!("{v6}/{}", self.ipv6_prefix_len),
        }
    }
}

/// What a source is known by, for bans and for plugins' per-source
/// counters: an IPv4 address itself, an IPv6 address's first
/// `ipv6_prefix_len` bits (1-128) (an IPv4-mapped IPv6 address counts as
/// IPv4).
#[inline]
pub fn source_key(ip: IpAddr, ipv6_prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6);
                let mask = u128::MAX << (128 - u32::from(ipv6_prefix_len.clamp(1, 128)));
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        },
    }
}

/// Reads an address as written by an operator or by [`Guard::describe`]:
/// `192.0.2.7`, `2001:db8::1`, `[2001:db8::1]` or `2001:db8::/64`.
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_start_matches('[').trim_end_matches(']');
    let text = text.split('/').next()?;
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_is_banned_by_address_and_expires() {
        let g = Guard::new(64, Vec::new());
        assert!(!g.is_banned_at(ip("127.0.0.2"), 0));
        assert!(matches!(
            g.ban(ip("127.0.0.2"), 1000, "fail-to-ban", "5 failures", 0),
            BanOutcome::Banned(_)
        ));
        assert!(g.is_banned_at(ip("127.0.0.2"), 999));
        assert!(!g.is_banned_at(ip("127.0.0.3"), 999));
        assert!(!g.is_banned_at(ip("127.0.0.2"), 1000), "expired at its end");
        assert_eq!(g.list(0)[0].dropped, 1);
        assert_eq!(g.purge(1000), 1);
        assert!(g.list(0).is_empty());
    }

    #[test]
    fn ipv6_is_banned_by_64_on_loopback_and_beyond() {
        let g = Guard::new(64, Vec::new());
        g.ban(ip("::1"), 1000, "p", "r", 0);
        // ::1 and every address of its /64 (::/64) are covered.
        assert!(g.is_banned_at(ip("::1"), 1));
        assert!(g.is_banned_at(ip("::2"), 1));
        assert!(!g.is_banned_at(ip("0:0:0:1::1"), 1), "another /64");
        assert_eq!(g.list(0)[0].address, "::/64");

        g.ban(ip("2001:db8:1:2:aaaa::1"), 1000, "p", "r", 0);
        assert!(g.is_banned_at(ip("2001:db8:1:2:ffff::9"), 1));
        assert!(!g.is_banned_at(ip("2001:db8:1:3::1"), 1));
        // An IPv4-mapped source is the IPv4 address.
        g.ban(ip("::ffff:192.0.2.9"), 1000, "p", "r", 0);
        assert!(g.is_banned_at(ip("192.0.2.9"), 1));
    }

    #[test]
    fn prefix_length_is_configurable() {
        let g = Guard::new(128, Vec::new());
        g.ban(ip("::1"), 1000, "p", "r", 0);
        assert!(g.is_banned_at(ip("::1"), 1));
        assert!(!g.is_banned_at(ip("::2"), 1));
        assert_eq!(g.list(0)[0].address, "::1");
    }

    #[test]
    fn never_ban_and_trusted_sources_are_exempt() {
        let g = Guard::new(64, vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(g.ban(ip("10.1.2.3"), 1000, "p", "r", 0), BanOutcome::Exempt);
        g.protect(ip("127.0.0.3"), 0);
        assert_eq!(
            g.ban(ip("127.0.0.3"), 1000, "p", "r", 0),
            BanOutcome::Exempt
        );
        assert!(!g.is_banned_at(ip("127.0.0.3"), 1));
        // Protection ends.
        assert!(matches!(
            g.ban(ip("127.0.0.3"), 1000, "p", "r", TRUSTED_PROTECTION_MS + 1),
            BanOutcome::Banned(_)
        ));
    }

    #[test]
    fn unban_lifts_at_once_and_a_ban_extends() {
        let g = Guard::new(64, Vec::new());
        g.ban(ip("127.0.0.2"), 1000, "p", "first", 0);
        g.ban(ip("127.0.0.2"), 5000, "p", "second", 10);
        assert_eq!(g.list(0)[0].until_ms, 5010);
        assert_eq!(g.list(0)[0].reason, "second");
        assert!(g.unban(ip("127.0.0.2")).is_some());
        assert!(!g.is_banned_at(ip("127.0.0.2"), 20));
        assert!(g.unban(ip("127.0.0.2")).is_none());
    }

    #[test]
    fn a_ban_moves_to_the_kernel_after_enough_drops_and_leaves_when_it_ends() {
        let g = Guard::new(64, Vec::new()).with_kernel_drop_after(3);
        g.ban(ip("127.0.0.2"), 1000, "p", "flood", 0);
        g.ban(ip("127.0.0.3"), 5000, "p", "quiet", 0);
        g.ban(ip("127.0.0.4"), 2000, "p", "flood", 0);
        let start = g.kernel_set(1, 8).generation;
        for _ in 0..2 {
            assert!(g.is_banned_at(ip("127.0.0.2"), 1));
        }
        assert!(g.kernel_set(1, 8).sources.is_empty());
        // The third drop crosses the threshold and wakes the filter.
        assert!(g.is_banned_at(ip("127.0.0.2"), 1));
        for _ in 0..5 {
            assert!(g.is_banned_at(ip("127.0.0.4"), 1));
        }
        let set = g.kernel_set(1, 8);
        assert_eq!(set.generation, start + 2);
        // Most drops first; the quiet ban stays with the gateway.
        assert_eq!(set.sources, vec![ip("127.0.0.4"), ip("127.0.0.2")]);
        assert_eq!(set.next_end_ms, Some(1000));
        assert!(
            g.list(1)
                .iter()
                .find(|r| r.address == "127.0.0.2")
                .unwrap()
                .in_kernel
        );
        assert!(
            !g.list(1)
                .iter()
                .find(|r| r.address == "127.0.0.3")
                .unwrap()
                .in_kernel
        );
        // Full: those already in the kernel keep their places.
        for _ in 0..50 {
            g.is_banned_at(ip("127.0.0.3"), 1);
        }
        assert_eq!(
            g.kernel_set(1, 2).sources,
            vec![ip("127.0.0.4"), ip("127.0.0.2")]
        );
        // When a ban ends its source leaves the kernel set, and a waiting
        // one comes in (after those already there).
        let later = g.kernel_set(1500, 8);
        assert_eq!(later.sources, vec![ip("127.0.0.4"), ip("127.0.0.3")]);
        assert_eq!(later.next_end_ms, Some(2000));
        // An unban wakes the filter (no filter thread runs here: no wait).
        let before = g.kernel_set(1500, 8).generation;
        g.unban(ip("127.0.0.4"));
        assert_eq!(g.kernel_set(1500, 8).generation, before + 1);
        assert_eq!(g.kernel_set(1500, 8).sources, vec![ip("127.0.0.3")]);
    }

    #[test]
    fn without_a_threshold_nothing_goes_to_the_kernel() {
        let g = Guard::new(64, Vec::new());
        g.ban(ip("127.0.0.2"), 1000, "p", "flood", 0);
        for _ in 0..1000 {
            g.is_banned_at(ip("127.0.0.2"), 1);
        }
        assert!(g.kernel_set(1, 8).sources.is_empty());
    }

    #[test]
    fn restore_skips_expired_and_reads_networks() {
        let g = Guard::new(64, Vec::new());
        let row = |address: &str, until_ms| StoredBan {
            address: address.into(),
            by: "p".into(),
            reason: "r".into(),
            created_ms: 0,
            until_ms,
        };
        let n = g.restore(
            vec![
                row("127.0.0.2", 100),
                row("2001:db8::/64", 100),
                row("127.0.0.9", 5),
                row("junk", 100),
            ],
            10,
        );
        assert_eq!(n, 2);
        assert!(g.is_banned_at(ip("2001:db8::77"), 11));
        assert!(!g.is_banned_at(ip("127.0.0.9"), 11));
    }
}
