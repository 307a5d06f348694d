//! The load generator's WebSocket mode: the same runtime, connection
//! set-up, measurement window, validation and drain as the TCP mode
//! (`load/tcp.rs`), with WebSocket framing on the wire (`load/ws_codec.rs`).
//!
//! * [`pipelined`]: fixed-size text messages, 16 in flight per connection,
//!   replies checked by position as `load::tcp::pipelined` does (each
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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::load::connect::{churn_source, connect, connect_from, many_source, open_in_order, Conn};
use crate::load::idle::{measure_idle, Idle, IdleConns};
use crate::load::measure::{self, measure_and_drain, Churner, Shared, Throughput};
use crate::load::tcp::{pipelined_over, PipelineUnit};
use crate::load::ws_codec::{
    apply_mask, close_reply, header_len, mask_key, parse_server_header, push_client_frame,
    push_close, upgrade, write_header, Deflate, DeflateParams, Upgraded, FIN, OP_TEXT, RSV1,
};
use crate::payload::{corpus, fill_pattern, fill_words, HEAD_LEN, SAMPLE};
use crate::report::Window;

/// The path every WebSocket connection of the load generator asks for.
pub const PATH: &str = "/bench";

/// A fixed-size WebSocket text message: what the client sends (a masked
/// frame) and what it must get back (the same payload, unmasked).
#[derive(Debug, Clone, Copy)]
pub struct WsUnit {
    /// Payload bytes per message (ASCII, so valid UTF-8).
    pub payload: usize,
}

impl WsUnit {
    /// Text messages of `payload` bytes (at most 65,535).
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

impl PipelineUnit for WsUnit {
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

/// Opens `n` connections and upgrades each, at most `parallel` at a time,
/// in order; more than 1,000 come from many source addresses
/// ([`many_source`]).
async fn open_many(
    addr: SocketAddr,
    n: usize,
    parallel: usize,
    offer_deflate: bool,
) -> Result<Vec<(TcpStream, Upgraded)>> {
    let host = addr.to_string();
    open_in_order(n, parallel, |i| {
        let host = host.clone();
        async move {
            let mut s = if n <= 1000 {
                connect(addr).await?
            } else {
                connect_from(addr, many_source(i)).await?
            };
            let up = upgrade(&mut s, &host, PATH, offer_deflate)
                .await
                .with_context(|| format!("connection {i}: handshake"))?;
            Ok((s, up))
        }
    })
    .await
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
    pipelined_over(plain, &[server_pid], depth, unit, 64 * 1024, w).await
}

/// Result of [`deflate_pipelined`].
#[derive(Debug, Clone)]
pub struct DeflateRun {
    /// Messages per second and CPU use.
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
    let (t, replies) = measure_and_drain(&sh, &mut set, w, &[server_pid]).await?;
    let replies: u64 = replies.into_iter().sum();
    let wire_ratio = wire.load(Ordering::Relaxed) as f64 / (replies as f64 * payload as f64);
    Ok(DeflateRun {
        throughput: t,
        negotiated,
        wire_ratio,
    })
}

/// Puts messages `sent..sent + count` into `wbuf` (emptied first).
fn fill_batch(
    mut codec: Option<&mut Deflate>,
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
            None => push_client_frame(wbuf, FIN | OP_TEXT, msg, key),
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
    let mut codec = deflate.as_ref().map(Deflate::new);
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

/// A churner of [`handshakes`]: connect (from [`churn_source`]), opening
/// handshake, a masked close frame (1000), the server's close frame back,
/// and the server closing the TCP connection (read to EOF).
struct WsChurner {
    addr: SocketAddr,
    host: String,
    id: usize,
    close: Vec<u8>,
    buf: [u8; 256],
}

impl Churner for WsChurner {
    async fn cycle(&mut self, seq: u64) -> Result<()> {
        let id = self.id;
        let mut s = connect_from(self.addr, churn_source(id, seq)).await?;
        let up = upgrade(&mut s, &self.host, PATH, false)
            .await
            .with_context(|| format!("churner {id}: handshake {seq}"))?;
        ensure!(up.leftover.is_empty(), "server sent frames unasked");
        self.close.clear();
        push_close(&mut self.close, mask_key(id as u32, seq));
        s.write_all(&self.close).await?;
        close_reply(&mut s, &mut self.buf)
            .await
            .with_context(|| format!("churner {id}: close {seq}"))?;
        Ok(())
    }
}

/// Handshake churn: `churners` tasks each loop over connect, upgrade and
/// close handshake ([`WsChurner`]). Completed cycles per second.
pub async fn handshakes(
    addr: SocketAddr,
    server_pid: u32,
    churners: usize,
    w: Window,
) -> Result<Throughput> {
    let churners = (0..churners)
        .map(|id| WsChurner {
            addr,
            host: addr.to_string(),
            id,
            close: Vec::with_capacity(8),
            buf: [0u8; 256],
        })
        .collect();
    measure::churn(churners, w, &[server_pid]).await
}

/// One text message echoed on an upgraded connection.
pub async fn round_trip<S: Conn>(s: &mut S, unit: WsUnit, id: u32, seq: u64) -> Result<()> {
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

/// Idle upgraded connections ([`idle`]).
struct WsIdle {
    addr: SocketAddr,
    unit: WsUnit,
}

impl IdleConns for WsIdle {
    type Conn = (TcpStream, Upgraded);

    async fn warm_up(&self) -> Result<()> {
        let mut s = connect(self.addr).await?;
        upgrade(&mut s, &self.addr.to_string(), PATH, false).await?;
        round_trip(&mut s, self.unit, 0, 0).await?;
        let mut close = Vec::new();
        push_close(&mut close, [1, 2, 3, 4]);
        s.write_all(&close).await?;
        close_reply(&mut s, &mut [0u8; 256]).await
    }

    async fn open(&self, n: usize) -> Result<Vec<(TcpStream, Upgraded)>> {
        open_many(self.addr, n, 250, false).await
    }

    async fn round_trip(&self, conn: &mut (TcpStream, Upgraded), id: u32) -> Result<()> {
        round_trip(&mut conn.0, self.unit, id, 1).await
    }
}

/// Idle memory of `n` upgraded connections (`load/idle.rs`).
pub async fn idle(
    addr: SocketAddr,
    server_pid: u32,
    reported: &AtomicUsize,
    n: usize,
    unit: WsUnit,
) -> Result<Idle> {
    let conns = WsIdle { addr, unit };
    measure_idle(&conns, server_pid, reported, n, Duration::from_secs(30)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::tcp::assert_checks_at_any_cut;
    use crate::load::ws_codec::lubdub_side::{decode_all, server_frames};
    use lubdub::ws::Message;

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
            let mut server = server_frames(false);
            let mut stream = Vec::new();
            let mut msg = vec![0u8; payload];
            for i in 0..200u64 {
                fill_pattern(3, i, &mut msg);
                let text = String::from_utf8(msg.clone()).unwrap();
                server
                    .encode_into(&Message::Text(text), &mut stream)
                    .unwrap();
            }
            assert_eq!(stream.len(), 200 * unit.reply_size());
            assert_checks_at_any_cut(&unit, &stream, &[1, 3, 33, 34, 35, 1000, 5000]);
            let mut scratch = vec![0u8; unit.reply_size()];
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
    /// a key per frame.
    #[test]
    fn requests_parse_with_tungstenite_frame_header() {
        use std::io::Cursor;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
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
    }
}
