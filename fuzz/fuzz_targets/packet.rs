//! The C# packet decoder, and Packet pop helpers on arbitrary bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lubdub_frame::{Codec, Packet, PacketCodec};
use lubdub_fuzz::{feed_both, split_input};

/// Pops values in the order `ops` says; checks the cursor invariants and
/// that strings survive a push/pop round trip.
fn pop_all(p: &mut Packet, ops: &[u8]) {
    for &op in ops {
        let before = p.read_position();
        let ok = match op % 6 {
            0 => p.pop_u8().is_ok(),
            1 => p.pop_i16().is_ok(),
            2 => p.pop_i32().is_ok(),
            3 => p.pop_i64().is_ok(),
            4 => p.pop_f32().is_ok(),
            _ => match p.pop_string() {
                Ok(s) => {
                    let mut q = Packet::new(0);
                    q.push_str(&s).expect("a popped string fits");
                    assert_eq!(q.pop_string().as_deref(), Ok(s.as_str()));
                    true
                }
                Err(_) => false,
            },
        };
        if !ok {
            assert_eq!(p.read_position(), before, "failed pop moved the cursor");
        }
        assert!(p.read_position() <= p.body.len());
        assert_eq!(p.read_position() + p.remaining().len(), p.body.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let (cuts, stream) = split_input(data);
    let ops: Vec<u8> = cuts.iter().map(|&c| c as u8).collect();
    for codec in [
        PacketCodec::new(),
        PacketCodec::with_max_length(40),
        PacketCodec::u16_body_header(),
    ] {
        let fed = feed_both(&codec, stream, &cuts);
        let mut again = Vec::new();
        for (pkt, consumed) in &fed.msgs {
            let before = again.len();
            codec
                .encode(pkt, &mut again)
                .expect("re-encode a decoded packet");
            assert_eq!(again.len() - before, *consumed);
            let mut p = pkt.clone();
            pop_all(&mut p, &ops);
            p.rewind();
            pop_all(&mut p, stream.get(..16).unwrap_or(stream));
        }
        // Both layouts are canonical.
        assert_eq!(again, stream[..fed.consumed()]);
    }
    // The whole stream as a body.
    let mut p = Packet::with_body(1, stream.to_vec());
    pop_all(&mut p, stream.get(..32).unwrap_or(stream));
});
