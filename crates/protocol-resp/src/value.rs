//! [`Value`], a decoded reply, built from `redis-protocol`'s range frames.

use std::fmt;

use lubdub_protocol::ProtocolError;
use redis_protocol::resp2::types::RangeFrame as Range2;
use redis_protocol::resp3::types::{RangeFrame as Range3, VerbatimStringFormat};

/// One decoded reply or push from Redis, RESP2 and RESP3 alike.
///
/// RESP2 replies use the first six variants; RESP3 adds the rest. RESP2's
/// null bulk string (`$-1`) and null array (`*-1`) both decode to
/// [`Value::Nil`], as RESP3's null (`_`) does. RESP3 attributes (`|`) are
/// dropped: the value is the element they annotate.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A null: a missing key (`GET`), a timed-out blocking pop.
    Nil,
    /// A simple string (`+OK`, `+PONG`).
    Simple(String),
    /// An error reply (`-ERR ...`, `-WRONGTYPE ...`; RESP3's `!` as well).
    /// The connection stays usable: the error answers one command.
    Error(String),
    /// An integer (`:1`).
    Integer(i64),
    /// A bulk string: any bytes (`$5\r\nhello`).
    Bulk(Vec<u8>),
    /// An array of values (`*2\r\n...`).
    Array(Vec<Value>),
    /// A RESP3 double (`,3.14`).
    Double(f64),
    /// A RESP3 boolean (`#t`).
    Boolean(bool),
    /// A RESP3 big number, as its decimal digits (`(3492890328409238509324850943850943825024385`).
    BigNumber(String),
    /// A RESP3 verbatim string (`=15\r\ntxt:Some string`): text and its format.
    Verbatim {
        /// Plain text or Markdown.
        format: VerbatimFormat,
        /// The text, without its `txt:` prefix.
        text: Vec<u8>,
    },
    /// A RESP3 map, its pairs in wire order.
    Map(Vec<(Value, Value)>),
    /// A RESP3 set, in wire order.
    Set(Vec<Value>),
    /// A RESP3 push: out-of-band data (pub/sub messages, invalidations),
    /// not the reply to a command.
    Push(Vec<Value>),
}

/// The format of a RESP3 verbatim string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerbatimFormat {
    /// `txt`: plain text.
    Text,
    /// `mkd`: Markdown.
    Markdown,
}

impl Value {
    /// The bytes of a bulk string, simple string or verbatim string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) | Value::Verbatim { text: b, .. } => Some(b),
            Value::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// A bulk, simple or verbatim string as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// The integer of an integer reply. (A number stored in a string, as
    /// `GET` returns it, is a bulk string: `v.as_str()?.parse()`.)
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The elements of an array, set or push.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    /// Takes the bytes of a bulk or verbatim string (or a simple string's).
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Value::Bulk(b) | Value::Verbatim { text: b, .. } => Some(b),
            Value::Simple(s) => Some(s.into_bytes()),
            _ => None,
        }
    }

    /// Takes the elements of an array, set or push.
    pub fn into_array(self) -> Option<Vec<Value>> {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// The message of an error reply (`WRONGTYPE Operation against ...`).
    pub fn error_message(&self) -> Option<&str> {
        match self {
            Value::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is a null.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// Whether this is a RESP3 push (out of band, not a command's reply).
    pub fn is_push(&self) -> bool {
        matches!(self, Value::Push(_))
    }

    /// This value as a pub/sub message or (un)subscribe confirmation, if it
    /// is one: an array (RESP2) or push (RESP3) whose first element is
    /// `message`, `pmessage`, `smessage`, `subscribe`, `unsubscribe`,
    /// `psubscribe`, `punsubscribe`, `ssubscribe` or `sunsubscribe`, with
    /// the elements that kind has.
    ///
    /// In RESP2 a subscribed connection receives nothing but these (and
    /// `PING`'s `["pong", ""]`), so an array there is a push; on a
    /// connection that is not subscribed an array reply that happens to
    /// look like one is still a reply.
    pub fn as_pubsub(&self) -> Option<PubSub<'_>> {
        let mut items = match self {
            Value::Array(v) | Value::Push(v) => v.as_slice(),
            _ => return None,
        };
        // An early RESP3 draft prefixed pushes with "pubsub".
        if items.first().and_then(Value::as_bytes) == Some(b"pubsub") {
            items = &items[1..];
        }
        let bytes = |i: usize| items.get(i).and_then(Value::as_bytes);
        let subscription = |kind| {
            let channel = match items.get(1)? {
                Value::Nil => None,
                v => Some(v.as_bytes()?),
            };
            let count = items.get(2)?.as_int()?;
            (items.len() == 3).then_some(PubSub::Subscription {
                kind,
                channel,
                count,
            })
        };
        match bytes(0)? {
            b"message" | b"smessage" if items.len() == 3 => Some(PubSub::Message {
                channel: bytes(1)?,
                payload: bytes(2)?,
                sharded: bytes(0)? == b"smessage",
            }),
            b"pmessage" if items.len() == 4 => Some(PubSub::PatternMessage {
                pattern: bytes(1)?,
                channel: bytes(2)?,
                payload: bytes(3)?,
            }),
            b"subscribe" => subscription(SubscriptionKind::Subscribe),
            b"unsubscribe" => subscription(SubscriptionKind::Unsubscribe),
            b"psubscribe" => subscription(SubscriptionKind::PSubscribe),
            b"punsubscribe" => subscription(SubscriptionKind::PUnsubscribe),
            b"ssubscribe" => subscription(SubscriptionKind::SSubscribe),
            b"sunsubscribe" => subscription(SubscriptionKind::SUnsubscribe),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    /// A compact, redis-cli-like rendering (bytes that are not UTF-8 are
    /// shown escaped).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, open: &str, items: &[Value]) -> fmt::Result {
            f.write_str(open)?;
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{v}")?;
            }
            f.write_str("]")
        }
        match self {
            Value::Nil => f.write_str("(nil)"),
            Value::Simple(s) => f.write_str(s),
            Value::Error(e) => write!(f, "(error) {e}"),
            Value::Integer(n) => write!(f, "(integer) {n}"),
            Value::Bulk(b) | Value::Verbatim { text: b, .. } => {
                write!(f, "\"{}\"", b.escape_ascii())
            }
            Value::Array(v) => list(f, "[", v),
            Value::Set(v) => list(f, "set[", v),
            Value::Push(v) => list(f, "push[", v),
            Value::Double(d) => write!(f, "(double) {d}"),
            Value::Boolean(b) => write!(f, "({b})"),
            Value::BigNumber(n) => write!(f, "(big number) {n}"),
            Value::Map(pairs) => {
                f.write_str("{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// A pub/sub push, from [`Value::as_pubsub`]. Channels, patterns and
/// payloads borrow from the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSub<'a> {
    /// A message published to a subscribed channel (`message`), or to a
    /// subscribed shard channel (`smessage`, `sharded`).
    Message {
        /// The channel it was published to.
        channel: &'a [u8],
        /// What was published.
        payload: &'a [u8],
        /// Whether it came through `SSUBSCRIBE` (Redis 7 sharded pub/sub).
        sharded: bool,
    },
    /// A message published to a channel that matches a subscribed pattern
    /// (`pmessage`).
    PatternMessage {
        /// The pattern that matched.
        pattern: &'a [u8],
        /// The channel it was published to.
        channel: &'a [u8],
        /// What was published.
        payload: &'a [u8],
    },
    /// The confirmation of one channel's or pattern's (un)subscription.
    Subscription {
        /// Which command it confirms.
        kind: SubscriptionKind,
        /// The channel or pattern; `None` when Redis sent nil (an
        /// `UNSUBSCRIBE` with nothing subscribed).
        channel: Option<&'a [u8]>,
        /// Subscriptions this connection holds now (of this kind, for
        /// sharded ones).
        count: i64,
    },
}

impl<'a> PubSub<'a> {
    /// The channel of a message or confirmation (a pattern's, for pattern
    /// subscriptions).
    pub fn channel(&self) -> Option<&'a [u8]> {
        match *self {
            PubSub::Message { channel, .. } | PubSub::PatternMessage { channel, .. } => {
                Some(channel)
            }
            PubSub::Subscription { channel, .. } => channel,
        }
    }

    /// The payload of a message; `None` for a confirmation.
    pub fn payload(&self) -> Option<&'a [u8]> {
        match *self {
            PubSub::Message { payload, .. } | PubSub::PatternMessage { payload, .. } => {
                Some(payload)
            }
            PubSub::Subscription { .. } => None,
        }
    }
}

/// Which (un)subscription a [`PubSub::Subscription`] confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// `SUBSCRIBE`.
    Subscribe,
    /// `UNSUBSCRIBE`.
    Unsubscribe,
    /// `PSUBSCRIBE` (a pattern).
    PSubscribe,
    /// `PUNSUBSCRIBE` (a pattern).
    PUnsubscribe,
    /// `SSUBSCRIBE` (a shard channel).
    SSubscribe,
    /// `SUNSUBSCRIBE` (a shard channel).
    SUnsubscribe,
}

/// Decodes the RESP2 reply that is exactly `frame` (found by the scanner).
pub(crate) fn decode_resp2(frame: &[u8]) -> Result<Value, ProtocolError> {
    match redis_protocol::resp2::decode::decode_range(frame) {
        Ok(Some((range, used))) if used == frame.len() => from_resp2(frame, range),
        Ok(_) => Err(disagreement()),
        Err(e) => Err(ProtocolError::Other(Box::new(e))),
    }
}

/// Decodes the RESP3 reply that is exactly `frame` (found by the scanner).
pub(crate) fn decode_resp3(frame: &[u8]) -> Result<Value, ProtocolError> {
    match redis_protocol::resp3::decode::complete::decode_range(frame) {
        Ok(Some((range, used))) if used == frame.len() => from_resp3(frame, range),
        Ok(_) => Err(disagreement()),
        Err(e) => Err(ProtocolError::Other(Box::new(e))),
    }
}

/// The decoder saw a different reply length than the scanner: only
/// malformed input gets here (a verbatim string shorter than its format).
fn disagreement() -> ProtocolError {
    ProtocolError::Malformed("reply length inconsistent with its contents")
}

fn bytes(buf: &[u8], (start, end): (usize, usize)) -> Vec<u8> {
    buf[start..end].to_vec()
}

fn text(buf: &[u8], (start, end): (usize, usize)) -> Result<String, ProtocolError> {
    match std::str::from_utf8(&buf[start..end]) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => Err(ProtocolError::InvalidData {
            expected: "UTF-8",
            offset: start + e.valid_up_to(),
        }),
    }
}

// Recursion below is bounded by the scanner's depth limit.

fn from_resp2(buf: &[u8], frame: Range2) -> Result<Value, ProtocolError> {
    Ok(match frame {
        Range2::SimpleString(r) => Value::Simple(text(buf, r)?),
        Range2::Error(r) => Value::Error(text(buf, r)?),
        Range2::Integer(n) => Value::Integer(n),
        Range2::BulkString(r) => Value::Bulk(bytes(buf, r)),
        Range2::Array(items) => {
            let mut values = Vec::with_capacity(items.len());
            for f in items {
                values.push(from_resp2(buf, f)?);
            }
            Value::Array(values)
        }
        Range2::Null => Value::Nil,
    })
}

fn from_resp3(buf: &[u8], frame: Range3) -> Result<Value, ProtocolError> {
    let list = |items: Vec<Range3>| -> Result<Vec<Value>, ProtocolError> {
        let mut values = Vec::with_capacity(items.len());
        for f in items {
            values.push(from_resp3(buf, f)?);
        }
        Ok(values)
    };
    Ok(match frame {
        Range3::BlobString { data, .. } => Value::Bulk(bytes(buf, data)),
        Range3::SimpleString { data, .. } => Value::Simple(text(buf, data)?),
        Range3::BlobError { data, .. } | Range3::SimpleError { data, .. } => {
            Value::Error(text(buf, data)?)
        }
        Range3::Boolean { data, .. } => Value::Boolean(data),
        Range3::Null => Value::Nil,
        Range3::Number { data, .. } => Value::Integer(data),
        Range3::Double { data, .. } => Value::Double(data),
        Range3::BigNumber { data, .. } => Value::BigNumber(text(buf, data)?),
        Range3::VerbatimString { data, format, .. } => Value::Verbatim {
            format: match format {
                VerbatimStringFormat::Text => VerbatimFormat::Text,
                VerbatimStringFormat::Markdown => VerbatimFormat::Markdown,
            },
            text: bytes(buf, data),
        },
        Range3::Array { data, .. } => Value::Array(list(data)?),
        Range3::Push { data, .. } => Value::Push(list(data)?),
        Range3::Set { data, .. } => {
            let mut values = Vec::with_capacity(data.len());
            for f in data {
                values.push(from_resp3(buf, f)?);
            }
            Value::Set(values)
        }
        Range3::Map { data, .. } => {
            // redis-protocol (6.0) builds its map from the last pair to the
            // first: reversing its insertion order gives the wire order
            // (checked by `resp3_maps_keep_wire_order`).
            let mut pairs = Vec::with_capacity(data.len());
            for (k, v) in data.into_iter().rev() {
                pairs.push((from_resp3(buf, k)?, from_resp3(buf, v)?));
            }
            Value::Map(pairs)
        }
        // Only a server receives these (an inline HELLO) or a streamed
        // reply contains them; the scanner lets neither through.
        Range3::Hello { .. } | Range3::ChunkedString(_) => {
            return Err(ProtocolError::Malformed(
                "unexpected RESP3 frame in a reply",
            ))
        }
    })
}
