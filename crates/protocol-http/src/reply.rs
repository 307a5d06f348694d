//! [`Reply`], what `Connection::send` takes, and [`Event`], a Server-Sent
//! Events record.

use crate::request::Exchange;

/// What an HTTP connection sends: a whole response, or the pieces of a
/// streamed one. Responses go out in the order they are sent, which must
/// be the order of the requests (pipelining): a synchronous `on_message`
/// gets this for free.
///
/// ```
/// use lubdub_http::{Event, Exchange, Reply};
///
/// let ex = Exchange::default();
/// let _whole = ex.respond(http::Response::new(b"hello".to_vec()));
/// let _stream = [ex.stream(http::Response::new(())), Reply::chunk("part"), Reply::End];
/// let _sse = [ex.event_stream(), Reply::Event(Event::data("tick").id("1"))];
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Reply {
    /// A whole response. `Content-Length` is added from the body unless
    /// the response has one (it must then match); `Date` (and `Server`,
    /// if configured) unless present; `Connection: close` when the
    /// connection closes after it. A `HEAD` request gets the headers only.
    Full(Exchange, http::Response<Vec<u8>>),
    /// The head of a streamed response (its body is ignored): chunked for
    /// HTTP/1.1, delimited by the connection's close for HTTP/1.0. The body
    /// follows in [`Reply::Chunk`]s and ends with [`Reply::End`]; no other
    /// response can be sent meanwhile.
    Stream(Exchange, http::Response<()>),
    /// The head of a Server-Sent Events stream: like [`Reply::Stream`],
    /// and [`Reply::Event`] and [`Reply::Comment`] write records on it.
    EventStream(Exchange, http::Response<()>),
    /// A piece of a streamed body (an empty one writes nothing).
    Chunk(Vec<u8>),
    /// The end of a streamed body (an event stream's too).
    End,
    /// A Server-Sent Event, on an open event stream (an error otherwise).
    Event(Event),
    /// A Server-Sent Events comment (`: text`), which clients ignore: a
    /// keep-alive for proxies. Writes nothing when no event stream is
    /// open, so a heartbeat may send it to every connection.
    Comment(String),
}

impl Reply {
    /// A piece of a streamed body.
    pub fn chunk(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply::Chunk(bytes.into())
    }

    /// A Server-Sent Event with `data`.
    pub fn event(data: impl Into<String>) -> Reply {
        Reply::Event(Event::data(data))
    }

    /// A Server-Sent Events comment.
    pub fn comment(text: impl Into<String>) -> Reply {
        Reply::Comment(text.into())
    }
}

/// One Server-Sent Events record: `event:`, `id:`, `retry:` and `data:`
/// lines (one `data:` line per line of the data), then a blank line.
///
/// ```
/// use lubdub_http::Event;
///
/// let e = Event::data("line 1\nline 2").event("update").id("42");
/// let mut out = Vec::new();
/// e.write(&mut out).unwrap();
/// assert_eq!(out, b"event: update\nid: 42\ndata: line 1\ndata: line 2\n\n");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The event type (`event:`), for `addEventListener(type, ..)`; none
    /// means `message`.
    pub event: Option<String>,
    /// The event id (`id:`), which the client sends back as
    /// `Last-Event-ID` when it reconnects.
    pub id: Option<String>,
    /// How long the client waits before reconnecting, in milliseconds.
    pub retry: Option<u32>,
    /// The data, split into `data:` lines at its line breaks.
    pub data: String,
}

impl Event {
    /// An event carrying `data`.
    pub fn data(data: impl Into<String>) -> Event {
        Event {
            data: data.into(),
            ..Event::default()
        }
    }

    /// Sets the event type.
    pub fn event(mut self, event: impl Into<String>) -> Event {
        self.event = Some(event.into());
        self
    }

    /// Sets the event id.
    pub fn id(mut self, id: impl Into<String>) -> Event {
        self.id = Some(id.into());
        self
    }

    /// Sets the reconnection delay in milliseconds.
    pub fn retry(mut self, ms: u32) -> Event {
        self.retry = Some(ms);
        self
    }

    /// Appends the record to `out`. Fails (writing nothing) if the event
    /// type or id holds a line break, or the id a NUL (the client would
    /// read another field or ignore the id).
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        let bad = |s: &str| s.bytes().any(|b| b == b'\n' || b == b'\r');
        if self.event.as_deref().is_some_and(bad) {
            return Err("an event type with a line break");
        }
        if self
            .id
            .as_deref()
            .is_some_and(|s| bad(s) || s.contains('\0'))
        {
            return Err("an event id with a line break or NUL");
        }
        if let Some(event) = &self.event {
            field(out, b"event", event.as_bytes());
        }
        if let Some(id) = &self.id {
            field(out, b"id", id.as_bytes());
        }
        if let Some(ms) = self.retry {
            field(out, b"retry", itoa::Buffer::new().format(ms).as_bytes());
        }
        let data = self.data.as_bytes();
        let mut rest = data;
        loop {
            match memchr::memchr2(b'\n', b'\r', rest) {
                Some(at) => {
                    field(out, b"data", &rest[..at]);
                    let skip = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
                        2
                    } else {
                        1
                    };
                    rest = &rest[at + skip..];
                }
                None => {
                    field(out, b"data", rest);
                    break;
                }
            }
        }
        out.push(b'\n');
        Ok(())
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Appends a comment record (each line of `text` as `: line`, then a
/// blank line).
pub(crate) fn write_comment(text: &str, out: &mut Vec<u8>) {
    for line in text.split(['\n', '\r']) {
        out.extend_from_slice(b": ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}
