//! The one WebSocket client codec of the load generator, used by the
//! WebSocket load (`load/ws.rs`, `load/tls.rs`), the hub load
//! (`load/hub.rs`) and the `attack-ws` clients (`load/healthy.rs`,
//! `load/attackers.rs`): the opening handshake as a browser does it (or
//! with extra header lines), masked client frames, the parsing of
//! unmasked server frames, the close handshake, and permessage-deflate.
//!
//! The handshake is `GET` with `Upgrade: websocket`, a fresh
//! `Sec-WebSocket-Key`, version 13 (and with deflate,
//! `Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits`);
//! the answer's `101`, accept key
//! (`tungstenite::handshake::derive_accept_key`) and extension are
//! checked. Client frames are masked, as RFC 6455 requires; server frames
//! must not be.
//!
//! Hand-written on purpose: the load generator must not decode the lubdub
//! side with lubdub's own WebSocket code, and a client library would add
//! its per-message cost (owned messages, a task per socket) to the
//! measurements.

use std::ops::Range;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use crate::load::connect::Conn;
use crate::payload::splitmix64;

/// Largest handshake response the load generator reads.
const MAX_HEAD: usize = 16 * 1024;
/// The bytes a sync flush ends with, left off on the wire (RFC 7692).
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Opcode of a continuation frame (the second and later fragments of a
/// message).
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xa;
/// The FIN bit of a frame's first byte: the message's last frame.
pub const FIN: u8 = 0x80;
/// The RSV1 bit: a compressed message (permessage-deflate).
pub const RSV1: u8 = 0x40;

// ---- frames ----

/// Header length (without a masking key) of a frame of `len` payload bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

/// Writes a frame header (`b0` = FIN, RSV and opcode bits) for `len`
/// payload bytes, with the mask bit if `masked` (the key is not written).
/// Returns its length.
pub fn write_header(out: &mut [u8], b0: u8, masked: bool, len: usize) -> usize {
    let m = if masked { 0x80 } else { 0 };
    out[0] = b0;
    match len {
        0..=125 => {
            out[1] = m | len as u8;
            2
        }
        126..=65_535 => {
            out[1] = m | 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            out[1] = m | 127;
            out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    }
}

/// Appends a masked client frame carrying `payload` (`b0` = FIN, RSV and
/// opcode bits).
pub fn push_client_frame(out: &mut Vec<u8>, b0: u8, payload: &[u8], key: [u8; 4]) {
    let mut header = [0u8; 10];
    let h = write_header(&mut header, b0, true, payload.len());
    out.extend_from_slice(&header[..h]);
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key);
}

/// The masking key of message `seq` of connection `conn`: a different key
/// for every frame (splitmix64), as a browser's random keys are.
pub fn mask_key(conn: u32, seq: u64) -> [u8; 4] {
    (splitmix64(((conn as u64) << 40) ^ seq) as u32).to_ne_bytes()
}

/// XORs `buf` with `key` (the payload starts at key phase 0), 8 bytes at a time.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let k8 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("8 bytes")) ^ k8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    let done = buf.len() / 8 * 8;
    for (i, b) in buf[done..].iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// Parses a server frame header at the start of `b`: `(header length,
/// first byte, payload length)`, or `None` if it is not all there.
pub fn parse_server_header(b: &[u8]) -> Result<Option<(usize, u8, usize)>> {
    if b.len() < 2 {
        return Ok(None);
    }
    ensure!(b[1] & 0x80 == 0, "the server masked a frame");
    let (h, len) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (4, u16::from_be_bytes([b[2], b[3]]) as usize),
        127 if b.len() >= 10 => (
            10,
            usize::try_from(u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")))?,
        ),
        126 | 127 => return Ok(None),
        n => (2, n as usize),
    };
    Ok(Some((h, b[0], len)))
}

/// A whole server frame found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    /// The frame's opcode.
    pub opcode: u8,
    /// Where the payload lies in the buffer.
    pub payload: Range<usize>,
    /// Bytes the whole frame takes.
    pub len: usize,
}

/// Parses the server frame at the start of `buf` if it is all there
/// (`Ok(None)` otherwise) and is a whole message of at most `max` bytes
/// without extension bits: what the hub load expects. Anything else is an
/// error, never a panic.
pub fn whole_server_frame(buf: &[u8], max: usize) -> Result<Option<ServerFrame>> {
    let Some((h, b0, len)) = parse_server_header(buf)? else {
        return Ok(None);
    };
    if b0 & FIN == 0 {
        bail!("a fragmented frame (FIN clear): the load generator expects whole small messages");
    }
    if b0 & 0x70 != 0 {
        bail!("a frame with RSV bits set: no extension was negotiated");
    }
    if len > max {
        bail!("a {len}-byte frame: larger than the load generator's {max}");
    }
    if buf.len() < h + len {
        return Ok(None);
    }
    Ok(Some(ServerFrame {
        opcode: b0 & 0x0f,
        payload: h..h + len,
        len: h + len,
    }))
}

/// The status code of a close frame's payload (`None` for an empty one;
/// an error for a payload of one byte).
pub fn close_code(payload: &[u8]) -> Result<Option<u16>> {
    match payload {
        [] => Ok(None),
        [_] => bail!("a close frame with a one-byte payload"),
        [a, b, ..] => Ok(Some(u16::from_be_bytes([*a, *b]))),
    }
}

// ---- the opening handshake ----

/// What the handshake negotiated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upgraded {
    /// Bytes the server sent after its `101` head (normally none).
    pub leftover: Vec<u8>,
    /// permessage-deflate, if the server accepted it.
    pub deflate: Option<DeflateParams>,
}

/// The permessage-deflate parameters of a `101` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateParams {
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// Window of the client's compressor, in bits.
    pub client_window_bits: u8,
}

/// The opening handshake request for `path` on `host`, as a browser sends
/// it.
pub fn upgrade_request(host: &str, path: &str, key: &str, offer_deflate: bool) -> String {
    upgrade_request_with(host, path, key, offer_deflate, &[])
}

/// [`upgrade_request`] with `extra` header lines after the usual ones (an
/// `Origin`, or a second `Host` for the attack scenario).
pub fn upgrade_request_with(
    host: &str,
    path: &str,
    key: &str,
    offer_deflate: bool,
    extra: &[(&str, &str)],
) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{}",
        if offer_deflate {
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        } else {
            ""
        }
    );
    for (name, value) in extra {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// The status code of a response head.
pub fn response_status(head: &[u8]) -> Result<u16> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(head).context("parsing the handshake response")? {
        httparse::Status::Complete(_) => {}
        httparse::Status::Partial => bail!("incomplete handshake response"),
    }
    res.code
        .ok_or_else(|| anyhow!("a response without a status"))
}

/// Checks a response head (blank line included) against the request's
/// `key`: `101`, the accept key, and an extension only if one was offered.
pub fn check_response(
    head: &[u8],
    key: &str,
    offered_deflate: bool,
) -> Result<Option<DeflateParams>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut headers);
    match res.parse(head).context("parsing the handshake response")? {
        httparse::Status::Complete(n) if n == head.len() => {}
        _ => bail!("incomplete handshake response"),
    }
    if res.code != Some(101) {
        bail!(
            "handshake answered {:?}: {:?}",
            res.code,
            String::from_utf8_lossy(head)
        );
    }
    let find = |name: &str| {
        res.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    let accept = find("sec-websocket-accept").ok_or_else(|| anyhow!("no Sec-WebSocket-Accept"))?;
    ensure!(
        accept == derive_accept_key(key.as_bytes()),
        "wrong Sec-WebSocket-Accept {accept:?}"
    );
    let Some(ext) = find("sec-websocket-extensions") else {
        return Ok(None);
    };
    ensure!(
        offered_deflate,
        "extension {ext:?} accepted but none offered"
    );
    let mut parts = ext.split(';').map(str::trim);
    ensure!(
        parts.next() == Some("permessage-deflate"),
        "unexpected extension {ext:?}"
    );
    let mut p = DeflateParams {
        client_no_context_takeover: false,
        server_no_context_takeover: false,
        client_window_bits: 15,
    };
    for param in parts {
        let (name, value) = param.split_once('=').map_or((param, None), |(n, v)| {
            (n.trim(), Some(v.trim().trim_matches('"')))
        });
        match name {
            "client_no_context_takeover" => p.client_no_context_takeover = true,
            "server_no_context_takeover" => p.server_no_context_takeover = true,
            "client_max_window_bits" => {
                if let Some(v) = value {
                    p.client_window_bits = v.parse().context("client_max_window_bits")?;
                    ensure!(
                        (9..=15).contains(&p.client_window_bits),
                        "client_max_window_bits={v}"
                    );
                }
            }
            "server_max_window_bits" => {}
            _ => bail!("unknown permessage-deflate parameter {param:?}"),
        }
    }
    Ok(Some(p))
}

/// The client side of the opening handshake for `path` on `s`: the
/// request, then the answer read and checked. Bytes the server sent after
/// its head are in the result's `leftover`.
pub async fn upgrade<S: Conn>(
    s: &mut S,
    host: &str,
    path: &str,
    offer_deflate: bool,
) -> Result<Upgraded> {
    let key = generate_key();
    s.write_all(upgrade_request(host, path, &key, offer_deflate).as_bytes())
        .await?;
    // A no-op for TCP; a TLS stream holds the record until flushed.
    s.flush().await?;
    let (buf, end) = read_response_head(s).await?;
    let deflate = check_response(&buf[..end], &key, offer_deflate)?;
    Ok(Upgraded {
        leftover: buf[end..].to_vec(),
        deflate,
    })
}

/// Reads a response head from `s`: the bytes read, and where the head
/// ends (after its blank line); bytes after it are the server's next.
pub async fn read_response_head<S: Conn>(s: &mut S) -> Result<(Vec<u8>, usize)> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!(
                "server closed during the handshake after {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = memchr::memmem::find(&buf[from..], b"\r\n\r\n") {
            return Ok((buf, from + i + 4));
        }
        ensure!(
            buf.len() <= MAX_HEAD,
            "handshake response over {MAX_HEAD} bytes"
        );
    }
}

// ---- the close handshake ----

/// Appends a masked close frame with code 1000.
pub fn push_close(out: &mut Vec<u8>, key: [u8; 4]) {
    push_client_frame(out, FIN | OP_CLOSE, &1000u16.to_be_bytes(), key);
}

/// Reads the server's answer to our close frame, to EOF: one close frame
/// (code 1000 or none), then nothing.
pub async fn close_reply<S: Conn>(s: &mut S, buf: &mut [u8]) -> Result<()> {
    let mut got = 0;
    loop {
        ensure!(got < buf.len(), "more than {} bytes after close", buf.len());
        let n = s.read(&mut buf[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let Some((h, b0, len)) = parse_server_header(&buf[..got])? else {
        bail!("no close frame before EOF (got {got} bytes)");
    };
    ensure!(b0 == FIN | OP_CLOSE, "first frame after close is {b0:#04x}");
    ensure!(h + len == got, "bytes after the close frame");
    ensure!(
        len == 0 || buf[h..h + 2] == 1000u16.to_be_bytes(),
        "close code {:?}",
        &buf[h..h + len]
    );
    Ok(())
}

// ---- permessage-deflate ----

/// A connection's permessage-deflate compressor and inflater.
pub struct Deflate {
    compress: Compress,
    reset_after_message: bool,
    inflate: Decompress,
    scratch: Vec<u8>,
}

impl Deflate {
    /// The compressor and inflater for what the handshake negotiated.
    pub fn new(p: &DeflateParams) -> Deflate {
        Deflate {
            compress: Compress::new_with_window_bits(
                Compression::fast(),
                false,
                p.client_window_bits,
            ),
            reset_after_message: p.client_no_context_takeover,
            inflate: Decompress::new(false),
            scratch: Vec::new(),
        }
    }

    /// Appends `msg` as one masked, compressed text frame.
    pub fn push_message(&mut self, out: &mut Vec<u8>, msg: &[u8], key: [u8; 4]) -> Result<()> {
        compress_message(&mut self.compress, msg, &mut self.scratch)?;
        if self.reset_after_message {
            self.compress.reset();
        }
        push_client_frame(out, FIN | RSV1 | OP_TEXT, &self.scratch, key);
        Ok(())
    }

    /// Inflates one message's payload (trailer appended here) into `out`.
    pub fn inflate(&mut self, payload: &[u8], out: &mut Vec<u8>, max: usize) -> Result<()> {
        out.clear();
        for input in [payload, &TRAILER[..]] {
            let start_in = self.inflate.total_in();
            loop {
                if out.capacity() - out.len() < 256 {
                    out.reserve(4096);
                }
                let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
                let done = (in0 - start_in) as usize;
                self.inflate
                    .decompress_vec(&input[done..], out, FlushDecompress::Sync)
                    .context("inflate")?;
                ensure!(out.len() <= max, "inflated reply over {max} bytes");
                let done = (self.inflate.total_in() - start_in) as usize;
                if done == input.len() && out.len() < out.capacity() {
                    break;
                }
                ensure!(
                    self.inflate.total_in() != in0 || self.inflate.total_out() != out0,
                    "inflate made no progress"
                );
            }
        }
        Ok(())
    }
}

/// Compresses `msg` with `compress` as one permessage-deflate message into
/// `out` (emptied first): DEFLATE data ending in a sync flush, its trailer
/// left off (RFC 7692 §7.2.1).
pub fn compress_message(compress: &mut Compress, msg: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    out.reserve(msg.len() + 64);
    let start_in = compress.total_in();
    loop {
        let done = (compress.total_in() - start_in) as usize;
        compress
            .compress_vec(&msg[done..], out, FlushCompress::Sync)
            .context("deflate")?;
        let done = (compress.total_in() - start_in) as usize;
        if done == msg.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(1024);
    }
    ensure!(out.ends_with(&TRAILER), "sync flush without its trailer");
    out.truncate(out.len() - TRAILER.len());
    Ok(())
}

/// lubdub's own WebSocket server role, for the tests that check what the
/// load generator writes against a real server's decoder.
#[cfg(test)]
pub mod lubdub_side {
    use lubdub::protocol::Session;
    use lubdub::ws::{DeflateConfig, Message, Ws, WsConfig};
    use lubdub::Decoded;

    /// lubdub's server role without the opening handshake.
    pub fn server_frames(deflate: bool) -> Session<Ws> {
        let mut cfg = WsConfig::default();
        if deflate {
            cfg = cfg.deflate(DeflateConfig::default());
        }
        Session::new(Ws::server_without_handshake(cfg))
    }

    /// Decodes every message in `bytes` with lubdub's server role.
    pub fn decode_all(ws: &mut Session<Ws>, bytes: &[u8]) -> Vec<Message> {
        let (mut pos, mut out) = (0, Vec::new());
        while pos < bytes.len() {
            match ws.decode(&bytes[pos..]).unwrap() {
                Decoded::Message { msg, consumed } => {
                    out.push(msg);
                    pos += consumed;
                }
                Decoded::Consumed(n) => pos += n,
                other => panic!("{other:?} at {pos} of {}", bytes.len()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::ws_codec::lubdub_side::{decode_all, server_frames};
    use crate::payload::fill_words;
    use lubdub::protocol::Session;
    use lubdub::ws::{DeflateConfig, Ws, WsConfig};
    use lubdub::Decoded;

    /// A server frame as a server writes it (unmasked, FIN set).
    fn server_bytes(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 10];
        let h = write_header(&mut out, FIN | opcode, false, payload.len());
        out.truncate(h);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn server_frames_parse_across_any_split() {
        let big = vec![b'x'; 300];
        let mut stream = Vec::new();
        let frames: [(u8, &[u8]); 5] = [
            (OP_TEXT, b"0{\"sid\":\"abc\"}"),
            (OP_TEXT, b"40{\"sid\":\"def\"}"),
            (OP_PING, b""),
            (OP_TEXT, &big),
            (OP_TEXT, b"2"),
        ];
        for (op, p) in frames {
            stream.extend(server_bytes(op, p));
        }
        // Fed byte by byte, then in one piece: the same frames come out.
        for step in [1, 3, stream.len()] {
            let mut buf = Vec::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(f) = whole_server_frame(&buf, 1024).unwrap() {
                    got.push((f.opcode, buf[f.payload.clone()].to_vec()));
                    buf.drain(..f.len);
                }
            }
            assert!(buf.is_empty());
            let want: Vec<_> = frames.iter().map(|(o, p)| (*o, p.to_vec())).collect();
            assert_eq!(got, want, "step {step}");
        }
    }

    #[test]
    fn bad_server_frames_are_errors_not_panics() {
        let whole = |b: &[u8]| whole_server_frame(b, 1024);
        assert!(whole(&[0x01, 0x00]).is_err(), "FIN clear");
        assert!(whole(&[0xc1, 0x00]).is_err(), "RSV1 without deflate");
        assert!(whole(&[0x81, 0x81, 0, 0, 0, 0, 0]).is_err(), "masked");
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(whole(&huge).is_err(), "a length beyond the maximum");
        assert_eq!(whole(&[0x81, 126, 1]).unwrap(), None);
        assert_eq!(whole(&[0x81]).unwrap(), None);
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_the_payload() {
        for n in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut f = Vec::new();
            push_client_frame(&mut f, FIN | OP_TEXT, &payload, mask_key(1, n as u64));
            assert_eq!(f[0], 0x81);
            assert_eq!(f[1] & 0x80, 0x80, "mask bit");
            let (len, head) = match f[1] & 0x7f {
                126 => (u16::from_be_bytes([f[2], f[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                l => (l as usize, 2),
            };
            assert_eq!(len, n);
            let key: [u8; 4] = f[head..head + 4].try_into().unwrap();
            let mut unmasked = f[head + 4..].to_vec();
            apply_mask(&mut unmasked, key);
            assert_eq!(unmasked, payload);
        }
    }

    /// tungstenite's own frame parser reads the close frame as a masked
    /// close carrying code 1000, and a compressed message with RSV1 set.
    #[test]
    fn close_and_deflated_frames_parse_with_tungstenite_frame_header() {
        use std::io::Cursor;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, OpCode};
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

        let mut close = Vec::new();
        push_close(&mut close, [5, 6, 7, 8]);
        let mut cur = Cursor::new(&close[..]);
        let (h, len) = FrameHeader::parse(&mut cur).unwrap().unwrap();
        assert_eq!(h.opcode, OpCode::Control(Control::Close));
        assert_eq!((len, h.mask), (2, Some([5, 6, 7, 8])));
        let mut code = close[cur.position() as usize..].to_vec();
        apply_mask(&mut code, [5, 6, 7, 8]);
        assert_eq!(code, 1000u16.to_be_bytes());

        let p = DeflateParams {
            client_no_context_takeover: false,
            server_no_context_takeover: false,
            client_window_bits: 15,
        };
        let mut deflated = Vec::new();
        let mut msg = vec![0u8; 4096];
        fill_words(2, 0, &mut msg);
        Deflate::new(&p)
            .push_message(&mut deflated, &msg, [1, 1, 1, 1])
            .unwrap();
        let mut cur = Cursor::new(&deflated[..]);
        let (h, len) = FrameHeader::parse(&mut cur).unwrap().unwrap();
        assert!(h.is_final && h.rsv1 && h.mask.is_some());
        assert_eq!(cur.position() as usize + len as usize, deflated.len());
        assert!((len as usize) < msg.len());
    }

    /// A refused upgrade (not 101) and a response with the accept key of
    /// another request are errors.
    #[test]
    fn bad_upgrade_answers_are_refused() {
        let key = generate_key();
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        assert_eq!(check_response(ok.as_bytes(), &key, false).unwrap(), None);
        let refused = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        assert!(check_response(refused.as_bytes(), &key, false).is_err());
        assert!(check_response(ok.as_bytes(), &generate_key(), false).is_err());
        assert!(check_response(&ok.as_bytes()[..ok.len() - 2], &key, false).is_err());
    }

    #[test]
    fn mask_is_its_own_inverse_at_any_length() {
        for len in [0, 1, 7, 8, 9, 31, 4096] {
            let orig: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut b = orig.clone();
            apply_mask(&mut b, [1, 2, 3, 4]);
            if len > 0 {
                assert_eq!(b[0], 1);
                assert_eq!(b.get(5), orig.get(5).map(|x| x ^ 2).as_ref());
            }
            apply_mask(&mut b, [1, 2, 3, 4]);
            assert_eq!(b, orig);
        }
    }

    /// The handshake request is accepted by lubdub's server role, whose
    /// 101 passes the load generator's check; with deflate offered, the
    /// parameters come back.
    #[test]
    fn handshake_round_trip_with_lubdub() {
        for deflate in [false, true] {
            let mut cfg = WsConfig::default();
            if deflate {
                cfg = cfg.deflate(DeflateConfig::default());
            }
            let mut server = Session::new(Ws::server(cfg));
            assert_eq!(server.start(), lubdub::ws::Start::Handshake);
            let key = generate_key();
            let req = upgrade_request("127.0.0.1:1", "/bench", &key, deflate);
            let Decoded::Handshake { data, consumed } = server.decode(req.as_bytes()).unwrap()
            else {
                panic!("a whole request");
            };
            assert_eq!(consumed, req.len());
            server.accept(&data);
            let head = server.wire.take();
            let p = check_response(&head, &key, deflate).unwrap();
            assert_eq!(p.is_some(), deflate);
            assert!(check_response(&head, "dGhlIHNhbXBsZSBub25jZQ==", deflate).is_err());
            if deflate {
                assert!(
                    check_response(&head, &key, false).is_err(),
                    "unasked extension"
                );
            }
        }
    }

    /// Compressed messages inflate in lubdub's server, and lubdub's
    /// compressed replies inflate in the load generator, over many
    /// messages (context takeover on both sides).
    #[test]
    fn deflate_codec_interoperates_with_lubdub() {
        // What lubdub's default DeflateConfig answers to the offer.
        let p = DeflateParams {
            client_no_context_takeover: false,
            server_no_context_takeover: true,
            client_window_bits: 12,
        };
        for payload in [32, 4096] {
            let mut codec = Deflate::new(&p);
            let mut server = server_frames(true);
            let (mut req, mut rep) = (Vec::new(), Vec::new());
            let mut msg = vec![0u8; payload];
            for i in 0..20u64 {
                fill_words(1, i, &mut msg);
                codec.push_message(&mut req, &msg, mask_key(1, i)).unwrap();
            }
            assert_eq!(req[0], FIN | RSV1 | OP_TEXT);
            let msgs = decode_all(&mut server, &req);
            assert_eq!(msgs.len(), 20);
            for m in &msgs {
                server.encode_into(m, &mut rep).unwrap();
            }
            let (mut pos, mut inflated) = (0, Vec::new());
            for i in 0..20u64 {
                let (h, b0, len) = parse_server_header(&rep[pos..]).unwrap().unwrap();
                assert_eq!(b0, FIN | RSV1 | OP_TEXT);
                codec
                    .inflate(&rep[pos + h..pos + h + len], &mut inflated, payload)
                    .unwrap();
                fill_words(1, i, &mut msg);
                assert_eq!(inflated, msg);
                pos += h + len;
            }
            assert_eq!(pos, rep.len());
            if payload == 4096 {
                // Word text compresses as text does, not to nothing.
                let ratio = rep.len() as f64 / (20.0 * payload as f64);
                assert!((0.3..0.7).contains(&ratio), "ratio {ratio}");
            }
        }
    }
}
