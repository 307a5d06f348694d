//! Decoding frames into messages once the handshake is done.
//!
//! * A whole unfragmented, uncompressed data frame that is all in the
//!   buffer is copied once into a `Vec` of exactly its size, unmasked in
//!   place and returned (text: checked as UTF-8 in the same pass).
//! * Otherwise a data frame's payload is consumed as it arrives: each piece
//!   is appended to the message being assembled (or inflated into it) and
//!   `Decoded::Consumed` returned, so the connection's read buffer does not
//!   grow with the frame, and invalid UTF-8 fails as soon as it arrives.
//!   The message is kept in segments ([`MessageBuf`]) that hold what
//!   arrived, whatever a frame header announces; `held_bytes` reports
//!   them (the last one's capacity), so the worker's memory budget and
//!   message limit see the whole message. A compressed message's input is consumed a few KiB of output
//!   at a time ([`INFLATE_PER_DECODE`]).
//! * A violation, or the peer's close frame, drops the message being
//!   assembled and the inflater at once: a connection that is closing
//!   holds none of it.
//! * Control frames (at most 125 bytes) are handled when complete, between
//!   fragments too: a ping is answered with a pong on the wire, a close
//!   asks the connection to close and ends decoding.

use lubdub_protocol::{Decoded, ProtocolError, SessionClose, Wire};

use crate::deflate::Inflater;
use crate::frame::{
    apply_mask, is_control, parse_close, parse_header, write_frame, Header, HeaderRules, OP_BINARY,
    OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
};
use crate::reassembly::MessageBuf;
use crate::utf8::into_string;
use crate::{Handshake, Message};

/// A data frame whose payload is still arriving.
#[derive(Debug)]
struct PartialFrame {
    mask: Option<[u8; 4]>,
    /// Payload bytes consumed so far (the masking key's phase).
    done: u64,
    remaining: u64,
    fin: bool,
}

/// A message being assembled from frames.
#[derive(Debug)]
struct PartialMessage {
    text: bool,
    compressed: bool,
    /// What arrived (inflated), in segments.
    buf: MessageBuf,
}

/// About how many bytes one `decode` call inflates at most: a few KiB of
/// compressed input can inflate to megabytes, so a compressed message's
/// input is consumed in steps that each grow the session by about this
/// much, and the worker sees the growth (`held_bytes`) between them (it
/// stops a poll of the connection once its session grew by 256 KiB, as
/// much as a loop reads in a pass).
pub(crate) const INFLATE_PER_DECODE: usize = 4 * 1024;

/// Frame decoding state of one connection.
pub(crate) struct FrameDecoder {
    rules: HeaderRules,
    /// Client role: pongs are masked.
    client: bool,
    max_message: usize,
    deliver_pings: bool,
    /// permessage-deflate's inflater, boxed: connections without deflate
    /// should not carry it.
    inflater: Option<Box<Inflater>>,
    frame: Option<PartialFrame>,
    /// Boxed: only a message that arrives in pieces needs it, and every
    /// connection carries the decoder.
    message: Option<Box<PartialMessage>>,
    closed: bool,
}

type Step = Result<Decoded<Message, Handshake>, ProtocolError>;

impl FrameDecoder {
    pub(crate) fn new(
        rules: HeaderRules,
        client: bool,
        max_message: usize,
        deliver_pings: bool,
        inflater: Option<Inflater>,
    ) -> Self {
        FrameDecoder {
            rules,
            client,
            max_message,
            deliver_pings,
            inflater: inflater.map(Box::new),
            frame: None,
            message: None,
            closed: false,
        }
    }

    /// Bytes held outside the connection's read buffer: the message being
    /// reassembled (its segments, the last one's capacity: never past the
    /// message limit), and the inflater (its zlib stream while a message
    /// is inflated, its history). The worker adds this to what its message
    /// limit sees.
    pub(crate) fn held_bytes(&self) -> usize {
        let message = self.message.as_ref().map_or(0, |m| m.buf.held());
        let inflater = self.inflater.as_ref().map_or(0, |i| i.held_bytes());
        message + inflater
    }

    pub(crate) fn decode(&mut self, src: &[u8], wire: &mut Wire<'_>) -> Step {
        let step = self.decode_frames(src, wire);
        if step.is_err() {
            // Nothing more is decoded: let go of what was held at once.
            self.closed = true;
            self.let_go();
        }
        step
    }

    /// Drops the message being assembled and the inflater.
    fn let_go(&mut self) {
        self.frame = None;
        self.message = None;
        self.inflater = None;
    }

    fn decode_frames(&mut self, src: &[u8], wire: &mut Wire<'_>) -> Step {
        if self.closed {
            // Nothing is decoded after a close frame.
            return Ok(match src.len() {
                0 => Decoded::Incomplete,
                n => Decoded::Consumed(n),
            });
        }
        if self.frame.is_some() {
            return self.continue_frame(src, 0);
        }
        let Some(header) = parse_header(src, &self.rules)? else {
            return Ok(Decoded::Incomplete);
        };
        if is_control(header.opcode) {
            return self.control(src, &header, wire);
        }
        self.start_data_frame(src, &header)
    }

    fn control(&mut self, src: &[u8], h: &Header, wire: &mut Wire<'_>) -> Step {
        // parse_header guarantees len <= 125.
        let total = h.header_len + h.len as usize;
        let Some(raw) = src.get(h.header_len..total) else {
            return Ok(Decoded::Incomplete);
        };
        let mut payload = raw.to_vec();
        if let Some(key) = h.mask {
            apply_mask(&mut payload, key, 0);
        }
        match h.opcode {
            OP_PING => {
                let mask = self.client.then(crate::mask::new_key);
                write_frame(wire.buffer(), true, false, OP_PONG, mask, &payload);
                if self.deliver_pings {
                    return Ok(Decoded::Message {
                        msg: Message::Ping(payload),
                        consumed: total,
                    });
                }
                Ok(Decoded::Consumed(total))
            }
            OP_PONG => Ok(Decoded::Message {
                msg: Message::Pong(payload),
                consumed: total,
            }),
            _ => {
                debug_assert_eq!(h.opcode, OP_CLOSE);
                let (code, reason) = parse_close(&payload)?;
                self.closed = true;
                // Nothing more is decoded: a message left unfinished goes.
                self.let_go();
                wire.close(SessionClose::by_peer(code, reason));
                Ok(Decoded::Consumed(total))
            }
        }
    }

    fn start_data_frame(&mut self, src: &[u8], h: &Header) -> Step {
        match (&self.message, h.opcode) {
            (None, OP_CONTINUATION) => {
                return Err(ProtocolError::Malformed(
                    "continuation frame without a message",
                ))
            }
            (Some(_), OP_TEXT | OP_BINARY) => {
                return Err(ProtocolError::Malformed(
                    "new data frame before the fragmented message ended",
                ))
            }
            _ => {}
        }
        let compressed = h.rsv1 || self.message.as_ref().is_some_and(|m| m.compressed);
        let so_far = self.message.as_ref().map_or(0, |m| m.buf.len()) as u64;
        // The inflated size is checked as it grows; the raw size now.
        if !compressed && so_far + h.len > self.max_message as u64 {
            return Err(ProtocolError::TooLarge {
                len: so_far + h.len,
                max: self.max_message as u64,
            });
        }
        let len = h.len as usize; // <= max_frame_size <= usize::MAX / 2
        let available = src.len() - h.header_len;
        if h.fin && h.opcode != OP_CONTINUATION && !compressed && available >= len {
            return self.whole_message(src, h);
        }
        if h.opcode != OP_CONTINUATION {
            // What has arrived, not what the header announces: the buffer
            // grows with the payload.
            let first = if compressed { 0 } else { available.min(len) };
            self.message = Some(Box::new(PartialMessage {
                text: h.opcode == OP_TEXT,
                compressed,
                buf: MessageBuf::new(h.opcode == OP_TEXT, first),
            }));
        }
        self.frame = Some(PartialFrame {
            mask: h.mask,
            done: 0,
            remaining: h.len,
            fin: h.fin,
        });
        self.continue_frame(&src[h.header_len..], h.header_len)
    }

    /// The fast path: one frame that is all in `src` and a whole message.
    fn whole_message(&mut self, src: &[u8], h: &Header) -> Step {
        let total = h.header_len + h.len as usize;
        let mut buf = src[h.header_len..total].to_vec();
        if let Some(key) = h.mask {
            apply_mask(&mut buf, key, 0);
        }
        let msg = if h.opcode == OP_TEXT {
            Message::Text(into_string(buf)?)
        } else {
            Message::Binary(buf)
        };
        Ok(Decoded::Message {
            msg,
            consumed: total,
        })
    }

    /// Consumes what `src` holds of the current frame's payload;
    /// `already` bytes (the header) were consumed by this call before it.
    fn continue_frame(&mut self, src: &[u8], already: usize) -> Step {
        let (Some(frame), Some(msg)) = (self.frame.as_mut(), self.message.as_mut()) else {
            return Err(ProtocolError::Malformed("frame state lost"));
        };
        let n = frame.remaining.min(src.len() as u64) as usize;
        if n == 0 && already == 0 {
            return Ok(Decoded::Incomplete);
        }
        let piece = &src[..n];
        let offset = (frame.done % 4) as usize;
        let n = if msg.compressed {
            let Some(inflater) = self.inflater.as_deref_mut() else {
                return Err(ProtocolError::Malformed(
                    "compressed message without deflate",
                ));
            };
            let mask = frame.mask.map(|key| (key, offset));
            inflater.inflate(
                piece,
                mask,
                &mut msg.buf,
                self.max_message,
                INFLATE_PER_DECODE,
            )?
        } else {
            // The message ends with this frame: its size is known.
            let end = if frame.fin {
                msg.buf.len() + frame.remaining as usize
            } else {
                self.max_message
            };
            let mask = frame.mask.map(|key| (key, offset));
            msg.buf.append(piece, mask, end.min(self.max_message))?;
            n
        };
        frame.done += n as u64;
        frame.remaining -= n as u64;
        let message_done = frame.remaining == 0 && frame.fin;
        if frame.remaining == 0 {
            self.frame = None;
        }
        if message_done && msg.compressed {
            if let Some(inflater) = self.inflater.as_deref_mut() {
                inflater.finish(&mut msg.buf, self.max_message)?;
            }
        }
        if message_done && msg.text {
            msg.buf.finish_utf8()?;
        }
        let consumed = already + n;
        if !message_done {
            return Ok(Decoded::Consumed(consumed));
        }
        let Some(done) = self.message.take() else {
            return Err(ProtocolError::Malformed("message state lost"));
        };
        let bytes = done.buf.into_vec();
        let msg = if done.text {
            // Already validated piece by piece; from_utf8 checks once more
            // rather than assuming it (no unsafe in this crate).
            Message::Text(into_string(bytes)?)
        } else {
            Message::Binary(bytes)
        };
        Ok(Decoded::Message { msg, consumed })
    }
}
