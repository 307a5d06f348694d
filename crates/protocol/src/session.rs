//! [`Session`]: one connection's protocol session driven by hand, without a
//! connection (tests, fuzz targets, tools, a load generator).

use crate::{Closing, Decoded, Decoder, Encoder, Protocol, ProtocolError, Reject, Start, WireBuf};

/// What [`Session::decode_all`] found: the items in order and the bytes
/// they used.
pub type DecodedAll<P> = (
    Vec<Decoded<<P as Protocol>::Message, <P as Protocol>::Handshake>>,
    usize,
);

/// A protocol value with one connection's [`Decoder`] and [`Encoder`] and a
/// [`WireBuf`] catching what the protocol says on its own: what a lubdub
/// connection does with a protocol, minus the socket.
///
/// ```
/// use lubdub_protocol::{Decoded, Raw, Session};
///
/// let mut s = Session::new(Raw);
/// assert_eq!(s.decode(b"hi").unwrap(), Decoded::Message { msg: b"hi".to_vec(), consumed: 2 });
/// assert_eq!(s.encode(b"yo").unwrap(), b"yo");
/// ```
pub struct Session<P: Protocol> {
    /// The configuration.
    pub protocol: P,
    /// This session's decoding state.
    pub decoder: P::Decoder,
    /// This session's encoding state.
    pub encoder: P::Encoder,
    /// What the protocol wrote on its own and the close it asked for.
    pub wire: WireBuf,
}

impl<P: Protocol> Session<P> {
    /// A fresh session of `protocol`.
    pub fn new(protocol: P) -> Self {
        Session {
            decoder: protocol.decoder(),
            encoder: protocol.encoder(),
            protocol,
            wire: WireBuf::default(),
        }
    }

    /// [`Decoder::start`].
    pub fn start(&mut self) -> Start {
        self.decoder.start(&self.protocol, &mut self.wire.wire())
    }

    /// [`Decoder::decode`] of `src`.
    pub fn decode(
        &mut self,
        src: &[u8],
    ) -> Result<Decoded<P::Message, P::Handshake>, ProtocolError> {
        self.decoder
            .decode(&self.protocol, src, &mut self.wire.wire())
    }

    /// Decodes items from the front of `src` until it holds nothing whole;
    /// returns the messages and handshakes in order, and the bytes consumed.
    /// Stops at the first error, or once the protocol asked to close.
    pub fn decode_all(&mut self, src: &[u8]) -> Result<DecodedAll<P>, ProtocolError> {
        let mut pos = 0;
        let mut items = Vec::new();
        while self.wire.close.is_none() {
            match self.decode(&src[pos..])? {
                Decoded::Incomplete => break,
                Decoded::Consumed(n) => pos += n,
                item
                @ (Decoded::Message { consumed, .. } | Decoded::Handshake { consumed, .. }) => {
                    pos += consumed;
                    items.push(item);
                }
            }
        }
        Ok((items, pos))
    }

    /// [`Decoder::accept`] of `handshake`.
    pub fn accept(&mut self, handshake: &P::Handshake) {
        self.decoder.accept(
            &self.protocol,
            handshake,
            &mut self.encoder,
            &mut self.wire.wire(),
        );
    }

    /// [`Decoder::reject`] of `handshake` with `reject`.
    pub fn reject(&mut self, handshake: &P::Handshake, reject: &Reject) {
        self.decoder
            .reject(&self.protocol, handshake, reject, &mut self.wire.wire());
    }

    /// [`Encoder::encode`] of `msg` into a new buffer.
    pub fn encode(&mut self, msg: &P::Outgoing) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::new();
        self.encode_into(msg, &mut out)?;
        Ok(out)
    }

    /// [`Encoder::encode`] of `msg`, appended to `dst`.
    pub fn encode_into(
        &mut self,
        msg: &P::Outgoing,
        dst: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        self.encoder.encode(&self.protocol, msg, dst)
    }

    /// [`Encoder::encode_close`] for `closing`, into a new buffer.
    pub fn encode_close(&mut self, closing: &Closing<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        self.encoder.encode_close(&self.protocol, closing, &mut out);
        out
    }

    /// What the session holds outside a read buffer: the decoder's and the
    /// encoder's [`held_bytes`](Decoder::held_bytes).
    pub fn held_bytes(&self) -> usize {
        self.decoder.held_bytes() + self.encoder.held_bytes()
    }
}
