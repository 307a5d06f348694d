//! Property tests: no input makes the decoder panic or break the decode
//! contract, and however the bytes are split, the same messages come out.

mod common;

use common::*;
use lubdub_protocol::{Decoded, Session};
use lubdub_ws::{DeflateConfig, Message, Ws, WsConfig};
use proptest::prelude::*;

/// Feeds `bytes` in `chunks` into a growing buffer, as a connection does:
/// the buffer holds every unconsumed byte; decode runs until Incomplete.
/// Checks the contract on every call. Returns the messages until an error.
fn feed(s: &mut Session<Ws>, bytes: &[u8], cuts: &[usize]) -> (Vec<Message>, bool) {
    let mut start = 0;
    let mut messages = Vec::new();
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    for end in ends {
        loop {
            let src = &bytes[start..end];
            let consumed = match s.decode(src) {
                Err(_) => return (messages, true),
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Message { msg, consumed }) => {
                    messages.push(msg);
                    consumed
                }
                Ok(Decoded::Consumed(n)) => n,
                Ok(Decoded::Handshake { data, consumed }) => {
                    s.accept(&data);
                    consumed
                }
            };
            assert!(
                consumed >= 1 && consumed <= src.len(),
                "consumed {consumed} of {}",
                src.len()
            );
            start += consumed;
            if s.wire.close.is_some() {
                return (messages, false);
            }
        }
    }
    (messages, false)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        ".{0,200}".prop_map(Message::Text),
        proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Message::Binary),
        proptest::collection::vec(any::<u8>(), 0..126).prop_map(Message::Pong),
        // Repetitive text, which compresses.
        ("[ab]{1,4}", 0usize..2000).prop_map(|(s, n)| Message::Text(s.repeat(n))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
        deflate in any::<bool>(),
        role in 0u8..3,
    ) {
        let cfg = if deflate { WsConfig::default().deflate(DeflateConfig::default()) } else { WsConfig::default() };
        let cfg = cfg.max_message_size(1000).max_frame_size(500).max_header_size(300);
        let mut s = Session::new(match role {
            0 => Ws::server(cfg),
            1 => Ws::server_without_handshake(cfg),
            _ => Ws::client_without_handshake(cfg),
        });
        feed(&mut s, &bytes, &cuts);
    }

    #[test]
    fn a_request_prefix_then_any_bytes_never_panic(
        extra in "[ -~]{0,40}",
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        cuts in proptest::collection::vec(any::<usize>(), 0..4),
    ) {
        let mut input = request_with(&format!("Sec-WebSocket-Extensions: permessage-deflate; {extra}\r\n"));
        input.extend(bytes);
        let mut s = Session::new(Ws::server(WsConfig::default().deflate(DeflateConfig::default())));
        feed(&mut s, &input, &cuts);
    }

    #[test]
    fn random_splits_decode_identically(
        messages in proptest::collection::vec(message(), 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        deflate in any::<bool>(),
        no_takeover in any::<bool>(),
    ) {
        let d = DeflateConfig::default().client_no_context_takeover(no_takeover);
        let cfg = if deflate { WsConfig::default().deflate(d) } else { WsConfig::default() };
        let mut client = established(cfg.clone(), true);
        let mut bytes = Vec::new();
        for m in &messages {
            client.encode_into(m, &mut bytes).unwrap();
        }
        let (got, failed) = feed(&mut established(cfg, false), &bytes, &cuts);
        prop_assert!(!failed);
        prop_assert_eq!(got, messages);
    }

    #[test]
    fn fragmented_messages_reassemble_whatever_the_split(
        payload in proptest::collection::vec(any::<u8>(), 0..2000),
        frag_cuts in proptest::collection::vec(any::<usize>(), 0..5),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        // The payload in fragments (a pong between each), split anywhere.
        let mut bounds: Vec<usize> = frag_cuts.iter().map(|c| c % (payload.len() + 1)).collect();
        bounds.push(0);
        bounds.push(payload.len());
        bounds.sort_unstable();
        bounds.dedup();
        let mut bytes = Vec::new();
        let pieces: Vec<&[u8]> = if bounds.len() < 2 { vec![&payload[..]] } else { bounds.windows(2).map(|w| &payload[w[0]..w[1]]).collect() };
        for (i, piece) in pieces.iter().enumerate() {
            let opcode = if i == 0 { 0x2 } else { 0x0 };
            bytes.extend(masked(i + 1 == pieces.len(), opcode, piece));
            if i + 1 < pieces.len() {
                bytes.extend(masked(true, 0xA, b"p"));
            }
        }
        let (got, failed) = feed(&mut established(WsConfig::default(), false), &bytes, &cuts);
        prop_assert!(!failed);
        let mut expected = vec![Message::Pong(b"p".to_vec()); pieces.len() - 1];
        expected.push(Message::Binary(payload));
        prop_assert_eq!(got, expected);
    }
}
