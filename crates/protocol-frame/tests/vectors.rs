//! Byte-exact vectors for every preset.

mod common;

use common::{decode, feed};
use lubdub_frame::{
    Codec, Decoded, Frame, LengthField, Packet, PacketCodec, PacketError, ProtocolError,
    SYS_CLOSE_ACK, SYS_CLOSE_REQ, SYS_START_HEARTBEAT, SYS_UPDATE_HEARTBEAT,
};

fn enc<P: Codec>(p: &P, m: &P::Outgoing) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(m, &mut out).unwrap();
    out
}

fn dec<P: Codec>(p: &mut P, src: &[u8]) -> (P::Message, usize) {
    match decode(p, src).unwrap() {
        Decoded::Message { msg, consumed } => (msg, consumed),
        _ => panic!("not a message: {src:02X?}"),
    }
}

#[test]
fn schemes() {
    assert_eq!(Frame::SCHEME, "frame");
    assert_eq!(LengthField::SCHEME, "length");
    assert_eq!(PacketCodec::SCHEME, "packet");
}

#[test]
fn frame_vectors() {
    let mut f = Frame::new();
    assert_eq!(enc(&f, b""), [0, 0, 0, 4]);
    assert_eq!(enc(&f, b"hello"), b"\x00\x00\x00\x09hello");
    assert_eq!(dec(&mut f, &[0, 0, 0, 4]), (vec![], 4));
    assert_eq!(
        dec(&mut f, b"\x00\x00\x00\x09helloEXTRA"),
        (b"hello".to_vec(), 9)
    );
    let big = vec![0xAB; 300];
    let e = enc(&f, &big);
    assert_eq!(&e[..4], &[0, 0, 0x01, 0x30]);
    assert_eq!(dec(&mut f, &e), (big, 304));
    assert_eq!(
        decode(&mut f, b"\x00\x00\x00\x09hell").unwrap(),
        Decoded::Incomplete
    );
}

#[test]
fn length_field_default_vectors() {
    let mut lf = LengthField::new();
    assert_eq!(enc(&lf, b""), [0, 0, 0, 0]);
    assert_eq!(enc(&lf, b"hello"), b"\x00\x00\x00\x05hello");
    assert_eq!(
        dec(&mut lf, b"\x00\x00\x00\x05hello"),
        (b"hello".to_vec(), 9)
    );
}

/// The 2-byte body-length header many C# servers use: u16 LE, body only.
#[test]
fn u16_le_body_vectors() {
    let mut lf = LengthField::u16_le_body();
    assert_eq!(enc(&lf, b""), [0, 0]);
    assert_eq!(enc(&lf, b"hello"), b"\x05\x00hello");
    assert_eq!(dec(&mut lf, b"\x05\x00hello"), (b"hello".to_vec(), 7));
    let body = vec![7u8; 0x0102];
    let e = enc(&lf, &body);
    assert_eq!(&e[..2], &[0x02, 0x01]);
    assert_eq!(dec(&mut lf, &e), (body, 0x0104));
    // Largest expressible body, and one more.
    let max_body = vec![0u8; 65535];
    assert_eq!(enc(&lf, &max_body)[..2], [0xFF, 0xFF]);
    let mut out = Vec::new();
    assert!(matches!(
        lf.encode(&vec![0u8; 65536], &mut out),
        Err(ProtocolError::TooLarge {
            len: 65538,
            max: 65537
        })
    ));
    assert!(out.is_empty());
}

#[test]
fn i32_le_total_vectors() {
    let mut lf = LengthField::i32_le_total();
    assert_eq!(enc(&lf, b""), [4, 0, 0, 0]);
    assert_eq!(enc(&lf, b"\xFE\xFF\x05"), [7, 0, 0, 0, 0xFE, 0xFF, 5]);
    assert_eq!(
        dec(&mut lf, &[7, 0, 0, 0, 0xFE, 0xFF, 5]),
        (vec![0xFE, 0xFF, 5], 7)
    );
}

#[test]
fn packet_vectors() {
    let mut pc = PacketCodec::new();
    // The known vector: SYS_START_HEARTBEAT, interval 5 s.
    let hb = Packet::start_heartbeat(5);
    assert_eq!(hb.id, SYS_START_HEARTBEAT);
    assert_eq!(enc(&pc, &hb), [0x07, 0x00, 0x00, 0x00, 0xFE, 0xFF, 0x05]);
    let (p, used) = dec(&mut pc, &[0x07, 0x00, 0x00, 0x00, 0xFE, 0xFF, 0x05]);
    assert_eq!(used, 7);
    assert_eq!(p, hb);
    assert_eq!(p.clone().pop_u8(), Ok(5));

    assert_eq!(enc(&pc, &Packet::close_req()), [6, 0, 0, 0, 0x00, 0x00]);
    assert_eq!(enc(&pc, &Packet::close_ack()), [6, 0, 0, 0, 0xFF, 0xFF]);
    assert_eq!(
        enc(&pc, &Packet::update_heartbeat()),
        [6, 0, 0, 0, 0xFD, 0xFF]
    );
    assert_eq!(
        (
            SYS_CLOSE_REQ,
            SYS_CLOSE_ACK,
            SYS_START_HEARTBEAT,
            SYS_UPDATE_HEARTBEAT
        ),
        (0, -1, -2, -3)
    );
    assert!(Packet::close_req().is_system());
    assert!(!Packet::new(1).is_system());

    // An application packet with every push helper.
    let mut p = Packet::new(0x0102);
    p.push_u8(0xAA)
        .push_i16(-2)
        .push_i32(0x0A0B0C0D)
        .push_i64(-1)
        .push_f32(1.0);
    p.push_str("hé").unwrap();
    let wire = enc(&pc, &p);
    let expected: Vec<u8> = [
        &[0x1E, 0, 0, 0][..],            // total 30
        &[0x02, 0x01],                   // id 0x0102
        &[0xAA],                         // u8
        &[0xFE, 0xFF],                   // i16 -2
        &[0x0D, 0x0C, 0x0B, 0x0A],       // i32
        &[0xFF; 8],                      // i64 -1
        &[0x00, 0x00, 0x80, 0x3F],       // f32 1.0
        &[0x03, 0x00, b'h', 0xC3, 0xA9], // "hé": 3 UTF-8 bytes
    ]
    .concat();
    assert_eq!(wire, expected);
    let (mut back, _) = dec(&mut pc, &wire);
    assert_eq!(back, p);
    assert_eq!(back.pop_u8(), Ok(0xAA));
    assert_eq!(back.pop_i16(), Ok(-2));
    assert_eq!(back.pop_i32(), Ok(0x0A0B0C0D));
    assert_eq!(back.pop_i64(), Ok(-1));
    assert_eq!(back.pop_f32(), Ok(1.0));
    assert_eq!(back.pop_string().as_deref(), Ok("hé"));
    assert_eq!(
        back.pop_u8(),
        Err(PacketError::UnexpectedEnd {
            needed: 1,
            remaining: 0
        })
    );
    back.rewind();
    assert_eq!(back.pop_u8(), Ok(0xAA));
}

#[test]
fn packet_u16_body_header_vectors() {
    let mut pc = PacketCodec::u16_body_header();
    let hb = Packet::start_heartbeat(5);
    assert_eq!(enc(&pc, &hb), [0x03, 0x00, 0xFE, 0xFF, 0x05]);
    assert_eq!(dec(&mut pc, &[0x03, 0x00, 0xFE, 0xFF, 0x05]), (hb, 5));
    assert_eq!(enc(&pc, &Packet::close_ack()), [0x02, 0x00, 0xFF, 0xFF]);
    // A body length below the id size is invalid.
    assert!(matches!(
        decode(&mut pc, &[0x01, 0x00, 0xFF]),
        Err(ProtocolError::InvalidLength(1))
    ));
}

/// The same 2-byte body-length layout built by hand with the builder.
#[test]
fn builder_expresses_u16_body_packets() {
    let layout = LengthField::builder()
        .length_field_length(2)
        .little_endian()
        .build()
        .unwrap();
    let mut pc = PacketCodec::with_layout(layout).unwrap();
    assert_eq!(pc, PacketCodec::u16_body_header());
    let stream = [0x03, 0x00, 0xFE, 0xFF, 0x05, 0x02, 0x00, 0xFD, 0xFF];
    let fed = feed(&mut pc, &stream, &[1]);
    assert!(fed.error.is_none());
    assert_eq!(
        fed.msgs,
        [Packet::start_heartbeat(5), Packet::update_heartbeat()]
    );
}

#[test]
fn packet_too_short_or_negative() {
    let mut pc = PacketCodec::new();
    for total in [0u8, 1, 2, 3, 4, 5] {
        assert!(
            matches!(decode(&mut pc, &[total, 0, 0, 0]), Err(ProtocolError::InvalidLength(n)) if n == i128::from(total)),
            "total {total}"
        );
    }
    assert!(matches!(
        decode(&mut pc, &[0xFF, 0xFF, 0xFF, 0xFF]),
        Err(ProtocolError::InvalidLength(-1))
    ));
    assert!(matches!(
        decode(&mut pc, &[0x00, 0x00, 0x00, 0x80]),
        Err(ProtocolError::InvalidLength(n)) if n == i128::from(i32::MIN)
    ));
    assert!(matches!(
        decode(&mut pc, &[0xFF, 0xFF, 0xFF, 0x7F]),
        Err(ProtocolError::TooLarge {
            len: 0x7FFF_FFFF,
            ..
        })
    ));
    // Oversize encode appends nothing.
    let small = PacketCodec::with_max_length(8);
    let mut out = vec![1, 2];
    assert!(matches!(
        small.encode(&Packet::with_body(1, vec![0; 3]), &mut out),
        Err(ProtocolError::TooLarge { len: 9, max: 8 })
    ));
    assert_eq!(out, [1, 2]);
    small
        .encode(&Packet::with_body(1, vec![0; 2]), &mut out)
        .unwrap();
    assert_eq!(out, [1, 2, 8, 0, 0, 0, 1, 0, 0, 0]);
}

/// Every builder option, byte for byte, both ways.
#[test]
fn builder_option_vectors() {
    #[allow(clippy::type_complexity)]
    let cases: Vec<(LengthField, &[u8], &[u8])> = vec![
        // width 1
        (
            LengthField::builder()
                .length_field_length(1)
                .build()
                .unwrap(),
            b"\x02hi",
            b"hi",
        ),
        // width 8 little endian
        (
            LengthField::builder()
                .length_field_length(8)
                .little_endian()
                .build()
                .unwrap(),
            b"\x02\0\0\0\0\0\0\0hi",
            b"hi",
        ),
        // width 3 big endian (any width 1..=8 works)
        (
            LengthField::builder()
                .length_field_length(3)
                .build()
                .unwrap(),
            b"\0\0\x02hi",
            b"hi",
        ),
        // signed i16 BE, includes header
        (
            LengthField::builder()
                .length_field_length(2)
                .signed(true)
                .length_includes_header(true)
                .build()
                .unwrap(),
            b"\x00\x04hi",
            b"hi",
        ),
        // offset 2, stripped: prefix encoded as zeros
        (
            LengthField::builder()
                .length_field_offset(2)
                .length_field_length(1)
                .build()
                .unwrap(),
            b"\0\0\x02hi",
            b"hi",
        ),
        // positive adjustment: 2 uncounted bytes after the field
        (
            LengthField::builder()
                .length_field_length(1)
                .length_adjustment(2)
                .build()
                .unwrap(),
            b"\x02\xCA\xFEhi",
            b"\xCA\xFEhi",
        ),
        // negative adjustment, tokio style for "includes header"
        (
            LengthField::builder()
                .length_field_length(2)
                .length_adjustment(-2)
                .build()
                .unwrap(),
            b"\x00\x04hi",
            b"hi",
        ),
        // num_skip 0 keeps the header
        (
            LengthField::builder()
                .length_field_length(2)
                .num_skip(0)
                .build()
                .unwrap(),
            b"\x00\x02hi",
            b"\x00\x02hi",
        ),
        // num_skip beyond the header: a padding byte after the field
        (
            LengthField::builder()
                .length_field_length(1)
                .length_adjustment(1)
                .num_skip(2)
                .build()
                .unwrap(),
            b"\x02\x00hi",
            b"hi",
        ),
        // offset + includes header + num_skip inside the header
        (
            LengthField::builder()
                .length_field_offset(1)
                .length_field_length(2)
                .little_endian()
                .length_includes_header(true)
                .num_skip(1)
                .build()
                .unwrap(),
            b"\x00\x05\x00hi",
            b"\x05\x00hi",
        ),
    ];
    for (i, (mut lf, wire, msg)) in cases.into_iter().enumerate() {
        assert_eq!(enc(&lf, msg), wire, "case {i} encode");
        assert_eq!(
            dec(&mut lf, wire),
            (msg.to_vec(), wire.len()),
            "case {i} decode"
        );
        for cut in 0..wire.len() {
            assert_eq!(
                decode(&mut lf, &wire[..cut]).unwrap(),
                Decoded::Incomplete,
                "case {i} cut {cut}"
            );
        }
    }
}

#[test]
fn encode_errors_append_nothing() {
    let mut out = vec![9];
    // u8 field cannot say 300.
    let lf = LengthField::builder()
        .length_field_length(1)
        .build()
        .unwrap();
    assert!(matches!(
        lf.encode(&[0; 300], &mut out),
        Err(ProtocolError::TooLarge { len: 301, max: 256 })
    ));
    // signed i8 field caps at 127.
    let lf = LengthField::builder()
        .length_field_length(1)
        .signed(true)
        .build()
        .unwrap();
    assert!(lf.encode(&[0; 127], &mut Vec::new()).is_ok());
    assert!(matches!(
        lf.encode(&[0; 128], &mut out),
        Err(ProtocolError::TooLarge { len: 129, max: 128 })
    ));
    // the message must carry the header bytes num_skip leaves in it.
    let lf = LengthField::builder().num_skip(0).build().unwrap();
    assert!(matches!(
        lf.encode(&[0; 3], &mut out),
        Err(ProtocolError::Malformed(_))
    ));
    // a positive adjustment needs that many bytes.
    let lf = LengthField::builder()
        .length_field_length(1)
        .length_adjustment(2)
        .build()
        .unwrap();
    assert!(matches!(
        lf.encode(&[0; 1], &mut out),
        Err(ProtocolError::InvalidLength(-1))
    ));
    // max.
    let lf = LengthField::builder().max_frame_length(5).build().unwrap();
    assert!(matches!(
        lf.encode(&[0; 2], &mut out),
        Err(ProtocolError::TooLarge { len: 6, max: 5 })
    ));
    assert_eq!(out, [9]);
}
