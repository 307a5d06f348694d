//! [`HttpError`]: a request refused with an HTTP status.

use std::fmt;

use lubdub_protocol::ProtocolError;

/// A request the server refuses: the status it answers with (`400`, `408`,
/// `413`, `431`) and why. The decoder returns it inside
/// [`ProtocolError::Other`]; the connection then answers with that status
/// (after the responses already queued) and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpError {
    /// The status of the answer.
    pub status: u16,
    /// What was wrong with the request.
    pub reason: &'static str,
}

impl HttpError {
    /// `400 Bad Request` for `reason`.
    pub const fn bad_request(reason: &'static str) -> Self {
        HttpError {
            status: 400,
            reason,
        }
    }

    /// The `HttpError` inside `err`, if it holds one.
    pub fn of(err: &ProtocolError) -> Option<&HttpError> {
        match err {
            ProtocolError::Other(e) => e.downcast_ref::<HttpError>(),
            _ => None,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.reason)
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for ProtocolError {
    fn from(e: HttpError) -> Self {
        ProtocolError::Other(Box::new(e))
    }
}
