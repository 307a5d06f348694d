//! The sans-IO protocol trait: bytes in a buffer to messages, messages to bytes.
//!
//! A protocol never touches a socket. The worker reads bytes, hands the
//! unconsumed part of its read buffer to [`Protocol::decode`], and appends
//! whatever [`Protocol::encode`] writes to the connection's send buffer.
//! This is Workerman's `input`/`decode`/`encode` split and tokio-util's
//! `Decoder`/`Encoder`, in one trait.
//!
//! # The decode contract
//!
//! * Each connection decodes with its own clone of the protocol value, so a
//!   decoder may keep per-connection scan state in `&mut self` (for example
//!   how far it already searched for a delimiter).
//! * `src` always starts at the first byte not yet consumed and contains every
//!   unconsumed byte received so far; it only grows between calls until a
//!   message is returned.
//! * A decoder must enforce its maximum message size itself and return
//!   [`ProtocolError::TooLarge`] as soon as a message is known to exceed it
//!   (from a length header, or from scanning that many bytes without a
//!   delimiter). The worker never grows a read buffer beyond what the decoder
//!   has accepted plus one read.
//! * A decoder never panics, whatever the bytes.
//!
//! # Example: a protocol of single bytes
//!
//! ```
//! use lubdub_worker::protocol::{Decoded, Protocol, ProtocolError};
//!
//! #[derive(Clone, Default)]
//! struct OneByte;
//!
//! impl Protocol for OneByte {
//!     const SCHEME: &'static str = "byte";
//!     type Message = u8;
//!     type Outgoing = u8;
//!
//!     fn decode(&mut self, src: &[u8]) -> Result<Decoded<u8>, ProtocolError> {
//!         Ok(match src.first() {
//!             Some(&b) => Decoded::Message { msg: b, consumed: 1 },
//!             None => Decoded::Incomplete,
//!         })
//!     }
//!
//!     fn encode(&self, msg: &u8, dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
//!         dst.push(*msg);
//!         Ok(())
//!     }
//! }
//!
//! let mut p = OneByte;
//! assert_eq!(p.decode(b"ab").unwrap(), Decoded::Message { msg: b'a', consumed: 1 });
//! ```

use std::fmt;

/// Result of one [`Protocol::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<M> {
    /// The buffer does not yet hold a whole message: read more bytes.
    Incomplete,
    /// One message, made of the first `consumed` bytes of the buffer.
    Message {
        /// The decoded message.
        msg: M,
        /// How many bytes of the buffer the message used (header included).
        consumed: usize,
    },
}

/// A wire protocol: turns bytes into messages and messages into bytes.
///
/// See the [module documentation](self) for the decode contract.
pub trait Protocol: Clone + Send + Sync + 'static {
    /// The scheme that selects this protocol in a listen address
    /// (`text` in `text://0.0.0.0:1234`).
    const SCHEME: &'static str;
    /// What `decode` produces and `on_message` receives.
    type Message: Send + 'static;
    /// What `Connection::send` accepts (for example `str` for text lines).
    type Outgoing: ?Sized;

    /// Decodes at most one message from the front of `src`.
    fn decode(&mut self, src: &[u8]) -> Result<Decoded<Self::Message>, ProtocolError>;

    /// Appends the encoding of `msg` to `dst`.
    ///
    /// On error nothing must have been appended (the worker also truncates
    /// `dst` back to its previous length to be safe).
    fn encode(&self, msg: &Self::Outgoing, dst: &mut Vec<u8>) -> Result<(), ProtocolError>;
}

/// Why a protocol refused bytes or a message.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A message is (or would be) larger than the configured maximum.
    TooLarge {
        /// The size seen or announced, in bytes (a lower bound when the
        /// message is still incomplete).
        len: u64,
        /// The configured maximum, in bytes.
        max: u64,
    },
    /// A length header holds a value no valid message can have
    /// (below the header size, or negative).
    InvalidLength(i128),
    /// A text message is not valid UTF-8.
    InvalidUtf8 {
        /// Byte offset of the first invalid byte within the message.
        valid_up_to: usize,
    },
    /// Any other malformed input, with a short description.
    Malformed(&'static str),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::TooLarge { len, max } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the maximum of {max} bytes"
                )
            }
            ProtocolError::InvalidLength(n) => write!(f, "invalid length header value {n}"),
            ProtocolError::InvalidUtf8 { valid_up_to } => {
                write!(f, "invalid UTF-8 after {valid_up_to} valid bytes")
            }
            ProtocolError::Malformed(what) => write!(f, "malformed input: {what}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Workerman's `tcp://`: no framing, every read is one message.
///
/// The message is the chunk of bytes one read returned (at most 64 KiB);
/// `send` writes bytes unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Protocol for Raw {
    const SCHEME: &'static str = "tcp";
    type Message = Vec<u8>;
    type Outgoing = [u8];

    fn decode(&mut self, src: &[u8]) -> Result<Decoded<Vec<u8>>, ProtocolError> {
        if src.is_empty() {
            return Ok(Decoded::Incomplete);
        }
        Ok(Decoded::Message {
            msg: src.to_vec(),
            consumed: src.len(),
        })
    }

    fn encode(&self, msg: &[u8], dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        dst.extend_from_slice(msg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_takes_everything() {
        let mut r = Raw;
        assert_eq!(r.decode(b"").unwrap(), Decoded::Incomplete);
        assert_eq!(
            r.decode(b"abc").unwrap(),
            Decoded::Message {
                msg: b"abc".to_vec(),
                consumed: 3
            }
        );
        let mut out = Vec::new();
        r.encode(b"xy", &mut out).unwrap();
        assert_eq!(out, b"xy");
    }

    #[test]
    fn errors_display() {
        let e = ProtocolError::TooLarge { len: 11, max: 10 };
        assert!(e.to_string().contains("11"));
        assert!(ProtocolError::InvalidLength(-1).to_string().contains("-1"));
    }
}
