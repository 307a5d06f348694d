//! Workerman's `tcp://`: no framing.

use crate::{Decoded, Protocol, ProtocolError, Wire};

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
    type Encoder = ();
    type Handshake = ();

    fn encoder(&self) {}

    fn decode(
        &mut self,
        src: &[u8],
        _wire: &mut Wire<'_>,
    ) -> Result<Decoded<Vec<u8>>, ProtocolError> {
        if src.is_empty() {
            return Ok(Decoded::Incomplete);
        }
        Ok(Decoded::Message {
            msg: src.to_vec(),
            consumed: src.len(),
        })
    }

    fn encode(&self, _: &mut (), msg: &[u8], dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        dst.extend_from_slice(msg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WireBuf;

    #[test]
    fn raw_takes_everything_and_writes_nothing_of_its_own() {
        let mut wire = WireBuf::default();
        assert_eq!(wire.decode(&mut Raw, b"").unwrap(), Decoded::Incomplete);
        assert_eq!(
            wire.decode(&mut Raw, b"abc").unwrap(),
            Decoded::Message {
                msg: b"abc".to_vec(),
                consumed: 3
            }
        );
        assert!(wire.out.is_empty() && wire.close.is_none());
        let mut out = Vec::new();
        Raw.encode(&mut (), b"xy", &mut out).unwrap();
        assert_eq!(out, b"xy");
    }
}
