//! LengthField with a configuration taken from the first input bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lubdub_frame::{Codec, Decoded, Endian, LengthField, Session};
use lubdub_fuzz::{feed_both, split_input};

/// Builds a layout from 6 configuration bytes.
fn layout(cfg: &[u8; 6]) -> LengthField {
    let flags = cfg[0];
    let adjustment = match cfg[3] % 4 {
        0 | 1 => i64::from(cfg[2] as i8),
        2 => i64::MIN + i64::from(cfg[2]),
        _ => i64::MAX - i64::from(cfg[2]),
    };
    let mut b = LengthField::builder()
        .length_field_length(usize::from(flags & 7) + 1)
        .endian(if flags & 8 != 0 {
            Endian::Little
        } else {
            Endian::Big
        })
        .signed(flags & 16 != 0)
        .length_includes_header(flags & 32 != 0)
        .length_field_offset(usize::from(cfg[1] % 8))
        .length_adjustment(adjustment)
        .max_frame_length(match cfg[5] {
            255 => usize::MAX,
            m => usize::from(m) * 4,
        });
    if flags & 64 != 0 {
        b = b.num_skip(usize::from(cfg[4] % 24));
    }
    b.build()
        .expect("width 1..=8 and a small offset always build")
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (cfg, rest) = data.split_at(6);
    let lf = layout(cfg.try_into().unwrap());
    let (cuts, stream) = split_input(rest);
    let fed = feed_both(&lf, stream, &cuts);

    for (msg, consumed) in &fed.msgs {
        assert!(*consumed <= lf.max_frame_length());
        assert!(*consumed >= lf.header_len());
        assert_eq!(msg.len() + lf.num_skip(), *consumed);
        // A decoded message always re-encodes to a frame of the same size
        // that decodes to the same message.
        let mut again = Vec::new();
        lf.encode(msg, &mut again)
            .expect("re-encode a decoded message");
        assert_eq!(again.len(), *consumed);
        assert_eq!(&again[lf.num_skip()..], &msg[..]);
        let mut s = Session::new(lf.clone());
        assert_eq!(
            s.decode(&again).expect("decode re-encoded"),
            Decoded::Message {
                msg: msg.clone(),
                consumed: *consumed
            }
        );
        assert!(s.wire.out.is_empty() && s.wire.close.is_none());
    }

    // Encode the raw stream as a message: Ok round-trips, Err appends nothing.
    let mut out = vec![0x55];
    match lf.encode(stream, &mut out) {
        Ok(()) => {
            let frame = &out[1..];
            assert!(frame.len() <= lf.max_frame_length());
            let mut s = Session::new(lf.clone());
            let decoded = s.decode(frame).expect("decode own encoding");
            assert!(s.wire.out.is_empty() && s.wire.close.is_none());
            match decoded {
                Decoded::Message { msg, consumed } => {
                    assert_eq!(consumed, frame.len());
                    if lf.num_skip() >= lf.header_len() {
                        assert_eq!(msg, stream);
                    }
                }
                other => panic!("own encoding not a message: {other:?}"),
            }
        }
        Err(_) => assert_eq!(out, [0x55]),
    }
});
