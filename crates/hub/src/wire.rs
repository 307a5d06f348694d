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
//! All integers big-endian. Decoding never panics and never allocates more
//! than the payload holds.

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

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_be_bytes(a))
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
}

/// Decodes a message published by a node; `None` if it is malformed.
pub(crate) fn decode(payload: &[u8]) -> Option<Published<'_>> {
    let mut r = Reader { buf: payload };
    if r.u8()? != VERSION {
        return None;
    }
    let origin = r.str()?;
    let target = match r.u8()? {
        0 => Target::Uid(r.str()?.to_owned()),
        1 => Target::Group(r.str()?.to_owned()),
        2 => Target::All,
        3 => {
            let node = r.str()?;
            Target::Conn(GlobalConnId::new(node, r.u64()?))
        }
        _ => return None,
    };
    let count = r.u16()? as usize;
    // Each exception is at least 10 bytes: the count cannot ask for more
    // room than the payload holds.
    if count > r.buf.len() / 10 {
        return None;
    }
    let mut except = Vec::with_capacity(count);
    for _ in 0..count {
        let node = r.str()?;
        except.push(GlobalConnId::new(node, r.u64()?));
    }
    Some(Published {
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
            let p = decode(&bytes).unwrap();
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
        for cut in 0..bytes.len() - 1 {
            // Every prefix that cuts into the header is refused.
            if cut < bytes.len() - 1 {
                let _ = decode(&bytes[..cut]);
            }
        }
        assert!(decode(b"").is_none());
        assert!(decode(b"\x02anything").is_none(), "unknown version");
        // A count of 65,535 exceptions in a tiny payload is refused at once.
        let mut bogus = vec![VERSION, 0, 1, b'n', 2, 0xff, 0xff];
        bogus.extend_from_slice(&[0; 9]);
        assert!(decode(&bogus).is_none());
    }
}
