//! permessage-deflate: RFC 7692 examples, negotiation, round trips.

mod common;

use common::*;
use lubdub_protocol::{Decoded, Decoder, Encoder, ProtocolError, Session};
use lubdub_ws::{DeflateConfig, Message, Ws, WsConfig};

fn deflate_cfg(d: DeflateConfig) -> WsConfig {
    WsConfig::default().deflate(d)
}

/// Context takeover both ways with 15-bit windows (the defaults before
/// 0.3): what the defaults give up to keep an idle connection small.
fn takeover() -> DeflateConfig {
    DeflateConfig::default()
        .server_no_context_takeover(false)
        .client_max_window_bits(15)
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn rfc_7692_hello_compressed() {
    let mut s = established(deflate_cfg(DeflateConfig::default()), false);
    let out = s.encode(&Message::from("Hello")).unwrap();
    assert_eq!(hex(&out), "c1 07 f2 48 cd c9 c9 07 00");
}

#[test]
fn rfc_7692_context_takeover_shrinks_the_second_hello() {
    let mut s = established(deflate_cfg(takeover()), false);
    let _first = s.encode(&Message::from("Hello")).unwrap();
    let second = s.encode(&Message::from("Hello")).unwrap();
    assert_eq!(hex(&second), "c1 05 f2 00 11 00 00");

    // Without context takeover (the default for the server's messages)
    // both messages compress the same.
    let cfg = deflate_cfg(DeflateConfig::default());
    let mut s = established(cfg, false);
    let a = s.encode(&Message::from("Hello")).unwrap();
    let b = s.encode(&Message::from("Hello")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn rfc_7692_examples_decode() {
    let cases: [(&str, &[u8]); 6] = [
        (
            "one frame",
            &[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        ),
        (
            "two fragments",
            &[
                0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
            ],
        ),
        (
            "stored block",
            &[
                0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ],
        ),
        (
            "BFINAL set",
            &[0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
        ),
        (
            "two DEFLATE blocks",
            &[
                0xc1, 0x0d, 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07,
                0x00,
            ],
        ),
        (
            "uncompressed message too",
            &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o'],
        ),
    ];
    for (what, bytes) in cases {
        let mut s = established(deflate_cfg(DeflateConfig::default()), true);
        let r = run(&mut s, bytes);
        assert_eq!(
            r.messages,
            [Message::Text("Hello".into())],
            "{what}: {:?}",
            r.error
        );
        assert_eq!(r.consumed, bytes.len(), "{what}");
    }
    // Two messages sharing a context: the second is a back-reference.
    let mut s = established(deflate_cfg(takeover()), true);
    let bytes = [
        0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00,
        0x00,
    ];
    let r = run(&mut s, &bytes);
    assert_eq!(
        r.messages,
        [Message::Text("Hello".into()), Message::Text("Hello".into())]
    );
    // A message after one with BFINAL still inflates.
    let mut s = established(deflate_cfg(DeflateConfig::default()), true);
    let bytes = [
        0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0xc1, 0x07, 0xf2, 0x48, 0xcd,
        0xc9, 0xc9, 0x07, 0x00,
    ];
    let r = run(&mut s, &bytes);
    assert_eq!(r.messages.len(), 2, "{:?}", r.error);
}

/// The server's `Sec-WebSocket-Extensions` answer to `offer`, if any.
fn negotiate(offer: &str, server: DeflateConfig) -> Option<String> {
    let mut s = Session::new(Ws::server(deflate_cfg(server)));
    let req = request_with(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
    let (result, _) = server_handshake(&mut s, &req);
    let (data, _) = result.unwrap();
    s.accept(&data);
    let res = String::from_utf8(s.wire.take()).unwrap();
    let answer = res
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
        .map(str::to_owned);
    assert_eq!(answer.is_some(), data.request().unwrap().deflate());
    let eight_bits = answer
        .as_deref()
        .is_some_and(|a| a.contains("server_max_window_bits=8"));
    assert_eq!(answer.is_some() && !eight_bits, s.encoder.compresses());
    answer
}

#[test]
fn server_negotiation_variants() {
    let d = DeflateConfig::default;
    let t = takeover;
    let cases: Vec<(&str, DeflateConfig, Option<&str>)> = vec![
        // The defaults: no context for the server's messages; a client
        // whose window cannot be lowered to 12 bits keeps none either.
        (
            "permessage-deflate",
            d(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        // A browser's offer: its window is lowered to 12 bits.
        (
            "permessage-deflate; client_max_window_bits",
            d(),
            Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=12"),
        ),
        // The client's hint is taken (only an answer makes it binding).
        (
            "permessage-deflate; client_max_window_bits=10",
            d(),
            Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=10"),
        ),
        (
            "permessage-deflate; client_max_window_bits=14",
            d(),
            Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=12"),
        ),
        ("permessage-deflate", t(), Some("permessage-deflate")),
        (
            "permessage-deflate; client_max_window_bits",
            t(),
            Some("permessage-deflate"),
        ),
        (
            "permessage-deflate; client_max_window_bits",
            t().client_max_window_bits(12),
            Some("permessage-deflate; client_max_window_bits=12"),
        ),
        (
            "permessage-deflate; client_max_window_bits=10",
            t(),
            Some("permessage-deflate; client_max_window_bits=10"),
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            t(),
            Some("permessage-deflate; server_max_window_bits=10"),
        ),
        (
            "permessage-deflate; server_max_window_bits=\"12\"",
            t().server_max_window_bits(11),
            Some("permessage-deflate; server_max_window_bits=11"),
        ),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            t(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        (
            "permessage-deflate",
            t().server_no_context_takeover(true),
            Some("permessage-deflate; server_no_context_takeover"),
        ),
        // A window zlib cannot compress with: accepted, nothing compressed.
        (
            "permessage-deflate; server_max_window_bits=8",
            t(),
            Some("permessage-deflate; server_max_window_bits=8"),
        ),
        // Declined: unknown or repeated parameters, bad values. A later
        // acceptable offer is taken.
        (
            "permessage-deflate; foo, permessage-deflate; server_max_window_bits=9",
            t(),
            Some("permessage-deflate; server_max_window_bits=9"),
        ),
        ("permessage-deflate; foo", d(), None),
        (
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            d(),
            None,
        ),
        ("permessage-deflate; server_max_window_bits=16", d(), None),
        ("permessage-deflate; server_max_window_bits", d(), None),
        ("permessage-deflate; client_max_window_bits=abc", d(), None),
        (
            "permessage-deflate; server_no_context_takeover=1",
            d(),
            None,
        ),
        ("x-webkit-deflate-frame", d(), None),
        (
            "x-webkit-deflate-frame, permessage-deflate",
            t(),
            Some("permessage-deflate"),
        ),
    ];
    for (offer, cfg, expected) in cases {
        assert_eq!(
            negotiate(offer, cfg).as_deref(),
            expected,
            "offer {offer:?}"
        );
    }
}

#[test]
fn a_server_without_deflate_ignores_the_offer() {
    let mut s = Session::new(Ws::default());
    let req = request_with("Sec-WebSocket-Extensions: permessage-deflate\r\n");
    let (result, _) = server_handshake(&mut s, &req);
    assert!(!result.unwrap().0.request().unwrap().deflate());
}

fn round_trip(client_cfg: WsConfig, server_cfg: WsConfig, messages: &[Message]) -> (usize, String) {
    let (mut client, mut server, head) = connected(client_cfg, server_cfg);
    let mut wire_bytes = 0;
    for msg in messages {
        let up = client.encode(msg).unwrap();
        let r = run(&mut server, &up);
        assert_eq!(r.messages, std::slice::from_ref(msg));
        let down = server.encode(msg).unwrap();
        let r = run(&mut client, &down);
        assert_eq!(r.messages, std::slice::from_ref(msg));
        wire_bytes += up.len() + down.len();
    }
    (wire_bytes, head)
}

#[test]
fn held_bytes_report_a_zlib_stream_only_inside_a_message_and_the_history() {
    let cfg = deflate_cfg(DeflateConfig::default());
    assert_eq!(
        Session::new(Ws::server(cfg.clone())).held_bytes(),
        0,
        "nothing before the handshake"
    );
    for (cfg, history) in [(DeflateConfig::default(), 1 << 12), (takeover(), 1 << 15)] {
        let cfg = deflate_cfg(cfg);
        let (mut client, mut server, head) = connected(cfg.clone(), cfg);
        assert!(head.contains("permessage-deflate"), "{head}");
        // Negotiated, idle: no zlib stream is kept.
        for s in [&client, &server] {
            assert_eq!(s.held_bytes(), 0, "{:?} {:?}", s.decoder, s.encoder);
        }
        // A compressed message in two fragments: between them the server
        // holds an inflater (zlib-rs's 32 KiB window and its state).
        let text = "the quick brown fox jumps over the lazy dog ".repeat(2000);
        let bytes = client.encode(&Message::from(text.as_str())).unwrap();
        let payload_at = match bytes[1] & 0x7f {
            126 => 8,
            127 => 14,
            _ => 6,
        };
        let key: [u8; 4] = bytes[payload_at - 4..payload_at].try_into().unwrap();
        let mut payload = bytes[payload_at..].to_vec();
        lubdub_ws::frame::apply_mask(&mut payload, key, 0);
        let half = payload.len() / 2;
        let first = frame(false, 0b100, 0x1, Some(KEY), &payload[..half]);
        let second = frame(true, 0, 0x0, Some(KEY), &payload[half..]);
        let r = run(&mut server, &first);
        assert!(r.messages.is_empty() && r.error.is_none(), "{:?}", r.error);
        assert!(
            server.decoder.held_bytes() >= 1 << 15,
            "{}",
            server.decoder.held_bytes()
        );
        let r = run(&mut server, &second);
        assert_eq!(r.messages, [Message::from(text.as_str())], "{:?}", r.error);
        // Delivered: the stream is given back; the client's context stays.
        assert_eq!(server.decoder.held_bytes(), history, "server decoder");
        let back = server.encode(&Message::from(text.as_str())).unwrap();
        let r = run(&mut client, &back);
        assert_eq!(r.messages.len(), 1, "{:?}", r.error);
        let own = if history == 1 << 15 { 1 << 15 } else { 0 };
        assert_eq!(server.encoder.held_bytes(), own, "server encoder");
        assert!(client.held_bytes() <= 2 << 15, "{}", client.held_bytes());
    }
    let (client, server, _) = connected(WsConfig::default(), WsConfig::default());
    for s in [&client, &server] {
        assert_eq!(s.decoder.held_bytes(), 0);
        assert_eq!(s.encoder.held_bytes(), 0);
    }
}

fn sample_messages() -> Vec<Message> {
    let json = r#"{"type":"update","id":12345,"values":[1,2,3,4,5],"name":"lubdub"}"#;
    let mut rng = fastrand::Rng::with_seed(7);
    let random: Vec<u8> = (0..20_000).map(|_| rng.u8(..)).collect();
    vec![
        Message::from(json),
        Message::from(json),
        Message::from(""),
        Message::Binary(Vec::new()),
        Message::Binary(random),
        Message::from("abc".repeat(30_000)),
        Message::Pong(b"not compressed".to_vec()),
        Message::from(json),
    ]
}

#[test]
fn round_trips_with_context_takeover() {
    let cfg = deflate_cfg(takeover());
    let (bytes, head) = round_trip(cfg.clone(), cfg, &sample_messages());
    assert!(
        head.contains("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
        "{head}"
    );
    assert!(bytes < 60_000, "{bytes}");
    // The defaults: the client's context in 12 bits, none for the server.
    let cfg = deflate_cfg(DeflateConfig::default());
    let (bytes, head) = round_trip(cfg.clone(), cfg, &sample_messages());
    assert!(
        head.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_max_window_bits=12\r\n"
        ),
        "{head}"
    );
    assert!(bytes < 60_000, "{bytes}");
}

#[test]
fn round_trips_without_context_takeover_and_small_windows() {
    let both = DeflateConfig::default()
        .server_no_context_takeover(true)
        .client_no_context_takeover(true)
        .server_max_window_bits(9)
        .client_max_window_bits(10)
        .level(1);
    let (_, head) = round_trip(
        deflate_cfg(both.clone()),
        deflate_cfg(DeflateConfig::default()),
        &sample_messages(),
    );
    assert!(head.contains(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=10\r\n"
    ), "{head}");
    let (_, head) = round_trip(
        deflate_cfg(DeflateConfig::default()),
        deflate_cfg(both),
        &sample_messages(),
    );
    assert!(
        head.contains(
            "server_no_context_takeover; client_no_context_takeover; client_max_window_bits=10"
        ),
        "{head}"
    );
}

#[test]
fn context_takeover_makes_repeats_cheaper() {
    let json =
        Message::from(r#"{"type":"update","id":12345,"values":[1,2,3,4,5],"name":"lubdub"}"#);
    let size = |cfg: DeflateConfig| {
        let mut s = established(deflate_cfg(cfg), false);
        (0..2)
            .map(|_| s.encode(&json).unwrap().len())
            .collect::<Vec<_>>()
    };
    let with = size(takeover());
    assert!(with[1] < with[0] / 3, "{with:?}");
    let without = size(DeflateConfig::default());
    assert_eq!(without[0], without[1]);
}

#[test]
fn the_threshold_leaves_small_messages_uncompressed() {
    let mut s = established(deflate_cfg(DeflateConfig::default().threshold(10)), false);
    let out = s.encode(&Message::from("short")).unwrap();
    assert_eq!(out[0], 0x81, "no RSV1");
    let out = s.encode(&Message::from("long enough")).unwrap();
    assert_eq!(out[0], 0xc1);
}

fn client_with_answer(answer: &str) -> Result<Session<Ws>, ProtocolError> {
    let cfg = deflate_cfg(DeflateConfig::default());
    let mut s = Session::new(Ws::client(cfg, "h", "/").unwrap());
    s.start();
    let req = String::from_utf8(s.wire.take()).unwrap();
    assert!(
        req.contains(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_max_window_bits=12\r\n"
        ),
        "{req}"
    );
    let key = req
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap();
    let res = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: {answer}\r\n\r\n",
        lubdub_ws::handshake::accept_key(key)
    );
    match s.decode(res.as_bytes())? {
        Decoded::Handshake { .. } => Ok(s),
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_checks_the_servers_answer() {
    for ok in [
        "permessage-deflate",
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; client_max_window_bits=9; server_no_context_takeover",
    ] {
        assert!(client_with_answer(ok).is_ok(), "{ok}");
    }
    for bad in [
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; unknown",
        "permessage-deflate, permessage-deflate",
        "x-other",
    ] {
        assert!(
            matches!(client_with_answer(bad), Err(ProtocolError::Malformed(_))),
            "{bad}"
        );
    }
}

#[test]
fn an_8_bit_client_window_means_sending_uncompressed() {
    let cfg = deflate_cfg(DeflateConfig::default());
    let mut s = Session::new(Ws::client(cfg, "h", "/").unwrap());
    s.start();
    let req = String::from_utf8(s.wire.take()).unwrap();
    let key = req
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap();
    let res = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=8\r\n\r\n",
        lubdub_ws::handshake::accept_key(key)
    );
    let Decoded::Handshake { data, .. } = s.decode(res.as_bytes()).unwrap() else {
        panic!()
    };
    s.accept(&data);
    assert!(!s.encoder.compresses());
    let out = s.encode(&Message::from("Hello")).unwrap();
    assert_eq!(out[0], 0x81);
    // It still inflates what the server compresses.
    let r = run(
        &mut s,
        &[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
    );
    assert_eq!(r.messages, [Message::Text("Hello".into())]);
}

#[test]
fn deflate_violations_and_their_close_codes() {
    let cfg = deflate_cfg(DeflateConfig::default());
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "RSV1 on a ping",
            frame(true, 0b100, 0x9, Some(KEY), b""),
            1002,
        ),
        (
            "RSV1 on a continuation",
            [
                frame(false, 0b100, 0x1, Some(KEY), &[0xf2, 0x48]),
                frame(true, 0b100, 0x0, Some(KEY), &[0xcd]),
            ]
            .concat(),
            1002,
        ),
        (
            "not DEFLATE data",
            frame(true, 0b100, 0x2, Some(KEY), &[0xff; 8]),
            1007,
        ),
        // "\xff" compressed: valid DEFLATE, invalid UTF-8.
        (
            "compressed invalid UTF-8",
            frame(true, 0b100, 0x1, Some(KEY), &[0xfa, 0x0f, 0x00]),
            1007,
        ),
    ];
    for (what, bytes, code) in cases {
        let (err, close) = violation_with(cfg.clone(), false, &bytes);
        assert_eq!(close_code(&close), code, "{what}: {err}");
    }
}

#[test]
fn inflated_size_is_limited() {
    let cfg = deflate_cfg(DeflateConfig::default()).max_message_size(1000);
    let sender = || established(deflate_cfg(DeflateConfig::default()), true);
    let ok = sender().encode(&Message::Binary(vec![0; 1000])).unwrap();
    let r = run(&mut established(cfg.clone(), false), &ok);
    assert_eq!(r.messages, [Message::Binary(vec![0; 1000])]);

    let over = sender().encode(&Message::Binary(vec![0; 1001])).unwrap();
    assert!(over.len() < 50);
    let (err, close) = violation_with(cfg, false, &over);
    assert!(
        matches!(err, ProtocolError::TooLarge { max: 1000, .. }),
        "{err}"
    );
    assert_eq!(close_code(&close), 1009);
}

/// A few KiB on the wire can inflate to megabytes: each `decode` call
/// consumes only what inflates to about 4 KiB and returns, so the worker
/// weighs the session's growth (`held_bytes`) against its memory budget
/// between calls rather than after megabytes, and a poll of a connection
/// (at most 256 items) inflates about 1 MiB, not the whole message.
#[test]
fn a_compressed_message_grows_the_session_a_few_kib_per_decode() {
    // The server role's frames are not masked: its payload as a client's.
    let mut sender = established(deflate_cfg(DeflateConfig::default()), false);
    let zeros = vec![0u8; 4 << 20];
    let bytes = sender.encode(&Message::Binary(zeros.clone())).unwrap();
    let at = match bytes[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let wire = frame(true, 0b100, 0x2, Some(KEY), &bytes[at..]);
    assert!(wire.len() < 16 * 1024, "{} bytes on the wire", wire.len());
    let mut s = established(deflate_cfg(DeflateConfig::default()), false);
    let (mut pos, mut calls, mut before) = (0, 0, 0);
    loop {
        match s.decode(&wire[pos..]).unwrap() {
            Decoded::Consumed(n) => {
                pos += n;
                calls += 1;
                let held = s.decoder.held_bytes();
                // The zlib stream (~40 KiB) at the first call, then the
                // message, 4 KiB (one 8 KiB chunk at most) at a time, held
                // in 64 KiB segments (the last one grows by doubling: at
                // most 32 KiB more in one call).
                assert!(
                    held <= before.max(40 * 1024) + 32 * 1024,
                    "call {calls}: {before} -> {held}"
                );
                before = held;
            }
            Decoded::Message { msg, consumed } => {
                assert_eq!(pos + consumed, wire.len());
                assert_eq!(msg, Message::Binary(zeros));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(calls >= 1000, "{calls} calls for 4 MiB");
    assert_eq!(
        s.decoder.held_bytes(),
        1 << 12,
        "delivered: the client's 12-bit context"
    );
}
