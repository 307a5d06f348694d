//! HTTP/1.1 server protocol for lubdub, sans-IO, on `httparse` and the
//! `http` crate's types: keep-alive, pipelining, `Content-Length` and
//! chunked request bodies, whole, streamed and Server-Sent Events
//! responses, `Expect: 100-continue`, `HEAD`, HTTP/1.0.
//!
//! [`Http`] implements [`Protocol`] with `SCHEME = "http"` and
//! `TLS_SCHEME = "https"`:
//!
//! | associated type | here |
//! |---|---|
//! | `Message` (received) | [`Request`]: an `http::Request<Vec<u8>>` (through `Deref`) and its [`Exchange`] |
//! | `Outgoing` (sent) | [`Reply`]: a whole response, a streamed one's head, chunks and end, SSE events and comments |
//! | `Decoder` | [`HttpDecoder`]: the head search, the body being assembled, the request's deadline |
//! | `Encoder` | [`HttpEncoder`]: the open stream, whether the connection ends after the response |
//!
//! # A connection's life
//!
//! 1. No handshake: the connection is established at once.
//! 2. `decode` finds the end of a head (`\r\n\r\n`, within
//!    [`HttpConfig::max_head_size`]), parses it with `httparse`, checks the
//!    framing (see below) and, when the body is whole in the buffer,
//!    returns the request at once (a pipelined batch decodes without a
//!    copy of its heads). A body that arrives in pieces is taken into the
//!    session ([`Decoded::Consumed`]), counted by [`Decoder::held_bytes`].
//!    `Expect: 100-continue` is answered with `100 Continue` when the head
//!    arrives without its body.
//! 3. The application answers each request with [`Reply`]s, in request
//!    order: the encoder writes status line, headers and body straight
//!    into the connection's send queue, so pipelined answers leave in one
//!    write. It adds `Content-Length`, a `Date` formatted at most once a
//!    second, and `Connection: close` when the connection ends after the
//!    response; [`Encoder::close_after`] then tells the worker to close once
//!    it is flushed, and the decoder discards what the peer sent after
//!    that request.
//! 4. A refused request (a [`HttpError`] inside [`ProtocolError::Other`])
//!    closes the connection; [`Encoder::encode_close`] writes its answer
//!    (`400`, `408`, `413`, `431`, `505`) after the responses already
//!    queued.
//!
//! # Refused shapes
//!
//! `400` and close: `Content-Length` with `Transfer-Encoding`, two
//! `Content-Length`s or two `Transfer-Encoding`s, a coding other than
//! `chunked`, a `Content-Length` that is not plain digits, a bad chunk
//! size or chunk end, obs-fold (a header line starting with a space), a
//! bare CR or LF as a line end, HTTP/1.1 without exactly one `Host`,
//! chunked HTTP/1.0. No input makes the decoder panic (property-tested,
//! and fuzzed in `fuzz/`).
//!
//! # Example, without sockets
//!
//! ```
//! use lubdub_protocol::{Decoded, Session};
//! use lubdub_http::{Http, Reply};
//!
//! let mut session = Session::new(Http::default());
//! let Decoded::Message { msg: req, consumed } =
//!     session.decode(b"GET /hi HTTP/1.1\r\nHost: x\r\n\r\n").unwrap()
//! else {
//!     panic!("a whole request");
//! };
//! assert_eq!((req.uri().path(), consumed), ("/hi", 29));
//! let bytes = session
//!     .encode(&req.respond(http::Response::new(b"hello".to_vec())))
//!     .unwrap();
//! assert!(bytes.starts_with(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ndate: "));
//! assert!(bytes.ends_with(b"\r\n\r\nhello"));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod chunked;
mod config;
mod date;
mod decoder;
mod encoder;
mod error;
mod head;
mod reply;
mod request;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use config::{
    HttpConfig, DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEAD_SIZE,
    DEFAULT_REQUEST_TIMEOUT,
};
pub use decoder::HttpDecoder;
pub use encoder::HttpEncoder;
pub use error::HttpError;
pub use reply::{Event, Reply};
pub use request::{Exchange, Request};

/// The `http` crate, whose `Request`, `Response`, `StatusCode` and headers
/// this protocol speaks.
pub use http;

#[cfg(doc)]
use lubdub_protocol::{Decoded, Decoder, Encoder};
use lubdub_protocol::{Protocol, ProtocolError};

/// The HTTP/1.1 server protocol: its configuration, shared by every
/// connection of a worker (`http://0.0.0.0:8080`, or `https://` with the
/// worker's TLS settings).
#[derive(Debug, Clone, Default)]
pub struct Http {
    config: Arc<HttpConfig>,
}

impl Http {
    /// An HTTP server protocol with `config`.
    pub fn new(config: HttpConfig) -> Self {
        Http {
            config: Arc::new(config),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }
}

impl Protocol for Http {
    const SCHEME: &'static str = "http";
    const TLS_SCHEME: Option<&'static str> = Some("https");
    type Message = Request;
    type Outgoing = Reply;
    type Handshake = ();
    type Decoder = HttpDecoder;
    type Encoder = HttpEncoder;

    fn decoder(&self) -> HttpDecoder {
        HttpDecoder::default()
    }

    fn encoder(&self) -> HttpEncoder {
        HttpEncoder::default()
    }

    /// HTTP here is a server protocol: a client cannot use it.
    fn for_client(&self, _host: &str, _path_and_query: &str) -> Result<Self, ProtocolError> {
        Err(ProtocolError::Malformed("lubdub-http has no client role"))
    }
}
