//! What the hub scenarios' load generator puts on and reads off the wire,
//! sans-IO (unit-tested below): a minimal WebSocket client (the upgrade
//! request, masked client frames, unmasked server frames) and Engine.IO v4
//! / Socket.IO v5 packets, so that one load generator speaks to lubdub's
//! WebSocket nodes and to Socket.IO's.
//!
//! Hand-written on purpose: the load generator must not decode the lubdub
//! side with lubdub's own WebSocket code, and a client library would add
//! its per-message cost (owned messages, a task per socket) to one side's
//! numbers only if it did not support both. Small messages only: a frame
//! longer than [`MAX_FRAME`] or a fragmented one is an error.

use anyhow::{bail, Result};

/// Largest frame the load generator accepts (its messages are tens of bytes).
pub const MAX_FRAME: usize = 64 * 1024;

/// The `Sec-WebSocket-Key` of every upgrade (RFC 6455's example nonce) and
/// the `Sec-WebSocket-Accept` a server must answer with.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The masking key of every client frame (any key is valid; a constant one
/// keeps the load generator's cost per frame to the XOR).
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x88];

pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xa;

/// The HTTP upgrade request for `path` on `host` (`127.0.0.1:port`).
pub fn upgrade_request(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Looks for the end of the server's HTTP answer in `buf`. `Ok(Some(n))`:
/// the head is `buf[..n]` and it is a valid `101` with the right accept
/// key (bytes after it are frames); `Ok(None)`: not all of it yet.
pub fn upgrade_response(buf: &[u8]) -> Result<Option<usize>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            bail!("the server's HTTP answer has no end in 16 KiB");
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if !status.starts_with("HTTP/1.1 101") {
        bail!("the server refused the upgrade: {status:?}");
    }
    let accept = lines.filter_map(|l| l.split_once(':')).find_map(|(k, v)| {
        k.trim()
            .eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| v.trim().to_owned())
    });
    if accept.as_deref() != Some(WS_ACCEPT) {
        bail!("the server answered 101 with Sec-WebSocket-Accept {accept:?}, not {WS_ACCEPT:?}");
    }
    Ok(Some(end + 4))
}

/// Appends a masked client frame (FIN set) with `payload` to `out`.
pub fn client_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

/// One server frame found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub opcode: u8,
    /// Where the payload lies in the buffer.
    pub payload: std::ops::Range<usize>,
    /// Bytes the whole frame takes.
    pub len: usize,
}

/// Parses the server frame at the start of `buf`: `Ok(None)` if it is not
/// all there yet. Server frames are unmasked, whole (FIN set) and at most
/// [`MAX_FRAME`] long here; anything else is an error, never a panic.
pub fn server_frame(buf: &[u8]) -> Result<Option<ServerFrame>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x80 == 0 {
        bail!("a fragmented frame (FIN clear): the load generator expects whole small messages");
    }
    if b0 & 0x70 != 0 {
        bail!("a frame with RSV bits set: no extension was negotiated");
    }
    if b1 & 0x80 != 0 {
        bail!("a masked frame from the server");
    }
    let (len, head) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    if len > MAX_FRAME as u64 {
        bail!("a {len}-byte frame: larger than the load generator's {MAX_FRAME}");
    }
    let total = head + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(ServerFrame {
        opcode: b0 & 0x0f,
        payload: head..total,
        len: total,
    }))
}

/// An Engine.IO v4 packet (one WebSocket text frame), with the Socket.IO v5
/// packet inside a `message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eio<'a> {
    /// `0{...}`: the handshake (sid, pingInterval, ...), JSON.
    Open(&'a [u8]),
    /// `1`: the server closes the session.
    Close,
    /// `2`: the server pings; the client must answer `3`.
    Ping,
    /// `3`.
    Pong,
    /// `40{...}`: the namespace `/` accepted the client (the JSON holds its sid).
    Connect(&'a [u8]),
    /// `44{...}`: the namespace refused the client.
    ConnectError(&'a [u8]),
    /// `42[...]`: an event, the JSON array `["name", args...]`.
    Event(&'a [u8]),
    /// Any other packet (upgrade, noop, acks, binary events, disconnect).
    Other(&'a [u8]),
}

/// Splits an Engine.IO packet. An empty packet is an error.
pub fn eio(packet: &[u8]) -> Result<Eio<'_>> {
    let Some((&kind, rest)) = packet.split_first() else {
        bail!("an empty Engine.IO packet");
    };
    Ok(match (kind, rest.split_first()) {
        (b'0', _) => Eio::Open(rest),
        (b'1', _) => Eio::Close,
        (b'2', _) => Eio::Ping,
        (b'3', _) => Eio::Pong,
        (b'4', Some((b'0', json))) => Eio::Connect(json),
        (b'4', Some((b'4', json))) => Eio::ConnectError(json),
        (b'4', Some((b'2', json))) => Eio::Event(json),
        _ => Eio::Other(packet),
    })
}

/// The Engine.IO message a client sends to connect to the default namespace.
pub const SIO_CONNECT: &[u8] = b"40";
/// The Engine.IO answer to a ping.
pub const EIO_PONG: &[u8] = b"3";

/// `42["name","arg"]` (`arg` must need no JSON escaping; the load
/// generator's payloads are hex digits and letters). Empty `arg`: `42["name"]`.
pub fn sio_event(name: &str, arg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"42[\"");
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
    if !arg.is_empty() {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(arg);
        out.push(b'"');
    }
    out.push(b']');
}

/// The single string argument of the event JSON `["name","arg"]`, if the
/// event is called `name` and has exactly that form (no escapes).
pub fn sio_event_arg<'a>(json: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let rest = json.strip_prefix(b"[\"")?;
    let rest = rest.strip_prefix(name.as_bytes())?;
    let rest = rest.strip_prefix(b"\",\"")?;
    let arg = rest.strip_suffix(b"\"]")?;
    (!arg.contains(&b'"') && !arg.contains(&b'\\')).then_some(arg)
}

/// The load generator's message: a kind letter (`w` warm-up probe, `m`
/// measured), the publisher's sequence number and the send time in ns
/// since the load generator's start, both 16 hex digits: 33 ASCII bytes.
pub const STAMP_LEN: usize = 33;

pub fn stamp(kind: u8, seq: u64, t_ns: u64, out: &mut [u8; STAMP_LEN]) {
    out[0] = kind;
    hex16(seq, &mut out[1..17]);
    hex16(t_ns, &mut out[17..33]);
}

/// Reads a [`stamp`]: (kind, seq, t_ns).
pub fn read_stamp(b: &[u8]) -> Option<(u8, u64, u64)> {
    if b.len() != STAMP_LEN {
        return None;
    }
    Some((b[0], unhex16(&b[1..17])?, unhex16(&b[17..33])?))
}

fn hex16(v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((v >> (4 * (15 - i))) & 0xf) as usize];
    }
}

fn unhex16(b: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = v << 4 | d as u64;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame as a server writes it (unmasked, FIN set).
    fn server_bytes(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        let n = payload.len();
        if n < 126 {
            out.push(n as u8);
        } else if n <= 65535 {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn server_frames_parse_across_any_split() {
        let big = vec![b'x'; 300];
        let mut stream = Vec::new();
        let frames: [(u8, &[u8]); 5] = [
            (OP_TEXT, b"0{\"sid\":\"abc\"}"),
            (OP_TEXT, b"40{\"sid\":\"def\"}"),
            (OP_PING, b""),
            (OP_TEXT, &big),
            (OP_TEXT, b"2"),
        ];
        for (op, p) in frames {
            stream.extend(server_bytes(op, p));
        }
        // Fed byte by byte, then in one piece: the same frames come out.
        for step in [1, 3, stream.len()] {
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(f) = server_frame(&buf).unwrap() {
                    got.push((f.opcode, buf[f.payload.clone()].to_vec()));
                    buf.drain(..f.len);
                }
            }
            assert!(buf.is_empty());
            let want: Vec<_> = frames.iter().map(|(o, p)| (*o, p.to_vec())).collect();
            assert_eq!(got, want, "step {step}");
        }
    }

    #[test]
    fn bad_server_frames_are_errors_not_panics() {
        assert!(server_frame(&[0x01, 0x00]).is_err(), "FIN clear");
        assert!(server_frame(&[0xc1, 0x00]).is_err(), "RSV1 without deflate");
        assert!(
            server_frame(&[0x81, 0x81, 0, 0, 0, 0, 0]).is_err(),
            "masked"
        );
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(server_frame(&huge).is_err(), "a length beyond MAX_FRAME");
        assert_eq!(server_frame(&[0x81, 126, 1]).unwrap(), None);
        assert_eq!(server_frame(&[0x81]).unwrap(), None);
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_the_payload() {
        for n in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut f = Vec::new();
            client_frame(OP_TEXT, &payload, &mut f);
            assert_eq!(f[0], 0x81);
            assert_eq!(f[1] & 0x80, 0x80, "mask bit");
            let (len, head) = match f[1] & 0x7f {
                126 => (u16::from_be_bytes([f[2], f[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                l => (l as usize, 2),
            };
            assert_eq!(len, n);
            let key = &f[head..head + 4];
            let unmasked: Vec<u8> = f[head + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(unmasked, payload);
        }
    }

    #[test]
    fn the_upgrade_answer_is_checked() {
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             sec-websocket-accept: {WS_ACCEPT}\r\n\r\n"
        );
        let mut with_frame = ok.clone().into_bytes();
        with_frame.extend(server_bytes(OP_TEXT, b"0{}"));
        assert_eq!(upgrade_response(&with_frame).unwrap(), Some(ok.len()));
        assert_eq!(upgrade_response(&ok.as_bytes()[..20]).unwrap(), None);
        assert!(upgrade_response(b"HTTP/1.1 400 Bad Request\r\n\r\n").is_err());
        let wrong = ok.replace(WS_ACCEPT, "nope");
        assert!(upgrade_response(wrong.as_bytes()).is_err());
        let req = upgrade_request("127.0.0.1:9", "/socket.io/?EIO=4&transport=websocket");
        assert!(req.starts_with("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
    }

    #[test]
    fn engine_io_packets() {
        assert_eq!(
            eio(br#"0{"sid":"x","pingInterval":25000}"#).unwrap(),
            Eio::Open(br#"{"sid":"x","pingInterval":25000}"#)
        );
        assert_eq!(eio(b"2").unwrap(), Eio::Ping);
        assert_eq!(eio(b"3").unwrap(), Eio::Pong);
        assert_eq!(eio(b"1").unwrap(), Eio::Close);
        assert_eq!(
            eio(br#"40{"sid":"s1"}"#).unwrap(),
            Eio::Connect(br#"{"sid":"s1"}"#)
        );
        assert_eq!(
            eio(br#"44{"message":"no"}"#).unwrap(),
            Eio::ConnectError(br#"{"message":"no"}"#)
        );
        assert_eq!(
            eio(br#"42["m","abc"]"#).unwrap(),
            Eio::Event(br#"["m","abc"]"#)
        );
        assert_eq!(eio(b"41").unwrap(), Eio::Other(b"41"));
        assert_eq!(eio(b"6").unwrap(), Eio::Other(b"6"));
        assert!(eio(b"").is_err());
    }

    #[test]
    fn socket_io_events_round_trip() {
        let mut out = Vec::new();
        sio_event("p", b"w0123", &mut out);
        assert_eq!(out, br#"42["p","w0123"]"#);
        out.clear();
        sio_event("join", b"", &mut out);
        assert_eq!(out, br#"42["join"]"#);
        let Eio::Event(json) = eio(br#"42["m","w0123"]"#).unwrap() else {
            panic!("an event");
        };
        assert_eq!(sio_event_arg(json, "m"), Some(&b"w0123"[..]));
        assert_eq!(sio_event_arg(json, "x"), None);
        assert_eq!(sio_event_arg(br#"["m","a\"b"]"#, "m"), None);
        assert_eq!(sio_event_arg(br#"["m","a",1]"#, "m"), None);
        assert_eq!(sio_event_arg(br#"["m"]"#, "m"), None);
    }

    #[test]
    fn stamps_round_trip() {
        let mut s = [0u8; STAMP_LEN];
        stamp(b'm', 0x1234, u64::MAX - 7, &mut s);
        assert!(s.iter().all(u8::is_ascii_alphanumeric));
        assert_eq!(read_stamp(&s), Some((b'm', 0x1234, u64::MAX - 7)));
        assert_eq!(read_stamp(&s[..32]), None);
        let mut bad = s;
        bad[5] = b'g';
        assert_eq!(read_stamp(&bad), None);
    }
}
