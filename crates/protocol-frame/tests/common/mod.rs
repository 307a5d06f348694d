//! Shared test helpers.
#![allow(dead_code)]

use lubdub_frame::{Codec, Decoded, ProtocolError};

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

/// `proto.decode(src)` from a fresh decoding state (these codecs keep none).
pub fn decode<P: Codec>(proto: &mut P, src: &[u8]) -> Result<Decoded<P::Message>, ProtocolError> {
    proto.decode(&mut P::State::default(), src)
}

/// Feeds `stream` to `proto` the way the worker does: chunk sizes come from
/// `cuts` (cycled; 0 counts as 1), the slice handed to `decode` starts at
/// the first unconsumed byte and only grows until a message is returned.
pub fn feed<P: Codec>(proto: &mut P, stream: &[u8], cuts: &[usize]) -> Fed<P::Message> {
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
pub fn encode_all<P: Codec>(proto: &P, msgs: &[&P::Outgoing]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        proto.encode(m, &mut out).expect("encode");
    }
    out
}
