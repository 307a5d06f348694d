//! Why a protocol refused bytes or a message.

use std::fmt;

/// Why a protocol refused bytes or a message. Small and general: a
/// protocol-specific error goes in [`ProtocolError::Other`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A message is (or would be) larger than the configured maximum.
    TooLarge {
        /// The size seen or announced, in bytes (a lower bound when the
        /// message is still incomplete).
        len: u64,
        /// The configured maximum, in bytes.
        max: u64,
    },
    /// A length header holds a value no valid message can have
    /// (below the header size, or negative).
    InvalidLength(i128),
    /// The bytes are well framed but not valid for what they claim to be:
    /// a text message that is not UTF-8, say.
    InvalidData {
        /// What the bytes should have been (`"UTF-8"`).
        expected: &'static str,
        /// Byte offset of the first invalid byte within the message.
        offset: usize,
    },
    /// Any other malformed input, with a short description.
    Malformed(&'static str),
    /// The peer refused the handshake (a client's upgrade answered with an
    /// HTTP error status, say).
    Refused {
        /// The status the peer answered with.
        status: u16,
        /// The reason it gave, if any.
        reason: String,
    },
    /// A protocol-specific error.
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::TooLarge { len, max } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the maximum of {max} bytes"
                )
            }
            ProtocolError::InvalidLength(n) => write!(f, "invalid length header value {n}"),
            ProtocolError::InvalidData { expected, offset } => {
                write!(f, "invalid {expected} after {offset} valid bytes")
            }
            ProtocolError::Malformed(what) => write!(f, "malformed input: {what}"),
            ProtocolError::Refused { status, reason } if reason.is_empty() => {
                write!(f, "handshake refused with status {status}")
            }
            ProtocolError::Refused { status, reason } => {
                write!(f, "handshake refused with status {status}: {reason}")
            }
            ProtocolError::Other(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ProtocolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProtocolError::Other(e) => Some(&**e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_their_figures() {
        let e = ProtocolError::TooLarge { len: 11, max: 10 };
        assert!(e.to_string().contains("11"));
        assert!(ProtocolError::InvalidLength(-1).to_string().contains("-1"));
        let utf8 = ProtocolError::InvalidData {
            expected: "UTF-8",
            offset: 3,
        };
        assert_eq!(utf8.to_string(), "invalid UTF-8 after 3 valid bytes");
        let refused = ProtocolError::Refused {
            status: 403,
            reason: "Forbidden".into(),
        };
        assert!(refused.to_string().contains("403: Forbidden"));
    }

    #[test]
    fn other_keeps_its_source() {
        let inner = std::io::Error::other("deflate stream corrupt");
        let e = ProtocolError::Other(Box::new(inner));
        assert_eq!(e.to_string(), "deflate stream corrupt");
        assert!(std::error::Error::source(&e).is_some());
    }
}
