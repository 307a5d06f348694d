//! permessage-deflate (RFC 7692): negotiation, and `flate2` (pure-Rust
//! `zlib-rs` backend, for its window-size support) to compress and inflate.
//!
//! A compressed message has RSV1 set on its first frame; its payload (all
//! fragments joined) is raw DEFLATE data flushed with a sync flush, minus
//! the final `00 00 ff ff`, which the receiver appends before inflating:
//!
//! ```text
//! "Hello" compressed (RFC 7692 §7.2.3.1):   c1 07 f2 48 cd c9 c9 07 00
//!                                           |  |  '-- DEFLATE data --'
//!                                           |  '-- unmasked, length 7
//!                                           '-- FIN + RSV1 + text
//! ```
//!
//! With context takeover (the default) each side's LZ77 window carries
//! over from one message to the next, so a repeated message compresses to
//! a back-reference: the second "Hello" is `c1 05 f2 00 11 00 00`.
//! `*_no_context_takeover` resets that side's compressor (and the peer's
//! inflater) after every message.
//!
//! Inflating is bounded: output grows in steps of at most 32 KiB and the
//! message fails with 1009 as soon as it exceeds the maximum message size,
//! so a small "decompression bomb" costs at most the maximum plus one step.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use lubdub_protocol::ProtocolError;

use crate::config::DeflateConfig;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub(crate) const EXTENSION: &str = "permessage-deflate";

/// The tail of every sync-flushed DEFLATE block, left off on the wire.
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Largest step by which an inflated message grows at a time.
pub(crate) const INFLATE_STEP: usize = 32 * 1024;

/// What one side of a connection does after a successful negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// The parameters of the agreed response, as sent or received.
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: Option<u8>,
    /// Window of this side's compressor in bits; `None`: send uncompressed.
    pub compress_window: Option<u8>,
    /// This side resets its compressor after every message.
    pub compress_reset: bool,
    /// This side resets its inflater after every message.
    pub inflate_reset: bool,
    pub level: u32,
    pub threshold: usize,
}

impl Negotiated {
    /// The `Sec-WebSocket-Extensions` value of the response.
    pub(crate) fn response_header(&self) -> String {
        let mut s = String::from(EXTENSION);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            s.push_str(&format!("; server_max_window_bits={bits}"));
        }
        if let Some(bits) = self.client_max_window_bits {
            s.push_str(&format!("; client_max_window_bits={bits}"));
        }
        s
    }

    /// This side's compressor, if it compresses at all.
    pub(crate) fn deflater(&self) -> Option<Deflater> {
        let window = self.compress_window?;
        let window = window.clamp(9, 15);
        Some(Deflater {
            inner: Compress::new_with_window_bits(
                Compression::new(self.level.min(9)),
                false,
                window,
            ),
            reset_after_message: self.compress_reset,
            threshold: self.threshold,
            window,
        })
    }

    /// This side's inflater.
    pub(crate) fn inflater(&self) -> Inflater {
        Inflater {
            inner: Decompress::new(false),
            reset_after_message: self.inflate_reset,
            ended: false,
        }
    }
}

/// One `Sec-WebSocket-Extensions` element: a name and its parameters.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Offer<'a> {
    pub name: &'a str,
    pub params: Vec<(&'a str, Option<&'a str>)>,
}

/// Splits `s` at `sep` outside double quotes.
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    s.split(move |c: char| {
        if c == '"' {
            quoted = !quoted;
        }
        c == sep && !quoted
    })
}

/// Parses `Sec-WebSocket-Extensions` values: `name; p; q=v, other`.
pub(crate) fn parse_extensions<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Offer<'a>> {
    let mut offers = Vec::new();
    for value in values {
        for element in split_outside_quotes(value, ',') {
            let mut parts = split_outside_quotes(element, ';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            if name.is_empty() {
                continue;
            }
            let params = parts
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => {
                        let v = v.trim();
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or(v);
                        (k.trim(), Some(v))
                    }
                    None => (p, None),
                })
                .collect();
            offers.push(Offer { name, params });
        }
    }
    offers
}

/// A window size parameter value: 8 to 15, digits only.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|b| (8..=15).contains(b))
}

/// A configured window, within what zlib's raw deflate supports.
fn configured_window(bits: u8) -> u8 {
    bits.clamp(9, 15)
}

/// The parameters of one permessage-deflate element, checked for
/// duplicates, unknown names and bad values (`Err` names the problem).
#[derive(Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (allowed in an offer only).
    client_max_window_bits: Option<Option<u8>>,
}

fn parse_params(params: &[(&str, Option<&str>)]) -> Result<Params, &'static str> {
    let mut p = Params::default();
    let mut seen = [false; 4];
    for &(name, value) in params {
        let (slot, flag) = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => (0, &mut p.server_no_context_takeover),
            "client_no_context_takeover" => (1, &mut p.client_no_context_takeover),
            "server_max_window_bits" => {
                let bits = value
                    .and_then(window_bits)
                    .ok_or("bad server_max_window_bits")?;
                p.server_max_window_bits = Some(bits);
                (2, &mut true)
            }
            "client_max_window_bits" => {
                let bits = match value {
                    None => None,
                    Some(v) => Some(window_bits(v).ok_or("bad client_max_window_bits")?),
                };
                p.client_max_window_bits = Some(bits);
                (3, &mut true)
            }
            _ => return Err("unknown permessage-deflate parameter"),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err("repeated permessage-deflate parameter");
        }
        if slot < 2 {
            if value.is_some() {
                return Err("no_context_takeover with a value");
            }
            *flag = true;
        }
    }
    Ok(p)
}

/// Server role: the first `permessage-deflate` offer among `offers` that
/// can be honoured, and what to answer. Offers with unknown, repeated or
/// invalid parameters are declined. An 8-bit server window, which zlib's
/// raw deflate cannot compress with, is honoured by sending every message
/// uncompressed (compression is per message); the client's messages are
/// still inflated.
pub(crate) fn negotiate_server(offers: &[Offer<'_>], cfg: &DeflateConfig) -> Option<Negotiated> {
    offers
        .iter()
        .filter(|o| o.name.eq_ignore_ascii_case(EXTENSION))
        .find_map(|offer| {
            let p = parse_params(&offer.params).ok()?;
            let own_window = configured_window(cfg.server_max_window_bits);
            let server_max_window_bits =
                p.server_max_window_bits.map(|asked| asked.min(own_window));
            let client_limit = configured_window(cfg.client_max_window_bits);
            let client_max_window_bits = match p.client_max_window_bits {
                Some(offered) if client_limit < offered.unwrap_or(15) => Some(client_limit),
                _ => None,
            };
            let server_no_context_takeover =
                p.server_no_context_takeover || cfg.server_no_context_takeover;
            let client_no_context_takeover =
                p.client_no_context_takeover || cfg.client_no_context_takeover;
            Some(Negotiated {
                server_no_context_takeover,
                client_no_context_takeover,
                server_max_window_bits,
                client_max_window_bits,
                compress_window: match server_max_window_bits {
                    Some(8) => None,
                    Some(bits) => Some(bits),
                    None => Some(own_window),
                },
                compress_reset: server_no_context_takeover,
                inflate_reset: client_no_context_takeover,
                level: cfg.level,
                threshold: cfg.threshold,
            })
        })
}

/// Client role: the `Sec-WebSocket-Extensions` value of the offer.
pub(crate) fn client_offer(cfg: &DeflateConfig) -> String {
    let mut s = String::from(EXTENSION);
    if cfg.server_no_context_takeover {
        s.push_str("; server_no_context_takeover");
    }
    if cfg.client_no_context_takeover {
        s.push_str("; client_no_context_takeover");
    }
    let server_window = configured_window(cfg.server_max_window_bits);
    if server_window < 15 {
        s.push_str(&format!("; server_max_window_bits={server_window}"));
    }
    let client_window = configured_window(cfg.client_max_window_bits);
    if client_window < 15 {
        s.push_str(&format!("; client_max_window_bits={client_window}"));
    } else {
        s.push_str("; client_max_window_bits");
    }
    s
}

/// Client role: checks the server's answer to [`client_offer`].
pub(crate) fn parse_server_response(
    offers: &[Offer<'_>],
    cfg: &DeflateConfig,
) -> Result<Negotiated, ProtocolError> {
    let [offer] = offers else {
        return Err(ProtocolError::Malformed("more than one extension accepted"));
    };
    if !offer.name.eq_ignore_ascii_case(EXTENSION) {
        return Err(ProtocolError::Malformed(
            "an extension that was not offered",
        ));
    }
    let p = parse_params(&offer.params).map_err(ProtocolError::Malformed)?;
    let client_max_window_bits = match p.client_max_window_bits {
        Some(None) => {
            return Err(ProtocolError::Malformed(
                "client_max_window_bits without a value",
            ))
        }
        Some(Some(bits)) => Some(bits),
        None => None,
    };
    let window = client_max_window_bits
        .unwrap_or(15)
        .min(configured_window(cfg.client_max_window_bits));
    Ok(Negotiated {
        server_no_context_takeover: p.server_no_context_takeover,
        client_no_context_takeover: p.client_no_context_takeover,
        server_max_window_bits: p.server_max_window_bits,
        client_max_window_bits,
        // An 8-bit window cannot be honoured by zlib: never compress then.
        compress_window: (window >= 9).then_some(window),
        compress_reset: p.client_no_context_takeover || cfg.client_no_context_takeover,
        inflate_reset: p.server_no_context_takeover,
        level: cfg.level,
        threshold: cfg.threshold,
    })
}

fn bad_deflate_data(offset: u64) -> ProtocolError {
    ProtocolError::InvalidData {
        expected: "DEFLATE data",
        offset: usize::try_from(offset).unwrap_or(usize::MAX),
    }
}

/// What zlib allocates for an inflater: its state and a 32 KiB window
/// (the peer may use any window up to 15 bits; a raw inflater allocates the
/// largest), from zlib's `inflate.c` (`struct inflate_state` ≈ 7 KiB).
const INFLATER_BYTES: usize = (1 << 15) + 7 * 1024;

/// What zlib allocates for a compressor with window `bits` at memLevel 8:
/// `(1 << (bits + 2)) + (1 << (8 + 9))` (zlib's `zconf.h` formula) plus its
/// state (≈ 6 KiB).
fn deflater_bytes(bits: u8) -> usize {
    (1 << (u32::from(bits) + 2)) + (1 << 17) + 6 * 1024
}

/// Inflates compressed messages, within a size limit.
pub(crate) struct Inflater {
    inner: Decompress,
    reset_after_message: bool,
    /// The peer ended the DEFLATE stream (a final block) inside the message.
    ended: bool,
}

impl Inflater {
    /// Inflates part of a compressed message onto `out`.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), ProtocolError> {
        self.run(input, out, max, FlushDecompress::None)
    }

    /// The message's last bytes were given to [`inflate`](Self::inflate):
    /// appends the trailer, flushes, and resets if agreed.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>, max: usize) -> Result<(), ProtocolError> {
        if !self.ended {
            self.run(&TRAILER, out, max, FlushDecompress::Sync)?;
        }
        if self.reset_after_message || self.ended {
            self.inner.reset(false);
            self.ended = false;
        }
        Ok(())
    }

    /// Bytes zlib holds for this inflater (an estimate from zlib's sizes).
    pub(crate) fn held_bytes(&self) -> usize {
        INFLATER_BYTES
    }

    /// Total bytes inflated by this inflater.
    #[cfg(test)]
    pub(crate) fn total_out(&self) -> u64 {
        self.inner.total_out()
    }

    fn run(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
        flush: FlushDecompress,
    ) -> Result<(), ProtocolError> {
        let mut pos = 0;
        loop {
            if self.ended {
                // Bytes after the end of the stream are ignored.
                return Ok(());
            }
            if out.len() == out.capacity() {
                // Grow by doubling, in steps of at most INFLATE_STEP and
                // never past `max + 1`: one byte more than the maximum is
                // enough to know the message is too large.
                let room = max.saturating_add(1).saturating_sub(out.len());
                let step = out.capacity().clamp(1024, INFLATE_STEP).min(room);
                out.reserve_exact(step);
            }
            let (pos_before, in_before, out_before) = (pos, self.inner.total_in(), out.len());
            let status = self
                .inner
                .decompress_vec(&input[pos..], out, flush)
                .map_err(|_| bad_deflate_data(self.inner.total_in()))?;
            pos += (self.inner.total_in() - in_before) as usize;
            if out.len() > max {
                return Err(ProtocolError::TooLarge {
                    len: out.len() as u64,
                    max: max as u64,
                });
            }
            let full = out.len() == out.capacity();
            if status == Status::StreamEnd {
                self.ended = true;
            } else if pos == input.len() && !full {
                return Ok(());
            } else if pos == pos_before && out.len() == out_before && !full {
                // Input left, room left, and nothing moved: a stuck stream.
                return Err(bad_deflate_data(self.inner.total_in()));
            }
        }
    }
}

/// Compresses outgoing messages.
pub(crate) struct Deflater {
    inner: Compress,
    reset_after_message: bool,
    threshold: usize,
    /// The compressor's window, in bits.
    window: u8,
}

impl Deflater {
    /// Bytes zlib holds for this compressor (an estimate from zlib's sizes).
    pub(crate) fn held_bytes(&self) -> usize {
        deflater_bytes(self.window)
    }

    /// Whether a message of `len` bytes is worth compressing.
    pub(crate) fn wants(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// Replaces `out` with the compressed form of `input` (trailer removed).
    pub(crate) fn compress(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        out.clear();
        out.reserve(input.len() / 2 + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let in_before = self.inner.total_in();
            self.inner
                .compress_vec(&input[pos..], out, FlushCompress::Sync)
                .map_err(|e| ProtocolError::Other(Box::new(e)))?;
            pos += (self.inner.total_in() - in_before) as usize;
            if pos == input.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        }
        if out.is_empty() {
            // Nothing new to flush (an empty message right after another
            // flush): RFC 7692 §7.2.3.6's empty message, one empty stored
            // block's header byte, which the peer completes with the trailer.
            out.push(0x00);
        }
        if self.reset_after_message {
            self.inner.reset();
        }
        Ok(())
    }
}

impl Negotiated {
    /// What both sides use when no handshake negotiated anything
    /// ([`Ws::server_without_handshake`](crate::Ws::server_without_handshake)):
    /// exactly what `cfg` asks for.
    pub(crate) fn assumed(cfg: &DeflateConfig, client: bool) -> Negotiated {
        let server_window = configured_window(cfg.server_max_window_bits);
        let client_window = configured_window(cfg.client_max_window_bits);
        let (own_window, own_reset, peer_reset) = if client {
            (
                client_window,
                cfg.client_no_context_takeover,
                cfg.server_no_context_takeover,
            )
        } else {
            (
                server_window,
                cfg.server_no_context_takeover,
                cfg.client_no_context_takeover,
            )
        };
        Negotiated {
            server_no_context_takeover: cfg.server_no_context_takeover,
            client_no_context_takeover: cfg.client_no_context_takeover,
            server_max_window_bits: (server_window < 15).then_some(server_window),
            client_max_window_bits: (client_window < 15).then_some(client_window),
            compress_window: Some(own_window),
            compress_reset: own_reset,
            inflate_reset: peer_reset,
            level: cfg.level,
            threshold: cfg.threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(reset: bool) -> (Deflater, Inflater) {
        let cfg = DeflateConfig::default()
            .server_no_context_takeover(reset)
            .client_no_context_takeover(reset);
        let server = Negotiated::assumed(&cfg, false);
        let client = Negotiated::assumed(&cfg, true);
        (server.deflater().unwrap(), client.inflater())
    }

    #[test]
    fn inflate_stops_one_step_past_the_limit() {
        let (mut d, mut i) = pair(false);
        let mut compressed = Vec::new();
        d.compress(&vec![0u8; 4 << 20], &mut compressed).unwrap();
        let mut out = Vec::new();
        let err = i.inflate(&compressed, &mut out, 100_000).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::TooLarge {
                len: 100_001,
                max: 100_000
            }
        ));
        // The inflater produced the maximum plus one byte, not 4 MiB.
        assert_eq!(i.total_out(), 100_001);
        assert!(out.capacity() <= 100_001);
    }

    #[test]
    fn pieces_inflate_like_the_whole() {
        let text: Vec<u8> = b"the quick brown fox ".repeat(500);
        for reset in [false, true] {
            let (mut d, mut i) = pair(reset);
            for _ in 0..3 {
                let mut c = Vec::new();
                d.compress(&text, &mut c).unwrap();
                let mut out = Vec::new();
                for piece in c.chunks(7) {
                    i.inflate(piece, &mut out, usize::MAX).unwrap();
                }
                i.finish(&mut out, usize::MAX).unwrap();
                assert_eq!(out, text);
            }
        }
    }

    #[test]
    fn extension_lists_split_outside_quotes() {
        let offers = parse_extensions([
            "permessage-deflate; client_max_window_bits=\"10\"; x=\"a,b\", other",
            "third",
        ]);
        let names: Vec<&str> = offers.iter().map(|o| o.name).collect();
        assert_eq!(names, ["permessage-deflate", "other", "third"]);
        assert_eq!(
            offers[0].params,
            [("client_max_window_bits", Some("10")), ("x", Some("a,b"))]
        );
    }
}
