//! Hostile inputs: errors or `Incomplete`, never a panic.

mod common;

use common::{decode, feed};
use lubdub_frame::{
    Codec, Decoded, Endian, Frame, LengthField, Packet, PacketCodec, ProtocolError,
    DEFAULT_MAX_FRAME_LENGTH,
};
use proptest::prelude::*;

const MAX: u64 = DEFAULT_MAX_FRAME_LENGTH as u64;

#[test]
fn frame_small_lengths_are_invalid() {
    let mut f = Frame::new();
    for n in 0u8..4 {
        match decode(&mut f, &[0, 0, 0, n]) {
            Err(ProtocolError::InvalidLength(v)) => assert_eq!(v, i128::from(n)),
            other => panic!("length {n}: {other:?}"),
        }
        // Also with trailing bytes present.
        assert!(matches!(
            decode(&mut f, &[0, 0, 0, n, 1, 2, 3, 4, 5]),
            Err(ProtocolError::InvalidLength(_))
        ));
    }
}

#[test]
fn frame_huge_lengths_are_too_large() {
    let mut f = Frame::new();
    assert!(matches!(
        decode(&mut f, &[0xFF, 0xFF, 0xFF, 0xFF]),
        Err(ProtocolError::TooLarge {
            len: 0xFFFF_FFFF,
            max: MAX
        })
    ));
    let over = (MAX + 1) as u32;
    assert!(matches!(
        decode(&mut f, &over.to_be_bytes()),
        Err(ProtocolError::TooLarge { len, max: MAX }) if len == MAX + 1
    ));
    // Exactly the maximum is fine (and incomplete for now).
    assert_eq!(
        decode(&mut f, &(MAX as u32).to_be_bytes()).unwrap(),
        Decoded::Incomplete
    );
    // A maximum below the header size refuses the first byte.
    let mut tiny = Frame::with_max_length(3);
    assert!(matches!(
        decode(&mut tiny, &[0]),
        Err(ProtocolError::TooLarge { len: 4, max: 3 })
    ));
    assert_eq!(decode(&mut tiny, &[]).unwrap(), Decoded::Incomplete);
}

#[test]
fn header_cut_midway_is_incomplete() {
    let mut f = Frame::new();
    let mut p = PacketCodec::new();
    let mut l = LengthField::builder()
        .length_field_offset(3)
        .length_field_length(8)
        .build()
        .unwrap();
    let wire = [0xFFu8; 10];
    for cut in 0..4 {
        assert_eq!(decode(&mut f, &wire[..cut]).unwrap(), Decoded::Incomplete);
        assert_eq!(decode(&mut p, &wire[..cut]).unwrap(), Decoded::Incomplete);
    }
    for cut in 0..11 {
        assert_eq!(
            decode(&mut l, &[0u8; 11][..cut]).unwrap(),
            Decoded::Incomplete
        );
    }
}

#[test]
fn negative_signed_lengths() {
    for width in [1usize, 2, 4, 8] {
        for endian in [Endian::Big, Endian::Little] {
            let mut lf = LengthField::builder()
                .length_field_length(width)
                .endian(endian)
                .signed(true)
                .build()
                .unwrap();
            let all_ff = vec![0xFF; width];
            assert!(
                matches!(
                    decode(&mut lf, &all_ff),
                    Err(ProtocolError::InvalidLength(-1))
                ),
                "width {width}"
            );
            let mut min = vec![0u8; width];
            match endian {
                Endian::Big => min[0] = 0x80,
                Endian::Little => min[width - 1] = 0x80,
            }
            let want = -(1i128 << (8 * width - 1));
            assert!(
                matches!(decode(&mut lf, &min), Err(ProtocolError::InvalidLength(v)) if v == want),
                "width {width}"
            );
        }
    }
    let mut p = PacketCodec::new();
    assert!(matches!(
        decode(&mut p, &[0xFF, 0xFF, 0xFF, 0xFF, 0, 0]),
        Err(ProtocolError::InvalidLength(-1))
    ));
}

#[test]
fn extreme_configurations_do_not_panic() {
    let values: [&[u8]; 5] = [
        &[0xFF; 16],
        &[0x00; 16],
        &[0x80; 16],
        &[0x7F; 16],
        &[0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    for width in [1usize, 2, 4, 8] {
        for signed in [false, true] {
            for adj in [i64::MIN, -1_000_000, -9, 0, 9, i64::MAX] {
                for skip in [None, Some(0), Some(20), Some(usize::MAX)] {
                    for max in [0usize, 5, usize::MAX] {
                        for offset in [0usize, 3] {
                            let mut b = LengthField::builder()
                                .length_field_length(width)
                                .signed(signed)
                                .length_adjustment(adj)
                                .length_field_offset(offset)
                                .max_frame_length(max);
                            if let Some(s) = skip {
                                b = b.num_skip(s);
                            }
                            let mut lf = b.build().unwrap();
                            for v in values {
                                if let Ok(Decoded::Message { consumed, .. }) = decode(&mut lf, v) {
                                    assert!(consumed <= v.len());
                                }
                            }
                            let mut out = vec![0xEE];
                            for m in [&b""[..], b"abc", &[0u8; 40]] {
                                if lf.encode(m, &mut out).is_err() {
                                    assert_eq!(out, [0xEE]);
                                } else {
                                    out.truncate(1);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // Largest offset that still fits, width 8.
    let mut lf = LengthField::builder()
        .length_field_offset(usize::MAX - 8)
        .length_field_length(8)
        .max_frame_length(usize::MAX)
        .build()
        .unwrap();
    assert_eq!(decode(&mut lf, &[0; 64]).unwrap(), Decoded::Incomplete);
    assert!(lf.encode(b"x", &mut Vec::new()).is_err());
}

#[test]
fn packet_pops_on_hostile_bodies() {
    // A string announcing i16::MAX bytes, with 1 present.
    let mut p = Packet::with_body(1, vec![0xFF, 0x7F, b'a']);
    assert!(p.pop_string().is_err());
    assert_eq!(p.read_position(), 0);
    // Truncating the body under the cursor does not break later pops.
    let mut p = Packet::with_body(1, vec![1, 2, 3, 4]);
    p.pop_i32().unwrap();
    p.body.truncate(1);
    assert!(p.pop_u8().is_err());
    assert!(p.pop_string().is_err());
    assert_eq!(p.remaining(), b"");
}

fn wild_layout() -> impl Strategy<Value = LengthField> {
    (
        1usize..=8,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![0usize..6, Just(usize::MAX - 8)],
        any::<bool>(),
        any::<i64>(),
        prop::option::of(any::<usize>()),
        any::<usize>(),
    )
        .prop_map(|(w, little, signed, offset, incl, adj, skip, max)| {
            let mut b = LengthField::builder()
                .length_field_length(w)
                .endian(if little { Endian::Little } else { Endian::Big })
                .signed(signed)
                .length_field_offset(offset)
                .length_includes_header(incl)
                .length_adjustment(adj)
                .max_frame_length(max);
            if let Some(s) = skip {
                b = b.num_skip(s % 64);
            }
            b.build().unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..128),
        cuts in prop::collection::vec(1usize..16, 1..6),
        lf in wild_layout(),
    ) {
        let _ = feed(&mut Frame::new(), &data, &cuts);
        let fed = feed(&mut PacketCodec::new(), &data, &cuts);
        for mut p in fed.msgs {
            let _ = (p.pop_string(), p.pop_i64(), p.pop_f32(), p.pop_i16(), p.pop_u8());
        }
        let _ = feed(&mut PacketCodec::u16_body_header(), &data, &cuts);
        let _ = feed(&mut lf.clone(), &data, &cuts);
        let mut out = vec![1];
        if lf.encode(&data, &mut out).is_err() {
            prop_assert_eq!(out, vec![1]);
        }
    }

    #[test]
    fn arbitrary_packet_bodies_pop_safely(body in prop::collection::vec(any::<u8>(), 0..64), ops in prop::collection::vec(0u8..6, 0..20)) {
        let mut p = Packet::with_body(1, body);
        for op in ops {
            let before = p.read_position();
            let ok = match op {
                0 => p.pop_u8().is_ok(),
                1 => p.pop_i16().is_ok(),
                2 => p.pop_i32().is_ok(),
                3 => p.pop_i64().is_ok(),
                4 => p.pop_f32().is_ok(),
                _ => p.pop_string().is_ok(),
            };
            if !ok {
                prop_assert_eq!(before, p.read_position());
            }
            prop_assert!(p.read_position() <= p.body.len());
        }
    }
}
