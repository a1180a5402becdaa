//! Nonces: issuing, checking, and the nonce-count table.
//!
//! # Design
//!
//! A nonce is stateless and bound to the client's source address:
//!
//! ```text
//! nonce = base64url-no-pad( issued_ms (8 bytes BE) || random (8 bytes)
//!                           || HMAC-SHA256(secret, issued_ms || random || source IP)[..16] )
//! ```
//!
//! (32 bytes, 43 characters, all of them legal in a quoted-string and in a
//! token). This follows the suggestion of RFC 7616 section 3.3 (and RFC 2617
//! section 3.2.1) to build the nonce from a time-stamp, the client's address
//! and a private key. Issuing a challenge therefore stores nothing, so a
//! flood of unauthenticated requests cannot grow our memory.
//!
//! Checking recomputes the MAC with the address the request came from and
//! compares in constant time. A mismatch means the nonce was forged, is from
//! before a restart (the key is per process), or was lifted from someone
//! else's exchange: all "foreign". The source is the full address (all 16
//! bytes for IPv6), so an attacker elsewhere, even in the same /64, cannot
//! use a sniffed nonce. A nonce older than the lifetime is stale: it was ours,
//! so the client may retry with a new one without asking the user
//! (`stale=TRUE`, RFC 7616 section 3.3).
//!
//! The nonce-count table is the only state. RFC 7616 section 3.4 (`nc`) and
//! section 5.5 (replay attacks) have the server remember, per nonce, the
//! highest count it accepted and refuse any count that is not higher. Only a
//! correct response creates or advances an entry, so filling the table needs
//! a password. Entries expire with their nonce and are swept lazily. The
//! table is sharded behind 16 mutexes so worker threads rarely contend, and
//! capped: when a shard is full of live entries its oldest ones are evicted
//! and the shard remembers a floor, the newest issue time it evicted. A nonce
//! issued at or before the floor that has no entry is treated as stale, so
//! eviction costs legitimate clients a re-challenge but never reopens a
//! replay window.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

type HmacSha256 = Hmac<Sha256>;

const TIME_LEN: usize = 8;
const RANDOM_LEN: usize = 8;
const TAG_LEN: usize = 16;
/// Decoded length of a nonce.
pub(crate) const NONCE_LEN: usize = TIME_LEN + RANDOM_LEN + TAG_LEN;
/// Encoded length: ceil(32 * 4 / 3) without padding.
const ENCODED_LEN: usize = 43;

/// A nonce that passed the MAC check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Issued {
    pub bytes: [u8; NONCE_LEN],
    pub issued_ms: u64,
}

/// Issues and checks nonces with a per-process key.
pub(crate) struct NonceKey {
    /// Keyed once; cloned per use, which skips re-deriving the HMAC pads.
    mac: HmacSha256,
}

impl NonceKey {
    pub(crate) fn new(secret: [u8; 32]) -> NonceKey {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = HmacSha256::new_from_slice(&secret).expect("HMAC takes any key length");
        NonceKey { mac }
    }

    /// A fresh nonce for `source`, issued at `now_ms`.
    pub(crate) fn issue(&self, source: IpAddr, now_ms: u64) -> String {
        let mut random = [0u8; RANDOM_LEN];
        // thread_rng is a CSPRNG; unpredictable nonces defeat the
        // precomputation of RFC 7616 section 5.9 (chosen plaintext).
        rand::thread_rng().fill_bytes(&mut random);
        self.issue_with(source, now_ms, random)
    }

    fn issue_with(&self, source: IpAddr, now_ms: u64, random: [u8; RANDOM_LEN]) -> String {
        let mut bytes = [0u8; NONCE_LEN];
        bytes[..TIME_LEN].copy_from_slice(&now_ms.to_be_bytes());
        bytes[TIME_LEN..TIME_LEN + RANDOM_LEN].copy_from_slice(&random);
        let tag = self.tag(&bytes[..TIME_LEN + RANDOM_LEN], source).finalize();
        bytes[TIME_LEN + RANDOM_LEN..].copy_from_slice(&tag.into_bytes()[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// `Some` if `nonce` is one we issued to `source`, whatever its age.
    pub(crate) fn check(&self, nonce: &str, source: IpAddr) -> Option<Issued> {
        // Length first, so junk of any size costs nothing to refuse. The
        // engine rejects non-canonical trailing bits, so each nonce has one
        // spelling and the nc table cannot be side-stepped by re-encoding.
        if nonce.len() != ENCODED_LEN {
            return None;
        }
        let decoded = URL_SAFE_NO_PAD.decode(nonce).ok()?;
        let bytes: [u8; NONCE_LEN] = decoded.as_slice().try_into().ok()?;
        let (body, tag) = bytes.split_at(TIME_LEN + RANDOM_LEN);
        self.tag(body, source).verify_truncated_left(tag).ok()?;
        let mut time = [0u8; TIME_LEN];
        time.copy_from_slice(&bytes[..TIME_LEN]);
        Some(Issued {
            bytes,
            issued_ms: u64::from_be_bytes(time),
        })
    }

    /// The MAC state after absorbing `body || source IP`. The two address
    /// families give inputs of different lengths, so they cannot collide.
    fn tag(&self, body: &[u8], source: IpAddr) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(body);
        match source {
            IpAddr::V4(a) => mac.update(&a.octets()),
            IpAddr::V6(a) => mac.update(&a.octets()),
        }
        mac
    }
}

/// A nonce is stale once older than the lifetime. One issued more than a
/// lifetime in the future (the wall clock was stepped back) is stale too, so
/// a clock step cannot make a nonce live for hours.
pub(crate) fn is_stale(issued_ms: u64, now_ms: u64, lifetime_ms: u64) -> bool {
    now_ms.saturating_sub(issued_ms) > lifetime_ms || issued_ms.saturating_sub(now_ms) > lifetime_ms
}

/// What the nonce-count table says about `(nonce, nc)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NcStatus {
    /// Higher than any count accepted for this nonce.
    Fresh,
    /// Not higher than one already accepted: a replay.
    Replayed,
    /// The nonce's entry may have been evicted for space; the client needs a
    /// new nonce.
    Evicted,
}

const SHARDS: usize = 16;
/// Default cap on tracked nonces, about 20 MB at worst. Each entry stands for
/// a successful authentication within one nonce lifetime.
pub(crate) const DEFAULT_MAX_TRACKED: usize = 1 << 18;

#[derive(Default)]
struct Shard {
    /// Nonce -> highest nc accepted. The issue time is in the key.
    /// foldhash: the keys carry a MAC, so nobody can choose colliding ones.
    seen: HashMap<[u8; NONCE_LEN], u32, foldhash::fast::RandomState>,
    /// The keys of `seen` in the order they came in, oldest first. Nonces
    /// are used moments after they are issued, so this is close to issue
    /// order: expiry and eviction take from the front, never scan the shard.
    order: VecDeque<[u8; NONCE_LEN]>,
    /// Nonces issued at or before this time may have been evicted.
    floor_ms: Option<u64>,
}

impl Shard {
    fn status(&self, nonce: &Issued, nc: u32) -> NcStatus {
        match self.seen.get(&nonce.bytes) {
            Some(&last) if nc > last => NcStatus::Fresh,
            Some(_) => NcStatus::Replayed,
            None if self.floor_ms.is_some_and(|f| nonce.issued_ms <= f) => NcStatus::Evicted,
            None => NcStatus::Fresh,
        }
    }

    /// Drops expired entries from the front. One that came in late with an
    /// old nonce waits behind younger ones: it costs memory for a while,
    /// never correctness, as its nonce is stale by then anyway.
    fn sweep(&mut self, now_ms: u64, lifetime_ms: u64) {
        // Only nonces past their lifetime go: a future-dated one may become
        // valid again if the clock moves forward, so its entry must stay.
        while let Some(front) = self.order.front() {
            if now_ms.saturating_sub(issued_ms(front)) <= lifetime_ms {
                break;
            }
            self.seen.remove(front);
            self.order.pop_front();
        }
    }

    /// Drops the oldest eighth of the shard (at least one entry) and raises
    /// the floor to cover them.
    fn evict_oldest(&mut self) {
        let k = (self.order.len() / 8).max(1);
        let mut newest_evicted = None;
        for bytes in self.order.drain(..k.min(self.order.len())) {
            self.seen.remove(&bytes);
            newest_evicted = newest_evicted.max(Some(issued_ms(&bytes)));
        }
        if let Some(cutoff) = newest_evicted {
            self.floor_ms = Some(self.floor_ms.map_or(cutoff, |f| f.max(cutoff)));
        }
    }

    fn insert(&mut self, bytes: [u8; NONCE_LEN], nc: u32) {
        if self.seen.insert(bytes, nc).is_none() {
            self.order.push_back(bytes);
        }
    }

    /// Gives memory back after a burst, but not so eagerly that a steady
    /// load keeps shrinking and regrowing the table.
    fn shrink(&mut self) {
        if self.seen.capacity() > 4 * self.seen.len().max(1024) {
            self.seen.shrink_to_fit();
            self.order.shrink_to_fit();
        }
    }
}

fn issued_ms(bytes: &[u8; NONCE_LEN]) -> u64 {
    let mut time = [0u8; TIME_LEN];
    time.copy_from_slice(&bytes[..TIME_LEN]);
    u64::from_be_bytes(time)
}

/// The nonce-count table: nonce -> highest nc accepted.
pub(crate) struct NcTable {
    shards: [Mutex<Shard>; SHARDS],
    per_shard_cap: usize,
}

impl NcTable {
    pub(crate) fn new(max_entries: usize) -> NcTable {
        NcTable {
            shards: std::array::from_fn(|_| Mutex::default()),
            per_shard_cap: (max_entries / SHARDS).max(1),
        }
    }

    fn shard(&self, nonce: &Issued) -> MutexGuard<'_, Shard> {
        // A MAC byte: uniform, and not steerable without the key.
        let i = usize::from(nonce.bytes[TIME_LEN + RANDOM_LEN]) % SHARDS;
        // Nothing panics while a shard is held, but if something did, the
        // map is still consistent: keep serving rather than panic forever.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops every entry whose nonce has expired, in every shard, and gives
    /// the memory back (run periodically: lazy sweeps only happen on inserts).
    pub(crate) fn purge(&self, now_ms: u64, lifetime_ms: u64) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.sweep(now_ms, lifetime_ms);
            shard.shrink();
        }
    }

    /// Would `nc` be accepted for `nonce`? Read-only; a cheap early answer
    /// before any hashing.
    pub(crate) fn check(&self, nonce: &Issued, nc: u32) -> NcStatus {
        self.shard(nonce).status(nonce, nc)
    }

    /// Records `nc` as used if it is still fresh. Checking and recording
    /// under one lock, so two copies of one request racing on two threads
    /// cannot both be accepted.
    pub(crate) fn record(
        &self,
        nonce: &Issued,
        nc: u32,
        now_ms: u64,
        lifetime_ms: u64,
    ) -> NcStatus {
        let mut shard = self.shard(nonce);
        let status = shard.status(nonce, nc);
        if status != NcStatus::Fresh {
            return status;
        }
        if !shard.seen.contains_key(&nonce.bytes) {
            shard.sweep(now_ms, lifetime_ms);
            if shard.seen.len() >= self.per_shard_cap {
                shard.evict_oldest();
                // This nonce may be among the oldest: then it is refused
                // like the ones just evicted.
                if shard.status(nonce, nc) != NcStatus::Fresh {
                    return NcStatus::Evicted;
                }
            }
        }
        shard.insert(nonce.bytes, nc);
        NcStatus::Fresh
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner).seen.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const V4_OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    const V6_SAME_64: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

    fn key() -> NonceKey {
        NonceKey::new([7; 32])
    }

    #[test]
    fn round_trip_and_format() {
        let k = key();
        let n = k.issue(V4, 1_700_000_000_123);
        assert_eq!(n.len(), ENCODED_LEN);
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let issued = k.check(&n, V4).unwrap();
        assert_eq!(issued.issued_ms, 1_700_000_000_123);
    }

    #[test]
    fn nonces_differ() {
        let k = key();
        assert_ne!(k.issue(V4, 1), k.issue(V4, 1));
    }

    #[test]
    fn bound_to_source() {
        let k = key();
        let n = k.issue(V4, 5);
        assert!(k.check(&n, V4_OTHER).is_none());
        assert!(k.check(&n, V6).is_none());
        let n6 = k.issue(V6, 5);
        assert!(k.check(&n6, V6).is_some());
        assert!(k.check(&n6, V6_SAME_64).is_none());
        // The v4-mapped form is a different address.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert!(k.check(&n, mapped).is_none());
    }

    #[test]
    fn other_key_rejects() {
        let n = key().issue(V4, 5);
        assert!(NonceKey::new([8; 32]).check(&n, V4).is_none());
    }

    #[test]
    fn tampering_rejected() {
        let k = key();
        let n = k.issue_with(V4, 1000, [1; 8]);
        // Change the time (extending a nonce's life) keeping the encoding valid.
        let mut bytes = URL_SAFE_NO_PAD.decode(&n).unwrap();
        bytes[7] ^= 1;
        assert!(k.check(&URL_SAFE_NO_PAD.encode(&bytes), V4).is_none());
        // Flip each character.
        for i in 0..n.len() {
            let mut s = n.clone().into_bytes();
            s[i] = if s[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(s).unwrap();
            assert!(k.check(&s, V4).is_none(), "position {i}");
        }
        // Non-canonical last character (unused low bits set) is refused.
        let last = n.as_bytes()[ENCODED_LEN - 1];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let idx = alphabet.iter().position(|&c| c == last).unwrap();
        let mut s = n.clone().into_bytes();
        s[ENCODED_LEN - 1] = alphabet[idx ^ 1];
        assert!(k.check(&String::from_utf8(s).unwrap(), V4).is_none());
    }

    #[test]
    fn junk_rejected() {
        let k = key();
        for junk in [
            "",
            "x",
            &"A".repeat(43),
            &"A".repeat(44),
            &"=".repeat(43),
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        ] {
            assert!(k.check(junk, V4).is_none(), "{junk}");
        }
        assert!(k.check(&"é".repeat(21), V4).is_none());
    }

    #[test]
    fn staleness() {
        assert!(!is_stale(1000, 1000, 30));
        assert!(!is_stale(1000, 1030, 30));
        assert!(is_stale(1000, 1031, 30));
        assert!(!is_stale(1030, 1000, 30));
        assert!(is_stale(1031, 1000, 30));
        assert!(is_stale(0, u64::MAX, 30));
        assert!(is_stale(u64::MAX, 0, 30));
    }

    fn issued(k: &NonceKey, t: u64) -> Issued {
        k.check(&k.issue(V4, t), V4).unwrap()
    }

    #[test]
    fn nc_must_increase() {
        let t = NcTable::new(1024);
        let n = issued(&key(), 0);
        assert_eq!(t.check(&n, 1), NcStatus::Fresh);
        assert_eq!(t.record(&n, 1, 0, 100), NcStatus::Fresh);
        assert_eq!(t.check(&n, 1), NcStatus::Replayed);
        assert_eq!(t.record(&n, 1, 0, 100), NcStatus::Replayed);
        assert_eq!(t.record(&n, 3, 0, 100), NcStatus::Fresh);
        assert_eq!(t.record(&n, 2, 0, 100), NcStatus::Replayed);
        assert_eq!(t.record(&n, 4, 0, 100), NcStatus::Fresh);
    }

    #[test]
    fn expired_entries_swept() {
        let k = key();
        let t = NcTable::new(1 << 20);
        for i in 0..10_000 {
            t.record(&issued(&k, i), 1, i, 10);
        }
        // Each shard sweeps as it takes a new entry: what is left is the
        // last 10 ms of each shard's own inserts...
        assert!(t.len() <= 11 * SHARDS, "{}", t.len());
        // ...and the periodic purge brings every shard up to date.
        t.purge(9_999, 10);
        assert_eq!(t.len(), 11);
    }

    #[test]
    fn nonces_used_out_of_issue_order_never_reopen_replay_when_evicted() {
        // Eviction takes entries in the order they came in; here that is far
        // from issue order (pairs of old and new nonces interleaved).
        let k = key();
        let cap = SHARDS * 8;
        let t = NcTable::new(cap);
        let lifetime = u64::MAX / 4;
        let n = cap as u64 * 4;
        let order = (0..n / 2).flat_map(|i| [i, n - 1 - i]);
        let nonces: Vec<Issued> = order.map(|i| issued(&k, i)).collect();
        let mut accepted = Vec::new();
        for nonce in &nonces {
            if t.record(nonce, 1, 0, lifetime) == NcStatus::Fresh {
                accepted.push(*nonce);
            }
            assert!(t.len() <= cap);
        }
        assert!(accepted.len() > cap);
        for nonce in &accepted {
            assert_ne!(t.record(nonce, 1, 0, lifetime), NcStatus::Fresh);
        }
    }

    #[test]
    fn capped_and_eviction_never_reopens_replay() {
        let k = key();
        let cap = SHARDS * 8;
        let t = NcTable::new(cap);
        let lifetime = u64::MAX / 4; // nothing expires: only eviction frees room
        let nonces: Vec<Issued> = (0..(cap as u64 * 4)).map(|i| issued(&k, i)).collect();
        let mut accepted = Vec::new();
        for n in &nonces {
            match t.record(n, 1, 0, lifetime) {
                NcStatus::Fresh => accepted.push(*n),
                NcStatus::Evicted => {}
                NcStatus::Replayed => panic!("fresh nonce reported replayed"),
            }
            assert!(t.len() <= cap);
        }
        // Newer nonces keep getting in.
        assert!(accepted.len() > cap);
        // Replaying any accepted nonce's nc=1 is refused, evicted or not.
        for n in &accepted {
            assert_ne!(t.record(n, 1, 0, lifetime), NcStatus::Fresh);
        }
    }
}
