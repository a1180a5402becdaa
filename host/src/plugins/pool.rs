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
//! A slot refers to its pool weakly: when the plugin is unloaded (a reload)
//! the thread drops the instance on its next call; when the thread ends its
//! instances go back to their pools. When the plugin restarts from scratch
//! after repeated failures the pool's generation moves on and instances of
//! older generations are dropped instead of used.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::runtime::Instance;

/// The instances of one plugin no thread holds.
pub(super) struct Pool {
    idle: Mutex<Vec<Box<Instance>>>,
    generation: AtomicU64,
    max_idle: usize,
}

/// An instance kept by a thread, with the pool it belongs to.
struct Slot {
    pool: Weak<Pool>,
    generation: u64,
    instance: Box<Instance>,
}

/// This thread's slots: one per plugin it has called (a handful).
#[derive(Default)]
struct Slots(Vec<Slot>);

impl Drop for Slots {
    /// The thread ends: its instances go back to their plugins' pools.
    fn drop(&mut self) {
        for slot in self.0.drain(..) {
            if let Some(pool) = slot.pool.upgrade() {
                pool.put_idle(slot.generation, slot.instance);
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
        })
    }

    /// A ready instance: this thread's own, else one from the shared list.
    pub fn take(self: &Arc<Pool>) -> Option<Box<Instance>> {
        let generation = self.generation.load(Ordering::Relaxed);
        let mine = SLOTS
            .try_with(|slots| {
                let mut slots = slots.borrow_mut();
                // Instances of unloaded plugins are dropped here.
                slots.0.retain(|s| s.pool.strong_count() > 0);
                let at = slots
                    .0
                    .iter()
                    .position(|s| std::ptr::eq(s.pool.as_ptr(), Arc::as_ptr(self)))?;
                let slot = slots.0.swap_remove(at);
                (slot.generation == generation).then_some(slot.instance)
            })
            .ok()
            .flatten();
        mine.or_else(|| self.lock().pop())
    }

    /// Gives back an instance that answered: to this thread's slot, or to
    /// the shared list if the thread holds one already.
    pub fn put(self: &Arc<Pool>, instance: Box<Instance>) {
        let generation = self.generation.load(Ordering::Relaxed);
        let rest = SLOTS.try_with(|slots| {
            let mut slots = slots.borrow_mut();
            let held = slots
                .0
                .iter()
                .any(|s| std::ptr::eq(s.pool.as_ptr(), Arc::as_ptr(self)));
            if held {
                return Some(instance);
            }
            slots.0.push(Slot {
                pool: Arc::downgrade(self),
                generation,
                instance,
            });
            None
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
        self.lock().push(instance);
    }

    fn put_idle(&self, generation: u64, instance: Box<Instance>) {
        if generation != self.generation.load(Ordering::Relaxed) {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(instance);
        }
    }

    /// Restart from scratch: every instance, held or idle, is dropped.
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        let drained = std::mem::take(&mut *self.lock());
        drop(drained);
    }

    /// Instances in the shared list (threads' slots not included).
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Box<Instance>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
