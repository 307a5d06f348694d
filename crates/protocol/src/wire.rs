//! What a protocol may say and ask for on its own: [`Wire`] and the types
//! around the handshake and the close.

use std::fmt;

use crate::ProtocolError;

/// Whether a connection starts with a handshake; returned by
/// [`Decoder::start`](crate::Decoder::start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// No handshake: the connection is established at once (`on_connect`
    /// runs before the first byte is read).
    Established,
    /// A handshake comes first: `on_connect` waits for
    /// [`Decoded::Handshake`](crate::Decoded::Handshake) and the hook's approval. Application messages
    /// queued meanwhile are held back until then.
    Handshake,
}

/// The protocol's own end of a session, asked for with [`Wire::close`]: a
/// WebSocket close frame received (`by_peer`), a refused handshake. It
/// reaches `on_close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClose {
    /// The protocol's close code (WebSocket: 1000 for a normal closure).
    pub code: u16,
    /// The reason that came with the code (may be empty).
    pub reason: String,
    /// Whether the peer started the close (its close frame came first).
    pub by_peer: bool,
}

impl SessionClose {
    /// The peer ended the session with `code` and `reason`.
    pub fn by_peer(code: u16, reason: impl Into<String>) -> Self {
        SessionClose {
            code,
            reason: reason.into(),
            by_peer: true,
        }
    }

    /// This side's protocol ends the session with `code` and `reason`.
    pub fn local(code: u16, reason: impl Into<String>) -> Self {
        SessionClose {
            code,
            reason: reason.into(),
            by_peer: false,
        }
    }
}

impl fmt::Display for SessionClose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = if self.by_peer { "peer" } else { "local" };
        if self.reason.is_empty() {
            write!(f, "{who} close {}", self.code)
        } else {
            write!(f, "{who} close {}: {}", self.code, self.reason)
        }
    }
}

/// Why a connection is closing, as [`Encoder::encode_close`](crate::Encoder::encode_close) sees it, to
/// pick its goodbye (a WebSocket close code).
#[derive(Debug)]
#[non_exhaustive]
pub enum Closing<'a> {
    /// The application closed the connection, with a protocol close code
    /// and reason if it gave them (`Connection::close_session`).
    Local {
        /// The code the application gave, if any.
        code: Option<u16>,
        /// The reason the application gave (may be empty).
        reason: &'a str,
    },
    /// The protocol asked to close through [`Wire::close`] (for a close
    /// the peer started, the goodbye is the echo).
    Session(&'a SessionClose),
    /// The peer violated the protocol.
    Violation(&'a ProtocolError),
    /// The server is stopping.
    GoingAway,
    /// The server is handing its clients to a new process (a reload): the
    /// goodbye asks the peer to reconnect (WebSocket close 1012, "service
    /// restart").
    Restart,
    /// Something on this side failed (a callback panicked).
    InternalError,
    /// The peer is presumed gone (a heartbeat or first-message timeout):
    /// the goodbye is written but nothing waits for it.
    Timeout,
}

/// A refusal from a connection's handshake hook, in HTTP's terms (the
/// WebSocket upgrade is an HTTP request): a status, headers and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The response status (`403`, say).
    pub status: u16,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// The response body.
    pub body: Vec<u8>,
}

impl Reject {
    /// A refusal with `status`, no extra header and an empty body.
    pub fn new(status: u16) -> Self {
        Reject {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Sets the response body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A protocol's own voice on the connection, lent to [`Decoder::decode`],
/// [`Decoder::start`], [`Decoder::accept`] and [`Decoder::reject`].
///
/// [`Decoder::decode`]: crate::Decoder::decode
/// [`Decoder::start`]: crate::Decoder::start
/// [`Decoder::accept`]: crate::Decoder::accept
/// [`Decoder::reject`]: crate::Decoder::reject
///
/// Bytes written here leave before any application message queued after
/// them. [`close`](Self::close) asks for the connection to close once
/// everything written so far has been flushed.
pub struct Wire<'a> {
    out: &'a mut Vec<u8>,
    close: &'a mut Option<SessionClose>,
}

impl<'a> Wire<'a> {
    /// A wire writing to `out` and recording a close request in `close`
    /// (for a connection, or [`WireBuf`] in tests).
    pub fn new(out: &'a mut Vec<u8>, close: &'a mut Option<SessionClose>) -> Self {
        Wire { out, close }
    }

    /// Queues `bytes` to go back to the peer as they are.
    pub fn write(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// The buffer of queued bytes, to encode into directly.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Asks for the connection to close once the bytes written so far are
    /// flushed; `close` reaches `on_close`. The first request wins. The
    /// connection decodes nothing more after it.
    pub fn close(&mut self, close: SessionClose) {
        if self.close.is_none() {
            *self.close = Some(close);
        }
    }

    /// The close requested so far, if any.
    pub fn close_requested(&self) -> Option<&SessionClose> {
        self.close.as_ref()
    }
}

/// An owned [`Wire`] for tests and tools that drive a protocol without a
/// connection: what the protocol wrote, and the close it asked for.
#[derive(Debug, Default)]
pub struct WireBuf {
    /// Bytes the protocol wrote on its own.
    pub out: Vec<u8>,
    /// The close the protocol asked for, if any.
    pub close: Option<SessionClose>,
}

impl WireBuf {
    /// A [`Wire`] into this buffer.
    pub fn wire(&mut self) -> Wire<'_> {
        Wire::new(&mut self.out, &mut self.close)
    }

    /// Takes the bytes written so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_close_request_wins() {
        let mut buf = WireBuf::default();
        let mut wire = buf.wire();
        wire.write(b"bye");
        wire.close(SessionClose::by_peer(1000, "done"));
        wire.close(SessionClose::local(1002, "later"));
        assert_eq!(wire.close_requested().map(|c| c.code), Some(1000));
        assert_eq!(buf.take(), b"bye");
        assert_eq!(
            buf.close.as_ref().unwrap().to_string(),
            "peer close 1000: done"
        );
    }

    #[test]
    fn reject_builds_a_response_description() {
        let r = Reject::new(400)
            .header("Content-Type", "text/plain")
            .body("name required");
        assert_eq!(r.status, 400);
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.body, b"name required");
    }
}
