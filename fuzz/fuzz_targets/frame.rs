//! Workerman Frame: arbitrary bytes in arbitrary chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lubdub_frame::{Codec, Frame};
use lubdub_fuzz::{feed_both, split_input};

fuzz_target!(|data: &[u8]| {
    let (cuts, stream) = split_input(data);
    for f in [
        Frame::new(),
        Frame::with_max_length(64),
        Frame::with_max_length(2),
    ] {
        let fed = feed_both(&f, stream, &cuts);
        // Frame encoding is canonical: re-encoding the messages gives back
        // exactly the bytes they were decoded from.
        let mut again = Vec::new();
        for (msg, consumed) in &fed.msgs {
            let before = again.len();
            f.encode(msg, &mut again)
                .expect("re-encode a decoded frame");
            assert_eq!(again.len() - before, *consumed);
            assert!(*consumed <= f.max_length());
        }
        assert_eq!(again, stream[..fed.consumed()]);
        // Encoding the raw stream either works and round-trips, or appends
        // nothing.
        let mut out = vec![0xAA];
        match f.encode(stream, &mut out) {
            Ok(()) => {
                let back = feed_both(&f, &out[1..], &cuts);
                assert_eq!(back.msgs.len(), 1);
                assert_eq!(back.msgs[0].0, stream);
            }
            Err(_) => assert_eq!(out, [0xAA]),
        }
    }
});
