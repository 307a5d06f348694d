//! The C# (FreeNet-style `CPacket`) packet: typed [`Packet`] and its
//! [`PacketCodec`].

use std::fmt;

use lubdub_protocol::{Codec, Decoded, ProtocolError};

use crate::length_field::{BuildError, Endian, LengthField, DEFAULT_MAX_FRAME_LENGTH};

/// Server → client: please close the connection.
pub const SYS_CLOSE_REQ: i16 = 0;
/// Client → server: close acknowledged.
pub const SYS_CLOSE_ACK: i16 = -1;
/// Server → client: start sending heartbeats; the body is one byte, the
/// client's heartbeat interval in seconds.
pub const SYS_START_HEARTBEAT: i16 = -2;
/// Client → server: heartbeat.
pub const SYS_UPDATE_HEARTBEAT: i16 = -3;

/// Why a [`Packet`] push or pop failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PacketError {
    /// The body ends before the value being popped.
    UnexpectedEnd {
        /// Bytes the value needs.
        needed: usize,
        /// Bytes left after the read position.
        remaining: usize,
    },
    /// A string's int16 length prefix is negative.
    NegativeLength(i16),
    /// A string's bytes are not valid UTF-8.
    InvalidUtf8 {
        /// Byte offset of the first invalid byte within the string.
        valid_up_to: usize,
    },
    /// A string longer than `i16::MAX` bytes cannot be pushed.
    StringTooLong(usize),
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::UnexpectedEnd { needed, remaining } => write!(
                f,
                "packet body ends: {needed} bytes needed, {remaining} remaining"
            ),
            PacketError::NegativeLength(n) => write!(f, "negative string length {n}"),
            PacketError::InvalidUtf8 { valid_up_to } => {
                write!(f, "string is not UTF-8 after {valid_up_to} valid bytes")
            }
            PacketError::StringTooLong(n) => {
                write!(f, "string of {n} bytes exceeds the int16 length prefix")
            }
        }
    }
}

impl std::error::Error for PacketError {}

/// A C# packet: an int16 protocol id and a body, with `CPacket`-style
/// push/pop helpers (all little endian).
///
/// Pops read from a cursor that starts at the beginning of the body; a
/// failed pop returns an error and leaves the cursor where it was. Equality
/// compares `id` and `body` only, not the cursor.
///
/// ```
/// use lubdub_frame::Packet;
///
/// let mut p = Packet::new(7);
/// p.push_i32(-5).push_f32(1.5);
/// p.push_str("héllo").unwrap();
/// assert_eq!(p.pop_i32(), Ok(-5));
/// assert_eq!(p.pop_f32(), Ok(1.5));
/// assert_eq!(p.pop_string().as_deref(), Ok("héllo"));
/// assert!(p.pop_u8().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Packet {
    /// Protocol id; ids `<= 0` are the system ids (`SYS_*`).
    pub id: i16,
    /// The body, after the id.
    pub body: Vec<u8>,
    read_pos: usize,
}

impl PartialEq for Packet {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.body == other.body
    }
}

impl Eq for Packet {}

macro_rules! push_pop {
    ($($push:ident $pop:ident $t:ty, $what:literal;)*) => {$(
        #[doc = concat!("Appends ", $what, ", little endian.")]
        pub fn $push(&mut self, v: $t) -> &mut Self {
            self.body.extend_from_slice(&v.to_le_bytes());
            self
        }

        #[doc = concat!("Reads ", $what, ", little endian, at the cursor.")]
        pub fn $pop(&mut self) -> Result<$t, PacketError> {
            let bytes = self.take(std::mem::size_of::<$t>())?;
            let mut a = [0u8; std::mem::size_of::<$t>()];
            a.copy_from_slice(bytes);
            Ok(<$t>::from_le_bytes(a))
        }
    )*};
}

impl Packet {
    /// An empty packet with protocol id `id`.
    pub fn new(id: i16) -> Self {
        Self::with_body(id, Vec::new())
    }

    /// A packet with protocol id `id` and the given body.
    pub fn with_body(id: i16, body: Vec<u8>) -> Self {
        Packet {
            id,
            body,
            read_pos: 0,
        }
    }

    /// [`SYS_CLOSE_REQ`], empty body.
    pub fn close_req() -> Self {
        Self::new(SYS_CLOSE_REQ)
    }

    /// [`SYS_CLOSE_ACK`], empty body.
    pub fn close_ack() -> Self {
        Self::new(SYS_CLOSE_ACK)
    }

    /// [`SYS_START_HEARTBEAT`] with the client's interval in seconds.
    ///
    /// Encoded by [`PacketCodec::new`] as `07 00 00 00 FE FF 05` for 5 s.
    pub fn start_heartbeat(interval_secs: u8) -> Self {
        Self::with_body(SYS_START_HEARTBEAT, vec![interval_secs])
    }

    /// [`SYS_UPDATE_HEARTBEAT`], empty body.
    pub fn update_heartbeat() -> Self {
        Self::new(SYS_UPDATE_HEARTBEAT)
    }

    /// Whether `id` is one of the system ids (`<= 0`).
    pub fn is_system(&self) -> bool {
        self.id <= 0
    }

    /// The unread part of the body.
    pub fn remaining(&self) -> &[u8] {
        self.body.get(self.read_pos..).unwrap_or_default()
    }

    /// The cursor: how many body bytes the pops have read.
    pub fn read_position(&self) -> usize {
        self.read_pos
    }

    /// Moves the cursor back to the start of the body.
    pub fn rewind(&mut self) {
        self.read_pos = 0;
    }

    fn take(&mut self, n: usize) -> Result<&[u8], PacketError> {
        let start = self.read_pos;
        let end = start.saturating_add(n);
        match self.body.get(start..end) {
            Some(bytes) => {
                self.read_pos = end;
                Ok(bytes)
            }
            None => Err(PacketError::UnexpectedEnd {
                needed: n,
                remaining: self.body.len().saturating_sub(start),
            }),
        }
    }

    push_pop! {
        push_u8 pop_u8 u8, "a byte";
        push_i16 pop_i16 i16, "an `i16`";
        push_i32 pop_i32 i32, "an `i32`";
        push_i64 pop_i64 i64, "an `i64`";
        push_f32 pop_f32 f32, "an `f32`";
    }

    /// Appends a string: its UTF-8 byte length as an int16, then the bytes.
    ///
    /// Fails (appending nothing) if the string is longer than `i16::MAX`
    /// bytes.
    pub fn push_str(&mut self, s: &str) -> Result<&mut Self, PacketError> {
        let len = i16::try_from(s.len()).map_err(|_| PacketError::StringTooLong(s.len()))?;
        self.push_i16(len);
        self.body.extend_from_slice(s.as_bytes());
        Ok(self)
    }

    /// Reads a string written by [`push_str`](Self::push_str) (or C#'s
    /// `CPacket.push(string)`).
    pub fn pop_string(&mut self) -> Result<String, PacketError> {
        let start = self.read_pos;
        let len = self.pop_i16()?;
        let result = usize::try_from(len)
            .map_err(|_| PacketError::NegativeLength(len))
            .and_then(|n| self.take(n))
            .and_then(|bytes| {
                std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| {
                    PacketError::InvalidUtf8 {
                        valid_up_to: e.valid_up_to(),
                    }
                })
            });
        if result.is_err() {
            self.read_pos = start;
        }
        result
    }
}

/// The C# packet protocol (`packet://`): a 4-byte little-endian signed
/// total length (header included), a little-endian int16 protocol id, then
/// the body.
///
/// ```text
/// +-- total: i32 LE --+- id: i16 LE -+---- body ----+
/// |    07 00 00 00    |    FE FF     |      05      |   SYS_START_HEARTBEAT, 5 s
/// +-------------------+--------------+--------------+
/// ```
///
/// A total below 6 (header and id) or negative is
/// [`ProtocolError::InvalidLength`]; above the maximum (default 10 MiB) it
/// is [`ProtocolError::TooLarge`], before anything is allocated.
/// [`PacketCodec::u16_body_header`] and [`PacketCodec::with_layout`] carry
/// the same id + body in other length layouts.
///
/// ```
/// use lubdub_frame::{Packet, PacketCodec, Codec};
///
/// let mut out = Vec::new();
/// PacketCodec::new().encode(&Packet::start_heartbeat(5), &mut out).unwrap();
/// assert_eq!(out, [0x07, 0x00, 0x00, 0x00, 0xFE, 0xFF, 0x05]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketCodec {
    layout: LengthField,
}

impl Default for PacketCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketCodec {
    /// Size of the id in bytes.
    pub const ID_LEN: usize = 2;

    /// The C# layout (i32 LE total length) with a 10 MiB maximum.
    pub fn new() -> Self {
        Self::with_max_length(DEFAULT_MAX_FRAME_LENGTH)
    }

    /// The C# layout accepting packets of at most `max` bytes, header included.
    pub fn with_max_length(max: usize) -> Self {
        PacketCodec {
            layout: LengthField::preset(4, Endian::Little, true, -4, max)
                .with_min_message(Self::ID_LEN),
        }
    }

    /// The 2-byte variant: a u16 little-endian length counting the id and
    /// body (not the header), then the id and body.
    ///
    /// ```text
    /// +- len: u16 LE -+- id: i16 LE -+- body -+
    /// |     03 00     |    FE FF     |   05   |
    /// +---------------+--------------+--------+
    /// ```
    pub fn u16_body_header() -> Self {
        PacketCodec {
            layout: LengthField::u16_le_body().with_min_message(Self::ID_LEN),
        }
    }

    /// Id + body carried in any length layout whose decoded message starts
    /// right after the header or later (`num_skip >= header_len`).
    pub fn with_layout(layout: LengthField) -> Result<Self, BuildError> {
        if layout.num_skip() < layout.header_len() {
            return Err(BuildError::HeaderNotStripped {
                num_skip: layout.num_skip(),
                header_len: layout.header_len(),
            });
        }
        Ok(PacketCodec {
            layout: layout.with_min_message(Self::ID_LEN),
        })
    }

    /// The length layout in use.
    pub fn layout(&self) -> &LengthField {
        &self.layout
    }
}

impl Codec for PacketCodec {
    const SCHEME: &'static str = "packet";
    type Message = Packet;
    type Outgoing = Packet;
    type State = ();

    fn decode(&self, _: &mut (), src: &[u8]) -> Result<Decoded<Packet>, ProtocolError> {
        match self.layout.frame_len(src)? {
            Some(total) if src.len() >= total => {
                // frame_len guarantees total >= num_skip + ID_LEN.
                let msg = &src[self.layout.num_skip()..total];
                let id = i16::from_le_bytes([msg[0], msg[1]]);
                Ok(Decoded::Message {
                    msg: Packet::with_body(id, msg[Self::ID_LEN..].to_vec()),
                    consumed: total,
                })
            }
            _ => Ok(Decoded::Incomplete),
        }
    }

    fn encode(&self, msg: &Packet, dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        self.layout
            .encode_parts(&[&msg.id.to_le_bytes(), &msg.body], dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_fail_cleanly() {
        let mut p = Packet::with_body(1, vec![0x01]);
        assert_eq!(
            p.pop_i16(),
            Err(PacketError::UnexpectedEnd {
                needed: 2,
                remaining: 1
            })
        );
        assert_eq!(p.read_position(), 0);
        assert_eq!(p.pop_u8(), Ok(1));
        assert_eq!(p.remaining(), b"");

        let mut p = Packet::with_body(1, vec![0xFF, 0xFF, b'a']);
        assert_eq!(p.pop_string(), Err(PacketError::NegativeLength(-1)));
        assert_eq!(p.read_position(), 0);

        let mut p = Packet::with_body(1, vec![0x02, 0x00, 0xC3, 0x28]);
        assert_eq!(
            p.pop_string(),
            Err(PacketError::InvalidUtf8 { valid_up_to: 0 })
        );
        assert_eq!(p.read_position(), 0);

        let mut p = Packet::with_body(1, vec![0x05, 0x00, b'a']);
        assert!(matches!(
            p.pop_string(),
            Err(PacketError::UnexpectedEnd {
                needed: 5,
                remaining: 1
            })
        ));
        assert_eq!(p.read_position(), 0);
    }

    #[test]
    fn push_str_too_long() {
        let mut p = Packet::new(1);
        let s = "x".repeat(40_000);
        assert_eq!(
            p.push_str(&s).err(),
            Some(PacketError::StringTooLong(40_000))
        );
        assert!(p.body.is_empty());
        let s = "x".repeat(usize::from(i16::MAX as u16));
        p.push_str(&s).unwrap();
        assert_eq!(p.pop_string().unwrap().len(), 32767);
    }

    #[test]
    fn with_layout_rejects_unstripped() {
        let lf = LengthField::builder().num_skip(0).build().unwrap();
        assert_eq!(
            PacketCodec::with_layout(lf),
            Err(BuildError::HeaderNotStripped {
                num_skip: 0,
                header_len: 4
            })
        );
    }
}
