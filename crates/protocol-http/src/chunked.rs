//! The chunked transfer coding of request bodies (RFC 9112 §7.1), decoded
//! incrementally and strictly: `CRLF` line ends only, hexadecimal sizes
//! without sign, space or overflow, bounded extensions and trailers.

use crate::error::HttpError;

/// Longest chunk extension accepted (after the `;`), in bytes.
const MAX_EXTENSION: usize = 4096;
/// Most hexadecimal digits in a chunk size (leading zeros included).
const MAX_SIZE_DIGITS: u8 = 16;

/// Where the decoder is in the chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line, before or among the hex digits.
    Size,
    /// In the chunk extension (after `;`), up to the CR.
    Extension,
    /// After the CR of a chunk-size line: LF expected.
    SizeLf,
    /// In chunk data.
    Data,
    /// After chunk data: CR expected.
    DataCr,
    /// After chunk data and CR: LF expected.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// After the CR of a trailer line: LF expected.
    TrailerLf,
    /// After the CR of the final empty line: LF expected.
    EndLf,
    /// The body is whole.
    Done,
}

/// One chunked body being decoded: its position and the size of the chunk
/// under way. The data goes to the caller's body buffer.
#[derive(Debug, Clone)]
pub(crate) struct Chunked {
    state: State,
    /// Size being read, then data left in the current chunk.
    remaining: u64,
    /// Digits read in the size (to reject an empty or overlong size).
    digits: u8,
    /// Extension bytes in this size line.
    extension: usize,
    /// Trailer bytes so far.
    trailer: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size,
            remaining: 0,
            digits: 0,
            extension: 0,
            trailer: 0,
        }
    }
}

const BAD_SIZE: HttpError = HttpError::bad_request("invalid chunk size line");
const BAD_DATA_END: HttpError = HttpError::bad_request("chunk data not followed by CRLF");
const BAD_TRAILER: HttpError = HttpError::bad_request("invalid chunked trailer");

impl Chunked {
    /// Whether the last chunk and the trailer have been read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `src`, appending chunk data to `body`; returns how many
    /// bytes of `src` were used. Stops at the end of the body (the bytes
    /// after it belong to the next request). `max_body` bounds `body`
    /// (`413`), `max_trailer` the trailer section (`431`).
    pub(crate) fn feed(
        &mut self,
        src: &[u8],
        body: &mut Vec<u8>,
        max_body: usize,
        max_trailer: usize,
    ) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < src.len() {
            let b = src[i];
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits == MAX_SIZE_DIGITS {
                            return Err(BAD_SIZE);
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        self.remaining = (self.remaining << 4) | u64::from(d);
                        self.digits += 1;
                        let total = (body.len() as u64).saturating_add(self.remaining);
                        if total > max_body as u64 {
                            return Err(too_large());
                        }
                    }
                    b';' if self.digits > 0 => {
                        self.state = State::Extension;
                        self.extension = 0;
                    }
                    b'\r' if self.digits > 0 => self.state = State::SizeLf,
                    _ => return Err(BAD_SIZE),
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' | 0 => return Err(BAD_SIZE),
                    _ => {
                        self.extension += 1;
                        if self.extension > MAX_EXTENSION {
                            return Err(BAD_SIZE);
                        }
                    }
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(BAD_SIZE);
                    }
                    self.digits = 0;
                    self.state = if self.remaining == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let avail = src.len() - i;
                    let take = usize::try_from(self.remaining).map_or(avail, |r| r.min(avail));
                    body.extend_from_slice(&src[i..i + take]);
                    self.remaining -= take as u64;
                    i += take;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(BAD_DATA_END);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(BAD_DATA_END);
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    if b == b'\r' {
                        self.state = State::EndLf;
                    } else if b == b' ' || b == b'\t' || b == b'\n' {
                        // obs-fold or a bare LF
                        return Err(BAD_TRAILER);
                    } else {
                        self.state = State::Trailer;
                        self.count_trailer(max_trailer)?;
                    }
                }
                State::Trailer => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' | 0 => return Err(BAD_TRAILER),
                    _ => self.count_trailer(max_trailer)?,
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(BAD_TRAILER);
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(BAD_TRAILER);
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
                State::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }

    fn count_trailer(&mut self, max: usize) -> Result<(), HttpError> {
        self.trailer += 1;
        if self.trailer > max {
            return Err(HttpError {
                status: 431,
                reason: "chunked trailer too large",
            });
        }
        Ok(())
    }
}

fn too_large() -> HttpError {
    HttpError {
        status: 413,
        reason: "request body too large",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut c = Chunked::default();
        let mut body = Vec::new();
        let n = c.feed(input, &mut body, 1 << 20, 1024)?;
        Ok((body, n, c.is_done()))
    }

    #[test]
    fn whole_body_with_extension_and_trailer() {
        let input = b"5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, n, done) = decode_all(input).unwrap();
        assert_eq!(body, b"hello world");
        assert!(done);
        assert_eq!(&input[n..], b"NEXT");
    }

    #[test]
    fn byte_by_byte_gives_the_same_body() {
        let input = b"A\r\n0123456789\r\n0\r\n\r\n";
        let mut c = Chunked::default();
        let mut body = Vec::new();
        for b in input.chunks(1) {
            assert_eq!(c.feed(b, &mut body, 100, 100).unwrap(), 1);
        }
        assert!(c.is_done());
        assert_eq!(body, b"0123456789");
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in [
            &b"\r\n"[..],
            b"-1\r\n",
            b" 5\r\n",
            b"5 \r\n",
            b"0x5\r\n",
            b"+5\r\n",
            b"5\n",
            b"5\rX",
            b"00000000000000001\r\n",
            b"5;a\nb\r\n",
        ] {
            let err = decode_all(bad).unwrap_err();
            assert_eq!(err.status, 400, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn data_must_end_with_crlf() {
        assert_eq!(decode_all(b"1\r\nab\r\n").unwrap_err().status, 400);
        assert_eq!(decode_all(b"1\r\na\n").unwrap_err().status, 400);
    }

    #[test]
    fn an_announced_size_past_the_limit_is_413_before_the_data() {
        let mut c = Chunked::default();
        let mut body = Vec::new();
        let err = c.feed(b"fffffffff", &mut body, 1 << 20, 100).unwrap_err();
        assert_eq!(err.status, 413);
        assert!(body.is_empty());
    }

    #[test]
    fn trailer_limits_and_folding() {
        assert_eq!(decode_all(b"0\r\n x\r\n\r\n").unwrap_err().status, 400);
        let mut c = Chunked::default();
        let big = [b"0\r\nX: ".as_slice(), &[b'a'; 200]].concat();
        assert_eq!(
            c.feed(&big, &mut Vec::new(), 10, 100).unwrap_err().status,
            431
        );
    }
}
