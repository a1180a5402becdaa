//! Heap bytes per registration binding in the location service, counted
//! exactly by a counting allocator (RSS is too coarse: the allocator keeps
//! pages freed by start-up and by finished transactions).
//!
//! `cargo run --release -p sipfence --example binding_memory [N]`
#![allow(unsafe_code)] // the counting allocator below, and nothing else

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};

use sipfence::registrar::location::{Aor, Change, ContactChange, Location, Origin};
use sipfence::transport::Transport;

/// Counts live heap bytes, as the allocator was asked for them.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let location = Location::default();
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..n {
        let ext = format!("{}", 100_000 + i);
        // What a SIPp or softphone REGISTER carries, in size.
        let contact = format!("sip:{ext}@127.0.0.1:5060;transport=UDP");
        let aor = Aor {
            tenant: String::new(),
            extension: ext,
        };
        let change = Change::Update(vec![ContactChange {
            key: contact.clone(),
            contact,
            expires_s: 3600,
        }]);
        let origin = Origin {
            call_id: format!("{i}-4242@127.0.0.1"),
            cseq: 2,
            source: SocketAddr::from(([127, 0, 0, 1], 5060)),
            transport: Transport::Udp,
            user_agent: Some("sipp-sipfence-test".into()),
        };
        let applied = location.apply(&aor, &change, &origin, 3, 1_000).unwrap();
        drop(applied);
    }
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "{n} bindings: {} bytes of heap, {:.0} bytes per binding",
        after - before,
        (after - before) as f64 / f64::from(n)
    );
}
