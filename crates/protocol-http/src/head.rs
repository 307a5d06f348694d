//! A request head: found in the buffer, parsed with `httparse`, checked
//! for the shapes that smuggle requests, and turned into `http` types.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

use crate::config::HttpConfig;
use crate::error::HttpError;

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// `Content-Length` bytes (0: no body).
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
}

/// A parsed request head and what the connection must know about it.
#[derive(Debug)]
pub(crate) struct Head {
    /// The request without its body.
    pub parts: http::request::Parts,
    /// Bytes of the head, blank line included.
    pub len: usize,
    /// How the body is delimited.
    pub body: BodyKind,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

/// Header lines parsed on the stack; a larger `max_headers` uses the heap.
const STACK_HEADERS: usize = 64;

const TOO_LARGE: HttpError = HttpError {
    status: 431,
    reason: "request head too large",
};
const TOO_MANY: HttpError = HttpError {
    status: 431,
    reason: "too many header lines",
};

/// Looks for the end of the head in `src`, from `*scanned` on (what an
/// earlier call already searched); `Ok(None)` while it is not there yet.
pub(crate) fn find_end(
    src: &[u8],
    scanned: &mut usize,
    config: &HttpConfig,
) -> Result<Option<usize>, HttpError> {
    let from = scanned.saturating_sub(3);
    let limit = src.len().min(config.max_head_size);
    if let Some(at) = memchr::memmem::find(&src[from.min(limit)..limit], b"\r\n\r\n") {
        return Ok(Some(from + at + 4));
    }
    if src.len() >= config.max_head_size {
        return Err(TOO_LARGE);
    }
    *scanned = src.len();
    Ok(None)
}

/// Every CR is followed by an LF and every LF preceded by a CR: no bare CR
/// or bare LF line ends, which parsers disagree on.
fn line_ends_are_crlf(head: &[u8]) -> bool {
    let mut crs = 0usize;
    for at in memchr::memchr_iter(b'\n', head) {
        if at == 0 || head[at - 1] != b'\r' {
            return false;
        }
        crs += 1;
    }
    memchr::memchr_iter(b'\r', head).count() == crs
}

/// Parses the head `src[..len]` (its end found by [`find_end`]).
pub(crate) fn parse(src: &[u8], len: usize, config: &HttpConfig) -> Result<Head, HttpError> {
    let head = &src[..len];
    if !line_ends_are_crlf(head) {
        return Err(HttpError::bad_request("bare CR or LF in the request head"));
    }
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap;
    let headers: &mut [httparse::Header<'_>] = if config.max_headers <= STACK_HEADERS {
        &mut stack[..config.max_headers]
    } else {
        heap = vec![httparse::EMPTY_HEADER; config.max_headers];
        &mut heap
    };
    let mut req = httparse::Request::new(headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == len => {}
        Ok(_) => return Err(HttpError::bad_request("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(TOO_MANY),
        Err(httparse::Error::Version) => {
            return Err(HttpError {
                status: 505,
                reason: "HTTP version not supported",
            })
        }
        Err(_) => return Err(HttpError::bad_request("malformed request head")),
    }
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(HttpError::bad_request("unknown HTTP version")),
    };
    let method = req
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(HttpError::bad_request("invalid method"))?;
    let uri: Uri = req
        .path
        .and_then(|p| p.parse().ok())
        .ok_or(HttpError::bad_request("invalid request target"))?;

    let mut map = HeaderMap::with_capacity(req.headers.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut hosts = 0u32;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HttpError::bad_request("invalid header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HttpError::bad_request("invalid header value"))?;
        if name == http::header::CONTENT_LENGTH {
            if content_length.is_some() {
                return Err(HttpError::bad_request("more than one Content-Length"));
            }
            content_length = Some(parse_length(h.value)?);
        } else if name == http::header::TRANSFER_ENCODING {
            if transfer_encoding {
                return Err(HttpError::bad_request("more than one Transfer-Encoding"));
            }
            transfer_encoding = true;
            if !h.value.eq_ignore_ascii_case(b"chunked") {
                return Err(HttpError::bad_request(
                    "Transfer-Encoding other than chunked",
                ));
            }
            chunked = true;
        } else if name == http::header::CONNECTION {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == http::header::EXPECT {
            expect_continue |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name == http::header::HOST {
            hosts += 1;
        }
        map.append(name, value);
    }
    if chunked && content_length.is_some() {
        return Err(HttpError::bad_request(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if chunked && version == Version::HTTP_10 {
        return Err(HttpError::bad_request("Transfer-Encoding in HTTP/1.0"));
    }
    if version == Version::HTTP_11 && hosts != 1 {
        return Err(HttpError::bad_request("a request without exactly one Host"));
    }
    let body = if chunked {
        BodyKind::Chunked
    } else {
        BodyKind::Length(content_length.unwrap_or(0))
    };
    if let BodyKind::Length(n) = body {
        if n > config.max_body_size as u64 {
            return Err(HttpError {
                status: 413,
                reason: "request body too large",
            });
        }
    }
    let keep_alive = match version {
        Version::HTTP_11 => !close,
        _ => keep_alive_token && !close,
    };
    let mut request = http::Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    let parts = request.into_parts().0;
    Ok(Head {
        parts,
        len,
        body,
        keep_alive,
        expect_continue: expect_continue && version == Version::HTTP_11,
    })
}

/// A `Content-Length` value: decimal digits only (no sign, no list, no
/// space inside), at most 19 of them.
fn parse_length(value: &[u8]) -> Result<u64, HttpError> {
    const BAD: HttpError = HttpError::bad_request("invalid Content-Length");
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(BAD);
    }
    value
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(BAD)
}
