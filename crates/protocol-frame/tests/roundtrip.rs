//! Property tests: random message sequences survive encoding and a stream
//! cut at arbitrary points, fed per the decode contract.

mod common;

use common::feed;
use lubdub_frame::{Codec, Endian, Frame, LengthField, Packet, PacketCodec};
use proptest::prelude::*;

fn messages() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 0..8)
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..24, 1..8)
}

fn packets() -> impl Strategy<Value = Vec<Packet>> {
    prop::collection::vec(
        (any::<i16>(), prop::collection::vec(any::<u8>(), 0..80))
            .prop_map(|(id, body)| Packet::with_body(id, body)),
        0..8,
    )
}

/// A random but valid builder configuration.
fn layouts() -> impl Strategy<Value = LengthField> {
    (
        prop_oneof![Just(1usize), Just(2), Just(4), Just(8), 1usize..=8],
        any::<bool>(),
        any::<bool>(),
        0usize..4,
        any::<bool>(),
        -6i64..6,
        prop::option::of(0usize..12),
        prop_oneof![Just(usize::MAX), 16usize..200],
    )
        .prop_map(|(width, little, signed, offset, incl, adj, skip, max)| {
            let mut b = LengthField::builder()
                .length_field_length(width)
                .endian(if little { Endian::Little } else { Endian::Big })
                .signed(signed)
                .length_field_offset(offset)
                .length_includes_header(incl)
                .length_adjustment(adj)
                .max_frame_length(max);
            if let Some(s) = skip {
                b = b.num_skip(s);
            }
            b.build().unwrap()
        })
}

fn check_bytes<P>(proto: P, msgs: &[Vec<u8>], cuts: &[usize]) -> Result<(), TestCaseError>
where
    P: Codec<Message = Vec<u8>, Outgoing = [u8]>,
{
    let mut stream = Vec::new();
    for m in msgs {
        proto.encode(m, &mut stream).unwrap();
    }
    let fed = feed(&mut proto.clone(), &stream, cuts);
    prop_assert!(fed.error.is_none(), "{:?}", fed.error);
    prop_assert_eq!(fed.leftover, 0);
    prop_assert_eq!(&fed.msgs, msgs);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frame_roundtrip(msgs in messages(), cuts in cuts()) {
        check_bytes(Frame::new(), &msgs, &cuts)?;
    }

    #[test]
    fn default_and_presets_roundtrip(msgs in messages(), cuts in cuts()) {
        check_bytes(LengthField::new(), &msgs, &cuts)?;
        check_bytes(LengthField::u16_le_body(), &msgs, &cuts)?;
        check_bytes(LengthField::i32_le_total(), &msgs, &cuts)?;
    }

    #[test]
    fn packet_roundtrip(pkts in packets(), cuts in cuts()) {
        for codec in [PacketCodec::new(), PacketCodec::u16_body_header()] {
            let mut stream = Vec::new();
            for p in &pkts {
                codec.encode(p, &mut stream).unwrap();
            }
            let fed = feed(&mut codec.clone(), &stream, &cuts);
            prop_assert!(fed.error.is_none(), "{:?}", fed.error);
            prop_assert_eq!(fed.leftover, 0);
            prop_assert_eq!(&fed.msgs, &pkts);
        }
    }

    /// Any configuration: encode what it can, decode the cut stream, and
    /// check decode(encode(m)) is frame[num_skip..] and re-encodes to the
    /// same frame (and is `m` itself when the header is stripped).
    #[test]
    fn random_layout_roundtrip(lf in layouts(), msgs in messages(), cuts in cuts()) {
        let mut frames = Vec::new();
        for m in &msgs {
            let mut f = Vec::new();
            if lf.encode(m, &mut f).is_ok() {
                prop_assert!(f.len() <= lf.max_frame_length());
                frames.push((m.clone(), f));
            } else {
                prop_assert!(f.is_empty(), "failed encode appended bytes");
            }
        }
        let stream: Vec<u8> = frames.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        let fed = feed(&mut lf.clone(), &stream, &cuts);
        prop_assert!(fed.error.is_none(), "{:?} {:?}", fed.error, lf);
        prop_assert_eq!(fed.leftover, 0);
        prop_assert_eq!(fed.msgs.len(), frames.len());
        for (got, (orig, frame)) in fed.msgs.iter().zip(&frames) {
            prop_assert_eq!(got.as_slice(), &frame[lf.num_skip()..]);
            if lf.num_skip() >= lf.header_len() {
                prop_assert_eq!(got, orig);
            }
            let mut again = Vec::new();
            lf.encode(got, &mut again).unwrap();
            prop_assert_eq!(&again, frame);
        }
    }

    /// Any bytes, any configuration, any cuts: the same messages and the
    /// same outcome as decoding the whole buffer at once, and no panic.
    #[test]
    fn garbage_is_split_independent(
        lf in layouts(),
        data in prop::collection::vec(any::<u8>(), 0..200),
        cuts in cuts(),
    ) {
        let whole = feed(&mut lf.clone(), &data, &[usize::MAX]);
        let split = feed(&mut lf.clone(), &data, &cuts);
        prop_assert_eq!(&whole.msgs, &split.msgs);
        prop_assert_eq!(format!("{:?}", whole.error), format!("{:?}", split.error));
        if whole.error.is_none() {
            prop_assert_eq!(whole.leftover, split.leftover);
        }
    }
}
