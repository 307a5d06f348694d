//! The load generator's WebSocket mode: the same runtime, connection
//! set-up, measurement window, validation and drain as `loadgen.rs`, with
//! WebSocket framing on the wire.
//!
//! Every connection first does the opening handshake as a browser does:
//! `GET` with `Upgrade: websocket`, a fresh `Sec-WebSocket-Key`, version
//! 13 (and with deflate, `Sec-WebSocket-Extensions: permessage-deflate;
//! client_max_window_bits`); it checks the `101`, the accept key
//! (`tungstenite::handshake::derive_accept_key`) and what was negotiated.
//! Client frames are masked, each with its own key, as RFC 6455 requires;
//! server frames must not be.
//!
//! * [`pipelined`]: fixed-size text messages, 16 in flight per connection,
//!   replies checked by position as `loadgen::pipelined` does (each
//!   reply's header bytes, the whole content of every [`SAMPLE`]th).
//! * [`deflate_pipelined`]: the same, but with permessage-deflate offered:
//!   messages are compressed (and replies inflated) when the server agrees,
//!   so frames vary in size and every reply is parsed and compared whole.
//! * [`handshakes`]: churners doing connect, upgrade, close handshake.
//! * [`idle`]: upgraded connections that then send nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use crate::loadgen::{self, Idle, Shared, Throughput, Window, SAMPLE};
use crate::sys;

/// Length of the `c<conn>s<seq>` id at the start of every payload.
const HEAD_LEN: usize = 26;
/// Largest handshake response the load generator reads.
const MAX_HEAD: usize = 16 * 1024;
/// The bytes a sync flush ends with, left off on the wire (RFC 7692).
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;

/// A fixed-size WebSocket text message: what the client sends (a masked
/// frame) and what it must get back (the same payload, unmasked).
#[derive(Debug, Clone, Copy)]
pub struct WsUnit {
    /// Payload bytes per message (ASCII, so valid UTF-8).
    pub payload: usize,
}

impl WsUnit {
    pub fn text(payload: usize) -> WsUnit {
        assert!(
            payload >= HEAD_LEN,
            "messages must hold the {HEAD_LEN}-byte id"
        );
        assert!(payload <= 65_535, "WsUnit frames use the 16-bit length");
        WsUnit { payload }
    }

    /// Frame header length without the masking key.
    fn header_len(&self) -> usize {
        header_len(self.payload)
    }

    /// Bytes on the wire per message from the client (key included).
    pub fn request_size(&self) -> usize {
        self.header_len() + 4 + self.payload
    }

    /// Bytes on the wire per reply from the server.
    pub fn reply_size(&self) -> usize {
        self.header_len() + self.payload
    }

    /// Writes message `seq` of connection `conn` as a masked text frame
    /// into `out` (`request_size` bytes).
    pub fn fill_request(&self, conn: u32, seq: u64, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.request_size());
        let h = write_header(out, FIN | OP_TEXT, true, self.payload);
        let key = mask_key(conn, seq);
        out[h..h + 4].copy_from_slice(&key);
        let body = &mut out[h + 4..];
        fill_pattern(conn, seq, body);
        apply_mask(body, key);
    }

    /// Writes the reply expected for message `seq` into `out` (`reply_size` bytes).
    pub fn fill_reply(&self, conn: u32, seq: u64, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.reply_size());
        let h = write_header(out, FIN | OP_TEXT, false, self.payload);
        fill_pattern(conn, seq, &mut out[h..]);
    }

    /// Checks `chunk`, the reply bytes at stream offset `start` of
    /// connection `conn`: each reply's header bytes, and the whole of
    /// every [`SAMPLE`]th reply that lies whole in the chunk.
    pub fn check(&self, conn: u32, start: u64, chunk: &[u8], scratch: &mut [u8]) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let size = self.reply_size() as u64;
        let mut header = [0u8; 4];
        let hl = write_header(&mut header, FIN | OP_TEXT, false, self.payload);
        let end = start + chunk.len() as u64;
        for u in start / size..=(end - 1) / size {
            let ustart = u * size;
            for (p, &want) in header[..hl].iter().enumerate() {
                let g = ustart + p as u64;
                if g >= start && g < end {
                    let got = chunk[(g - start) as usize];
                    if got != want {
                        bail!(
                            "connection {conn}: reply byte {g} (message {u}, header byte {p}) is \
                             {got:#04x}, not {want:#04x}: framing broken"
                        );
                    }
                }
            }
            if u % SAMPLE == 0 && ustart >= start && ustart + size <= end {
                self.fill_reply(conn, u, scratch);
                let off = (ustart - start) as usize;
                if chunk[off..off + size as usize] != scratch[..] {
                    bail!(
                        "connection {conn}: reply message {u} differs from what was sent: {:?}",
                        String::from_utf8_lossy(&chunk[off..off + size as usize])
                    );
                }
            }
        }
        Ok(())
    }
}

impl loadgen::PipelineUnit for WsUnit {
    fn request_size(&self) -> usize {
        WsUnit::request_size(self)
    }
    fn reply_size(&self) -> usize {
        WsUnit::reply_size(self)
    }
    fn fill_request(&self, conn: u32, seq: u64, out: &mut [u8]) {
        WsUnit::fill_request(self, conn, seq, out)
    }
    fn check(&self, conn: u32, start: u64, chunk: &[u8], scratch: &mut [u8]) -> Result<()> {
        WsUnit::check(self, conn, start, chunk, scratch)
    }
}

/// Header length (without a masking key) of a frame of `len` payload bytes.
fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

/// Writes a frame header (`b0` = FIN, RSV and opcode bits) for `len`
/// payload bytes, with the mask bit if `masked` (the key is not written).
/// Returns its length.
fn write_header(out: &mut [u8], b0: u8, masked: bool, len: usize) -> usize {
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

/// Appends a masked client frame carrying `payload`.
fn push_masked_frame(out: &mut Vec<u8>, b0: u8, payload: &[u8], key: [u8; 4]) {
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
fn mask_key(conn: u32, seq: u64) -> [u8; 4] {
    (splitmix64(((conn as u64) << 40) ^ seq) as u32).to_ne_bytes()
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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

/// The id `c<conn hex>s<seq hex>` (26 bytes), cut to `out`'s length.
fn fill_head(conn: u32, seq: u64, out: &mut [u8]) -> usize {
    let mut head = [0u8; HEAD_LEN];
    head[0] = b'c';
    loadgen::hex(conn as u64, &mut head[1..9]);
    head[9] = b's';
    loadgen::hex(seq, &mut head[10..26]);
    let n = head.len().min(out.len());
    out[..n].copy_from_slice(&head[..n]);
    n
}

/// Payload of the plain rows: the id, then `abc...z` (`loadgen::pattern`).
fn fill_pattern(conn: u32, seq: u64, out: &mut [u8]) {
    let n = fill_head(conn, seq, out);
    let rest = out.len() - n;
    out[n..].copy_from_slice(&loadgen::pattern(rest)[..rest]);
}

/// Payload of the deflate rows, `len` bytes: the id, then a slice of
/// [`corpus`] at an offset drawn from the id. Text of a realistic word
/// distribution compresses about as English does (the progress line gives
/// the ratio measured on the wire); the plain rows' repeating alphabet
/// would compress to almost nothing, and a small vocabulary makes
/// zlib's match search unrepresentatively slow.
pub fn fill_words(conn: u32, seq: u64, out: &mut [u8]) {
    let n = fill_head(conn, seq, out);
    let rest = out.len() - n;
    let c = corpus();
    assert!(rest < c.len() / 2, "message too large for the corpus");
    let off = (splitmix64(((conn as u64) << 40) ^ seq ^ 0x5eed) % (c.len() - rest) as u64) as usize;
    out[n..].copy_from_slice(&c[off..off + rest]);
}

/// Bytes of [`corpus`].
const CORPUS_LEN: usize = 4 << 20;
/// Distinct words of [`corpus`].
const VOCABULARY: usize = 4096;

/// 4 MiB of space-separated pseudo-words (2-8 letters, consonant-vowel
/// syllables), 4,096 of them, drawn with a Zipf-like frequency (rank r
/// with probability ~1/r, as in natural text), from a fixed seed.
pub fn corpus() -> &'static [u8] {
    static C: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        const CONSONANTS: &[u8] = b"bcdfghjklmnprstvwz";
        const VOWELS: &[u8] = b"aeiou";
        let mut state = 0x1234_5678u64;
        let mut next = || {
            state = splitmix64(state);
            state
        };
        let words: Vec<Vec<u8>> = (0..VOCABULARY)
            .map(|_| {
                let mut r = next();
                let syllables = 1 + (r % 4) as usize;
                r >>= 2;
                let mut w = Vec::with_capacity(2 * syllables);
                for _ in 0..syllables {
                    w.push(CONSONANTS[(r % CONSONANTS.len() as u64) as usize]);
                    r /= CONSONANTS.len() as u64;
                    w.push(VOWELS[(r % VOWELS.len() as u64) as usize]);
                    r /= VOWELS.len() as u64;
                }
                w
            })
            .collect();
        let mut c = Vec::with_capacity(CORPUS_LEN + 16);
        while c.len() < CORPUS_LEN {
            // Log-uniform rank: P(rank r) ~ 1/r.
            let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
            let rank = ((VOCABULARY as f64).powf(u) as usize).clamp(1, VOCABULARY);
            c.extend_from_slice(&words[rank - 1]);
            c.push(b' ');
        }
        c.truncate(CORPUS_LEN);
        c
    })
}

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
    pub client_no_context_takeover: bool,
    pub server_no_context_takeover: bool,
    /// Window of the client's compressor, in bits.
    pub client_window_bits: u8,
}

/// The opening handshake request, as a browser sends it.
pub fn upgrade_request(host: &str, key: &str, offer_deflate: bool) -> String {
    format!(
        "GET /bench HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{}\r\n",
        if offer_deflate {
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        } else {
            ""
        }
    )
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

/// The client side of the opening handshake on `s`.
pub async fn upgrade<S: loadgen::Conn>(
    s: &mut S,
    host: &str,
    offer_deflate: bool,
) -> Result<Upgraded> {
    let key = generate_key();
    s.write_all(upgrade_request(host, &key, offer_deflate).as_bytes())
        .await?;
    // A no-op for TCP; a TLS stream holds the record until flushed.
    s.flush().await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
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
            break from + i + 4;
        }
        ensure!(
            buf.len() <= MAX_HEAD,
            "handshake response over {MAX_HEAD} bytes"
        );
    };
    let deflate = check_response(&buf[..end], &key, offer_deflate)?;
    Ok(Upgraded {
        leftover: buf[end..].to_vec(),
        deflate,
    })
}

/// Opens `n` connections and upgrades each, at most `parallel` at a time,
/// in order; more than 1,000 come from many source addresses
/// (`loadgen::many_source`).
async fn open_many(
    addr: SocketAddr,
    n: usize,
    parallel: usize,
    offer_deflate: bool,
) -> Result<Vec<(TcpStream, Upgraded)>> {
    let host = addr.to_string();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let base = out.len();
        let batch = parallel.min(n - base);
        let mut set = JoinSet::new();
        for i in 0..batch {
            let host = host.clone();
            set.spawn(async move {
                let r = async {
                    let mut s = if n <= 1000 {
                        loadgen::connect(addr).await?
                    } else {
                        loadgen::connect_from(addr, loadgen::many_source(base + i)).await?
                    };
                    let up = upgrade(&mut s, &host, offer_deflate)
                        .await
                        .with_context(|| format!("connection {}: handshake", base + i))?;
                    anyhow::Ok((s, up))
                }
                .await;
                (i, r)
            });
        }
        let mut got = Vec::with_capacity(batch);
        while let Some(r) = set.join_next().await {
            let (i, s) = r?;
            got.push((i, s?));
        }
        got.sort_by_key(|(i, _)| *i);
        out.extend(got.into_iter().map(|(_, s)| s));
    }
    Ok(out)
}

/// Pipelined WebSocket echo: `conns` upgraded connections, each keeping
/// `depth` text messages in flight. Messages per second.
pub async fn pipelined(
    addr: SocketAddr,
    server_pid: u32,
    conns: usize,
    depth: usize,
    unit: WsUnit,
    w: Window,
) -> Result<Throughput> {
    let streams = open_many(addr, conns, 256, false).await?;
    let mut plain = Vec::with_capacity(streams.len());
    for (s, up) in streams {
        ensure!(up.leftover.is_empty(), "server sent frames unasked");
        plain.push(s);
    }
    loadgen::pipelined_over(plain, &[server_pid], depth, unit, 64 * 1024, w).await
}

/// Result of [`deflate_pipelined`].
#[derive(Debug, Clone)]
pub struct DeflateRun {
    pub throughput: Throughput,
    /// Whether the server agreed to permessage-deflate.
    pub negotiated: bool,
    /// Reply payload bytes on the wire / message bytes (1.0 uncompressed).
    pub wire_ratio: f64,
}

/// Pipelined echo of [`fill_words`] text messages of `payload` bytes,
/// permessage-deflate offered if `offer_deflate`: when the server accepts,
/// every message is compressed (flate2 level 1, the window and context
/// takeover as negotiated) and every reply inflated. Every reply is parsed
/// and compared whole.
pub async fn deflate_pipelined(
    addr: SocketAddr,
    server_pid: u32,
    conns: usize,
    depth: usize,
    payload: usize,
    offer_deflate: bool,
    w: Window,
) -> Result<DeflateRun> {
    ensure!(
        payload >= HEAD_LEN,
        "messages must hold the {HEAD_LEN}-byte id"
    );
    corpus(); // built once, before the window
    let streams = open_many(addr, conns, 256, offer_deflate).await?;
    let negotiated = streams.iter().all(|(_, up)| up.deflate.is_some());
    ensure!(
        negotiated || streams.iter().all(|(_, up)| up.deflate.is_none()),
        "deflate negotiated on some connections only"
    );
    ensure!(
        negotiated == offer_deflate,
        "deflate offered: {offer_deflate}, negotiated: {negotiated}"
    );
    let sh = Arc::new(Shared::default());
    let wire = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for (id, (s, up)) in streams.into_iter().enumerate() {
        ensure!(up.leftover.is_empty(), "server sent frames unasked");
        set.spawn(deflate_conn(
            s,
            up.deflate,
            payload,
            depth,
            id as u32,
            sh.clone(),
            wire.clone(),
        ));
    }
    let t = loadgen::measure(&sh, w, &[server_pid]).await;
    sh.stop.store(true, Ordering::SeqCst);
    let t = t?;
    let replies: u64 = loadgen::join_all(&mut set, Duration::from_secs(10))
        .await?
        .into_iter()
        .sum();
    let wire_ratio = wire.load(Ordering::Relaxed) as f64 / (replies as f64 * payload as f64);
    Ok(DeflateRun {
        throughput: t,
        negotiated,
        wire_ratio,
    })
}

/// A connection's compressor and inflater (none without deflate).
pub struct Codec {
    compress: Compress,
    reset_after_message: bool,
    inflate: Decompress,
    scratch: Vec<u8>,
}

impl Codec {
    pub fn new(p: &DeflateParams) -> Codec {
        Codec {
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
        let c = &mut self.scratch;
        c.clear();
        c.reserve(msg.len() + 64);
        let start_in = self.compress.total_in();
        loop {
            let done = (self.compress.total_in() - start_in) as usize;
            self.compress
                .compress_vec(&msg[done..], c, FlushCompress::Sync)
                .context("deflate")?;
            let done = (self.compress.total_in() - start_in) as usize;
            if done == msg.len() && c.len() < c.capacity() {
                break;
            }
            c.reserve(1024);
        }
        ensure!(c.ends_with(&TRAILER), "sync flush without its trailer");
        c.truncate(c.len() - TRAILER.len());
        if self.reset_after_message {
            self.compress.reset();
        }
        push_masked_frame(out, FIN | RSV1 | OP_TEXT, c, key);
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

/// Puts messages `sent..sent + count` into `wbuf` (emptied first).
fn fill_batch(
    mut codec: Option<&mut Codec>,
    msg: &mut [u8],
    id: u32,
    sent: &mut u64,
    count: u64,
    wbuf: &mut Vec<u8>,
) -> Result<()> {
    wbuf.clear();
    for _ in 0..count {
        fill_words(id, *sent, msg);
        let key = mask_key(id, *sent);
        match codec.as_deref_mut() {
            Some(c) => c.push_message(wbuf, msg, key)?,
            None => push_masked_frame(wbuf, FIN | OP_TEXT, msg, key),
        }
        *sent += 1;
    }
    Ok(())
}

/// Returns the number of replies checked.
async fn deflate_conn(
    mut s: TcpStream,
    deflate: Option<DeflateParams>,
    payload: usize,
    depth: usize,
    id: u32,
    sh: Arc<Shared>,
    wire: Arc<AtomicU64>,
) -> Result<u64> {
    let mut codec = deflate.as_ref().map(Codec::new);
    let mut msg = vec![0u8; payload];
    let mut wbuf = Vec::with_capacity(depth * (payload + 14));
    let mut rbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut inflated = Vec::with_capacity(payload + 256);
    let (mut sent, mut recv, mut wire_bytes) = (0u64, 0u64, 0u64);
    fill_batch(
        codec.as_mut(),
        &mut msg,
        id,
        &mut sent,
        depth as u64,
        &mut wbuf,
    )?;
    s.write_all(&wbuf).await?;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if sh.stop.load(Ordering::Relaxed) && recv == sent {
            wire.fetch_add(wire_bytes, Ordering::Relaxed);
            return Ok(recv);
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection {id}: server closed the connection");
        }
        rbuf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        let mut done = 0u64;
        while let Some((h, b0, len)) = parse_server_header(&rbuf[pos..])? {
            if rbuf.len() - pos < h + len {
                break;
            }
            ensure!(
                b0 & !RSV1 == FIN | OP_TEXT,
                "connection {id}: reply {recv} starts with {b0:#04x}, not a whole text frame"
            );
            let body = &rbuf[pos + h..pos + h + len];
            let got: &[u8] = if b0 & RSV1 != 0 {
                let c = codec
                    .as_mut()
                    .ok_or_else(|| anyhow!("connection {id}: compressed reply without deflate"))?;
                c.inflate(body, &mut inflated, payload)?;
                &inflated
            } else {
                body
            };
            fill_words(id, recv, &mut msg);
            if got != msg.as_slice() {
                bail!(
                    "connection {id}: reply {recv} differs from what was sent: {:?}",
                    String::from_utf8_lossy(got)
                );
            }
            wire_bytes += len as u64;
            pos += h + len;
            recv += 1;
            done += 1;
        }
        rbuf.drain(..pos);
        if recv > sent {
            bail!("connection {id}: more replies than messages");
        }
        if done == 0 {
            continue;
        }
        sh.completed.fetch_add(done, Ordering::Relaxed);
        if !sh.stop.load(Ordering::Relaxed) {
            fill_batch(codec.as_mut(), &mut msg, id, &mut sent, done, &mut wbuf)?;
            s.write_all(&wbuf).await?;
        }
    }
}

/// Handshake churn: `churners` tasks each loop over connect (from
/// `loadgen::churn_source`), opening handshake, a masked close frame
/// (1000), the server's close frame back, and the server closing the TCP
/// connection (read to EOF). Completed cycles per second.
pub async fn handshakes(
    addr: SocketAddr,
    server_pid: u32,
    churners: usize,
    w: Window,
) -> Result<Throughput> {
    let sh = Arc::new(Shared::default());
    let host = addr.to_string();
    let mut set = JoinSet::new();
    for id in 0..churners {
        let (sh, host) = (sh.clone(), host.clone());
        set.spawn(async move {
            let mut close = Vec::with_capacity(8);
            let mut buf = [0u8; 256];
            let mut seq = 0u64;
            while !sh.stop.load(Ordering::Relaxed) {
                let mut s = loadgen::connect_from(addr, loadgen::churn_source(id, seq)).await?;
                let up = upgrade(&mut s, &host, false)
                    .await
                    .with_context(|| format!("churner {id}: handshake {seq}"))?;
                ensure!(up.leftover.is_empty(), "server sent frames unasked");
                close.clear();
                push_masked_frame(
                    &mut close,
                    FIN | OP_CLOSE,
                    &1000u16.to_be_bytes(),
                    mask_key(id as u32, seq),
                );
                s.write_all(&close).await?;
                close_reply(&mut s, &mut buf)
                    .await
                    .with_context(|| format!("churner {id}: close {seq}"))?;
                drop(s);
                seq += 1;
                sh.completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
    }
    let t = loadgen::measure(&sh, w, &[server_pid]).await;
    sh.stop.store(true, Ordering::SeqCst);
    let t = t?;
    loadgen::join_all(&mut set, Duration::from_secs(10)).await?;
    Ok(t)
}

/// Reads the server's answer to our close frame, to EOF: one close frame
/// (code 1000 or none), then nothing.
async fn close_reply(s: &mut TcpStream, buf: &mut [u8]) -> Result<()> {
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

/// One text message echoed on an upgraded connection.
async fn round_trip(s: &mut TcpStream, unit: WsUnit, id: u32, seq: u64) -> Result<()> {
    let mut out = vec![0u8; unit.request_size()];
    let mut want = vec![0u8; unit.reply_size()];
    let mut reply = vec![0u8; unit.reply_size()];
    unit.fill_request(id, seq, &mut out);
    unit.fill_reply(id, seq, &mut want);
    s.write_all(&out).await?;
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut reply))
        .await
        .map_err(|_| anyhow!("no echo within 5 s"))??;
    ensure!(reply == want, "echo differs from the request");
    Ok(())
}

/// Idle memory of upgraded connections, as `loadgen::idle` measures it
/// for raw ones: a warm-up connection (handshake, echo, close), the
/// server's settled RSS, `n` connections upgraded (250 at a time) that
/// then send nothing, the settled RSS once the server reports them all.
/// A few connections echo afterwards; the server is killed first.
pub async fn idle(
    addr: SocketAddr,
    server_pid: u32,
    reported: Arc<AtomicUsize>,
    n: usize,
    unit: WsUnit,
) -> Result<Idle> {
    {
        let host = addr.to_string();
        let mut s = loadgen::connect(addr).await?;
        upgrade(&mut s, &host, false).await?;
        round_trip(&mut s, unit, 0, 0).await?;
        let mut close = Vec::new();
        push_masked_frame(
            &mut close,
            FIN | OP_CLOSE,
            &1000u16.to_be_bytes(),
            [1, 2, 3, 4],
        );
        s.write_all(&close).await?;
        close_reply(&mut s, &mut [0u8; 256]).await?;
    }
    loadgen::wait_until(Duration::from_secs(5), || {
        reported.load(Ordering::SeqCst) == 0
    })
    .await
    .context("the server did not report the warm-up connection closed")?;
    let rss_before = loadgen::settled_rss(server_pid).await?;
    let mut streams = open_many(addr, n, 250, false).await?;
    loadgen::wait_until(Duration::from_secs(30), || {
        reported.load(Ordering::SeqCst) >= n
    })
    .await
    .with_context(|| {
        format!(
            "the server reported {} of {n} connections",
            reported.load(Ordering::SeqCst)
        )
    })?;
    let rss_after = loadgen::settled_rss(server_pid).await?;
    let step = (n / 8).max(1);
    for i in (0..n).step_by(step).chain([n - 1]) {
        round_trip(&mut streams[i].0, unit, i as u32, 1).await?;
    }
    sys::kill(server_pid);
    drop(streams);
    Ok(Idle {
        rss_before,
        rss_after,
        conns: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lubdub::protocol::WireBuf;
    use lubdub::ws::{DeflateConfig, Message, Ws, WsConfig};
    use lubdub::{Decoded, Protocol};

    fn server_frames(deflate: bool) -> Ws {
        let mut cfg = WsConfig::default();
        if deflate {
            cfg = cfg.deflate(DeflateConfig::default());
        }
        Ws::server_without_handshake(cfg)
    }

    /// Decodes every message in `bytes` with lubdub's server role.
    fn decode_all(ws: &mut Ws, bytes: &[u8]) -> Vec<Message> {
        let mut wire = WireBuf::default();
        let (mut pos, mut out) = (0, Vec::new());
        while pos < bytes.len() {
            match wire.decode(ws, &bytes[pos..]).unwrap() {
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

    /// The load generator's frames are what an RFC 6455 server accepts
    /// from a client (masked; lubdub refuses unmasked ones), and carry
    /// the payload the replies are checked against.
    #[test]
    fn requests_are_masked_frames_a_server_decodes() {
        for payload in [32, 125, 126, 4096] {
            let unit = WsUnit::text(payload);
            let mut stream = vec![0u8; unit.request_size() * 3];
            for (i, u) in stream.chunks_exact_mut(unit.request_size()).enumerate() {
                unit.fill_request(7, i as u64, u);
            }
            assert_eq!(stream[1] & 0x80, 0x80, "mask bit");
            let msgs = decode_all(&mut server_frames(false), &stream);
            assert_eq!(msgs.len(), 3);
            for (i, m) in msgs.iter().enumerate() {
                let mut want = vec![0u8; unit.reply_size()];
                unit.fill_reply(7, i as u64, &mut want);
                let Message::Text(t) = m else { panic!("{m:?}") };
                assert_eq!(t.as_bytes(), &want[unit.header_len()..]);
                assert!(t.starts_with(&format!("c00000007s{:016x}", i)));
            }
            // Each frame has its own key.
            let k0 = &stream[unit.header_len()..unit.header_len() + 4];
            let r = unit.request_size();
            assert_ne!(
                k0,
                &stream[r + unit.header_len()..r + unit.header_len() + 4]
            );
        }
    }

    /// Replies encoded by lubdub's server check out, split anywhere; a
    /// lost or corrupted one does not.
    #[test]
    fn replies_check_by_position() {
        for payload in [32, 4096] {
            let unit = WsUnit::text(payload);
            let server = server_frames(false);
            let mut enc = server.encoder();
            let mut stream = Vec::new();
            let mut msg = vec![0u8; payload];
            for i in 0..200u64 {
                fill_pattern(3, i, &mut msg);
                let text = String::from_utf8(msg.clone()).unwrap();
                server
                    .encode(&mut enc, &Message::Text(text), &mut stream)
                    .unwrap();
            }
            assert_eq!(stream.len(), 200 * unit.reply_size());
            let mut scratch = vec![0u8; unit.reply_size()];
            for cut in [1, 3, 33, 34, 35, 1000, 5000] {
                let mut pos = 0;
                while pos < stream.len() {
                    let end = (pos + cut).min(stream.len());
                    unit.check(3, pos as u64, &stream[pos..end], &mut scratch)
                        .unwrap();
                    pos = end;
                }
            }
            let mut lossy = stream.clone();
            lossy.drain(unit.reply_size() * 5..unit.reply_size() * 6 + 1);
            assert!(unit.check(3, 0, &lossy, &mut scratch).is_err());
            let mut bad = stream.clone();
            bad[unit.reply_size() * SAMPLE as usize + 9] ^= 1;
            assert!(unit.check(3, 0, &bad, &mut scratch).is_err());
            // A masked reply breaks the framing bytes.
            let mut masked = stream.clone();
            masked[1] |= 0x80;
            assert!(unit.check(3, 0, &masked, &mut scratch).is_err());
        }
    }

    /// tungstenite's own frame parser reads the load generator's
    /// requests as masked, final text frames of the right length, with
    /// a key per frame, and the close frame as a masked close carrying
    /// code 1000; with deflate, RSV1 is set.
    #[test]
    fn frames_parse_with_tungstenite_frame_header() {
        use std::io::Cursor;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

        for payload in [32, 125, 126, 4096, 65_535] {
            let unit = WsUnit::text(payload);
            let mut stream = vec![0u8; unit.request_size() * 2];
            for (i, u) in stream.chunks_exact_mut(unit.request_size()).enumerate() {
                unit.fill_request(9, i as u64, u);
            }
            let mut cur = Cursor::new(&stream[..]);
            let mut keys = Vec::new();
            for i in 0..2u64 {
                let (h, len) = FrameHeader::parse(&mut cur).unwrap().expect("whole header");
                assert!(h.is_final && !h.rsv1 && !h.rsv2 && !h.rsv3);
                assert_eq!(h.opcode, OpCode::Data(Data::Text));
                assert_eq!(len, payload as u64);
                let key = h.mask.expect("client frames are masked");
                keys.push(key);
                let at = cur.position() as usize;
                let mut body = stream[at..at + payload].to_vec();
                apply_mask(&mut body, key);
                let mut want = vec![0u8; payload];
                fill_pattern(9, i, &mut want);
                assert_eq!(body, want);
                cur.set_position((at + payload) as u64);
            }
            assert_eq!(cur.position() as usize, stream.len());
            assert_ne!(keys[0], keys[1]);
        }

        let mut close = Vec::new();
        push_masked_frame(
            &mut close,
            FIN | OP_CLOSE,
            &1000u16.to_be_bytes(),
            [5, 6, 7, 8],
        );
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
        Codec::new(&p)
            .push_message(&mut deflated, &msg, [1, 1, 1, 1])
            .unwrap();
        let mut cur = Cursor::new(&deflated[..]);
        let (h, len) = FrameHeader::parse(&mut cur).unwrap().unwrap();
        assert!(h.is_final && h.rsv1 && h.mask.is_some());
        assert_eq!(cur.position() as usize + len as usize, deflated.len());
        assert!((len as usize) < msg.len());
    }

    /// Over real loopback, against the tungstenite and fastwebsockets
    /// peers as the scenarios run them: the upgrade answer passes the
    /// check, 3 x 16 pipelined messages come back and check out by
    /// position, and the close handshake ends with the server's close
    /// frame and EOF.
    #[test]
    fn loopback_upgrade_echo_and_close_against_the_peers() {
        use crate::ws_peers::{echo_tungstenite, fastwebsockets_conn, tungstenite_config};
        use tokio::net::TcpListener;

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            for fast in [false, true] {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let server = tokio::spawn(async move {
                    let (sock, _) = listener.accept().await.unwrap();
                    sock.set_nodelay(true).unwrap();
                    if fast {
                        fastwebsockets_conn(sock, Arc::new(AtomicUsize::new(0))).await;
                    } else {
                        let ws = tokio_tungstenite::accept_async_with_config(
                            sock,
                            Some(tungstenite_config(None)),
                        )
                        .await
                        .unwrap();
                        echo_tungstenite(ws).await;
                    }
                });
                let mut s = TcpStream::connect(addr).await.unwrap();
                let up = upgrade(&mut s, &addr.to_string(), false).await.unwrap();
                assert_eq!(up, Upgraded::default(), "fast={fast}");
                for payload in [32, 4096] {
                    let unit = WsUnit::text(payload);
                    let depth = 16;
                    let mut scratch = vec![0u8; unit.reply_size()];
                    for round in 0..3u64 {
                        let mut out = vec![0u8; depth * unit.request_size()];
                        for (i, u) in out.chunks_exact_mut(unit.request_size()).enumerate() {
                            unit.fill_request(4, round * depth as u64 + i as u64, u);
                        }
                        s.write_all(&out).await.unwrap();
                        let mut reply = vec![0u8; depth * unit.reply_size()];
                        s.read_exact(&mut reply).await.unwrap();
                        let start = round * reply.len() as u64;
                        unit.check(4, start, &reply, &mut scratch).unwrap();
                    }
                }
                let mut close = Vec::new();
                push_masked_frame(
                    &mut close,
                    FIN | OP_CLOSE,
                    &1000u16.to_be_bytes(),
                    [9, 9, 9, 9],
                );
                s.write_all(&close).await.unwrap();
                close_reply(&mut s, &mut [0u8; 256]).await.unwrap();
                server.await.unwrap();
            }
        });
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
            let mut server = Ws::server(cfg);
            let mut enc = server.encoder();
            let mut wire = WireBuf::default();
            assert_eq!(server.start(&mut wire.wire()), lubdub::ws::Start::Handshake);
            let key = generate_key();
            let req = upgrade_request("127.0.0.1:1", &key, deflate);
            let Decoded::Handshake { data, consumed } =
                wire.decode(&mut server, req.as_bytes()).unwrap()
            else {
                panic!("a whole request");
            };
            assert_eq!(consumed, req.len());
            server.accept(&data, &mut enc, &mut wire.wire());
            let head = wire.take();
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
        let p = DeflateParams {
            client_no_context_takeover: false,
            server_no_context_takeover: false,
            client_window_bits: 15,
        };
        for payload in [32, 4096] {
            let mut codec = Codec::new(&p);
            let mut server = server_frames(true);
            let mut enc = server.encoder();
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
                server.encode(&mut enc, m, &mut rep).unwrap();
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

    #[test]
    fn word_payloads_are_ascii_and_differ_per_message() {
        let c = corpus();
        assert_eq!(c.len(), CORPUS_LEN);
        // The most frequent word is far more frequent than a rare one.
        let words: Vec<&[u8]> = c.split(|&b| b == b' ').collect();
        let mut counts = std::collections::HashMap::new();
        for w in &words {
            *counts.entry(*w).or_insert(0usize) += 1;
        }
        let top = counts.values().max().copied().unwrap();
        assert!(counts.len() > 3000, "{} distinct words", counts.len());
        assert!(top > words.len() / 20, "top word {top} of {}", words.len());
        let (mut a, mut b) = (vec![0u8; 300], vec![0u8; 300]);
        fill_words(1, 1, &mut a);
        fill_words(1, 2, &mut b);
        assert!(a.is_ascii() && b.is_ascii());
        assert_ne!(a[HEAD_LEN..], b[HEAD_LEN..]);
        let mut short = vec![0u8; HEAD_LEN];
        fill_words(1, 1, &mut short);
        assert_eq!(short[..], a[..HEAD_LEN]);
    }
}
