//! Where the first reply in a buffer ends, found before `redis-protocol`
//! parses it, with the limits enforced on the way.
//!
//! Hand-written on purpose, and only this much of RESP: the framing (type
//! bytes, length lines, element counts), not the values. `redis-protocol`'s
//! decoder has no limits of its own, and measured here:
//!
//! * it recurses once per nesting level, so `*1\r\n` repeated 10,000 times
//!   (40 KB) overflows a 2 MiB thread stack, which aborts the process;
//! * it parses from the first byte on every call, so a 1,000,000-element
//!   array arriving in 64 KiB reads costs 811 ms of re-parsing instead of
//!   29 ms once;
//! * it takes any two bytes after a bulk string's data as its `\r\n`.
//!
//! The scanner walks the reply iteratively and resumes where the previous
//! call stopped (the decode contract guarantees the buffer only grows until
//! something is consumed), so it is linear in the reply's size. It stops
//! with an error at a nesting depth, element count or byte length over the
//! limits before anything of that size is allocated. Only a reply the
//! scanner found complete is handed to `redis-protocol`, which builds the
//! value and validates the rest (integers, doubles, booleans, UTF-8 of
//! errors, verbatim formats).

use lubdub_protocol::ProtocolError;

use crate::RespError;

/// The limits the scanner enforces, from [`RespConfig`](crate::RespConfig).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_len: usize,
    pub max_depth: usize,
    pub max_elements: usize,
}

/// A length or count line longer than this is garbage: the longest valid
/// one is `-1` or 20 digits of a `u64`.
const MAX_LENGTH_LINE: usize = 20;

/// Per-connection scan state for the reply at the front of the buffer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scanner {
    /// Bytes of the reply already walked: the start of the next element.
    pos: usize,
    /// Elements still to come in each open aggregate, innermost last.
    open: Vec<usize>,
    /// Aggregate elements announced so far in this reply.
    elements: usize,
    /// How far the line starting at `pos` was searched for its `\n`.
    searched: usize,
}

impl Scanner {
    /// The length of the first complete reply in `src`, or `None` while it
    /// is incomplete. `resp3` admits RESP3's types; RESP2's nulls (`$-1`,
    /// `*-1`) are admitted only without it, as Redis sends `_` in RESP3.
    pub(crate) fn scan(
        &mut self,
        src: &[u8],
        limits: &Limits,
        resp3: bool,
    ) -> Result<Option<usize>, ProtocolError> {
        loop {
            while self.open.last() == Some(&0) {
                self.open.pop();
            }
            if self.pos > 0 && self.open.is_empty() {
                let len = self.pos;
                self.reset();
                return Ok(Some(len));
            }
            let Some(&kind) = src.get(self.pos) else {
                return Ok(None);
            };
            let shape = shape(kind, resp3)?;
            let Some(line_end) = self.find_line_end(src, limits, shape != Shape::Line)? else {
                return Ok(None);
            };
            let line = &src[self.pos + 1..line_end];
            let mut next = line_end + 2;
            let mut children = None;
            match shape {
                Shape::Line => {}
                Shape::Empty => {
                    if !line.is_empty() {
                        return Err(ProtocolError::Malformed("RESP3 null with content"));
                    }
                }
                Shape::Blob => {
                    let Some(len) = parse_len(line, kind == b'$' && !resp3)? else {
                        // `$-1`: RESP2's null bulk string.
                        self.accept(next, None, limits)?;
                        continue;
                    };
                    let end = next
                        .checked_add(len)
                        .and_then(|e| e.checked_add(2))
                        .filter(|&e| e <= limits.max_len)
                        .ok_or(ProtocolError::TooLarge {
                            len: (next as u64).saturating_add(len as u64).saturating_add(2),
                            max: limits.max_len as u64,
                        })?;
                    if src.len() < end {
                        // Wait for the data; the header is found again cheaply.
                        return Ok(None);
                    }
                    if &src[end - 2..end] != b"\r\n" {
                        return Err(ProtocolError::Malformed(
                            "bulk string data not followed by CRLF",
                        ));
                    }
                    next = end;
                }
                Shape::Aggregate { per_entry, extra } => {
                    if let Some(n) = parse_len(line, kind == b'*' && !resp3)? {
                        let n = n
                            .checked_mul(per_entry)
                            .and_then(|n| n.checked_add(extra))
                            .ok_or(RespError::TooManyElements {
                                count: usize::MAX,
                                max: limits.max_elements,
                            })?;
                        children = Some(n);
                    }
                }
            }
            self.accept(next, children, limits)?;
        }
    }

    /// The element at `pos` is whole up to `next` (or, for an aggregate,
    /// its header is, and `children` elements follow).
    fn accept(
        &mut self,
        next: usize,
        children: Option<usize>,
        limits: &Limits,
    ) -> Result<(), ProtocolError> {
        if let Some(left) = self.open.last_mut() {
            *left -= 1;
        }
        if let Some(n) = children {
            if self.open.len() >= limits.max_depth {
                return Err(RespError::TooDeep {
                    max: limits.max_depth,
                }
                .into());
            }
            if n > limits.max_elements - self.elements {
                return Err(RespError::TooManyElements {
                    count: self.elements.saturating_add(n),
                    max: limits.max_elements,
                }
                .into());
            }
            self.elements += n;
            self.open.push(n);
        }
        self.pos = next;
        self.searched = next;
        Ok(())
    }

    /// The index of the `\r` ending the line that starts at `pos`, resuming
    /// the search where the last call stopped.
    fn find_line_end(
        &mut self,
        src: &[u8],
        limits: &Limits,
        length_line: bool,
    ) -> Result<Option<usize>, ProtocolError> {
        let start = self.pos + 1;
        if start >= limits.max_len {
            // A reply of `max_len` bytes ends with its last element.
            return Err(ProtocolError::TooLarge {
                len: start as u64 + 2,
                max: limits.max_len as u64,
            });
        }
        let limit = src.len().min(limits.max_len);
        let from = self.searched.max(start).min(limit);
        match src[from..limit].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let lf = from + i;
                if lf < start + 1 || src[lf - 1] != b'\r' {
                    return Err(ProtocolError::Malformed(
                        "line feed without carriage return",
                    ));
                }
                if length_line && lf - 1 - start > MAX_LENGTH_LINE {
                    return Err(ProtocolError::Malformed("length line too long"));
                }
                Ok(Some(lf - 1))
            }
            None => {
                self.searched = limit;
                if length_line && limit - start > MAX_LENGTH_LINE + 1 {
                    return Err(ProtocolError::Malformed("length line too long"));
                }
                if src.len() >= limits.max_len {
                    return Err(ProtocolError::TooLarge {
                        len: src.len() as u64,
                        max: limits.max_len as u64,
                    });
                }
                Ok(None)
            }
        }
    }

    fn reset(&mut self) {
        self.pos = 0;
        self.open.clear();
        self.elements = 0;
        self.searched = 0;
    }
}

/// How an element of each type is laid out after its type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Everything up to `\r\n` (`+`, `-`, `:`, and RESP3's `,`, `#`, `(`).
    Line,
    /// An empty line (RESP3's null, `_`).
    Empty,
    /// A length line, that many bytes, `\r\n` (`$`, and RESP3's `!`, `=`).
    Blob,
    /// A count line, then `count * per_entry + extra` elements (`*`, and
    /// RESP3's `~`, `>`, `%` with two per entry, `|` with the attributed
    /// element after its entries).
    Aggregate { per_entry: usize, extra: usize },
}

fn shape(kind: u8, resp3: bool) -> Result<Shape, ProtocolError> {
    let aggregate = |per_entry, extra| Shape::Aggregate { per_entry, extra };
    Ok(match kind {
        b'+' | b'-' | b':' => Shape::Line,
        b'$' => Shape::Blob,
        b'*' => aggregate(1, 0),
        b',' | b'#' | b'(' if resp3 => Shape::Line,
        b'_' if resp3 => Shape::Empty,
        b'!' | b'=' if resp3 => Shape::Blob,
        b'~' | b'>' if resp3 => aggregate(1, 0),
        b'%' if resp3 => aggregate(2, 0),
        b'|' if resp3 => aggregate(2, 1),
        _ => return Err(ProtocolError::Malformed("not a RESP type byte")),
    })
}

/// A length or count: decimal digits, or `-1` (null) where `null_ok`.
fn parse_len(line: &[u8], null_ok: bool) -> Result<Option<usize>, ProtocolError> {
    if line == b"-1" && null_ok {
        return Ok(None);
    }
    if line == b"?" {
        return Err(ProtocolError::Malformed(
            "RESP3 streamed strings and aggregates are not supported",
        ));
    }
    if line.is_empty() || line.len() > MAX_LENGTH_LINE {
        return Err(ProtocolError::Malformed("invalid length"));
    }
    let mut n: usize = 0;
    for &b in line {
        if !b.is_ascii_digit() {
            return Err(ProtocolError::Malformed("invalid length"));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(b - b'0')))
            .ok_or(ProtocolError::Malformed("length out of range"))?;
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_len: 1 << 20,
        max_depth: 8,
        max_elements: 100,
    };

    fn scan(src: &[u8], resp3: bool) -> Result<Option<usize>, ProtocolError> {
        Scanner::default().scan(src, &LIMITS, resp3)
    }

    #[test]
    fn finds_the_end_of_each_type() {
        for (src, len) in [
            (&b"+OK\r\n"[..], 5),
            (b"-ERR x\r\n", 8),
            (b":-12\r\n", 6),
            (b"$3\r\nfoo\r\n", 9),
            (b"$0\r\n\r\n", 6),
            (b"$-1\r\n", 5),
            (b"*-1\r\n", 5),
            (b"*0\r\n", 4),
            (b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n", 19),
        ] {
            let mut padded = src.to_vec();
            padded.extend_from_slice(b"+next\r\n");
            assert_eq!(scan(&padded, false).unwrap(), Some(len), "{src:?}");
        }
        for (src, len) in [
            (&b"_\r\n"[..], 3),
            (b",1.5\r\n", 6),
            (b"#t\r\n", 4),
            (b"(123\r\n", 6),
            (b"!3\r\nerr\r\n", 9),
            (b"=7\r\ntxt:abc\r\n", 13),
            (b"%1\r\n+a\r\n:1\r\n", 12),
            (b"~1\r\n:1\r\n", 8),
            (b">2\r\n+a\r\n+b\r\n", 12),
            (b"|1\r\n+k\r\n+v\r\n:3\r\n", 16),
        ] {
            assert_eq!(scan(src, true).unwrap(), Some(len), "{src:?}");
            assert!(scan(src, false).is_err(), "RESP2 refuses {src:?}");
        }
    }

    #[test]
    fn resp3_refuses_resp2_nulls_and_streams() {
        assert!(scan(b"$-1\r\n", true).is_err());
        assert!(scan(b"*-1\r\n", true).is_err());
        assert!(scan(b"$?\r\n", true).is_err());
        assert!(scan(b"*?\r\n", true).is_err());
        assert!(scan(b"_x\r\n", true).is_err());
    }

    #[test]
    fn every_prefix_is_incomplete_and_the_scan_resumes() {
        let reply = b"*3\r\n$5\r\nhello\r\n*2\r\n:1\r\n+two\r\n-ERR no\r\n";
        let mut s = Scanner::default();
        for end in 0..reply.len() {
            assert_eq!(s.scan(&reply[..end], &LIMITS, false).unwrap(), None);
        }
        assert_eq!(s.scan(reply, &LIMITS, false).unwrap(), Some(reply.len()));
        // reset for the next reply
        assert_eq!(s.scan(b":1\r\n", &LIMITS, false).unwrap(), Some(4));
    }

    #[test]
    fn garbage_is_refused_at_once() {
        assert!(scan(b"GET / HTTP/1.1\r\n", false).is_err());
        assert!(scan(b"H", true).is_err());
        assert!(scan(b"+a\nb\r\n", false).is_err());
        assert!(scan(b"$3\r\nfooXY", false).is_err());
        assert!(scan(b"$+3\r\nfoo\r\n", false).is_err());
        assert!(scan(b"$-2\r\n", false).is_err());
        assert!(scan(b"$\r\n", false).is_err());
        assert!(scan(b"*99999999999999999999999\r\n", false).is_err());
        // a length line that never ends is refused after 21 bytes
        assert!(scan(b"$1111111111111111111111", false).is_err());
        assert_eq!(scan(b"$111111", false).unwrap(), None);
    }

    #[test]
    fn limits_are_errors_before_the_data_arrives() {
        let small = Limits {
            max_len: 64,
            ..LIMITS
        };
        let mut s = Scanner::default();
        assert!(matches!(
            s.scan(b"$999999999999\r\n", &small, false),
            Err(ProtocolError::TooLarge { max: 64, .. })
        ));
        let mut s = Scanner::default();
        assert!(matches!(
            s.scan(&[b'+'; 64], &small, false),
            Err(ProtocolError::TooLarge { len: 64, max: 64 })
        ));
        // a reply that fills the limit with an element still due
        for next in [&b"$1"[..], b"+"] {
            let src = [&b"*2\r\n:1\r\n"[..], next].concat();
            let limits = Limits {
                max_len: 8,
                ..LIMITS
            };
            assert!(matches!(
                Scanner::default().scan(&src, &limits, false),
                Err(ProtocolError::TooLarge { max: 8, .. })
            ));
        }
        let mut s = Scanner::default();
        assert!(matches!(
            s.scan(b"*101\r\n", &LIMITS, false),
            Err(ProtocolError::Other(_))
        ));
        // 8 levels are fine, the 9th is refused
        let nine = b"*1\r\n".repeat(9);
        assert_eq!(scan(&nine[..4 * 8], false).unwrap(), None);
        let err = scan(&nine, false).unwrap_err();
        assert!(err.to_string().contains("nesting"), "{err}");
        // elements add up across the reply
        let mut many = b"*2\r\n*60\r\n".to_vec();
        many.extend(b":1\r\n".repeat(60));
        many.extend_from_slice(b"*60\r\n");
        let err = scan(&many, false).unwrap_err();
        assert!(err.to_string().contains("elements"), "{err}");
    }
}
