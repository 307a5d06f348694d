//! [`HttpEncoder`]: responses straight into the connection's send queue,
//! streamed bodies, Server-Sent Events, and the error answer of a refused
//! request.

use http::header::{self, HeaderMap};
use http::StatusCode;
use lubdub_protocol::{Closing, Encoder, ProtocolError};

use crate::error::HttpError;
use crate::reply::{write_comment, Reply};
use crate::request::Exchange;
use crate::{date, Http};

/// A streamed response under way.
#[derive(Debug, Clone, Copy)]
struct Streaming {
    /// Chunked coding (HTTP/1.1); else the body ends with the connection.
    chunked: bool,
    /// The request was `HEAD`: nothing of the body is written.
    head: bool,
    /// A Server-Sent Events stream.
    events: bool,
    /// The connection stays open after the stream.
    keep_alive: bool,
}

/// One connection's encoding side: whether a streamed response is open,
/// and whether the last response ends the connection.
#[derive(Debug, Default)]
pub struct HttpEncoder {
    stream: Option<Streaming>,
    close_after: bool,
}

impl HttpEncoder {
    /// Whether a streamed response (an event stream included) is open.
    pub fn is_streaming(&self) -> bool {
        self.stream.is_some()
    }

    /// Whether an event stream is open.
    pub fn is_event_stream(&self) -> bool {
        self.stream.is_some_and(|s| s.events)
    }
}

const MISUSE_OPEN: ProtocolError =
    ProtocolError::Malformed("a response while a streamed response is open");
const MISUSE_NO_STREAM: ProtocolError = ProtocolError::Malformed("no streamed response is open");

/// What the application's headers said that the encoder must know.
struct Seen {
    date: bool,
    server: bool,
    content_length: Option<u64>,
    close: bool,
}

/// Writes the status line and the application's headers, skipping the
/// framing headers the encoder owns when `skip_framing`.
fn write_head(
    status: StatusCode,
    headers: &HeaderMap,
    skip_framing: bool,
    dst: &mut Vec<u8>,
) -> Result<Seen, ProtocolError> {
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    dst.extend_from_slice(b"\r\n");
    let mut seen = Seen {
        date: false,
        server: false,
        content_length: None,
        close: false,
    };
    for (name, value) in headers {
        if *name == header::TRANSFER_ENCODING {
            continue;
        }
        if *name == header::CONTENT_LENGTH {
            if skip_framing {
                continue;
            }
            let n = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(ProtocolError::Malformed(
                    "invalid Content-Length in a response",
                ))?;
            seen.content_length = Some(n);
        } else if *name == header::DATE {
            seen.date = true;
        } else if *name == header::SERVER {
            seen.server = true;
        } else if *name == header::CONNECTION {
            seen.close |= value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    Ok(seen)
}

/// `Date`, `Server` and `Connection` lines the encoder adds, then the
/// blank line.
fn finish_head(protocol: &Http, seen: &Seen, ex: Exchange, keep_alive: bool, dst: &mut Vec<u8>) {
    if !seen.date {
        dst.extend_from_slice(b"date: ");
        date::append(dst);
        dst.extend_from_slice(b"\r\n");
    }
    if let (false, Some(server)) = (seen.server, &protocol.config().server) {
        dst.extend_from_slice(b"server: ");
        dst.extend_from_slice(server.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    if !keep_alive && !seen.close {
        dst.extend_from_slice(b"connection: close\r\n");
    } else if keep_alive && ex.http10 {
        dst.extend_from_slice(b"connection: keep-alive\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

fn content_length(n: u64, dst: &mut Vec<u8>) {
    dst.extend_from_slice(b"content-length: ");
    dst.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// Statuses whose responses never have a body.
fn bodiless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Appends one chunk of `len` bytes' header.
fn chunk_header(len: usize, dst: &mut Vec<u8>) {
    let mut hex = [0u8; 16];
    let mut i = hex.len();
    let mut n = len;
    loop {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&hex[i..]);
    dst.extend_from_slice(b"\r\n");
}

impl HttpEncoder {
    fn full(
        &mut self,
        protocol: &Http,
        ex: Exchange,
        response: &http::Response<Vec<u8>>,
        dst: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        let status = response.status();
        let body = response.body();
        let seen = write_head(status, response.headers(), false, dst)?;
        let no_body = bodiless(status);
        match seen.content_length {
            Some(n) if !no_body && !ex.head && n != body.len() as u64 => {
                return Err(ProtocolError::Malformed(
                    "a response's Content-Length differs from its body",
                ));
            }
            None if !no_body => content_length(body.len() as u64, dst),
            _ => {}
        }
        let keep_alive = ex.keep_alive && !seen.close;
        finish_head(protocol, &seen, ex, keep_alive, dst);
        if !no_body && !ex.head {
            dst.extend_from_slice(body);
        }
        self.close_after |= !keep_alive;
        Ok(())
    }

    fn open_stream(
        &mut self,
        protocol: &Http,
        ex: Exchange,
        response: &http::Response<()>,
        events: bool,
        dst: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        let seen = write_head(response.status(), response.headers(), true, dst)?;
        let chunked = !ex.http10;
        let keep_alive = ex.keep_alive && chunked && !seen.close;
        if chunked {
            dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        finish_head(protocol, &seen, ex, keep_alive, dst);
        self.stream = Some(Streaming {
            chunked,
            head: ex.head,
            events,
            keep_alive,
        });
        Ok(())
    }

    /// Appends `body` as one piece of the open stream, framed by `write`.
    fn piece(s: Streaming, dst: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        if s.head {
            return;
        }
        if !s.chunked {
            write(dst);
            return;
        }
        let start = dst.len();
        write(dst);
        let len = dst.len() - start;
        if len == 0 {
            return;
        }
        let mut header = Vec::with_capacity(10);
        chunk_header(len, &mut header);
        dst.splice(start..start, header);
        dst.extend_from_slice(b"\r\n");
    }

    fn end(&mut self, dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let s = self.stream.take().ok_or(MISUSE_NO_STREAM)?;
        if s.chunked && !s.head {
            dst.extend_from_slice(b"0\r\n\r\n");
        }
        self.close_after |= !s.keep_alive;
        Ok(())
    }
}

/// The answer to a refused request: `status`, a short text body, and
/// `Connection: close`.
fn error_response(status: u16, reason: &str, dst: &mut Vec<u8>) {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("Error").as_bytes());
    dst.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\n");
    content_length(reason.len() as u64 + 1, dst);
    dst.extend_from_slice(b"connection: close\r\ndate: ");
    date::append(dst);
    dst.extend_from_slice(b"\r\n\r\n");
    dst.extend_from_slice(reason.as_bytes());
    dst.push(b'\n');
}

/// The status and reason answering a protocol violation.
pub(crate) fn refusal(err: &ProtocolError) -> (u16, &str) {
    match err {
        ProtocolError::TooLarge { .. } => (413, "request too large"),
        _ => match HttpError::of(err) {
            Some(e) => (e.status, e.reason),
            None => (400, "bad request"),
        },
    }
}

impl Encoder<Http> for HttpEncoder {
    fn encode(
        &mut self,
        protocol: &Http,
        msg: &Reply,
        dst: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        match msg {
            Reply::Full(ex, response) => {
                if self.stream.is_some() {
                    return Err(MISUSE_OPEN);
                }
                self.full(protocol, *ex, response, dst)
            }
            Reply::Stream(ex, response) | Reply::EventStream(ex, response) => {
                if self.stream.is_some() {
                    return Err(MISUSE_OPEN);
                }
                let events = matches!(msg, Reply::EventStream(..));
                self.open_stream(protocol, *ex, response, events, dst)
            }
            Reply::Chunk(bytes) => {
                let s = self.stream.ok_or(MISUSE_NO_STREAM)?;
                if !bytes.is_empty() {
                    Self::piece(s, dst, |d| d.extend_from_slice(bytes));
                }
                Ok(())
            }
            Reply::End => self.end(dst),
            Reply::Event(event) => {
                let s = self
                    .stream
                    .filter(|s| s.events)
                    .ok_or(ProtocolError::Malformed("no event stream is open"))?;
                let mut result = Ok(());
                Self::piece(s, dst, |d| result = event.write(d));
                result.map_err(ProtocolError::Malformed)
            }
            Reply::Comment(text) => {
                if let Some(s) = self.stream.filter(|s| s.events) {
                    Self::piece(s, dst, |d| write_comment(text, d));
                }
                Ok(())
            }
        }
    }

    fn encode_close(&mut self, _protocol: &Http, closing: &Closing<'_>, dst: &mut Vec<u8>) {
        if let Some(s) = self.stream {
            // A stream the server ends on purpose ends cleanly (an
            // EventSource then reconnects); one cut by a fault does not.
            if matches!(
                closing,
                Closing::Local { .. } | Closing::Session(_) | Closing::GoingAway | Closing::Restart
            ) && s.chunked
                && !s.head
            {
                dst.extend_from_slice(b"0\r\n\r\n");
            }
            self.stream = None;
            return;
        }
        if let Closing::Violation(err) = closing {
            let (status, reason) = refusal(err);
            error_response(status, reason, dst);
        }
    }

    fn close_after(&self) -> bool {
        self.close_after
    }
}
