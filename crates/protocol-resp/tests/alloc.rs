//! What decoding allocates for lengths and counts the peer announces: never
//! their size before the data is there. A counting allocator records the
//! bytes each test thread asks for.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use lubdub_protocol::{Decoded, ProtocolError, Session};
use lubdub_resp::{Resp, RespConfig, Value};

struct Counting;

thread_local! {
    /// Bytes requested by this thread since the last `measure`.
    static REQUESTED: Cell<usize> = const { Cell::new(0) };
}

fn note(bytes: usize) {
    let _ = REQUESTED.try_with(|r| r.set(r.get().saturating_add(bytes)));
}

// SAFETY: forwards to the system allocator; only counts on the side.
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
static ALLOCATOR: Counting = Counting;

type Step = Result<Decoded<Value, Vec<Value>>, ProtocolError>;

/// Decodes `src` in session `s` and returns the result and the bytes
/// requested.
fn measure(s: &mut Session<Resp>, src: &[u8]) -> (Step, usize) {
    REQUESTED.with(|r| r.set(0));
    let result = s.decode(src);
    (result, REQUESTED.with(Cell::get))
}

fn unlimited() -> Session<Resp> {
    Session::new(Resp::new().with_config(RespConfig {
        max_reply_len: usize::MAX,
        ..RespConfig::default()
    }))
}

#[test]
fn an_announced_terabyte_bulk_allocates_nothing_while_waiting() {
    let mut p = unlimited();
    let (result, bytes) = measure(&mut p, b"$1000000000000\r\nabc");
    assert_eq!(result.unwrap(), Decoded::Incomplete);
    assert_eq!(bytes, 0);
}

#[test]
fn announced_element_counts_allocate_nothing_while_waiting() {
    // Within the limit (4,194,304 elements) but not there yet: the scanner
    // keeps one counter per open level and nothing per announced element.
    let mut p = Session::new(Resp::new());
    let mut src = b"*4000000\r\n".to_vec();
    src.extend(b":1\r\n".repeat(10));
    let (result, bytes) = measure(&mut p, &src);
    assert_eq!(result.unwrap(), Decoded::Incomplete);
    assert!(bytes <= 64, "{bytes} bytes for one open level");
    // 64 nested levels of a big announced count each
    let mut p = Session::new(Resp::new());
    let src = b"*65000\r\n".repeat(64);
    let (result, bytes) = measure(&mut p, &src);
    assert_eq!(result.unwrap(), Decoded::Incomplete);
    assert!(bytes <= 64 * 8 * 2, "{bytes} bytes for 64 open levels");
}

#[test]
fn a_whole_reply_allocates_in_proportion_to_its_bytes() {
    let mut p = Session::new(Resp::new());
    let mut src = b"*1000\r\n".to_vec();
    src.extend(b"$3\r\nabc\r\n".repeat(1000));
    let (result, bytes) = measure(&mut p, &src);
    match result.unwrap() {
        Decoded::Message {
            msg: Value::Array(items),
            consumed,
        } => {
            assert_eq!(items.len(), 1000);
            assert_eq!(consumed, src.len());
        }
        other => panic!("{other:?}"),
    }
    // redis-protocol's range frames, then the values: a small multiple of
    // the 9,007 bytes received.
    assert!(bytes < 20 * src.len(), "{bytes} bytes for {}", src.len());
}
