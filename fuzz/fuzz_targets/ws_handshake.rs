//! WebSocket handshakes: arbitrary bytes as the head a server reads (an
//! upgrade request, or plain HTTP) and as the response a client reads
//! (`$ACCEPT` in the input stands for the accept value the client expects),
//! then frames after it, in arbitrary chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lubdub_fuzz::split_input;
use lubdub_fuzz::ws::feed_ws_both;
use lubdub_protocol::Reject;
use lubdub_ws::{DeflateConfig, Handshake, Role, Ws, WsConfig};

/// The protocol for an input: bits 3.. of its first byte (bits 0-2 are
/// `split_input`'s count of chunk sizes). Servers first, then clients.
fn protocol(selector: u8) -> Ws {
    let deflate = DeflateConfig::default().client_max_window_bits(10);
    let small = WsConfig::default().max_header_size(256).max_headers(4);
    match (selector >> 3) % 6 {
        0 => Ws::default(),
        1 => Ws::server(
            WsConfig::default()
                .subprotocols(["chat", "superchat"])
                .deflate(deflate),
        ),
        2 => Ws::server(small).serve_http(|req| {
            (req.path() == "/").then(|| Reject::new(200).header("X-Page", "1").body("hello"))
        }),
        3 => Ws::client(WsConfig::default(), "example.com", "/chat?room=1").unwrap(),
        4 => Ws::client(
            WsConfig::default().subprotocols(["chat"]).deflate(deflate),
            "example.com:8080",
            "/",
        )
        .unwrap(),
        _ => Ws::client(small, "h", "/").unwrap(),
    }
}

fuzz_target!(|data: &[u8]| {
    let (cuts, stream) = split_input(data);
    let ws = protocol(data.first().copied().unwrap_or(0));
    let fed = feed_ws_both(&ws, stream, &cuts);
    let max_head = ws.config().max_header_size;
    match (ws.role(), fed.handshakes.first()) {
        (Role::Server, Some(Handshake::Request(req))) => {
            assert!(fed.consumed > 0);
            let out = String::from_utf8_lossy(&fed.wire_out);
            if req.is_upgrade() {
                assert!(out.starts_with("HTTP/1.1 101 "), "{out}");
                assert!(req.method() == "GET" && req.version() == 1);
            } else {
                assert!(out.starts_with("HTTP/1.1 426 "), "{out}");
            }
        }
        (Role::Server, None) => {
            // Refused or answered as plain HTTP: a whole response that
            // closes. Or still waiting for the blank line, below the limit.
            if !fed.wire_out.is_empty() {
                let out = String::from_utf8_lossy(&fed.wire_out);
                assert!(out.starts_with("HTTP/1.1 "), "{out}");
                assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
                assert!(fed.close.is_some() || fed.error.is_some());
            } else if fed.error.is_none() && fed.close.is_none() {
                assert_eq!(fed.consumed, 0);
                assert!(stream.len() < max_head, "{} bytes, no 431", stream.len());
            }
        }
        (Role::Client, Some(Handshake::Response(res))) => assert_eq!(res.status(), 101),
        (Role::Client, None) => {}
        (role, Some(h)) => panic!("{role:?} got {h:?}"),
    }
});
