//! [`Request`], what `on_message` receives, and [`Exchange`], what a
//! response needs to know about its request.

use std::ops::{Deref, DerefMut};

use http::Version;

use crate::reply::Reply;

/// What a response must know about the request it answers: whether it was
/// `HEAD` (no body is sent), HTTP/1.0 (no chunked coding) and whether the
/// connection stays open afterwards. Small and `Copy`: keep it when the
/// answer is sent later (an async handler, a stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    pub(crate) head: bool,
    pub(crate) http10: bool,
    pub(crate) keep_alive: bool,
}

impl Default for Exchange {
    /// An HTTP/1.1 `GET` on a keep-alive connection.
    fn default() -> Self {
        Exchange {
            head: false,
            http10: false,
            keep_alive: true,
        }
    }
}

impl Exchange {
    /// Whether the request was `HEAD`: the response carries headers only.
    pub fn is_head(&self) -> bool {
        self.head
    }

    /// Whether the connection stays open after the response (HTTP/1.1
    /// without `Connection: close`, or HTTP/1.0 with `Connection:
    /// keep-alive`).
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// The request's HTTP version (1.0 or 1.1).
    pub fn version(&self) -> Version {
        if self.http10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        }
    }

    /// A whole response to this request: see [`Reply::Full`].
    pub fn respond(self, response: http::Response<Vec<u8>>) -> Reply {
        Reply::Full(self, response)
    }

    /// The head of a streamed response to this request, its body to follow
    /// in [`Reply::Chunk`]s and end with [`Reply::End`]: see
    /// [`Reply::Stream`].
    pub fn stream(self, response: http::Response<()>) -> Reply {
        Reply::Stream(self, response)
    }

    /// Opens a Server-Sent Events stream answering this request (`200`,
    /// `text/event-stream`, `Cache-Control: no-cache`): send
    /// [`Event`]s with [`Reply::Event`] afterwards.
    pub fn event_stream(self) -> Reply {
        let response = http::Response::builder()
            .header(http::header::CONTENT_TYPE, "text/event-stream")
            .header(http::header::CACHE_CONTROL, "no-cache")
            .body(())
            .unwrap_or_default();
        Reply::EventStream(self, response)
    }
}

/// An HTTP request, body included (`on_message`'s message): an
/// [`http::Request`] (through `Deref`) and its [`Exchange`].
#[derive(Debug)]
pub struct Request {
    inner: http::Request<Vec<u8>>,
    exchange: Exchange,
}

impl Request {
    /// A request as the decoder makes it (also for tests and tools).
    pub fn new(inner: http::Request<Vec<u8>>, exchange: Exchange) -> Self {
        Request { inner, exchange }
    }

    /// What the response needs to know about this request.
    pub fn exchange(&self) -> Exchange {
        self.exchange
    }

    /// The `http` request, body included.
    pub fn into_inner(self) -> http::Request<Vec<u8>> {
        self.inner
    }

    /// The `Last-Event-ID` header an `EventSource` sends when it
    /// reconnects: the `id` of the last event it received.
    pub fn last_event_id(&self) -> Option<&str> {
        self.inner
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
    }

    /// A whole response to this request ([`Exchange::respond`]).
    pub fn respond(&self, response: http::Response<Vec<u8>>) -> Reply {
        self.exchange.respond(response)
    }

    /// The head of a streamed response ([`Exchange::stream`]).
    pub fn stream(&self, response: http::Response<()>) -> Reply {
        self.exchange.stream(response)
    }

    /// Opens a Server-Sent Events stream ([`Exchange::event_stream`]).
    pub fn event_stream(&self) -> Reply {
        self.exchange.event_stream()
    }
}

impl Deref for Request {
    type Target = http::Request<Vec<u8>>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for Request {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}
