//! Incremental UTF-8 validation of a text message as its bytes arrive.
//!
//! A text message is checked each time bytes are appended to it (a frame,
//! part of a frame, a chunk of inflated output), so invalid bytes fail the
//! connection with 1007 at once, not when the message ends. The message
//! buffer holds everything received, so an incomplete code point at the
//! end (at most 3 bytes) simply stays unchecked until the next bytes
//! arrive; only the bytes after the last complete code point are
//! re-examined.

use lubdub_protocol::ProtocolError;

/// How far a growing message buffer is known to be valid UTF-8.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Utf8Validator {
    valid_up_to: usize,
}

impl Utf8Validator {
    /// How many bytes of the buffer are known to be valid: the rest (at
    /// most 3 bytes) is the start of a code point not complete yet.
    pub(crate) fn valid_up_to(&self) -> usize {
        self.valid_up_to
    }

    /// Checks the bytes of `buf` not yet checked. With `complete` the
    /// message ends here and a truncated code point is an error too.
    pub(crate) fn feed(&mut self, buf: &[u8], complete: bool) -> Result<(), ProtocolError> {
        let new = buf.get(self.valid_up_to..).unwrap_or_default();
        match std::str::from_utf8(new) {
            Ok(_) => {
                self.valid_up_to = buf.len();
                Ok(())
            }
            Err(e) => {
                let at = self.valid_up_to + e.valid_up_to();
                // `error_len() == None`: the bytes end inside a code point
                // that may still be completed (an impossible prefix such as
                // F5 or ED A0 is reported as an error right away).
                if e.error_len().is_none() && !complete {
                    self.valid_up_to = at;
                    Ok(())
                } else {
                    Err(invalid_utf8(at))
                }
            }
        }
    }
}

/// The error for invalid UTF-8 at byte `offset` of a message.
pub(crate) fn invalid_utf8(offset: usize) -> ProtocolError {
    ProtocolError::InvalidData {
        expected: "UTF-8",
        offset,
    }
}

/// `bytes` as a `String`, or the 1007 error.
pub(crate) fn into_string(bytes: Vec<u8>) -> Result<String, ProtocolError> {
    String::from_utf8(bytes).map_err(|e| invalid_utf8(e.utf8_error().valid_up_to()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(e: ProtocolError) -> usize {
        match e {
            ProtocolError::InvalidData { offset, .. } => offset,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_code_point_split_across_pieces_is_valid() {
        // "κόσμε" is 11 bytes of 2- and 3-byte sequences: split everywhere.
        let text = "κόσμε€𝄞".as_bytes();
        for cut in 0..=text.len() {
            let mut v = Utf8Validator::default();
            let mut buf = text[..cut].to_vec();
            v.feed(&buf, false).unwrap();
            buf.extend_from_slice(&text[cut..]);
            v.feed(&buf, true).unwrap();
        }
    }

    #[test]
    fn an_impossible_byte_fails_before_the_message_ends() {
        let mut v = Utf8Validator::default();
        v.feed(b"ok ", false).unwrap();
        assert_eq!(offset(v.feed(b"ok \xF5", false).unwrap_err()), 3);
        // A surrogate prefix (ED A0) can never be completed.
        let mut v = Utf8Validator::default();
        assert_eq!(offset(v.feed(b"ab\xED\xA0", false).unwrap_err()), 2);
    }

    #[test]
    fn a_truncated_code_point_fails_at_the_end_only() {
        let mut v = Utf8Validator::default();
        v.feed(b"x\xE2\x82", false).unwrap();
        assert_eq!(offset(v.feed(b"x\xE2\x82", true).unwrap_err()), 1);
    }
}
