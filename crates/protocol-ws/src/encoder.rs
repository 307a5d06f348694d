//! [`WsEncoder`]: per-connection encoding state, and the close frame that
//! ends a connection.
//!
//! The close code of every [`Closing`] is in [`WsEncoder`]'s documentation.

use lubdub_protocol::{Closing, ProtocolError};

use crate::deflate::{Deflater, Negotiated};
use crate::frame::{
    apply_mask, close_payload, header_bytes, is_valid_close_code, write_frame, CLOSE_NO_STATUS,
    MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT,
};
use crate::Message;

/// Per-connection encoding state of a [`Ws`](crate::Ws) connection: the
/// role (client frames are masked), the negotiated compressor, and whether
/// the handshake is done and the close frame written.
///
/// [`Encoder::encode_close`](lubdub_protocol::Encoder::encode_close)
/// writes, for each reason to close:
///
/// | [`Closing`] | close frame written |
/// |---|---|
/// | `Violation(TooLarge)` | 1009 Message Too Big |
/// | `Violation(InvalidData)` | 1007 Invalid Frame Payload Data (bad UTF-8, bad DEFLATE data) |
/// | `Violation(_)` | 1002 Protocol Error |
/// | `Session(c)`, `c.by_peer` | the peer's code echoed; an empty payload for 1005 |
/// | `Session(c)`, local | `c.code` |
/// | `Local { code, reason }` | `code` (1000 if none; an empty payload for 1005) |
/// | `GoingAway` | 1001 Going Away |
/// | `InternalError` | 1011 Internal Error |
/// | `Timeout` | 1001 Going Away, reason "timeout" |
///
/// At most one close frame per connection, and none before the handshake
/// was accepted (an HTTP response was written instead, or nothing at all).
/// A code that may not be sent (1004, 1006, 1015, out of range) becomes 1000.
pub struct WsEncoder {
    /// Client role: mask every frame with a fresh key from a cryptographic
    /// source.
    client: bool,
    /// The compressor's settings and history, with permessage-deflate.
    /// Boxed: the encoder lives in every connection, idle or not, deflate
    /// or not.
    deflater: Option<Box<Deflater>>,
    established: bool,
    close_sent: bool,
}

impl std::fmt::Debug for WsEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsEncoder")
            .field("masks", &self.client)
            .field("compresses", &self.deflater.is_some())
            .field("established", &self.established)
            .field("close_sent", &self.close_sent)
            .finish()
    }
}

impl WsEncoder {
    pub(crate) fn new(client: bool) -> Self {
        WsEncoder {
            client,
            deflater: None,
            established: false,
            close_sent: false,
        }
    }

    /// The handshake finished: frames may be written, compressed as agreed.
    pub(crate) fn establish(&mut self, deflate: Option<&Negotiated>) {
        self.established = true;
        self.deflater = deflate.and_then(Negotiated::deflater).map(Box::new);
    }

    /// Whether the handshake was accepted.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// Whether the close frame was written.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Whether messages are compressed (permessage-deflate negotiated).
    pub fn compresses(&self) -> bool {
        self.deflater.is_some()
    }

    /// Bytes held outside the send queue: the compression history (the
    /// zlib stream is borrowed for each message and never kept).
    pub(crate) fn held_bytes(&self) -> usize {
        self.deflater.as_ref().map_or(0, |d| d.held_bytes())
    }

    fn next_mask(&self) -> Option<[u8; 4]> {
        self.client.then(crate::mask::new_key)
    }

    /// Appends `msg` as one frame.
    pub(crate) fn encode(&mut self, msg: &Message, dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        if self.close_sent {
            return Err(ProtocolError::Malformed("message after the close frame"));
        }
        let (opcode, payload) = match msg {
            Message::Text(s) => (OP_TEXT, s.as_bytes()),
            Message::Binary(b) => (OP_BINARY, b.as_slice()),
            Message::Ping(p) => (OP_PING, p.as_slice()),
            Message::Pong(p) => (OP_PONG, p.as_slice()),
        };
        let mask = self.next_mask();
        if opcode >= OP_PING {
            if payload.len() > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::TooLarge {
                    len: payload.len() as u64,
                    max: MAX_CONTROL_PAYLOAD as u64,
                });
            }
            write_frame(dst, true, false, opcode, mask, payload);
            return Ok(());
        }
        match self.deflater.as_deref_mut() {
            Some(deflater) if deflater.wants(payload.len()) => {
                // Compressed straight into `dst` behind room for the
                // longest header, then moved up behind the real one.
                let start = dst.len();
                dst.resize(start + MAX_HEADER_LEN, 0);
                if let Err(e) = deflater.compress(payload, dst) {
                    dst.truncate(start);
                    return Err(e);
                }
                let len = dst.len() - start - MAX_HEADER_LEN;
                let (head, n) = header_bytes(true, true, opcode, mask, len);
                dst.copy_within(start + MAX_HEADER_LEN.., start + n);
                dst.truncate(start + n + len);
                dst[start..start + n].copy_from_slice(&head[..n]);
                if let Some(key) = mask {
                    apply_mask(&mut dst[start + n..], key, 0);
                }
            }
            _ => write_frame(dst, true, false, opcode, mask, payload),
        }
        Ok(())
    }

    /// Appends the close frame for `closing`, once, if established.
    pub(crate) fn encode_close(&mut self, closing: &Closing<'_>, dst: &mut Vec<u8>) {
        if !self.established || self.close_sent {
            return;
        }
        let (code, reason): (u16, &str) = match closing {
            Closing::Violation(err) => (violation_code(err), violation_reason(err)),
            Closing::Session(c) => (c.code, if c.by_peer { "" } else { &c.reason }),
            Closing::Local { code, reason } => (code.unwrap_or(1000), reason),
            Closing::GoingAway => (1001, ""),
            Closing::InternalError => (1011, ""),
            Closing::Timeout => (1001, "timeout"),
            Closing::Restart => (1012, "service restart"),
            _ => (1000, ""),
        };
        let payload = if code == CLOSE_NO_STATUS {
            close_payload(None, "")
        } else if is_valid_close_code(code) {
            close_payload(Some(code), reason)
        } else {
            log::warn!("websocket: close code {code} may not be sent; sending 1000");
            close_payload(Some(1000), reason)
        };
        let mask = self.next_mask();
        write_frame(dst, true, false, OP_CLOSE, mask, &payload);
        self.close_sent = true;
    }
}

/// The close code for a protocol violation.
pub fn violation_code(err: &ProtocolError) -> u16 {
    match err {
        ProtocolError::TooLarge { .. } => 1009,
        ProtocolError::InvalidData { .. } => 1007,
        _ => 1002,
    }
}

fn violation_reason(err: &ProtocolError) -> &'static str {
    match err {
        ProtocolError::TooLarge { .. } => "message too big",
        ProtocolError::InvalidData { expected, .. } if *expected == "UTF-8" => "invalid UTF-8",
        ProtocolError::InvalidData { .. } => "invalid compressed data",
        ProtocolError::Malformed(what) => what,
        _ => "protocol error",
    }
}
