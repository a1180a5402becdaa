//! The host side of the `counter` and `kv` imports: state that plugins keep
//! outside their own linear memory.
//!
//! [`SharedState`] outlives every [`Chain`](super::Chain): it maps a plugin's
//! name to its [`PluginState`], so all instances of a plugin see the same
//! counters, and a reloaded chain (SIGHUP) finds the counts of the old one.
//!
//! Everything here is bounded, because plugins put attacker-chosen text
//! (addresses, user names, user agents) into keys:
//! - at most [`StateLimits::max_keys`] keys per plugin in each of the three
//!   maps (windowed counters, distinct counters, kv); a new key beyond that
//!   first sweeps the expired keys, then evicts the stalest eighth of its shard;
//! - at most [`StateLimits::max_members`] members per distinct counter (the
//!   least recently seen goes);
//! - keys and members longer than [`MAX_KEY_BYTES`] are shortened to a prefix
//!   and a hash of the whole; kv values over [`StateLimits::max_value_bytes`]
//!   are refused.
//!
//! Times are milliseconds of a monotonic clock that starts with the
//! [`SharedState`] ([`SharedState::now`]): wall-clock jumps do not stretch or
//! shrink windows. The logic takes `now` explicitly so tests can drive time.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use sha2::{Digest, Sha256};

/// Keys (and distinct members) longer than this are stored as a prefix plus
/// a hash of the whole key.
pub const MAX_KEY_BYTES: usize = 256;

/// Buckets per window: a windowed counter counts over its window give or
/// take one bucket (1/16 of the window).
const BUCKETS: u64 = 16;

/// Ring slots: the buckets of one window plus the partly elapsed one.
const SLOTS: usize = BUCKETS as usize + 1;

/// Mutex shards per map, so workers touching different keys rarely wait on
/// each other.
const SHARDS: usize = 16;

/// Bounds on what one plugin may keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLimits {
    /// Keys per plugin, in each of: windowed counters, distinct counters, kv.
    pub max_keys: usize,
    /// Members remembered per distinct counter.
    pub max_members: usize,
    /// Largest kv value accepted.
    pub max_value_bytes: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_keys: 100_000,
            max_members: 256,
            max_value_bytes: 64 * 1024,
        }
    }
}

/// The state of every plugin, by plugin name. Create one per process and
/// hand it to every [`Chain::load`](super::Chain::load).
pub struct SharedState {
    /// The zero of [`SharedState::now`].
    /// [`coarse_ms`] when the state was created: its clock's zero.
    started: u64,
    limits: StateLimits,
    /// One entry per plugin name ever loaded; never shrinks (names come from
    /// the config, not from the network).
    plugins: Mutex<HashMap<String, Arc<PluginState>>>,
    /// The gateway's mail queue, for plugins granted `mail`; set once at
    /// start (a chain loaded before that, as by `check-config`, has none).
    mail: std::sync::OnceLock<Arc<dyn super::MailService>>,
}

impl Default for SharedState {
    fn default() -> Self {
        SharedState::new(StateLimits::default())
    }
}

impl SharedState {
    pub fn new(limits: StateLimits) -> SharedState {
        SharedState {
            started: coarse_ms(),
            limits,
            plugins: Mutex::new(HashMap::new()),
            mail: std::sync::OnceLock::new(),
        }
    }

    /// Milliseconds since this state was created (monotonic).
    pub fn now(&self) -> u64 {
        coarse_ms().saturating_sub(self.started)
    }

    /// The state of the plugin called `name`, created on first use.
    /// Connects `mail.send` to the gateway's mail queue (once; later calls
    /// are ignored).
    pub fn set_mail(&self, mail: Arc<dyn super::MailService>) {
        let _ = self.mail.set(mail);
    }

    pub(super) fn mail(&self) -> Option<Arc<dyn super::MailService>> {
        self.mail.get().cloned()
    }

    pub fn plugin(&self, name: &str) -> Arc<PluginState> {
        let mut plugins = lock(&self.plugins);
        plugins
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(PluginState::new(self.started, self.limits)))
            .clone()
    }
}

/// One plugin's counters and values, shared by all its instances.
pub struct PluginState {
    /// [`coarse_ms`] when the state was created: its clock's zero.
    started: u64,
    limits: StateLimits,
    counters: Sharded<String, Window>,
    /// `counter.add-source`'s counters, keyed by numbers.
    source_counters: Sharded<SourceKey, Window>,
    distinct: Sharded<String, Distinct>,
    kv: Sharded<Box<str>, Value>,
    /// Bumped after every `kv` write that may change what `kv.get` returns:
    /// `request-basics.kv-generation`.
    kv_generation: AtomicU64,
}

impl PluginState {
    fn new(started: u64, limits: StateLimits) -> PluginState {
        PluginState {
            started,
            limits,
            counters: Sharded::new(limits.max_keys),
            source_counters: Sharded::new(limits.max_keys),
            distinct: Sharded::new(limits.max_keys),
            kv: Sharded::new(limits.max_keys),
            kv_generation: AtomicU64::new(0),
        }
    }

    /// Changes after every `kv.set` and `kv.delete` that may change what
    /// `kv.get` returns: a plugin may keep what it read from `kv` while this
    /// stays the same.
    pub fn kv_generation(&self) -> u64 {
        // Acquire: a plugin that sees a generation sees the writes before it.
        self.kv_generation.load(Ordering::Acquire)
    }

    fn kv_written(&self) {
        // Release, after the write: a reader that saw the old generation
        // may have missed the write, and will see the new one next time.
        self.kv_generation.fetch_add(1, Ordering::Release);
    }

    /// Milliseconds on the clock of the [`SharedState`] this belongs to.
    pub fn now(&self) -> u64 {
        coarse_ms().saturating_sub(self.started)
    }

    /// `counter.add`: adds `by` and returns the total over the last
    /// `window_ms` (give or take one bucket, 1/16 of the window the key was
    /// created with). The bucket size of a key is fixed by the window of its
    /// first `add`; a later call with another window reads the same buckets
    /// (a longer window sees at most 17 buckets of history).
    pub fn counter_add(&self, key: &str, by: u32, window_ms: u64, now: u64) -> u64 {
        let key = bounded(key);
        self.counters.shard(key.as_ref()).add(
            key.as_ref(),
            || String::from(key.as_ref()),
            by,
            window_ms,
            now,
        )
    }

    /// `counter.add-source`: [`PluginState::counter_add`] under a key of
    /// numbers ([`source_key`]).
    pub fn counter_add_source(&self, key: SourceKey, by: u32, window_ms: u64, now: u64) -> u64 {
        self.source_counters
            .shard(&key)
            .add(&key, || key, by, window_ms, now)
    }

    /// `counter.get`: the total over the last `window_ms`; 0 for an unknown key.
    pub fn counter_get(&self, key: &str, window_ms: u64, now: u64) -> u64 {
        let key = bounded(key);
        let shard = self.counters.shard(key.as_ref());
        shard
            .map
            .get(key.as_ref())
            .map_or(0, |w| w.total(window_ms, now))
    }

    /// `counter.add-distinct`: records `member` under `key` and returns how
    /// many distinct members were seen within the last `window_ms` (at most
    /// [`StateLimits::max_members`]).
    pub fn counter_add_distinct(&self, key: &str, member: &str, window_ms: u64, now: u64) -> u64 {
        let key = bounded(key);
        let member = bounded(member);
        let max_members = self.limits.max_members;
        let mut shard = self.distinct.shard(key.as_ref());
        let distinct = shard.get_or_insert(
            key.as_ref(),
            || String::from(key.as_ref()),
            now,
            Distinct::default,
        );
        distinct.add(&member, window_ms, now, max_members)
    }

    /// `counter.reset`: forgets `key` (windowed and distinct).
    pub fn counter_reset(&self, key: &str) {
        let key = bounded(key);
        self.counters.shard(key.as_ref()).map.remove(key.as_ref());
        self.distinct.shard(key.as_ref()).map.remove(key.as_ref());
    }

    /// `kv.get`: the value unless it expired.
    pub fn kv_get(&self, key: &str, now: u64) -> Option<String> {
        self.kv_get_with(key, || now)
    }

    /// `kv.get` now: the clock is read only for a key that is there (a miss,
    /// the common answer, costs no clock).
    pub fn kv_get_now(&self, key: &str) -> Option<String> {
        self.kv_get_with(key, || self.now())
    }

    fn kv_get_with(&self, key: &str, now: impl FnOnce() -> u64) -> Option<String> {
        let key = bounded(key);
        let mut shard = self.kv.shard(key.as_ref());
        let expired = shard.map.get(key.as_ref())?.expired(now());
        if expired {
            shard.map.remove(key.as_ref());
            return None;
        }
        shard.map.get(key.as_ref()).map(|v| String::from(&*v.value))
    }

    /// `kv.set`: `ttl_ms` 0 keeps the value until it is deleted (or evicted
    /// as the stalest when the plugin reaches its key limit). Returns false
    /// (and stores nothing) for a value over the size limit.
    pub fn kv_set(&self, key: &str, value: String, ttl_ms: u64, now: u64) -> bool {
        if value.len() > self.limits.max_value_bytes {
            return false;
        }
        let key = bounded(key);
        let expires = match ttl_ms {
            0 => NEVER,
            ttl => now.saturating_add(ttl),
        };
        let value = value.into_boxed_str();
        let mut shard = self.kv.shard(key.as_ref());
        // Renewing a live key with the value it has changes no answer of
        // `kv.get`, so it keeps the generation (fail-to-ban renews its marks
        // on every successful authentication).
        let changed = match shard.map.get_mut(key.as_ref()) {
            Some(entry) => {
                let changed = entry.value != value || entry.expired(now);
                entry.value = value;
                entry.expires = expires;
                entry.touched = now;
                changed
            }
            None => {
                shard.get_or_insert(
                    key.as_ref(),
                    || Box::from(key.as_ref()),
                    now,
                    || Value {
                        value,
                        expires,
                        touched: now,
                    },
                );
                true
            }
        };
        drop(shard);
        if changed {
            self.kv_written();
        }
        true
    }

    /// `kv.delete`.
    pub fn kv_delete(&self, key: &str) {
        let key = bounded(key);
        let removed = self.kv.shard(key.as_ref()).map.remove(key.as_ref());
        if removed.is_some() {
            self.kv_written();
        }
    }

    /// Keys held: (windowed counters, distinct counters, kv), expired ones
    /// not yet swept included.
    pub fn key_counts(&self) -> (usize, usize, usize) {
        (
            self.counters.len() + self.source_counters.len(),
            self.distinct.len(),
            self.kv.len(),
        )
    }
}

// ---------------------------------------------------------------------------
// Keys

/// The key as stored: itself when short, else a prefix plus a 128-bit hash
/// of the whole (deterministic, so every instance finds the same entry).
fn bounded(key: &str) -> std::borrow::Cow<'_, str> {
    if key.len() <= MAX_KEY_BYTES {
        return std::borrow::Cow::Borrowed(key);
    }
    let mut cut = MAX_KEY_BYTES - 40;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = Sha256::digest(key.as_bytes());
    std::borrow::Cow::Owned(format!("{}#{}", &key[..cut], hex::encode(&digest[..16])))
}

// ---------------------------------------------------------------------------
// Sharded maps with a key limit

/// What a bounded map needs to know about its values.
trait Entry {
    /// Nothing left worth keeping at `now`.
    fn expired(&self, now: u64) -> bool;
    /// When it was last written: the stalest go first when the map is full.
    fn touched(&self) -> u64;
}

/// foldhash, randomly seeded per map: a counter's key is hashed twice per
/// host call (shard, then map), and SipHash cost ~15 ns each time on a short
/// key. The maps are bounded (`StateLimits`), and a seed an attacker cannot
/// see keeps chosen keys from piling into one bucket.
type KeyHasher = foldhash::fast::RandomState;

struct Sharded<K, V> {
    hasher: KeyHasher,
    shards: Vec<Mutex<Shard<K, V>>>,
}

struct Shard<K, V> {
    /// Keys allowed in this shard (the plugin's limit divided by the shards).
    cap: usize,
    map: HashMap<K, V, KeyHasher>,
}

/// A key made of numbers: what `counter.add-source` counts under. The
/// family (4 or 6), the tag, then the address's 4 or 16 bytes.
pub type SourceKey = [u8; 18];

/// The [`SourceKey`] of `ip` (known by [`crate::guard::source_key`], as the
/// gateway bans) and `tag`.
pub fn source_key(ip: std::net::IpAddr, ipv6_prefix_len: u8, tag: u8) -> SourceKey {
    use std::net::IpAddr;
    let mut key = [0u8; 18];
    key[1] = tag;
    match crate::guard::source_key(ip, ipv6_prefix_len) {
        IpAddr::V4(v4) => {
            key[0] = 4;
            key[2..6].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            key[0] = 6;
            key[2..].copy_from_slice(&v6.octets());
        }
    }
    key
}

impl<K: std::hash::Hash + Eq, V: Entry> Sharded<K, V> {
    fn new(max_keys: usize) -> Sharded<K, V> {
        let shard_cap = max_keys.div_ceil(SHARDS).max(1);
        Sharded {
            hasher: KeyHasher::default(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        cap: shard_cap,
                        map: HashMap::default(),
                    })
                })
                .collect(),
        }
    }

    fn shard<Q: std::hash::Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, Shard<K, V>>
    where
        K: std::borrow::Borrow<Q>,
    {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        lock(&self.shards[index])
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }
}

impl<K: std::hash::Hash + Eq, V: Entry> Shard<K, V> {
    /// The entry for `key` (`owned` makes the map's own copy of it), made
    /// by `make` if absent (making room first).
    fn get_or_insert<Q>(
        &mut self,
        key: &Q,
        owned: impl FnOnce() -> K,
        now: u64,
        make: impl FnOnce() -> V,
    ) -> &mut V
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if !self.map.contains_key(key) {
            if self.map.len() >= self.cap {
                self.make_room(now);
            }
            self.map.insert(owned(), make());
        }
        self.map.get_mut(key).expect("present: inserted above")
    }

    /// Sweeps expired entries; if that frees nothing, evicts the stalest
    /// eighth, so a flood of new keys pays one scan per cap/8 insertions.
    fn make_room(&mut self, now: u64) {
        self.map.retain(|_, v| !v.expired(now));
        if self.map.len() < self.cap {
            return;
        }
        let evict = (self.cap / 8).max(1);
        let mut touched: Vec<u64> = self.map.values().map(Entry::touched).collect();
        let (_, cutoff, _) = touched.select_nth_unstable(evict - 1);
        let cutoff = *cutoff;
        let mut left = evict;
        self.map.retain(|_, v| {
            if left > 0 && v.touched() <= cutoff {
                left -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// Milliseconds on the kernel's coarse monotonic clock. It is read from the
/// vDSO without reading a hardware timer: a few ns against ~50 ns for
/// `Instant::now` on the project's VM, where `counter.add` read the clock on
/// every request (docs/PERFORMANCE.md, "The plugin chain"). Its resolution
/// is the kernel tick (1-4 ms), plenty for counting windows and expiry.
fn coarse_ms() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE) {
        Ok(t) => (t.tv_sec() as u64) * 1000 + (t.tv_nsec() as u64) / 1_000_000,
        // Not on Linux: the precise clock.
        Err(_) => {
            static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            START.get_or_init(Instant::now).elapsed().as_millis() as u64
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard leaves plain counts behind: keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// Windowed counter

impl<K: std::hash::Hash + Eq> Shard<K, Window> {
    /// Adds `by` to `key`'s window (made if absent); returns its total over
    /// the last `window_ms`.
    #[inline]
    fn add<Q>(
        &mut self,
        key: &Q,
        owned: impl FnOnce() -> K,
        by: u32,
        window_ms: u64,
        now: u64,
    ) -> u64
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        // A key seen before (the usual case) costs one look-up.
        if let Some(window) = self.map.get_mut(key) {
            window.add(by, now);
            return window.total(window_ms, now);
        }
        let window = self.get_or_insert(key, owned, now, || Window::new(window_ms));
        window.add(by, now);
        window.total(window_ms, now)
    }
}

/// Counts in time buckets: `counts[b % SLOTS]` holds bucket `b` (the bucket
/// covering `[b * bucket_ms, (b + 1) * bucket_ms)`) for `head - 16 <= b <= head`.
struct Window {
    bucket_ms: u64,
    /// The newest bucket written.
    head: u64,
    counts: [u32; SLOTS],
}

impl Window {
    fn new(window_ms: u64) -> Window {
        Window {
            bucket_ms: (window_ms / BUCKETS).max(1),
            head: 0,
            counts: [0; SLOTS],
        }
    }

    fn add(&mut self, by: u32, now: u64) {
        let bucket = now / self.bucket_ms;
        if bucket > self.head {
            // Clear the slots of the buckets skipped since `head`.
            let skipped = (bucket - self.head).min(SLOTS as u64);
            for b in (bucket + 1 - skipped)..=bucket {
                self.counts[(b % SLOTS as u64) as usize] = 0;
            }
            self.head = bucket;
        } else if self.head - bucket >= SLOTS as u64 {
            // Older than anything kept (the clock cannot run backwards, but
            // stay safe): nothing to count into.
            return;
        }
        let slot = &mut self.counts[(bucket % SLOTS as u64) as usize];
        *slot = slot.saturating_add(by);
    }

    /// The sum of the buckets that overlap `(now - window_ms, now]`.
    fn total(&self, window_ms: u64, now: u64) -> u64 {
        let current = now / self.bucket_ms;
        // The oldest bucket overlapping the window, whose first instant is
        // `now - window_ms + 1`.
        let oldest = now.saturating_add(1).saturating_sub(window_ms.max(1)) / self.bucket_ms;
        let kept_from = self.head.saturating_sub(SLOTS as u64 - 1);
        let from = oldest.max(kept_from);
        let to = current.min(self.head);
        if from > to {
            return 0;
        }
        (from..=to)
            .map(|b| u64::from(self.counts[(b % SLOTS as u64) as usize]))
            .sum()
    }
}

impl Entry for Window {
    fn expired(&self, now: u64) -> bool {
        // Every kept bucket is older than the ring can hold.
        now / self.bucket_ms >= self.head.saturating_add(SLOTS as u64)
    }

    fn touched(&self) -> u64 {
        self.head.saturating_mul(self.bucket_ms)
    }
}

// ---------------------------------------------------------------------------
// Distinct counter

/// Members with the time each was last seen; a few hundred at most, so a
/// vector beats a map.
#[derive(Default)]
struct Distinct {
    members: Vec<(Box<str>, u64)>,
    /// The longest window asked for: members older than that are dropped.
    longest_window: u64,
    touched: u64,
}

impl Distinct {
    fn add(&mut self, member: &str, window_ms: u64, now: u64, max_members: usize) -> u64 {
        self.longest_window = self.longest_window.max(window_ms);
        self.touched = now;
        let longest = self.longest_window.max(1);
        self.members
            .retain(|(_, seen)| seen.saturating_add(longest) > now);
        match self.members.iter_mut().find(|(m, _)| **m == *member) {
            Some((_, seen)) => *seen = now,
            None => {
                if self.members.len() >= max_members.max(1) {
                    // Forget the least recently seen member.
                    if let Some(oldest) = self
                        .members
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, (_, seen))| *seen)
                        .map(|(i, _)| i)
                    {
                        self.members.swap_remove(oldest);
                    }
                }
                self.members.push((member.into(), now));
            }
        }
        let window = window_ms.max(1);
        self.members
            .iter()
            .filter(|(_, seen)| seen.saturating_add(window) > now)
            .count() as u64
    }
}

impl Entry for Distinct {
    fn expired(&self, now: u64) -> bool {
        now.saturating_sub(self.touched) >= self.longest_window.max(1)
    }

    fn touched(&self) -> u64 {
        self.touched
    }
}

// ---------------------------------------------------------------------------
// Key-value

/// One `kv` entry. Compact (32 bytes, its key 16 more): fail-to-ban keeps
/// one per extension, so with 100,000 extensions every byte here is 100 kB.
struct Value {
    value: Box<str>,
    /// When it expires, or [`NEVER`].
    expires: u64,
    touched: u64,
}

/// `Value::expires` of a key kept until it is deleted (`ttl_ms` 0).
const NEVER: u64 = u64::MAX;

impl Entry for Value {
    fn expired(&self, now: u64) -> bool {
        self.expires != NEVER && now >= self.expires
    }

    fn touched(&self) -> u64 {
        self.touched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(limits: StateLimits) -> PluginState {
        PluginState::new(coarse_ms(), limits)
    }

    fn default_state() -> PluginState {
        state(StateLimits::default())
    }

    #[test]
    fn windowed_counter_counts_within_the_window() {
        let s = default_state();
        // Window 1600 ms: buckets of 100 ms.
        assert_eq!(s.counter_add("ip", 1, 1600, 10_000), 1);
        assert_eq!(s.counter_add("ip", 2, 1600, 10_050), 3);
        assert_eq!(s.counter_add("ip", 1, 1600, 11_000), 4);
        assert_eq!(s.counter_get("ip", 1600, 11_500), 4);
        // 10_000 and 10_050 sit in bucket 100 ([10_000, 10_100)); it leaves
        // the window (now - 1600, now] once that starts at 10_100.
        assert_eq!(s.counter_get("ip", 1600, 11_698), 4);
        assert_eq!(s.counter_get("ip", 1600, 11_699), 1);
        assert_eq!(s.counter_get("ip", 1600, 12_700), 0);
        // A shorter window over the same buckets.
        assert_eq!(s.counter_get("ip", 500, 11_050), 1);
        assert_eq!(s.counter_get("other", 1600, 11_000), 0);
    }

    #[test]
    fn windowed_counter_is_never_below_the_exact_count() {
        // Sliding-window property: events within (now - window, now] are
        // always counted; at most one extra bucket of older events.
        let s = default_state();
        let window = 60_000;
        let mut events = Vec::new();
        let mut now = 1_000_000u64;
        for i in 0..500u64 {
            now += 137 + (i * 7919) % 1000;
            s.counter_add("k", 1, window, now);
            events.push(now);
            let exact = events.iter().filter(|&&t| t > now - window).count() as u64;
            let upper = events
                .iter()
                .filter(|&&t| t > now - window - window / 16)
                .count() as u64;
            let got = s.counter_get("k", window, now);
            assert!(exact <= got && got <= upper, "{exact} <= {got} <= {upper}");
        }
    }

    #[test]
    fn windowed_counter_after_a_long_silence_starts_over() {
        let s = default_state();
        assert_eq!(s.counter_add("k", 5, 1000, 100), 5);
        assert_eq!(s.counter_add("k", 1, 1000, 1_000_000), 1);
        assert_eq!(s.counter_add("k", 1, 1000, 1_000_001), 2);
    }

    #[test]
    fn tiny_and_huge_windows() {
        let s = default_state();
        // Under 16 ms: buckets of 1 ms.
        assert_eq!(s.counter_add("a", 1, 3, 10), 1);
        assert_eq!(s.counter_add("a", 1, 3, 12), 2);
        assert_eq!(s.counter_get("a", 3, 13), 1);
        assert_eq!(s.counter_add("z", 1, 0, 10), 1);
        assert_eq!(
            s.counter_add("b", u32::MAX, u64::MAX, u64::MAX - 1),
            4294967295
        );
        // Bucket counts saturate rather than wrap.
        assert_eq!(s.counter_add("b", u32::MAX, u64::MAX, u64::MAX), 4294967295);
    }

    #[test]
    fn reset_forgets_a_key() {
        let s = default_state();
        s.counter_add("k", 3, 1000, 10);
        s.counter_add_distinct("k", "alice", 1000, 10);
        s.counter_reset("k");
        assert_eq!(s.counter_get("k", 1000, 11), 0);
        assert_eq!(s.counter_add_distinct("k", "bob", 1000, 11), 1);
    }

    #[test]
    fn distinct_counter_counts_members_in_the_window() {
        let s = default_state();
        assert_eq!(s.counter_add_distinct("ip", "100", 1000, 0), 1);
        assert_eq!(s.counter_add_distinct("ip", "101", 1000, 100), 2);
        assert_eq!(s.counter_add_distinct("ip", "100", 1000, 200), 2);
        assert_eq!(s.counter_add_distinct("ip", "102", 1000, 300), 3);
        // "100" was seen again at 200: still in at 1100; "101" (100) is out.
        assert_eq!(s.counter_add_distinct("ip", "103", 1000, 1100), 3);
        assert_eq!(s.counter_add_distinct("ip", "103", 1000, 5000), 1);
    }

    #[test]
    fn distinct_counter_is_bounded() {
        let s = state(StateLimits {
            max_members: 4,
            ..StateLimits::default()
        });
        for i in 0..100u64 {
            let n = s.counter_add_distinct("ip", &format!("user{i}"), 60_000, i);
            assert_eq!(n, (i + 1).min(4));
        }
    }

    #[test]
    fn key_limit_evicts_the_stalest() {
        let s = state(StateLimits {
            max_keys: 160,
            ..StateLimits::default()
        });
        // An "attacker" varying addresses: memory stays bounded.
        for i in 0..10_000u64 {
            s.counter_add(&format!("198.51.100.{i}"), 1, 60_000, 1000 + i);
            s.counter_add_distinct(&format!("d{i}"), "x", 60_000, 1000 + i);
            s.kv_set(&format!("kv{i}"), "v".into(), 0, 1000 + i);
        }
        let (counters, distinct, kv) = s.key_counts();
        assert!(counters <= 160, "{counters}");
        assert!(distinct <= 160, "{distinct}");
        assert!(kv <= 160, "{kv}");
        // The newest keys survive, the oldest went.
        assert_eq!(s.counter_get("198.51.100.9999", 60_000, 11_000), 1);
        assert_eq!(s.counter_get("198.51.100.0", 60_000, 11_000), 0);
        assert_eq!(s.kv_get("kv9999", 11_000).as_deref(), Some("v"));
        assert_eq!(s.kv_get("kv0", 11_000), None);
    }

    #[test]
    fn expired_keys_are_swept_before_evicting_live_ones() {
        let s = state(StateLimits {
            max_keys: 16, // one key per shard
            ..StateLimits::default()
        });
        for i in 0..200u64 {
            s.counter_add(&format!("old{i}"), 1, 1000, 0);
        }
        // Long after: the old keys are expired, new ones replace them.
        for i in 0..200u64 {
            s.counter_add(&format!("new{i}"), 1, 1000, 100_000);
        }
        assert!(s.key_counts().0 <= 16);
    }

    #[test]
    fn long_keys_are_hashed_not_mixed_up() {
        let s = default_state();
        let a = format!("{}a", "x".repeat(1000));
        let b = format!("{}b", "x".repeat(1000));
        s.counter_add(&a, 1, 1000, 0);
        s.counter_add(&b, 2, 1000, 0);
        assert_eq!(s.counter_get(&a, 1000, 1), 1);
        assert_eq!(s.counter_get(&b, 1000, 1), 2);
        assert!(bounded(&a).len() <= MAX_KEY_BYTES);
        let multibyte = "é".repeat(300);
        assert!(bounded(&multibyte).len() <= MAX_KEY_BYTES);
    }

    #[test]
    fn kv_with_ttl() {
        let s = default_state();
        assert!(s.kv_set("k", "v1".into(), 100, 1000));
        assert_eq!(s.kv_get("k", 1099).as_deref(), Some("v1"));
        assert_eq!(s.kv_get("k", 1100), None);
        assert!(s.kv_set("k", "v2".into(), 0, 2000));
        assert_eq!(s.kv_get("k", u64::MAX).as_deref(), Some("v2"));
        s.kv_delete("k");
        assert_eq!(s.kv_get("k", 2001), None);
        assert!(!s.kv_set("big", "x".repeat(64 * 1024 + 1), 0, 0));
        assert_eq!(s.kv_get("big", 0), None);
    }

    #[test]
    fn source_counters_key_by_address_prefix_and_tag() {
        let s = default_state();
        let ip = |t: &str| t.parse::<std::net::IpAddr>().unwrap();
        let add = |t: &str, tag| s.counter_add_source(source_key(ip(t), 64, tag), 1, 1000, 0);
        assert_eq!(add("192.0.2.7", 0), 1);
        assert_eq!(add("::ffff:192.0.2.7", 0), 2, "IPv4-mapped is IPv4");
        assert_eq!(add("192.0.2.8", 0), 1);
        assert_eq!(add("192.0.2.7", 1), 1, "another tag, another count");
        assert_eq!(add("2001:db8:0:1::1", 0), 1);
        assert_eq!(add("2001:db8:0:1::2", 0), 2, "one /64");
        assert_eq!(add("2001:db8:0:2::1", 0), 1);
        // Apart from the text keys, and counted within the plugin's limit.
        assert_eq!(s.counter_get("192.0.2.7", 1000, 0), 0);
        assert_eq!(s.key_counts().0, 5);
        // The window slides as for text keys.
        assert_eq!(
            s.counter_add_source(source_key(ip("192.0.2.7"), 64, 0), 1, 1000, 1500),
            1
        );
    }

    #[test]
    fn the_kv_generation_moves_when_a_write_may_change_what_get_returns() {
        let s = default_state();
        let start = s.kv_generation();
        assert_eq!(s.kv_get("k", 0), None);
        assert_eq!(s.counter_add("c", 1, 1000, 0), 1);
        assert_eq!(s.kv_generation(), start, "reads and counters write no kv");
        assert!(s.kv_set("k", "v".into(), 100, 0));
        let set = s.kv_generation();
        assert_ne!(set, start, "a new key");
        // Renewing a live key with its value changes no answer.
        assert!(s.kv_set("k", "v".into(), 100, 50));
        assert_eq!(s.kv_generation(), set, "renewed");
        assert_eq!(
            s.kv_get("k", 149),
            Some("v".into()),
            "renewal moved the expiry"
        );
        assert!(s.kv_set("k", "w".into(), 100, 60));
        let changed = s.kv_generation();
        assert_ne!(changed, set, "a new value");
        // Expiry is no write: a plugin keeps only absences.
        assert_eq!(s.kv_get("k", 200), None);
        assert_eq!(s.kv_generation(), changed);
        // The same value again on an expired key makes it present again.
        assert!(s.kv_set("e", "v".into(), 10, 0));
        let live = s.kv_generation();
        assert!(s.kv_set("e", "v".into(), 10, 20));
        assert_ne!(s.kv_generation(), live, "an expired key set again");
        let before = s.kv_generation();
        s.kv_delete("e");
        assert_ne!(s.kv_generation(), before, "a delete of a present key");
        let deleted = s.kv_generation();
        s.kv_delete("e");
        assert_eq!(s.kv_generation(), deleted, "nothing to delete");
        // A value refused as too large changes nothing.
        assert!(!s.kv_set("big", "x".repeat(64 * 1024 + 1), 0, 0));
        assert_eq!(s.kv_generation(), deleted);
    }

    #[test]
    fn a_kv_entry_stays_compact() {
        // One per extension in fail-to-ban: 100,000 extensions pay for
        // every byte 100,000 times.
        assert_eq!(std::mem::size_of::<(Box<str>, Value)>(), 48);
        let s = default_state();
        assert!(s.kv_set("forever", "v".into(), 0, 0));
        assert_eq!(s.kv_get("forever", u64::MAX), Some("v".into()));
    }

    #[test]
    fn shared_state_hands_out_one_state_per_name() {
        let shared = SharedState::default();
        let a1 = shared.plugin("a");
        let a2 = shared.plugin("a");
        let b = shared.plugin("b");
        a1.counter_add("k", 1, 1000, 5);
        assert_eq!(a2.counter_get("k", 1000, 5), 1);
        assert_eq!(b.counter_get("k", 1000, 5), 0);
        assert!(Arc::ptr_eq(&a1, &a2));
    }
}
