//! Workerman's `Frame` protocol.

use lubdub_protocol::{Codec, Decoded, ProtocolError};

use crate::length_field::{Endian, LengthField, DEFAULT_MAX_FRAME_LENGTH};

/// Workerman's `frame://`: a 4-byte big-endian unsigned total length that
/// counts the header itself, then the payload.
///
/// ```text
/// +-- total_length: u32 BE --+------ payload ------+
/// |       00 00 00 09        |    68 65 6C 6C 6F   |   "hello"
/// +--------------------------+---------------------+
/// ```
///
/// An empty payload is `00 00 00 04`. Unlike Workerman, a length below 4 is
/// [`ProtocolError::InvalidLength`] and a length above the maximum (default
/// 10 MiB, header included) is [`ProtocolError::TooLarge`], decided from the
/// header alone, before anything is allocated.
///
/// ```
/// use lubdub_frame::{Decoded, Frame, Codec};
///
/// let mut out = Vec::new();
/// Frame::new().encode(b"hello", &mut out).unwrap();
/// assert_eq!(out, b"\x00\x00\x00\x09hello");
/// assert_eq!(
///     Frame::new().decode(&mut (), &out).unwrap(),
///     Decoded::Message { msg: b"hello".to_vec(), consumed: 9 }
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    layout: LengthField,
}

impl Default for Frame {
    fn default() -> Self {
        Self::new()
    }
}

impl Frame {
    /// Size of the length header in bytes.
    pub const HEADER_LEN: usize = 4;

    /// A Frame codec with the default 10 MiB maximum.
    pub fn new() -> Self {
        Self::with_max_length(DEFAULT_MAX_FRAME_LENGTH)
    }

    /// A Frame codec accepting frames of at most `max` bytes, header included.
    pub fn with_max_length(max: usize) -> Self {
        Frame {
            layout: LengthField::preset(4, Endian::Big, false, -4, max),
        }
    }

    /// The largest frame accepted or written, header included.
    pub fn max_length(&self) -> usize {
        self.layout.max_frame_length()
    }

    /// Whether the fixed-layout fast path applies: a maximum a u32 length
    /// can reach and a whole header fits under (the general codec handles
    /// the odd configurations, with the same results).
    fn fixed_fast_path(&self, max: usize) -> bool {
        (Self::HEADER_LEN..=u32::MAX as usize).contains(&max)
    }

    /// The same layout as a general [`LengthField`] codec.
    pub fn layout(&self) -> &LengthField {
        &self.layout
    }
}

impl Codec for Frame {
    const SCHEME: &'static str = "frame";
    type Message = Vec<u8>;
    type Outgoing = [u8];
    type State = ();

    fn decode(&self, _: &mut (), src: &[u8]) -> Result<Decoded<Vec<u8>>, ProtocolError> {
        let max = self.max_length();
        if !self.fixed_fast_path(max) {
            return self.layout.decode_frame(src);
        }
        // The general codec's rules, specialised to a u32 BE total length.
        let Some(header) = src.first_chunk::<{ Self::HEADER_LEN }>() else {
            return Ok(Decoded::Incomplete);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len < Self::HEADER_LEN {
            return Err(ProtocolError::InvalidLength(len as i128));
        }
        if len > max {
            return Err(ProtocolError::TooLarge {
                len: len as u64,
                max: max as u64,
            });
        }
        match src.get(Self::HEADER_LEN..len) {
            Some(payload) => Ok(Decoded::Message {
                msg: payload.to_vec(),
                consumed: len,
            }),
            None => Ok(Decoded::Incomplete),
        }
    }

    fn encode(&self, msg: &[u8], dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let max = self.max_length();
        if !self.fixed_fast_path(max) {
            return self.layout.encode_parts(&[msg], dst);
        }
        let total = msg.len().saturating_add(Self::HEADER_LEN);
        if total > max {
            return Err(ProtocolError::TooLarge {
                len: total as u64,
                max: max as u64,
            });
        }
        dst.reserve(total);
        dst.extend_from_slice(&(total as u32).to_be_bytes());
        dst.extend_from_slice(msg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_agrees_with_the_general_codec() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for max in [0usize, 3, 4, 5, 64, 1 << 20, u32::MAX as usize, usize::MAX] {
            let frame = Frame::with_max_length(max);
            for _ in 0..2000 {
                let len = (next() % 12) as usize;
                let mut src: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if len >= 4 && next() % 2 == 0 {
                    // a plausible header most of the time
                    let total = (next() % 16) as u32;
                    src[..4].copy_from_slice(&total.to_be_bytes());
                }
                let fast = format!("{:?}", frame.clone().decode(&mut (), &src));
                let general = format!("{:?}", frame.layout().clone().decode(&mut (), &src));
                assert_eq!(fast, general, "max {max}, input {src:02x?}");
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let fast = format!("{:?}", frame.encode(&src, &mut a));
                let general = format!("{:?}", frame.layout().encode(&src, &mut b));
                assert_eq!((fast, a), (general, b), "encode, max {max}");
            }
        }
    }

    #[test]
    fn frame_is_the_builder_layout() {
        let b = LengthField::builder()
            .length_includes_header(true)
            .build()
            .unwrap();
        assert_eq!(Frame::new().layout(), &b);
        assert_eq!(Frame::with_max_length(7).max_length(), 7);
    }
}
