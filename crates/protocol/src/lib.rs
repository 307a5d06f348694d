//! lubdub's sans-IO protocol traits: bytes in a buffer to messages, messages
//! to bytes, and everything a protocol may say on the wire by itself.
//!
//! A protocol never touches a socket. It comes in two parts:
//!
//! * the **protocol value** ([`Protocol`]) is configuration: limits,
//!   negotiation offers, a page handler. One value serves every connection
//!   of a worker and is shared, never mutated;
//! * each connection gets its own **session**: a [`Decoder`] (owned by the
//!   connection's event loop) and an [`Encoder`] (kept with the connection's
//!   send queue, under its lock, so any thread can send). A session holds
//!   only what is per connection (a handshake's progress, a message being
//!   reassembled, a compression window) and reads the configuration from
//!   the protocol value it is handed on every call.
//!
//! The connection reads bytes, hands the unconsumed part of its read buffer
//! to [`Decoder::decode`], and appends whatever [`Encoder::encode`] writes to
//! its send queue. This is Workerman's `input`/`decode`/`encode` split and
//! tokio-util's `Decoder`/`Encoder`, plus what a protocol like WebSocket
//! needs on top:
//!
//! * **bytes of its own on the wire**: `decode` gets a [`Wire`] to write
//!   answers (a handshake response, a pong, a close echo) that leave ahead
//!   of the application's queued messages;
//! * **input that is not a message**: [`Decoded::Consumed`] (a control frame);
//! * **closing**: [`Wire::close`] asks for the connection to close once the
//!   bytes written so far are flushed, with a [`SessionClose`] that reaches
//!   `on_close`; [`Encoder::encode_close`] writes a goodbye when the
//!   connection is closed for any other reason;
//! * **a handshake phase**: [`Decoder::start`] says whether a handshake
//!   comes first; [`Decoded::Handshake`] ends it with data that a hook can
//!   inspect, then [`Decoder::accept`] or [`Decoder::reject`] answers;
//! * **memory it holds**: [`Decoder::held_bytes`] and [`Encoder::held_bytes`]
//!   report what a session keeps outside the connection's read buffer (a
//!   message being reassembled, a deflate window), so the worker's memory
//!   budget and its per-connection message limit count it.
//!
//! A codec without a handshake and without per-connection encoder state
//! implements the smaller [`Codec`] trait instead and gets its session for
//! free.
//!
//! This crate depends on `std` alone, so protocol crates, their fuzz targets
//! and their tests build without lubdub's runtime.
//!
//! # The decode contract
//!
//! * `src` always starts at the first byte not yet consumed and contains
//!   every unconsumed byte received so far; it only grows between calls
//!   until something is consumed.
//! * Every result but [`Decoded::Incomplete`] consumes at least one byte and
//!   at most `src.len()`.
//! * A decoder enforces its maximum message size itself and returns
//!   [`ProtocolError::TooLarge`] as soon as a message is known to exceed it
//!   (from a length header, or from scanning that many bytes without a
//!   delimiter, or from the pieces it reassembled so far). The connection
//!   never grows a read buffer beyond what the decoder has accepted plus one
//!   read.
//! * A decoder never panics, whatever the bytes.
//!
//! # Example: a codec of single bytes
//!
//! ```
//! use lubdub_protocol::{Codec, Decoded, ProtocolError, Session};
//!
//! #[derive(Clone, Default)]
//! struct OneByte;
//!
//! impl Codec for OneByte {
//!     const SCHEME: &'static str = "byte";
//!     type Message = u8;
//!     type Outgoing = u8;
//!     type State = ();
//!
//!     fn decode(&self, _: &mut (), src: &[u8]) -> Result<Decoded<u8>, ProtocolError> {
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
//! let mut session = Session::new(OneByte);
//! assert_eq!(session.decode(b"ab").unwrap(), Decoded::Message { msg: b'a', consumed: 1 });
//! assert_eq!(session.encode(&b'z').unwrap(), b"z");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod error;
mod raw;
mod session;
mod wire;

pub use codec::{Codec, CodecDecoder, CodecEncoder};
pub use error::ProtocolError;
pub use raw::Raw;
pub use session::{DecodedAll, Session};
pub use wire::{Closing, Reject, SessionClose, Start, Wire, WireBuf};

/// The result of one [`Decoder::decode`] call.
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
    /// control frame (answered through the [`Wire`], if at all), padding, a
    /// piece of a fragmented message the decoder keeps.
    Consumed(usize),
    /// The handshake finished with the first `consumed` bytes. `data` (the
    /// WebSocket upgrade request, say) goes to the connection's handshake
    /// hook, which accepts ([`Decoder::accept`]) or refuses
    /// ([`Decoder::reject`]) before `on_connect` runs.
    Handshake {
        /// What the handshake carried, for the hook to inspect.
        data: H,
        /// How many bytes of the buffer the handshake used.
        consumed: usize,
    },
}

/// A wire protocol: the configuration shared by every connection, and the
/// factory of each connection's [`Decoder`] and [`Encoder`].
///
/// See the [crate documentation](crate) for the decode contract. A protocol
/// without a handshake and without per-connection encoder state implements
/// [`Codec`] instead, which implements this trait for it.
pub trait Protocol: Clone + Send + Sync + 'static {
    /// The scheme that selects this protocol in a listen address
    /// (`text` in `text://0.0.0.0:1234`).
    const SCHEME: &'static str;
    /// The scheme that selects this protocol over TLS, if it has one
    /// (`wss` for WebSocket). Any protocol can run over TLS by configuring
    /// it; this only names it in addresses.
    const TLS_SCHEME: Option<&'static str> = None;
    /// What decoding produces and `on_message` receives.
    type Message: Send + 'static;
    /// What `Connection::send` accepts (for example `str` for text lines).
    type Outgoing: ?Sized;
    /// What a finished handshake carries for the connection's handshake
    /// hook (`()` for protocols without a handshake).
    type Handshake: Send + 'static;
    /// One connection's decoding state, owned by its event loop.
    type Decoder: Decoder<Self>;
    /// One connection's encoding state (`Connection::send` encodes with it
    /// from any thread, under the connection's own lock).
    type Encoder: Encoder<Self>;

    /// A fresh decoder for a new connection (or a client's new session).
    fn decoder(&self) -> Self::Decoder;

    /// A fresh encoder for a new connection (or a client's new session).
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
}

/// One connection's decoding side of a [`Protocol`]: bytes in, messages out,
/// and the protocol's own answers on the [`Wire`].
///
/// Every method is handed the protocol value (the configuration); the
/// decoder keeps only per-connection state.
pub trait Decoder<P: Protocol>: Send + 'static {
    /// The transport is up and nothing has been read yet. A protocol with
    /// a handshake returns [`Start::Handshake`]; one that speaks first (a
    /// client's upgrade request) writes its bytes to `wire` here.
    fn start(&mut self, protocol: &P, wire: &mut Wire<'_>) -> Start {
        let _ = (protocol, wire);
        Start::Established
    }

    /// Decodes at most one item from the front of `src`. Bytes written to
    /// `wire` go out before any queued application message.
    fn decode(
        &mut self,
        protocol: &P,
        src: &[u8],
        wire: &mut Wire<'_>,
    ) -> Result<Decoded<P::Message, P::Handshake>, ProtocolError>;

    /// The handshake hook accepted `handshake`: write the acceptance (a
    /// `101 Switching Protocols`) and set up this session's encoder for
    /// what was negotiated. Runs before `on_connect`.
    fn accept(
        &mut self,
        protocol: &P,
        handshake: &P::Handshake,
        encoder: &mut P::Encoder,
        wire: &mut Wire<'_>,
    ) {
        let _ = (protocol, handshake, encoder, wire);
    }

    /// The handshake hook refused `handshake`: write the refusal (an HTTP
    /// error response). The connection then closes after flushing it,
    /// and neither `on_connect` nor `on_close` runs.
    fn reject(
        &mut self,
        protocol: &P,
        handshake: &P::Handshake,
        reject: &Reject,
        wire: &mut Wire<'_>,
    ) {
        let _ = (protocol, handshake, reject, wire);
    }

    /// Bytes this decoder holds outside the connection's read buffer: a
    /// message being reassembled from fragments, an inflater's window. The
    /// worker counts them against its memory budget and adds them to what
    /// the connection's message limit sees. `0` by default.
    fn held_bytes(&self) -> usize {
        0
    }
}

/// One connection's encoding side of a [`Protocol`]: messages to bytes, and
/// the goodbye.
pub trait Encoder<P: Protocol>: Send + 'static {
    /// Appends the encoding of `msg` to `dst`.
    ///
    /// On error nothing must have been appended (the connection also
    /// truncates `dst` back to its previous length to be safe).
    fn encode(
        &mut self,
        protocol: &P,
        msg: &P::Outgoing,
        dst: &mut Vec<u8>,
    ) -> Result<(), ProtocolError>;

    /// The connection is closing gracefully for `closing`: append the
    /// protocol's goodbye (a WebSocket close frame) after what is queued.
    /// Called at most once per session; the default writes nothing.
    fn encode_close(&mut self, protocol: &P, closing: &Closing<'_>, dst: &mut Vec<u8>) {
        let _ = (protocol, closing, dst);
    }

    /// Bytes this encoder holds (a compressor's window), counted like
    /// [`Decoder::held_bytes`]. `0` by default.
    fn held_bytes(&self) -> usize {
        0
    }

    /// Whether what was encoded ends the session: the connection then
    /// closes gracefully once it is flushed, and takes no more sends (an
    /// HTTP response to `Connection: close`). Asked after each successful
    /// [`encode`](Self::encode); `false` by default.
    #[inline]
    fn close_after(&self) -> bool {
        false
    }
}
