//! lubdub's sans-IO protocol trait: bytes in a buffer to messages, messages
//! to bytes, and everything a protocol may say on the wire by itself.
//!
//! A protocol never touches a socket. The connection reads bytes, hands the
//! unconsumed part of its read buffer to [`Protocol::decode`], and appends
//! whatever [`Protocol::encode`] writes to its send queue. This is
//! Workerman's `input`/`decode`/`encode` split and tokio-util's
//! `Decoder`/`Encoder`, in one trait, plus what a protocol like WebSocket
//! needs on top:
//!
//! * **bytes of its own on the wire**: `decode` gets a [`Wire`] to write
//!   answers (a handshake response, a pong, a close echo) that leave ahead
//!   of the application's queued messages;
//! * **input that is not a message**: [`Decoded::Consumed`] (a control frame);
//! * **closing**: [`Wire::close`] asks for the connection to close once the
//!   bytes written so far are flushed, with a [`SessionClose`] that reaches
//!   `on_close`; [`Protocol::encode_close`] writes a goodbye when the
//!   connection is closed for any other reason;
//! * **a handshake phase**: [`Protocol::start`] says whether a handshake
//!   comes first; [`Decoded::Handshake`] ends it with data that a hook can
//!   inspect, then [`Protocol::accept`] or [`Protocol::reject`] answers;
//! * **per-connection encoder state**: [`Protocol::Encoder`] (compression
//!   contexts, negotiated options), kept with the connection's send queue.
//!
//! This crate depends on `std` alone, so protocol crates, their fuzz targets
//! and their tests build without lubdub's runtime.
//!
//! # The decode contract
//!
//! * Each connection decodes with its own clone of the protocol value, so a
//!   decoder may keep per-connection state in `&mut self` (how far it
//!   already searched for a delimiter, a handshake phase, an inflater).
//! * `src` always starts at the first byte not yet consumed and contains
//!   every unconsumed byte received so far; it only grows between calls
//!   until something is consumed.
//! * Every result but [`Decoded::Incomplete`] consumes at least one byte and
//!   at most `src.len()`.
//! * A decoder enforces its maximum message size itself and returns
//!   [`ProtocolError::TooLarge`] as soon as a message is known to exceed it
//!   (from a length header, or from scanning that many bytes without a
//!   delimiter). The connection never grows a read buffer beyond what the
//!   decoder has accepted plus one read.
//! * A decoder never panics, whatever the bytes.
//!
//! # Example: a protocol of single bytes
//!
//! ```
//! use lubdub_protocol::{Decoded, Protocol, ProtocolError, Wire, WireBuf};
//!
//! #[derive(Clone, Default)]
//! struct OneByte;
//!
//! impl Protocol for OneByte {
//!     const SCHEME: &'static str = "byte";
//!     type Message = u8;
//!     type Outgoing = u8;
//!     type Encoder = ();
//!     type Handshake = ();
//!
//!     fn encoder(&self) {}
//!
//!     fn decode(&mut self, src: &[u8], _wire: &mut Wire<'_>) -> Result<Decoded<u8>, ProtocolError> {
//!         Ok(match src.first() {
//!             Some(&b) => Decoded::Message { msg: b, consumed: 1 },
//!             None => Decoded::Incomplete,
//!         })
//!     }
//!
//!     fn encode(&self, _: &mut (), msg: &u8, dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
//!         dst.push(*msg);
//!         Ok(())
//!     }
//! }
//!
//! let mut wire = WireBuf::default();
//! let decoded = wire.decode(&mut OneByte, b"ab").unwrap();
//! assert_eq!(decoded, Decoded::Message { msg: b'a', consumed: 1 });
//! ```

mod error;
mod raw;
mod wire;

pub use error::ProtocolError;
pub use raw::Raw;
pub use wire::{Closing, Reject, SessionClose, Start, Wire, WireBuf};

/// The result of one [`Protocol::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<M, H = ()> {
    /// The buffer does not yet hold anything whole: read more bytes.
    Incomplete,
    /// One message, made of the first `consumed` bytes of the buffer.
    Message {
        /// The decoded message.
        msg: M,
        /// How many bytes of the buffer the message used (header included).
        consumed: usize,
    },
    /// The first `n` bytes were used up without producing a message: a
    /// control frame (answered through the [`Wire`], if at all), padding.
    Consumed(usize),
    /// The handshake finished with the first `consumed` bytes. `data` (the
    /// WebSocket upgrade request, say) goes to the connection's handshake
    /// hook, which accepts ([`Protocol::accept`]) or refuses
    /// ([`Protocol::reject`]) before `on_connect` runs.
    Handshake {
        /// What the handshake carried, for the hook to inspect.
        data: H,
        /// How many bytes of the buffer the handshake used.
        consumed: usize,
    },
}

/// A wire protocol: turns bytes into messages and messages into bytes.
///
/// See the [crate documentation](crate) for the decode contract. A protocol
/// without a handshake or encoder state sets `type Encoder = ()` and
/// `type Handshake = ()` and implements `encoder`, `decode` and `encode`;
/// every other method has a default that does nothing.
pub trait Protocol: Clone + Send + Sync + 'static {
    /// The scheme that selects this protocol in a listen address
    /// (`text` in `text://0.0.0.0:1234`).
    const SCHEME: &'static str;
    /// The scheme that selects this protocol over TLS, if it has one
    /// (`wss` for WebSocket). Any protocol can run over TLS by configuring
    /// it; this only names it in addresses.
    const TLS_SCHEME: Option<&'static str> = None;
    /// What `decode` produces and `on_message` receives.
    type Message: Send + 'static;
    /// What `Connection::send` accepts (for example `str` for text lines).
    type Outgoing: ?Sized;
    /// Per-connection encoding state (`()` when encoding needs none). It
    /// lives with the connection's send queue, under that queue's own lock,
    /// so any thread that sends encodes with it.
    type Encoder: Send + 'static;
    /// What a finished handshake carries for the connection's handshake
    /// hook (`()` for protocols without a handshake).
    type Handshake: Send + 'static;

    /// A fresh encoder state for a new connection (or a client's new session).
    fn encoder(&self) -> Self::Encoder;

    /// This protocol as used by a client connecting to `host` (the host and
    /// port as written in the address, `example.com:8080`) for
    /// `path_and_query` (`/chat?room=1`, or `/` when the address has no
    /// path). WebSocket switches to its client role and requests that path;
    /// the default is the protocol itself.
    fn for_client(&self, host: &str, path_and_query: &str) -> Result<Self, ProtocolError> {
        let _ = (host, path_and_query);
        Ok(self.clone())
    }

    /// The transport is up and nothing has been read yet. A protocol with
    /// a handshake returns [`Start::Handshake`]; one that speaks first (a
    /// client's upgrade request) writes its bytes to `wire` here.
    fn start(&mut self, wire: &mut Wire<'_>) -> Start {
        let _ = wire;
        Start::Established
    }

    /// Decodes at most one item from the front of `src`. Bytes written to
    /// `wire` go out before any queued application message.
    fn decode(
        &mut self,
        src: &[u8],
        wire: &mut Wire<'_>,
    ) -> Result<Decoded<Self::Message, Self::Handshake>, ProtocolError>;

    /// The handshake hook accepted `handshake`: write the acceptance (a
    /// `101 Switching Protocols`) and set up the encoder for what was
    /// negotiated. Runs before `on_connect`.
    fn accept(
        &mut self,
        handshake: &Self::Handshake,
        encoder: &mut Self::Encoder,
        wire: &mut Wire<'_>,
    ) {
        let _ = (handshake, encoder, wire);
    }

    /// The handshake hook refused `handshake`: write the refusal (an HTTP
    /// error response). The connection then closes after flushing it,
    /// and neither `on_connect` nor `on_close` runs.
    fn reject(&mut self, handshake: &Self::Handshake, reject: &Reject, wire: &mut Wire<'_>) {
        let _ = (handshake, reject, wire);
    }

    /// Appends the encoding of `msg` to `dst`.
    ///
    /// On error nothing must have been appended (the connection also
    /// truncates `dst` back to its previous length to be safe).
    fn encode(
        &self,
        encoder: &mut Self::Encoder,
        msg: &Self::Outgoing,
        dst: &mut Vec<u8>,
    ) -> Result<(), ProtocolError>;

    /// The connection is closing gracefully for `closing`: append the
    /// protocol's goodbye (a WebSocket close frame) after what is queued.
    /// Called at most once per connection; the default writes nothing.
    fn encode_close(&self, encoder: &mut Self::Encoder, closing: &Closing<'_>, dst: &mut Vec<u8>) {
        let _ = (encoder, closing, dst);
    }
}
