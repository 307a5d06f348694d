//! [`WsConfig`] and [`DeflateConfig`]: limits and options, deserializable
//! from a config file, with chainable setters.

use serde::Deserialize;

/// Default [`WsConfig::max_message_size`]: 10 MiB, Workerman's maximum package size.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;
/// Default [`WsConfig::max_frame_size`]: 10 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 10 * 1024 * 1024;
/// Default [`WsConfig::max_header_size`]: 16 KiB.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 16 * 1024;
/// Default [`WsConfig::max_headers`]: 64 header lines.
pub const DEFAULT_MAX_HEADERS: usize = 64;

/// WebSocket settings for both roles.
///
/// | field | default | meaning |
/// |---|---|---|
/// | `max_message_size` | 10 MiB | largest message, after reassembly and inflation (else close 1009) |
/// | `max_frame_size` | 10 MiB | largest frame payload, as announced in its header (else 1009) |
/// | `max_header_size` | 16 KiB | largest handshake head, blank line included (server: `431`) |
/// | `max_headers` | 64 | most header lines in the handshake (server: `431`) |
/// | `subprotocols` | `[]` | server: supported, in order of preference; client: offered |
/// | `deliver_pings` | `false` | hand pings to the application as [`Message::Ping`](crate::Message::Ping) (they are answered either way) |
/// | `accept_unmasked_frames` | `false` | server: accept unmasked client frames (non-browser peers that break RFC 6455) |
/// | `allowed_origins` | `[]`: same host | server: which `Origin` may upgrade (below) |
/// | `deflate` | `None` | permessage-deflate (RFC 7692) when `Some` |
///
/// Pongs are always answered automatically and always delivered.
///
/// # Origin
///
/// A browser lets any web page open a WebSocket to any server, sending the
/// user's cookies for that server along (cross-site WebSocket hijacking);
/// what it does tell the server is the page's origin, in `Origin`. So a
/// server checks it, as gorilla/websocket does by default:
///
/// * `allowed_origins` empty (the default): a request with an `Origin`
///   header is accepted only if the origin's `host[:port]` is the
///   request's `Host` (ASCII case-insensitive): the page was served by
///   this server. `Origin: null` (a sandboxed or `file:` page) is refused.
/// * a list of origins (`"https://app.example.com"`, scheme and host and
///   a port unless it is the scheme's default, as browsers send them):
///   only those, compared case-insensitively; `"*"` in the list accepts
///   any origin.
/// * a request without `Origin` is accepted either way: browsers always
///   send one with a WebSocket upgrade, other clients need not.
///
/// A refused origin gets `403 Forbidden` before the handshake hook runs.
/// A request with more than one `Origin` header gets `400`.
/// ```
/// use lubdub_ws::{DeflateConfig, WsConfig};
///
/// let config = WsConfig::default()
///     .max_message_size(1 << 20)
///     .subprotocols(["chat.v2", "chat.v1"])
///     .deflate(DeflateConfig::default());
/// assert_eq!(config.max_header_size, 16 * 1024);
///
/// let from_file: WsConfig = serde_json::from_str(r#"{"deflate": {"level": 1}}"#).unwrap();
/// assert_eq!(from_file.deflate.unwrap().level, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WsConfig {
    /// Largest message in bytes, after reassembly and inflation. Default 10 MiB.
    pub max_message_size: usize,
    /// Largest frame payload in bytes, as announced by its header. Default 10 MiB.
    pub max_frame_size: usize,
    /// Largest handshake request or response head in bytes. Default 16 KiB.
    pub max_header_size: usize,
    /// Most header lines in a handshake request or response. Default 64.
    pub max_headers: usize,
    /// Subprotocols: the server's, in order of preference, or the client's offer.
    pub subprotocols: Vec<String>,
    /// Whether pings reach the application as messages. Default `false`.
    pub deliver_pings: bool,
    /// Server role: accept unmasked frames from clients. Default `false`.
    pub accept_unmasked_frames: bool,
    /// Server role: the origins (`Origin` header) allowed to upgrade, or
    /// `"*"`; empty (the default): the request's own `Host` only. See
    /// [Origin](#origin).
    pub allowed_origins: Vec<String>,
    /// permessage-deflate settings; `None` (the default) turns it off.
    pub deflate: Option<DeflateConfig>,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            max_headers: DEFAULT_MAX_HEADERS,
            subprotocols: Vec::new(),
            deliver_pings: false,
            accept_unmasked_frames: false,
            allowed_origins: Vec::new(),
            deflate: None,
        }
    }
}

impl WsConfig {
    /// Sets [`max_message_size`](Self::max_message_size).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`max_frame_size`](Self::max_frame_size).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets [`max_header_size`](Self::max_header_size).
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes;
        self
    }

    /// Sets [`max_headers`](Self::max_headers).
    pub fn max_headers(mut self, count: usize) -> Self {
        self.max_headers = count;
        self
    }

    /// Sets [`subprotocols`](Self::subprotocols).
    pub fn subprotocols<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subprotocols = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`deliver_pings`](Self::deliver_pings).
    pub fn deliver_pings(mut self, deliver: bool) -> Self {
        self.deliver_pings = deliver;
        self
    }

    /// Sets [`accept_unmasked_frames`](Self::accept_unmasked_frames).
    pub fn accept_unmasked_frames(mut self, accept: bool) -> Self {
        self.accept_unmasked_frames = accept;
        self
    }

    /// Sets [`allowed_origins`](Self::allowed_origins): exact origins such
    /// as `"https://app.example.com"`, or `"*"` for any.
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Whether a request with `origin` (the `Origin` header's value, if
    /// any) to `host` (its `Host` header) may upgrade. See [Origin](#origin).
    pub fn origin_allowed(&self, origin: Option<&str>, host: &str) -> bool {
        let Some(origin) = origin.map(str::trim) else {
            return true;
        };
        if self.allowed_origins.is_empty() {
            return origin_host(origin).is_some_and(|h| h.eq_ignore_ascii_case(host.trim()));
        }
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }

    /// Turns permessage-deflate on with `deflate`.
    pub fn deflate(mut self, deflate: DeflateConfig) -> Self {
        self.deflate = Some(deflate);
        self
    }

    /// Largest frame payload actually accepted: `max_frame_size`, capped so
    /// that a frame header's 64-bit length never overflows a `usize`.
    pub(crate) fn frame_limit(&self) -> u64 {
        (self.max_frame_size.min(usize::MAX >> 1)) as u64
    }
}

/// The `host[:port]` of a serialized origin (`scheme://host[:port]`), or
/// `None` if it is not one (`null`, no scheme, user info, a path).
fn origin_host(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let host = rest.strip_suffix('/').unwrap_or(rest);
    let bad = |c: char| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace();
    (scheme_ok && !host.is_empty() && !host.contains(bad)).then_some(host)
}

/// permessage-deflate (RFC 7692) settings.
///
/// | field | default | meaning |
/// |---|---|---|
/// | `level` | 6 | compression level, 0 (store) to 9 |
/// | `threshold` | 0 | messages shorter than this many bytes are sent uncompressed |
/// | `server_no_context_takeover` | `true` | the server compresses each message on its own |
/// | `client_no_context_takeover` | `false` | the client compresses each message on its own |
/// | `server_max_window_bits` | 15 | largest LZ77 window of the server's compressor, 9 to 15 |
/// | `client_max_window_bits` | 12 | largest LZ77 window of the client's compressor, 9 to 15 |
///
/// A server asks for what these say and honours the client's offer where
/// it is stricter; a client offers them. zlib's raw deflate cannot
/// compress with a window of 8 bits: a side asked for one sends its
/// messages uncompressed (compression is per message), and still inflates
/// the peer's.
///
/// # Memory
///
/// No connection keeps a zlib stream between messages (a compressor is
/// about 300 KiB, an inflater 40 KiB): they are borrowed per message from
/// a spare kept per thread. What a connection keeps between messages is
/// the context of each direction with context takeover: the last
/// `2^window` bytes of its messages. The defaults bound that to 4 KiB
/// per connection: the server's own messages are compressed without
/// context (the server answers `server_no_context_takeover`, which RFC
/// 7692 lets it add unasked), and the client's window is held to 12 bits
/// (browsers offer `client_max_window_bits`, so the answer can lower it;
/// a client that did not offer it is answered `client_no_context_takeover`
/// when its 15-bit window is over this limit). `server_no_context_takeover
/// (false)` and `client_max_window_bits(15)` compress better for 32 KiB
/// more per connection and direction; docs/limits.md has the measurements.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Compression level, 0 to 9. Default 6 (zlib's default).
    pub level: u32,
    /// Messages shorter than this are sent uncompressed. Default 0.
    pub threshold: usize,
    /// The server compresses each message on its own. Default `true`.
    pub server_no_context_takeover: bool,
    /// The client resets its compression context after each message.
    pub client_no_context_takeover: bool,
    /// Largest window of the server's compressor, in bits (9 to 15). Default 15.
    pub server_max_window_bits: u8,
    /// Largest window of the client's compressor, in bits (9 to 15), and so
    /// the context a server keeps for a client between messages. Default 12.
    pub client_max_window_bits: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            level: 6,
            threshold: 0,
            server_no_context_takeover: true,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 12,
        }
    }
}

impl DeflateConfig {
    /// Sets [`level`](Self::level).
    pub fn level(mut self, level: u32) -> Self {
        self.level = level;
        self
    }

    /// Sets [`threshold`](Self::threshold).
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// Sets [`server_no_context_takeover`](Self::server_no_context_takeover).
    pub fn server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }

    /// Sets [`client_no_context_takeover`](Self::client_no_context_takeover).
    pub fn client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// Sets [`server_max_window_bits`](Self::server_max_window_bits).
    pub fn server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = bits;
        self
    }

    /// Sets [`client_max_window_bits`](Self::client_max_window_bits).
    pub fn client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let c: WsConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, WsConfig::default());
        assert_eq!(c.max_message_size, 10 << 20);
        assert_eq!(c.max_header_size, 16 << 10);
        assert!(c.deflate.is_none() && !c.deliver_pings);
        let d: DeflateConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(d, DeflateConfig::default());
        assert!(serde_json::from_str::<WsConfig>(r#"{"max_msg": 1}"#).is_err());
    }

    #[test]
    fn origins_are_checked_like_gorilla_websocket() {
        let same = WsConfig::default();
        let cases = [
            (None, "example.com", true),
            (Some("http://example.com"), "example.com", true),
            (Some("https://EXAMPLE.com:8443"), "example.com:8443", true),
            (Some("http://127.0.0.1:8080"), "127.0.0.1:8080", true),
            (Some("http://[::1]:8080"), "[::1]:8080", true),
            (Some("http://127.0.0.1:9090"), "127.0.0.1:8080", false),
            (Some("http://evil.example"), "example.com", false),
            (Some("http://example.com"), "example.com:80", false),
            (Some("null"), "example.com", false),
            (Some("example.com"), "example.com", false),
            (Some("http://user@example.com"), "example.com", false),
            (Some("http://example.com/path"), "example.com", false),
            (Some("http://example.com/"), "example.com", true),
            (Some(""), "example.com", false),
        ];
        for (origin, host, ok) in cases {
            assert_eq!(same.origin_allowed(origin, host), ok, "{origin:?} {host}");
        }
        let listed = WsConfig::default().allowed_origins(["https://app.example.com"]);
        assert!(listed.origin_allowed(Some("https://APP.example.com"), "api.example.com"));
        assert!(!listed.origin_allowed(Some("http://app.example.com"), "api.example.com"));
        assert!(!listed.origin_allowed(Some("https://api.example.com"), "api.example.com"));
        assert!(listed.origin_allowed(None, "api.example.com"));
        let any = WsConfig::default().allowed_origins(["*"]);
        assert!(any.origin_allowed(Some("null"), "example.com"));
        let c: WsConfig = serde_json::from_str(r#"{"allowed_origins": ["*"]}"#).unwrap();
        assert_eq!(c.allowed_origins, ["*"]);
    }
}
