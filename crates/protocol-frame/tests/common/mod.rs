//! Shared test helpers.
#![allow(dead_code)]

use lubdub_frame::{Decoded, Protocol, ProtocolError, WireBuf};

/// What feeding a stream to a decoder produced.
#[derive(Debug)]
pub struct Fed<M> {
    /// Messages in order.
    pub msgs: Vec<M>,
    /// The error that stopped decoding, if any.
    pub error: Option<ProtocolError>,
    /// Bytes received but not consumed when the stream ended.
    pub leftover: usize,
}

/// `proto.decode(src)` with a fresh wire, checking that the protocol wrote
/// nothing on it and asked for no close (these protocols never do).
pub fn decode<P: Protocol>(
    proto: &mut P,
    src: &[u8],
) -> Result<Decoded<P::Message, P::Handshake>, ProtocolError> {
    let mut wire = WireBuf::default();
    let result = wire.decode(proto, src);
    assert!(wire.out.is_empty(), "the protocol wrote {:02X?}", wire.out);
    assert!(wire.close.is_none(), "the protocol asked to close");
    result
}

/// Feeds `stream` to `proto` the way the worker does: chunk sizes come from
/// `cuts` (cycled; 0 counts as 1), the slice handed to `decode` starts at
/// the first unconsumed byte and only grows until a message is returned.
pub fn feed<P: Protocol>(proto: &mut P, stream: &[u8], cuts: &[usize]) -> Fed<P::Message> {
    let mut buf: Vec<u8> = Vec::new();
    let mut msgs = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let n = cuts
            .get(i % cuts.len().max(1))
            .copied()
            .unwrap_or(usize::MAX)
            .max(1);
        i += 1;
        let end = pos.saturating_add(n).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
        loop {
            match decode(proto, &buf) {
                Ok(Decoded::Message { msg, consumed }) => {
                    assert!(consumed > 0, "a message must consume bytes");
                    assert!(consumed <= buf.len(), "consumed {consumed} > {}", buf.len());
                    buf.drain(..consumed);
                    msgs.push(msg);
                }
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Consumed(_) | Decoded::Handshake { .. }) => {
                    panic!("a length-prefixed protocol only yields messages")
                }
                Err(e) => {
                    return Fed {
                        msgs,
                        error: Some(e),
                        leftover: buf.len(),
                    }
                }
            }
        }
    }
    Fed {
        msgs,
        error: None,
        leftover: buf.len(),
    }
}

/// Encodes every message back to back.
pub fn encode_all<P: Protocol>(proto: &P, msgs: &[&P::Outgoing]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = proto.encoder();
    for m in msgs {
        proto.encode(&mut encoder, m, &mut out).expect("encode");
    }
    out
}
