//! Workerman's `tcp://`: no framing.

use crate::{Codec, Decoded, ProtocolError};

/// Workerman's `tcp://`: no framing, every read is one message.
///
/// The message is the chunk of bytes one read returned (at most 64 KiB);
/// `send` writes bytes unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Codec for Raw {
    const SCHEME: &'static str = "tcp";
    type Message = Vec<u8>;
    type Outgoing = [u8];
    type State = ();

    fn decode(&self, _: &mut (), src: &[u8]) -> Result<Decoded<Vec<u8>>, ProtocolError> {
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
    use crate::Session;

    #[test]
    fn raw_takes_everything_and_writes_nothing_of_its_own() {
        let mut s = Session::new(Raw);
        assert_eq!(s.decode(b"").unwrap(), Decoded::Incomplete);
        assert_eq!(
            s.decode(b"abc").unwrap(),
            Decoded::Message {
                msg: b"abc".to_vec(),
                consumed: 3
            }
        );
        assert!(s.wire.out.is_empty() && s.wire.close.is_none());
        assert_eq!(s.encode(b"xy").unwrap(), b"xy");
    }
}
