//! What one node publishes for the others: the target, the exceptions, the
//! encoded message.
//!
//! ```text
//! +---------+------------------+---------------+------------------------+-------+
//! | version | origin: u16 len  | target        | except: u16 count,     | bytes |
//! | u8 = 1  | + node name      | (see below)   | each u16 len + node    | (rest)|
//! |         |                  |               | + u64 conn             |       |
//! +---------+------------------+---------------+------------------------+-------+
//! target: u8 kind (0 uid, 1 group, 2 all, 3 conn) then
//!         uid/group: u16 len + name;  all: nothing;  conn: u16 len + node + u64 conn
//! ```
//!
//! All integers big-endian. Decoding never panics, and checks every field
//! against the hub's limits before it allocates anything for it: node
//! names 1 to 64 bytes, uid and group names 1 to `max_name_len`, at most
//! `max_except` exceptions, a message of at most `max_message_size`.

use crate::limits::{HubLimits, MAX_NODE_NAME_LEN};
use crate::{GlobalConnId, Target};

const VERSION: u8 = 1;

fn put_str(out: &mut Vec<u8>, s: &str) -> Option<()> {
    let len = u16::try_from(s.len()).ok()?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Some(())
}

/// Encodes a message for the other nodes; `None` if a name is longer than
/// 65,535 bytes or there are more than 65,535 exceptions.
pub(crate) fn encode(
    origin: &str,
    target: &Target,
    except: &[GlobalConnId],
    bytes: &[u8],
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(16 + origin.len() + bytes.len());
    out.push(VERSION);
    put_str(&mut out, origin)?;
    match target {
        Target::Uid(uid) => {
            out.push(0);
            put_str(&mut out, uid)?;
        }
        Target::Group(group) => {
            out.push(1);
            put_str(&mut out, group)?;
        }
        Target::All => out.push(2),
        Target::Conn(id) => {
            out.push(3);
            put_str(&mut out, id.node())?;
            out.extend_from_slice(&id.conn().to_be_bytes());
        }
    }
    out.extend_from_slice(&u16::try_from(except.len()).ok()?.to_be_bytes());
    for id in except {
        put_str(&mut out, id.node())?;
        out.extend_from_slice(&id.conn().to_be_bytes());
    }
    out.extend_from_slice(bytes);
    Some(out)
}

/// A decoded message from another node.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Published<'a> {
    pub origin: &'a str,
    pub target: Target,
    pub except: Vec<GlobalConnId>,
    pub bytes: &'a [u8],
}

/// Why a message from the backplane was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Cut short, an unknown version or target kind, a name not UTF-8.
    Malformed,
    /// A node name empty or longer than [`MAX_NODE_NAME_LEN`].
    NodeName,
    /// A uid or group name empty or longer than `max_name_len`.
    Name,
    /// More exceptions than `max_except`.
    Except,
    /// A message larger than `max_message_size`.
    TooLarge,
    /// A target that is not the one of the channel it came on.
    WrongChannel,
    /// Not a plain channel message (a pattern or shard message).
    NotAMessage,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Malformed => "malformed",
            Refused::NodeName => "a node name out of bounds",
            Refused::Name => "a uid or group name out of bounds",
            Refused::Except => "too many exceptions",
            Refused::TooLarge => "a message over max_message_size",
            Refused::WrongChannel => "addressed to other than the channel it came on",
            Refused::NotAMessage => "not a channel message",
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refused> {
        if self.buf.len() < n {
            return Err(Refused::Malformed);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Refused> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Result<u16, Refused> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, Refused> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A string of 1 to `max` bytes (`bad` when out of bounds), checked
    /// before anything is allocated for it.
    fn str(&mut self, max: usize, bad: Refused) -> Result<&'a str, Refused> {
        let n = self.u16()? as usize;
        if n == 0 || n > max {
            return Err(bad);
        }
        std::str::from_utf8(self.take(n)?).map_err(|_| Refused::Malformed)
    }

    fn node(&mut self) -> Result<&'a str, Refused> {
        self.str(MAX_NODE_NAME_LEN, Refused::NodeName)
    }
}

/// Decodes a message published by a node; every field is checked against
/// `limits` before anything is allocated for it.
pub(crate) fn decode<'a>(payload: &'a [u8], limits: &HubLimits) -> Result<Published<'a>, Refused> {
    let mut r = Reader { buf: payload };
    if r.u8()? != VERSION {
        return Err(Refused::Malformed);
    }
    let origin = r.node()?;
    let target = match r.u8()? {
        0 => Target::Uid(r.str(limits.max_name_len, Refused::Name)?.to_owned()),
        1 => Target::Group(r.str(limits.max_name_len, Refused::Name)?.to_owned()),
        2 => Target::All,
        3 => {
            let node = r.node()?;
            Target::Conn(GlobalConnId::new(node, r.u64()?))
        }
        _ => return Err(Refused::Malformed),
    };
    let count = r.u16()? as usize;
    if count > limits.max_except {
        return Err(Refused::Except);
    }
    // Each exception is at least 11 bytes: the count cannot ask for more
    // room than the payload holds.
    if count > r.buf.len() / 11 {
        return Err(Refused::Malformed);
    }
    let mut except = Vec::with_capacity(count);
    for _ in 0..count {
        let node = r.node()?;
        except.push(GlobalConnId::new(node, r.u64()?));
    }
    if r.buf.len() > limits.max_message_size {
        return Err(Refused::TooLarge);
    }
    Ok(Published {
        origin,
        target,
        except,
        bytes: r.buf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_round_trips() {
        let except = [GlobalConnId::new("n2", 7), GlobalConnId::new("n1", 1 << 40)];
        for target in [
            Target::Uid("ann".into()),
            Target::Group("room 1".into()),
            Target::All,
            Target::Conn(GlobalConnId::new("n3", 42)),
        ] {
            let bytes = encode("n1", &target, &except, b"hello\n").unwrap();
            let p = decode(&bytes, &HubLimits::default()).unwrap();
            assert_eq!(p.origin, "n1");
            assert_eq!(p.target, target);
            assert_eq!(p.except, except);
            assert_eq!(p.bytes, b"hello\n");
        }
    }

    #[test]
    fn truncated_or_foreign_payloads_are_refused_not_panicked_on() {
        let bytes = encode(
            "n1",
            &Target::Group("g".into()),
            &[GlobalConnId::new("x", 1)],
            b"m",
        )
        .unwrap();
        let limits = HubLimits::default();
        // Every prefix that cuts into the header is refused (the last
        // byte is the message).
        for cut in 0..bytes.len() - 1 {
            assert!(decode(&bytes[..cut], &limits).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(b"", &limits), Err(Refused::Malformed));
        assert_eq!(
            decode(b"\x02anything", &limits),
            Err(Refused::Malformed),
            "unknown version"
        );
        // A count of 1,000 exceptions in a tiny payload is refused at once.
        let mut bogus = vec![VERSION, 0, 1, b'n', 2, 0x03, 0xe8];
        bogus.extend_from_slice(&[0; 9]);
        assert_eq!(decode(&bogus, &limits), Err(Refused::Malformed));
    }

    #[test]
    fn every_field_is_bounded_before_it_is_allocated() {
        let limits = HubLimits::default()
            .max_name_len(8)
            .max_except(2)
            .max_message_size(16);
        let ok = |t: Target, except: &[GlobalConnId], msg: &[u8]| {
            let bytes = encode("n1", &t, except, msg).unwrap();
            decode(&bytes, &limits).map(|_| ())
        };
        assert_eq!(ok(Target::Uid("12345678".into()), &[], b"m"), Ok(()));
        assert_eq!(
            ok(Target::Uid("123456789".into()), &[], b"m"),
            Err(Refused::Name)
        );
        assert_eq!(
            ok(Target::Group("123456789".into()), &[], b"m"),
            Err(Refused::Name)
        );
        assert_eq!(
            ok(Target::Group(String::new()), &[], b"m"),
            Err(Refused::Name)
        );
        let id = GlobalConnId::new("n2", 1);
        assert_eq!(ok(Target::All, &[id.clone(), id.clone()], b"m"), Ok(()));
        assert_eq!(
            ok(Target::All, &[id.clone(), id.clone(), id], b"m"),
            Err(Refused::Except)
        );
        assert_eq!(ok(Target::All, &[], &[0; 16]), Ok(()));
        assert_eq!(ok(Target::All, &[], &[0; 17]), Err(Refused::TooLarge));
        let long_node = "n".repeat(MAX_NODE_NAME_LEN + 1);
        assert_eq!(
            ok(Target::Conn(GlobalConnId::new(&long_node, 1)), &[], b"m"),
            Err(Refused::NodeName)
        );
        let bytes = encode(&long_node, &Target::All, &[], b"m").unwrap();
        assert_eq!(decode(&bytes, &limits), Err(Refused::NodeName));
        let bytes = encode("", &Target::All, &[], b"m").unwrap();
        assert_eq!(decode(&bytes, &limits), Err(Refused::NodeName));
    }
}
