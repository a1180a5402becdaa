//! An in-memory [`Shared`] with a clock the test sets: the host's counters
//! and kv store as the native tests see them. It records every log line.
//!
//! Semantics match the `counter` and `kv` interfaces of `wit/sipfence.wit`:
//! a windowed total counts what was added less than `window_ms` ago; a kv
//! value set with a TTL is gone once the TTL has passed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::policy::{Level, Shared};

/// Host state for tests. Single-threaded, like one plugin call.
#[derive(Debug, Default)]
pub struct MemoryShared {
    /// The clock: milliseconds since the UNIX epoch, moved by the test.
    now: Cell<u64>,
    /// Counter key -> (time, amount) of each `add`.
    counters: RefCell<HashMap<String, Vec<(u64, u64)>>>,
    /// Distinct-counter key -> member -> when it was last recorded.
    distinct: RefCell<HashMap<String, HashMap<String, u64>>>,
    /// kv key -> (value, expiry time if any).
    kv: RefCell<HashMap<String, (String, Option<u64>)>>,
    /// Every log line, in order.
    logs: RefCell<Vec<(Level, String)>>,
    /// Bumped by every kv write, like the host's `kv-generation`.
    kv_generation: Cell<u64>,
    /// `kv_get` calls so far.
    kv_reads: Cell<u64>,
}

impl MemoryShared {
    /// Empty state with the clock at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        MemoryShared {
            now: Cell::new(now_ms),
            ..Default::default()
        }
    }

    /// The `kv-generation` the host would send now.
    pub fn kv_generation(&self) -> u64 {
        self.kv_generation.get()
    }

    /// How many times the policy read the kv store.
    pub fn kv_reads(&self) -> u64 {
        self.kv_reads.get()
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        self.now.set(self.now.get() + ms);
    }

    /// The log lines so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }

    /// The log lines at `level`.
    pub fn logs_at(&self, level: Level) -> Vec<String> {
        self.logs
            .borrow()
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Whether `t` is within the last `window_ms`.
    fn within(&self, t: u64, window_ms: u64) -> bool {
        self.now.get().saturating_sub(t) < window_ms
    }
}

impl Shared for MemoryShared {
    fn add(&self, key: &str, by: u32, window_ms: u64) -> u64 {
        let now = self.now.get();
        let mut counters = self.counters.borrow_mut();
        let entries = counters.entry(key.to_owned()).or_default();
        entries.retain(|&(t, _)| self.within(t, window_ms));
        entries.push((now, u64::from(by)));
        entries.iter().map(|&(_, n)| n).sum()
    }

    fn get(&self, key: &str, window_ms: u64) -> u64 {
        self.counters.borrow().get(key).map_or(0, |entries| {
            entries
                .iter()
                .filter(|&&(t, _)| self.within(t, window_ms))
                .map(|&(_, n)| n)
                .sum()
        })
    }

    fn add_distinct(&self, key: &str, member: &str, window_ms: u64) -> u64 {
        let now = self.now.get();
        let mut distinct = self.distinct.borrow_mut();
        let members = distinct.entry(key.to_owned()).or_default();
        members.retain(|_, t| self.within(*t, window_ms));
        members.insert(member.to_owned(), now);
        members.len() as u64
    }

    fn reset(&self, key: &str) {
        self.counters.borrow_mut().remove(key);
        self.distinct.borrow_mut().remove(key);
    }

    fn kv_get(&self, key: &str) -> Option<String> {
        self.kv_reads.set(self.kv_reads.get() + 1);
        let kv = self.kv.borrow();
        let (value, expiry) = kv.get(key)?;
        match expiry {
            Some(expiry) if self.now.get() >= *expiry => None,
            _ => Some(value.clone()),
        }
    }

    fn kv_set(&self, key: &str, value: &str, ttl_ms: u64) {
        let expiry = (ttl_ms > 0).then(|| self.now.get() + ttl_ms);
        self.kv
            .borrow_mut()
            .insert(key.to_owned(), (value.to_owned(), expiry));
        self.kv_generation.set(self.kv_generation.get() + 1);
    }

    fn kv_delete(&self, key: &str) {
        self.kv.borrow_mut().remove(key);
        self.kv_generation.set(self.kv_generation.get() + 1);
    }

    fn now_ms(&self) -> u64 {
        self.now.get()
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }
}
