//! Ready instances of one plugin: a slot per calling thread, then a shared
//! list.
//!
//! A thread that calls a plugin keeps the instance it used in its own slot
//! and takes it again on its next call: no lock, no atomic read-modify-write
//! (the shared list's lock cost ~25 ns of a ~230 ns call, on every call of
//! every plugin). The shared list holds the instances no thread holds: the
//! first one, those of threads calling the same plugin at the same time,
//! and those of threads that ended.
//!
//! The pool also counts the calls: each thread its own counter, which only
//! it writes (a load and a store, where one shared counter would cost a
//! locked read-modify-write on every call); the total is their sum.
//!
//! A slot refers to its pool weakly: when the plugin is unloaded (a reload)
//! the thread drops the instance on its next call; when the thread ends its
//! instances go back to their pools. When the plugin restarts from scratch
//! after repeated failures the pool's generation moves on and instances of
//! older generations are dropped instead of used.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::runtime::{lock, Instance};

/// The instances of one plugin no thread holds.
pub(super) struct Pool {
    /// Boxed: an instance moves between slot, list and call, a pointer
    /// rather than the whole store.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Instance>>>,
    generation: AtomicU64,
    max_idle: usize,
    /// Calls made by threads without a slot yet.
    calls: AtomicU64,
    /// Each slot's call counter, kept after its thread ends.
    thread_calls: Mutex<Vec<Arc<AtomicU64>>>,
}

/// A thread's place for one plugin's instance. It stays when the instance
/// is taken for a call: the weak reference is made once per thread and
/// plugin, not per call (each costs an atomic read-modify-write).
struct Slot {
    pool: Weak<Pool>,
    generation: u64,
    instance: Option<Box<Instance>>,
    /// Calls this thread made; written by this thread only.
    calls: Arc<AtomicU64>,
}

impl Slot {
    fn of(&self, pool: &Arc<Pool>) -> bool {
        std::ptr::eq(self.pool.as_ptr(), Arc::as_ptr(pool))
    }
}

/// This thread's slots: one per plugin it has called (a handful).
#[derive(Default)]
struct Slots(Vec<Slot>);

impl Drop for Slots {
    /// The thread ends: its instances go back to their plugins' pools.
    fn drop(&mut self) {
        for slot in self.0.drain(..) {
            if let (Some(pool), Some(instance)) = (slot.pool.upgrade(), slot.instance) {
                pool.put_idle(slot.generation, instance);
            }
        }
    }
}

thread_local! {
    static SLOTS: RefCell<Slots> = RefCell::new(Slots::default());
}

impl Pool {
    /// A pool keeping at most `max_idle` instances in its shared list.
    pub fn new(max_idle: usize) -> Arc<Pool> {
        Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            max_idle,
            calls: AtomicU64::new(0),
            thread_calls: Mutex::new(Vec::new()),
        })
    }

    /// Counts a call; returns a ready instance (this thread's own, else one
    /// from the shared list) and the call's number among this thread's (or,
    /// for a thread without a slot yet, the slotless threads') calls.
    pub fn take(self: &Arc<Pool>) -> (Option<Box<Instance>>, u64) {
        let generation = self.generation.load(Ordering::Relaxed);
        let mine = SLOTS
            .try_with(|slots| {
                let mut slots = slots.borrow_mut();
                let mut mine = None;
                let mut unloaded = false;
                for slot in &mut slots.0 {
                    if slot.of(self) {
                        let call = slot.calls.load(Ordering::Relaxed);
                        slot.calls.store(call + 1, Ordering::Relaxed);
                        // An older generation's instance is dropped.
                        let instance = slot.instance.take();
                        mine = Some((instance.filter(|_| slot.generation == generation), call));
                    } else {
                        unloaded |= slot.pool.strong_count() == 0;
                    }
                }
                // Instances of unloaded plugins are dropped here.
                if unloaded {
                    slots.0.retain(|s| s.pool.strong_count() > 0);
                }
                mine
            })
            .ok()
            .flatten();
        let (instance, call) = match mine {
            Some(found) => found,
            None => (None, self.calls.fetch_add(1, Ordering::Relaxed)),
        };
        (instance.or_else(|| lock(&self.idle).pop()), call)
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        let threads = lock(&self.thread_calls);
        self.calls.load(Ordering::Relaxed)
            + threads
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum::<u64>()
    }

    /// Gives back an instance that answered: to this thread's slot, or to
    /// the shared list if the thread holds one already.
    pub fn put(self: &Arc<Pool>, instance: Box<Instance>) {
        let generation = self.generation.load(Ordering::Relaxed);
        let rest = SLOTS.try_with(|slots| {
            let mut slots = slots.borrow_mut();
            match slots.0.iter_mut().find(|s| s.of(self)) {
                Some(slot) if slot.instance.is_none() => {
                    slot.instance = Some(instance);
                    slot.generation = generation;
                    None
                }
                Some(_) => Some(instance),
                None => {
                    let calls = Arc::new(AtomicU64::new(0));
                    lock(&self.thread_calls).push(calls.clone());
                    slots.0.push(Slot {
                        pool: Arc::downgrade(self),
                        generation,
                        instance: Some(instance),
                        calls,
                    });
                    None
                }
            }
        });
        match rest {
            Ok(None) => {}
            Ok(Some(instance)) => self.put_idle(generation, instance),
            // The thread is ending.
            Err(_) => {}
        }
    }

    /// The instance created with the plugin, for the first caller.
    pub fn seed(&self, instance: Box<Instance>) {
        lock(&self.idle).push(instance);
    }

    fn put_idle(&self, generation: u64, instance: Box<Instance>) {
        if generation != self.generation.load(Ordering::Relaxed) {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < self.max_idle {
            idle.push(instance);
        }
    }

    /// Restart from scratch: every instance, held or idle, is dropped.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        let drained = std::mem::take(&mut *lock(&self.idle));
        drop(drained);
    }

    /// Instances in the shared list (threads' slots not included).
    pub fn idle(&self) -> usize {
        lock(&self.idle).len()
    }
}
