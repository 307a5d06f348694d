//! Interop with tungstenite, an independent implementation, through
//! in-memory pipes (no sockets): tungstenite's client against our server,
//! our client against tungstenite's server.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use lubdub_protocol::{Closing, Decoded, Session, SessionClose};
use lubdub_ws::{Message, Ws, WsConfig};
use tungstenite::Message as TMessage;

/// One of our `Ws` sessions on the far side of a byte pipe: what the other
/// side writes is decoded at once, and what ours answers is queued for
/// reading.
struct Pipe {
    s: Session<Ws>,
    input: Vec<u8>,
    output: VecDeque<u8>,
    received: Vec<Message>,
    close: Option<SessionClose>,
    echo: bool,
}

impl Pipe {
    fn new(ws: Ws, echo: bool) -> Self {
        Pipe {
            s: Session::new(ws),
            input: Vec::new(),
            output: VecDeque::new(),
            received: Vec::new(),
            close: None,
            echo,
        }
    }

    fn start(&mut self) {
        self.s.start();
        self.output.extend(self.s.wire.take());
    }

    fn send(&mut self, msg: &Message) {
        let out = self.s.encode(msg).unwrap();
        self.output.extend(out);
    }

    /// Decodes everything that arrived, as a connection would.
    fn pump(&mut self) {
        while self.close.is_none() {
            let mut extra = Vec::new();
            let used = match self.s.decode(&self.input) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Handshake { data, consumed }) => {
                    self.s.accept(&data);
                    consumed
                }
                Ok(Decoded::Message { msg, consumed }) => {
                    if self.echo && !msg.is_control() {
                        self.s.encode_into(&msg, &mut extra).unwrap();
                    }
                    self.received.push(msg);
                    consumed
                }
                Ok(Decoded::Consumed(n)) => n,
                Err(e) => panic!("our side refused: {e}"),
            };
            self.input.drain(..used);
            self.output.extend(self.s.wire.take());
            self.output.extend(extra);
            if let Some(close) = self.s.wire.close.take() {
                let echo = self.s.encode_close(&Closing::Session(&close));
                self.output.extend(echo);
                self.close = Some(close);
            }
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.input.extend_from_slice(buf);
        self.pump();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Pipe {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if self.output.is_empty() {
            // Once our side closed and flushed, the connection is gone.
            if self.close.is_some() {
                return Ok(0);
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = dst.len().min(self.output.len());
        for (d, b) in dst.iter_mut().zip(self.output.drain(..n)) {
            *d = b;
        }
        Ok(n)
    }
}

#[test]
fn tungstenite_client_against_our_server() {
    let cfg = WsConfig::default().subprotocols(["chat"]);
    let pipe = Pipe::new(Ws::server(cfg), true);
    let request = tungstenite::http::Request::builder()
        .uri("ws://localhost/chat?x=1")
        .header("Host", "localhost")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tungstenite::handshake::client::generate_key(),
        )
        .header("Sec-WebSocket-Protocol", "chat")
        .body(())
        .unwrap();
    let (mut socket, response) = tungstenite::client(request, pipe).expect("handshake");
    assert_eq!(response.status(), 101);
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "chat"
    );

    let big = vec![0x5a; 100_000];
    for msg in [
        TMessage::text("hello ☺"),
        TMessage::binary(big.clone()),
        TMessage::text(""),
    ] {
        socket.send(msg.clone()).unwrap();
        assert_eq!(socket.read().unwrap(), msg, "echo");
    }
    // Our server answers tungstenite's ping by itself.
    socket.send(TMessage::Ping(b"rtt".to_vec().into())).unwrap();
    assert_eq!(
        socket.read().unwrap(),
        TMessage::Pong(b"rtt".to_vec().into())
    );

    socket.close(None).unwrap();
    // The echo of the close completes the closing handshake.
    loop {
        match socket.read() {
            Ok(TMessage::Close(_)) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            other => panic!("{other:?}"),
        }
    }
    let pipe = socket.get_ref();
    assert_eq!(pipe.close, Some(SessionClose::by_peer(1005, "")));
    assert_eq!(
        pipe.received.len(),
        3,
        "three messages; the ping is not delivered"
    );
    assert_eq!(pipe.received[1], Message::Binary(big));
}

#[test]
fn our_client_against_tungstenite_server() {
    let client = Ws::client(WsConfig::default(), "localhost:9001", "/feed?since=0").unwrap();
    let mut pipe = Pipe::new(client, false);
    pipe.start();
    let mut server = tungstenite::accept(pipe).expect("tungstenite accepted our request");
    assert!(server.get_ref().s.decoder.is_established());

    server.get_mut().send(&Message::from("from lubdub"));
    server.get_mut().send(&Message::Binary(vec![1, 2, 3]));
    assert_eq!(server.read().unwrap(), TMessage::text("from lubdub"));
    assert_eq!(server.read().unwrap(), TMessage::binary(vec![1, 2, 3]));

    server.send(TMessage::text("from tungstenite")).unwrap();
    server.send(TMessage::Ping(b"hb".to_vec().into())).unwrap();
    // Our client's automatic pong reaches tungstenite.
    assert_eq!(
        server.read().unwrap(),
        TMessage::Pong(b"hb".to_vec().into())
    );
    server
        .close(Some(tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Away,
            reason: "bye".into(),
        }))
        .unwrap();
    let pipe = server.get_ref();
    assert_eq!(pipe.received, [Message::from("from tungstenite")]);
    assert_eq!(pipe.close, Some(SessionClose::by_peer(1001, "bye")));
    // Our echo (1001) is in tungstenite's read queue.
    loop {
        match server.read() {
            Ok(TMessage::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1001);
            }
            Err(tungstenite::Error::ConnectionClosed) => break,
            other => panic!("{other:?}"),
        }
    }
}
