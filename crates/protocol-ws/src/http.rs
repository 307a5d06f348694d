//! The HTTP side of the handshake: [`Request`], [`Response`],
//! [`Handshake`], finding the end of a head, and writing responses.

use lubdub_protocol::ProtocolError;

use crate::deflate::Negotiated;

/// Header lines as received: names as sent, values as raw bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Headers(pub Vec<(String, Vec<u8>)>);

impl Headers {
    pub(crate) fn from_httparse(headers: &[httparse::Header<'_>]) -> Self {
        Headers(
            headers
                .iter()
                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                .collect(),
        )
    }

    pub(crate) fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of header `name`, in order (case-insensitive name).
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Every UTF-8 value of header `name`.
    pub(crate) fn all_str<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.all(name).filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// Whether the comma-separated lists in header `name` hold `token`
    /// (case-insensitive), as `Connection: keep-alive, Upgrade` holds `upgrade`.
    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.all_str(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }
}

/// What the server decided to answer an upgrade request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upgrade {
    pub accept_key: String,
    pub subprotocol: Option<String>,
    pub deflate: Option<Negotiated>,
}

/// An HTTP request as the server received it: a WebSocket upgrade or a
/// plain request ([`is_upgrade`](Self::is_upgrade) is false) for an HTTP
/// handler to answer through `Decoder::reject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) version: u8,
    pub(crate) headers: Headers,
    pub(crate) subprotocols: Vec<String>,
    pub(crate) upgrade: Option<Upgrade>,
}

impl Request {
    /// The method (`GET`).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request target as sent: path and query (`/chat?room=1`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The path: the target up to `?` (`/chat`).
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The query string after `?`, if any (`room=1`).
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The HTTP minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The first value of header `name` (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The first value of header `name` (case-insensitive), as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers.get_bytes(name)
    }

    /// Every header line, in order: name as sent, value as bytes.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter()
    }

    /// The subprotocols the client offered (`Sec-WebSocket-Protocol`), in its order.
    pub fn subprotocols(&self) -> &[String] {
        &self.subprotocols
    }

    /// The subprotocol the server will answer with: the first of its
    /// configured list that the client offered.
    pub fn subprotocol(&self) -> Option<&str> {
        self.upgrade.as_ref()?.subprotocol.as_deref()
    }

    /// Whether this is a valid WebSocket upgrade request (`false` for a
    /// plain HTTP request).
    pub fn is_upgrade(&self) -> bool {
        self.upgrade.is_some()
    }

    /// Whether accepting enables permessage-deflate.
    pub fn deflate(&self) -> bool {
        self.upgrade.as_ref().is_some_and(|u| u.deflate.is_some())
    }
}

/// The server's answer to a client's upgrade request (status 101).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub(crate) status: u16,
    pub(crate) reason: String,
    pub(crate) headers: Headers,
    pub(crate) subprotocol: Option<String>,
    pub(crate) deflate: Option<Negotiated>,
}

impl Response {
    /// The status code (101).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as sent.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The first value of header `name` (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The first value of header `name` (case-insensitive), as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers.get_bytes(name)
    }

    /// Every header line, in order: name as sent, value as bytes.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter()
    }

    /// The subprotocol the server chose, one of those offered.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Whether the server accepted permessage-deflate.
    pub fn deflate(&self) -> bool {
        self.deflate.is_some()
    }
}

/// What a finished WebSocket handshake carries to the handshake hook: the
/// client's request (server role) or the server's response (client role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// Server role: the request received.
    Request(Request),
    /// Client role: the server's `101 Switching Protocols`.
    Response(Response),
}

impl Handshake {
    /// The request, in the server role.
    pub fn request(&self) -> Option<&Request> {
        match self {
            Handshake::Request(r) => Some(r),
            Handshake::Response(_) => None,
        }
    }

    /// The response, in the client role.
    pub fn response(&self) -> Option<&Response> {
        match self {
            Handshake::Response(r) => Some(r),
            Handshake::Request(_) => None,
        }
    }
}

/// Finds the blank line that ends an HTTP head, looking at each byte once
/// however the head arrives (one byte per call included).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeadScanner {
    /// Bytes at the front of the buffer already looked at.
    scanned: usize,
}

impl HeadScanner {
    /// The length of the head (blank line included) once it is all in
    /// `src`; `TooLarge` (the caller answers 431) once `max` bytes arrived
    /// without one. Returns how many bytes this call looked at, for tests.
    pub(crate) fn find(
        &mut self,
        src: &[u8],
        max: usize,
    ) -> (Result<Option<usize>, ProtocolError>, usize) {
        let limit = src.len().min(max);
        let from = self.scanned.min(limit);
        // Each `\n` is checked against the bytes before it: "\n\n" or
        // "\n\r\n" ends the head (httparse accepts bare `\n` line ends too).
        for i in memchr::memchr_iter(b'\n', &src[from..limit]).map(|i| from + i) {
            let blank = (i >= 1 && src[i - 1] == b'\n')
                || (i >= 2 && src[i - 1] == b'\r' && src[i - 2] == b'\n');
            if blank {
                self.scanned = 0;
                return (Ok(Some(i + 1)), i + 1 - from);
            }
        }
        self.scanned = limit;
        let looked = limit - from;
        if src.len() >= max {
            let err = ProtocolError::TooLarge {
                len: src.len() as u64,
                max: max as u64,
            };
            return (Err(err), looked);
        }
        (Ok(None), looked)
    }
}

/// The reason phrase of common statuses (empty for others).
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Whether `s` can go in a header line or request line unchanged.
pub(crate) fn is_header_safe(s: &str) -> bool {
    !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// Appends a complete HTTP/1.1 response that closes the connection.
/// `Content-Length` and `Connection` come from here; the same names in
/// `headers` are left out, as are lines that would break the head.
pub(crate) fn write_response(
    dst: &mut Vec<u8>,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    send_body: bool,
) {
    let head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    dst.extend_from_slice(head.as_bytes());
    for (name, value) in headers {
        let ours =
            name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("connection");
        let token = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if ours || !token || !is_header_safe(value) {
            if !ours {
                log::warn!("websocket: left out response header {name:?}: not a valid header");
            }
            continue;
        }
        dst.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let tail = format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    dst.extend_from_slice(tail.as_bytes());
    if send_body {
        dst.extend_from_slice(body);
    }
}

/// Appends the plain-text error response the server gives itself.
pub(crate) fn write_error(dst: &mut Vec<u8>, status: u16, extra: &[(String, String)], text: &str) {
    let mut headers = vec![(
        "Content-Type".to_owned(),
        "text/plain; charset=utf-8".to_owned(),
    )];
    headers.extend_from_slice(extra);
    let body = format!("{text}\n");
    write_response(dst, status, &headers, body.as_bytes(), true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trickled_head_is_scanned_once() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\nrest";
        let end = head.len() - 4;
        let mut scanner = HeadScanner::default();
        let mut looked = 0;
        for n in 1..=head.len() {
            let (found, l) = scanner.find(&head[..n], 1024);
            looked += l;
            if let Some(len) = found.unwrap() {
                assert_eq!(len, end);
                assert_eq!(n, end);
                break;
            }
        }
        assert_eq!(looked, end);
    }

    #[test]
    fn bare_newlines_end_a_head_too() {
        let mut scanner = HeadScanner::default();
        let (found, _) = scanner.find(b"GET / HTTP/1.1\nHost: a\n\nx", 1024);
        assert_eq!(found.unwrap(), Some(24));
    }

    #[test]
    fn scanning_stops_at_the_maximum() {
        let mut scanner = HeadScanner::default();
        let (found, looked) = scanner.find(&[b'a'; 100], 64);
        assert!(matches!(
            found,
            Err(ProtocolError::TooLarge { len: 100, max: 64 })
        ));
        assert_eq!(looked, 64);
    }

    #[test]
    fn token_lists_are_case_insensitive() {
        let h = Headers(vec![
            ("connection".into(), b"keep-alive, Upgrade".to_vec()),
            ("X".into(), vec![0xff]),
        ]);
        assert!(h.has_token("Connection", "upgrade"));
        assert!(!h.has_token("Connection", "close"));
        assert_eq!(h.get("x"), None);
        assert_eq!(h.get_bytes("x"), Some(&[0xff][..]));
    }

    #[test]
    fn responses_drop_unsafe_and_duplicate_headers() {
        let mut out = Vec::new();
        let headers = vec![
            ("X-Ok".to_owned(), "1".to_owned()),
            ("X-Bad".to_owned(), "a\r\nInjected: 1".to_owned()),
            ("content-length".to_owned(), "99".to_owned()),
        ];
        write_response(&mut out, 403, &headers, b"no", true);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 403 Forbidden\r\nX-Ok: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
        );
    }
}
