//! Workerman's `Frame` protocol.

use lubdub_worker::protocol::{Decoded, Protocol, ProtocolError};

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
/// use lubdub_frame::{Decoded, Frame, Protocol};
///
/// let mut out = Vec::new();
/// Frame::new().encode(b"hello", &mut out).unwrap();
/// assert_eq!(out, b"\x00\x00\x00\x09hello");
/// assert_eq!(
///     Frame::new().decode(&out).unwrap(),
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

    /// The same layout as a general [`LengthField`] codec.
    pub fn layout(&self) -> &LengthField {
        &self.layout
    }
}

impl Protocol for Frame {
    const SCHEME: &'static str = "frame";
    type Message = Vec<u8>;
    type Outgoing = [u8];

    fn decode(&mut self, src: &[u8]) -> Result<Decoded<Vec<u8>>, ProtocolError> {
        self.layout.decode(src)
    }

    fn encode(&self, msg: &[u8], dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        self.layout.encode(msg, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
