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
//! With context takeover each side's LZ77 window carries over from one
//! message to the next, so a repeated message compresses to a
//! back-reference: the second "Hello" is `c1 05 f2 00 11 00 00`.
//! `*_no_context_takeover` makes that side compress each message on its
//! own.
//!
//! # What a connection holds
//!
//! A zlib stream is large (an inflater about 40 KiB, a compressor about
//! 300 KiB at window 15), and an idle connection needs none: a connection
//! keeps no zlib stream between messages.
//!
//! * The compressor is borrowed for one message from a spare kept per
//!   thread ([`take_compressor`]), reset and given back.
//! * The inflater is borrowed at a message's first compressed bytes and
//!   given back when the message ends (a message that arrives over many
//!   reads keeps it meanwhile, and it is counted in `held_bytes`).
//! * Context takeover is kept as *history*: the last `2^window` bytes of
//!   the direction's messages, given to the next message's stream as its
//!   dictionary (`deflateSetDictionary` / `inflateSetDictionary`). That is
//!   exactly what the peer's LZ77 window can refer back to, so an idle
//!   connection holds at most `2^window` bytes per direction with
//!   context takeover, and nothing without it.
//!
//! Inflating is bounded: output grows by doubling, never past the maximum
//! message size plus one byte, and the message fails with 1009 as soon as
//! it exceeds the maximum, so a small "decompression bomb" costs at most
//! the maximum plus one byte.

use std::cell::Cell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use lubdub_protocol::ProtocolError;

use crate::config::DeflateConfig;
use crate::frame::apply_mask;
use crate::reassembly::MessageBuf;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub(crate) const EXTENSION: &str = "permessage-deflate";

/// The tail of every sync-flushed DEFLATE block, left off on the wire.
const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Inflated bytes go through a per-thread buffer of this size on their
/// way to the message.
const OUT_CHUNK: usize = 8 * 1024;
/// Masked compressed bytes are unmasked through a per-thread buffer of this
/// size on their way to the inflater.
const IN_CHUNK: usize = 4 * 1024;
/// The first chunk of masked input unmasked in an [`Inflater::inflate`]
/// call (then twice as much each time, up to [`IN_CHUNK`]).
const FIRST_IN_CHUNK: usize = 256;

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
    /// This side compresses each message on its own (no context takeover).
    pub compress_reset: bool,
    /// The peer's compressor window in bits: how far back its messages
    /// may refer (the history kept with context takeover).
    pub inflate_window: u8,
    /// The peer compresses each message on its own: no history is kept.
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
        let window = self.compress_window?.clamp(9, 15);
        Some(Deflater {
            level: self.level.min(9),
            window,
            takeover: !self.compress_reset,
            threshold: self.threshold,
            history: Vec::new(),
        })
    }

    /// This side's inflater.
    pub(crate) fn inflater(&self) -> Inflater {
        Inflater {
            stream: None,
            window: self.inflate_window.clamp(8, 15),
            takeover: !self.inflate_reset,
            history: Vec::new(),
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
///
/// The client's window is bounded by `cfg.client_max_window_bits`, which
/// bounds the history kept for it between messages: an offer that names
/// `client_max_window_bits` (browsers' do, without a value) is answered
/// with the smaller of its value and the limit; a client that did not
/// name it may use 15 bits, which the answer cannot lower, so if that is
/// over the limit the answer adds `client_no_context_takeover` (RFC 7692
/// §7.1.1.2 lets a server add it unasked) and nothing is kept for it.
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
            let client_window = match p.client_max_window_bits {
                // A value is only a hint unless the answer repeats it.
                Some(offered) => offered.unwrap_or(15).min(client_limit),
                None => 15,
            };
            let client_max_window_bits =
                (p.client_max_window_bits.is_some() && client_window < 15).then_some(client_window);
            let server_no_context_takeover =
                p.server_no_context_takeover || cfg.server_no_context_takeover;
            let client_no_context_takeover = p.client_no_context_takeover
                || cfg.client_no_context_takeover
                || client_window > client_limit;
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
                inflate_window: client_window,
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
        inflate_window: p.server_max_window_bits.unwrap_or(15),
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

/// What zlib-rs allocates for an inflater: its state (about 7 KiB) and a
/// 32 KiB window, whatever the window bits (`InflateAllocOffsets` in
/// zlib-rs's `inflate.rs`).
pub(crate) const INFLATER_BYTES: usize = (1 << 15) + 7 * 1024;

thread_local! {
    /// A reset inflater, for the next message that starts on this thread.
    static SPARE_INFLATER: Cell<Option<Box<Decompress>>> = const { Cell::new(None) };
    /// A reset compressor, for the next message compressed on this thread.
    static SPARE_COMPRESSOR: Cell<Option<SpareCompressor>> = const { Cell::new(None) };
    /// [`OUT_CHUNK`] + [`IN_CHUNK`] bytes for inflating (zeroed once per
    /// thread, not per call).
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer ([`OUT_CHUNK`] +
/// [`IN_CHUNK`] bytes).
fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut buf = SCRATCH.try_with(Cell::take).unwrap_or_default();
    if buf.len() < OUT_CHUNK + IN_CHUNK {
        buf = vec![0; OUT_CHUNK + IN_CHUNK];
    }
    let result = f(&mut buf);
    let _ = SCRATCH.try_with(|s| s.set(buf));
    result
}

/// A compressor and the settings it was made with.
struct SpareCompressor {
    level: u32,
    window: u8,
    stream: Box<Compress>,
}

/// A reset raw inflater: this thread's spare, or a new one.
fn take_inflater() -> Box<Decompress> {
    SPARE_INFLATER
        .try_with(Cell::take)
        .ok()
        .flatten()
        .unwrap_or_else(|| Box::new(Decompress::new(false)))
}

/// Resets `stream` and keeps it as this thread's spare.
fn give_back_inflater(mut stream: Box<Decompress>) {
    stream.reset(false);
    let _ = SPARE_INFLATER.try_with(|spare| spare.set(Some(stream)));
}

/// A reset raw compressor for `level` and `window`: this thread's spare if
/// it has those settings, or a new one.
fn take_compressor(level: u32, window: u8) -> Box<Compress> {
    match SPARE_COMPRESSOR.try_with(Cell::take).ok().flatten() {
        Some(spare) if spare.level == level && spare.window == window => spare.stream,
        _ => Box::new(Compress::new_with_window_bits(
            Compression::new(level),
            false,
            window,
        )),
    }
}

/// Resets `stream` and keeps it as this thread's spare.
fn give_back_compressor(level: u32, window: u8, mut stream: Box<Compress>) {
    stream.reset();
    let spare = SpareCompressor {
        level,
        window,
        stream,
    };
    let _ = SPARE_COMPRESSOR.try_with(|s| s.set(Some(spare)));
}

/// Appends `data` to `history`, keeping its last `window` bytes; the
/// buffer grows by doubling but never past `window` bytes.
fn remember(history: &mut Vec<u8>, window: usize, data: &[u8]) {
    if data.len() >= window {
        history.clear();
        if history.capacity() < window {
            history.reserve_exact(window);
        }
        history.extend_from_slice(&data[data.len() - window..]);
        return;
    }
    let keep = history.len().min(window - data.len());
    history.drain(..history.len() - keep);
    let need = history.len() + data.len();
    if need > history.capacity() {
        let target = (history.capacity() * 2).clamp(need, window);
        history.reserve_exact(target - history.len());
    }
    history.extend_from_slice(data);
}

/// Inflates compressed messages, within a size limit. Holds a zlib stream
/// only while a message is being inflated, and with context takeover the
/// peer's last `2^window` bytes.
pub(crate) struct Inflater {
    /// The zlib stream of the message being inflated.
    stream: Option<Box<Decompress>>,
    /// The peer's window in bits.
    window: u8,
    /// Context takeover: the peer's messages refer back to earlier ones.
    takeover: bool,
    /// With context takeover: the last bytes inflated, at most
    /// `2^window`, the next message's dictionary.
    history: Vec<u8>,
    /// The peer ended the DEFLATE stream (a final block) inside the message.
    ended: bool,
}

impl Inflater {
    /// Inflates from `input` (masked with `mask`, a key and the phase of
    /// `input[0]`, if given) onto `out` (the message so far) until `input`
    /// is used up or, once at least one input byte was used, about `budget`
    /// bytes were produced; returns how many input bytes were used. The
    /// caller hands the rest in again later: a connection's session grows
    /// by about `budget` bytes per call, whatever the compression ratio,
    /// so the worker can weigh its memory budget between calls.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        mask: Option<([u8; 4], usize)>,
        out: &mut MessageBuf,
        max: usize,
        budget: usize,
    ) -> Result<usize, ProtocolError> {
        with_scratch(|scratch| {
            let (chunk, unmasked) = scratch.split_at_mut(OUT_CHUNK);
            let Some((key, phase)) = mask else {
                return self.run(input, chunk, out, max, FlushDecompress::None, budget);
            };
            // The first chunk is small and each next one twice as large:
            // a bomb's few bytes fill the budget, and unmasking 4 KiB for
            // them would cost as much as the output itself.
            let (mut used, start, mut size) = (0, out.len(), FIRST_IN_CHUNK);
            while used < input.len() {
                let left = budget.saturating_sub(out.len() - start);
                if used > 0 && left == 0 {
                    break;
                }
                let part = &input[used..input.len().min(used + size)];
                let part_unmasked = &mut unmasked[..part.len()];
                part_unmasked.copy_from_slice(part);
                apply_mask(part_unmasked, key, phase + used);
                let took = self.run(part_unmasked, chunk, out, max, FlushDecompress::None, left)?;
                used += took;
                if took < part.len() {
                    break;
                }
                size = (size * 2).min(IN_CHUNK);
            }
            Ok(used)
        })
    }

    /// The message's last bytes were given to [`inflate`](Self::inflate):
    /// appends the trailer, flushes, keeps the history the next message
    /// may refer to, and gives the zlib stream back. `out` is the whole
    /// inflated message.
    pub(crate) fn finish(&mut self, out: &mut MessageBuf, max: usize) -> Result<(), ProtocolError> {
        if !self.ended {
            with_scratch(|scratch| {
                let chunk = &mut scratch[..OUT_CHUNK];
                self.run(&TRAILER, chunk, out, max, FlushDecompress::Sync, usize::MAX)
            })?;
        }
        if self.ended {
            // A final block ended the peer's stream: the next message
            // starts a new one, with nothing to refer back to.
            self.history = Vec::new();
        } else if self.takeover {
            let window = 1 << self.window;
            let (older, newer) = out.last(window);
            remember(&mut self.history, window, older);
            remember(&mut self.history, window, newer);
        }
        self.ended = false;
        if let Some(stream) = self.stream.take() {
            give_back_inflater(stream);
        }
        Ok(())
    }

    /// Bytes held: the zlib stream while a message is being inflated (an
    /// estimate from zlib-rs's sizes) and the history.
    pub(crate) fn held_bytes(&self) -> usize {
        let stream = if self.stream.is_some() {
            INFLATER_BYTES
        } else {
            0
        };
        stream + self.history.capacity()
    }

    /// Total bytes inflated by the current stream.
    #[cfg(test)]
    pub(crate) fn total_out(&self) -> u64 {
        self.stream.as_ref().map_or(0, |s| s.total_out())
    }

    /// The zlib stream of the current message, set up with the history.
    fn stream(&mut self) -> Result<&mut Decompress, ProtocolError> {
        if self.stream.is_none() {
            let mut stream = take_inflater();
            if !self.history.is_empty() {
                stream
                    .set_dictionary(&self.history)
                    .map_err(|_| bad_deflate_data(0))?;
            }
            self.stream = Some(stream);
        }
        match self.stream.as_deref_mut() {
            Some(stream) => Ok(stream),
            None => Err(bad_deflate_data(0)),
        }
    }

    /// Inflates `input` onto `out` through `chunk`; see
    /// [`inflate`](Self::inflate).
    fn run(
        &mut self,
        input: &[u8],
        chunk: &mut [u8],
        out: &mut MessageBuf,
        max: usize,
        flush: FlushDecompress,
        budget: usize,
    ) -> Result<usize, ProtocolError> {
        let mut pos = 0;
        let mut produced = 0;
        loop {
            if self.ended {
                // Bytes after the end of the stream are ignored.
                return Ok(input.len());
            }
            if pos > 0 && produced >= budget {
                return Ok(pos);
            }
            // Never more than one byte past the maximum: enough to know
            // the message is too large.
            let room = max.saturating_add(1).saturating_sub(out.len());
            // No more than the budget asks for, once input was used.
            let want = if produced < budget {
                budget - produced
            } else {
                chunk.len()
            };
            let room = room.min(chunk.len()).min(want);
            let stream = self.stream()?;
            let (in_before, out_before) = (stream.total_in(), stream.total_out());
            let status = stream
                .decompress(&input[pos..], &mut chunk[..room], flush)
                .map_err(|_| bad_deflate_data(stream.total_in()))?;
            let used = (stream.total_in() - in_before) as usize;
            let made = (stream.total_out() - out_before) as usize;
            let total_in = stream.total_in();
            pos += used;
            produced += made;
            if out.len() + made > max {
                return Err(ProtocolError::TooLarge {
                    len: (out.len() + made) as u64,
                    max: max as u64,
                });
            }
            out.append(&chunk[..made], None, max)?;
            let full = made == room;
            if status == Status::StreamEnd {
                self.ended = true;
            } else if pos == input.len() && !full {
                return Ok(pos);
            } else if used == 0 && made == 0 && !full {
                // Input left, room left, and nothing moved: a stuck stream.
                return Err(bad_deflate_data(total_in));
            }
        }
    }
}

/// Compresses outgoing messages with a zlib stream borrowed per message;
/// with context takeover, keeps the last `2^window` bytes sent as the next
/// message's dictionary.
pub(crate) struct Deflater {
    level: u32,
    /// The compressor's window, in bits.
    window: u8,
    /// Context takeover: messages may refer back to earlier ones.
    takeover: bool,
    threshold: usize,
    /// With context takeover: the last bytes compressed, at most
    /// `2^window`.
    history: Vec<u8>,
}

impl Deflater {
    /// Bytes held between messages: the history.
    pub(crate) fn held_bytes(&self) -> usize {
        self.history.capacity()
    }

    /// Whether a message of `len` bytes is worth compressing.
    pub(crate) fn wants(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// Appends the compressed form of `input` (trailer removed) to `out`.
    pub(crate) fn compress(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        let mut stream = take_compressor(self.level, self.window);
        let start = out.len();
        let result = self.compress_with(&mut stream, input, out);
        give_back_compressor(self.level, self.window, stream);
        if result.is_err() {
            out.truncate(start);
            return result;
        }
        if out[start..].ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        }
        if out.len() == start {
            // Nothing new to flush: RFC 7692 §7.2.3.6's empty message, one
            // empty stored block's header byte, which the peer completes
            // with the trailer.
            out.push(0x00);
        }
        if self.takeover {
            remember(&mut self.history, 1 << self.window, input);
        }
        Ok(())
    }

    fn compress_with(
        &self,
        stream: &mut Compress,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        if self.takeover && !self.history.is_empty() {
            stream
                .set_dictionary(&self.history)
                .map_err(|e| ProtocolError::Other(Box::new(e)))?;
        }
        out.reserve(input.len() / 2 + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let in_before = stream.total_in();
            stream
                .compress_vec(&input[pos..], out, FlushCompress::Sync)
                .map_err(|e| ProtocolError::Other(Box::new(e)))?;
            pos += (stream.total_in() - in_before) as usize;
            if pos == input.len() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

impl Negotiated {
    /// What both sides use when no handshake negotiated anything
    /// ([`Ws::server_without_handshake`](crate::Ws::server_without_handshake)):
    /// exactly what `cfg` asks for.
    pub(crate) fn assumed(cfg: &DeflateConfig, client: bool) -> Negotiated {
        let server_window = configured_window(cfg.server_max_window_bits);
        let client_window = configured_window(cfg.client_max_window_bits);
        let (own_window, own_reset, peer_window, peer_reset) = if client {
            (
                client_window,
                cfg.client_no_context_takeover,
                server_window,
                cfg.server_no_context_takeover,
            )
        } else {
            (
                server_window,
                cfg.server_no_context_takeover,
                client_window,
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
            inflate_window: peer_window,
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
        let mut out = MessageBuf::new(false, 0);
        let err = i
            .inflate(&compressed, None, &mut out, 100_000, usize::MAX)
            .unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::TooLarge {
                len: 100_001,
                max: 100_000
            }
        ));
        // The inflater produced the maximum plus one byte, not 4 MiB.
        assert_eq!(i.total_out(), 100_001);
        assert!(out.len() <= 100_000);
    }

    #[test]
    fn each_call_inflates_about_its_budget_and_says_what_it_used() {
        let (mut d, mut i) = pair(true);
        let mut c = Vec::new();
        d.compress(&vec![0u8; 1 << 20], &mut c).unwrap();
        let mut out = MessageBuf::new(false, 0);
        let mut pos = 0;
        let mut calls = 0;
        while pos < c.len() {
            let before = out.len();
            let used = i
                .inflate(&c[pos..], None, &mut out, 2 << 20, 64 * 1024)
                .unwrap();
            assert!(used > 0);
            assert!(
                out.len() - before < 64 * 1024 + OUT_CHUNK,
                "{}",
                out.len() - before
            );
            pos += used;
            calls += 1;
        }
        i.finish(&mut out, 2 << 20).unwrap();
        assert_eq!(out.len(), 1 << 20);
        assert!(calls >= 10, "{calls} calls for 1 MiB at 64 KiB each");
    }

    #[test]
    fn history_keeps_the_last_window_bytes_and_grows_no_further() {
        let mut h = Vec::new();
        remember(&mut h, 4096, &[1; 100]);
        assert_eq!((h.len(), h.capacity()), (100, 100));
        remember(&mut h, 4096, &[2; 3000]);
        assert_eq!(h.len(), 3100);
        remember(&mut h, 4096, &[3; 2000]);
        assert_eq!(h.len(), 4096);
        assert!(h.capacity() <= 4096, "{}", h.capacity());
        assert_eq!(&h[..1096 - 100], &[2; 996][..]);
        assert_eq!(&h[h.len() - 2000..], &[3; 2000][..]);
        remember(&mut h, 4096, &[4; 10_000]);
        assert_eq!(h, vec![4; 4096]);
    }

    #[test]
    fn no_zlib_stream_is_kept_between_messages() {
        let (mut d, mut i) = pair(false);
        let mut c = Vec::new();
        d.compress(b"hello hello hello", &mut c).unwrap();
        assert!(d.held_bytes() <= 1 << 15 && d.held_bytes() >= 17);
        let mut out = MessageBuf::new(false, 0);
        i.inflate(&c[..c.len() / 2], None, &mut out, 100, usize::MAX)
            .unwrap();
        assert!(i.held_bytes() >= INFLATER_BYTES, "a message under way");
        let (mut d, mut i) = pair(true);
        let mut c = Vec::new();
        d.compress(b"hello hello hello", &mut c).unwrap();
        let mut out = MessageBuf::new(false, 0);
        i.inflate(&c, None, &mut out, 100, usize::MAX).unwrap();
        i.finish(&mut out, 100).unwrap();
        assert_eq!(out.into_vec(), b"hello hello hello");
        assert_eq!((d.held_bytes(), i.held_bytes()), (0, 0));
    }

    #[test]
    fn pieces_inflate_like_the_whole() {
        let text: Vec<u8> = b"the quick brown fox ".repeat(500);
        for reset in [false, true] {
            let (mut d, mut i) = pair(reset);
            for _ in 0..3 {
                let mut c = Vec::new();
                d.compress(&text, &mut c).unwrap();
                let mut out = MessageBuf::new(false, 0);
                for piece in c.chunks(7) {
                    let used = i
                        .inflate(piece, None, &mut out, usize::MAX, usize::MAX)
                        .unwrap();
                    assert_eq!(used, piece.len());
                }
                i.finish(&mut out, usize::MAX).unwrap();
                assert_eq!(out.into_vec(), text);
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
