//! WebSocket frames after the handshake: arbitrary bytes in arbitrary
//! chunks, to both roles, with and without permessage-deflate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lubdub_fuzz::split_input;
use lubdub_fuzz::ws::{feed_ws, feed_ws_both};
use lubdub_protocol::Session;
use lubdub_ws::{DeflateConfig, Message, Role, Ws, WsConfig};

/// The configuration for an input: bits 3.. of its first byte (bits 0-2
/// are `split_input`'s count of chunk sizes).
fn config(selector: u8) -> Ws {
    let deflate = DeflateConfig::default();
    match (selector >> 3) % 6 {
        0 => Ws::server_without_handshake(WsConfig::default().deliver_pings(true)),
        1 => Ws::server_without_handshake(
            WsConfig::default().max_message_size(64).max_frame_size(32),
        ),
        2 => Ws::server_without_handshake(
            WsConfig::default()
                .max_message_size(4096)
                .deflate(deflate)
                .deliver_pings(true),
        ),
        3 => Ws::server_without_handshake(
            WsConfig::default()
                .max_message_size(100_000)
                .deflate(
                    deflate
                        .server_no_context_takeover(true)
                        .client_no_context_takeover(true)
                        .server_max_window_bits(9)
                        .client_max_window_bits(9),
                )
                .accept_unmasked_frames(true),
        ),
        4 => Ws::client_without_handshake(WsConfig::default().deliver_pings(true)),
        _ => Ws::client_without_handshake(
            WsConfig::default().max_message_size(4096).deflate(deflate),
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let (cuts, stream) = split_input(data);
    let ws = config(data.first().copied().unwrap_or(0));
    let ws = &ws;
    let cfg = ws.config();
    let fed = feed_ws_both(ws, stream, &cuts);
    assert!(
        fed.handshakes.is_empty(),
        "a handshake without one configured"
    );
    assert!(fed.consumed <= stream.len());
    for m in &fed.msgs {
        if !m.is_control() {
            assert!(
                m.as_bytes().len() <= cfg.max_message_size,
                "a message over the maximum"
            );
        }
        if let Message::Ping(_) = m {
            assert!(cfg.deliver_pings, "a ping delivered without deliver_pings");
        }
    }
    // The peer: the other role, with the same (assumed) deflate.
    let peer = match ws.role() {
        Role::Server => Ws::client_without_handshake(cfg.clone()),
        Role::Client => Ws::server_without_handshake(cfg.clone()),
    };
    // What the protocol wrote by itself: exactly one pong per ping,
    // with its payload, framed as its role must (the peer checks).
    if cfg.deliver_pings {
        let pings: Vec<&Vec<u8>> = fed
            .msgs
            .iter()
            .filter_map(|m| match m {
                Message::Ping(p) => Some(p),
                _ => None,
            })
            .collect();
        let back = feed_ws(&peer, &fed.wire_out, &[usize::MAX]);
        assert!(
            back.error.is_none(),
            "our pongs do not decode: {:?}",
            back.error
        );
        assert_eq!(back.consumed, fed.wire_out.len());
        let pongs: Vec<&Vec<u8>> = back
            .msgs
            .iter()
            .map(|m| match m {
                Message::Pong(p) => p,
                other => panic!("the protocol wrote {other:?}"),
            })
            .collect();
        assert_eq!(pings, pongs, "pongs do not answer the pings");
    }
    // What was decoded, encoded again by the peer, decodes the same.
    let mut sender = Session::new(peer);
    let mut again = Vec::new();
    for m in &fed.msgs {
        sender
            .encode_into(m, &mut again)
            .expect("re-encode a decoded message");
    }
    let round = feed_ws(ws, &again, &[usize::MAX]);
    assert!(
        round.error.is_none(),
        "re-encoded messages fail: {:?}",
        round.error
    );
    assert_eq!(
        round.msgs, fed.msgs,
        "re-encoded messages decode differently"
    );
});
