//! Heartbeat messages per protocol: recognising them among application
//! messages and writing them.

use std::time::Duration;

use lubdub_frame::{Packet, PacketCodec, SYS_START_HEARTBEAT, SYS_UPDATE_HEARTBEAT};
use lubdub_text::{Text, TextBytes};
use lubdub_worker::Protocol;

/// A ping: "are you there?". Either side may send one; the other answers
/// with a [`Pong`] echoing `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ping<'a> {
    /// Sequence number, echoed by the pong. `None`: a bare keepalive.
    pub seq: Option<u32>,
    /// The sender's wall-clock time, milliseconds since the Unix epoch
    /// (UTC). Only sent together with `seq`.
    pub unix_ms: Option<u64>,
    /// Application metadata (server pings). Only sent together with
    /// `unix_ms`.
    pub meta: &'a [u8],
}

/// The answer to a [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pong {
    /// The `seq` of the ping answered.
    pub seq: Option<u32>,
    /// The responder's wall-clock time when answering, milliseconds since
    /// the Unix epoch (UTC). Only sent together with `seq`.
    pub unix_ms: Option<u64>,
}

/// A heartbeat message, in either direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat<'a> {
    /// A ping, answered with a pong.
    Ping(Ping<'a>),
    /// The answer to a ping.
    Pong(Pong),
    /// Server to client: "send heartbeats every `interval`" (the C#
    /// `SYS_START_HEARTBEAT`).
    Hello {
        /// The interval the client should use.
        interval: Duration,
    },
}

/// How heartbeats look in protocol `P`.
///
/// `classify` runs for every inbound message, so it must be cheap for
/// application messages (a prefix comparison) and must not allocate.
/// `encode` hands zero or more messages to `emit` (none when the protocol
/// cannot express a beat, such as a bare pong in the C# packet scheme).
pub trait HeartbeatCodec<P: Protocol>: Send + Sync + 'static {
    /// The heartbeat `msg` is, or `None` for an application message.
    fn classify<'a>(&self, msg: &'a P::Message) -> Option<Beat<'a>>;

    /// Writes `beat` as protocol messages.
    fn encode(&self, beat: &Beat<'_>, emit: &mut dyn FnMut(&P::Outgoing));

    /// The message a server sends right after a connection is established,
    /// if the scheme has one (the C# `SYS_START_HEARTBEAT`). Default: none.
    fn hello(&self) -> Option<Beat<'static>> {
        None
    }

    /// Whether peers answer this codec's pings. `false` for keep-alives
    /// nobody answers (Server-Sent Events comments): server pings are then
    /// sent on schedule but never waited for, so they close no connection.
    /// Default `true`.
    fn answered(&self) -> bool {
        true
    }
}

/// No heartbeat messages at all: only the idle sweep (any inbound bytes
/// keep a connection alive). Works with every protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl<P: Protocol> HeartbeatCodec<P> for Silent {
    #[inline]
    fn classify<'a>(&self, _msg: &'a P::Message) -> Option<Beat<'a>> {
        None
    }

    fn encode(&self, _beat: &Beat<'_>, _emit: &mut dyn FnMut(&P::Outgoing)) {}
}

fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Heartbeat lines for Workerman's Text protocol ([`Text`] and
/// [`TextBytes`]).
///
/// With the default words (`ping`, `pong`; configurable, ASCII without
/// spaces):
///
/// | line | meaning | answer |
/// |---|---|---|
/// | `ping` | bare keepalive (what `nc` users type) | `pong` |
/// | `ping <seq>` | client ping asking for the server's time | `pong <seq> <unix_ms>` |
/// | `ping <seq> <unix_ms>[ <meta>]` | server ping: sequence, server UTC time in ms, optional metadata (rest of the line) | `pong <seq>` |
/// | `pong`, `pong <seq>`, `pong <seq> <unix_ms>` | answers | none |
///
/// `seq` is a decimal `u32`, `unix_ms` a decimal `u64`. A line that starts
/// with a word but does not follow this grammar (`ping me later`) is an
/// application message. Trailing spaces are ignored. Metadata that is not
/// UTF-8 or contains a line break is not sent (the ping goes without it).
///
/// ```
/// use lubdub_heartbeat::{Beat, HeartbeatCodec, Ping, TextHeartbeat};
/// use lubdub_text::Text;
///
/// let codec = TextHeartbeat::new();
/// let line = "ping 7 1700000000000 v1.2".to_string();
/// assert_eq!(
///     HeartbeatCodec::<Text>::classify(&codec, &line),
///     Some(Beat::Ping(Ping { seq: Some(7), unix_ms: Some(1_700_000_000_000), meta: b"v1.2" }))
/// );
/// let chat = "ping me later".to_string();
/// assert_eq!(HeartbeatCodec::<Text>::classify(&codec, &chat), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextHeartbeat {
    ping: String,
    pong: String,
}

impl Default for TextHeartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl TextHeartbeat {
    /// The words `ping` and `pong`.
    pub fn new() -> Self {
        TextHeartbeat {
            ping: "ping".into(),
            pong: "pong".into(),
        }
    }

    /// Other words, for instance `("heartbeat", "heartbeat-ack")`.
    ///
    /// # Panics
    /// If a word is empty, contains whitespace, or both are equal.
    pub fn with_words(ping: &str, pong: &str) -> Self {
        for w in [ping, pong] {
            assert!(
                !w.is_empty() && !w.chars().any(char::is_whitespace),
                "heartbeat words must be non-empty and without whitespace: {w:?}"
            );
        }
        assert_ne!(ping, pong, "ping and pong words must differ");
        TextHeartbeat {
            ping: ping.into(),
            pong: pong.into(),
        }
    }

    /// The ping word.
    pub fn ping_word(&self) -> &str {
        &self.ping
    }

    /// The pong word.
    pub fn pong_word(&self) -> &str {
        &self.pong
    }

    /// Parses a line (without its terminator).
    pub fn parse<'a>(&self, line: &'a [u8]) -> Option<Beat<'a>> {
        let (is_ping, rest) = if let Some(r) = strip_word(line, &self.ping) {
            (true, r)
        } else if let Some(r) = strip_word(line, &self.pong) {
            (false, r)
        } else {
            return None;
        };
        let mut seq = None;
        let mut unix_ms = None;
        let mut meta: &[u8] = b"";
        let mut rest = trim_end(rest);
        if !rest.is_empty() {
            rest = rest.strip_prefix(b" ")?;
            let (s, tail) = split_word(rest);
            seq = Some(parse_u32(s)?);
            if let Some(tail) = tail {
                let (t, tail) = split_word(tail);
                unix_ms = Some(parse_u64(t)?);
                if let Some(m) = tail {
                    if !is_ping {
                        return None;
                    }
                    meta = m;
                }
            }
        }
        Some(if is_ping {
            Beat::Ping(Ping { seq, unix_ms, meta })
        } else {
            Beat::Pong(Pong { seq, unix_ms })
        })
    }

    /// Writes `beat` as one line (without the terminator); `false` for a
    /// beat Text cannot express (a hello).
    pub fn write(&self, beat: &Beat<'_>, out: &mut String) -> bool {
        use std::fmt::Write;
        let (word, seq, ms, meta) = match beat {
            Beat::Ping(p) => (&self.ping, p.seq, p.unix_ms, p.meta),
            Beat::Pong(p) => (&self.pong, p.seq, p.unix_ms, &b""[..]),
            Beat::Hello { .. } => return false,
        };
        out.push_str(word);
        if let Some(seq) = seq {
            let _ = write!(out, " {seq}");
            if let Some(ms) = ms {
                let _ = write!(out, " {ms}");
                if let Ok(m) = std::str::from_utf8(meta) {
                    if !m.is_empty() && !m.contains(['\n', '\r']) {
                        out.push(' ');
                        out.push_str(m);
                    }
                }
            }
        }
        true
    }

    fn emit_line(&self, beat: &Beat<'_>, emit: &mut dyn FnMut(&str)) {
        // Bare beats are the common case: no allocation.
        match beat {
            Beat::Ping(Ping { seq: None, .. }) => emit(&self.ping),
            Beat::Pong(Pong { seq: None, .. }) => emit(&self.pong),
            _ => {
                let mut line = String::with_capacity(48);
                if self.write(beat, &mut line) {
                    emit(&line);
                }
            }
        }
    }
}

/// `line` without its leading `word`, if the word is followed by nothing
/// or a space or tab.
fn strip_word<'a>(line: &'a [u8], word: &str) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(word.as_bytes())?;
    matches!(rest.first(), None | Some(b' ' | b'\t')).then_some(rest)
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Splits at the first space: `(word, Some(rest after the space))`.
fn split_word(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

impl HeartbeatCodec<Text> for TextHeartbeat {
    #[inline]
    fn classify<'a>(&self, msg: &'a String) -> Option<Beat<'a>> {
        self.parse(msg.as_bytes())
    }

    fn encode(&self, beat: &Beat<'_>, emit: &mut dyn FnMut(&str)) {
        self.emit_line(beat, emit);
    }
}

impl HeartbeatCodec<TextBytes> for TextHeartbeat {
    #[inline]
    fn classify<'a>(&self, msg: &'a Vec<u8>) -> Option<Beat<'a>> {
        self.parse(msg)
    }

    fn encode(&self, beat: &Beat<'_>, emit: &mut dyn FnMut(&[u8])) {
        self.emit_line(beat, &mut |s: &str| emit(s.as_bytes()));
    }
}

/// Binary tail of a heartbeat: nothing, `seq`, or `seq`, time and metadata.
fn parse_tail(tail: &[u8], be: bool) -> Option<(Option<u32>, Option<u64>, &[u8])> {
    let u32_of = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    let u64_of = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        if be {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    };
    match tail.len() {
        0 => Some((None, None, b"")),
        4 => Some((Some(u32_of(tail)), None, b"")),
        n if n >= 12 => Some((Some(u32_of(tail)), Some(u64_of(&tail[4..])), &tail[12..])),
        _ => None,
    }
}

fn write_tail(
    out: &mut Vec<u8>,
    seq: Option<u32>,
    ms: Option<u64>,
    meta: &[u8],
    be: bool,
) -> Option<()> {
    let seq = seq?;
    out.extend_from_slice(&if be {
        seq.to_be_bytes()
    } else {
        seq.to_le_bytes()
    });
    let ms = ms?;
    out.extend_from_slice(&if be {
        ms.to_be_bytes()
    } else {
        ms.to_le_bytes()
    });
    out.extend_from_slice(meta);
    Some(())
}

/// Heartbeats for binary framed protocols whose messages are byte strings:
/// Workerman's [`Frame`](lubdub_frame::Frame), a
/// [`LengthField`](lubdub_frame::LengthField) codec, or any protocol with
/// `Message = Vec<u8>` and `Outgoing = [u8]` that keeps message boundaries.
///
/// A heartbeat is a message whose payload starts with a reserved tag
/// (default `ping` / `pong`, configurable), followed by nothing (bare), a
/// big-endian `u32` sequence number, or the sequence number, the sender's
/// UTC time as a big-endian `u64` of milliseconds, and metadata:
///
/// ```text
/// +- tag -+                           bare keepalive / answer
/// +- tag -+- seq: u32 BE -+           ping asking for time / answer
/// +- tag -+- seq: u32 BE -+- unix_ms: u64 BE -+- meta -+
/// ```
///
/// Any other length after the tag is an application message. As a Frame
/// on the wire, a bare ping is `00 00 00 08 70 69 6E 67`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeartbeat {
    ping: Vec<u8>,
    pong: Vec<u8>,
}

impl Default for FrameHeartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameHeartbeat {
    /// Tags `ping` and `pong`.
    pub fn new() -> Self {
        Self::with_tags(b"ping", b"pong")
    }

    /// Other reserved tags.
    ///
    /// # Panics
    /// If a tag is empty or one tag is a prefix of the other.
    pub fn with_tags(ping: &[u8], pong: &[u8]) -> Self {
        assert!(
            !ping.is_empty() && !pong.is_empty(),
            "heartbeat tags must not be empty"
        );
        assert!(
            !ping.starts_with(pong) && !pong.starts_with(ping),
            "one heartbeat tag must not be a prefix of the other"
        );
        FrameHeartbeat {
            ping: ping.to_vec(),
            pong: pong.to_vec(),
        }
    }

    /// Parses a payload.
    pub fn parse<'a>(&self, payload: &'a [u8]) -> Option<Beat<'a>> {
        if let Some(tail) = payload.strip_prefix(&self.ping[..]) {
            let (seq, unix_ms, meta) = parse_tail(tail, true)?;
            Some(Beat::Ping(Ping { seq, unix_ms, meta }))
        } else if let Some(tail) = payload.strip_prefix(&self.pong[..]) {
            let (seq, unix_ms, meta) = parse_tail(tail, true)?;
            meta.is_empty().then_some(Beat::Pong(Pong { seq, unix_ms }))
        } else {
            None
        }
    }

    /// Writes the payload of `beat`; `false` for a hello.
    pub fn write(&self, beat: &Beat<'_>, out: &mut Vec<u8>) -> bool {
        let (tag, seq, ms, meta) = match beat {
            Beat::Ping(p) => (&self.ping, p.seq, p.unix_ms, p.meta),
            Beat::Pong(p) => (&self.pong, p.seq, p.unix_ms, &b""[..]),
            Beat::Hello { .. } => return false,
        };
        out.extend_from_slice(tag);
        let _ = write_tail(out, seq, ms, meta, true);
        true
    }
}

impl<P> HeartbeatCodec<P> for FrameHeartbeat
where
    P: Protocol<Message = Vec<u8>, Outgoing = [u8]>,
{
    #[inline]
    fn classify<'a>(&self, msg: &'a Vec<u8>) -> Option<Beat<'a>> {
        self.parse(msg)
    }

    fn encode(&self, beat: &Beat<'_>, emit: &mut dyn FnMut(&[u8])) {
        match beat {
            Beat::Ping(Ping { seq: None, .. }) => emit(&self.ping),
            Beat::Pong(Pong { seq: None, .. }) => emit(&self.pong),
            _ => {
                let mut out = Vec::with_capacity(self.ping.len().max(self.pong.len()) + 12);
                if self.write(beat, &mut out) {
                    emit(&out);
                }
            }
        }
    }
}

/// Answer to a sequenced ping in the packet scheme (a lubdub extension; the
/// C# scheme has none). Configurable with [`PacketHeartbeat::pong_id`].
pub const SYS_HEARTBEAT_ACK: i16 = -4;

/// Heartbeats of the C# packet scheme ([`PacketCodec`]).
///
/// * **Hello**: after connecting, the server sends `SYS_START_HEARTBEAT`
///   (-2) with the client's interval in seconds as one byte:
///   `07 00 00 00 FE FF 05` for 5 s (default; [`start_interval`](Self::start_interval)).
/// * **Ping**: `SYS_UPDATE_HEARTBEAT` (-3). From a C# client its body is
///   empty (`06 00 00 00 FD FF`): a keepalive, counted as life, consumed,
///   not answered. lubdub peers may add a little-endian `u32` sequence
///   number, then the sender's UTC time as a little-endian `u64` of
///   milliseconds and metadata; sequenced pings are answered.
/// * **Pong**: id [`SYS_HEARTBEAT_ACK`] (-4) with the `u32` sequence number
///   and optionally the responder's time (`u64`), both little endian.
///
/// A `SYS_UPDATE_HEARTBEAT` with a malformed body is still a keepalive (the
/// id is reserved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketHeartbeat {
    start_interval: Option<u8>,
    pong_id: i16,
}

impl Default for PacketHeartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketHeartbeat {
    /// Hello with 5 s, pong id -4.
    pub fn new() -> Self {
        PacketHeartbeat {
            start_interval: Some(5),
            pong_id: SYS_HEARTBEAT_ACK,
        }
    }

    /// The interval, in seconds, the server's `SYS_START_HEARTBEAT` asks
    /// clients to beat at; `None` sends no hello. Default 5.
    pub fn start_interval(mut self, secs: Option<u8>) -> Self {
        self.start_interval = secs;
        self
    }

    /// The packet id of pongs. Default [`SYS_HEARTBEAT_ACK`] (-4).
    pub fn pong_id(mut self, id: i16) -> Self {
        self.pong_id = id;
        self
    }

    /// Parses a packet.
    pub fn parse<'a>(&self, p: &'a Packet) -> Option<Beat<'a>> {
        match p.id {
            SYS_UPDATE_HEARTBEAT => {
                let (seq, unix_ms, meta) = parse_tail(&p.body, false).unwrap_or((None, None, b""));
                Some(Beat::Ping(Ping { seq, unix_ms, meta }))
            }
            SYS_START_HEARTBEAT => {
                let secs = *p.body.first()?;
                Some(Beat::Hello {
                    interval: Duration::from_secs(u64::from(secs)),
                })
            }
            id if id == self.pong_id => {
                let (seq, unix_ms, _) = parse_tail(&p.body, false)?;
                Some(Beat::Pong(Pong { seq, unix_ms }))
            }
            _ => None,
        }
    }

    /// The packet for `beat`, if the scheme can express it (a bare pong
    /// cannot).
    pub fn packet(&self, beat: &Beat<'_>) -> Option<Packet> {
        match beat {
            Beat::Ping(p) => {
                let mut body = Vec::new();
                let _ = write_tail(&mut body, p.seq, p.unix_ms, p.meta, false);
                Some(Packet::with_body(SYS_UPDATE_HEARTBEAT, body))
            }
            Beat::Pong(Pong { seq: None, .. }) => None,
            Beat::Pong(p) => {
                let mut body = Vec::new();
                let _ = write_tail(&mut body, p.seq, p.unix_ms, b"", false);
                Some(Packet::with_body(self.pong_id, body))
            }
            Beat::Hello { interval } => {
                let secs = u8::try_from(interval.as_secs()).unwrap_or(u8::MAX).max(1);
                Some(Packet::start_heartbeat(secs))
            }
        }
    }
}

impl HeartbeatCodec<PacketCodec> for PacketHeartbeat {
    #[inline]
    fn classify<'a>(&self, msg: &'a Packet) -> Option<Beat<'a>> {
        if msg.id > 0 && msg.id != self.pong_id {
            return None;
        }
        self.parse(msg)
    }

    fn encode(&self, beat: &Beat<'_>, emit: &mut dyn FnMut(&Packet)) {
        if let Some(p) = self.packet(beat) {
            emit(&p);
        }
    }

    fn hello(&self) -> Option<Beat<'static>> {
        self.start_interval.map(|s| Beat::Hello {
            interval: Duration::from_secs(u64::from(s)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lubdub_frame::{Codec, Decoded, Frame};

    fn text(codec: &TextHeartbeat, line: &str) -> Option<Beat<'static>> {
        let s: &'static str = Box::leak(line.to_string().into_boxed_str());
        codec.parse(s.as_bytes())
    }

    fn text_out(codec: &TextHeartbeat, beat: &Beat<'_>) -> Vec<String> {
        let mut out = Vec::new();
        HeartbeatCodec::<Text>::encode(codec, beat, &mut |s: &str| out.push(s.to_string()));
        out
    }

    #[test]
    fn text_grammar() {
        let c = TextHeartbeat::new();
        let ping = |seq, unix_ms, meta| Some(Beat::Ping(Ping { seq, unix_ms, meta }));
        let pong = |seq, unix_ms| Some(Beat::Pong(Pong { seq, unix_ms }));
        assert_eq!(text(&c, "ping"), ping(None, None, b""));
        assert_eq!(text(&c, "ping  "), ping(None, None, b""));
        assert_eq!(text(&c, "ping 1"), ping(Some(1), None, b""));
        assert_eq!(text(&c, "ping 1 2"), ping(Some(1), Some(2), b""));
        assert_eq!(
            text(&c, "ping 4294967295 2 meta data"),
            ping(Some(u32::MAX), Some(2), b"meta data")
        );
        assert_eq!(text(&c, "pong"), pong(None, None));
        assert_eq!(text(&c, "pong 9"), pong(Some(9), None));
        assert_eq!(
            text(&c, "pong 9 1700000000000"),
            pong(Some(9), Some(1_700_000_000_000))
        );
        for app in [
            "pingpong",
            "ping me",
            "ping 1x",
            "ping -1",
            "ping 4294967296",
            "ping 1 x",
            "pong 1 2 meta",
            "Ping",
            " ping",
            "hello",
            "",
            "ping  1",
        ] {
            assert_eq!(text(&c, app), None, "{app:?}");
        }
    }

    #[test]
    fn text_encoding_round_trips() {
        let c = TextHeartbeat::new();
        let beats = [
            Beat::Ping(Ping::default()),
            Beat::Ping(Ping {
                seq: Some(3),
                ..Ping::default()
            }),
            Beat::Ping(Ping {
                seq: Some(3),
                unix_ms: Some(1_700_000_000_000),
                meta: b"region=eu v=2",
            }),
            Beat::Pong(Pong::default()),
            Beat::Pong(Pong {
                seq: Some(3),
                unix_ms: Some(5),
            }),
        ];
        for b in beats {
            let out = text_out(&c, &b);
            assert_eq!(out.len(), 1);
            let back = text(&c, &out[0]);
            assert_eq!(back, Some(b), "{out:?}");
        }
        assert_eq!(
            text_out(
                &c,
                &Beat::Ping(Ping {
                    seq: Some(7),
                    unix_ms: Some(1_700_000_000_000),
                    meta: b"v1"
                })
            ),
            ["ping 7 1700000000000 v1"]
        );
        assert_eq!(text_out(&c, &Beat::Pong(Pong::default())), ["pong"]);
        // metadata that would break the line is dropped, the ping is not
        assert_eq!(
            text_out(
                &c,
                &Beat::Ping(Ping {
                    seq: Some(1),
                    unix_ms: Some(2),
                    meta: b"a\nb"
                })
            ),
            ["ping 1 2"]
        );
        assert!(text_out(
            &c,
            &Beat::Hello {
                interval: Duration::from_secs(1)
            }
        )
        .is_empty());
    }

    #[test]
    fn text_custom_words_and_bytes_flavour() {
        let c = TextHeartbeat::with_words("hb", "hb-ack");
        assert_eq!(
            text(&c, "hb 5"),
            Some(Beat::Ping(Ping {
                seq: Some(5),
                ..Ping::default()
            }))
        );
        assert_eq!(text(&c, "ping"), None);
        let msg = b"hb-ack 5".to_vec();
        assert_eq!(
            HeartbeatCodec::<TextBytes>::classify(&c, &msg),
            Some(Beat::Pong(Pong {
                seq: Some(5),
                unix_ms: None
            }))
        );
        let mut out = Vec::new();
        HeartbeatCodec::<TextBytes>::encode(&c, &Beat::Pong(Pong::default()), &mut |b: &[u8]| {
            out.push(b.to_vec())
        });
        assert_eq!(out, [b"hb-ack".to_vec()]);
    }

    #[test]
    #[should_panic(expected = "whitespace")]
    fn text_words_without_spaces() {
        let _ = TextHeartbeat::with_words("p ing", "pong");
    }

    #[test]
    fn frame_payloads_and_wire() {
        let c = FrameHeartbeat::new();
        let mut wire = Vec::new();
        HeartbeatCodec::<Frame>::encode(&c, &Beat::Ping(Ping::default()), &mut |p: &[u8]| {
            Codec::encode(&Frame::new(), p, &mut wire).unwrap()
        });
        assert_eq!(wire, b"\x00\x00\x00\x08ping");
        let Decoded::Message { msg, .. } = Codec::decode(&Frame::new(), &mut (), &wire).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            HeartbeatCodec::<Frame>::classify(&c, &msg),
            Some(Beat::Ping(Ping::default()))
        );

        let b = Beat::Ping(Ping {
            seq: Some(0x0102_0304),
            unix_ms: Some(0x1122_3344_5566_7788),
            meta: b"m",
        });
        let mut p = Vec::new();
        assert!(c.write(&b, &mut p));
        assert_eq!(
            p,
            b"ping\x01\x02\x03\x04\x11\x22\x33\x44\x55\x66\x77\x88m".to_vec()
        );
        assert_eq!(c.parse(&p), Some(b));
        let pong = Beat::Pong(Pong {
            seq: Some(1),
            unix_ms: None,
        });
        let mut p = Vec::new();
        c.write(&pong, &mut p);
        assert_eq!(p, b"pong\x00\x00\x00\x01");
        assert_eq!(c.parse(&p), Some(pong));
        // wrong tail lengths and other payloads are application data
        for app in [
            &b"ping\x00"[..],
            b"pong\x00\x00\x00\x00\x00",
            b"pin",
            b"hello",
        ] {
            assert_eq!(c.parse(app), None, "{app:?}");
        }
        // pong with metadata is not a pong
        assert_eq!(c.parse(b"pong\0\0\0\x01\0\0\0\0\0\0\0\x02x"), None);
    }

    #[test]
    #[should_panic(expected = "prefix")]
    fn frame_tags_not_prefixes() {
        let _ = FrameHeartbeat::with_tags(b"hb", b"hb-ack");
    }

    fn packet_wire(c: &PacketHeartbeat, beat: &Beat<'_>) -> Vec<u8> {
        let mut wire = Vec::new();
        HeartbeatCodec::<PacketCodec>::encode(c, beat, &mut |p: &Packet| {
            Codec::encode(&PacketCodec::new(), p, &mut wire).unwrap()
        });
        wire
    }

    #[test]
    fn packet_seed_bytes() {
        let c = PacketHeartbeat::new();
        let hello = HeartbeatCodec::<PacketCodec>::hello(&c).unwrap();
        assert_eq!(packet_wire(&c, &hello), [0x07, 0, 0, 0, 0xFE, 0xFF, 0x05]);
        assert_eq!(
            packet_wire(&c, &Beat::Ping(Ping::default())),
            [0x06, 0, 0, 0, 0xFD, 0xFF]
        );
        // the client's SYS_UPDATE_HEARTBEAT is a bare ping
        let p = Packet::update_heartbeat();
        assert_eq!(
            HeartbeatCodec::<PacketCodec>::classify(&c, &p),
            Some(Beat::Ping(Ping::default()))
        );
        // and the hello parses back (a lubdub client adopts the interval)
        assert_eq!(
            HeartbeatCodec::<PacketCodec>::classify(&c, &Packet::start_heartbeat(5)),
            Some(Beat::Hello {
                interval: Duration::from_secs(5)
            })
        );
        assert_eq!(
            HeartbeatCodec::<PacketCodec>::hello(&c.clone().start_interval(None)),
            None
        );
    }

    #[test]
    fn packet_sequenced_beats() {
        let c = PacketHeartbeat::new();
        let ping = Beat::Ping(Ping {
            seq: Some(2),
            unix_ms: Some(3),
            meta: b"xy",
        });
        let p = c.packet(&ping).unwrap();
        assert_eq!(p.id, SYS_UPDATE_HEARTBEAT);
        assert_eq!(p.body, [2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, b'x', b'y']);
        assert_eq!(c.parse(&p), Some(ping));
        // bare pongs do not exist in this scheme
        assert!(packet_wire(&c, &Beat::Pong(Pong::default())).is_empty());
        let pong = Beat::Pong(Pong {
            seq: Some(2),
            unix_ms: None,
        });
        assert_eq!(
            packet_wire(&c, &pong),
            [0x0A, 0, 0, 0, 0xFC, 0xFF, 2, 0, 0, 0]
        );
        assert_eq!(c.parse(&c.packet(&pong).unwrap()), Some(pong));
        // a malformed update body is still a keepalive; app packets are not beats
        assert_eq!(
            c.parse(&Packet::with_body(SYS_UPDATE_HEARTBEAT, vec![1])),
            Some(Beat::Ping(Ping::default()))
        );
        assert_eq!(
            HeartbeatCodec::<PacketCodec>::classify(&c, &Packet::new(7)),
            None
        );
        assert_eq!(c.parse(&Packet::close_req()), None);
        // custom pong id
        let c2 = PacketHeartbeat::new().pong_id(100);
        let p = c2.packet(&pong).unwrap();
        assert_eq!(p.id, 100);
        assert_eq!(HeartbeatCodec::<PacketCodec>::classify(&c2, &p), Some(pong));
    }
}
