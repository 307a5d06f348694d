//! The smallest WebSocket client the `wss-echo` load needs (RFC 6455): the
//! upgrade request, masked text frames out (7-bit or 16-bit lengths), and
//! unmasked text frames in, checked by byte position like `loadgen`'s
//! units. Kept in its own file; the load generator's WebSocket mode for
//! the plain `ws` scenarios lives elsewhere.

use anyhow::{bail, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::loadgen::{Conn, Unit, SAMPLE};

/// The `Sec-WebSocket-Key` of every upgrade, and the accept value the
/// server must answer with: the example pair of RFC 6455, section 1.3
/// (the key need not be secret or random for a client that trusts the
/// server; what matters is that the server computes the answer).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Largest upgrade response read.
const MAX_RESPONSE: usize = 8 * 1024;

/// Sends the upgrade request for `/` and checks the server's 101 answer.
/// No extension is offered, so none may be answered (permessage-deflate
/// stays off on both servers).
pub async fn handshake<S: Conn>(s: &mut S, host: &str) -> Result<()> {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection during the upgrade");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if end + 4 != buf.len() {
                bail!("the server sent bytes after its upgrade response");
            }
            return check_response(&buf[..end]);
        }
        if buf.len() > MAX_RESPONSE {
            bail!("upgrade response longer than {MAX_RESPONSE} bytes");
        }
    }
}

/// Checks an upgrade response's head (status line and headers, without
/// the blank line): `101`, the right `Sec-WebSocket-Accept`, no extension.
pub fn check_response(head: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(head)?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 101") {
        bail!("the server answered {status:?} to the upgrade");
    }
    let mut accepted = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("malformed header line {line:?}");
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("sec-websocket-accept") {
            if value.trim() != ACCEPT {
                bail!("wrong Sec-WebSocket-Accept {:?}", value.trim());
            }
            accepted = true;
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            bail!("the server answered with extensions {:?}", value.trim());
        }
    }
    if !accepted {
        bail!("no Sec-WebSocket-Accept in the upgrade response");
    }
    Ok(())
}

/// A text message of a fixed size, as a masked client frame and as the
/// server's unmasked echo. The payload is `loadgen`'s text unit (an id,
/// a letter pattern, a final `\n`: ASCII, so valid UTF-8).
#[derive(Debug, Clone, Copy)]
pub struct WsUnit {
    payload: Unit,
}

impl WsUnit {
    /// Text messages of `len` bytes (below 64 KiB: 7- or 16-bit lengths).
    pub fn text(len: usize) -> WsUnit {
        assert!(len < 65_536, "16-bit lengths at most");
        WsUnit {
            payload: Unit::text(len),
        }
    }

    fn len(&self) -> usize {
        self.payload.size
    }

    /// Bytes of the header before the mask: opcode byte, length byte, and
    /// the 16-bit extended length if any.
    fn header_len(&self) -> usize {
        if self.len() < 126 {
            2
        } else {
            4
        }
    }

    /// Bytes on the wire of a client frame (masked).
    pub fn request_size(&self) -> usize {
        self.header_len() + 4 + self.len()
    }

    /// Bytes on the wire of the server's echo (unmasked).
    pub fn reply_size(&self) -> usize {
        self.header_len() + self.len()
    }

    /// Writes FIN + text opcode and the length, `mask` bit as given.
    fn header(&self, masked: bool, out: &mut [u8]) {
        let m = if masked { 0x80 } else { 0 };
        out[0] = 0x81;
        if self.len() < 126 {
            out[1] = m | self.len() as u8;
        } else {
            out[1] = m | 126;
            out[2..4].copy_from_slice(&(self.len() as u16).to_be_bytes());
        }
    }

    /// The masking key of message `seq` of connection `conn`: it differs
    /// from one frame to the next, as RFC 6455 asks of a client.
    fn mask(conn: u32, seq: u64) -> [u8; 4] {
        let x = (seq as u32).wrapping_mul(0x9E37_79B9) ^ conn.rotate_left(16) ^ 0xA5A5_5A5A;
        x.to_be_bytes()
    }

    /// Client frame `seq` of connection `conn` (`request_size` bytes).
    pub fn fill_request(&self, conn: u32, seq: u64, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.request_size());
        let h = self.header_len();
        self.header(true, out);
        let mask = Self::mask(conn, seq);
        out[h..h + 4].copy_from_slice(&mask);
        let payload = &mut out[h + 4..];
        self.payload.fill(conn, seq, payload);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
    }

    /// The server's echo of frame `seq` of connection `conn`
    /// (`reply_size` bytes).
    pub fn fill_reply(&self, conn: u32, seq: u64, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.reply_size());
        let h = self.header_len();
        self.header(false, out);
        self.payload.fill(conn, seq, &mut out[h..]);
    }

    /// Checks `chunk`, the reply bytes at stream offset `start` of
    /// connection `conn`: every frame's header, and the whole of every
    /// [`SAMPLE`]th frame that lies whole in the chunk.
    pub fn check(&self, conn: u32, start: u64, chunk: &[u8], scratch: &mut [u8]) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let size = self.reply_size() as u64;
        let mut header = [0u8; 4];
        self.header(false, &mut header);
        let end = start + chunk.len() as u64;
        for u in start / size..=(end - 1) / size {
            let ustart = u * size;
            for (p, &want) in header[..self.header_len()].iter().enumerate() {
                let g = ustart + p as u64;
                if g >= start && g < end && chunk[(g - start) as usize] != want {
                    bail!(
                        "connection {conn}: reply byte {g} (frame {u}, header byte {p}) is {:#04x}, \
                         not {want:#04x}",
                        chunk[(g - start) as usize]
                    );
                }
            }
            if u % SAMPLE == 0 && ustart >= start && ustart + size <= end {
                self.fill_reply(conn, u, scratch);
                let off = (ustart - start) as usize;
                if chunk[off..off + size as usize] != scratch[..] {
                    bail!("connection {conn}: reply frame {u} differs from what was sent");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    /// Client frames parse as masked text frames with tungstenite's frame
    /// parser and unmask to the payload; replies parse as unmasked ones.
    #[test]
    fn frames_parse_with_tungstenite_both_length_forms() {
        for len in [32, 125, 126, 4096] {
            let unit = WsUnit::text(len);
            let mut req = vec![0u8; unit.request_size()];
            unit.fill_request(7, 3, &mut req);
            let mut cur = Cursor::new(&req[..]);
            let (h, n) = FrameHeader::parse(&mut cur).unwrap().unwrap();
            assert!(h.is_final);
            assert_eq!(h.opcode, OpCode::Data(Data::Text));
            assert_eq!(n as usize, len);
            let mask = h.mask.expect("client frames are masked");
            let at = cur.position() as usize;
            assert_eq!(at + len, req.len());
            let payload: Vec<u8> = req[at..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i & 3])
                .collect();
            let mut plain = vec![0u8; len];
            Unit::text(len).fill(7, 3, &mut plain);
            assert_eq!(payload, plain);
            assert!(std::str::from_utf8(&payload).is_ok());

            let mut rep = vec![0u8; unit.reply_size()];
            unit.fill_reply(7, 3, &mut rep);
            let mut cur = Cursor::new(&rep[..]);
            let (h, n) = FrameHeader::parse(&mut cur).unwrap().unwrap();
            assert!(h.mask.is_none());
            assert_eq!(n as usize, len);
            assert_eq!(&rep[cur.position() as usize..], &plain[..]);
        }
        // Masks change from frame to frame.
        assert_ne!(WsUnit::mask(1, 1), WsUnit::mask(1, 2));
        assert_ne!(WsUnit::mask(1, 1), WsUnit::mask(2, 1));
    }

    /// A stream of replies passes however it is split; a lost or corrupted
    /// frame fails.
    #[test]
    fn replies_are_checked_by_position() {
        for len in [32, 300] {
            let unit = WsUnit::text(len);
            let size = unit.reply_size();
            let mut stream = vec![0u8; size * 200];
            for (i, u) in stream.chunks_exact_mut(size).enumerate() {
                unit.fill_reply(5, i as u64, u);
            }
            let mut scratch = vec![0u8; size];
            for cut in [1, 3, size - 1, size, size + 1, 5000] {
                let mut pos = 0;
                while pos < stream.len() {
                    let end = (pos + cut).min(stream.len());
                    unit.check(5, pos as u64, &stream[pos..end], &mut scratch)
                        .unwrap();
                    pos = end;
                }
            }
            let mut lossy = stream.clone();
            lossy.drain(size * 5..size * 6 - 1);
            assert!(unit.check(5, 0, &lossy, &mut scratch).is_err());
            let mut bad = stream.clone();
            bad[size * SAMPLE as usize + 9] ^= 1;
            assert!(unit.check(5, 0, &bad, &mut scratch).is_err());
        }
    }

    #[test]
    fn upgrade_responses_are_checked() {
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             sec-websocket-accept: {ACCEPT}"
        );
        check_response(ok.as_bytes()).unwrap();
        let wrong = ok.replace(ACCEPT, "AAAA");
        assert!(check_response(wrong.as_bytes()).is_err());
        let refused = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0";
        assert!(check_response(refused.as_bytes()).is_err());
        let deflate = format!("{ok}\r\nSec-WebSocket-Extensions: permessage-deflate");
        assert!(check_response(deflate.as_bytes()).is_err());
        let missing = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket";
        assert!(check_response(missing.as_bytes()).is_err());
    }
}
