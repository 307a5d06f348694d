//! [`HttpConfig`]: the limits and options of an HTTP server, with chainable
//! setters (tokio-util codec style) and documented defaults.

use std::time::Duration;

/// Default [`HttpConfig::max_head_size`]: 16 KiB.
pub const DEFAULT_MAX_HEAD_SIZE: usize = 16 * 1024;
/// Default [`HttpConfig::max_headers`]: 64 header lines.
pub const DEFAULT_MAX_HEADERS: usize = 64;
/// Default [`HttpConfig::max_body_size`]: 1 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;
/// Default [`HttpConfig::request_timeout`]: 30 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP server settings.
///
/// | field | default | past it |
/// |---|---|---|
/// | `max_head_size` | 16 KiB | `431 Request Header Fields Too Large`, decided after that many bytes without the blank line |
/// | `max_headers` | 64 | `431` |
/// | `max_body_size` | 1 MiB | `413 Content Too Large`, decided from `Content-Length` before the body is read, or as chunks add up |
/// | `request_timeout` | 30 s | `408 Request Timeout`: a request (head and body) must be whole this long after its first byte |
/// | `server` | none | the `Server` header of every response, if set |
///
/// ```
/// use std::time::Duration;
/// use lubdub_http::HttpConfig;
///
/// let config = HttpConfig::default()
///     .max_body_size(64 * 1024)
///     .request_timeout(Duration::from_secs(5))
///     .server("lubdub");
/// assert_eq!(config.max_head_size, 16 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Largest request head (request line, headers, blank line) in bytes.
    /// Default 16 KiB.
    pub max_head_size: usize,
    /// Most header lines in a request head. Default 64.
    pub max_headers: usize,
    /// Largest request body in bytes, after chunked decoding. Default 1 MiB.
    pub max_body_size: usize,
    /// How long a request may take to arrive whole, from its first byte
    /// (slowloris). Default 30 s. Checked whenever bytes of it arrive; a
    /// peer that stops sending altogether is closed by the worker's
    /// `Limits::message_timeout`.
    pub request_timeout: Duration,
    /// The `Server` header added to every response, if any. Default none.
    pub server: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_head_size: DEFAULT_MAX_HEAD_SIZE,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            server: None,
        }
    }
}

impl HttpConfig {
    /// Sets [`max_head_size`](Self::max_head_size).
    pub fn max_head_size(mut self, bytes: usize) -> Self {
        self.max_head_size = bytes;
        self
    }

    /// Sets [`max_headers`](Self::max_headers).
    pub fn max_headers(mut self, count: usize) -> Self {
        self.max_headers = count;
        self
    }

    /// Sets [`max_body_size`](Self::max_body_size).
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// Sets [`request_timeout`](Self::request_timeout).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the [`Server`](Self::server) header value.
    pub fn server(mut self, name: impl Into<String>) -> Self {
        self.server = Some(name.into());
        self
    }
}
