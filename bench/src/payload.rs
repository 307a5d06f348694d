//! What the load generator's messages carry: the id `c<conn>s<seq>` of the
//! message, then filler: the repeating alphabet (the plain rows), or word
//! text of a realistic distribution (the WebSocket deflate rows). All
//! ASCII, so valid UTF-8 for the Text and WebSocket text servers.

/// Length of the `c<conn>s<seq>` id at the start of every message body.
pub const HEAD_LEN: usize = 26;

/// One reply in this many is compared byte for byte with what was sent
/// (of the others, only the framing or the length is checked).
pub const SAMPLE: u64 = 64;

/// Writes the id `c<conn hex>s<seq hex>` (26 bytes), cut to `out`'s
/// length; returns the bytes written.
pub fn fill_id(conn: u32, seq: u64, out: &mut [u8]) -> usize {
    let mut head = [0u8; HEAD_LEN];
    head[0] = b'c';
    hex(conn as u64, &mut head[1..9]);
    head[9] = b's';
    hex(seq, &mut head[10..26]);
    let n = head.len().min(out.len());
    out[..n].copy_from_slice(&head[..n]);
    n
}

/// The id of message `seq` of connection `conn`, then `abc...z` to the end
/// of `out`.
pub fn fill_pattern(conn: u32, seq: u64, out: &mut [u8]) {
    let n = fill_id(conn, seq, out);
    let rest = out.len() - n;
    out[n..].copy_from_slice(&pattern(rest)[..rest]);
}

/// `abc...zabc...` of at least `len` bytes.
pub fn pattern(len: usize) -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let p = P.get_or_init(|| (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect());
    assert!(len <= p.len(), "message too large for the pattern");
    p
}

/// `v` in lower-case hex digits filling `out` (leading zeros).
pub fn hex(v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let n = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        let shift = 4 * (n - 1 - i);
        *b = if shift < 64 {
            DIGITS[((v >> shift) & 0xf) as usize]
        } else {
            b'0'
        };
    }
}

/// The number that lower-case hex digits `b` spell, `None` if one is not a
/// digit.
pub fn unhex(b: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = v << 4 | d as u64;
    }
    Some(v)
}

/// A mixer of 64-bit values (splitmix64): masking keys, word choices.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Payload of the deflate rows, `out.len()` bytes: the id, then a slice of
/// [`corpus`] at an offset drawn from the id. Text of a realistic word
/// distribution compresses about as English does (the progress line gives
/// the ratio measured on the wire); the plain rows' repeating alphabet
/// would compress to almost nothing, and a small vocabulary makes
/// zlib's match search unrepresentatively slow.
pub fn fill_words(conn: u32, seq: u64, out: &mut [u8]) {
    let n = fill_id(conn, seq, out);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_hex_round_trip() {
        let mut out = [0u8; 40];
        fill_pattern(7, 0x1234, &mut out);
        assert_eq!(&out[..HEAD_LEN], b"c00000007s0000000000001234");
        assert_eq!(&out[HEAD_LEN..HEAD_LEN + 3], b"abc");
        assert_eq!(unhex(&out[10..26]), Some(0x1234));
        assert_eq!(unhex(b"12g"), None);
        let mut short = [0u8; 4];
        assert_eq!(fill_id(1, 2, &mut short), 4);
        assert_eq!(&short, b"c000");
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
