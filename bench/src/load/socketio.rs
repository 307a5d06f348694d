//! What the hub load says over its WebSocket connections to Socket.IO
//! nodes, sans-IO (unit-tested below): Engine.IO v4 / Socket.IO v5
//! packets, one a WebSocket text frame; and the stamps every hub message
//! carries, on lubdub's nodes and Socket.IO's alike.

use anyhow::{bail, Result};

use crate::payload::{hex, unhex};

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

/// Writes the stamp of message `seq` of kind `kind`, sent at `t_ns`.
pub fn stamp(kind: u8, seq: u64, t_ns: u64, out: &mut [u8; STAMP_LEN]) {
    out[0] = kind;
    hex(seq, &mut out[1..17]);
    hex(t_ns, &mut out[17..33]);
}

/// Reads a [`stamp`]: (kind, seq, t_ns).
pub fn read_stamp(b: &[u8]) -> Option<(u8, u64, u64)> {
    if b.len() != STAMP_LEN {
        return None;
    }
    Some((b[0], unhex(&b[1..17])?, unhex(&b[17..33])?))
}

#[cfg(test)]
mod tests {
    use super::*;

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
