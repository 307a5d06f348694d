//! DEFLATE (RFC 1951) for the raw test client, written from the RFC so the
//! client does not share code with the server under test (which uses
//! flate2): an inflater that understands every block type and enforces a
//! window, a fixed-Huffman LZ77 compressor with an optional window and
//! context takeover, and a "bomb" builder.
//!
//! The inflater is bit-by-bit and canonical-Huffman in the style of zlib's
//! `puff.c`: slow, small, and strict. It reports a distance beyond the
//! window it was given as an error, which is how the tests check that the
//! server honours `server_max_window_bits` and `server_no_context_takeover`.

/// The tail of a sync flush, left off on the wire by RFC 7692.
pub const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

// ---------------------------------------------------------------- inflate

struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Result<u32, String> {
        let byte = *self
            .data
            .get(self.pos / 8)
            .ok_or("DEFLATE data ended inside a block")?;
        let b = (byte >> (self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(b))
    }

    /// `n` bits, least significant first.
    fn bits(&mut self, n: u32) -> Result<u32, String> {
        let mut v = 0;
        for i in 0..n {
            v |= self.bit()? << i;
        }
        Ok(v)
    }

    fn align(&mut self) {
        self.pos = self.pos.div_ceil(8) * 8;
    }
}

/// A canonical Huffman code: how many codes of each length, and the
/// symbols in code order.
struct Huffman {
    count: [u16; 16],
    symbol: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Result<Self, String> {
        let mut count = [0u16; 16];
        for &l in lengths {
            count[usize::from(l)] += 1;
        }
        count[0] = 0;
        let mut left: i32 = 1;
        for &c in &count[1..] {
            left = left * 2 - i32::from(c);
            if left < 0 {
                return Err("over-subscribed Huffman code".into());
            }
        }
        let mut offs = [0u16; 16];
        for len in 1..15 {
            offs[len + 1] = offs[len] + count[len];
        }
        let mut symbol = vec![0u16; lengths.len()];
        for (sym, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbol[usize::from(offs[usize::from(l)])] = sym as u16;
                offs[usize::from(l)] += 1;
            }
        }
        Ok(Huffman { count, symbol })
    }

    fn decode(&self, r: &mut BitReader<'_>) -> Result<u16, String> {
        let (mut code, mut first, mut index): (i32, i32, i32) = (0, 0, 0);
        for len in 1..16 {
            code |= r.bit()? as i32;
            let count = i32::from(self.count[len]);
            if code - count < first {
                return Ok(self.symbol[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("invalid Huffman code".into())
    }
}

fn fixed_codes() -> (Huffman, Huffman) {
    let mut lengths = [0u8; 288];
    for (i, l) in lengths.iter_mut().enumerate() {
        *l = match i {
            0..=143 => 8,
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
    }
    let lit = Huffman::new(&lengths).expect("fixed literal code");
    let dist = Huffman::new(&[5u8; 30]).expect("fixed distance code");
    (lit, dist)
}

fn dynamic_codes(r: &mut BitReader<'_>) -> Result<(Huffman, Huffman), String> {
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let nlen = r.bits(5)? as usize + 257;
    let ndist = r.bits(5)? as usize + 1;
    let ncode = r.bits(4)? as usize + 4;
    if nlen > 286 || ndist > 30 {
        return Err("bad dynamic block counts".into());
    }
    let mut code_lengths = [0u8; 19];
    for &slot in &ORDER[..ncode] {
        code_lengths[slot] = r.bits(3)? as u8;
    }
    let lencode = Huffman::new(&code_lengths)?;
    let mut lengths = vec![0u8; nlen + ndist];
    let mut i = 0;
    while i < nlen + ndist {
        let sym = lencode.decode(r)?;
        if sym < 16 {
            lengths[i] = sym as u8;
            i += 1;
            continue;
        }
        let (value, repeat) = match sym {
            16 => {
                if i == 0 {
                    return Err("repeat with no previous length".into());
                }
                (lengths[i - 1], 3 + r.bits(2)?)
            }
            17 => (0, 3 + r.bits(3)?),
            _ => (0, 11 + r.bits(7)?),
        };
        for _ in 0..repeat {
            if i >= lengths.len() {
                return Err("too many code lengths".into());
            }
            lengths[i] = value;
            i += 1;
        }
    }
    if lengths[256] == 0 {
        return Err("no end-of-block code".into());
    }
    Ok((
        Huffman::new(&lengths[..nlen])?,
        Huffman::new(&lengths[nlen..])?,
    ))
}

/// Inflates the messages of one direction of a connection.
pub struct Inflater {
    /// Earlier output still in the window (context takeover).
    history: Vec<u8>,
    /// Largest distance a back-reference may have (`2^window_bits`).
    max_distance: usize,
    /// Forget the history after every message (no context takeover).
    reset: bool,
}

impl Inflater {
    /// An inflater for a peer compressing with a window of `window_bits`,
    /// resetting its context after each message if `no_context_takeover`.
    pub fn new(window_bits: u8, no_context_takeover: bool) -> Self {
        Inflater {
            history: Vec::new(),
            max_distance: 1 << window_bits,
            reset: no_context_takeover,
        }
    }

    /// Inflates one message's payload (all fragments joined), appending
    /// the sync-flush trailer first as RFC 7692 §7.2.2 says. Fails on
    /// invalid data, on a distance beyond the window or the history, and
    /// on output larger than `max_out`.
    pub fn message(&mut self, payload: &[u8], max_out: usize) -> Result<Vec<u8>, String> {
        let mut input = payload.to_vec();
        input.extend_from_slice(&TRAILER);
        let start = self.history.len();
        let mut out = std::mem::take(&mut self.history);
        let mut r = BitReader {
            data: &input,
            pos: 0,
        };
        loop {
            let last = r.bit()? == 1;
            match r.bits(2)? {
                0 => {
                    r.align();
                    let at = r.pos / 8;
                    let head = input
                        .get(at..at + 4)
                        .ok_or("stored block header cut short")?;
                    let len = usize::from(u16::from_le_bytes([head[0], head[1]]));
                    let nlen = u16::from_le_bytes([head[2], head[3]]);
                    if nlen != !(len as u16) {
                        return Err("stored block LEN/NLEN mismatch".into());
                    }
                    let body = input
                        .get(at + 4..at + 4 + len)
                        .ok_or("stored block cut short")?;
                    out.extend_from_slice(body);
                    r.pos = (at + 4 + len) * 8;
                }
                1 => {
                    let (lit, dist) = fixed_codes();
                    self.codes(&mut r, &mut out, &lit, &dist, start, max_out)?;
                }
                2 => {
                    let (lit, dist) = dynamic_codes(&mut r)?;
                    self.codes(&mut r, &mut out, &lit, &dist, start, max_out)?;
                }
                _ => return Err("reserved block type 3".into()),
            }
            if out.len() - start > max_out {
                return Err(format!("inflated beyond {max_out} bytes"));
            }
            if last || r.pos.div_ceil(8) >= input.len() {
                break;
            }
        }
        let message = out[start..].to_vec();
        if !self.reset {
            let keep = out.len().min(self.max_distance);
            self.history = out[out.len() - keep..].to_vec();
        }
        Ok(message)
    }

    fn codes(
        &self,
        r: &mut BitReader<'_>,
        out: &mut Vec<u8>,
        lit: &Huffman,
        dist: &Huffman,
        start: usize,
        max_out: usize,
    ) -> Result<(), String> {
        loop {
            let sym = lit.decode(r)?;
            match sym {
                0..=255 => out.push(sym as u8),
                256 => return Ok(()),
                _ => {
                    let i = usize::from(sym - 257);
                    if i >= 29 {
                        return Err("invalid length symbol".into());
                    }
                    let len = usize::from(LEN_BASE[i]) + r.bits(u32::from(LEN_EXTRA[i]))? as usize;
                    let d = usize::from(dist.decode(r)?);
                    if d >= 30 {
                        return Err("invalid distance symbol".into());
                    }
                    let distance =
                        usize::from(DIST_BASE[d]) + r.bits(u32::from(DIST_EXTRA[d]))? as usize;
                    if distance > out.len() {
                        return Err(format!(
                            "distance {distance} reaches before the window's start ({} bytes of history and output)",
                            out.len()
                        ));
                    }
                    if distance > self.max_distance {
                        return Err(format!(
                            "distance {distance} beyond the negotiated window of {}",
                            self.max_distance
                        ));
                    }
                    for _ in 0..len {
                        let b = out[out.len() - distance];
                        out.push(b);
                    }
                    if out.len() - start > max_out {
                        return Err(format!("inflated beyond {max_out} bytes"));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- deflate

/// Writes bits least significant first, as DEFLATE packs them.
#[derive(Default)]
pub struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    /// Appends the low `n` bits of `v`, least significant first.
    pub fn bits(&mut self, v: u32, n: u32) {
        self.acc |= u64::from(v) << self.n;
        self.n += n;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// Appends a Huffman code of `len` bits (codes go most significant first).
    pub fn code(&mut self, code: u32, len: u32) {
        let mut rev = 0;
        for i in 0..len {
            rev |= ((code >> i) & 1) << (len - 1 - i);
        }
        self.bits(rev, len);
    }

    /// Fixed-Huffman literal/length symbol.
    pub fn fixed_symbol(&mut self, sym: u16) {
        let s = u32::from(sym);
        match sym {
            0..=143 => self.code(0x30 + s, 8),
            144..=255 => self.code(0x190 + s - 144, 9),
            256..=279 => self.code(s - 256, 7),
            _ => self.code(0xC0 + s - 280, 8),
        }
    }

    /// A back-reference in a fixed-Huffman block.
    pub fn fixed_match(&mut self, len: usize, distance: usize) {
        let li = LEN_BASE
            .iter()
            .rposition(|&b| usize::from(b) <= len)
            .unwrap();
        self.fixed_symbol(257 + li as u16);
        self.bits(
            (len - usize::from(LEN_BASE[li])) as u32,
            u32::from(LEN_EXTRA[li]),
        );
        let di = DIST_BASE
            .iter()
            .rposition(|&b| usize::from(b) <= distance)
            .unwrap();
        self.code(di as u32, 5);
        self.bits(
            (distance - usize::from(DIST_BASE[di])) as u32,
            u32::from(DIST_EXTRA[di]),
        );
    }

    /// Ends the stream with a sync flush (an empty stored block) and
    /// returns the bytes without the 4-byte trailer, as RFC 7692 sends them.
    pub fn finish_sync_flush(mut self) -> Vec<u8> {
        self.bits(0, 3); // BFINAL = 0, BTYPE = stored
        if self.n > 0 {
            self.bits(0, 8 - self.n);
        }
        self.out.extend_from_slice(&TRAILER);
        let n = self.out.len() - TRAILER.len();
        self.out.truncate(n);
        self.out
    }
}

/// Compresses the messages of one direction: greedy LZ77 over a hash of
/// three bytes, in one fixed-Huffman block per message, ended by a sync
/// flush. Keeps up to `2^window_bits` bytes of earlier messages to refer
/// back to unless `no_context_takeover`.
pub struct Compressor {
    history: Vec<u8>,
    window: usize,
    reset: bool,
}

impl Compressor {
    /// A compressor limited to a window of `window_bits` (9 to 15).
    pub fn new(window_bits: u8, no_context_takeover: bool) -> Self {
        Compressor {
            history: Vec::new(),
            window: 1 << window_bits,
            reset: no_context_takeover,
        }
    }

    /// One message's compressed payload.
    pub fn message(&mut self, msg: &[u8]) -> Vec<u8> {
        const HASH_BITS: u32 = 15;
        let hash = |d: &[u8]| -> usize {
            ((usize::from(d[0]) << 10) ^ (usize::from(d[1]) << 5) ^ usize::from(d[2]))
                & ((1 << HASH_BITS) - 1)
        };
        let mut data = std::mem::take(&mut self.history);
        let start = data.len();
        data.extend_from_slice(msg);
        let mut head = vec![usize::MAX; 1 << HASH_BITS];
        for i in 0..start.saturating_sub(2) {
            head[hash(&data[i..])] = i;
        }
        let mut w = BitWriter::default();
        w.bits(0, 1); // BFINAL = 0
        w.bits(1, 2); // fixed Huffman
        let mut i = start;
        while i < data.len() {
            let mut best = 0;
            let mut from = 0;
            if i + 3 <= data.len() {
                let h = hash(&data[i..]);
                let cand = head[h];
                head[h] = i;
                // Distances stay strictly inside the window (zlib does too).
                if cand != usize::MAX && i - cand < self.window {
                    let mut len = 0;
                    while len < 258 && i + len < data.len() && data[cand + len] == data[i + len] {
                        len += 1;
                    }
                    if len >= 3 {
                        best = len;
                        from = cand;
                    }
                }
            }
            if best >= 3 {
                w.fixed_match(best, i - from);
                for j in i + 1..(i + best).min(data.len().saturating_sub(2)) {
                    head[hash(&data[j..])] = j;
                }
                i += best;
            } else {
                w.fixed_symbol(u16::from(data[i]));
                i += 1;
            }
        }
        w.fixed_symbol(256);
        if !self.reset {
            let keep = data.len().min(self.window);
            self.history = data[data.len() - keep..].to_vec();
        }
        w.finish_sync_flush()
    }
}

/// A compressed message of `zeros` zero bytes made of back-references of
/// 258 bytes at distance 1: about 13 bits per 258 bytes of output.
pub fn bomb(zeros: usize) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bits(0, 1);
    w.bits(1, 2);
    w.fixed_symbol(0);
    let mut left = zeros.saturating_sub(1);
    while left >= 258 {
        w.fixed_match(258, 1);
        left -= 258;
    }
    for _ in 0..left {
        w.fixed_symbol(0);
    }
    w.fixed_symbol(256);
    w.finish_sync_flush()
}

/// One `Sec-WebSocket-Extensions` element as the server answered it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Agreed {
    /// `server_no_context_takeover`.
    pub server_no_context_takeover: bool,
    /// `client_no_context_takeover`.
    pub client_no_context_takeover: bool,
    /// `server_max_window_bits=N`.
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits=N`.
    pub client_max_window_bits: Option<u8>,
}

impl Agreed {
    /// Parses the server's `Sec-WebSocket-Extensions` value strictly: one
    /// `permessage-deflate` element, known parameters, each once, with a
    /// value of 8 to 15 where one is needed.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut parts = value.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
        {
            return Err(format!("not permessage-deflate: {value:?}"));
        }
        if value.contains(',') {
            return Err(format!("more than one extension accepted: {value:?}"));
        }
        let mut a = Agreed::default();
        let mut seen = Vec::new();
        for p in parts {
            let (name, v) = match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (p, None),
            };
            if seen.contains(&name.to_owned()) {
                return Err(format!("{name} repeated"));
            }
            seen.push(name.to_owned());
            let bits = |v: Option<&str>| -> Result<u8, String> {
                v.and_then(|v| v.parse::<u8>().ok())
                    .filter(|b| (8..=15).contains(b))
                    .ok_or(format!("{name} needs a value of 8 to 15"))
            };
            match name {
                "server_no_context_takeover" if v.is_none() => a.server_no_context_takeover = true,
                "client_no_context_takeover" if v.is_none() => a.client_no_context_takeover = true,
                "server_max_window_bits" => a.server_max_window_bits = Some(bits(v)?),
                "client_max_window_bits" => a.client_max_window_bits = Some(bits(v)?),
                _ => return Err(format!("unexpected parameter {p:?}")),
            }
        }
        Ok(a)
    }
}
