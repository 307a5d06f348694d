//! [`Codec`]: the simple case of a protocol, with its session for free.

use std::fmt;
use std::marker::PhantomData;

use crate::{Closing, Decoded, Decoder, Encoder, Protocol, ProtocolError, Wire};

/// A protocol without a handshake, without answers of its own on the wire
/// and without per-connection encoder state: a framing (lines, length
/// prefixes). Implementing it implements [`Protocol`], with a
/// [`CodecDecoder`] holding the codec's [`State`](Codec::State) and a
/// [`CodecEncoder`] holding nothing.
///
/// `decode` and `encode` take `&self`: the codec value is the configuration,
/// shared by every connection; what one connection must remember between
/// two reads (how far a delimiter search already went) is its `State`.
pub trait Codec: Clone + Send + Sync + 'static {
    /// The scheme that selects this codec in a listen address.
    const SCHEME: &'static str;
    /// The scheme that selects it over TLS, if it has one.
    const TLS_SCHEME: Option<&'static str> = None;
    /// What decoding produces and `on_message` receives.
    type Message: Send + 'static;
    /// What `Connection::send` accepts.
    type Outgoing: ?Sized;
    /// What one connection's decoding remembers between calls (`()` for
    /// nothing): it starts as `Default::default()`.
    type State: Default + Send + 'static;

    /// Decodes at most one message from the front of `src` (the contract of
    /// [`Decoder::decode`]; a codec has no handshake, so it never returns
    /// [`Decoded::Handshake`]).
    fn decode(
        &self,
        state: &mut Self::State,
        src: &[u8],
    ) -> Result<Decoded<Self::Message>, ProtocolError>;

    /// Appends the encoding of `msg` to `dst`; on error, nothing.
    fn encode(&self, msg: &Self::Outgoing, dst: &mut Vec<u8>) -> Result<(), ProtocolError>;

    /// The connection is closing gracefully for `closing`: append a last
    /// message to `dst` if the codec has one for it (a configured line
    /// telling a client to reconnect on [`Closing::Restart`]). The default
    /// writes nothing.
    fn goodbye(&self, closing: &Closing<'_>, dst: &mut Vec<u8>) {
        let _ = (closing, dst);
    }
}

/// The decoder every [`Codec`] gets: the codec's per-connection state.
pub struct CodecDecoder<C: Codec>(C::State);

impl<C: Codec> fmt::Debug for CodecDecoder<C>
where
    C::State: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CodecDecoder").field(&self.0).finish()
    }
}

/// The encoder every [`Codec`] gets: nothing per connection.
pub struct CodecEncoder<C>(PhantomData<fn() -> C>);

impl<C> fmt::Debug for CodecEncoder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodecEncoder")
    }
}

impl<C: Codec> Protocol for C {
    const SCHEME: &'static str = <C as Codec>::SCHEME;
    const TLS_SCHEME: Option<&'static str> = <C as Codec>::TLS_SCHEME;
    type Message = <C as Codec>::Message;
    type Outgoing = <C as Codec>::Outgoing;
    type Handshake = ();
    type Decoder = CodecDecoder<C>;
    type Encoder = CodecEncoder<C>;

    fn decoder(&self) -> CodecDecoder<C> {
        CodecDecoder(C::State::default())
    }

    fn encoder(&self) -> CodecEncoder<C> {
        CodecEncoder(PhantomData)
    }
}

impl<C: Codec> Decoder<C> for CodecDecoder<C> {
    #[inline]
    fn decode(
        &mut self,
        codec: &C,
        src: &[u8],
        _wire: &mut Wire<'_>,
    ) -> Result<Decoded<C::Message>, ProtocolError> {
        Codec::decode(codec, &mut self.0, src)
    }
}

impl<C: Codec> Encoder<C> for CodecEncoder<C> {
    #[inline]
    fn encode(
        &mut self,
        codec: &C,
        msg: &<C as Codec>::Outgoing,
        dst: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        Codec::encode(codec, msg, dst)
    }

    fn encode_close(&mut self, codec: &C, closing: &Closing<'_>, dst: &mut Vec<u8>) {
        codec.goodbye(closing, dst);
    }
}
