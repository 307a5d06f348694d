//! Helpers shared by the fuzz targets: split an input into chunk sizes and a
//! stream, and feed the stream to a decoder per the decode contract.

use lubdub_protocol::{Decoded, Protocol, ProtocolError, Session, SessionClose};

pub mod ws;

/// Splits fuzz input into chunk sizes and the byte stream.
///
/// The first byte `n` gives `n % 8` chunk-size bytes that follow (each
/// `1..=64`); the rest is the stream. With no chunk sizes, the stream is
/// fed one byte at a time.
pub fn split_input(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (vec![1], &[]);
    };
    let n = usize::from(n % 8).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let mut cuts: Vec<usize> = sizes.iter().map(|&b| usize::from(b % 64) + 1).collect();
    if cuts.is_empty() {
        cuts.push(1);
    }
    (cuts, stream)
}

/// What feeding a stream produced.
#[derive(Debug)]
pub struct Fed<M> {
    /// Messages in order, with the bytes each consumed.
    pub msgs: Vec<(M, usize)>,
    /// Bytes used up without a message ([`Decoded::Consumed`]) or by a
    /// handshake ([`Decoded::Handshake`]).
    pub skipped: usize,
    /// The error that ended decoding, if any.
    pub error: Option<ProtocolError>,
    /// Bytes the protocol wrote on the wire on its own.
    pub wire_out: Vec<u8>,
    /// The close the protocol asked for, if any (decoding stops there).
    pub close: Option<SessionClose>,
}

impl<M> Fed<M> {
    /// The error's variant name, for comparing outcomes (the `len` of a
    /// `TooLarge` may legitimately depend on how much had arrived).
    pub fn error_kind(&self) -> Option<&'static str> {
        self.error.as_ref().map(|e| match e {
            ProtocolError::TooLarge { .. } => "TooLarge",
            ProtocolError::InvalidLength(_) => "InvalidLength",
            ProtocolError::InvalidData { .. } => "InvalidData",
            ProtocolError::Malformed(_) => "Malformed",
            ProtocolError::Refused { .. } => "Refused",
            _ => "other",
        })
    }

    /// Total bytes consumed: by the messages and by everything else.
    pub fn consumed(&self) -> usize {
        self.msgs.iter().map(|(_, c)| c).sum::<usize>() + self.skipped
    }
}

/// Checks `0 < n <= len` for a result that consumed `n` of `len` bytes.
fn check_consumed(what: &str, n: usize, len: usize) {
    assert!(n > 0, "{what} consumed nothing");
    assert!(n <= len, "{what} consumed {n} of {len}");
}

/// Feeds `stream` to a fresh session of `proto` in `cuts`-sized chunks
/// (cycled): the slice given to `decode` starts at the first unconsumed
/// byte and only grows until something is consumed. Asserts
/// `0 < consumed <= len` for every message, [`Decoded::Consumed`] and
/// handshake. Stops at the first error, or once the protocol asks to close
/// (the connection decodes nothing after that).
pub fn feed<P: Protocol>(proto: &P, stream: &[u8], cuts: &[usize]) -> Fed<P::Message> {
    let mut session = Session::new(proto.clone());
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = Fed {
        msgs: Vec::new(),
        skipped: 0,
        error: None,
        wire_out: Vec::new(),
        close: None,
    };
    let mut pos = 0;
    let mut i = 0;
    'feed: while pos < stream.len() {
        let n = cuts.get(i % cuts.len().max(1)).copied().unwrap_or(1).max(1);
        i += 1;
        let end = pos.saturating_add(n).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
        loop {
            let used = match session.decode(&buf) {
                Ok(Decoded::Message { msg, consumed }) => {
                    check_consumed("message", consumed, buf.len());
                    fed.msgs.push((msg, consumed));
                    consumed
                }
                Ok(Decoded::Consumed(n)) => {
                    check_consumed("Decoded::Consumed", n, buf.len());
                    fed.skipped += n;
                    n
                }
                Ok(Decoded::Handshake { consumed, .. }) => {
                    check_consumed("handshake", consumed, buf.len());
                    fed.skipped += consumed;
                    consumed
                }
                Ok(Decoded::Incomplete) => break,
                Err(error) => {
                    fed.error = Some(error);
                    break 'feed;
                }
            };
            buf.drain(..used);
            if session.wire.close.is_some() {
                break 'feed;
            }
        }
    }
    fed.wire_out = session.wire.take();
    fed.close = session.wire.close.take();
    fed
}

/// Feeds the stream twice, chunked and whole (with a fresh session each
/// time), and asserts both give the same messages and the same error kind.
///
/// For protocols without a voice of their own (text lines, length-prefixed
/// frames): also asserts that decoding wrote nothing on the wire and asked
/// for no close.
pub fn feed_both<P: Protocol>(proto: &P, stream: &[u8], cuts: &[usize]) -> Fed<P::Message>
where
    P::Message: PartialEq + std::fmt::Debug,
{
    let chunked = feed(proto, stream, cuts);
    let whole = feed(proto, stream, &[usize::MAX]);
    for fed in [&chunked, &whole] {
        assert!(
            fed.wire_out.is_empty(),
            "the protocol wrote {:02X?}",
            fed.wire_out
        );
        assert!(fed.close.is_none(), "the protocol asked to close");
    }
    assert_eq!(chunked.msgs, whole.msgs, "split changed the messages");
    assert_eq!(
        chunked.skipped, whole.skipped,
        "split changed the skipped bytes"
    );
    assert_eq!(
        chunked.error_kind(),
        whole.error_kind(),
        "split changed the outcome"
    );
    chunked
}
