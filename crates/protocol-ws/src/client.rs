//! Client handshake (RFC 6455 §4.1): write the upgrade request, check the
//! server's answer.
//!
//! ```text
//! GET /chat?room=1 HTTP/1.1                  HTTP/1.1 101 Switching Protocols
//! Host: example.com:8080                     Upgrade: websocket
//! Upgrade: websocket                         Connection: Upgrade
//! Connection: Upgrade                        Sec-WebSocket-Accept: <base64(SHA-1(key + GUID))>
//! Sec-WebSocket-Key: <16 random bytes, base64>
//! Sec-WebSocket-Version: 13
//! Sec-WebSocket-Protocol: chat.v2, chat.v1   (if subprotocols are configured)
//! Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits   (if deflate is on)
//! ```
//!
//! | response | result |
//! |---|---|
//! | status other than 101 | `Err(ProtocolError::Refused { status, reason })` |
//! | no `Upgrade: websocket` / `Connection: upgrade`, wrong accept key | `Err(Malformed)` |
//! | a subprotocol or extension that was not offered | `Err(Malformed)` |
//! | all good | `Decoded::Handshake` with a [`Response`] |

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use lubdub_protocol::ProtocolError;

use crate::config::WsConfig;
use crate::deflate::{client_offer, parse_extensions, parse_server_response};
use crate::http::{is_header_safe, Headers, Response};

/// Where a client connects: the request line's target, `Host`, extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientTarget {
    pub host: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl ClientTarget {
    pub(crate) fn new(host: &str, path: &str) -> Result<Self, ProtocolError> {
        if host.is_empty() || !is_header_safe(host) || host.contains(' ') {
            return Err(ProtocolError::Malformed(
                "invalid Host for a WebSocket client",
            ));
        }
        let path = if path.is_empty() { "/" } else { path };
        if !path.starts_with('/') || !is_header_safe(path) || path.contains(' ') {
            return Err(ProtocolError::Malformed(
                "invalid path for a WebSocket client: must start with '/', without spaces",
            ));
        }
        Ok(ClientTarget {
            host: host.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
        })
    }

    pub(crate) fn add_header(&mut self, name: &str, value: &str) -> Result<(), ProtocolError> {
        let token = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !token || !is_header_safe(value) {
            return Err(ProtocolError::Malformed("invalid request header"));
        }
        self.headers.push((name.to_owned(), value.to_owned()));
        Ok(())
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 bytes from a cryptographic source,
/// base64.
pub(crate) fn new_key() -> String {
    BASE64.encode(crate::mask::new_nonce())
}

/// Appends the upgrade request.
pub(crate) fn write_request(
    out: &mut Vec<u8>,
    target: &ClientTarget,
    config: &WsConfig,
    key: &str,
) {
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        target.path, target.host
    );
    let offered: Vec<&str> = config
        .subprotocols
        .iter()
        .map(String::as_str)
        .filter(|p| is_header_safe(p) && !p.is_empty())
        .collect();
    if !offered.is_empty() {
        head.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            offered.join(", ")
        ));
    }
    if let Some(deflate) = &config.deflate {
        head.push_str(&format!(
            "Sec-WebSocket-Extensions: {}\r\n",
            client_offer(deflate)
        ));
    }
    for (name, value) in &target.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
}

/// Parses and checks the response head `head` against the request sent.
pub(crate) fn read_response(
    head: &[u8],
    config: &WsConfig,
    expected_accept: &str,
) -> Result<(Response, usize), ProtocolError> {
    let mut slots = vec![httparse::EMPTY_HEADER; config.max_headers.max(1)];
    let mut res = httparse::Response::new(&mut slots);
    let consumed = match res.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(ProtocolError::Malformed("incomplete response head"))
        }
        Err(_) => return Err(ProtocolError::Malformed("invalid HTTP response")),
    };
    let status = res.code.unwrap_or_default();
    let reason = res.reason.unwrap_or_default().to_owned();
    if status != 101 {
        return Err(ProtocolError::Refused { status, reason });
    }
    let headers = Headers::from_httparse(res.headers);
    if !headers.has_token("Upgrade", "websocket") {
        return Err(ProtocolError::Malformed("101 without Upgrade: websocket"));
    }
    if !headers.has_token("Connection", "upgrade") {
        return Err(ProtocolError::Malformed("101 without Connection: upgrade"));
    }
    if headers.get("Sec-WebSocket-Accept").map(str::trim) != Some(expected_accept) {
        return Err(ProtocolError::Malformed("wrong Sec-WebSocket-Accept"));
    }
    let subprotocol = match headers.get("Sec-WebSocket-Protocol").map(str::trim) {
        None => None,
        Some(p) if config.subprotocols.iter().any(|o| o == p) => Some(p.to_owned()),
        Some(_) => {
            return Err(ProtocolError::Malformed(
                "a subprotocol that was not offered",
            ))
        }
    };
    let offers = parse_extensions(headers.all_str("Sec-WebSocket-Extensions"));
    let deflate = match (&config.deflate, offers.is_empty()) {
        (_, true) => None,
        (Some(cfg), false) => Some(parse_server_response(&offers, cfg)?),
        (None, false) => {
            return Err(ProtocolError::Malformed(
                "an extension that was not offered",
            ))
        }
    };
    Ok((
        Response {
            status,
            reason,
            headers,
            subprotocol,
            deflate,
        },
        consumed,
    ))
}
