//! Helpers shared by the fuzz targets: split an input into chunk sizes and a
//! stream, and feed the stream to a decoder per the decode contract.

use lubdub_frame::{Decoded, Protocol, ProtocolError};

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
    /// The error that ended decoding, if any.
    pub error: Option<ProtocolError>,
}

impl<M> Fed<M> {
    /// The error's variant name, for comparing outcomes (the `len` of a
    /// `TooLarge` may legitimately depend on how much had arrived).
    pub fn error_kind(&self) -> Option<&'static str> {
        self.error.as_ref().map(|e| match e {
            ProtocolError::TooLarge { .. } => "TooLarge",
            ProtocolError::InvalidLength(_) => "InvalidLength",
            ProtocolError::InvalidUtf8 { .. } => "InvalidUtf8",
            ProtocolError::Malformed(_) => "Malformed",
            _ => "other",
        })
    }

    /// Total bytes consumed by the messages.
    pub fn consumed(&self) -> usize {
        self.msgs.iter().map(|(_, c)| c).sum()
    }
}

/// Feeds `stream` in `cuts`-sized chunks (cycled): the slice given to
/// `decode` starts at the first unconsumed byte and only grows until a
/// message is returned. Asserts `0 < consumed <= len` for every message.
pub fn feed<P: Protocol>(proto: &mut P, stream: &[u8], cuts: &[usize]) -> Fed<P::Message> {
    let mut buf: Vec<u8> = Vec::new();
    let mut msgs = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let n = cuts.get(i % cuts.len().max(1)).copied().unwrap_or(1).max(1);
        i += 1;
        let end = pos.saturating_add(n).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
        loop {
            match proto.decode(&buf) {
                Ok(Decoded::Message { msg, consumed }) => {
                    assert!(consumed > 0, "message consumed nothing");
                    assert!(
                        consumed <= buf.len(),
                        "consumed {consumed} of {}",
                        buf.len()
                    );
                    buf.drain(..consumed);
                    msgs.push((msg, consumed));
                }
                Ok(Decoded::Incomplete) => break,
                Err(error) => {
                    return Fed {
                        msgs,
                        error: Some(error),
                    }
                }
            }
        }
    }
    Fed { msgs, error: None }
}

/// Feeds the stream twice, chunked and whole (with a fresh clone each
/// time), and asserts both give the same messages and the same error kind.
pub fn feed_both<P: Protocol>(proto: &P, stream: &[u8], cuts: &[usize]) -> Fed<P::Message>
where
    P::Message: PartialEq + std::fmt::Debug,
{
    let chunked = feed(&mut proto.clone(), stream, cuts);
    let whole = feed(&mut proto.clone(), stream, &[usize::MAX]);
    assert_eq!(chunked.msgs, whole.msgs, "split changed the messages");
    assert_eq!(
        chunked.error_kind(),
        whole.error_kind(),
        "split changed the outcome"
    );
    chunked
}
