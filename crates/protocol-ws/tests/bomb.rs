//! A decompression bomb: 100 MiB of zeros compressed into one message,
//! against a 1 MiB limit. The message must fail with 1009 having inflated
//! little more than 1 MiB, and the decoder must not allocate much more.
//!
//! Alone in its test binary: the counting allocator sees every thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use flate2::{Compress, Compression, FlushCompress};
use lubdub_protocol::ProtocolError;
use lubdub_ws::{DeflateConfig, WsConfig};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Count old and new blocks together, as a moving realloc holds both.
        grew(new_size);
        let p = System.realloc(ptr, layout, new_size);
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// 1 MiB of zeros, sync-flushed, through `c`: one piece of the stream.
fn piece(c: &mut Compress) -> Vec<u8> {
    let zeros = vec![0u8; 1 << 20];
    let mut out = Vec::with_capacity(8 * 1024);
    let before = c.total_in();
    loop {
        let done = (c.total_in() - before) as usize;
        if done == zeros.len() && out.len() < out.capacity() {
            return out;
        }
        if out.len() == out.capacity() {
            out.reserve(8 * 1024);
        }
        c.compress_vec(&zeros[done..], &mut out, FlushCompress::Sync)
            .unwrap();
    }
}

/// 100 MiB of zeros as one raw DEFLATE stream, sync-flushed, trailer off.
/// Once the window is all zeros every further MiB compresses to the same
/// bytes (checked), so 3 MiB are compressed and the rest repeated.
fn bomb() -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let first = piece(&mut c);
    let steady = piece(&mut c);
    assert_eq!(piece(&mut c), steady, "the steady state repeats");
    let mut out = first;
    for _ in 1..100 {
        out.extend_from_slice(&steady);
    }
    out.truncate(out.len() - 4);
    out
}

#[test]
fn a_decompression_bomb_fails_early_and_small() {
    let compressed = bomb();
    assert!(compressed.len() < 200 * 1024, "{}", compressed.len());
    let bytes = frame(true, 0b100, 0x2, Some(KEY), &compressed);
    let max = 1 << 20;
    let cfg = WsConfig::default()
        .max_message_size(max)
        .deflate(DeflateConfig::default());

    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let (err, close) = violation_with(cfg, false, &bytes);
    let peak = PEAK.load(Ordering::SeqCst) - base;

    match err {
        // The inflated size when it failed: one byte over the maximum at most.
        ProtocolError::TooLarge { len, max: m } => {
            assert_eq!(m, max as u64);
            assert_eq!(len, max as u64 + 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(close_code(&close), 1009);
    eprintln!(
        "bomb: {} compressed bytes, peak allocation {peak} bytes",
        compressed.len()
    );
    // The message buffer (1 MiB + 1), the unmasked input copy (< 200 KiB),
    // the inflater's state (about 50 KiB) and the realloc overlap: well
    // under 3 MiB, against the 100 MiB that inflating it all would take.
    assert!(peak < 3 << 20, "peak allocation {peak} bytes");
}
