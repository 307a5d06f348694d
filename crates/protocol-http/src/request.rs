//! [`Request`], what `on_message` receives.

use std::ops::{Deref, DerefMut};

use crate::reply::{Exchange, Reply};

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
