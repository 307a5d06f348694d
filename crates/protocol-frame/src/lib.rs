//! Length-prefixed protocols for lubdub, sans-IO.
//!
//! Three [`Protocol`]s, all built on one overflow-checked length-header
//! decoder:
//!
//! | type | `SCHEME` | message | layout |
//! |---|---|---|---|
//! | [`Frame`] | `frame` | `Vec<u8>` / `[u8]` | Workerman's Frame: u32 BE total length, then payload |
//! | [`LengthField`] | `length` | `Vec<u8>` / `[u8]` | anything a [`LengthField::builder`] describes |
//! | [`PacketCodec`] | `packet` | [`Packet`] | C# `CPacket`: i32 LE total length, i16 LE id, body |
//!
//! All three are [`Codec`]s: no handshake, no per-connection state, nothing
//! written on the [`Wire`] and no close asked for; decode yields
//! [`Decoded::Message`] or [`Decoded::Incomplete`], or an error. The traits
//! and [`Session`] (to drive a protocol without a connection) come from
//! `lubdub_protocol` and are re-exported here.
//!
//! Every decoder rejects impossible lengths ([`ProtocolError::InvalidLength`])
//! and oversize frames ([`ProtocolError::TooLarge`], default maximum 10 MiB,
//! header included) from the header alone, before allocating anything, and
//! allocates only the message, once all of it has arrived. No input makes
//! them panic; the `fuzz/` project at the workspace root checks this.
//!
//! # Workerman `Frame`
//!
//! ```text
//! +-- total_length: u32 BE --+------ payload ------+
//! |       00 00 00 09        |    h  e  l  l  o    |
//! +--------------------------+---------------------+
//! ```
//!
//! The length counts its own 4 bytes: an empty payload is `00 00 00 04`.
//! `00 00 00 00` to `00 00 00 03` are [`ProtocolError::InvalidLength`].
//!
//! # C# packet
//!
//! ```text
//! +-- total: i32 LE --+- id: i16 LE -+---- body ----+
//! |    07 00 00 00    |    FE FF     |      05      |
//! +-------------------+--------------+--------------+
//! ```
//!
//! The length counts the whole packet, header included; the id is one of
//! the system ids ([`SYS_CLOSE_REQ`] 0, [`SYS_CLOSE_ACK`] -1,
//! [`SYS_START_HEARTBEAT`] -2, [`SYS_UPDATE_HEARTBEAT`] -3) or an
//! application id. [`Packet`] has `CPacket`'s push/pop helpers. The example
//! above is `SYS_START_HEARTBEAT` telling the client to beat every 5 s.
//! [`PacketCodec::u16_body_header`] is the common variant with a u16 LE
//! length of the id and body only.
//!
//! # `LengthField`: the general codec
//!
//! A frame is a header, made of `length_field_offset` prefix bytes and the
//! length field, followed by the rest of the frame:
//!
//! ```text
//! +--- prefix ---+--- length ---+------------- rest -------------+
//! |   offset     |    width     |   value + adjustment bytes     |
//! +--------------+--------------+--------------------------------+
//! |<--------- header --------->|
//! |<----- num_skip ----->|<-------- decoded message ----------->|
//! ```
//!
//! | builder method | default |
//! |---|---|
//! | [`length_field_length`](LengthFieldBuilder::length_field_length) | `4` (any of 1 to 8) |
//! | [`big_endian`](LengthFieldBuilder::big_endian) / [`little_endian`](LengthFieldBuilder::little_endian) | big endian |
//! | [`signed`](LengthFieldBuilder::signed) | `false` |
//! | [`length_field_offset`](LengthFieldBuilder::length_field_offset) | `0` |
//! | [`length_includes_header`](LengthFieldBuilder::length_includes_header) | `false` |
//! | [`length_adjustment`](LengthFieldBuilder::length_adjustment) | `0` |
//! | [`num_skip`](LengthFieldBuilder::num_skip) | the header length, `offset + width` |
//! | [`max_frame_length`](LengthFieldBuilder::max_frame_length) | 10 MiB, whole frame |
//!
//! The defaults are tokio-util's default `LengthDelimitedCodec` layout: a
//! u32 big-endian length of what follows, header stripped.
//!
//! ```
//! use lubdub_frame::{Decoded, LengthField, Codec};
//!
//! let codec = LengthField::builder().build().unwrap();
//! let bytes = b"\x00\x00\x00\x05hello";
//! assert_eq!(
//!     codec.decode(&mut (), bytes).unwrap(),
//!     Decoded::Message { msg: b"hello".to_vec(), consumed: 9 }
//! );
//! let mut out = Vec::new();
//! codec.encode(b"hello", &mut out).unwrap();
//! assert_eq!(out, bytes);
//! ```
//!
//! ## Width and byte order
//!
//! `length_field_length(2).little_endian()`:
//!
//! ```text
//!          INPUT                        DECODED
//! +- len: u16 LE -+-- payload --+     +-- payload --+
//! |     05 00     |  h e l l o  | --> |  h e l l o  |
//! +---------------+-------------+     +-------------+
//! ```
//!
//! ```
//! # use lubdub_frame::{Decoded, LengthField, Codec};
//! let codec = LengthField::builder()
//!     .length_field_length(2)
//!     .little_endian()
//!     .build()
//!     .unwrap();
//! assert_eq!(codec, LengthField::u16_le_body()); // the same as this preset
//! assert_eq!(
//!     codec.decode(&mut (), b"\x05\x00hello").unwrap(),
//!     Decoded::Message { msg: b"hello".to_vec(), consumed: 7 }
//! );
//! ```
//!
//! A field of width 8 can announce up to 2^64 - 1 bytes; the maximum frame
//! length rejects such frames before anything is allocated.
//!
//! ## Signed lengths
//!
//! `signed(true)` reads the field as two's complement, as C#'s `int` and
//! `short` are. A negative value is [`ProtocolError::InvalidLength`]:
//!
//! ```text
//! +- len: i16 LE -+
//! |     FF FF     |  --> Err(InvalidLength(-1))
//! +---------------+
//! ```
//!
//! ```
//! # use lubdub_frame::{LengthField, Codec, ProtocolError};
//! let codec = LengthField::builder()
//!     .length_field_length(2)
//!     .little_endian()
//!     .signed(true)
//!     .build()
//!     .unwrap();
//! assert!(matches!(
//!     codec.decode(&mut (), b"\xFF\xFF"),
//!     Err(ProtocolError::InvalidLength(-1))
//! ));
//! ```
//!
//! ## Length includes the header
//!
//! `length_includes_header(true)`: the value counts the header (prefix and
//! field) too. This is Workerman's Frame and the C# packet. A value smaller
//! than the header is [`ProtocolError::InvalidLength`].
//!
//! ```text
//!            INPUT                             DECODED
//! +- len: u32 BE --+-- payload --+     +-- payload --+
//! |  00 00 00 09   |  h e l l o  | --> |  h e l l o  |
//! +----------------+-------------+     +-------------+
//! ```
//!
//! ```
//! # use lubdub_frame::{Decoded, LengthField, Codec, ProtocolError};
//! let codec = LengthField::builder()
//!     .length_includes_header(true)
//!     .build()
//!     .unwrap();
//! assert_eq!(
//!     codec.decode(&mut (), b"\x00\x00\x00\x09hello").unwrap(),
//!     Decoded::Message { msg: b"hello".to_vec(), consumed: 9 }
//! );
//! assert!(matches!(
//!     codec.decode(&mut (), b"\x00\x00\x00\x03"),
//!     Err(ProtocolError::InvalidLength(3))
//! ));
//! ```
//!
//! ## Length adjustment
//!
//! `length_adjustment(n)` adds `n` (which may be negative) to the value to
//! get the number of bytes after the length field, as in tokio-util. Here a
//! 1-byte length counts only the payload, and a 2-byte tag that follows the
//! field is not counted, so the adjustment is `+2`. The message keeps the
//! tag:
//!
//! ```text
//!           INPUT                               DECODED
//! +- len -+- tag -+-- payload --+     +- tag -+-- payload --+
//! |  05   | CA FE |  h e l l o  | --> | CA FE |  h e l l o  |
//! +-------+-------+-------------+     +-------+-------------+
//! ```
//!
//! ```
//! # use lubdub_frame::{Decoded, LengthField, Codec};
//! let codec = LengthField::builder()
//!     .length_field_length(1)
//!     .length_adjustment(2)
//!     .build()
//!     .unwrap();
//! assert_eq!(
//!     codec.decode(&mut (), b"\x05\xCA\xFEhello").unwrap(),
//!     Decoded::Message { msg: b"\xCA\xFEhello".to_vec(), consumed: 8 }
//! );
//! ```
//!
//! `length_includes_header(true)` is the same as an extra adjustment of
//! `-(offset + width)`; both may be combined.
//!
//! ## Offset: bytes before the field
//!
//! `length_field_offset(1)`: one prefix byte (a version, a type) precedes
//! the field. It is part of the header, so with the default `num_skip` it is
//! stripped from decoded messages and **written as zero by encode**:
//!
//! ```text
//!              INPUT                              DECODED
//! +- ver -+- len: u16 BE -+-- payload --+     +-- payload --+
//! |  01   |     00 05     |  h e l l o  | --> |  h e l l o  |
//! +-------+---------------+-------------+     +-------------+
//!
//!       ENCODE(b"hello")
//! +- ver -+- len: u16 BE -+-- payload --+
//! |  00   |     00 05     |  h e l l o  |
//! +-------+---------------+-------------+
//! ```
//!
//! ```
//! # use lubdub_frame::{Decoded, LengthField, Codec};
//! let codec = LengthField::builder()
//!     .length_field_offset(1)
//!     .length_field_length(2)
//!     .build()
//!     .unwrap();
//! assert_eq!(
//!     codec.decode(&mut (), b"\x01\x00\x05hello").unwrap(),
//!     Decoded::Message { msg: b"hello".to_vec(), consumed: 8 }
//! );
//! let mut out = Vec::new();
//! codec.encode(b"hello", &mut out).unwrap();
//! assert_eq!(out, b"\x00\x00\x05hello");
//! ```
//!
//! To read and write the prefix yourself, keep it in the message with
//! `num_skip` (next section).
//!
//! ## `num_skip`: what decoded messages leave out
//!
//! `num_skip(n)` strips the first `n` bytes of each frame from the decoded
//! message. The default strips the header; `num_skip(0)` keeps it whole.
//! `num_skip` never changes where a frame ends (this differs from
//! tokio-util, where it does: use the adjustment there).
//!
//! Encode is the mirror image: it writes `num_skip` zero bytes, then the
//! message, then stores the length in the field. When the message carries
//! (part of) the header, its prefix bytes are sent as given and its
//! length-field bytes are overwritten with the right value, so
//! `decode(encode(m)) == m` in every configuration. Here `num_skip(1)`
//! strips the version byte but keeps the length field:
//!
//! ```text
//!              INPUT                                   DECODED
//! +- ver -+- len: u16 BE -+-- payload --+     +- len: u16 BE -+-- payload --+
//! |  01   |     00 05     |  h e l l o  | --> |     00 05     |  h e l l o  |
//! +-------+---------------+-------------+     +---------------+-------------+
//! ```
//!
//! and `num_skip(0)` keeps everything, which lets encode send the version
//! byte given in the message (the length placeholder is filled in):
//!
//! ```
//! # use lubdub_frame::{Decoded, LengthField, Codec};
//! let codec = LengthField::builder()
//!     .length_field_offset(1)
//!     .length_field_length(2)
//!     .num_skip(0)
//!     .build()
//!     .unwrap();
//! assert_eq!(
//!     codec.decode(&mut (), b"\x01\x00\x05hello").unwrap(),
//!     Decoded::Message { msg: b"\x01\x00\x05hello".to_vec(), consumed: 8 }
//! );
//! let mut out = Vec::new();
//! codec.encode(b"\x07\x00\x00hello", &mut out).unwrap();
//! assert_eq!(out, b"\x07\x00\x05hello");
//! ```
//!
//! A message too short to hold the header bytes it must carry is
//! [`ProtocolError::Malformed`] on encode. A frame shorter than `num_skip`
//! is [`ProtocolError::InvalidLength`] on decode.
//!
//! ## Maximum frame length
//!
//! `max_frame_length(n)` bounds the whole frame, header included, on decode
//! (checked from the header, before any allocation:
//! [`ProtocolError::TooLarge`]) and on encode (an oversize message is
//! `TooLarge` and nothing is appended). Encode also refuses, as `TooLarge`,
//! a message whose length the field cannot express (a u8 field and 300
//! bytes).
//!
//! ```
//! # use lubdub_frame::{LengthField, Codec, ProtocolError};
//! let codec = LengthField::builder().max_frame_length(8).build().unwrap();
//! assert!(matches!(
//!     codec.decode(&mut (), b"\x00\x00\x00\x05"),
//!     Err(ProtocolError::TooLarge { len: 9, max: 8 })
//! ));
//! let mut out = Vec::new();
//! assert!(codec.encode(b"hello", &mut out).is_err());
//! assert!(out.is_empty());
//! ```
//!
//! # Hostile input
//!
//! * A header cut midway is [`Decoded::Incomplete`].
//! * Values below the header size (or below `num_skip`), and negative signed
//!   values, are [`ProtocolError::InvalidLength`] with the value read.
//! * Values above the maximum, `0xFFFFFFFF` or a 64-bit length included, are
//!   [`ProtocolError::TooLarge`] as soon as the header is in: nothing is
//!   reserved for the announced size, ever; a message is copied out only
//!   once all of its bytes have arrived.
//! * All length arithmetic is checked; the decoders keep no state between
//!   calls, so any split of the stream decodes the same.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod frame;
mod length_field;
mod packet;

pub use frame::Frame;
pub use length_field::{
    BuildError, Endian, LengthField, LengthFieldBuilder, DEFAULT_MAX_FRAME_LENGTH,
};
pub use packet::{
    Packet, PacketCodec, PacketError, SYS_CLOSE_ACK, SYS_CLOSE_REQ, SYS_START_HEARTBEAT,
    SYS_UPDATE_HEARTBEAT,
};

pub use lubdub_protocol::{Codec, Decoded, Protocol, ProtocolError, Session, Wire, WireBuf};
