//! No allocation of attacker-chosen size: a counting global allocator
//! records the bytes each thread allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use lubdub_frame::{Codec, Decoded, Frame, LengthField, PacketCodec, ProtocolError};

struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the thread-local may be gone during thread teardown.
    let _ = ALLOCATED.try_with(|a| a.set(a.get() + size));
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns (its result, bytes allocated, largest allocation).
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    ALLOCATED.with(|a| a.set(0));
    LARGEST.with(|l| l.set(0));
    let r = f();
    (r, ALLOCATED.with(Cell::get), LARGEST.with(Cell::get))
}

#[test]
fn announced_sizes_are_never_reserved() {
    // 4 GiB announced, no maximum to speak of: incomplete, nothing allocated.
    let unbounded = Frame::with_max_length(usize::MAX);
    let mut src = vec![0xFF, 0xFF, 0xFF, 0xFF];
    src.extend_from_slice(&[7; 100]);
    let (r, total, _) = measure(|| unbounded.decode(&mut (), &src));
    assert_eq!(r.unwrap(), Decoded::Incomplete);
    assert_eq!(total, 0);

    // Default maximum: refused from the header, nothing allocated.
    let f = Frame::new();
    let (r, total, _) = measure(|| f.decode(&mut (), &[0xFF, 0xFF, 0xFF, 0xFF]));
    assert!(matches!(r, Err(ProtocolError::TooLarge { .. })));
    assert_eq!(total, 0);

    // A 64-bit length announcing a terabyte.
    let lf = LengthField::builder()
        .length_field_length(8)
        .max_frame_length(usize::MAX)
        .build()
        .unwrap();
    let (r, total, _) = measure(|| lf.decode(&mut (), &(1u64 << 40).to_be_bytes()));
    assert_eq!(r.unwrap(), Decoded::Incomplete);
    assert_eq!(total, 0);

    // A C# packet announcing 2 GiB.
    let p = PacketCodec::with_max_length(usize::MAX);
    let (r, total, _) = measure(|| p.decode(&mut (), &[0xFF, 0xFF, 0xFF, 0x7F, 1, 0, 2]));
    assert!(matches!(r, Ok(Decoded::Incomplete)));
    assert_eq!(total, 0);

    // A complete message allocates its own size and no more.
    let f = Frame::new();
    let (r, total, largest) =
        measure(|| f.decode(&mut (), b"\x00\x00\x00\x09hello\xFF\xFF\xFF\xFF"));
    assert!(matches!(r, Ok(Decoded::Message { consumed: 9, .. })));
    assert_eq!((total, largest), (5, 5));

    // An oversize encode allocates nothing.
    let small = Frame::with_max_length(16);
    let big = vec![0u8; 1000];
    let mut out = Vec::new();
    let (r, total, _) = measure(|| small.encode(&big, &mut out));
    assert!(r.is_err());
    assert_eq!(total, 0);
}
