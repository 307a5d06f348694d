//! Interop with tokio-util's `LengthDelimitedCodec` configured to the same
//! layouts: tokio decodes what we encode, we decode what tokio encodes.

mod common;

use bytes::{Bytes, BytesMut};
use common::feed;
use lubdub_frame::{Codec, Frame, LengthField, Packet, PacketCodec};
use proptest::prelude::*;
use tokio_util::codec::{length_delimited::Builder, Decoder, Encoder, LengthDelimitedCodec};

/// Decodes `stream` with tokio, handing it `cuts`-sized chunks.
fn tokio_decode(mut codec: LengthDelimitedCodec, stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let n = cuts[i % cuts.len()].max(1);
        i += 1;
        let end = (pos + n).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
        while let Some(frame) = codec.decode(&mut buf).expect("tokio decode") {
            out.push(frame.to_vec());
        }
    }
    assert!(buf.is_empty(), "tokio left {} bytes", buf.len());
    out
}

fn tokio_encode(mut codec: LengthDelimitedCodec, msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut dst = BytesMut::new();
    for m in msgs {
        codec
            .encode(Bytes::copy_from_slice(m), &mut dst)
            .expect("tokio encode");
    }
    dst.to_vec()
}

/// Both directions for a `Vec<u8>` protocol.
fn both_ways<P>(ours: P, theirs: &Builder, msgs: &[Vec<u8>], cuts: &[usize])
where
    P: Codec<Message = Vec<u8>, Outgoing = [u8]>,
{
    let mut stream = Vec::new();
    for m in msgs {
        ours.encode(m, &mut stream).unwrap();
    }
    assert_eq!(tokio_decode(theirs.new_codec(), &stream, cuts), msgs);
    let their_stream = tokio_encode(theirs.new_codec(), msgs);
    assert_eq!(their_stream, stream, "identical bytes on the wire");
    let fed = feed(&mut ours.clone(), &their_stream, cuts);
    assert!(fed.error.is_none(), "{:?}", fed.error);
    assert_eq!(fed.msgs, msgs);
}

fn frame_builder() -> Builder {
    let mut b = LengthDelimitedCodec::builder();
    b.length_field_length(4).big_endian().length_adjustment(-4);
    b
}

fn u16_le_builder() -> Builder {
    let mut b = LengthDelimitedCodec::builder();
    b.length_field_length(2).little_endian();
    b
}

fn packet_builder() -> Builder {
    let mut b = LengthDelimitedCodec::builder();
    b.length_field_length(4)
        .little_endian()
        .length_adjustment(-4);
    b
}

fn sample() -> Vec<Vec<u8>> {
    vec![
        vec![],
        b"hello".to_vec(),
        vec![0xFF; 300],
        (0..=255).collect(),
        vec![0],
    ]
}

#[test]
fn workerman_frame() {
    for cuts in [&[1][..], &[3, 7], &[1000]] {
        both_ways(Frame::new(), &frame_builder(), &sample(), cuts);
        both_ways(
            Frame::new().layout().clone(),
            &frame_builder(),
            &sample(),
            cuts,
        );
    }
}

#[test]
fn u16_le_body_length() {
    for cuts in [&[1][..], &[2, 5], &[1000]] {
        both_ways(
            LengthField::u16_le_body(),
            &u16_le_builder(),
            &sample(),
            cuts,
        );
    }
}

#[test]
fn default_layouts_agree() {
    both_ways(
        LengthField::new(),
        &LengthDelimitedCodec::builder(),
        &sample(),
        &[4],
    );
}

#[test]
fn csharp_packet_header() {
    let pkts = vec![
        Packet::start_heartbeat(5),
        Packet::update_heartbeat(),
        Packet::with_body(1234, b"body".to_vec()),
        Packet::with_body(-32768, vec![7; 500]),
    ];
    let as_bytes: Vec<Vec<u8>> = pkts
        .iter()
        .map(|p| [&p.id.to_le_bytes()[..], &p.body].concat())
        .collect();
    // The raw layout preset.
    both_ways(
        LengthField::i32_le_total(),
        &packet_builder(),
        &as_bytes,
        &[3],
    );
    // The typed codec.
    let codec = PacketCodec::new();
    let mut stream = Vec::new();
    for p in &pkts {
        codec.encode(p, &mut stream).unwrap();
    }
    assert_eq!(
        tokio_decode(packet_builder().new_codec(), &stream, &[1]),
        as_bytes
    );
    let theirs = tokio_encode(packet_builder().new_codec(), &as_bytes);
    let fed = feed(&mut codec.clone(), &theirs, &[5]);
    assert!(fed.error.is_none());
    assert_eq!(fed.msgs, pkts);
    // And the 2-byte variant against tokio's u16 LE layout.
    let codec = PacketCodec::u16_body_header();
    let theirs = tokio_encode(u16_le_builder().new_codec(), &as_bytes);
    let fed = feed(&mut codec.clone(), &theirs, &[2]);
    assert_eq!(fed.msgs, pkts);
}

#[test]
fn other_layouts() {
    // 8-byte little-endian length.
    let mut t = LengthDelimitedCodec::builder();
    t.length_field_length(8).little_endian();
    let ours = LengthField::builder()
        .length_field_length(8)
        .little_endian()
        .build()
        .unwrap();
    both_ways(ours, &t, &sample(), &[5]);

    // 1-byte length with two uncounted header bytes after it (tokio's
    // example 4 shape; the tag stays in the message).
    let mut t = LengthDelimitedCodec::builder();
    t.length_field_length(1).length_adjustment(2);
    let ours = LengthField::builder()
        .length_field_length(1)
        .length_adjustment(2)
        .build()
        .unwrap();
    let msgs = vec![b"\xCA\xFE".to_vec(), b"\xCA\xFEhello".to_vec()];
    both_ways(ours, &t, &msgs, &[1]);
}

#[test]
fn prefix_offset_ours_to_tokio() {
    // tokio's encoder does not write the prefix, so only one way: we write a
    // zero prefix byte and tokio strips it.
    let mut t = LengthDelimitedCodec::builder();
    t.length_field_offset(1).length_field_length(2);
    let ours = LengthField::builder()
        .length_field_offset(1)
        .length_field_length(2)
        .build()
        .unwrap();
    let mut stream = Vec::new();
    for m in sample() {
        ours.encode(&m, &mut stream).unwrap();
    }
    assert_eq!(tokio_decode(t.new_codec(), &stream, &[2]), sample());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_messages_interop(
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..6),
        cuts in prop::collection::vec(1usize..40, 1..6),
    ) {
        both_ways(Frame::new(), &frame_builder(), &msgs, &cuts);
        both_ways(LengthField::u16_le_body(), &u16_le_builder(), &msgs, &cuts);
        both_ways(LengthField::i32_le_total(), &packet_builder(), &msgs, &cuts);
    }
}
