//! A raw WebSocket client for the conformance and hostile-input tests,
//! over a blocking `std::net::TcpStream`. Frames are built by hand here
//! (masking, fragmentation, reserved bits, bogus lengths, chop points), not
//! with the crate under test, and everything the server sends is checked
//! strictly against RFC 6455 / RFC 7692 as it is parsed: unmasked frames,
//! minimal length encodings, valid opcodes and close codes, UTF-8 text, no
//! byte after the close frame.
#![allow(dead_code)]

pub mod deflate;

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};

use lubdub::ws::{Message, Ws, WsConfig};
use lubdub::{Backpressure, Limits, Worker, WorkerHandle, DEFAULT_MAX_PACKAGE_SIZE};

use crate::common::WAIT;
use deflate::{Agreed, Compressor, Inflater};

/// RFC 6455 §1.3's sample key and the accept value it must produce.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// `Sec-WebSocket-Accept` for [`KEY`].
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest inflated message the client accepts from the server.
const MAX_INFLATED: usize = 64 << 20;

/// The `ws_echo` example's worker, in process, on an ephemeral port: text
/// and binary messages come back as they came, pings are answered by the
/// protocol, backpressure pauses reading.
pub fn echo_worker(config: WsConfig) -> Worker<Ws> {
    // The worker's message limit counts what the WebSocket session
    // reassembles: it follows a raised `max_message_size`.
    let max = config.max_message_size.max(DEFAULT_MAX_PACKAGE_SIZE);
    let mut w = Worker::with_protocol("ws://127.0.0.1:0", Ws::server(config)).unwrap();
    w.name("ws-echo").limits(
        Limits::default()
            .backpressure(Backpressure::PauseRecv)
            .max_package_size(max),
    );
    w.on_message(|c, m| {
        if let Message::Text(_) | Message::Binary(_) = m {
            let _ = c.send(&m);
        }
    });
    w
}

/// [`echo_worker`], started.
pub fn echo_server(config: WsConfig) -> WorkerHandle<Ws> {
    echo_worker(config).start().unwrap()
}

/// A TCP connection to `addr` with the test timeouts and no Nagle delay.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// An upgrade request for `/` with [`KEY`] and `extra` header lines.
pub fn upgrade_request(addr: SocketAddr, extra: &[(&str, &str)]) -> Vec<u8> {
    upgrade_request_to(addr, "/", extra)
}

/// An upgrade request for `target` (a path and query) with [`KEY`] and
/// `extra` header lines.
pub fn upgrade_request_to(addr: SocketAddr, target: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        r.push_str(&format!("{name}: {value}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Reads until the peer closes; a reset after some bytes ends it too.
pub fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read to EOF failed after {} bytes: {e}", out.len()),
        }
    }
}

/// A masked client frame with a key of its own (for case tables built
/// before a connection exists).
pub fn cframe(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static STATE: AtomicU32 = AtomicU32::new(0x1234_5678);
    let mut s = STATE.fetch_add(0x6D2B_79F5, Ordering::Relaxed) | 1;
    let k = next_key(&mut s);
    encode(fin, rsv, opcode, Some(k), payload)
}

/// A masking key that changes from frame to frame (never all zeros, so an
/// implementation that ignores masking would see garbage).
fn next_key(state: &mut u32) -> [u8; 4] {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    (*state | 0x0101_0101).to_be_bytes()
}

/// A frame header: FIN, RSV bits (`rsv` 0 to 7, RSV1 = 4), opcode, the
/// masking key if any, and `len` in the shortest encoding.
pub fn header(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mut h = vec![(u8::from(fin) << 7) | ((rsv & 7) << 4) | (opcode & 0x0F)];
    let m = if mask.is_some() { 0x80 } else { 0 };
    if len <= 125 {
        h.push(m | len as u8);
    } else if len <= 0xFFFF {
        h.push(m | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(m | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(k) = mask {
        h.extend_from_slice(&k);
    }
    h
}

/// XORs `payload` with `key`, byte `i` with `key[i % 4]`.
pub fn mask(payload: &mut [u8], key: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// A whole frame, masked with `key` if given.
pub fn encode(fin: bool, rsv: u8, opcode: u8, key: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut f = header(fin, rsv, opcode, key, payload.len() as u64);
    let start = f.len();
    f.extend_from_slice(payload);
    if let Some(k) = key {
        mask(&mut f[start..], k);
    }
    f
}

/// A close frame payload: the code, then the reason bytes.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// `pattern` repeated and cut to `len` bytes (Autobahn's `payload_len`).
pub fn repeat_to(pattern: &[u8], len: usize) -> Vec<u8> {
    pattern.iter().copied().cycle().take(len).collect()
}

/// What the server said, one item at a time.
#[derive(Clone, PartialEq, Eq)]
pub enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame: its code (`None` for an empty payload) and reason.
    Close(Option<u16>, String),
    /// The server closed the TCP connection (FIN).
    Eof,
    /// The connection was reset.
    Reset,
}

impl Ev {
    pub fn text(s: &str) -> Self {
        Ev::Text(s.to_owned())
    }
}

fn short(bytes: &[u8]) -> String {
    if bytes.len() <= 40 {
        format!("{:02x?}", bytes)
    } else {
        format!("{} bytes {:02x?}..", bytes.len(), &bytes[..24])
    }
}

impl fmt::Debug for Ev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ev::Text(s) if s.len() <= 60 => write!(f, "Text({s:?})"),
            Ev::Text(s) => {
                let head: String = s.chars().take(40).collect();
                write!(f, "Text({} bytes {head:?}..)", s.len())
            }
            Ev::Binary(b) => write!(f, "Binary({})", short(b)),
            Ev::Ping(b) => write!(f, "Ping({})", short(b)),
            Ev::Pong(b) => write!(f, "Pong({})", short(b)),
            Ev::Close(c, r) => write!(f, "Close({c:?}, {r:?})"),
            Ev::Eof => f.write_str("Eof"),
            Ev::Reset => f.write_str("Reset"),
        }
    }
}

/// The server's answer to the upgrade request.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses an HTTP/1.1 response head (no body).
pub fn parse_response(head: &str) -> Response {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(
        parts.next(),
        Some("HTTP/1.1"),
        "status line {status_line:?}"
    );
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("header line {l:?}"));
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Response { status, headers }
}

/// An upgrade the server refused: its answer and body.
#[derive(Debug)]
pub struct Refused {
    pub response: Response,
    pub body: String,
}

/// A message being reassembled from frames.
struct Partial {
    opcode: u8,
    compressed: bool,
    data: Vec<u8>,
}

/// A WebSocket client speaking raw frames, after a successful upgrade.
pub struct RawClient {
    pub stream: TcpStream,
    /// Received bytes not parsed yet.
    buf: Vec<u8>,
    /// Bytes written so far, the upgrade request included.
    pub sent: u64,
    pub response: Response,
    /// permessage-deflate as the server accepted it.
    pub agreed: Option<Agreed>,
    inflater: Option<Inflater>,
    compressor: Option<Compressor>,
    partial: Option<Partial>,
    /// The server's close frame arrived.
    close_seen: bool,
    key_state: u32,
}

impl RawClient {
    /// Upgrades a new connection to `addr`, without extensions.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, &[])
    }

    /// Upgrades a new connection with `extra` request headers; asserts a
    /// correct `101` (accept key, upgrade headers, at most the extension
    /// offered) and sets up deflate if it was accepted.
    #[track_caller]
    pub fn connect_with(addr: SocketAddr, extra: &[(&str, &str)]) -> Self {
        Self::connect_to(addr, "/", extra)
    }

    /// [`connect_with`](Self::connect_with) for `target` (a path and query).
    #[track_caller]
    pub fn connect_to(addr: SocketAddr, target: &str, extra: &[(&str, &str)]) -> Self {
        Self::try_connect(addr, target, extra).unwrap_or_else(|r| {
            panic!(
                "upgrade refused: {} {:?}\n{}",
                r.response.status, r.response.headers, r.body
            )
        })
    }

    /// Upgrades a new connection to `target` (a path and query), or returns
    /// the server's refusal (any status but `101`) with its body, read
    /// until the server closed.
    pub fn try_connect(
        addr: SocketAddr,
        target: &str,
        extra: &[(&str, &str)],
    ) -> Result<Self, Refused> {
        let mut stream = tcp(addr);
        let request = upgrade_request_to(addr, target, extra);
        stream
            .write_all(&request)
            .expect("write the upgrade request");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).expect("read the upgrade response");
            assert!(n > 0, "connection closed during the upgrade: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..end].to_vec()).expect("ASCII response head");
        let response = parse_response(&head);
        if response.status != 101 {
            let mut body = buf[end..].to_vec();
            body.extend(read_to_eof(&mut stream));
            let body = String::from_utf8_lossy(&body).into_owned();
            return Err(Refused { response, body });
        }
        assert_eq!(response.header("Sec-WebSocket-Accept"), Some(ACCEPT));
        assert!(response
            .header("Upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
        assert!(response
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));
        let offered = extra
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("Sec-WebSocket-Extensions"));
        let agreed = response.header("Sec-WebSocket-Extensions").map(|v| {
            assert!(offered, "an extension that was not offered: {v}");
            Agreed::parse(v).unwrap_or_else(|e| panic!("bad extension answer: {e}"))
        });
        let inflater = agreed.as_ref().map(|a| {
            Inflater::new(
                a.server_max_window_bits.unwrap_or(15),
                a.server_no_context_takeover,
            )
        });
        let compressor = agreed.as_ref().map(|a| {
            Compressor::new(
                a.client_max_window_bits.unwrap_or(15).max(9),
                a.client_no_context_takeover,
            )
        });
        Ok(RawClient {
            stream,
            buf: buf[end..].to_vec(),
            sent: request.len() as u64,
            response,
            agreed,
            inflater,
            compressor,
            partial: None,
            close_seen: false,
            key_state: 0x9E37_79B9,
        })
    }

    /// A fresh masking key.
    pub fn key(&mut self) -> [u8; 4] {
        next_key(&mut self.key_state)
    }

    /// A masked frame (the client's normal framing).
    pub fn frame(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let k = self.key();
        encode(fin, rsv, opcode, Some(k), payload)
    }

    /// Writes `bytes` in one `write_all`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
        self.sent += bytes.len() as u64;
    }

    /// Writes `bytes` in pieces of `chop` bytes, one write each.
    pub fn send_chopped(&mut self, bytes: &[u8], chop: usize) {
        for piece in bytes.chunks(chop.max(1)) {
            self.send(piece);
        }
    }

    /// Writes one masked frame.
    pub fn send_frame(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) {
        let f = self.frame(fin, rsv, opcode, payload);
        self.send(&f);
    }

    /// Writes a close frame with `code` and no reason.
    pub fn send_close(&mut self, code: u16) {
        self.send_frame(true, 0, OP_CLOSE, &close_payload(code, b""));
    }

    /// Compresses `msg` with the negotiated parameters and writes it as
    /// frames of at most `fragment` payload bytes (0: one frame).
    pub fn send_compressed(&mut self, opcode: u8, msg: &[u8], fragment: usize) {
        let payload = self
            .compressor
            .as_mut()
            .expect("permessage-deflate was not negotiated")
            .message(msg);
        let size = if fragment == 0 {
            payload.len().max(1)
        } else {
            fragment
        };
        let mut out = Vec::with_capacity(payload.len() + 16 * (payload.len() / size + 1));
        let pieces: Vec<&[u8]> = if payload.is_empty() {
            vec![&[]]
        } else {
            payload.chunks(size).collect()
        };
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let (rsv, op) = if i == 0 { (4, opcode) } else { (0, OP_CONT) };
            let f = self.frame(i == last, rsv, op, piece);
            out.extend_from_slice(&f);
        }
        self.send(&out);
    }

    /// Reads more bytes; `Ok(false)` at EOF.
    fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next event from the server; panics if the server breaks the
    /// RFC, or on the read timeout.
    pub fn next_event(&mut self) -> Ev {
        loop {
            if self.close_seen && !self.buf.is_empty() {
                panic!("server sent {} after its close frame", short(&self.buf));
            }
            if let Some(ev) = self.parse_one() {
                return ev;
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => {
                    assert!(
                        self.buf.is_empty(),
                        "EOF inside a frame: {}",
                        short(&self.buf)
                    );
                    return Ev::Eof;
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ev::Reset,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!(
                        "no event from the server within {WAIT:?} ({} bytes of a frame \
                         buffered, {} of a message; {} bytes sent from {})",
                        self.buf.len(),
                        self.partial.as_ref().map_or(0, |p| p.data.len()),
                        self.sent,
                        self.stream.local_addr().unwrap()
                    )
                }
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Parses one frame from the buffer into an event, if it is all there
    /// (a non-final data frame is absorbed and parsing goes on).
    fn parse_one(&mut self) -> Option<Ev> {
        loop {
            let (fin, rsv, opcode, len, at) = {
                let b = &self.buf;
                if b.len() < 2 {
                    return None;
                }
                let fin = b[0] & 0x80 != 0;
                let rsv = (b[0] >> 4) & 7;
                let opcode = b[0] & 0x0F;
                assert_eq!(b[1] & 0x80, 0, "server sent a masked frame");
                let (len, at) = match b[1] & 0x7F {
                    126 => {
                        let l = u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?));
                        assert!(l > 125, "length {l} not in its shortest form");
                        (l, 4)
                    }
                    127 => {
                        let l = u64::from_be_bytes(b.get(2..10)?.try_into().ok()?);
                        assert!(
                            l > 0xFFFF && l >> 63 == 0,
                            "length {l} not in its shortest form"
                        );
                        (l, 10)
                    }
                    n => (u64::from(n), 2),
                };
                (fin, rsv, opcode, len as usize, at)
            };
            if self.buf.len() < at + len {
                return None;
            }
            let payload: Vec<u8> = self.buf[at..at + len].to_vec();
            self.buf.drain(..at + len);
            assert!(
                matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10),
                "server used reserved opcode {opcode}"
            );
            assert_eq!(rsv & 3, 0, "server set RSV2/RSV3");
            if opcode >= 8 {
                assert!(fin, "server fragmented a control frame");
                assert_eq!(rsv, 0, "server set RSV1 on a control frame");
                assert!(len <= 125, "server sent a control frame of {len} bytes");
                return Some(match opcode {
                    OP_PING => Ev::Ping(payload),
                    OP_PONG => Ev::Pong(payload),
                    _ => self.close_event(&payload),
                });
            }
            let compressed = rsv & 4 != 0;
            match (&mut self.partial, opcode) {
                (None, OP_CONT) => panic!("server sent a continuation without a message"),
                (Some(_), OP_TEXT | OP_BINARY) => {
                    panic!("server started a message inside another")
                }
                (Some(p), _) => {
                    assert!(!compressed, "server set RSV1 on a continuation frame");
                    p.data.extend_from_slice(&payload);
                }
                (None, _) => {
                    if compressed {
                        assert!(self.agreed.is_some(), "RSV1 without permessage-deflate");
                    }
                    self.partial = Some(Partial {
                        opcode,
                        compressed,
                        data: payload,
                    });
                }
            }
            if !fin {
                continue;
            }
            let p = self.partial.take()?;
            let data = if p.compressed {
                let inflater = self.inflater.as_mut()?;
                inflater
                    .message(&p.data, MAX_INFLATED)
                    .unwrap_or_else(|e| panic!("server's compressed message: {e}"))
            } else {
                p.data
            };
            return Some(if p.opcode == OP_TEXT {
                Ev::Text(String::from_utf8(data).expect("server sent invalid UTF-8 text"))
            } else {
                Ev::Binary(data)
            });
        }
    }

    fn close_event(&mut self, payload: &[u8]) -> Ev {
        self.close_seen = true;
        match payload {
            [] => Ev::Close(None, String::new()),
            [_] => panic!("server sent a close payload of one byte"),
            [hi, lo, reason @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                assert!(
                    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                    "server sent close code {code}, which may not be sent"
                );
                let reason =
                    String::from_utf8(reason.to_vec()).expect("server's close reason is UTF-8");
                Ev::Close(Some(code), reason)
            }
        }
    }

    /// Asserts that the next event is `want`.
    #[track_caller]
    pub fn expect(&mut self, want: &Ev) {
        let got = self.next_event();
        assert_eq!(&got, want);
    }

    /// Asserts the end of a session: the server's close frame with a code
    /// in `allowed` (`None`: an empty payload), then the server closes the
    /// TCP connection (a FIN; no further byte). When the server started
    /// the close, the client answers it first, as a peer should.
    #[track_caller]
    pub fn expect_close(&mut self, allowed: &[Option<u16>]) -> (Option<u16>, String) {
        let ev = self.next_event();
        let Ev::Close(code, reason) = ev else {
            panic!("expected a close frame with one of {allowed:?}, got {ev:?}");
        };
        assert!(
            allowed.contains(&code),
            "close code {code:?} ({reason:?}), expected one of {allowed:?}"
        );
        // Answer the close as a peer would; the server may already be gone.
        let echo = match code {
            Some(c) => self.frame(true, 0, OP_CLOSE, &close_payload(c, b"")),
            None => self.frame(true, 0, OP_CLOSE, b""),
        };
        let _ = self.stream.write_all(&echo);
        let end = self.next_event();
        assert_eq!(
            end,
            Ev::Eof,
            "the server must close TCP after its close frame"
        );
        (code, reason)
    }

    /// Sends a close with `code`, then asserts the echo (a code in
    /// `allowed`) and the TCP close.
    #[track_caller]
    pub fn close(&mut self, code: u16, allowed: &[Option<u16>]) {
        self.send_close(code);
        let ev = self.next_event();
        let Ev::Close(got, reason) = ev else {
            panic!("expected the close echo, got {ev:?}");
        };
        assert!(
            allowed.contains(&got),
            "close echo {got:?} ({reason:?}), expected one of {allowed:?}"
        );
        assert_eq!(
            self.next_event(),
            Ev::Eof,
            "the server must close TCP after its close frame"
        );
    }

    /// Sends `text` and asserts it comes back.
    #[track_caller]
    pub fn roundtrip(&mut self, text: &str) {
        self.send_frame(true, 0, OP_TEXT, text.as_bytes());
        self.expect(&Ev::text(text));
    }

    /// Whether nothing has arrived from the server yet (checked without
    /// blocking).
    pub fn nothing_received(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream.set_nonblocking(true).unwrap();
        let mut one = [0u8; 1];
        let r = self.stream.peek(&mut one);
        self.stream.set_nonblocking(false).unwrap();
        matches!(r, Err(e) if e.kind() == ErrorKind::WouldBlock)
    }
}
