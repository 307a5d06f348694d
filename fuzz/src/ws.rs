//! The WebSocket harness. [`feed`](crate::feed) and
//! [`feed_both`](crate::feed_both) do not fit WebSocket: it writes on the
//! wire (pongs, HTTP answers), asks to close, has a handshake that a hook
//! must accept, and consumes a frame in pieces as it arrives (so the
//! `consumed` of each result depends on how the bytes were split). This
//! module feeds a [`Ws`] as a connection does and compares what does not
//! depend on the split.

use lubdub_protocol::{Decoded, ProtocolError, Session, SessionClose, Start};
use lubdub_ws::{Handshake, Message, Role, Ws};

/// Bytes in a client-role fuzz input that stand for the
/// `Sec-WebSocket-Accept` value the client expects (its key is random):
/// the harness puts the right value in their place, so a fuzzed response
/// can get past the accept check to the extension and subprotocol parsing.
pub const ACCEPT_MARKER: &[u8] = b"$ACCEPT";

/// What feeding a stream to a [`Ws`] produced.
#[derive(Debug)]
pub struct WsFed {
    /// Messages, in order.
    pub msgs: Vec<Message>,
    /// Handshakes delivered (at most one).
    pub handshakes: Vec<Handshake>,
    /// Bytes consumed in all (messages, control frames, pieces, heads).
    pub consumed: usize,
    /// The error that ended decoding, if any.
    pub error: Option<ProtocolError>,
    /// Everything the protocol wrote: the client's request, an HTTP
    /// answer, pongs.
    pub wire_out: Vec<u8>,
    /// The close the protocol asked for (decoding stops there).
    pub close: Option<SessionClose>,
    /// Client role: the accept value put in place of [`ACCEPT_MARKER`].
    pub accept: Option<String>,
}

impl WsFed {
    /// The error's variant name (see [`crate::Fed::error_kind`]).
    pub fn error_kind(&self) -> Option<&'static str> {
        self.error.as_ref().map(|e| match e {
            ProtocolError::TooLarge { .. } => "TooLarge",
            ProtocolError::InvalidLength(_) => "InvalidLength",
            ProtocolError::InvalidData { .. } => "InvalidData",
            ProtocolError::Malformed(_) => "Malformed",
            ProtocolError::Refused { .. } => "Refused",
            _ => "other",
        })
    }
}

fn check_consumed(what: &str, n: usize, len: usize) {
    assert!(n > 0, "{what} consumed nothing");
    assert!(n <= len, "{what} consumed {n} of {len}");
}

/// The accept value for the key in a client's upgrade request.
fn expected_accept(request: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(request).ok()?;
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))?
        .trim();
    Some(lubdub_ws::handshake::accept_key(key))
}

/// Where the head at the front of `stream` ends (after its blank line,
/// as the decoder finds it), or the end of the stream.
fn head_end(stream: &[u8]) -> usize {
    (0..stream.len())
        .find(|&i| {
            stream[i] == b'\n'
                && ((i >= 1 && stream[i - 1] == b'\n')
                    || (i >= 2 && stream[i - 1] == b'\r' && stream[i - 2] == b'\n'))
        })
        .map_or(stream.len(), |i| i + 1)
}

/// `stream` with every [`ACCEPT_MARKER`] in its head replaced by `accept`
/// (frames after the head are left alone).
fn with_accept(stream: &[u8], accept: &str) -> Vec<u8> {
    let end = head_end(stream);
    let mut out = replace(&stream[..end], ACCEPT_MARKER, accept.as_bytes());
    out.extend_from_slice(&stream[end..]);
    out
}

/// `bytes` with every `from` replaced by `to`.
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(i) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Feeds `stream` to a fresh session of `template` in `cuts`-sized chunks
/// (cycled), as a connection would: `start` first (a client writes its
/// request), the slice handed to `decode` starts at the first unconsumed
/// byte and only grows until something is consumed, a handshake is
/// accepted as the default hook does (the server answers a plain HTTP
/// request with 426 then), and decoding stops at the first error or close
/// request. Checks `0 < consumed <= len` for every result, that a
/// handshake consumed exactly a head (up to its blank line), and that
/// pings and pongs carry at most 125 bytes.
pub fn feed_ws(template: &Ws, stream: &[u8], cuts: &[usize]) -> WsFed {
    let mut session = Session::new(template.clone());
    let handshake = session.start() == Start::Handshake;
    let accept = match (template.role(), handshake) {
        (Role::Client, true) => match expected_accept(&session.wire.out) {
            Some(accept) => Some(accept),
            None => panic!("the client wrote no key: {:?}", session.wire.out),
        },
        _ => None,
    };
    let stream = match &accept {
        Some(accept) => with_accept(stream, accept),
        None => stream.to_vec(),
    };
    let mut fed = WsFed {
        msgs: Vec::new(),
        handshakes: Vec::new(),
        consumed: 0,
        error: None,
        wire_out: Vec::new(),
        close: None,
        accept,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    'feed: while pos < stream.len() {
        let n = cuts.get(i % cuts.len().max(1)).copied().unwrap_or(1).max(1);
        i += 1;
        let end = pos.saturating_add(n).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
        loop {
            let used = match session.decode(&buf) {
                Ok(Decoded::Message { msg, consumed }) => {
                    check_consumed("message", consumed, buf.len());
                    if msg.is_control() {
                        assert!(msg.as_bytes().len() <= 125, "a control payload over 125");
                    }
                    fed.msgs.push(msg);
                    consumed
                }
                Ok(Decoded::Consumed(n)) => {
                    check_consumed("Decoded::Consumed", n, buf.len());
                    n
                }
                Ok(Decoded::Handshake { data, consumed }) => {
                    check_consumed("handshake", consumed, buf.len());
                    let head = &buf[..consumed];
                    assert!(
                        head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"),
                        "a handshake that does not end at a blank line"
                    );
                    assert!(fed.handshakes.is_empty(), "a second handshake");
                    session.accept(&data);
                    fed.handshakes.push(data);
                    consumed
                }
                Ok(Decoded::Incomplete) => break,
                Err(error) => {
                    fed.error = Some(error);
                    break 'feed;
                }
            };
            fed.consumed += used;
            buf.drain(..used);
            if session.wire.close.is_some() {
                break 'feed;
            }
        }
    }
    fed.wire_out = session.wire.take();
    fed.close = session.wire.close.take();
    fed
}

/// What a client's handshake says, but for the accept value.
type ResponseKey = (u16, String, Vec<(String, Vec<u8>)>, Option<String>, bool);

/// A client's handshake with its accept value put back as the marker.
fn response_key(h: &Handshake, accept: &str) -> Option<ResponseKey> {
    let res = h.response()?;
    let back = |b: &[u8]| replace(b, accept.as_bytes(), ACCEPT_MARKER);
    let headers = res
        .headers()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(&back(n.as_bytes())).into_owned(),
                back(v),
            )
        })
        .collect();
    Some((
        res.status(),
        String::from_utf8_lossy(&back(res.reason().as_bytes())).into_owned(),
        headers,
        res.subprotocol().map(str::to_owned),
        res.deflate(),
    ))
}

/// Feeds the stream chunked and whole and asserts both agree on the
/// messages, the handshake, the outcome (error kind, close request) and
/// the wire output (its length for the client role, whose masks and key
/// are random); on the bytes consumed too when neither failed.
pub fn feed_ws_both(template: &Ws, stream: &[u8], cuts: &[usize]) -> WsFed {
    let chunked = feed_ws(template, stream, cuts);
    let whole = feed_ws(template, stream, &[usize::MAX]);
    assert_eq!(chunked.msgs, whole.msgs, "split changed the messages");
    if template.role() == Role::Server {
        assert_eq!(
            chunked.handshakes, whole.handshakes,
            "split changed the handshake"
        );
    } else {
        // Each run's client has its own random key, so its own accept value.
        let key = |f: &WsFed| -> Vec<_> {
            let accept = f.accept.as_deref().unwrap_or_default();
            f.handshakes
                .iter()
                .map(|h| response_key(h, accept))
                .collect()
        };
        assert_eq!(key(&chunked), key(&whole), "split changed the handshake");
    }
    assert_eq!(
        chunked.error_kind(),
        whole.error_kind(),
        "split changed the outcome: {:?} / {:?}",
        chunked.error,
        whole.error
    );
    assert_eq!(chunked.close, whole.close, "split changed the close");
    let status_line = |f: &WsFed| -> Vec<u8> {
        f.wire_out
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default()
            .to_vec()
    };
    if chunked.error_kind() == Some("TooLarge") {
        // A 431's body gives the size seen, which depends on the split.
        assert_eq!(
            status_line(&chunked),
            status_line(&whole),
            "split changed the answer"
        );
    } else if template.role() == Role::Server {
        assert_eq!(chunked.wire_out, whole.wire_out, "split changed the wire");
    } else {
        assert_eq!(chunked.wire_out.len(), whole.wire_out.len());
    }
    if chunked.error.is_none() && whole.error.is_none() && chunked.close.is_none() {
        assert_eq!(
            chunked.consumed, whole.consumed,
            "split changed what was used"
        );
    }
    chunked
}
