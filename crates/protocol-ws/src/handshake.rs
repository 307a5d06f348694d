//! Server handshake (RFC 6455 §4.2): parse the upgrade request, check it,
//! and answer `101 Switching Protocols` or an HTTP error.
//!
//! ```text
//! GET /chat?room=1 HTTP/1.1                    HTTP/1.1 101 Switching Protocols
//! Host: example.com                            Upgrade: websocket
//! Upgrade: websocket                           Connection: Upgrade
//! Connection: Upgrade                          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
//! Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==  Sec-WebSocket-Protocol: chat
//! Sec-WebSocket-Version: 13
//! Sec-WebSocket-Protocol: chat, superchat
//! ```
//!
//! | request | answer |
//! |---|---|
//! | no `Upgrade: websocket` | none: a plain request, delivered with `is_upgrade() == false` |
//! | head over `max_header_size`, or over `max_headers` lines | `431 Request Header Fields Too Large` |
//! | not HTTP syntax | `400 Bad Request` |
//! | not `GET`, not HTTP/1.1, no `Host`, no `Connection: upgrade` | `400 Bad Request` |
//! | more than one `Host`, `Upgrade`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version` or `Origin` | `400 Bad Request` |
//! | `Sec-WebSocket-Version` other than 13 | `426 Upgrade Required` + `Sec-WebSocket-Version: 13` |
//! | `Sec-WebSocket-Key` missing, or not base64 of 16 bytes | `400 Bad Request` |
//! | an `Origin` that [`WsConfig::allowed_origins`] refuses | `403 Forbidden` |
//! | all good | nothing until the hook accepts (`101`) or rejects |

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use lubdub_protocol::ProtocolError;
use sha1::{Digest, Sha1};

use crate::config::WsConfig;
use crate::deflate::{negotiate_server, parse_extensions};
use crate::http::{write_error, Headers, Request, Upgrade};

/// The GUID RFC 6455 appends to the key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// A refusal decided by the server itself: the status written and the error.
struct Refusal {
    status: u16,
    extra: Vec<(String, String)>,
    error: ProtocolError,
}

fn refuse(status: u16, what: &'static str) -> Refusal {
    Refusal {
        status,
        extra: Vec::new(),
        error: ProtocolError::Malformed(what),
    }
}

/// Parses and checks the request head `head`. On a refusal the error
/// response is appended to `out` and the error returned.
pub(crate) fn read_request(
    head: &[u8],
    config: &WsConfig,
    out: &mut Vec<u8>,
) -> Result<(Request, usize), ProtocolError> {
    match parse(head, config) {
        Ok(ok) => Ok(ok),
        Err(r) => {
            log::debug!(
                "websocket: refused handshake with {}: {}",
                r.status,
                r.error
            );
            write_error(out, r.status, &r.extra, &r.error.to_string());
            Err(r.error)
        }
    }
}

fn parse(head: &[u8], config: &WsConfig) -> Result<(Request, usize), Refusal> {
    let mut slots = vec![httparse::EMPTY_HEADER; config.max_headers.max(1)];
    let mut req = httparse::Request::new(&mut slots);
    let consumed = match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(refuse(400, "incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, "too many request header lines"))
        }
        Err(_) => return Err(refuse(400, "invalid HTTP request")),
    };
    let headers = Headers::from_httparse(req.headers);
    let subprotocols: Vec<String> = headers
        .all_str("Sec-WebSocket-Protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let mut request = Request {
        method: req.method.unwrap_or_default().to_owned(),
        target: req.path.unwrap_or_default().to_owned(),
        version: req.version.unwrap_or_default(),
        headers,
        subprotocols,
        upgrade: None,
    };
    if !request.headers.has_token("Upgrade", "websocket") {
        return Ok((request, consumed));
    }
    request.upgrade = Some(check_upgrade(&request, config)?);
    Ok((request, consumed))
}

/// Headers that must come at most once in an upgrade request: a second
/// one is ambiguous (which did a proxy on the way check?).
const SINGLE: [(&str, &str); 5] = [
    ("Host", "more than one Host header"),
    ("Upgrade", "more than one Upgrade header"),
    (
        "Sec-WebSocket-Key",
        "more than one Sec-WebSocket-Key header",
    ),
    (
        "Sec-WebSocket-Version",
        "more than one Sec-WebSocket-Version header",
    ),
    ("Origin", "more than one Origin header"),
];

fn check_upgrade(request: &Request, config: &WsConfig) -> Result<Upgrade, Refusal> {
    let headers = &request.headers;
    if let Some((_, what)) = SINGLE
        .iter()
        .find(|(name, _)| headers.all(name).nth(1).is_some())
    {
        return Err(refuse(400, what));
    }
    if request.method != "GET" {
        return Err(refuse(400, "a WebSocket upgrade must be a GET"));
    }
    if request.version != 1 {
        return Err(refuse(400, "a WebSocket upgrade needs HTTP/1.1"));
    }
    if headers.get_bytes("Host").is_none() {
        return Err(refuse(400, "no Host header"));
    }
    if !headers.has_token("Connection", "upgrade") {
        return Err(refuse(400, "Connection header without the upgrade token"));
    }
    if headers.get("Sec-WebSocket-Version").map(str::trim) != Some("13") {
        return Err(Refusal {
            status: 426,
            extra: vec![("Sec-WebSocket-Version".to_owned(), "13".to_owned())],
            error: ProtocolError::Malformed("unsupported Sec-WebSocket-Version"),
        });
    }
    let key = headers
        .get("Sec-WebSocket-Key")
        .map(str::trim)
        .unwrap_or_default();
    if key.is_empty() {
        return Err(refuse(400, "no Sec-WebSocket-Key"));
    }
    if BASE64.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(refuse(400, "Sec-WebSocket-Key is not base64 of 16 bytes"));
    }
    let origin = match headers.get_bytes("Origin") {
        None => None,
        Some(raw) => Some(std::str::from_utf8(raw).unwrap_or("\u{fffd}")),
    };
    let host = headers.get("Host").unwrap_or_default();
    if !config.origin_allowed(origin, host) {
        return Err(refuse(403, "origin not allowed"));
    }
    let subprotocol = config
        .subprotocols
        .iter()
        .find(|ours| request.subprotocols.iter().any(|theirs| theirs == *ours))
        .cloned();
    let deflate = config.deflate.as_ref().and_then(|cfg| {
        let offers = parse_extensions(headers.all_str("Sec-WebSocket-Extensions"));
        negotiate_server(&offers, cfg)
    });
    Ok(Upgrade {
        accept_key: accept_key(key),
        subprotocol,
        deflate,
    })
}

/// Appends the `101 Switching Protocols` answer to an accepted upgrade.
pub(crate) fn write_switching(out: &mut Vec<u8>, upgrade: &Upgrade) {
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        upgrade.accept_key
    );
    if let Some(p) = &upgrade.subprotocol {
        head.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    if let Some(d) = &upgrade.deflate {
        head.push_str(&format!(
            "Sec-WebSocket-Extensions: {}\r\n",
            d.response_header()
        ));
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
