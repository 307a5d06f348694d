//! Workerman's Text protocol for lubdub: one message per line.
//!
//! Byte layout, as Workerman's `Protocols\Text`:
//!
//! ```text
//! +------------------------+---------------------+----+
//! | line bytes             | \r, zero or more    | \n |
//! +------------------------+---------------------+----+
//! |<---- decoded value --->|
//! ```
//!
//! * A message is the bytes up to and including the first `\n`.
//! * The decoded value is the message without its `\n` and without every
//!   `\r` directly before it, as Workerman's `rtrim($buffer, "\r\n")`
//!   gives: `double cr\r\r\n` decodes to `double cr`. A `\r` anywhere else
//!   is kept (`a\rb\n` decodes to `a\rb`).
//! * Encoding appends `\n` to the message. A message that ends in `\r`
//!   therefore comes back without it, in Workerman as here. A message that
//!   contains a `\n` is refused ([`ProtocolError::InvalidData`], nothing
//!   written), where Workerman would send two lines: relaying what a user
//!   typed cannot inject a line.
//! * The maximum line length (terminator included) defaults to 10 MiB,
//!   Workerman's maximum package size. A longer line is an error as soon as
//!   that many bytes arrived without a `\n`; nothing of the peer's choosing
//!   is allocated beyond it.
//!
//! Neither flavour writes anything on the [`Wire`] or asks to close: there is
//! no handshake and no control message. A server that hands its clients to a
//! new process (a reload) can tell them with a last line of its choosing,
//! [`Text::restart_line`]: by default it writes nothing.
//!
//! # Invalid UTF-8
//!
//! [`Text`] decodes to `String`. A line that is not valid UTF-8 is a protocol
//! error, [`ProtocolError::InvalidData`] with `expected: "UTF-8"` and the
//! offset of the first invalid byte within the line: the worker reports it
//! through `on_error` and closes that connection. Lossy replacement would
//! silently change what the peer sent. Use [`TextBytes`], the binary-safe
//! flavour, to receive any bytes as `Vec<u8>` lines.
//!
//! ```
//! use lubdub_protocol::{Decoded, Session};
//! use lubdub_text::Text;
//!
//! let mut text = Session::new(Text::new());
//! assert_eq!(
//!     text.decode(b"hello\r\nworld").unwrap(),
//!     Decoded::Message { msg: "hello".to_string(), consumed: 7 }
//! );
//! assert_eq!(text.encode("hi").unwrap(), b"hi\n");
//! ```

#![forbid(unsafe_code)]

use std::sync::Arc;

use lubdub_protocol::{Closing, Codec, Decoded, ProtocolError};
use serde::Deserialize;

/// Default maximum line length in bytes, terminator included: 10 MiB.
pub const DEFAULT_MAX_LENGTH: usize = 10 * 1024 * 1024;

/// Settings shared by [`Text`] and [`TextBytes`]; deserializable from config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextConfig {
    /// Longest accepted line in bytes, `\n` included. Default 10 MiB.
    pub max_length: usize,
    /// The last line a client gets when the server hands it to a new
    /// process ([`Text::restart_line`]). Default none.
    pub restart_line: Option<String>,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            max_length: DEFAULT_MAX_LENGTH,
            restart_line: None,
        }
    }
}

/// Line splitting shared by both flavours. What one connection remembers
/// between reads is how far the search for `\n` already went (the codec's
/// `State`, a `usize`), so a long line arriving in pieces is scanned once.
#[derive(Debug, Clone)]
struct LineSplitter {
    max_length: usize,
    /// The line written on [`Closing::Restart`], `\n` included.
    restart_line: Option<Arc<[u8]>>,
}

impl LineSplitter {
    fn new(max_length: usize) -> Self {
        LineSplitter {
            max_length: max_length.max(1),
            restart_line: None,
        }
    }

    fn set_restart_line(&mut self, line: &[u8]) -> Result<(), ProtocolError> {
        let mut encoded = Vec::new();
        self.encode(line, &mut encoded)?;
        self.restart_line = Some(encoded.into());
        Ok(())
    }

    fn goodbye(&self, closing: &Closing<'_>, dst: &mut Vec<u8>) {
        if let (Closing::Restart, Some(line)) = (closing, &self.restart_line) {
            dst.extend_from_slice(line);
        }
    }

    /// Returns `(content_len, consumed)` of the first complete line:
    /// `content_len` leaves out the `\n` and the `\r`s before it.
    fn split(
        &self,
        scanned: &mut usize,
        src: &[u8],
    ) -> Result<Option<(usize, usize)>, ProtocolError> {
        // Never search past the maximum: bytes beyond it cannot start a valid line.
        let limit = src.len().min(self.max_length);
        let from = (*scanned).min(limit);
        match memchr::memchr(b'\n', &src[from..limit]) {
            Some(i) => {
                *scanned = 0;
                let consumed = from + i + 1;
                // Workerman's rtrim($buffer, "\r\n"): the `\n` and every
                // `\r` right before it.
                let mut content = consumed - 1;
                while content > 0 && src[content - 1] == b'\r' {
                    content -= 1;
                }
                Ok(Some((content, consumed)))
            }
            None if src.len() >= self.max_length => Err(ProtocolError::TooLarge {
                len: src.len() as u64,
                max: self.max_length as u64,
            }),
            None => {
                *scanned = limit;
                Ok(None)
            }
        }
    }

    fn encode(&self, line: &[u8], dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        if line.len() >= self.max_length {
            return Err(ProtocolError::TooLarge {
                len: line.len() as u64 + 1,
                max: self.max_length as u64,
            });
        }
        // A message is one line: a `\n` inside would make the peer read two
        // (line injection, through a bridge that relays what a user typed).
        if let Some(offset) = memchr::memchr(b'\n', line) {
            return Err(ProtocolError::InvalidData {
                expected: "a line without \\n",
                offset,
            });
        }
        dst.reserve(line.len() + 1);
        dst.extend_from_slice(line);
        dst.push(b'\n');
        Ok(())
    }
}

/// The Text protocol with UTF-8 lines (`String`). Scheme `text`.
#[derive(Debug, Clone)]
pub struct Text {
    lines: LineSplitter,
}

impl Text {
    /// Text protocol with the default 10 MiB maximum line length.
    pub fn new() -> Self {
        Self::with_max_length(DEFAULT_MAX_LENGTH)
    }

    /// Text protocol accepting lines of at most `max_length` bytes, `\n` included.
    pub fn with_max_length(max_length: usize) -> Self {
        Text {
            lines: LineSplitter::new(max_length),
        }
    }

    /// Text protocol from deserialized settings. A restart line that is
    /// not one line within the maximum length is an error.
    pub fn from_config(config: TextConfig) -> Result<Self, ProtocolError> {
        let text = Self::with_max_length(config.max_length);
        match &config.restart_line {
            Some(line) => text.restart_line(line),
            None => Ok(text),
        }
    }

    /// The line each client gets, after what was queued for it, when the
    /// server hands its connections to a new process (a reload without
    /// `-g`): a client that reads it knows to reconnect. Default none: the
    /// connection just closes. Refused like a message (a `\n` inside, or
    /// longer than the maximum).
    pub fn restart_line(mut self, line: &str) -> Result<Self, ProtocolError> {
        self.lines.set_restart_line(line.as_bytes())?;
        Ok(self)
    }

    /// The maximum line length in bytes, `\n` included.
    pub fn max_length(&self) -> usize {
        self.lines.max_length
    }
}

impl Default for Text {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec for Text {
    const SCHEME: &'static str = "text";
    type Message = String;
    type Outgoing = str;
    type State = usize;

    fn decode(&self, scanned: &mut usize, src: &[u8]) -> Result<Decoded<String>, ProtocolError> {
        let Some((len, consumed)) = self.lines.split(scanned, src)? else {
            return Ok(Decoded::Incomplete);
        };
        match std::str::from_utf8(&src[..len]) {
            Ok(s) => Ok(Decoded::Message {
                msg: s.to_owned(),
                consumed,
            }),
            Err(e) => Err(ProtocolError::InvalidData {
                expected: "UTF-8",
                offset: e.valid_up_to(),
            }),
        }
    }

    // A thin wrapper: inlined so that the caller calls the shared code
    // directly (measured: the v2 signature otherwise costs an argument shuffle).
    #[inline]
    fn encode(&self, msg: &str, dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        self.lines.encode(msg.as_bytes(), dst)
    }

    fn goodbye(&self, closing: &Closing<'_>, dst: &mut Vec<u8>) {
        self.lines.goodbye(closing, dst);
    }
}

/// The Text protocol with binary-safe lines (`Vec<u8>`, any bytes but `\n`).
/// Scheme `text` as well: the framing on the wire is identical.
#[derive(Debug, Clone)]
pub struct TextBytes {
    lines: LineSplitter,
}

impl TextBytes {
    /// Binary-safe lines with the default 10 MiB maximum line length.
    pub fn new() -> Self {
        Self::with_max_length(DEFAULT_MAX_LENGTH)
    }

    /// Binary-safe lines of at most `max_length` bytes, `\n` included.
    pub fn with_max_length(max_length: usize) -> Self {
        TextBytes {
            lines: LineSplitter::new(max_length),
        }
    }

    /// The maximum line length in bytes, `\n` included.
    pub fn max_length(&self) -> usize {
        self.lines.max_length
    }

    /// The line each client gets when the server hands its connections to
    /// a new process, as [`Text::restart_line`].
    pub fn restart_line(mut self, line: &[u8]) -> Result<Self, ProtocolError> {
        self.lines.set_restart_line(line)?;
        Ok(self)
    }
}

impl Default for TextBytes {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec for TextBytes {
    const SCHEME: &'static str = "text";
    type Message = Vec<u8>;
    type Outgoing = [u8];
    type State = usize;

    fn decode(&self, scanned: &mut usize, src: &[u8]) -> Result<Decoded<Vec<u8>>, ProtocolError> {
        Ok(match self.lines.split(scanned, src)? {
            Some((len, consumed)) => Decoded::Message {
                msg: src[..len].to_vec(),
                consumed,
            },
            None => Decoded::Incomplete,
        })
    }

    // A thin wrapper: inlined so that the caller calls the shared code
    // directly (measured: the v2 signature otherwise costs an argument shuffle).
    #[inline]
    fn encode(&self, msg: &[u8], dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        self.lines.encode(msg, dst)
    }

    fn goodbye(&self, closing: &Closing<'_>, dst: &mut Vec<u8>) {
        self.lines.goodbye(closing, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lubdub_protocol::{Protocol, Session};

    /// Decodes and checks the protocol wrote nothing and asked nothing.
    fn decode<P: Protocol>(
        s: &mut Session<P>,
        src: &[u8],
    ) -> Result<Decoded<P::Message, P::Handshake>, ProtocolError> {
        let result = s.decode(src);
        assert!(s.wire.out.is_empty(), "wrote {:?} on the wire", s.wire.out);
        assert!(s.wire.close.is_none(), "asked to close");
        result
    }

    fn msg<P: Protocol>(p: &mut Session<P>, src: &[u8]) -> (P::Message, usize) {
        match decode(p, src).unwrap() {
            Decoded::Message { msg, consumed } => (msg, consumed),
            _ => panic!("expected a message"),
        }
    }

    #[test]
    fn strips_lf_and_crlf_only_at_the_end() {
        let mut t = Session::new(Text::new());
        assert_eq!(msg(&mut t, b"a\n"), ("a".into(), 2));
        assert_eq!(msg(&mut t, b"a\r\n"), ("a".into(), 3));
        assert_eq!(msg(&mut t, b"a\rb\n"), ("a\rb".into(), 4));
        assert_eq!(msg(&mut t, b"\n"), (String::new(), 1));
        assert_eq!(msg(&mut t, b"\r\n"), (String::new(), 2));
        assert_eq!(msg(&mut t, b"\rx\n"), ("\rx".into(), 3));
    }

    /// Workerman decodes with `rtrim($buffer, "\r\n")`: every `\r` before
    /// the `\n` goes, not just one.
    #[test]
    fn strips_every_trailing_cr_like_workerman() {
        let mut t = Session::new(Text::new());
        assert_eq!(msg(&mut t, b"double cr\r\r\n"), ("double cr".into(), 12));
        assert_eq!(msg(&mut t, b"x\r\r\r\n"), ("x".into(), 5));
        assert_eq!(msg(&mut t, b"\r\r\n"), (String::new(), 3));
        assert_eq!(msg(&mut t, b"\r\n"), (String::new(), 2));
        assert_eq!(msg(&mut t, b"a\rb\r\r\n"), ("a\rb".into(), 6));
        let mut b = Session::new(TextBytes::new());
        assert_eq!(msg(&mut b, b"double cr\r\r\n"), (b"double cr".to_vec(), 12));
        assert_eq!(msg(&mut b, b"\r\n"), (Vec::new(), 2));
        assert_eq!(msg(&mut b, b"a\rb\n"), (b"a\rb".to_vec(), 4));
        assert_eq!(msg(&mut b, b"\xff\r\r\n"), (b"\xff".to_vec(), 4));
    }

    #[test]
    fn the_restart_line_is_the_only_goodbye_and_is_checked_like_a_message() {
        let mut plain = Session::new(Text::new());
        assert!(plain.encode_close(&Closing::Restart).is_empty());
        let text = Text::new().restart_line("reconnect please").unwrap();
        let mut s = Session::new(text.clone());
        assert_eq!(s.encode_close(&Closing::Restart), b"reconnect please\n");
        let mut s = Session::new(text);
        assert!(s.encode_close(&Closing::GoingAway).is_empty());
        assert!(Text::new().restart_line("two\nlines").is_err());
        assert!(Text::with_max_length(4).restart_line("long").is_err());
        let bytes = TextBytes::new().restart_line(b"\xffbye").unwrap();
        assert_eq!(
            Session::new(bytes).encode_close(&Closing::Restart),
            b"\xffbye\n"
        );
        let config: TextConfig = serde_json::from_str(r#"{"restart_line":"bye"}"#).unwrap();
        let mut s = Session::new(Text::from_config(config).unwrap());
        assert_eq!(s.encode_close(&Closing::Restart), b"bye\n");
    }

    #[test]
    fn first_newline_ends_the_message() {
        let mut t = Session::new(Text::new());
        assert_eq!(msg(&mut t, b"one\ntwo\n"), ("one".into(), 4));
        assert_eq!(msg(&mut t, b"one\r\n\r\n"), ("one".into(), 5));
    }

    #[test]
    fn incomplete_until_newline_and_scan_resumes() {
        let mut t = Session::new(Text::new());
        let stream = b"hello world\n";
        for end in 0..stream.len() {
            assert_eq!(decode(&mut t, &stream[..end]).unwrap(), Decoded::Incomplete);
        }
        assert_eq!(msg(&mut t, stream), ("hello world".into(), 12));
        // scan state was reset: the next line is found from its start
        assert_eq!(msg(&mut t, b"x\n"), ("x".into(), 2));
    }

    #[test]
    fn a_message_with_a_newline_is_refused_not_split() {
        let mut out = b"pre".to_vec();
        let t = Text::new();
        let err = t.encode("hi\nadmin: you are banned", &mut out).unwrap_err();
        assert!(
            matches!(err, ProtocolError::InvalidData { offset: 2, .. }),
            "{err}"
        );
        assert_eq!(out, b"pre", "nothing written");
        let b = TextBytes::new();
        assert!(b.encode(b"\n", &mut out).is_err());
        // A `\r` alone is data, as Workerman's rtrim only strips it at the end.
        t.encode("a\rb", &mut out).unwrap();
        assert_eq!(out, b"prea\rb\n");
    }

    #[test]
    fn encode_appends_newline() {
        let t = Text::new();
        let mut out = b"pre".to_vec();
        t.encode("line", &mut out).unwrap();
        assert_eq!(out, b"preline\n");
    }

    #[test]
    fn max_length_counts_the_terminator() {
        let mut t = Session::new(Text::with_max_length(4));
        assert_eq!(msg(&mut t, b"abc\n"), ("abc".into(), 4));
        let mut t = Session::new(Text::with_max_length(4));
        assert_eq!(decode(&mut t, b"abc").unwrap(), Decoded::Incomplete);
        assert!(matches!(
            decode(&mut t, b"abcd"),
            Err(ProtocolError::TooLarge { len: 4, max: 4 })
        ));
        // a newline beyond the limit does not rescue an over-long line
        let mut t = Session::new(Text::with_max_length(4));
        assert!(decode(&mut t, b"abcdef\n").is_err());
        let t = Text::with_max_length(4);
        let mut out = Vec::new();
        assert!(t.encode("abcd", &mut out).is_err());
        assert!(out.is_empty());
        t.encode("abc", &mut out).unwrap();
    }

    #[test]
    fn invalid_utf8_is_an_error_bytes_flavour_accepts_it() {
        let mut t = Session::new(Text::new());
        assert!(matches!(
            decode(&mut t, b"ok\xff\n"),
            Err(ProtocolError::InvalidData {
                expected: "UTF-8",
                offset: 2
            })
        ));
        let mut b = Session::new(TextBytes::new());
        assert_eq!(msg(&mut b, b"ok\xff\r\n"), (b"ok\xff".to_vec(), 5));
        assert_eq!(b.encode(b"\x00\xff").unwrap(), b"\x00\xff\n");
    }

    #[test]
    fn every_split_point_yields_the_same_messages() {
        let stream = b"alpha\r\nbeta\n\ngamma\r\r\n";
        let want = ["alpha", "beta", "", "gamma"];
        for cut in 0..=stream.len() {
            let mut t = Session::new(Text::new());
            let mut buf: Vec<u8> = Vec::new();
            let mut got = Vec::new();
            for chunk in [&stream[..cut], &stream[cut..]] {
                buf.extend_from_slice(chunk);
                while let Decoded::Message { msg, consumed } = decode(&mut t, &buf).unwrap() {
                    got.push(msg);
                    buf.drain(..consumed);
                }
            }
            assert_eq!(got, want, "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn config_deserializes_with_default() {
        let c: TextConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.max_length, DEFAULT_MAX_LENGTH);
        let c: TextConfig = serde_json::from_str(r#"{"max_length": 9}"#).unwrap();
        assert_eq!(Text::from_config(c).unwrap().max_length(), 9);
        assert!(serde_json::from_str::<TextConfig>(r#"{"max_len": 9}"#).is_err());
    }
}
