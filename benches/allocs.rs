//! Heap allocations the server makes per in-memory STARTTLS session
//! (banner, EHLO, STARTTLS, TLS 1.3 handshake, EHLO, QUIT): a counting
//! allocator around the system one, counting only while the server's part
//! of each exchange runs (benches/session). Prints allocations and octets
//! per session for the full handshake (X25519, X25519MLKEM768) and the
//! resumed one.
//!
//!   cargo bench --bench allocs

mod session;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use session::{pair, starttls_session_server_time, COUNTING};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: the caller's layout, passed on as GlobalAlloc::alloc asks.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from System with `layout`; the caller's size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // that matters here: both just run it.
    const SESSIONS: u64 = 1000;
    for (name, kx, resumed) in [
        ("full handshake, X25519", "X25519", false),
        ("full handshake, X25519MLKEM768", "X25519MLKEM768", false),
        ("resumed (ticket), X25519", "X25519", true),
    ] {
        let p = pair(&rcgen::PKCS_ECDSA_P256_SHA256, kx, resumed);
        let snapshot = session::snapshot(&p);
        // Warm: the first session fills caches (and leaves the ticket).
        starttls_session_server_time(&p, &snapshot);
        ALLOCS.store(0, Ordering::Relaxed);
        BYTES.store(0, Ordering::Relaxed);
        for _ in 0..SESSIONS {
            starttls_session_server_time(&p, &snapshot);
        }
        println!(
            "session/starttls-ecdsa-p256, {name}: {:.1} allocations, {:.0} octets allocated per session (server side)",
            ALLOCS.load(Ordering::Relaxed) as f64 / SESSIONS as f64,
            BYTES.load(Ordering::Relaxed) as f64 / SESSIONS as f64
        );
    }
}
