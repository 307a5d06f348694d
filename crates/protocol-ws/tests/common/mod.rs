//! Helpers shared by the integration tests: frames built independently of
//! the crate's encoder, and decode loops as a connection would run them.
#![allow(dead_code)]

use lubdub_protocol::{Closing, Decoded, ProtocolError, Session, WireBuf};
use lubdub_ws::{Handshake, Message, Ws, WsConfig};

/// A frame as RFC 6455 §5.2 lays it out, built by hand.
pub fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n < 65536 => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// The masking key the tests use for client frames.
pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked (client) frame.
pub fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, 0, opcode, Some(KEY), payload)
}

/// An unmasked (server) frame.
pub fn unmasked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, 0, opcode, None, payload)
}

/// Unmasks a frame's payload, whatever its header.
pub fn payload_of(frame: &[u8]) -> Vec<u8> {
    let len7 = frame[1] & 0x7f;
    let (len, mut pos) = match len7 {
        126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
        127 => (
            u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let key = if frame[1] & 0x80 != 0 {
        let k: [u8; 4] = frame[pos..pos + 4].try_into().unwrap();
        pos += 4;
        Some(k)
    } else {
        None
    };
    let body = &frame[pos..pos + len];
    match key {
        Some(k) => body.iter().enumerate().map(|(i, b)| b ^ k[i % 4]).collect(),
        None => body.to_vec(),
    }
}

/// What a connection would see decoding `bytes` in one buffer.
#[derive(Debug, Default)]
pub struct Run {
    pub messages: Vec<Message>,
    pub consumed: usize,
    pub error: Option<ProtocolError>,
    /// What the session wrote on its own during this run, and the close it
    /// asked for.
    pub wire: WireBuf,
}

/// Decodes `bytes` as a connection would: until Incomplete, an error, or a
/// close request (after which a connection stops decoding). What the
/// session writes on its own during the run goes to [`Run::wire`]; what its
/// wire held before stays there.
pub fn run(s: &mut Session<Ws>, bytes: &[u8]) -> Run {
    let earlier = std::mem::take(&mut s.wire);
    let mut r = decode_until_stop(s, bytes);
    r.wire = std::mem::replace(&mut s.wire, earlier);
    r
}

fn decode_until_stop(s: &mut Session<Ws>, bytes: &[u8]) -> Run {
    let mut r = Run::default();
    loop {
        match s.decode(&bytes[r.consumed..]) {
            Err(e) => {
                r.error = Some(e);
                return r;
            }
            Ok(Decoded::Incomplete) => return r,
            Ok(Decoded::Message { msg, consumed }) => {
                assert!(consumed >= 1 && r.consumed + consumed <= bytes.len());
                r.messages.push(msg);
                r.consumed += consumed;
            }
            Ok(Decoded::Consumed(n)) => {
                assert!(n >= 1 && r.consumed + n <= bytes.len());
                r.consumed += n;
            }
            Ok(Decoded::Handshake { .. }) => panic!("unexpected handshake"),
        }
        if s.wire.close.is_some() {
            return r;
        }
    }
}

/// A session of a server (or a client) already past the handshake.
pub fn established(config: WsConfig, client_role: bool) -> Session<Ws> {
    Session::new(if client_role {
        Ws::client_without_handshake(config)
    } else {
        Ws::server_without_handshake(config)
    })
}

/// An established server decoding `bytes` must fail: the error and the
/// close frame `encode_close(Closing::Violation)` writes for it.
pub fn violation_with(
    config: WsConfig,
    client_role: bool,
    bytes: &[u8],
) -> (ProtocolError, Vec<u8>) {
    let mut s = established(config, client_role);
    let r = run(&mut s, bytes);
    let Some(err) = r.error else {
        panic!("no error for {bytes:02x?}: {:?}", r.messages);
    };
    let out = s.encode_close(&Closing::Violation(&err));
    (err, out)
}

/// [`violation_with`] for a server with the default config.
pub fn violation(bytes: &[u8]) -> (ProtocolError, Vec<u8>) {
    violation_with(WsConfig::default(), false, bytes)
}

/// The code of a server's (unmasked) close frame.
pub fn close_code(frame: &[u8]) -> u16 {
    assert_eq!(frame[0], 0x88, "not a close frame: {frame:02x?}");
    let p = payload_of(frame);
    u16::from_be_bytes([p[0], p[1]])
}

/// A browser-like upgrade request with extra header lines.
pub fn request_with(extra: &str) -> Vec<u8> {
    format!(
        "GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Runs a server's handshake on `request`: the handshake data and what
/// the server wrote (taken from the session's wire), or the error and what
/// it wrote.
pub fn server_handshake(
    s: &mut Session<Ws>,
    request: &[u8],
) -> (Result<(Handshake, usize), ProtocolError>, WireBuf) {
    let r = match s.decode(request) {
        Ok(Decoded::Handshake { data, consumed }) => Ok((data, consumed)),
        Ok(other) => panic!("not a handshake: {other:?}"),
        Err(e) => Err(e),
    };
    (r, std::mem::take(&mut s.wire))
}

/// A client and a server session, both through the handshake, with their
/// wires empty: (client, server, the server's 101 head).
pub fn connected(client_cfg: WsConfig, server_cfg: WsConfig) -> (Session<Ws>, Session<Ws>, String) {
    let mut client = Session::new(Ws::client(client_cfg, "localhost:8080", "/ws").unwrap());
    let mut server = Session::new(Ws::server(server_cfg));
    client.start();
    server.start();
    let req = client.wire.take();
    let Ok(Decoded::Handshake { data, consumed }) = server.decode(&req) else {
        panic!("server handshake failed")
    };
    assert_eq!(consumed, req.len());
    server.accept(&data);
    let res = server.wire.take();
    let Ok(Decoded::Handshake { data, consumed }) = client.decode(&res) else {
        panic!("client handshake failed")
    };
    assert_eq!(consumed, res.len());
    client.accept(&data);
    assert!(client.decoder.is_established() && server.decoder.is_established());
    (client, server, String::from_utf8(res).unwrap())
}
