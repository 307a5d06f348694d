//! WebSocket (RFC 6455) with permessage-deflate (RFC 7692) for lubdub,
//! sans-IO, in the server and the client role.
//!
//! [`Ws`] implements [`Protocol`] with `SCHEME = "ws"`:
//!
//! | associated type | here |
//! |---|---|
//! | `Message` (received) | [`Message`]: `Text`, `Binary`, `Pong`, and `Ping` if [`WsConfig::deliver_pings`] |
//! | `Outgoing` (sent) | [`Message`]: `Ping`/`Pong` send control frames (a heartbeat pings this way) |
//! | `Handshake` | [`Handshake`]: the client's [`Request`] (server) or the server's [`Response`] (client) |
//! | `Decoder` | [`WsDecoder`]: handshake progress, then the frame decoder (reassembly, inflater) |
//! | `Encoder` | [`WsEncoder`]: masking (client), compressor, close state |
//!
//! A [`Ws`] is configuration shared by every connection; each connection
//! gets its own [`WsDecoder`] and [`WsEncoder`] ([`Protocol::decoder`],
//! [`Protocol::encoder`]), or both at once in a [`Session`].
//!
//! # A connection's life
//!
//! 1. [`Decoder::start`] returns [`Start::Handshake`]; the client role
//!    writes its upgrade request to the wire.
//! 2. `decode` waits for the whole HTTP head (at most
//!    [`WsConfig::max_header_size`]), parses it with `httparse` and returns
//!    [`Decoded::Handshake`] covering exactly the head: bytes after it
//!    (frames sent right behind the request) stay in the buffer. A server
//!    answers a bad upgrade request with an HTTP error itself (see the
//!    [`handshake`] module); a request that is no upgrade at all is
//!    delivered with [`Request::is_upgrade`] false, for an HTTP handler to
//!    answer through [`Decoder::reject`] (any status, a `200` page
//!    included), or `426` if the hook calls [`Decoder::accept`].
//! 3. [`Decoder::accept`] writes `101 Switching Protocols` (server) and
//!    sets up the encoder and decoder for what was negotiated.
//! 4. Frames. Pings are answered with pongs on the wire; a close frame
//!    asks the connection to close with [`SessionClose::by_peer`], and
//!    [`Encoder::encode_close`] writes the echo (see [`WsEncoder`] for the
//!    close code of every [`Closing`]).
//!
//! Limits: [`WsConfig`] (10 MiB messages and frames, 16 KiB heads by
//! default). A length beyond them fails from the frame header, before
//! anything is allocated; inflated messages are checked as they grow.
//! No input makes the decoder panic (property-tested).
//!
//! # Example: a client and a server, no sockets
//!
//! ```
//! use lubdub_protocol::{Closing, Decoded, Session, Start};
//! use lubdub_ws::{Message, Ws, WsConfig};
//!
//! let ws = Ws::client(WsConfig::default(), "example.com", "/chat?room=1").unwrap();
//! let mut client = Session::new(ws);
//! let mut server = Session::new(Ws::default());
//!
//! // The client speaks first: its upgrade request.
//! assert_eq!(client.start(), Start::Handshake);
//! assert_eq!(server.start(), Start::Handshake);
//! let request = client.wire.take();
//! let Decoded::Handshake { data, consumed } = server.decode(&request).unwrap() else {
//!     panic!("a whole request");
//! };
//! assert_eq!(consumed, request.len());
//! let req = data.request().unwrap();
//! assert!(req.is_upgrade());
//! assert_eq!((req.path(), req.query()), ("/chat", Some("room=1")));
//! server.accept(&data);
//!
//! // The client checks the 101 and is established too.
//! let response = server.wire.take();
//! let Decoded::Handshake { data, .. } = client.decode(&response).unwrap() else {
//!     panic!("a whole response");
//! };
//! client.accept(&data);
//! assert!(client.decoder.is_established() && server.decoder.is_established());
//!
//! // Client frames are masked, server frames are not.
//! let bytes = client.encode(&Message::from("hello")).unwrap();
//! assert_eq!(
//!     server.decode(&bytes).unwrap(),
//!     Decoded::Message { msg: Message::Text("hello".into()), consumed: bytes.len() }
//! );
//!
//! // The server closes: 1000, then the client reports the peer's close.
//! let bye = server.encode_close(&Closing::Local { code: None, reason: "" });
//! assert_eq!(bye, [0x88, 0x02, 0x03, 0xe8]);
//! assert_eq!(client.decode(&bye).unwrap(), Decoded::Consumed(4));
//! assert_eq!(client.wire.close.unwrap().code, 1000);
//! ```
//!
//! # For fuzzing and tests
//!
//! [`Ws::server_without_handshake`] and [`Ws::client_without_handshake`]
//! decode frames from the first byte, with deflate as configured, so a
//! fuzz target reaches the frame decoder directly; `Ws::default()` fuzzes
//! the handshake. [`violation_code`] maps an error to its close code.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
mod config;
mod decoder;
pub mod deflate;
mod encoder;
pub mod frame;
pub mod handshake;
mod http;
mod mask;
mod reassembly;
mod utf8;

use std::fmt;
use std::sync::Arc;

pub use config::{
    DeflateConfig, WsConfig, DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEADER_SIZE,
    DEFAULT_MAX_MESSAGE_SIZE,
};
pub use encoder::{violation_code, WsEncoder};
pub use http::{Handshake, Request, Response};
pub use lubdub_protocol::{
    Closing, Decoded, Decoder, Encoder, Protocol, ProtocolError, Reject, Session, SessionClose,
    Start, Wire,
};

use client::ClientTarget;
use decoder::FrameDecoder;
use deflate::Negotiated;
use frame::{HeaderRules, MaskRule};
use http::{reason_phrase, write_error, write_response, HeadScanner};

/// A WebSocket message, received or sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping (at most 125 bytes). Received ones are answered automatically
    /// and delivered only with [`WsConfig::deliver_pings`].
    Ping(Vec<u8>),
    /// A pong (at most 125 bytes), always delivered (a heartbeat measures
    /// round trips with them; unsolicited pongs are allowed).
    Pong(Vec<u8>),
}

impl Message {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(s) => s.as_bytes(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b,
        }
    }

    /// The payload bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Message::Text(s) => s.into_bytes(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b,
        }
    }

    /// Whether this is a ping or a pong.
    pub fn is_control(&self) -> bool {
        matches!(self, Message::Ping(_) | Message::Pong(_))
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(s)
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::Text(s.to_owned())
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Message::Binary(b)
    }
}

impl From<&[u8]> for Message {
    fn from(b: &[u8]) -> Self {
        Message::Binary(b.to_vec())
    }
}

/// Which end of the connection a [`Ws`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts upgrade requests; receives masked frames.
    Server,
    /// Sends the upgrade request; masks its frames.
    Client,
}

/// Answers a plain HTTP request (not an upgrade) on a WebSocket port.
type HttpHandler = Arc<dyn Fn(&Request) -> Option<Reject> + Send + Sync>;

/// What every clone of a [`Ws`] shares.
struct Shared {
    config: WsConfig,
    /// `None` in the server role.
    client: Option<ClientTarget>,
    handshake: bool,
    /// Server role: answers requests that are not upgrades.
    http: Option<HttpHandler>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("client", &self.client)
            .field("handshake", &self.handshake)
            .field("http", &self.http.is_some())
            .finish()
    }
}

enum State {
    /// Reading the peer's HTTP head; the client knows the accept key to expect.
    Head {
        scanner: HeadScanner,
        expected_accept: Option<String>,
    },
    /// The handshake was delivered; waiting for `accept` or `reject`.
    Verdict,
    /// Established: frames.
    Frames(Box<FrameDecoder>),
    /// Rejected or failed: nothing more is decoded.
    Done,
}

/// The WebSocket protocol, server or client role. See the [crate docs](crate).
///
/// A `Ws` value is configuration only, cheap to clone (one `Arc`): each
/// connection decodes with its own [`WsDecoder`] and encodes with its own
/// [`WsEncoder`].
#[derive(Clone)]
pub struct Ws {
    shared: Arc<Shared>,
}

/// One connection's WebSocket decoding state: the handshake's progress, then
/// the frame decoder (a message being reassembled, the inflater).
pub struct WsDecoder {
    state: State,
}

impl fmt::Debug for WsDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Head { .. } => "handshake",
            State::Verdict => "awaiting accept or reject",
            State::Frames(_) => "established",
            State::Done => "done",
        };
        f.debug_struct("WsDecoder").field("state", &state).finish()
    }
}

impl WsDecoder {
    /// Whether the handshake is done and frames are being decoded.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Frames(_))
    }
}

impl Default for Ws {
    /// The server role with [`WsConfig::default`].
    fn default() -> Self {
        Ws::server(WsConfig::default())
    }
}

impl fmt::Debug for Ws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ws")
            .field("role", &self.role())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Ws {
    fn from_shared(shared: Arc<Shared>) -> Self {
        Ws { shared }
    }

    /// The server role: answers upgrade requests, configured by `config`.
    pub fn server(config: WsConfig) -> Self {
        Ws::from_shared(Arc::new(Shared {
            config,
            client: None,
            handshake: true,
            http: None,
        }))
    }

    /// The client role: requests `path_and_query` (`/chat?room=1`) with
    /// `Host: host_header` (`example.com:8080`), offering the configured
    /// subprotocols and deflate. Fails if either would break the request.
    pub fn client(
        config: WsConfig,
        host_header: &str,
        path_and_query: &str,
    ) -> Result<Self, ProtocolError> {
        let target = ClientTarget::new(host_header, path_and_query)?;
        Ok(Ws::from_shared(Arc::new(Shared {
            config,
            client: Some(target),
            handshake: true,
            http: None,
        })))
    }

    /// Client role: adds a header to the upgrade request (`Origin`,
    /// `Authorization`, a cookie). Fails for a name or value that would
    /// break the request, or in the server role.
    pub fn with_header(self, name: &str, value: &str) -> Result<Self, ProtocolError> {
        let mut shared = Shared {
            config: self.shared.config.clone(),
            client: self.shared.client.clone(),
            handshake: self.shared.handshake,
            http: self.shared.http.clone(),
        };
        let Some(target) = shared.client.as_mut() else {
            return Err(ProtocolError::Malformed(
                "request headers are for the client role",
            ));
        };
        target.add_header(name, value)?;
        Ok(Ws::from_shared(Arc::new(shared)))
    }

    /// The server role with the handshake already done elsewhere: frames
    /// from the first byte, deflate as `config` describes if it has one.
    pub fn server_without_handshake(config: WsConfig) -> Self {
        Ws::from_shared(Arc::new(Shared {
            config,
            client: None,
            handshake: false,
            http: None,
        }))
    }

    /// The client role with the handshake already done elsewhere (see
    /// [`server_without_handshake`](Self::server_without_handshake)).
    pub fn client_without_handshake(config: WsConfig) -> Self {
        let target = ClientTarget {
            host: String::new(),
            path: "/".into(),
            headers: Vec::new(),
        };
        Ws::from_shared(Arc::new(Shared {
            config,
            client: Some(target),
            handshake: false,
            http: None,
        }))
    }

    /// Server role: answers plain HTTP requests (a `GET /` that is not an
    /// upgrade) on the same port with what `handler` returns (an HTTP
    /// response as a [`Reject`]: any status, `200` with a page included),
    /// then closes that connection. `None` hands the request on to the
    /// handshake hook, which answers `426 Upgrade Required` unless it
    /// refuses otherwise. A `HEAD` request gets the head without the body.
    ///
    /// ```
    /// use lubdub_ws::{Reject, Ws};
    ///
    /// let ws = Ws::default().serve_http(|req| {
    ///     (req.path() == "/").then(|| {
    ///         Reject::new(200)
    ///             .header("Content-Type", "text/html; charset=utf-8")
    ///             .body("<h1>hello</h1>")
    ///     })
    /// });
    /// # let _ = ws;
    /// ```
    pub fn serve_http(
        self,
        handler: impl Fn(&Request) -> Option<Reject> + Send + Sync + 'static,
    ) -> Self {
        let shared = Shared {
            config: self.shared.config.clone(),
            client: self.shared.client.clone(),
            handshake: self.shared.handshake,
            http: Some(Arc::new(handler)),
        };
        Ws::from_shared(Arc::new(shared))
    }

    /// The configuration.
    pub fn config(&self) -> &WsConfig {
        &self.shared.config
    }

    /// The role.
    pub fn role(&self) -> Role {
        if self.shared.client.is_some() {
            Role::Client
        } else {
            Role::Server
        }
    }

    fn is_client(&self) -> bool {
        self.role() == Role::Client
    }

    fn assumed_deflate(&self) -> Option<Negotiated> {
        let cfg = self.shared.config.deflate.as_ref()?;
        Some(Negotiated::assumed(cfg, self.is_client()))
    }

    fn frame_decoder(&self, deflate: Option<&Negotiated>) -> FrameDecoder {
        let cfg = &self.shared.config;
        let client = self.is_client();
        let mask = if client {
            MaskRule::Forbidden
        } else if cfg.accept_unmasked_frames {
            MaskRule::Optional
        } else {
            MaskRule::Required
        };
        let rules = HeaderRules {
            mask,
            rsv1_allowed: deflate.is_some(),
            max_frame: cfg.frame_limit(),
        };
        FrameDecoder::new(
            rules,
            client,
            cfg.max_message_size,
            cfg.deliver_pings,
            deflate.map(Negotiated::inflater),
        )
    }
}

impl WsDecoder {
    fn decode_head(&mut self, ws: &Ws, src: &[u8], wire: &mut Wire<'_>) -> DecodeResult {
        let State::Head {
            scanner,
            expected_accept,
        } = &mut self.state
        else {
            return Ok(Decoded::Incomplete);
        };
        let cfg = &ws.shared.config;
        let client = ws.shared.client.is_some();
        let head_len = match scanner.find(src, cfg.max_header_size).0 {
            Ok(None) => return Ok(Decoded::Incomplete),
            Ok(Some(n)) => n,
            Err(e) => {
                if !client {
                    write_error(wire.buffer(), 431, &[], &e.to_string());
                }
                self.state = State::Done;
                return Err(e);
            }
        };
        let head = &src[..head_len];
        let result = if client {
            let expected = expected_accept.take().unwrap_or_default();
            client::read_response(head, cfg, &expected)
                .map(|(res, n)| (Handshake::Response(res), n))
        } else {
            handshake::read_request(head, cfg, wire.buffer())
                .map(|(req, n)| (Handshake::Request(req), n))
        };
        match result {
            Ok((Handshake::Request(req), consumed)) if !req.is_upgrade() => {
                // A plain HTTP request: the page handler answers it, if it will.
                let answer = ws.shared.http.as_ref().and_then(|page| page(&req));
                match answer {
                    Some(response) => {
                        self.reject(ws, &Handshake::Request(req), &response, wire);
                        Ok(Decoded::Consumed(consumed))
                    }
                    None => {
                        self.state = State::Verdict;
                        Ok(Decoded::Handshake {
                            data: Handshake::Request(req),
                            consumed,
                        })
                    }
                }
            }
            Ok((data, consumed)) => {
                self.state = State::Verdict;
                Ok(Decoded::Handshake { data, consumed })
            }
            Err(e) => {
                self.state = State::Done;
                Err(e)
            }
        }
    }
}

type DecodeResult = Result<Decoded<Message, Handshake>, ProtocolError>;

impl Protocol for Ws {
    const SCHEME: &'static str = "ws";
    const TLS_SCHEME: Option<&'static str> = Some("wss");
    type Message = Message;
    type Outgoing = Message;
    type Handshake = Handshake;
    type Decoder = WsDecoder;
    type Encoder = WsEncoder;

    fn decoder(&self) -> WsDecoder {
        let state = if self.shared.handshake {
            State::Head {
                scanner: HeadScanner::default(),
                expected_accept: None,
            }
        } else {
            let assumed = self.assumed_deflate();
            State::Frames(Box::new(self.frame_decoder(assumed.as_ref())))
        };
        WsDecoder { state }
    }

    fn encoder(&self) -> WsEncoder {
        let mut encoder = WsEncoder::new(self.is_client());
        if !self.shared.handshake {
            encoder.establish(self.assumed_deflate().as_ref());
        }
        encoder
    }

    /// The client role for `host` and `path_and_query`, with this
    /// configuration; a `Ws` already in the client role keeps its target
    /// and headers.
    fn for_client(&self, host: &str, path_and_query: &str) -> Result<Self, ProtocolError> {
        match self.role() {
            Role::Client => Ok(self.clone()),
            Role::Server => Ws::client(self.shared.config.clone(), host, path_and_query),
        }
    }
}

impl Decoder<Ws> for WsDecoder {
    fn start(&mut self, ws: &Ws, wire: &mut Wire<'_>) -> Start {
        if !ws.shared.handshake {
            return Start::Established;
        }
        let expected_accept = ws.shared.client.as_ref().map(|target| {
            let key = client::new_key();
            client::write_request(wire.buffer(), target, &ws.shared.config, &key);
            handshake::accept_key(&key)
        });
        self.state = State::Head {
            scanner: HeadScanner::default(),
            expected_accept,
        };
        Start::Handshake
    }

    fn decode(&mut self, ws: &Ws, src: &[u8], wire: &mut Wire<'_>) -> DecodeResult {
        match &mut self.state {
            State::Head { .. } => self.decode_head(ws, src, wire),
            State::Verdict => Ok(Decoded::Incomplete),
            State::Frames(decoder) => decoder.decode(src, wire),
            State::Done => Ok(match src.len() {
                0 => Decoded::Incomplete,
                n => Decoded::Consumed(n),
            }),
        }
    }

    fn accept(
        &mut self,
        ws: &Ws,
        handshake: &Handshake,
        encoder: &mut WsEncoder,
        wire: &mut Wire<'_>,
    ) {
        let deflate = match (ws.role(), handshake) {
            (Role::Server, Handshake::Request(req)) => match &req.upgrade {
                Some(upgrade) => {
                    handshake::write_switching(wire.buffer(), upgrade);
                    upgrade.deflate.as_ref()
                }
                None => {
                    // Not an upgrade and nobody answered it as HTTP: 426.
                    let extra = [
                        ("Upgrade".to_owned(), "websocket".to_owned()),
                        ("Sec-WebSocket-Version".to_owned(), "13".to_owned()),
                    ];
                    write_error(wire.buffer(), 426, &extra, "this is a WebSocket endpoint");
                    wire.close(SessionClose::local(426, reason_phrase(426)));
                    self.state = State::Done;
                    return;
                }
            },
            (Role::Client, Handshake::Response(res)) => res.deflate.as_ref(),
            _ => {
                log::warn!("websocket: accept() with the other role's handshake");
                wire.close(SessionClose::local(1002, "handshake of the other role"));
                self.state = State::Done;
                return;
            }
        };
        encoder.establish(deflate);
        self.state = State::Frames(Box::new(ws.frame_decoder(deflate)));
    }

    fn reject(&mut self, _ws: &Ws, handshake: &Handshake, reject: &Reject, wire: &mut Wire<'_>) {
        let status = if (200..=999).contains(&reject.status) {
            reject.status
        } else {
            log::warn!(
                "websocket: reject status {} is not a final status; sending 500",
                reject.status
            );
            500
        };
        if let Handshake::Request(req) = handshake {
            let send_body = req.method != "HEAD";
            write_response(
                wire.buffer(),
                status,
                &reject.headers,
                &reject.body,
                send_body,
            );
        }
        wire.close(SessionClose::local(status, reason_phrase(status)));
        self.state = State::Done;
    }

    /// The message being reassembled and the inflater's buffers and window.
    fn held_bytes(&self) -> usize {
        match &self.state {
            State::Frames(decoder) => decoder.held_bytes(),
            _ => 0,
        }
    }
}

impl Encoder<Ws> for WsEncoder {
    fn encode(&mut self, _ws: &Ws, msg: &Message, dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        WsEncoder::encode(self, msg, dst)
    }

    fn encode_close(&mut self, _ws: &Ws, closing: &Closing<'_>, dst: &mut Vec<u8>) {
        WsEncoder::encode_close(self, closing, dst);
    }

    /// The compressor's window and hash tables, when deflate is on.
    fn held_bytes(&self) -> usize {
        WsEncoder::held_bytes(self)
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    /// An established connection without deflate, idle or busy, carries
    /// no zlib stream: flate2's compressor and inflater (160 bytes each,
    /// inline) are boxed and allocated only when deflate was negotiated.
    /// (Server RSS per idle WebSocket connection, `ws-idle-mem` in the
    /// bench: 1.8 KiB with them inline.)
    #[test]
    fn per_connection_state_leaves_deflate_out() {
        assert!(size_of::<crate::WsEncoder>() <= 32);
        assert!(size_of::<crate::decoder::FrameDecoder>() <= 128);
    }
}
