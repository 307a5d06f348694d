//! Framing after the handshake: RFC 6455 §5.7 examples, lengths,
//! fragmentation, control frames, UTF-8, and the encoder.

mod common;

use common::*;
use lubdub_protocol::{Closing, Decoded, Decoder, ProtocolError, Session, SessionClose};
use lubdub_ws::{Message, Ws, WsConfig};

fn server() -> Session<Ws> {
    established(WsConfig::default(), false)
}

fn client() -> Session<Ws> {
    established(WsConfig::default(), true)
}

#[test]
fn rfc_unmasked_text_hello() {
    let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(
        client().decode(&bytes).unwrap(),
        Decoded::Message {
            msg: Message::Text("Hello".into()),
            consumed: 7
        }
    );
    // And the server encodes exactly these bytes.
    assert_eq!(server().encode(&Message::from("Hello")).unwrap(), bytes);
}

#[test]
fn rfc_masked_text_hello() {
    let bytes = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let r = run(&mut server(), &bytes);
    assert_eq!(r.messages, [Message::Text("Hello".into())]);
    assert_eq!(r.consumed, bytes.len());
    assert!(r.wire.out.is_empty());
}

#[test]
fn rfc_fragmented_text() {
    let bytes = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    let mut s = client();
    assert_eq!(s.decode(&bytes).unwrap(), Decoded::Consumed(5));
    assert_eq!(
        s.decode(&bytes[5..]).unwrap(),
        Decoded::Message {
            msg: Message::Text("Hello".into()),
            consumed: 4
        }
    );
}

#[test]
fn rfc_ping_is_answered_with_the_same_payload() {
    // Server role: masked ping in, unmasked pong (RFC's "8a 05 Hello") out.
    let ping = masked(true, 0x9, b"Hello");
    let r = run(&mut server(), &ping);
    assert!(r.messages.is_empty(), "pings are not delivered by default");
    assert_eq!(r.consumed, ping.len());
    assert_eq!(r.wire.out, [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

    // Client role: unmasked ping in, masked pong out.
    let r = run(&mut client(), &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    assert_eq!(r.wire.out[0], 0x8a);
    assert_eq!(r.wire.out[1], 0x85, "a client's pong is masked");
    assert_eq!(payload_of(&r.wire.out), b"Hello");
}

#[test]
fn rfc_masked_pong_is_delivered() {
    let bytes = [
        0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let r = run(&mut server(), &bytes);
    assert_eq!(r.messages, [Message::Pong(b"Hello".to_vec())]);
    assert!(r.wire.out.is_empty(), "a pong is not answered");
}

#[test]
fn pings_are_delivered_when_configured_and_answered_still() {
    let mut s = established(WsConfig::default().deliver_pings(true), false);
    let r = run(&mut s, &masked(true, 0x9, b"beat"));
    assert_eq!(r.messages, [Message::Ping(b"beat".to_vec())]);
    assert_eq!(payload_of(&r.wire.out), b"beat");
}

#[test]
fn rfc_16_and_64_bit_lengths() {
    for (len, header) in [
        (256usize, vec![0x82, 0x7e, 0x01, 0x00]),
        (65536, vec![0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]),
    ] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let out = server().encode(&Message::Binary(payload.clone())).unwrap();
        assert_eq!(out[..header.len()], header[..]);
        assert_eq!(out.len(), header.len() + len);
        let r = run(&mut client(), &out);
        assert_eq!(r.messages, [Message::Binary(payload.clone())]);
        // And a masked one into a server.
        let r = run(&mut server(), &masked(true, 0x2, &payload));
        assert_eq!(r.messages, [Message::Binary(payload)]);
    }
}

#[test]
fn client_frames_are_masked_with_a_fresh_key_each() {
    let mut s = client();
    let mut keys = Vec::new();
    for _ in 0..8 {
        let out = s.encode(&Message::from("Hello")).unwrap();
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x85);
        assert_eq!(payload_of(&out), b"Hello");
        keys.push(out[2..6].to_vec());
    }
    keys.sort();
    keys.dedup();
    assert!(keys.len() > 1, "eight frames, one key: not fresh");
}

#[test]
fn oversize_control_messages_are_refused_without_writing() {
    let mut out = vec![1, 2, 3];
    let err = server()
        .encode_into(&Message::Ping(vec![0; 126]), &mut out)
        .unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::TooLarge { len: 126, max: 125 }
    ));
    assert_eq!(out, [1, 2, 3]);
    server()
        .encode_into(&Message::Pong(vec![0; 125]), &mut out)
        .unwrap();
    assert_eq!(&out[3..5], &[0x8a, 125]);
}

#[test]
fn control_frames_between_fragments() {
    let mut bytes = masked(false, 0x1, b"Hel");
    bytes.extend(masked(true, 0x9, b"p"));
    bytes.extend(masked(true, 0xA, b"q"));
    bytes.extend(masked(false, 0x0, b"l"));
    bytes.extend(masked(true, 0x0, b"o"));
    let r = run(&mut server(), &bytes);
    assert_eq!(r.error.map(|e| e.to_string()), None);
    assert_eq!(
        r.messages,
        [Message::Pong(b"q".to_vec()), Message::Text("Hello".into())]
    );
    assert_eq!(r.wire.out, [0x8a, 0x01, b'p']);
    assert_eq!(r.consumed, bytes.len());
}

#[test]
fn a_code_point_split_between_fragments_is_valid() {
    // "€" is E2 82 AC: one byte per fragment.
    let mut bytes = masked(false, 0x1, &[0xE2]);
    bytes.extend(masked(false, 0x0, &[0x82]));
    bytes.extend(masked(true, 0x0, &[0xAC]));
    let r = run(&mut server(), &bytes);
    assert_eq!(r.messages, [Message::Text("€".into())]);
}

#[test]
fn invalid_utf8_fails_in_the_first_fragment() {
    // The message never ends: the error comes from the first frame alone.
    let (err, close) = violation(&masked(false, 0x1, b"ab\xF5"));
    assert!(matches!(
        err,
        ProtocolError::InvalidData {
            expected: "UTF-8",
            offset: 2
        }
    ));
    assert_eq!(close_code(&close), 1007);
}

#[test]
fn invalid_utf8_fails_before_the_rest_of_its_frame_arrives() {
    // A 100-byte text frame of which only the header and 3 bytes arrived.
    let full = masked(true, 0x1, &[b'a'; 100]);
    let mut partial = full[..6].to_vec(); // 2 header bytes + masking key
    partial.extend(b"x\xC0z".iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    let (err, close) = violation(&partial);
    assert!(matches!(err, ProtocolError::InvalidData { offset: 1, .. }));
    assert_eq!(close_code(&close), 1007);
}

#[test]
fn a_truncated_code_point_at_the_end_is_invalid() {
    let mut bytes = masked(false, 0x1, b"ok\xE2\x82");
    bytes.extend(masked(true, 0x0, b""));
    let (_, close) = violation(&bytes);
    assert_eq!(close_code(&close), 1007);
}

#[test]
fn violations_map_to_their_close_codes() {
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked client frame", unmasked(true, 0x1, b"hi"), 1002),
        (
            "continuation without a start",
            masked(true, 0x0, b"x"),
            1002,
        ),
        (
            "new message inside a fragmented one",
            [masked(false, 0x1, b"a"), masked(true, 0x2, b"b")].concat(),
            1002,
        ),
        ("fragmented ping", masked(false, 0x9, b""), 1002),
        // 126 announced on a ping (the 16-bit length need not even arrive).
        ("ping over 125 bytes", vec![0x89, 0xfe], 1002),
        (
            "RSV1 without deflate",
            frame(true, 0b100, 0x1, Some(KEY), b"a"),
            1002,
        ),
        ("RSV2", frame(true, 0b010, 0x1, Some(KEY), b"a"), 1002),
        ("RSV3", frame(true, 0b001, 0x2, Some(KEY), b"a"), 1002),
        (
            "close payload of one byte",
            masked(true, 0x8, &[0x03]),
            1002,
        ),
        (
            "close reason not UTF-8",
            masked(true, 0x8, b"\x03\xe8\xff"),
            1007,
        ),
        (
            "text not UTF-8",
            masked(true, 0x1, b"\xce\xba\xe1\xbd"),
            1007,
        ),
        // 64-bit length with the top bit set, header only.
        (
            "64-bit length, top bit",
            vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1],
            1009,
        ),
        // 1 TiB announced, header only: refused before any payload arrives.
        (
            "frame over max_frame_size",
            vec![0x82, 0xff, 0, 0, 1, 0, 0, 0, 0, 0],
            1009,
        ),
    ];
    for (what, bytes, code) in cases {
        let (err, close) = violation(&bytes);
        assert_eq!(close_code(&close), code, "{what}: {err}");
    }
}

#[test]
fn reserved_opcodes_are_protocol_errors() {
    for op in (0x3..=0x7).chain(0xB..=0xF) {
        let (err, close) = violation(&[0x80 | op]);
        assert!(matches!(err, ProtocolError::Malformed(_)), "{op:x}");
        assert_eq!(close_code(&close), 1002);
    }
}

#[test]
fn a_server_frame_must_not_be_masked() {
    let (_, close) = violation_with(WsConfig::default(), true, &masked(true, 0x1, b"x"));
    assert_eq!(close[0], 0x88);
    assert_eq!(close[1] & 0x80, 0x80, "a client's close frame is masked");
    assert_eq!(
        u16::from_be_bytes(payload_of(&close)[..2].try_into().unwrap()),
        1002
    );
}

#[test]
fn unmasked_client_frames_are_accepted_when_configured() {
    let mut s = established(WsConfig::default().accept_unmasked_frames(true), false);
    let r = run(&mut s, &unmasked(true, 0x1, b"hi"));
    assert_eq!(r.messages, [Message::Text("hi".into())]);
}

#[test]
fn message_limit_counts_all_fragments() {
    let cfg = WsConfig::default().max_message_size(10);
    let mut ok = masked(false, 0x2, &[1; 5]);
    ok.extend(masked(true, 0x0, &[2; 5]));
    let r = run(&mut established(cfg.clone(), false), &ok);
    assert_eq!(r.messages.len(), 1);

    let mut over = masked(false, 0x2, &[1; 6]);
    // Only the second header: the sum is known to exceed 10 from it.
    over.extend(&masked(true, 0x0, &[2; 6])[..6]);
    let (err, close) = violation_with(cfg, false, &over);
    assert!(matches!(err, ProtocolError::TooLarge { len: 12, max: 10 }));
    assert_eq!(close_code(&close), 1009);
}

#[test]
fn frame_limit_is_checked_from_the_header() {
    let cfg = WsConfig::default().max_frame_size(100);
    let header_only = &masked(true, 0x2, &[0; 101])[..8];
    let (err, close) = violation_with(cfg, false, header_only);
    assert!(matches!(
        err,
        ProtocolError::TooLarge { len: 101, max: 100 }
    ));
    assert_eq!(close_code(&close), 1009);
}

#[test]
fn valid_close_codes_are_reported_and_echoed() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ] {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice("bye ☺".as_bytes());
        let mut s = server();
        let r = run(&mut s, &masked(true, 0x8, &payload));
        assert!(r.error.is_none(), "{code}");
        assert_eq!(r.wire.close, Some(SessionClose::by_peer(code, "bye ☺")));
        let session = r.wire.close.unwrap();
        let echo = s.encode_close(&Closing::Session(&session));
        assert_eq!(echo, [0x88, 0x02, (code >> 8) as u8, code as u8], "{code}");
    }
}

#[test]
fn invalid_close_codes_are_protocol_errors() {
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let (err, close) = violation(&masked(true, 0x8, &code.to_be_bytes()));
        assert!(matches!(err, ProtocolError::Malformed(_)), "{code}");
        assert_eq!(close_code(&close), 1002, "{code}");
    }
}

#[test]
fn an_empty_close_reports_1005_and_is_echoed_empty() {
    let mut s = server();
    let r = run(&mut s, &masked(true, 0x8, b""));
    let session = r.wire.close.unwrap();
    assert_eq!(session, SessionClose::by_peer(1005, ""));
    let echo = s.encode_close(&Closing::Session(&session));
    assert_eq!(echo, [0x88, 0x00]);
}

#[test]
fn nothing_is_decoded_after_a_close_frame() {
    let mut bytes = masked(true, 0x8, &1000u16.to_be_bytes());
    let close_len = bytes.len();
    bytes.extend(masked(true, 0x1, b"late"));
    let mut s = server();
    assert_eq!(s.decode(&bytes).unwrap(), Decoded::Consumed(close_len));
    let rest = &bytes[close_len..];
    assert_eq!(s.decode(rest).unwrap(), Decoded::Consumed(rest.len()));
    assert_eq!(s.decode(&[]).unwrap(), Decoded::Incomplete);
    assert!(s.wire.out.is_empty());
}

#[test]
fn encode_close_codes_for_every_reason() {
    let err = ProtocolError::TooLarge { len: 2, max: 1 };
    let session = SessionClose::local(4001, "app");
    let cases: Vec<(Closing<'_>, Vec<u8>)> = vec![
        (
            Closing::Local {
                code: None,
                reason: "",
            },
            vec![0x88, 2, 0x03, 0xe8],
        ),
        (
            Closing::Local {
                code: Some(4000),
                reason: "bye",
            },
            vec![0x88, 5, 0x0f, 0xa0, b'b', b'y', b'e'],
        ),
        (
            Closing::Local {
                code: Some(1005),
                reason: "x",
            },
            vec![0x88, 0],
        ),
        (
            Closing::Local {
                code: Some(1006),
                reason: "",
            },
            vec![0x88, 2, 0x03, 0xe8],
        ),
        (Closing::GoingAway, vec![0x88, 2, 0x03, 0xe9]),
        (Closing::InternalError, vec![0x88, 2, 0x03, 0xf3]),
        (
            Closing::Restart,
            [&[0x88, 17, 0x03, 0xf4][..], b"service restart"].concat(),
        ),
        (
            Closing::Session(&session),
            vec![0x88, 5, 0x0f, 0xa1, b'a', b'p', b'p'],
        ),
    ];
    for (closing, expected) in cases {
        assert_eq!(server().encode_close(&closing), expected, "{closing:?}");
    }
    assert_eq!(close_code(&server().encode_close(&Closing::Timeout)), 1001);
    let out = server().encode_close(&Closing::Violation(&err));
    assert_eq!(close_code(&out), 1009);
}

#[test]
fn one_close_frame_per_connection_and_nothing_after_it() {
    let mut s = server();
    let mut out = s.encode_close(&Closing::GoingAway);
    let first = out.len();
    out.extend(s.encode_close(&Closing::InternalError));
    assert_eq!(out.len(), first);
    assert!(s.encoder.close_sent());
    assert!(s.encode_into(&Message::from("late"), &mut out).is_err());
    assert_eq!(out.len(), first);
}

#[test]
fn no_close_frame_before_the_handshake_is_accepted() {
    let mut s = Session::new(Ws::default());
    let err = ProtocolError::Malformed("bad request");
    let out = s.encode_close(&Closing::Violation(&err));
    assert!(out.is_empty());
    assert!(!s.encoder.is_established());
}

#[test]
fn payload_arriving_in_pieces_is_consumed_as_it_comes() {
    let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let bytes = masked(true, 0x2, &payload);
    let mut s = server();
    let mut pos = 0;
    let mut got = None;
    // Feed 100 bytes at a time: every call consumes what it was given.
    let mut end = 0;
    while got.is_none() {
        end = (end + 100).min(bytes.len());
        match s.decode(&bytes[pos..end]).unwrap() {
            Decoded::Consumed(n) => {
                assert_eq!(pos + n, end, "a partial payload is consumed whole");
                pos += n;
            }
            Decoded::Message { msg, consumed } => {
                pos += consumed;
                got = Some(msg);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(pos, bytes.len());
    assert_eq!(got, Some(Message::Binary(payload)));
}

#[test]
fn held_bytes_count_a_message_being_reassembled_until_it_is_delivered() {
    let mut s = server();
    assert_eq!(s.decoder.held_bytes(), 0, "idle");

    // A fragmented message: every piece received is held until the last.
    let pieces = [
        masked(false, 0x2, &[1; 1000]),
        masked(false, 0x0, &[2; 1000]),
        masked(true, 0x0, &[3; 1000]),
    ];
    for (i, piece) in pieces[..2].iter().enumerate() {
        assert_eq!(s.decode(piece).unwrap(), Decoded::Consumed(piece.len()));
        let held = s.decoder.held_bytes();
        assert!(held >= (i + 1) * 1000, "after piece {i}: {held}");
        assert_eq!(s.held_bytes(), held, "no encoder state without deflate");
    }
    let Decoded::Message { msg, .. } = s.decode(&pieces[2]).unwrap() else {
        panic!("the last piece ends the message");
    };
    assert_eq!(msg.as_bytes().len(), 3000);
    assert_eq!(s.decoder.held_bytes(), 0, "delivered");

    // One large frame arriving 16 KiB at a time: its payload so far is held.
    let payload = vec![7u8; 200_000];
    let bytes = masked(true, 0x2, &payload);
    let header = bytes.len() - payload.len();
    let mut pos = 0;
    loop {
        let end = (pos + 16 * 1024).min(bytes.len());
        match s.decode(&bytes[pos..end]).unwrap() {
            Decoded::Consumed(n) => {
                pos += n;
                let held = s.decoder.held_bytes();
                assert!(held >= pos - header, "{held} held after {pos} bytes");
            }
            Decoded::Message { msg, consumed } => {
                assert_eq!(pos + consumed, bytes.len());
                assert_eq!(msg, Message::Binary(payload));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(s.decoder.held_bytes(), 0, "delivered");
}

#[test]
fn violation_close_frames_carry_a_short_reason() {
    let (_, close) = violation(&masked(true, 0x1, b"\xff"));
    assert_eq!(&payload_of(&close)[2..], b"invalid UTF-8");
    let (_, close) = violation(&masked(true, 0x0, b"x"));
    assert_eq!(
        &payload_of(&close)[2..],
        b"continuation frame without a message"
    );
}

#[test]
fn message_conversions() {
    assert_eq!(Message::from("a"), Message::Text("a".into()));
    assert_eq!(Message::from(String::from("a")), Message::Text("a".into()));
    assert_eq!(Message::from(vec![1u8]), Message::Binary(vec![1]));
    assert_eq!(Message::from(&[1u8][..]), Message::Binary(vec![1]));
    assert_eq!(Message::from("ab").as_bytes(), b"ab");
    assert_eq!(Message::Pong(vec![9]).into_bytes(), [9]);
    assert!(Message::Ping(vec![]).is_control() && !Message::from("x").is_control());
}

/// What a message being reassembled holds follows what arrived, never what
/// a header announces, and never exceeds the maximum message size however
/// the payload arrives: the worker's message limit (`max_package_size`,
/// which adds `held_bytes`) and its memory budget see the real message.
#[test]
fn held_bytes_follow_what_arrived_and_stay_within_the_message_limit() {
    const MAX: usize = 1_000_000;
    let cfg = WsConfig::default()
        .max_message_size(MAX)
        .max_frame_size(MAX);
    // A header announcing 900 KB, with 10 bytes of payload: 10 bytes held.
    let mut s = established(cfg.clone(), false);
    let bytes = masked(true, 0x2, &vec![5u8; 900_000]);
    let header = bytes.len() - 900_000;
    assert_eq!(
        s.decode(&bytes[..header + 10]).unwrap(),
        Decoded::Consumed(header + 10)
    );
    assert_eq!(s.decoder.held_bytes(), 10, "only what arrived");

    // Arriving 7 KB at a time: held is what arrived (the buffer grows by
    // doubling, never past the message's announced end).
    let mut pos = header + 10;
    let mut peak = 0;
    while pos < bytes.len() {
        let end = (pos + 7000).min(bytes.len());
        match s.decode(&bytes[pos..end]).unwrap() {
            Decoded::Consumed(n) => {
                pos += n;
                let held = s.decoder.held_bytes();
                let arrived = pos - header;
                assert!(
                    held <= 2 * arrived && held <= 900_000,
                    "{held} for {arrived}"
                );
                peak = peak.max(held);
            }
            Decoded::Message { consumed, .. } => pos += consumed,
            other => panic!("{other:?}"),
        }
    }
    assert!(peak <= 900_000, "{peak}");

    // A message of the maximum size in 100 fragments of 10 KB: held never
    // goes past the maximum (nor would the buffer's capacity, which
    // doubling alone would take to 1,310,720).
    let mut s = established(cfg.clone(), false);
    for i in 0..100 {
        let op = if i == 0 { 0x2 } else { 0x0 };
        let piece = masked(i == 99, op, &[1u8; 10_000]);
        match s.decode(&piece).unwrap() {
            Decoded::Consumed(_) => {
                let held = s.decoder.held_bytes();
                assert!(held <= MAX, "fragment {i}: {held} > {MAX}");
            }
            Decoded::Message { msg, .. } => assert_eq!(msg.as_bytes().len(), MAX),
            other => panic!("{other:?}"),
        }
    }
    // One byte more, across fragments: 1009 from the header, nothing more held.
    let mut s = established(cfg, false);
    for i in 0..99 {
        let op = if i == 0 { 0x2 } else { 0x0 };
        s.decode(&masked(false, op, &[1u8; 10_000])).unwrap();
    }
    let err = s.decode(&masked(true, 0x0, &[1u8; 10_001])).unwrap_err();
    assert!(matches!(err, ProtocolError::TooLarge { .. }), "{err}");
    assert_eq!(s.decoder.held_bytes(), 0, "a violation lets go at once");
}

/// A connection that stops decoding (a violation, the peer's close frame)
/// holds nothing of an unfinished message while it closes.
#[test]
fn a_violation_or_a_close_frame_lets_go_of_an_unfinished_message() {
    let mut s = server();
    s.decode(&masked(false, 0x2, &[1u8; 50_000])).unwrap();
    assert!(s.decoder.held_bytes() >= 50_000);
    let r = run(&mut s, &masked(true, 0x8, &[0x03, 0xe8]));
    assert!(r.error.is_none() && r.wire.close.is_some(), "{:?}", r.error);
    assert_eq!(s.decoder.held_bytes(), 0, "after the peer's close");

    let mut s = server();
    s.decode(&masked(false, 0x1, &[b'a'; 50_000])).unwrap();
    assert!(s.decoder.held_bytes() >= 50_000);
    assert!(s.decode(&masked(true, 0x0, b"\xff")).is_err());
    assert_eq!(s.decoder.held_bytes(), 0, "after a violation");
}
