//! [`HttpDecoder`]: requests out of the connection's bytes, one at a time,
//! bodies assembled in the session (and reported by `held_bytes`).

use std::time::Instant;

use lubdub_protocol::{Decoded, Decoder, ProtocolError, Wire};

use crate::chunked::Chunked;
use crate::error::HttpError;
use crate::head::{self, BodyKind, Head};
use crate::request::{Exchange, Request};
use crate::Http;

/// The interim answer to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A request whose head is in and whose body is still arriving.
#[derive(Debug)]
struct Pending {
    head: Head,
    body: Vec<u8>,
    /// `Some` for a chunked body; else `Content-Length` bytes are left.
    chunked: Option<Chunked>,
    remaining: u64,
}

/// One connection's decoding side: where the search for the end of a head
/// got to, the request whose body is arriving, and when the current
/// request began (only read from the clock when a request spans reads).
#[derive(Debug, Default)]
pub struct HttpDecoder {
    scanned: usize,
    pending: Option<Box<Pending>>,
    started: Option<Instant>,
    done: bool,
}

impl HttpDecoder {
    /// Whether the decoder stopped taking requests: the last one closes
    /// the connection (`Connection: close`, HTTP/1.0), so what follows it
    /// is discarded.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The request is not whole yet: it must be within its deadline.
    fn check_deadline(&mut self, protocol: &Http) -> Result<(), ProtocolError> {
        let started = *self.started.get_or_insert_with(Instant::now);
        if started.elapsed() > protocol.config().request_timeout {
            return Err(HttpError {
                status: 408,
                reason: "request not received in time",
            }
            .into());
        }
        Ok(())
    }

    /// A whole request: the decoder starts over for the next one.
    fn finish(&mut self, head: Head, body: Vec<u8>) -> Request {
        self.scanned = 0;
        self.started = None;
        self.done = !head.keep_alive;
        let exchange = Exchange {
            head: head.parts.method == http::Method::HEAD,
            http10: head.parts.version == http::Version::HTTP_10,
            keep_alive: head.keep_alive,
        };
        Request::new(http::Request::from_parts(head.parts, body), exchange)
    }

    /// Takes what `src` holds of the pending body; `Some(used)` when the
    /// body is whole.
    fn feed(
        pending: &mut Pending,
        protocol: &Http,
        src: &[u8],
    ) -> Result<(usize, bool), ProtocolError> {
        let config = protocol.config();
        match &mut pending.chunked {
            Some(chunked) => {
                let used = chunked.feed(
                    src,
                    &mut pending.body,
                    config.max_body_size,
                    config.max_head_size,
                )?;
                Ok((used, chunked.is_done()))
            }
            None => {
                let take =
                    usize::try_from(pending.remaining).map_or(src.len(), |r| r.min(src.len()));
                pending.body.extend_from_slice(&src[..take]);
                pending.remaining -= take as u64;
                Ok((take, pending.remaining == 0))
            }
        }
    }
}

impl Decoder<Http> for HttpDecoder {
    fn decode(
        &mut self,
        protocol: &Http,
        src: &[u8],
        wire: &mut Wire<'_>,
    ) -> Result<Decoded<Request>, ProtocolError> {
        if src.is_empty() {
            return Ok(Decoded::Incomplete);
        }
        if self.done {
            return Ok(Decoded::Consumed(src.len()));
        }
        if let Some(mut pending) = self.pending.take() {
            let (used, whole) = Self::feed(&mut pending, protocol, src)?;
            if whole {
                let Pending { head, body, .. } = *pending;
                let msg = self.finish(head, body);
                return Ok(Decoded::Message {
                    msg,
                    consumed: used,
                });
            }
            self.pending = Some(pending);
            self.check_deadline(protocol)?;
            return Ok(Decoded::Consumed(used));
        }
        let config = protocol.config();
        let Some(len) = head::find_end(src, &mut self.scanned, config)? else {
            self.check_deadline(protocol)?;
            return Ok(Decoded::Incomplete);
        };
        let head = head::parse(src, len, config)?;
        let rest = &src[len..];
        match head.body {
            BodyKind::Length(n) if (rest.len() as u64) >= n => {
                let n = n as usize;
                let body = if n == 0 {
                    Vec::new()
                } else {
                    rest[..n].to_vec()
                };
                let msg = self.finish(head, body);
                Ok(Decoded::Message {
                    msg,
                    consumed: len + n,
                })
            }
            kind => {
                let expect = head.expect_continue;
                let (chunked, remaining) = match kind {
                    BodyKind::Chunked => (Some(Chunked::default()), 0),
                    BodyKind::Length(n) => (None, n),
                };
                let mut pending = Box::new(Pending {
                    head,
                    body: Vec::new(),
                    chunked,
                    remaining,
                });
                let (used, whole) = Self::feed(&mut pending, protocol, rest)?;
                if whole {
                    let msg = self.finish(pending.head, pending.body);
                    return Ok(Decoded::Message {
                        msg,
                        consumed: len + used,
                    });
                }
                if expect && used == 0 {
                    wire.write(CONTINUE);
                }
                self.pending = Some(pending);
                self.check_deadline(protocol)?;
                Ok(Decoded::Consumed(len + used))
            }
        }
    }

    fn held_bytes(&self) -> usize {
        self.pending
            .as_ref()
            .map_or(0, |p| p.head.len + p.body.capacity())
    }
}
