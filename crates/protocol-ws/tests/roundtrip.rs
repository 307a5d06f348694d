//! A client and a server `Ws` talking to each other through their bytes.

mod common;

use common::*;
use lubdub_protocol::{Closing, SessionClose};
use lubdub_ws::{Message, WsConfig};

#[test]
fn messages_both_ways_then_a_heartbeat_then_a_clean_close() {
    let cfg = WsConfig::default().subprotocols(["chat"]);
    let (mut client, mut server, head) = connected(cfg.clone(), cfg);
    assert!(head.contains("Sec-WebSocket-Protocol: chat\r\n"));

    let sent = [
        Message::from("hello ☺"),
        Message::Binary((0..=255).collect()),
        Message::Binary(vec![7; 70_000]),
        Message::from(""),
    ];
    for msg in &sent {
        let up = client.encode(msg).unwrap();
        assert_eq!(up[1] & 0x80, 0x80, "client frames are masked");
        assert_eq!(run(&mut server, &up).messages, std::slice::from_ref(msg));
        let down = server.encode(msg).unwrap();
        assert_eq!(down[1] & 0x80, 0, "server frames are not");
        assert_eq!(run(&mut client, &down).messages, std::slice::from_ref(msg));
    }

    // The server's heartbeat: a ping; the client answers with a pong by
    // itself, which the server receives as a message.
    let ping = server.encode(&Message::Ping(b"t=1".to_vec())).unwrap();
    let r = run(&mut client, &ping);
    assert!(r.messages.is_empty());
    assert_eq!(
        run(&mut server, &r.wire.out).messages,
        [Message::Pong(b"t=1".to_vec())]
    );

    // The client closes; the server reports it and echoes; the client
    // reports the echo and writes nothing more.
    let local = Closing::Local {
        code: Some(1000),
        reason: "done",
    };
    let bye = client.encode_close(&local);
    let r = run(&mut server, &bye);
    let session = r.wire.close.unwrap();
    assert_eq!(session, SessionClose::by_peer(1000, "done"));
    let echo = server.encode_close(&Closing::Session(&session));
    let r = run(&mut client, &echo);
    let closed = r.wire.close.unwrap();
    assert_eq!((closed.code, closed.by_peer), (1000, true));
    let nothing = client.encode_close(&Closing::Session(&closed));
    assert!(
        nothing.is_empty(),
        "the client's close frame was already sent"
    );
}
